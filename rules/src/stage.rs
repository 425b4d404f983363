//! One date's evaluation: exact totals, alert transitions sent once, and the
//! snapshot for task B.
//!
//! **Exactly one message per transition.** Redelivered and concurrent
//! batches are the normal case on a stream, so:
//!
//! 1. The day's totals come from one strongly consistent read of the
//!    partial items; their *generation* (the sum of the items' versions)
//!    grows with every change.
//! 2. The evaluation *claims* the day's mark for its generation (the mark
//!    only rises). Every alert record write is conditional on the record's
//!    version and, in the same transaction, on the mark still being this
//!    generation: an evaluation of older totals that lost a race decides
//!    nothing; it reads again and evaluates the newer totals instead.
//! 3. A record that already saw this generation is not moved again (a
//!    redelivered batch changes nothing, and `for:` counts each change once).
//! 4. A transition's message is written into the record's *outbox* by the
//!    same write, marked as being published by this process for a lease;
//!    then it is published, then the outbox is cleared. A process that dies
//!    in between leaves the outbox; the next evaluation of that date (the
//!    redelivered batch) waits out the lease, claims it and publishes it. A
//!    message is therefore never lost, and is sent twice only if a process
//!    dies after SNS accepted it and before the outbox was cleared; each
//!    message carries `alert` and `transition` so a subscriber can drop that
//!    repeat.
//!
//! **The snapshot converges.** It is written after the alerts, then the mark
//! is read again: if a newer evaluation claimed it meanwhile, this one's PUT
//! may have landed after the newer one's, so it starts over on newer totals.
//! The last PUT is therefore always by an evaluation that saw the mark still
//! at its own generation after writing, which is the newest totals read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_core::capacity;
use tally_core::key::Date;
use tally_core::ports::{AlertStore, Notifier, ObjectWriter, PutOutcome, StoreError, TotalsStore};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, decide};
use tally_core::snapshot::{self, DayTotals};
use tally_core::state::BUCKETS;
use tracing::{error, info, warn};

/// Where snapshots go, and the outbox lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    pub snapshot_bucket: String,
    /// Default `totals`.
    pub snapshot_prefix: String,
    /// How long a process has to publish a message it wrote to an outbox
    /// before another may take it over. Longer than SNS's Publish with the
    /// SDK's retries; shorter than the function's timeout.
    pub lease: Duration,
    /// How many times a date is re-read after losing a race to a newer
    /// evaluation before the batch is failed (and redelivered).
    pub max_conflicts: u32,
}

impl StageConfig {
    pub fn new(snapshot_bucket: impl Into<String>) -> StageConfig {
        StageConfig {
            snapshot_bucket: snapshot_bucket.into(),
            snapshot_prefix: "totals".to_owned(),
            lease: Duration::from_secs(30),
            max_conflicts: 8,
        }
    }
}

/// What a batch did, logged as one JSON line per invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RulesReport {
    pub records: u64,
    pub dates: u64,
    /// Alerts evaluated (one per rule, or per counter for a limit).
    pub alerts_checked: u64,
    pub messages_sent: u64,
    /// Messages left by a process that died, published now.
    pub outboxes_recovered: u64,
    pub rule_errors: u64,
    pub snapshots_written: u64,
    /// Times a date was read again after losing a race.
    pub conflicts: u64,
    /// Records or dates not processed; Lambda redelivers them.
    pub failed: u64,
    /// DynamoDB capacity consumed, by DynamoDB's billing rules (item sizes,
    /// transactional writes at twice the units).
    pub read_units: u64,
    pub write_units: u64,
}

/// Why a date could not be processed; the batch is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{date}: still losing to newer evaluations after {conflicts} attempts; the batch will be retried"
    )]
    Contended { date: Date, conflicts: u32 },
    #[error(
        "{date}: alert {alert} has a message another process is still publishing after {waited:?}; the batch will be retried"
    )]
    OutboxHeld {
        date: Date,
        alert: String,
        waited: Duration,
    },
}

/// The clock alerts are stamped with; replaced in tests of `repeat:`.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The rules stage over its ports.
pub struct RulesStage<T, A, N, W> {
    totals: T,
    alerts: A,
    notifier: N,
    objects: W,
    config: StageConfig,
    clock: Clock,
}

/// What delivering a day's outboxes found.
enum Outboxes {
    /// None pending.
    Clear,
    /// Some were delivered: the records changed, read them again.
    Delivered,
    /// One is being published by another process; wait and read again.
    Held(String),
    /// A record changed under us; read again.
    Conflict,
}

impl<T, A, N, W> RulesStage<T, A, N, W>
where
    T: TotalsStore,
    A: AlertStore,
    N: Notifier,
    W: ObjectWriter,
{
    pub fn new(totals: T, alerts: A, notifier: N, objects: W, config: StageConfig) -> Self {
        RulesStage {
            totals,
            alerts,
            notifier,
            objects,
            config,
            clock: Arc::new(Utc::now),
        }
    }

    /// Replaces the clock (tests of `repeat:` and the lease).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &StageConfig {
        &self.config
    }

    /// Evaluates one date for a batch whose changed counters are `changed`,
    /// and writes its snapshot.
    pub async fn process_date(
        &self,
        rules: &RuleSet,
        date: &Date,
        changed: &BTreeSet<String>,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        let started = Instant::now();
        let mut conflicts = 0u32;
        let mut wait = Duration::from_millis(50);
        loop {
            let lost = |conflicts: &mut u32, report: &mut RulesReport| {
                *conflicts += 1;
                report.conflicts += 1;
                if *conflicts > self.config.max_conflicts {
                    Err(StageError::Contended {
                        date: date.clone(),
                        conflicts: *conflicts,
                    })
                } else {
                    Ok(())
                }
            };
            let partials = self.totals.partials(date).await?;
            // A key with no item is billed the minimum read as well.
            report.read_units += partials.iter().map(|p| p.read_units()).sum::<u64>()
                + (BUCKETS as usize).saturating_sub(partials.len()) as u64;
            let day = DayTotals::from_partials(date, &partials);
            let generation = day.generation;
            report.write_units += MARK_UNITS;
            if self.alerts.claim(date, generation).await? == PutOutcome::PreconditionFailed {
                lost(&mut conflicts, report)?;
                continue;
            }
            let records: BTreeMap<String, AlertRecord> = self
                .alerts
                .alerts(date)
                .await?
                .into_iter()
                .map(|record| (record.alert.clone(), record))
                .collect();
            // A query is billed on the total size it returns.
            report.read_units += capacity::consistent_read_units(Some(
                records.values().map(AlertRecord::item_size).sum::<usize>(),
            ));
            match self.deliver_outboxes(&records, report).await? {
                Outboxes::Clear => {}
                Outboxes::Delivered => continue,
                Outboxes::Conflict => {
                    lost(&mut conflicts, report)?;
                    continue;
                }
                Outboxes::Held(alert) => {
                    let waited = started.elapsed();
                    if waited > self.config.lease + Duration::from_secs(5) {
                        return Err(StageError::OutboxHeld {
                            date: date.clone(),
                            alert,
                            waited,
                        });
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                    continue;
                }
            }

            let now = (self.clock)();
            let decisions = decide(rules, date, &day.totals, changed, &records, generation, now);
            report.alerts_checked += decisions.checked as u64;
            for rule_error in &decisions.errors {
                report.rule_errors += 1;
                error!(date = %date, rule = %rule_error.rule, counter = rule_error.counter.as_deref(), error = %rule_error.message, "rule error: the rule could not be evaluated on these totals; the other rules still ran");
            }
            let mut conflict = false;
            for mut record in decisions.writes {
                let read_version = record.version - 1;
                if record.outbox.is_some() {
                    record.claimed_until = Some(now + lease_of(self.config.lease));
                }
                // A transaction: the record's write and the mark's check,
                // each at twice the units of a plain write.
                report.write_units += 2 * (capacity::write_units(record.item_size()) + MARK_UNITS);
                match self
                    .alerts
                    .put_alert(&record, read_version, Some(generation))
                    .await?
                {
                    PutOutcome::Written => {
                        if record.outbox.is_some() {
                            self.publish_and_clear(record, report).await?;
                        }
                    }
                    PutOutcome::PreconditionFailed => {
                        conflict = true;
                        break;
                    }
                }
            }
            if conflict {
                lost(&mut conflicts, report)?;
                continue;
            }

            self.write_snapshot(&day, now).await?;
            report.snapshots_written += 1;
            report.read_units += MARK_UNITS;
            if self.alerts.mark(date).await? != generation {
                lost(&mut conflicts, report)?;
                continue;
            }
            return Ok(());
        }
    }

    /// Publishes what processes that died left in outboxes.
    async fn deliver_outboxes(
        &self,
        records: &BTreeMap<String, AlertRecord>,
        report: &mut RulesReport,
    ) -> Result<Outboxes, StageError> {
        let now = (self.clock)();
        let mut delivered = false;
        for record in records.values().filter(|r| r.outbox.is_some()) {
            if record.claimed_until.is_some_and(|until| until > now) {
                return Ok(Outboxes::Held(record.alert.clone()));
            }
            let mut claimed = record.clone();
            claimed.claimed_until = Some(now + lease_of(self.config.lease));
            claimed.version += 1;
            report.write_units += capacity::write_units(claimed.item_size());
            match self
                .alerts
                .put_alert(&claimed, record.version, None)
                .await?
            {
                PutOutcome::Written => {
                    warn!(date = %record.date, alert = %record.alert, "publishing a message a previous invocation decided but did not finish sending");
                    report.outboxes_recovered += 1;
                    self.publish_and_clear(claimed, report).await?;
                    delivered = true;
                }
                PutOutcome::PreconditionFailed => return Ok(Outboxes::Conflict),
            }
        }
        Ok(if delivered {
            Outboxes::Delivered
        } else {
            Outboxes::Clear
        })
    }

    /// Publishes a record's outbox, then clears it.
    async fn publish_and_clear(
        &self,
        mut record: AlertRecord,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        let Some(notification) = record.outbox.take() else {
            return Ok(());
        };
        self.notifier.publish(&notification).await?;
        report.messages_sent += 1;
        info!(alert = %notification.alert, transition = notification.transition, state = notification.state.as_str(), severity = %notification.severity, subject = %notification.subject(), "alert sent");
        record.claimed_until = None;
        let read_version = record.version;
        record.version += 1;
        // Billed on the larger of the old item (with its outbox) and the new.
        report.write_units += capacity::write_units(record.item_size().max(
            serde_json::to_string(&notification).map_or(0, |json| json.len()) + record.item_size(),
        ));
        if self.alerts.put_alert(&record, read_version, None).await?
            == PutOutcome::PreconditionFailed
        {
            // Someone took the outbox over after our lease ran out: they
            // will publish it again, and the subscriber sees the same
            // alert and transition twice.
            warn!(alert = %notification.alert, transition = notification.transition, "the message was published after its lease ran out; another invocation may publish it again");
        }
        Ok(())
    }

    async fn write_snapshot(&self, day: &DayTotals, now: DateTime<Utc>) -> Result<(), StoreError> {
        let prefix = &self.config.snapshot_prefix;
        let bucket = &self.config.snapshot_bucket;
        self.objects
            .put(
                bucket,
                &snapshot::text_key(prefix, &day.date),
                Bytes::from(snapshot::render_text(day)),
                "text/plain; charset=utf-8",
            )
            .await?;
        self.objects
            .put(
                bucket,
                &snapshot::json_key(prefix, &day.date),
                Bytes::from(snapshot::render_json(day, now)),
                "application/json",
            )
            .await
    }
}

/// The day's mark is a few dozen bytes: one unit to read or write.
const MARK_UNITS: u64 = 1;

fn lease_of(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

/// Logs a batch's report as one line.
pub fn log_report(report: &RulesReport) {
    match serde_json::to_string(report) {
        Ok(json) => info!(report = %json, "rules batch done"),
        Err(e) => warn!(error = %e, "could not render the batch report"),
    }
}
