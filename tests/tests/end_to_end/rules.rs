//! The rules stage end to end against the AWS API server: uploads through
//! ingest and aggregate, the totals table's stream read through the Streams
//! API and handed to the handler as Lambda would, alerts delivered through
//! SNS to a subscribed SQS queue, and snapshots read back from the bucket.

use std::time::Duration;

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

use tally_core::ports::{
    Notifier, ObjectBody, ObjectLocation, ObjectMeta, ObjectStore, ObjectVersion, ObjectWriter,
    StoreError,
};
use tally_core::rules::alert::Notification;
use tally_rules::stage::StageConfig;
use tally_tests::rules_world::{DATE, RulesWorld, body};

const LIMIT: &str = r#"
rules:
  - name: counter1-max
    counter: COUNTER1
    max: 150000
    severity: critical
    labels: {team: platform}
"#;

fn attribute<'a>(envelope: &'a Value, name: &str) -> &'a str {
    envelope["MessageAttributes"][name]["Value"]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} attribute in {envelope}"))
}

#[tokio::test]
async fn the_worked_example_totals_191122_and_fires_once() {
    let mut world = RulesWorld::with_rules(tally_rules::bundled::rules()).await;
    for (instance, value) in [
        ("i-1", 12345),
        ("i-2", 123456),
        ("i-3", 1000),
        ("i-4", 54321),
    ] {
        world.upload(instance, &format!("COUNTER1 {value}")).await;
        world.pump().await;
    }
    assert_eq!(world.pipeline.totals(DATE).await["COUNTER1"], 191_122);
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 191122\n")
    );
    let json: Value =
        serde_json::from_str(&world.object(&format!("totals/{DATE}.json")).await.unwrap()).unwrap();
    assert_eq!(json["date"], DATE);
    assert_eq!(json["counters"]["COUNTER1"], 191_122);
    assert!(json["generated_at"].as_str().unwrap().ends_with('Z'));
    assert!(json["computed_from"]["generation"].as_u64().unwrap() >= 4);

    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let envelope = &messages[0];
    assert_eq!(
        envelope["Subject"],
        "FIRING critical: counter1-max COUNTER1=191122 > 150000 (2015-11-16)"
    );
    assert_eq!(attribute(envelope, "severity"), "critical");
    assert_eq!(attribute(envelope, "rule"), "counter1-max");
    assert_eq!(attribute(envelope, "state"), "firing");
    let alert = body(envelope);
    assert_eq!(alert["rule"], "counter1-max");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["date"], DATE);
    assert_eq!(alert["counter"], "COUNTER1");
    assert_eq!(alert["value"], 191_122);
    assert_eq!(alert["threshold"]["max"], 150_000);
    assert_eq!(alert["labels"]["team"], "platform");
    assert_eq!(alert["transition"], 1);
    assert!(alert["summary"].as_str().unwrap().contains("191122"));
    assert!(alert["since"].as_str().is_some());
    // Nothing more, and redelivering nothing new sends nothing.
    world.pump().await;
    assert!(world.messages(0).await.is_empty());
}

#[tokio::test]
async fn firing_stays_silent_then_resolves_once() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "COUNTER1 200000").await;
    world.pump().await;
    world.upload("i-1", "COUNTER1 210000").await;
    world.pump().await;
    world.upload("i-2", "COUNTER1 5").await;
    world.pump().await;
    let messages = world.messages(1).await;
    assert_eq!(
        messages.len(),
        1,
        "one message while it keeps firing: {messages:#?}"
    );
    world.upload("i-1", "COUNTER1 1000").await;
    world.pump().await;
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(
        messages[0]["Subject"],
        "RESOLVED: counter1-max COUNTER1=1005 (2015-11-16)"
    );
    assert_eq!(attribute(&messages[0], "state"), "resolved");
    let alert = body(&messages[0]);
    assert_eq!(alert["transition"], 2);
    assert_eq!(alert["value"], 1005);
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 1005\n")
    );
}

#[tokio::test]
async fn a_redelivered_or_concurrent_batch_sends_each_transition_once() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "COUNTER1 200000").await;
    let records = world.aggregate().await;
    let second = world.another_stage().await;
    let rules = world.rules.clone();
    let event = tally_tests::streams::lambda_event(&records);
    let (a, b) = tokio::join!(world.evaluate(&records), second.handle(&rules, &event));
    assert!(a.0.batch_item_failures.is_empty() && b.0.batch_item_failures.is_empty());
    // Lambda redelivers the same batch after, say, a timeout.
    world.evaluate(&records).await;
    let messages = world.messages(1).await;
    let more = world.messages(0).await;
    assert_eq!(messages.len() + more.len(), 1, "{messages:#?} {more:#?}");
}

#[tokio::test]
async fn a_reminder_comes_after_the_repeat_interval_only() {
    let mut world = RulesWorld::new(&format!("{LIMIT}    repeat: 1h\n")).await;
    world.upload("i-1", "COUNTER1 200000").await;
    world.pump().await;
    assert_eq!(world.messages(1).await.len(), 1);
    world.advance(Duration::from_secs(30 * 60));
    world.upload("i-1", "COUNTER1 200001").await;
    world.pump().await;
    assert!(
        world.messages(0).await.is_empty(),
        "no reminder before the hour"
    );
    world.advance(Duration::from_secs(31 * 60));
    world.upload("i-1", "COUNTER1 200002").await;
    world.pump().await;
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0]["Subject"]
            .as_str()
            .unwrap()
            .starts_with("STILL FIRING critical:")
    );
    assert_eq!(body(&messages[0])["reminder"], true);
}

#[tokio::test]
async fn for_fires_on_a_tick_once_the_condition_held_that_long() {
    let mut world = RulesWorld::new(&format!("{LIMIT}    for: 10m\n")).await;
    world.upload("i-1", "COUNTER1 200000").await;
    let records = world.aggregate().await;
    world.evaluate(&records).await;
    // A redelivered batch is the same evaluation: still pending.
    world.evaluate(&records).await;
    world.advance(Duration::from_secs(9 * 60));
    world.tick().await;
    assert!(
        world.messages(0).await.is_empty(),
        "pending for nine minutes"
    );
    world.advance(Duration::from_secs(60));
    world.tick().await;
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attribute(&messages[0], "state"), "firing");
}

#[tokio::test]
async fn a_tick_publishes_a_stale_alert_found_by_listing_the_bucket() {
    let world = RulesWorld::new(
        "rules:\n  - name: instances-silent\n    stale: {after: 5m}\n    severity: critical\n",
    )
    .await;
    // The server stamps objects with its own clock: the stage's clock is
    // put ten minutes past it, on the day the objects are written under.
    let now = chrono::Utc::now() + chrono::Duration::minutes(10);
    *world.now.lock().unwrap() = now;
    let today = now.format("%Y-%m-%d").to_string();
    let ingest = &world.pipeline.ingest;
    for instance in ["i-1", "i-2"] {
        ingest
            .upload(&format!("counters/{today}/{instance}"), "COUNTER1 5")
            .await;
    }
    let report = world.tick().await;
    assert!(report.list_requests >= 1, "{report:?}");
    let messages = world.messages(1).await;
    assert_eq!(
        messages.len(),
        1,
        "one alert for the fleet, not one per instance"
    );
    assert_eq!(attribute(&messages[0], "state"), "firing");
    let sent = body(&messages[0]);
    assert_eq!(sent["stale"]["stale"], 2, "{sent:#}");
    assert_eq!(sent["stale"]["fleet"], 2, "{sent:#}");
    let named: Vec<&str> = sent["stale"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(named.len(), 2);
    assert!(
        named.contains(&"i-1") && named.contains(&"i-2"),
        "{named:?}"
    );
    assert!(
        messages[0]["Subject"]
            .as_str()
            .unwrap()
            .contains("instances-silent 2 of 2 instances silent over 5m"),
        "{}",
        messages[0]["Subject"]
    );
}

#[tokio::test]
async fn a_rule_that_errors_is_reported_and_the_others_still_fire() {
    let rules = format!("{LIMIT}  - name: per-won\n    expr: 'COUNTER1 / won > 2'\n");
    let mut world = RulesWorld::new(&rules).await;
    world.upload("i-1", "COUNTER1 200000 won 0").await;
    let report = world.pump().await;
    assert_eq!(report.rule_errors, 1, "{report:?}");
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attribute(&messages[0], "rule"), "counter1-max");
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 200000\nwon 0\n")
    );
}

/// Fails its first publish, as SNS does when it is down, after the alert's
/// transition was already written.
struct FailingOnce {
    inner: tally_aws::topic::SnsNotifier,
    failed: std::sync::atomic::AtomicBool,
}

impl Notifier for FailingOnce {
    async fn publish(&self, notification: &Notification) -> Result<(), StoreError> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::new("SNS Publish", "InternalError: injected"));
        }
        self.inner.publish(notification).await
    }
}

/// The rules stage as wired for the world, with a publisher that fails once.
async fn flaky_stage(
    world: &RulesWorld,
    config: StageConfig,
) -> tally_rules::RulesStage<
    tally_aws::totals_tables::DynamoTotalsStore,
    tally_aws::alerts_table::DynamoAlertStore,
    FailingOnce,
    tally_aws::bucket::S3ObjectStore,
> {
    let sdk = tally_tests::sdk_config().await;
    let dynamodb = world.pipeline.ingest.dynamodb.clone();
    let clock = world.now.clone();
    tally_rules::RulesStage::new(
        tally_aws::totals_tables::DynamoTotalsStore::new(
            dynamodb.clone(),
            &world.pipeline.partials_table,
            &world.pipeline.totals_table,
        ),
        tally_aws::alerts_table::DynamoAlertStore::new(dynamodb, &world.alerts_table),
        FailingOnce {
            inner: tally_aws::topic::SnsNotifier::new(
                aws_sdk_sns::Client::new(&sdk),
                &world.topic_arn,
            ),
            failed: Default::default(),
        },
        tally_aws::bucket::S3ObjectStore::new(world.pipeline.ingest.s3.clone()),
        config,
    )
    .with_clock(std::sync::Arc::new(move || *clock.lock().unwrap()))
}

#[tokio::test]
async fn a_message_decided_but_not_published_is_sent_on_redelivery() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "COUNTER1 200000").await;
    let records = world.aggregate().await;
    let flaky = flaky_stage(&world, StageConfig::new(&world.pipeline.ingest.bucket)).await;
    let event = tally_tests::streams::lambda_event(&records);
    let (response, report) = flaky.handle(&world.rules, &event).await;
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(
        response.batch_item_failures[0].item_identifier,
        records[0]["dynamodb"]["SequenceNumber"]
            .as_str()
            .map(str::to_owned)
    );
    assert!(world.messages(0).await.is_empty());
    // Lambda redelivers once the publisher's lease (60 s) has run out.
    world.advance(Duration::from_secs(61));
    let (response, report) = flaky.handle(&world.rules, &event).await;
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(report.outboxes_recovered, 1);
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(body(&messages[0])["transition"], 1);
    // And again: nothing more.
    world.evaluate(&records).await;
    assert!(world.messages(0).await.is_empty());
}

#[tokio::test]
async fn the_snapshot_follows_overwrites_deletes_and_removed_counters() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "a.b 1 bids-won 2 заказы 3").await;
    world.upload("i-2", "a.b 10 gone 5").await;
    world.pump().await;
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("a.b 11\nbids-won 2\ngone 5\nзаказы 3\n")
    );
    world.upload("i-2", "a.b 20").await;
    world.pump().await;
    let text = world.object(&format!("totals/{DATE}")).await.unwrap();
    assert_eq!(text, "a.b 21\nbids-won 2\nзаказы 3\n");
    let json: Value =
        serde_json::from_str(&world.object(&format!("totals/{DATE}.json")).await.unwrap()).unwrap();
    assert_eq!(json["counters"].as_object().unwrap().len(), 3);
    assert_eq!(json["counters"]["заказы"], 3);
    // The snapshot is what a batch job over the bucket computes.
    let batch = world.pipeline.batch_totals(DATE).await;
    let expected: String = batch.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    assert_eq!(text, expected);
}

/// A rules stage whose stores can hold back one call.
type PausedStage = tally_rules::RulesStage<
    tally_tests::faults::Paused<tally_aws::totals_tables::DynamoTotalsStore>,
    tally_tests::faults::Paused<tally_aws::alerts_table::DynamoAlertStore>,
    tally_aws::topic::SnsNotifier,
    tally_tests::faults::Paused<tally_aws::bucket::S3ObjectStore>,
>;

/// A rules stage holding back one call, with the store's `reached` and
/// `resume` signals.
fn paused_stage(
    world: &RulesWorld,
    sdk: &aws_config::SdkConfig,
    before: tally_tests::faults::PauseBefore,
) -> (
    PausedStage,
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use tally_tests::faults::{PauseBefore, Paused};
    let dynamodb = world.pipeline.ingest.dynamodb.clone();
    let totals = Paused::new(
        tally_aws::totals_tables::DynamoTotalsStore::new(
            dynamodb.clone(),
            &world.pipeline.partials_table,
            &world.pipeline.totals_table,
        ),
        before,
    );
    let alerts = Paused::new(
        tally_aws::alerts_table::DynamoAlertStore::new(dynamodb, &world.alerts_table),
        before,
    );
    let objects = Paused::new(
        tally_aws::bucket::S3ObjectStore::new(world.pipeline.ingest.s3.clone()),
        before,
    );
    let (reached, resume) = match before {
        PauseBefore::PutAlert | PauseBefore::Claim => {
            (alerts.reached.clone(), alerts.resume.clone())
        }
        PauseBefore::PutObject => (objects.reached.clone(), objects.resume.clone()),
        _ => (totals.reached.clone(), totals.resume.clone()),
    };
    let clock = world.now.clone();
    let stage = tally_rules::RulesStage::new(
        totals,
        alerts,
        tally_aws::topic::SnsNotifier::new(aws_sdk_sns::Client::new(sdk), &world.topic_arn),
        objects,
        StageConfig::new(&world.pipeline.ingest.bucket),
    )
    .with_clock(std::sync::Arc::new(move || *clock.lock().unwrap()));
    (stage, reached, resume)
}

/// An invocation that read COUNTER1 = 200000 is overtaken by one that read
/// the newer 1000: the older one must not fire on what it read, and the
/// snapshot must end at 1000.
async fn overtaken_at(before: tally_tests::faults::PauseBefore) {
    let mut world = RulesWorld::new(LIMIT).await;
    let sdk = tally_tests::sdk_config().await;
    world.upload("i-1", "COUNTER1 200000").await;
    let first = world.aggregate().await;
    let (slow, reached, resume) = paused_stage(&world, &sdk, before);
    let rules = world.rules.clone();
    let first_event = tally_tests::streams::lambda_event(&first);
    let slow_run = tokio::spawn(async move { slow.handle(&rules, &first_event).await });
    reached.notified().await;
    world.upload("i-1", "COUNTER1 1000").await;
    world.pump().await;
    resume.notify_one();
    let (response, report) = slow_run.await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    if before != tally_tests::faults::PauseBefore::PartialsRead {
        assert!(
            report.conflicts >= 1,
            "the older invocation never noticed: {report:?}"
        );
    }
    let messages = world.messages(0).await;
    assert!(
        messages.is_empty(),
        "fired on totals that were already gone: {messages:#?}"
    );
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 1000\n")
    );
}

/// A write between the two reads of an isolated read makes it read again.
#[tokio::test]
async fn an_invocation_whose_read_is_interrupted_reads_again() {
    overtaken_at(tally_tests::faults::PauseBefore::PartialsRead).await;
}

#[tokio::test]
async fn an_invocation_overtaken_before_it_claims_decides_nothing_on_old_totals() {
    overtaken_at(tally_tests::faults::PauseBefore::Claim).await;
}

#[tokio::test]
async fn an_invocation_overtaken_after_it_claims_decides_nothing_on_old_totals() {
    overtaken_at(tally_tests::faults::PauseBefore::PutAlert).await;
}

/// The snapshot PUT of an overtaken invocation lands after the newer one's:
/// it sees the mark moved, starts over, and writes the newer totals again.
#[tokio::test]
async fn a_snapshot_written_late_by_an_overtaken_invocation_is_replaced() {
    let mut world = RulesWorld::new(LIMIT).await;
    let sdk = tally_tests::sdk_config().await;
    world.upload("i-1", "COUNTER1 5").await;
    let first = world.aggregate().await;
    let (slow, reached, resume) =
        paused_stage(&world, &sdk, tally_tests::faults::PauseBefore::PutObject);
    let rules = world.rules.clone();
    let first_event = tally_tests::streams::lambda_event(&first);
    let slow_run = tokio::spawn(async move { slow.handle(&rules, &first_event).await });
    reached.notified().await;
    world.upload("i-1", "COUNTER1 7").await;
    world.pump().await;
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 7\n")
    );
    resume.notify_one();
    let (response, report) = slow_run.await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(report.snapshots_written, 2, "{report:?}");
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 7\n")
    );
}

#[tokio::test]
async fn old_dates_get_their_snapshot_but_page_no_one() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.advance(Duration::from_secs(4 * 86_400));
    world.upload("i-1", "COUNTER1 200000").await;
    let report = world.pump().await;
    assert_eq!(report.dates_not_alerted, 1, "{report:?}");
    assert!(world.messages(0).await.is_empty());
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("COUNTER1 200000\n")
    );
}

/// The redelivered batch finds the message still leased to the invocation
/// that failed to publish it, waits for the lease to run out, then takes the
/// message over and sends it, once.
#[tokio::test]
async fn a_redelivery_waits_out_a_live_lease_then_sends_the_message_once() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "COUNTER1 200000").await;
    let records = world.aggregate().await;
    let mut config = StageConfig::new(&world.pipeline.ingest.bucket);
    config.lease = Duration::from_secs(10);
    let flaky = flaky_stage(&world, config).await;
    let event = tally_tests::streams::lambda_event(&records);
    let (_, report) = flaky.handle(&world.rules, &event).await;
    assert_eq!(report.failed, 1, "{report:?}");
    // The lease (10 s on the stage's clock) runs out while the redelivery waits.
    let clock = world.now.clone();
    let ticking = tokio::spawn(async move {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            *clock.lock().unwrap() += chrono::Duration::seconds(5);
        }
    });
    let (response, report) = flaky.handle(&world.rules, &event).await;
    ticking.await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(report.outboxes_recovered, 1, "{report:?}");
    let messages = world.messages(1).await;
    let more = world.messages(0).await;
    assert_eq!(messages.len() + more.len(), 1, "{messages:#?} {more:#?}");
}

#[tokio::test]
async fn an_undecodable_record_is_reported_and_the_rest_still_evaluated() {
    let mut world = RulesWorld::new(LIMIT).await;
    world.upload("i-1", "COUNTER1 200000").await;
    let mut records = world.aggregate().await;
    let mut bad = records[0].clone();
    bad["dynamodb"]["Keys"] = serde_json::json!({"Counter": {"N": "1"}});
    bad["dynamodb"]["SequenceNumber"] = serde_json::json!("1");
    records.insert(0, bad);
    let (response, report) = world.evaluate(&records).await;
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(
        response.batch_item_failures[0].item_identifier.as_deref(),
        Some("1")
    );
    assert_eq!(
        world.messages(1).await.len(),
        1,
        "the good record was still evaluated"
    );
}

#[tokio::test]
async fn rules_from_a_bucket_reload_on_change_and_a_broken_file_silences_nothing() {
    use tally_rules::RuleSource;
    let world = RulesWorld::new(LIMIT).await;
    let gets = std::sync::Arc::new(AtomicUsize::new(0));
    let s3 = &world.pipeline.ingest.s3;
    let bucket = &world.pipeline.ingest.bucket;
    let put = |key: &'static str, body: String| async move {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into_bytes().into())
            .send()
            .await
            .unwrap();
    };
    let source = RuleSource::from_bucket(
        Counting {
            inner: tally_aws::bucket::S3ObjectStore::new(s3.clone()),
            gets: gets.clone(),
        },
        bucket,
        "rules/",
        Duration::ZERO,
        tally_rules::bundled::rules(),
    );
    // Until the prefix has rules, the bundled ones apply.
    assert!(source.current().await.rule("counter1-max").is_some());
    assert_eq!(gets.load(Ordering::SeqCst), 0);
    put(
        "rules/ops.yaml",
        "rules:\n  - name: bids-low\n    counter: bids\n    min: 10\n".into(),
    )
    .await;
    put("rules/tests/ignored.yaml", "tests: []\n".into()).await;
    let rules = source.current().await;
    assert_eq!(rules.rules().len(), 1);
    assert!(rules.rule("bids-low").is_some());
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    // Unchanged ETags: listed, not read again.
    assert!(source.current().await.rule("bids-low").is_some());
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    // A mistake: the last good rules stay in force.
    put(
        "rules/ops.yaml",
        "rules:\n  - name: bids-low\n    counter: bids\n    mni: 10\n".into(),
    )
    .await;
    let rules = source.current().await;
    assert!(
        rules.rule("bids-low").is_some(),
        "a broken file must not silence the rules"
    );
    // Fixed: reloaded.
    put(
        "rules/ops.yaml",
        "rules:\n  - name: bids-high\n    counter: bids\n    max: 10\n".into(),
    )
    .await;
    let rules = source.current().await;
    assert!(rules.rule("bids-high").is_some() && rules.rule("bids-low").is_none());
    // Every file deleted: more likely a mistake than a wish for silence.
    s3.delete_object()
        .bucket(bucket)
        .key("rules/ops.yaml")
        .send()
        .await
        .unwrap();
    assert!(source.current().await.rule("bids-high").is_some());
}

/// The bucket, counting the objects read.
struct Counting {
    inner: tally_aws::bucket::S3ObjectStore,
    gets: std::sync::Arc<AtomicUsize>,
}

impl ObjectStore for Counting {
    async fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> Result<Option<(ObjectMeta, ObjectBody)>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(location, max_bytes).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(bucket, key).await
    }

    async fn versions(
        &self,
        bucket: &str,
        key: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        self.inner.versions(bucket, key, after).await
    }
}

impl ObjectWriter for Counting {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.inner.put(bucket, key, body, content_type).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<tally_core::ports::ListedObject>, StoreError> {
        self.inner.list(bucket, prefix).await
    }
}
