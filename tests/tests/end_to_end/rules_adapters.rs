//! The rules stage's AWS adapters against the AWS API server: the alert
//! table's mark and version compare-and-swaps (plain and transactional),
//! reading a day's records back with awkward counter names, the SNS
//! notifier as a queue subscriber receives it, and writing and listing
//! objects on S3 (with the last write times the stale-instance check reads). Records and messages come from core's own rule loading
//! and decisions, so the tests store what the rules stage would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tally_aws::alerts_table::{DynamoAlertStore, MARK, create_alerts_table};
use tally_aws::bucket::S3ObjectStore;
use tally_aws::topic::SnsNotifier;
use tally_core::key::Date;
use tally_core::ports::{AlertStore, Notifier, ObjectWriter, PutOutcome, normalize_etag};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, Notification, Trigger, decide};
use tally_tests::http_faults::FaultyHttpClient;
use tally_tests::{alert_queue, receive_all, sdk_config, unique};

const DATE: &str = "2015-11-16";

/// One limit on every counter, so any counter name makes its own alert.
const RULES: &str = "rules:
  - name: too-high
    match: '*'
    max: 100
    severity: critical
    labels:
      team: bidding
    runbook: https://runbooks.example/too-high
";

fn date(text: &str) -> Date {
    Date::parse(text).unwrap()
}

fn rules() -> RuleSet {
    RuleSet::load(&[("rules.yaml", RULES)]).unwrap()
}

/// 2015-11-16T10:00:00Z plus some minutes.
fn at(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_447_668_000 + minute * 60, 0).unwrap()
}

/// The records one evaluation of `totals` (all of them changed) decides,
/// given the records it read.
fn decide_on(
    day: &str,
    totals: &[(&str, i128)],
    read: &[&AlertRecord],
    generation: u64,
) -> Vec<AlertRecord> {
    let totals: BTreeMap<String, i128> =
        totals.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect();
    let changed: BTreeSet<String> = totals.keys().cloned().collect();
    let records: BTreeMap<String, AlertRecord> = read
        .iter()
        .map(|r| (r.alert.clone(), (*r).clone()))
        .collect();
    let decisions = decide(
        &rules(),
        &date(day),
        &totals,
        Trigger::Changed(&changed),
        &records,
        generation,
        at(generation as i64),
    );
    assert!(decisions.errors.is_empty(), "{:?}", decisions.errors);
    decisions.writes
}

/// The one record an evaluation of one counter decides.
fn decide_one(totals: &[(&str, i128)], read: Option<&AlertRecord>, generation: u64) -> AlertRecord {
    let mut writes = decide_on(
        DATE,
        totals,
        &read.into_iter().collect::<Vec<_>>(),
        generation,
    );
    assert_eq!(writes.len(), 1, "{writes:?}");
    writes.remove(0)
}

async fn alert_store() -> (DynamoAlertStore, aws_sdk_dynamodb::Client) {
    let sdk = sdk_config().await;
    let client = tally_aws::config::dynamodb(&sdk);
    let table = unique("alerts");
    create_alerts_table(&client, &table).await.unwrap();
    // Creating it again is fine: test servers and tooling call it freely.
    create_alerts_table(&client, &table).await.unwrap();
    (DynamoAlertStore::new(client.clone(), table), client)
}

fn sorted(mut records: Vec<AlertRecord>) -> Vec<AlertRecord> {
    records.sort_by(|a, b| a.alert.cmp(&b.alert));
    records
}

#[tokio::test]
async fn claim_raises_the_mark_refuses_a_lower_generation_and_accepts_an_equal_one() {
    let (store, client) = alert_store().await;
    let day = date(DATE);
    assert_eq!(store.mark(&day).await.unwrap(), 0, "no mark yet");

    assert_eq!(store.claim(&day, 5).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.mark(&day).await.unwrap(), 5);
    assert_eq!(
        store.claim(&day, 4).await.unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert_eq!(
        store.mark(&day).await.unwrap(),
        5,
        "a lower claim changes nothing"
    );
    assert_eq!(store.claim(&day, 5).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.claim(&day, 7).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.mark(&day).await.unwrap(), 7);

    // Other days have their own marks.
    assert_eq!(store.mark(&date("2015-11-17")).await.unwrap(), 0);
    assert_eq!(
        store.claim(&date("2015-11-17"), 1).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(store.mark(&day).await.unwrap(), 7);

    // The mark expires with the day's records.
    let item = client
        .get_item()
        .table_name(store.table())
        .key("Date", AttributeValue::S(DATE.into()))
        .key("Alert", AttributeValue::S(MARK.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let record = decide_one(&[("x", 101)], None, 1);
    assert_eq!(
        item["Expires"],
        AttributeValue::N(record.expires.to_string())
    );
    assert_eq!(item["Generation"], AttributeValue::N("7".into()));
}

#[tokio::test]
async fn put_alert_is_a_compare_and_swap_on_the_records_version() {
    let (store, _) = alert_store().await;
    let day = date(DATE);

    let created = decide_one(&[("a#b", 200)], None, 1);
    assert_eq!(created.version, 1);
    assert!(created.outbox.is_some(), "firing: a message to send");
    assert_eq!(
        store.put_alert(&created, 0, None).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        store.put_alert(&created, 0, None).await.unwrap(),
        PutOutcome::PreconditionFailed,
        "a second create is refused"
    );

    let resolved = decide_one(&[("a#b", 50)], Some(&created), 2);
    assert_eq!(resolved.version, 2);
    assert_eq!(
        store
            .put_alert(&resolved, created.version, None)
            .await
            .unwrap(),
        PutOutcome::Written
    );

    // A writer that read the record before the resolution (and, on its own
    // totals, also decided to move it on).
    let stale = decide_one(&[("a#b", 60)], Some(&created), 3);
    assert_eq!(stale.version, resolved.version);
    assert_eq!(
        store
            .put_alert(&stale, created.version, None)
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert_eq!(store.alerts(&day).await.unwrap(), vec![resolved]);
}

#[tokio::test]
async fn a_record_write_guarded_by_the_mark_is_refused_once_the_mark_moved() {
    let (store, _) = alert_store().await;
    let day = date(DATE);

    assert_eq!(store.claim(&day, 3).await.unwrap(), PutOutcome::Written);
    let first = decide_one(&[("bids", 150)], None, 3);
    assert_eq!(
        store.put_alert(&first, 0, Some(3)).await.unwrap(),
        PutOutcome::Written
    );

    // A newer evaluation claims generation 4; the slow one, still on 3,
    // must not decide anything.
    assert_eq!(store.claim(&day, 4).await.unwrap(), PutOutcome::Written);
    let slow = decide_one(&[("bids", 20)], Some(&first), 4);
    assert_eq!(
        store
            .put_alert(&slow, first.version, Some(3))
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert_eq!(
        store.alerts(&day).await.unwrap(),
        vec![first.clone()],
        "unchanged"
    );

    // The right mark but a stale version is refused too, in the same transaction.
    assert_eq!(
        store.put_alert(&first, 0, Some(4)).await.unwrap(),
        PutOutcome::PreconditionFailed
    );

    // The current mark and version: written.
    assert_eq!(
        store
            .put_alert(&slow, first.version, Some(4))
            .await
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(store.alerts(&day).await.unwrap(), vec![slow]);

    // Mark 0 means "no claim yet": it holds on a day without a mark, and
    // not once one is claimed.
    let other = "2015-11-18";
    let mut writes = decide_on(other, &[("x", 101)], &[], 1);
    let record = writes.remove(0);
    assert_eq!(
        store.put_alert(&record, 0, Some(0)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        store.claim(&date(other), 1).await.unwrap(),
        PutOutcome::Written
    );
    let next = decide_on(other, &[("x", 5)], &[&record], 2).remove(0);
    assert_eq!(
        store
            .put_alert(&next, record.version, Some(0))
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
}

#[tokio::test]
async fn a_failing_transaction_that_is_not_a_condition_is_an_error_naming_the_table() {
    let sdk = sdk_config().await;
    let missing = unique("no-such-alerts");
    let store = DynamoAlertStore::new(tally_aws::config::dynamodb(&sdk), missing.clone());
    let record = decide_one(&[("x", 101)], None, 1);
    for mark in [None, Some(1)] {
        let error = store.put_alert(&record, 0, mark).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&missing), "{message}");
        assert!(message.contains("ResourceNotFoundException"), "{message}");
    }
}

#[tokio::test]
async fn a_days_alerts_are_its_records_only_with_counter_names_intact() {
    let (store, client) = alert_store().await;
    let names = [
        "a#b",
        ":v",
        ") OR attribute_exists(x",
        "заказы",
        "#date",
        "it's \"quoted\"",
        "~mark",
    ];
    let totals: Vec<(&str, i128)> = names.iter().map(|n| (*n, 1_000)).collect();
    let records = decide_on(DATE, &totals, &[], 1);
    assert_eq!(records.len(), names.len());
    store.claim(&date(DATE), 1).await.unwrap();
    for record in &records {
        assert_eq!(
            store.put_alert(record, 0, Some(1)).await.unwrap(),
            PutOutcome::Written,
            "{}",
            record.alert
        );
    }
    // Another day's records and mark stay out.
    store.claim(&date("2015-11-17"), 9).await.unwrap();
    for record in decide_on("2015-11-17", &totals[..2], &[], 9) {
        store.put_alert(&record, 0, None).await.unwrap();
    }

    let read = sorted(store.alerts(&date(DATE)).await.unwrap());
    assert_eq!(read, sorted(records.clone()));
    let keys: BTreeSet<&str> = read.iter().map(|r| r.alert.as_str()).collect();
    assert!(keys.contains("too-high#) OR attribute_exists(x"));
    assert!(keys.contains("too-high#заказы"));
    assert!(
        keys.contains("too-high#~mark"),
        "a counter named ~mark is a record"
    );
    assert!(store.alerts(&date("2015-11-15")).await.unwrap().is_empty());

    // A record that does not decode is an error naming the table and the item.
    let mut item: std::collections::HashMap<String, AttributeValue> =
        serde_dynamo::to_item(&records[0]).unwrap();
    item.insert("Alert".into(), AttributeValue::S("too-high#broken".into()));
    item.insert("Phase".into(), AttributeValue::S("exploded".into()));
    client
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let message = store.alerts(&date(DATE)).await.unwrap_err().to_string();
    assert!(message.contains(store.table()), "{message}");
    assert!(message.contains("2015-11-16/too-high#broken"), "{message}");
}

/// The message a limit on `counter` sends when it fires.
fn firing(counter: &str, value: i128) -> Notification {
    decide_one(&[(counter, value)], None, 1)
        .outbox
        .expect("a firing alert has a message")
}

#[tokio::test]
async fn a_published_alert_reaches_a_queue_with_subject_json_body_and_attributes() {
    let sdk = sdk_config().await;
    let (topic_arn, queue_url) = alert_queue(&sdk).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let notifier = SnsNotifier::new(tally_aws::config::sns(&sdk), &topic_arn);

    let note = firing("заказы#1", 191_122);
    notifier.publish(&note).await.unwrap();
    let received = receive_all(&sqs, &queue_url, 1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let envelope = &received[0];

    assert_eq!(envelope["Subject"], note.subject());
    assert!(note.subject().is_ascii());
    let body: Value = serde_json::from_str(envelope["Message"].as_str().unwrap())
        .expect("the queue gets the default rendering, the notification's JSON");
    assert_eq!(body["rule"], "too-high");
    assert_eq!(body["state"], "firing");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["date"], DATE);
    assert_eq!(body["counter"], "заказы#1");
    assert_eq!(body["value"], 191_122);
    assert_eq!(body["threshold"]["max"], 100);
    assert_eq!(body["labels"]["team"], "bidding");
    let decoded: Notification = serde_json::from_value(body).unwrap();
    assert_eq!(decoded, note);

    let attributes = &envelope["MessageAttributes"];
    for (name, value) in [
        ("severity", "critical"),
        ("rule", "too-high"),
        ("state", "firing"),
    ] {
        assert_eq!(attributes[name]["Type"], "String", "{attributes}");
        assert_eq!(attributes[name]["Value"], value, "{attributes}");
    }

    // Exactly one message per publish.
    assert!(
        receive_all(&sqs, &queue_url, 0, Duration::from_secs(2))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_publish_to_a_missing_topic_is_an_error_naming_topic_and_alert() {
    let sdk = sdk_config().await;
    let topic_arn = format!("arn:aws:sns:us-east-1:123456789012:{}", unique("none"));
    let notifier = SnsNotifier::new(tally_aws::config::sns(&sdk), &topic_arn);
    let note = firing("x", 101);
    let message = notifier.publish(&note).await.unwrap_err().to_string();
    assert!(
        message.contains(&format!("SNS Publish to {topic_arn} ({})", note.alert)),
        "{message}"
    );
}

#[tokio::test]
async fn objects_put_are_listed_under_their_prefix_with_the_etag_time_and_size_head_reports() {
    let sdk = sdk_config().await;
    let started = Utc::now();
    let s3 = tally_aws::config::s3(&sdk);
    let bucket = unique("snapshots").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3ObjectStore::new(s3.clone());

    let objects = [
        (
            "totals/2015-11-16",
            "COUNTER1 191122\n",
            "text/plain; charset=utf-8",
        ),
        (
            "totals/2015-11-16.json",
            "{\"date\":\"2015-11-16\"}",
            "application/json",
        ),
        ("totals/заказы 1+", "x 1\n", "text/plain; charset=utf-8"),
        ("other/2015-11-16", "y 2\n", "text/plain; charset=utf-8"),
    ];
    for (key, body, content_type) in objects {
        store
            .put(&bucket, key, Bytes::from(body), content_type)
            .await
            .unwrap();
    }
    // A rewrite replaces the body whole.
    store
        .put(
            &bucket,
            "totals/2015-11-16",
            Bytes::from("COUNTER1 191123\n"),
            "text/plain; charset=utf-8",
        )
        .await
        .unwrap();

    let mut listed = store.list(&bucket, "totals/").await.unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "totals/2015-11-16",
            "totals/2015-11-16.json",
            "totals/заказы 1+"
        ]
    );
    for object in &listed {
        let key = &object.key;
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(object.etag, normalize_etag(head.e_tag().unwrap()), "{key}");
        assert!(!object.etag.contains('"'));
        assert_eq!(Some(object.size as i64), head.content_length(), "{key}");
        let head_time = head.last_modified().unwrap();
        assert_eq!(
            (
                object.last_modified.timestamp(),
                object.last_modified.timestamp_subsec_nanos()
            ),
            (head_time.secs(), head_time.subsec_nanos()),
            "{key}"
        );
        assert_written_since(object.last_modified, started);
        let expected_type = objects.iter().find(|(k, ..)| k == key).unwrap().2;
        assert_eq!(head.content_type(), Some(expected_type), "{key}");
    }
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key("totals/2015-11-16")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"COUNTER1 191123\n");
    assert!(store.list(&bucket, "nothing/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_listing_longer_than_one_page_is_read_whole() {
    let sdk = sdk_config().await;
    let started = Utc::now();
    let s3 = tally_aws::config::s3(&sdk);
    let bucket = unique("many").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3ObjectStore::new(s3);
    // ListObjectsV2 returns at most 1,000 keys a page.
    let keys: Vec<String> = (0..1_003).map(|i| format!("rules/{i:04}.yaml")).collect();
    for chunk in keys.chunks(50) {
        futures::future::try_join_all(chunk.iter().map(|key| {
            store.put(
                &bucket,
                key,
                Bytes::from_static(b"rules: []\n"),
                "application/yaml",
            )
        }))
        .await
        .unwrap();
    }
    // Listed through a client that counts requests: one a page, so a tick's
    // listing of a day costs one request per 1,000 instances.
    let requests = FaultyHttpClient::new(0.0, 0);
    let mut counted = sdk.clone().into_builder();
    counted.set_http_client(Some(SharedHttpClient::new(requests.clone())));
    let counted = S3ObjectStore::new(tally_aws::config::s3(&counted.build()));
    let objects = counted.list(&bucket, "rules/").await.unwrap();
    assert_eq!(requests.calls().get("S3.ListObjectsV2"), Some(&2));
    for object in &objects {
        assert_eq!(object.size, 10, "{}", object.key);
        assert_written_since(object.last_modified, started);
    }
    let mut listed: Vec<String> = objects.into_iter().map(|object| object.key).collect();
    listed.sort();
    assert_eq!(listed, keys);
}

/// A listed last write time is the server's clock at the PUT: between the
/// test's start and now (S3 keeps whole seconds, so give a second each side).
fn assert_written_since(last_modified: DateTime<Utc>, started: DateTime<Utc>) {
    let slack = chrono::TimeDelta::seconds(1);
    let now = Utc::now();
    assert!(
        started - slack <= last_modified && last_modified <= now + slack,
        "last modified {last_modified}, expected between {started} and {now}"
    );
}
