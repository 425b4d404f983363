//! The rules stage's schedules over the embedded tables (SQLite) and
//! in-memory sinks, with the stage's clock injected: lost responses on the
//! alert-state table, partial writes read half-way, outboxes left behind,
//! dates that keep losing their claim. No server is needed; the same stage
//! code runs over DynamoDB on AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tally_core::aggregate::{Basis, Exact, PartialItem, TotalItem};
use tally_core::key::Date;
use tally_core::ports::{AlertStore, Notifier, ObjectWriter, PutOutcome, StoreError, TotalsStore};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertState, Notification};
use tally_embedded::database::{Database, SqliteAlertStore, SqliteTotalsStore};
use tally_rules::stage::{RulesReport, RulesStage, StageConfig};

const DATE: &str = "2015-11-16";
const RULES: &str =
    "rules:\n  - name: errors-max\n    counter: ERRORS\n    max: 6\n    severity: critical\n";

fn date() -> Date {
    Date::parse(DATE).expect("a valid date")
}

/// Snapshots kept in memory by key.
#[derive(Clone, Default)]
struct Objects(Arc<Mutex<BTreeMap<String, Bytes>>>);

impl ObjectWriter for Objects {
    async fn put(
        &self,
        _bucket: &str,
        key: &str,
        body: Bytes,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        self.0.lock().expect("objects").insert(key.to_owned(), body);
        Ok(())
    }

    async fn list(&self, _bucket: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .0
            .lock()
            .expect("objects")
            .keys()
            .filter(|key| key.starts_with(prefix))
            .map(|key| (key.clone(), String::new()))
            .collect())
    }
}

/// Messages published, in order; the next `failing` publishes fail (SNS
/// down, or the process dying before its publish).
#[derive(Clone, Default)]
struct Topic {
    sent: Arc<Mutex<Vec<Notification>>>,
    failing: Arc<AtomicUsize>,
}

impl Topic {
    fn sent(&self) -> Vec<(AlertState, Option<i128>)> {
        self.sent
            .lock()
            .expect("sent")
            .iter()
            .map(|n| (n.state, n.value))
            .collect()
    }
}

impl Notifier for Topic {
    async fn publish(&self, notification: &Notification) -> Result<(), StoreError> {
        if self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new("SNS Publish", "injected outage"));
        }
        self.sent.lock().expect("sent").push(notification.clone());
        Ok(())
    }
}

/// One day's tables, written as the aggregate stage writes them, and the
/// rules stage's sinks and clock.
struct Day {
    _dir: tempfile::TempDir,
    db: Database,
    rules: RuleSet,
    objects: Objects,
    topic: Topic,
    now: Arc<Mutex<DateTime<Utc>>>,
    /// The totals' change log already handed to the rules stage.
    delivered: i64,
}

impl Day {
    fn new() -> Day {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Database::open(dir.path().join("tally.db")).expect("the database opens");
        Day {
            _dir: dir,
            db,
            rules: RuleSet::load(&[("rules.yaml", RULES)]).expect("the test's rules load"),
            objects: Objects::default(),
            topic: Topic::default(),
            now: Arc::new(Mutex::new(
                DateTime::parse_from_rfc3339("2015-11-16T08:00:00Z")
                    .expect("a valid time")
                    .to_utc(),
            )),
            delivered: 0,
        }
    }

    fn stage<A: AlertStore>(
        &self,
        alerts: A,
        lease: Duration,
    ) -> RulesStage<SqliteTotalsStore, A, Topic, Objects> {
        let mut config = StageConfig::new("snapshots");
        config.lease = lease;
        config.max_conflicts = 2;
        let clock = self.now.clone();
        RulesStage::new(
            self.db.totals(),
            alerts,
            self.topic.clone(),
            self.objects.clone(),
            config,
        )
        .with_clock(Arc::new(move || *clock.lock().expect("clock")))
    }

    fn alerts(&self) -> SqliteAlertStore {
        self.db.alerts()
    }

    /// Writes one bucket's partial item holding `ERRORS` = `errors`.
    async fn partial(&self, bucket: u64, errors: i128, version: u64) -> PartialItem {
        let mut item = PartialItem::empty(&date(), bucket);
        item.sums.insert("ERRORS".into(), Exact(errors));
        item.contributors.insert("ERRORS".into(), 1);
        item.version = version;
        let written = self
            .db
            .totals()
            .put_partial(&item, version - 1)
            .await
            .expect("partial written");
        assert_eq!(written, PutOutcome::Written);
        item
    }

    /// Writes the total of `ERRORS` recomputed from `partials`, over the
    /// stored one, as the aggregate stage does after its partial writes.
    async fn total(&self, partials: &[PartialItem], replaces: Option<&Basis>) -> Basis {
        let counters = BTreeSet::from(["ERRORS".to_owned()]);
        let total = tally_core::aggregate::totals_from_partials(&date(), partials, &counters)
            .pop()
            .expect("one total");
        let written = self
            .db
            .totals()
            .put_total(&total, replaces)
            .await
            .expect("total written");
        assert_eq!(written, PutOutcome::Written);
        total.basis
    }

    /// The totals stream's records not handed to the rules stage yet, as
    /// Lambda batches them.
    fn new_records(&mut self) -> Event {
        let rows = self
            .db
            .total_changes_after(self.delivered, 100)
            .expect("the totals' change log");
        if let Some(last) = rows.last() {
            self.delivered = last.sequence;
        }
        let mut event = Event::default();
        event.records = rows
            .iter()
            .map(|row| stream_record(row.sequence, row.old.as_ref(), &row.new))
            .collect();
        event
    }

    fn snapshot(&self) -> Option<String> {
        self.objects
            .0
            .lock()
            .expect("objects")
            .get(&format!("totals/{DATE}"))
            .map(|body| String::from_utf8_lossy(body).into_owned())
    }
}

/// A totals stream record (keys and both images), as DynamoDB Streams
/// writes it.
fn stream_record(sequence: i64, old: Option<&TotalItem>, new: &TotalItem) -> EventRecord {
    let image = |item: &TotalItem| item.to_item().expect("a total's item");
    let mut record = EventRecord::default();
    record.event_id = sequence.to_string();
    record.event_name = if old.is_some() { "MODIFY" } else { "INSERT" }.to_owned();
    let mut keys = serde_dynamo::Item::default();
    let new_image = image(new);
    for key in ["Counter", "Date"] {
        if let Some(value) = new_image.get(key) {
            keys.insert(key.to_owned(), value.clone());
        }
    }
    record.change.keys = keys;
    record.change.new_image = new_image;
    record.change.old_image = old.map(image).unwrap_or_default();
    record.change.sequence_number = Some(sequence.to_string());
    record
}

fn assert_succeeded(response: &DynamoDbEventResponse, report: &RulesReport) {
    assert!(
        response.batch_item_failures.is_empty(),
        "the batch failed: {report:?}"
    );
}

/// Counter ERRORS, two instances: x in bucket 7 reports 1, y in bucket 9
/// reports 5 (total 6, limit 6). Then x reports 2 and y 4: the total stays 6.
/// The aggregate stage writes partial 7, an evaluation of an earlier record
/// reads the day before partial 9 is written (7: the alert fires), then the
/// total is rewritten as 6 with the newer basis: a record whose value and
/// contributors are those of its old image.
#[tokio::test]
async fn a_basis_only_total_record_after_cancelling_partial_writes_rewrites_the_snapshot() {
    let mut day = Day::new();
    let stage = day.stage(day.alerts(), Duration::from_secs(60));
    let x = day.partial(7, 1, 1).await;
    let y = day.partial(9, 5, 1).await;
    let stored = day.total(&[x, y], None).await;
    let first = day.new_records();

    let x = day.partial(7, 2, 2).await;
    // The evaluation of the first record reads the day between the two
    // partial writes: 2 + 5.
    let (response, report) = stage.handle(&day.rules, &first).await;
    assert_succeeded(&response, &report);
    assert_eq!(day.snapshot().as_deref(), Some("ERRORS 7\n"));
    assert_eq!(day.topic.sent(), [(AlertState::Firing, Some(7))]);

    let y = day.partial(9, 4, 2).await;
    day.total(&[x, y], Some(&stored)).await;
    let basis_only = day.new_records();
    assert_eq!(basis_only.records.len(), 1);
    let (response, report) = stage.handle(&day.rules, &basis_only).await;
    assert_succeeded(&response, &report);

    assert_eq!(
        day.snapshot().as_deref(),
        Some("ERRORS 6\n"),
        "the snapshot must follow the day's final totals"
    );
    assert_eq!(
        day.topic.sent(),
        [
            (AlertState::Firing, Some(7)),
            (AlertState::Resolved, Some(6))
        ],
        "an alert fired on a state the totals left must resolve"
    );
}
