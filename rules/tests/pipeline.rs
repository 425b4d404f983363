//! The rules stage's behaviour at the end of the whole pipeline on one
//! machine: uploads to a bucket in memory ingested into SQLite, the state
//! change log folded by the aggregate stage, the totals' change log handed
//! to the rules stage date by date as `tally run` hands it, alerts to an
//! in-memory topic and snapshots to the bucket, the stage's clock the
//! test's. No server: the same scenarios run over DynamoDB, SNS and S3 in
//! tally-tests (its `rules` module), which also checks what only AWS
//! carries (the SNS envelope, stream records in Lambda's shape).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tally_core::key::Date;
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertState, Notification, Trigger};
use tally_embedded::alerts_table::SqliteAlertStore;
use tally_embedded::totals_tables::SqliteTotalsStore;
use tally_rules::changes;
use tally_rules::stage::{RulesReport, RulesStage, StageConfig, Uploads};
use tally_testkit::aggregate_model::{batch_totals, live_totals};
use tally_testkit::memory::{MemoryBucket, MemoryTopic};
use tally_testkit::world::{EmbeddedPipelineWorld, IngestWorld, PipelineWorld};

const DATE: &str = "2015-11-16";

const LIMIT: &str = r#"
rules:
  - name: counter1-max
    counter: COUNTER1
    max: 150000
    severity: critical
    labels: {team: platform}
"#;

type Stage = RulesStage<SqliteTotalsStore, SqliteAlertStore, MemoryTopic, MemoryBucket>;

struct RulesWorld {
    pipeline: EmbeddedPipelineWorld,
    rules: RuleSet,
    topic: MemoryTopic,
    stage: Stage,
    now: Arc<Mutex<DateTime<Utc>>>,
    /// The totals' change log already handed to the rules stage.
    delivered: i64,
    /// Messages already looked at by [`RulesWorld::messages`].
    seen: usize,
}

/// One batch of the totals' change log: its dates and their changed counters.
type Batch = BTreeMap<Date, changes::DateChanges<i64>>;

impl RulesWorld {
    fn new(rules: &str) -> RulesWorld {
        RulesWorld::with_rules(RuleSet::load(&[("rules.yaml", rules)]).expect("the rules load"))
    }

    fn with_rules(rules: RuleSet) -> RulesWorld {
        let pipeline = EmbeddedPipelineWorld::new(false);
        let now = Arc::new(Mutex::new(
            DateTime::parse_from_rfc3339("2015-11-16T08:00:00Z")
                .expect("a valid time")
                .to_utc(),
        ));
        let topic = MemoryTopic::default();
        let stage = RulesWorld::stage_over(&pipeline, &topic, &now, Duration::from_secs(30));
        RulesWorld {
            pipeline,
            rules,
            topic,
            stage,
            now,
            delivered: 0,
            seen: 0,
        }
    }

    /// A rules stage over the same tables, topic, bucket and clock: another
    /// invocation.
    fn stage_over(
        pipeline: &EmbeddedPipelineWorld,
        topic: &MemoryTopic,
        now: &Arc<Mutex<DateTime<Utc>>>,
        lease: Duration,
    ) -> Stage {
        let mut config = StageConfig::new("fleet");
        config.lease = lease;
        let clock = now.clone();
        RulesStage::new(
            pipeline.ingest.db.totals(),
            pipeline.ingest.db.alerts(),
            topic.clone(),
            pipeline.ingest.bucket.clone(),
            config,
        )
        .with_clock(Arc::new(move || *clock.lock().expect("the clock")))
    }

    fn another_stage(&self) -> Stage {
        RulesWorld::stage_over(
            &self.pipeline,
            &self.topic,
            &self.now,
            Duration::from_secs(30),
        )
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().expect("the clock") += chrono::Duration::from_std(by).expect("short");
    }

    async fn upload(&self, instance: &str, body: &str) {
        let ingest = self.pipeline.ingest();
        let event = ingest
            .upload(&format!("counters/{DATE}/{instance}"), body)
            .await;
        let (_, report) = ingest.ingestor().handle(&event).await.expect("ingested");
        assert_eq!(report.failed, 0, "{instance}: not ingested");
    }

    /// Folds the state change log's new rows and returns the totals' change
    /// log's new rows, by date, as one batch.
    async fn aggregate(&mut self) -> Batch {
        let changes = self.pipeline.read_new().await;
        let (_, failures) = self.pipeline.aggregator.apply(&changes).await;
        assert!(failures.is_empty(), "aggregate failed");
        let rows = self
            .pipeline
            .ingest
            .db
            .total_changes_after(self.delivered, 10_000)
            .expect("the totals' change log");
        if let Some(last) = rows.last() {
            self.delivered = last.sequence;
        }
        changes::by_date(
            rows.iter()
                .map(|row| (row.new.date.clone(), row.new.counter.clone(), row.sequence)),
        )
    }

    /// Hands one batch to `stage`, date by date; the first date that fails
    /// fails the batch.
    async fn evaluate_on(&self, stage: &Stage, batch: &Batch) -> Result<RulesReport, String> {
        let mut report = RulesReport::default();
        for (date, changes) in batch {
            stage
                .process_date(
                    &self.rules,
                    date,
                    Trigger::Changed(&changes.counters),
                    &mut report,
                )
                .await
                .map_err(|e| format!("{date}: {e}"))?;
        }
        Ok(report)
    }

    async fn evaluate(&self, batch: &Batch) -> RulesReport {
        self.evaluate_on(&self.stage, batch)
            .await
            .expect("the rules batch")
    }

    /// One tick of the stage's clock.
    async fn tick(&self) -> RulesReport {
        let mut report = RulesReport::default();
        self.stage
            .tick(&self.rules, &mut report)
            .await
            .expect("the tick");
        report
    }

    async fn pump(&mut self) -> RulesReport {
        let batch = self.aggregate().await;
        self.evaluate(&batch).await
    }

    /// The messages published since the last call.
    fn messages(&mut self) -> Vec<Notification> {
        let sent = self.topic.sent();
        let new = sent[self.seen..].to_vec();
        self.seen = sent.len();
        new
    }

    fn object(&self, key: &str) -> Option<String> {
        self.pipeline
            .ingest
            .bucket
            .current(key)
            .map(|body| String::from_utf8_lossy(&body).into_owned())
    }

    async fn totals(&self) -> BTreeMap<String, i128> {
        live_totals(self.pipeline.aggregator.store(), DATE)
            .await
            .expect("the totals")
    }
}

#[tokio::test]
async fn the_worked_example_totals_191122_and_fires_once() {
    let mut world = RulesWorld::with_rules(tally_rules::bundled::rules());
    for (instance, value) in [
        ("i-1", 12345),
        ("i-2", 123456),
        ("i-3", 1000),
        ("i-4", 54321),
    ] {
        world.upload(instance, &format!("COUNTER1 {value}")).await;
        world.pump().await;
    }
    assert_eq!(world.totals().await["COUNTER1"], 191_122);
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("COUNTER1 191122\n")
    );
    let json: Value =
        serde_json::from_str(&world.object(&format!("totals/{DATE}.json")).unwrap()).unwrap();
    assert_eq!(json["date"], DATE);
    assert_eq!(json["counters"]["COUNTER1"], 191_122);
    assert!(json["generated_at"].as_str().unwrap().ends_with('Z'));
    assert!(json["computed_from"]["generation"].as_u64().unwrap() >= 4);

    let messages = world.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let alert = serde_json::to_value(&messages[0]).unwrap();
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
    // Nothing more, and evaluating nothing new sends nothing.
    world.pump().await;
    assert!(world.messages().is_empty());
}

#[tokio::test]
async fn firing_stays_silent_then_resolves_once() {
    let mut world = RulesWorld::new(LIMIT);
    world.upload("i-1", "COUNTER1 200000").await;
    world.pump().await;
    world.upload("i-1", "COUNTER1 210000").await;
    world.pump().await;
    world.upload("i-2", "COUNTER1 5").await;
    world.pump().await;
    let messages = world.messages();
    assert_eq!(messages.len(), 1, "one message while it keeps firing");
    world.upload("i-1", "COUNTER1 1000").await;
    world.pump().await;
    let messages = world.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].state, AlertState::Resolved);
    assert_eq!(messages[0].transition, 2);
    assert_eq!(messages[0].value, Some(1005));
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("COUNTER1 1005\n")
    );
}

#[tokio::test]
async fn a_redelivered_or_concurrent_batch_sends_each_transition_once() {
    let mut world = RulesWorld::new(LIMIT);
    world.upload("i-1", "COUNTER1 200000").await;
    let batch = world.aggregate().await;
    let second = world.another_stage();
    let (a, b) = tokio::join!(
        world.evaluate_on(&world.stage, &batch),
        world.evaluate_on(&second, &batch)
    );
    a.unwrap();
    b.unwrap();
    // Delivered again after, say, a timeout.
    world.evaluate(&batch).await;
    assert_eq!(world.messages().len(), 1);
}

#[tokio::test]
async fn a_reminder_comes_after_the_repeat_interval_only() {
    let mut world = RulesWorld::new(&format!("{LIMIT}    repeat: 1h\n"));
    world.upload("i-1", "COUNTER1 200000").await;
    world.pump().await;
    assert_eq!(world.messages().len(), 1);
    world.advance(Duration::from_secs(30 * 60));
    world.upload("i-1", "COUNTER1 200001").await;
    world.pump().await;
    assert!(world.messages().is_empty(), "no reminder before the hour");
    world.advance(Duration::from_secs(31 * 60));
    world.upload("i-1", "COUNTER1 200002").await;
    world.pump().await;
    let messages = world.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].state, AlertState::Firing);
    assert!(messages[0].reminder);
}

#[tokio::test]
async fn for_fires_on_a_tick_once_the_condition_held_that_long_with_no_change() {
    let mut world = RulesWorld::new(&format!("{LIMIT}    for: 10m\n"));
    world.upload("i-1", "COUNTER1 200000").await;
    let batch = world.aggregate().await;
    let report = world.evaluate(&batch).await;
    assert_eq!(report.pending, 1, "pending, and said so: {report:?}");
    // A redelivered batch is the same evaluation: still pending.
    world.evaluate(&batch).await;
    world.advance(Duration::from_secs(9 * 60));
    world.tick().await;
    assert!(world.messages().is_empty(), "pending for nine minutes");
    world.advance(Duration::from_secs(60));
    let report = world.tick().await;
    let messages = world.messages();
    assert_eq!(messages.len(), 1, "{report:?}");
    assert_eq!(messages[0].state, AlertState::Firing);
    assert_eq!(
        messages[0].since.to_rfc3339(),
        "2015-11-16T08:00:00+00:00",
        "firing since the condition began to hold"
    );
}

#[tokio::test]
async fn a_stale_alert_of_a_day_that_is_over_resolves_at_the_next_tick() {
    let world = RulesWorld::new("rules:\n  - name: silent\n    stale: {after: 5m}\n");
    let at = |time: &str| {
        DateTime::parse_from_rfc3339(time)
            .expect("a valid time")
            .to_utc()
    };
    let bucket = &world.pipeline.ingest.bucket;
    bucket.set_now(at("2015-11-16T08:00:00Z"));
    world.upload("i-1", "COUNTER1 5").await;
    world.upload("i-2", "COUNTER1 5").await;
    bucket.set_now(at("2015-11-16T08:09:00Z"));
    world.upload("i-1", "COUNTER1 5").await;
    let uploads = Uploads {
        states: &world.pipeline.ingest.store,
        bucket: "fleet",
        prefix: "counters",
    };
    let tick = || async {
        let mut report = RulesReport::default();
        world
            .stage
            .tick_watching(&world.rules, &uploads, &mut report)
            .await
            .expect("the tick");
        report
    };
    world.advance(Duration::from_secs(10 * 60));
    tick().await;
    let sent = world.topic.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].state, AlertState::Firing);
    assert_eq!(sent[0].stale.as_ref().unwrap().instances[0].instance, "i-2");
    // Midnight: the 16th is over. Its alert resolves instead of firing,
    // unresolvable, until the date leaves the alerting window; the 17th's
    // fleet no longer holds either instance (silent over six hours).
    *world.now.lock().expect("the clock") = at("2015-11-17T00:01:00Z");
    let report = tick().await;
    let sent = world.topic.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].state, AlertState::Resolved);
    assert_eq!(sent[1].date.as_str(), "2015-11-16");
    assert_eq!(
        sent[1].reason.as_deref(),
        Some("the day is over: its instances upload under the next day, whose alert watches them")
    );
    assert_eq!(
        report.list_requests, 2,
        "today's prefix and the day before's, not the closed day again"
    );
}

#[tokio::test]
async fn a_tick_decides_what_a_lost_batch_would_have_and_writes_its_snapshot() {
    let mut world = RulesWorld::new(LIMIT);
    world.upload("i-1", "COUNTER1 200000").await;
    // Aggregated, but the batch never reaches the rules stage.
    world.aggregate().await;
    let report = world.tick().await;
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("COUNTER1 200000\n")
    );
    assert_eq!(world.messages().len(), 1);
    // The next tick finds the totals claimed: no snapshot, no message.
    world.advance(Duration::from_secs(60));
    let report = world.tick().await;
    assert_eq!(report.snapshots_written, 0, "{report:?}");
    assert!(world.messages().is_empty());
}

#[tokio::test]
async fn instances_counts_empty_bodies_and_a_tick_decides_a_rule_on_it() {
    let mut world = RulesWorld::new(
        "rules:\n  - name: fleet-of-three\n    expr: 'instances() >= 3 && contributors(\"COUNTER1\") < 3'\n",
    );
    world.upload("i-1", "COUNTER1 5").await;
    world.upload("i-2", "COUNTER1 5").await;
    world.pump().await;
    // An empty body: an instance that reports nothing moves no total, so
    // no batch reaches the rules; the tick reads the count.
    world.upload("i-3", "").await;
    world.pump().await;
    assert!(world.messages().is_empty());
    world.tick().await;
    let messages = world.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0].counters,
        BTreeMap::from([
            ("contributors(\"COUNTER1\")".to_owned(), 2),
            ("instances()".to_owned(), 3)
        ])
    );
}

#[tokio::test]
async fn a_rule_that_errors_is_reported_and_the_others_still_fire() {
    let rules = format!("{LIMIT}  - name: per-won\n    expr: 'COUNTER1 / won > 2'\n");
    let mut world = RulesWorld::new(&rules);
    world.upload("i-1", "COUNTER1 200000 won 0").await;
    let report = world.pump().await;
    assert_eq!(report.rule_errors, 1, "{report:?}");
    let messages = world.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rule, "counter1-max");
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("COUNTER1 200000\nwon 0\n")
    );
}

#[tokio::test]
async fn a_message_decided_but_not_published_is_sent_on_redelivery() {
    let mut world = RulesWorld::new(LIMIT);
    world.upload("i-1", "COUNTER1 200000").await;
    let batch = world.aggregate().await;
    let flaky = RulesWorld::stage_over(
        &world.pipeline,
        &world.topic,
        &world.now,
        Duration::from_secs(60),
    );
    world.topic.fail_next(1);
    assert!(world.evaluate_on(&flaky, &batch).await.is_err());
    assert!(world.messages().is_empty());
    // Delivered again once the publisher's lease (60 s) has run out.
    world.advance(Duration::from_secs(61));
    let report = world.evaluate_on(&flaky, &batch).await.unwrap();
    assert_eq!(report.outboxes_recovered, 1, "{report:?}");
    let messages = world.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].transition, 1);
    // And again: nothing more.
    world.evaluate(&batch).await;
    assert!(world.messages().is_empty());
}

#[tokio::test]
async fn the_snapshot_follows_overwrites_deletes_and_removed_counters() {
    let mut world = RulesWorld::new(LIMIT);
    world.upload("i-1", "a.b 1 bids-won 2 заказы 3").await;
    world.upload("i-2", "a.b 10 gone 5").await;
    world.pump().await;
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("a.b 11\nbids-won 2\ngone 5\nзаказы 3\n")
    );
    world.upload("i-2", "a.b 20").await;
    world.pump().await;
    let text = world.object(&format!("totals/{DATE}")).unwrap();
    assert_eq!(text, "a.b 21\nbids-won 2\nзаказы 3\n");
    let json: Value =
        serde_json::from_str(&world.object(&format!("totals/{DATE}.json")).unwrap()).unwrap();
    assert_eq!(json["counters"].as_object().unwrap().len(), 3);
    assert_eq!(json["counters"]["заказы"], 3);
    // The snapshot is what a batch job over the bucket computes.
    let batch = batch_totals(world.pipeline.ingest(), DATE).await.unwrap();
    let expected: String = batch.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    assert_eq!(text, expected);
    // A delete drops the instance's counters from the snapshot.
    let event = world
        .pipeline
        .ingest()
        .delete(&format!("counters/{DATE}/i-1"))
        .await;
    world
        .pipeline
        .ingest()
        .ingestor()
        .handle(&event)
        .await
        .unwrap();
    world.pump().await;
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("a.b 20\n")
    );
}

#[tokio::test]
async fn old_dates_get_their_snapshot_but_page_no_one() {
    let mut world = RulesWorld::new(LIMIT);
    world.advance(Duration::from_secs(4 * 86_400));
    world.upload("i-1", "COUNTER1 200000").await;
    let report = world.pump().await;
    assert_eq!(report.dates_not_alerted, 1, "{report:?}");
    assert!(world.messages().is_empty());
    assert_eq!(
        world.object(&format!("totals/{DATE}")).as_deref(),
        Some("COUNTER1 200000\n")
    );
}
