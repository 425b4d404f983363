//! The rules stage's schedules over the embedded tables (SQLite) and the
//! test kit's in-memory topic and bucket, with the stage's clock injected: lost responses on the
//! alert-state table, partial writes read half-way, outboxes left behind,
//! dates that keep losing their claim. No server is needed; the same stage
//! code runs over DynamoDB on AWS.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use chrono::{DateTime, Utc};
use tally_core::aggregate::{Basis, Exact, PartialItem, TotalItem};
use tally_core::key::Date;
use tally_core::ports::{AlertStore, Notifier, PutOutcome, StoreError, TotalsStore};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, AlertState};
use tally_embedded::alerts_table::SqliteAlertStore;
use tally_embedded::database::Database;
use tally_embedded::totals_tables::SqliteTotalsStore;
use tally_rules::stage::{RulesReport, RulesStage, StageConfig};
use tally_testkit::memory::{MemoryBucket, MemoryTopic};

const DATE: &str = "2015-11-16";
const RULES: &str =
    "rules:\n  - name: errors-max\n    counter: ERRORS\n    max: 6\n    severity: critical\n";

fn date() -> Date {
    Date::parse(DATE).expect("a valid date")
}

/// What the topic sent, as the tests compare it.
fn sent(topic: &MemoryTopic) -> Vec<(AlertState, Option<i128>)> {
    topic.sent().iter().map(|n| (n.state, n.value)).collect()
}

/// A kind of conditional write on the alert-state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A decided record, guarded by the day's mark.
    Decision,
    /// An outbox's claim or lease renewal (the record keeps its outbox).
    OutboxLease,
}

/// An alert store whose next `times` writes of one kind land but lose their
/// response: the SDK retries them, and the retry reports what it found (its
/// own condition failing over the first attempt's write).
#[derive(Clone)]
struct LosesResponses<A> {
    inner: A,
    kind: Write,
    times: Arc<AtomicUsize>,
}

impl<A> LosesResponses<A> {
    fn new(inner: A, kind: Write, times: usize) -> LosesResponses<A> {
        LosesResponses {
            inner,
            kind,
            times: Arc::new(AtomicUsize::new(times)),
        }
    }
}

impl<A: AlertStore> AlertStore for LosesResponses<A> {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alerts(date).await
    }

    async fn mark(&self, date: &Date) -> Result<u64, StoreError> {
        self.inner.mark(date).await
    }

    async fn claim(&self, date: &Date, generation: u64) -> Result<PutOutcome, StoreError> {
        self.inner.claim(date, generation).await
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let kind = match (mark, &record.outbox) {
            (Some(_), _) => Some(Write::Decision),
            (None, Some(_)) => Some(Write::OutboxLease),
            (None, None) => None,
        };
        let first = self.inner.put_alert(record, read_version, mark).await?;
        if first == PutOutcome::Written
            && kind == Some(self.kind)
            && self
                .times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return self.inner.put_alert(record, read_version, mark).await;
        }
        Ok(first)
    }
}

/// An alert store on which every claim of a day's mark loses to a newer
/// evaluation (one that never finishes).
#[derive(Clone)]
struct ClaimsAlwaysLose<A>(A);

impl<A: AlertStore> AlertStore for ClaimsAlwaysLose<A> {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        self.0.alerts(date).await
    }

    async fn mark(&self, _date: &Date) -> Result<u64, StoreError> {
        Ok(u64::MAX)
    }

    async fn claim(&self, _date: &Date, _generation: u64) -> Result<PutOutcome, StoreError> {
        Ok(PutOutcome::PreconditionFailed)
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.0.put_alert(record, read_version, mark).await
    }
}

/// The holder a concurrent evaluation names on the leases it takes.
const CONCURRENT: &str = "a concurrent evaluation";

/// An alert store on which a concurrent evaluation of the same totals, at
/// the same instant, decides the same record and writes it just before this
/// one does. It then goes on as the stage does, a step each time this one
/// reads the day's records: it renews the outbox's lease (to
/// `renewed_until`, as this one would), then publishes and clears it.
#[derive(Clone)]
struct Overtaken<A> {
    inner: A,
    topic: MemoryTopic,
    renewed_until: DateTime<Utc>,
    /// 0: not yet overtaken; then the concurrent evaluation's steps done.
    steps: Arc<AtomicUsize>,
}

impl<A: AlertStore> AlertStore for Overtaken<A> {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        let stored = self.inner.alerts(date).await?;
        let step = self.steps.load(Ordering::SeqCst);
        let theirs = stored
            .iter()
            .find(|r| r.claimed_by.as_deref() == Some(CONCURRENT) && r.outbox.is_some());
        if let Some(theirs) = theirs {
            let mut next = theirs.clone();
            next.version += 1;
            match step {
                1 => next.claimed_until = Some(self.renewed_until),
                _ => {
                    if let Some(message) = &theirs.outbox {
                        self.topic.publish(message).await?;
                    }
                    next.outbox = None;
                    next.claimed_until = None;
                    next.claimed_by = None;
                }
            }
            self.inner.put_alert(&next, theirs.version, None).await?;
            self.steps.store(step + 1, Ordering::SeqCst);
        }
        Ok(stored)
    }

    async fn mark(&self, date: &Date) -> Result<u64, StoreError> {
        self.inner.mark(date).await
    }

    async fn claim(&self, date: &Date, generation: u64) -> Result<PutOutcome, StoreError> {
        self.inner.claim(date, generation).await
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        if mark.is_some()
            && self
                .steps
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let mut theirs = record.clone();
            theirs.claimed_by = Some(CONCURRENT.to_owned());
            self.inner.put_alert(&theirs, read_version, mark).await?;
        }
        self.inner.put_alert(record, read_version, mark).await
    }
}

/// One day's tables, written as the aggregate stage writes them, and the
/// rules stage's sinks and clock.
struct Day {
    _dir: tempfile::TempDir,
    db: Database,
    rules: RuleSet,
    objects: MemoryBucket,
    topic: MemoryTopic,
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
            objects: MemoryBucket::unversioned(),
            topic: MemoryTopic::default(),
            now: Arc::new(Mutex::new(
                DateTime::parse_from_rfc3339("2015-11-16T08:00:00Z")
                    .expect("a valid time")
                    .to_utc(),
            )),
            delivered: 0,
        }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock") += chrono::Duration::from_std(by).expect("short");
    }

    fn stage<A: AlertStore>(
        &self,
        alerts: A,
        lease: Duration,
    ) -> RulesStage<SqliteTotalsStore, A, MemoryTopic, MemoryBucket> {
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
            .current(&format!("totals/{DATE}"))
            .map(|body| String::from_utf8_lossy(&body).into_owned())
    }

    async fn outboxes(&self) -> Vec<String> {
        self.alerts()
            .alerts(&date())
            .await
            .expect("alert records")
            .into_iter()
            .filter(|record| record.outbox.is_some())
            .map(|record| record.alert)
            .collect()
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
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);

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
        sent(&day.topic),
        [
            (AlertState::Firing, Some(7)),
            (AlertState::Resolved, Some(6))
        ],
        "an alert fired on a state the totals left must resolve"
    );
}

/// One instance reports ERRORS 7 (over the limit 6), as one totals record.
async fn over_the_limit(day: &mut Day) -> Event {
    let x = day.partial(7, 7, 1).await;
    day.total(&[x], None).await;
    day.new_records()
}

/// The lease (30 s) is shorter than a publish may take, so the outbox's
/// lease is renewed before publishing; the renewal lands but its response is
/// lost, and the SDK's retry fails its condition over the renewal itself.
#[tokio::test]
async fn a_lost_renewal_response_still_publishes_the_outbox() {
    let mut day = Day::new();
    let alerts = LosesResponses::new(day.alerts(), Write::OutboxLease, 1);
    let stage = day.stage(alerts, Duration::from_secs(30));
    let batch = over_the_limit(&mut day).await;
    let (response, report) = stage.handle(&day.rules, &batch).await;
    assert_succeeded(&response, &report);
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);
    assert!(day.outboxes().await.is_empty());
}

/// The decided record's write (a transaction with the mark's check) lands
/// and its response is lost; the retry fails its condition over it.
#[tokio::test]
async fn a_lost_decision_response_publishes_without_waiting_out_its_own_lease() {
    let mut day = Day::new();
    let alerts = LosesResponses::new(day.alerts(), Write::Decision, 1);
    let stage = day.stage(alerts, Duration::from_secs(1));
    let batch = over_the_limit(&mut day).await;
    let (response, report) = stage.handle(&day.rules, &batch).await;
    assert_succeeded(&response, &report);
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);
    assert!(day.outboxes().await.is_empty());
}

/// An invocation decides a message and dies before publishing it (the
/// publish fails); after its lease the redelivered batch claims the outbox,
/// and that claim's response is lost.
#[tokio::test]
async fn a_lost_outbox_claim_response_publishes_without_waiting_out_its_own_lease() {
    let mut day = Day::new();
    let batch = over_the_limit(&mut day).await;
    day.topic.fail_next(1);
    let dying = day.stage(day.alerts(), Duration::from_secs(1));
    let (response, _) = dying.handle(&day.rules, &batch).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(day.outboxes().await, ["errors-max#ERRORS"]);

    day.advance(Duration::from_secs(2));
    let alerts = LosesResponses::new(day.alerts(), Write::OutboxLease, 1);
    let redelivery = day.stage(alerts, Duration::from_secs(1));
    let (response, report) = redelivery.handle(&day.rules, &batch).await;
    assert_succeeded(&response, &report);
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);
    assert!(day.outboxes().await.is_empty());
}

/// A message decided while its date was recent is not published (SNS is
/// down) until the date has left the alert window (two days): the next
/// evaluation of the date (the redelivered batch, a late upload, a
/// backfill) must still send it.
#[tokio::test]
async fn an_outbox_of_a_date_past_the_alert_window_is_still_delivered() {
    let mut day = Day::new();
    let batch = over_the_limit(&mut day).await;
    day.topic.fail_next(1);
    let stage = day.stage(day.alerts(), Duration::from_secs(60));
    let (response, _) = stage.handle(&day.rules, &batch).await;
    assert_eq!(response.batch_item_failures.len(), 1);

    day.advance(Duration::from_secs(3 * 86_400));
    let (response, report) = stage.handle(&day.rules, &batch).await;
    assert_succeeded(&response, &report);
    assert_eq!(report.dates_not_alerted, 1, "{report:?}");
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);
    assert!(day.outboxes().await.is_empty());
}

/// Every claim of the date's mark loses (newer evaluations keep
/// overtaking): past the conflict limit the date's evaluation is not
/// dropped but its batch fails from the date's first record, so Lambda
/// delivers it again.
#[tokio::test]
async fn a_date_that_keeps_losing_its_claim_fails_its_batch_from_its_first_record() {
    let mut day = Day::new();
    let first = day.partial(7, 7, 1).await;
    let stored = day.total(&[first], None).await;
    let second = day.partial(7, 8, 2).await;
    day.total(&[second], Some(&stored)).await;
    let batch = day.new_records();
    assert_eq!(batch.records.len(), 2);
    let stage = day.stage(ClaimsAlwaysLose(day.alerts()), Duration::from_secs(60));
    let (response, report) = stage.handle(&day.rules, &batch).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, [batch.records[0].change.sequence_number.clone()]);
    assert_eq!(report.failed, 1);
    assert!(day.snapshot().is_none());
    assert!(sent(&day.topic).is_empty());
}

/// Two evaluations of the same totals decide the same record at the same
/// instant (one clock); the other's write lands first and ours fails. Read
/// back, the record is ours in every field but the lease's holder: only the
/// holder publishes.
#[tokio::test]
async fn two_evaluations_deciding_the_same_record_at_the_same_instant_send_it_once() {
    let mut day = Day::new();
    let batch = over_the_limit(&mut day).await;
    let lease = Duration::from_secs(30);
    let alerts = Overtaken {
        inner: day.alerts(),
        topic: day.topic.clone(),
        renewed_until: *day.now.lock().expect("clock")
            + chrono::Duration::from_std(lease).expect("short"),
        steps: Arc::default(),
    };
    let stage = day.stage(alerts, lease);
    let (response, report) = stage.handle(&day.rules, &batch).await;
    assert_succeeded(&response, &report);
    assert_eq!(sent(&day.topic), [(AlertState::Firing, Some(7))]);
    assert!(day.outboxes().await.is_empty());
}
