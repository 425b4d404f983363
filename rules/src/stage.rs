//! One date's evaluation: exact totals, the snapshot for the downstream job,
//! and alert transitions sent once.
//!
//! **The totals** come from an isolated read of the day's partial items
//! (the aggregate stage's exact sums; [`TotalsStore::partials_isolated`]):
//! a state the day really passed through. Their *generation*, the sum of the items' versions, grows with
//! every change.
//!
//! **The snapshot converges.** The evaluation *claims* the day's mark for
//! its generation (the mark only rises; a claim below it fails and the
//! evaluation reads again), writes the snapshot, then reads the mark again:
//! if a newer evaluation claimed it meanwhile, this one's PUT may have
//! landed after the newer one's, so it starts over on newer totals. The last
//! PUT is therefore by an evaluation that saw the mark still at its own
//! generation after writing: the newest totals. The snapshot comes before
//! alerting so that an SNS outage or a held outbox never delays it.
//!
//! **Each transition sent once.** Redelivered and concurrent batches are
//! the normal case on a stream, so:
//!
//! 1. Every alert record write is conditional on the record's version and,
//!    in the same transaction, on the mark still being this generation: an
//!    evaluation of older totals that lost a race decides nothing; it reads
//!    again and evaluates the newer totals instead.
//! 2. A record that already saw this generation is not moved again, so a
//!    redelivered batch sends nothing, and `for:` counts each batch that
//!    changed the rule's totals once.
//! 3. A transition's message is written into the record's *outbox* by the
//!    same write, leased to this evaluation (`ClaimedUntil`, `ClaimedBy`);
//!    it is published only with at least [`PUBLISH_BUDGET`] of the lease
//!    left (renewing it first if needed), then the outbox is cleared. A
//!    process that dies in between leaves the outbox; the next evaluation of
//!    that date (the redelivered batch) waits out the lease, claims the
//!    outbox and publishes it. A message is therefore never lost, and is
//!    sent twice only if a process dies after SNS accepted it and before the
//!    outbox was cleared; each message carries `alert` and `transition` so a
//!    subscriber can drop that repeat.
//!
//! **A lost response is not a lost race.** A conditional write that lands
//! but whose response is lost is retried by the SDK, and the retry fails its
//! own condition over the first attempt. Taken at its word, a decision or an
//! outbox claim would then read again and find its own outbox leased, wait
//! the lease out and fail the batch; a renewal would leave the message to a
//! process that does not exist, and the batch would be acknowledged with
//! the message unsent. So every conditional write here goes through
//! [`put_confirmed`]: a failed condition over exactly what was written (the
//! mark at this generation; the whole record, lease holder included) is
//! this evaluation's own write. The holder is what tells two evaluations of
//! the same totals apart when they decide the same record at the same
//! instant: only one of them publishes.
//!
//! **No evaluation is dropped.** A date still losing to newer evaluations
//! after [`StageConfig::max_conflicts`] reads, or whose outbox is held past
//! its lease, fails with a [`StageError`]; the handler then fails the batch
//! from the date's first record, and Lambda delivers it again.
//!
//! Only recent dates are alerted on ([`StageConfig::alert_days`]); older
//! ones, from a backfill or a repair, get their snapshot, and any outbox
//! left from when they were recent is still delivered: a message decided is
//! owed whatever the date's age.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tally_core::capacity;
use tally_core::fleet::{self, Fleet, Staleness, Thresholds};
use tally_core::key::Date;
use tally_core::key::UploadKey;
use tally_core::ports::{
    AlertStore, Notifier, ObjectWriter, PutOutcome, StateStore, StoreError, TotalsStore,
    put_confirmed,
};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::{AlertRecord, Phase, StaleByRule, Trigger, decide};
use tally_core::rules::load::Condition;
use tally_core::snapshot::{self, DayTotals};
use tally_core::state::BUCKETS;
use tally_core::state::InstanceState;
use tracing::{error, info, warn};

/// Where snapshots go, and the outbox lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    pub snapshot_bucket: String,
    /// Default `totals`.
    pub snapshot_prefix: String,
    /// How long a process has to publish a message it wrote to an outbox
    /// before another may take it over: longer than a Publish with the
    /// SDK's retries ([`PUBLISH_BUDGET`]); a redelivered batch may wait this
    /// long for it, so the function's timeout must be about twice this.
    pub lease: Duration,
    /// Dates alerted on: today and the days before it, this many in all,
    /// by the stage's clock (UTC). Older dates get their snapshot, and
    /// messages already decided for them are still delivered.
    pub alert_days: u32,
    /// How many times a date is re-read after losing a race to a newer
    /// evaluation before the batch is failed (and redelivered).
    pub max_conflicts: u32,
}

impl StageConfig {
    pub fn new(snapshot_bucket: impl Into<String>) -> StageConfig {
        StageConfig {
            snapshot_bucket: snapshot_bucket.into(),
            snapshot_prefix: "totals".to_owned(),
            lease: Duration::from_secs(60),
            alert_days: 2,
            max_conflicts: 8,
        }
    }
}

/// What a batch did, logged as one JSON line per invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RulesReport {
    pub records: u64,
    /// ListObjectsV2 requests a tick made for stale rules (1,000 keys a
    /// page).
    pub list_requests: u64,
    /// Evaluations on the clock rather than on a batch.
    pub ticks: u64,
    pub dates: u64,
    /// Alerts evaluated (one per rule, or per counter for a limit).
    pub alerts_checked: u64,
    pub messages_sent: u64,
    /// Alerts that started to hold and wait out their `for:` (logged, not
    /// sent).
    pub pending: u64,
    /// Messages left by a process that died, published now.
    pub outboxes_recovered: u64,
    pub rule_errors: u64,
    pub snapshots_written: u64,
    /// Dates too old to alert on (see [`StageConfig::alert_days`]).
    pub dates_not_alerted: u64,
    /// Times a date was read again after losing a race.
    pub conflicts: u64,
    /// Records or dates not processed; Lambda redelivers them.
    pub failed: u64,
    /// DynamoDB capacity consumed, by DynamoDB's billing rules (item sizes,
    /// transactional writes at twice the units).
    pub read_units: u64,
    pub write_units: u64,
    /// On a tick: the age in seconds of the newest upload its listing of
    /// the uploads found, if it found one (the dead man's switch's
    /// `NewestUploadAge`).
    pub newest_upload_age_seconds: Option<u64>,
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
    /// Names this stage's leases: see [`RulesStage::lease_holder`].
    id: u64,
    evaluations: AtomicU64,
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
            id: stage_id(),
            evaluations: AtomicU64::new(0),
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

    /// Writes one date's snapshot, delivers the messages its outboxes hold
    /// and, when the date is within the alerting window, decides its alerts:
    /// those of the counters a batch changed, or on a tick every alert.
    ///
    /// A tick whose totals an evaluation already claimed (the day's mark is
    /// at their generation) neither claims nor writes the snapshot again: a
    /// tick costs the totals' read, the mark's, the alert records' and the
    /// writes of what it decides. Totals no evaluation claimed (a batch lost
    /// on its way) get their claim and snapshot from the tick.
    pub async fn process_date(
        &self,
        rules: &RuleSet,
        date: &Date,
        trigger: Trigger<'_>,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        let started = Instant::now();
        let holder = self.lease_holder();
        let mut conflicts = 0u32;
        'totals: loop {
            let partials = self.totals.partials_isolated(date).await?;
            // An isolated read is at least two reads; a key with no item is
            // billed the minimum read as well.
            report.read_units += 2
                * (partials.iter().map(|p| p.read_units()).sum::<u64>()
                    + (BUCKETS as usize).saturating_sub(partials.len()) as u64);
            let day = DayTotals::from_partials(date, &partials);
            let generation = day.generation;
            let claimed = if matches!(trigger, Trigger::Tick(_)) {
                report.read_units += MARK_UNITS;
                let mark = self.alerts.mark(date).await?;
                if mark > generation {
                    self.lost(date, &mut conflicts, report).await?;
                    continue 'totals;
                }
                mark == generation
            } else {
                false
            };
            if !claimed {
                report.write_units += MARK_UNITS;
                if self.claim(date, generation, report).await? == PutOutcome::PreconditionFailed {
                    self.lost(date, &mut conflicts, report).await?;
                    continue 'totals;
                }

                // The snapshot first: the downstream job must not wait on
                // alerting (an SNS outage, a held outbox).
                self.write_snapshot(&day, (self.clock)()).await?;
                report.snapshots_written += 1;
                report.read_units += MARK_UNITS;
                if self.alerts.mark(date).await? != generation {
                    self.lost(date, &mut conflicts, report).await?;
                    continue 'totals;
                }
            }
            let alerting = self.alerting(date);

            let mut wait = Duration::from_millis(50);
            loop {
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
                match self.deliver_outboxes(&records, &holder, report).await? {
                    Outboxes::Clear => {}
                    Outboxes::Delivered => continue,
                    Outboxes::Conflict => {
                        self.lost(date, &mut conflicts, report).await?;
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
                // Only now: a message decided while the date was recent is
                // owed whatever the date's age, and was just delivered.
                if !alerting {
                    report.dates_not_alerted += 1;
                    return Ok(());
                }

                let now = (self.clock)();
                let decisions = decide(rules, date, &day, trigger, &records, generation, now);
                report.alerts_checked += decisions.checked as u64;
                for rule_error in &decisions.errors {
                    report.rule_errors += 1;
                    error!(date = %date, rule = %rule_error.rule, counter = rule_error.counter.as_deref(), error = %rule_error.message, "rule error: the rule could not be evaluated on these totals; the other rules still ran");
                }
                for mut record in decisions.writes {
                    let read_version = record.version - 1;
                    if record.outbox.is_some() {
                        record.claimed_until = Some((self.clock)() + lease_of(self.config.lease));
                        record.claimed_by = Some(holder.clone());
                    }
                    // A transaction: the record's write and the mark's
                    // check, each at twice the units of a plain write.
                    report.write_units +=
                        2 * (capacity::write_units(record.item_size()) + MARK_UNITS);
                    match self
                        .put_alert(&record, read_version, Some(generation), report)
                        .await?
                    {
                        PutOutcome::Written => {
                            if record.outbox.is_some() {
                                self.publish_and_clear(record, report).await?;
                            } else if record.phase == Phase::Pending {
                                // Visible, not sent: on-call see it in the
                                // logs before it pages them.
                                report.pending += 1;
                                info!(date = %date, alert = %record.alert, since = ?record.since, "pending: the condition holds; the alert fires once it has held for its rule's `for:`");
                            }
                        }
                        // The mark moved (newer totals exist) or the record
                        // did: decide again on a fresh read.
                        PutOutcome::PreconditionFailed => {
                            self.lost(date, &mut conflicts, report).await?;
                            continue 'totals;
                        }
                    }
                }
                return Ok(());
            }
        }
    }

    /// Evaluates every alerting date on the clock (see
    /// [`Trigger::Tick`]): today and the days before it,
    /// [`StageConfig::alert_days`] in all. Each date is tried whatever
    /// happened to the others; the first failure is returned, and the next
    /// tick tries again.
    ///
    /// Stale rules need the uploads ([`RulesStage::tick_watching`]); here
    /// they are reported as rule errors.
    pub async fn tick(&self, rules: &RuleSet, report: &mut RulesReport) -> Result<(), StageError> {
        self.tick_over::<NoStateTable>(rules, None, report).await
    }

    /// A tick that also judges the stale rules, from the uploads' listing
    /// and the state table's tombstones ([`tally_core::fleet`]).
    pub async fn tick_watching<S: StateStore>(
        &self,
        rules: &RuleSet,
        uploads: &Uploads<'_, S>,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        self.tick_over(rules, Some(uploads), report).await
    }

    async fn tick_over<S: StateStore>(
        &self,
        rules: &RuleSet,
        uploads: Option<&Uploads<'_, S>>,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        report.ticks += 1;
        let mut first_failure = None;
        for date in self.alerting_dates() {
            report.dates += 1;
            let verdicts = match uploads {
                Some(uploads) => self.stale_verdicts(rules, &date, uploads, report).await,
                None => Ok(StaleByRule::new()),
            };
            let result = match verdicts {
                Ok(verdicts) => {
                    self.process_date(rules, &date, Trigger::Tick(&verdicts), report)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                error!(date = %date, error = %e, "date not evaluated on this tick; the next tick tries again");
                report.failed += 1;
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Each stale rule's verdict on `date`: the day's prefix listed once
    /// (and the day before's while a rule still needs it), judged against
    /// each rule's thresholds.
    async fn stale_verdicts<S: StateStore>(
        &self,
        rules: &RuleSet,
        date: &Date,
        uploads: &Uploads<'_, S>,
        report: &mut RulesReport,
    ) -> Result<StaleByRule, StageError> {
        let stale_rules: Vec<(&str, &Thresholds)> = rules
            .rules()
            .iter()
            .filter_map(|rule| match &rule.condition {
                Condition::Stale { thresholds, .. } => Some((rule.name.as_str(), thresholds)),
                _ => None,
            })
            .collect();
        let mut verdicts = StaleByRule::new();
        let now = (self.clock)();
        let is_today = date.as_str() == now.date_naive().format("%Y-%m-%d").to_string();
        if !is_today {
            // Yesterday is over: its instances upload under today, whose
            // alert watches them. Nothing is listed for it.
            for (name, _) in stale_rules {
                verdicts.insert(name.to_owned(), Staleness::day_over(date));
            }
            return Ok(verdicts);
        }
        // Today's prefix is listed on every tick, stale rules or not: its
        // newest write is the dead man's switch's upload age.
        let today = self
            .objects
            .list(uploads.bucket, &fleet::day_prefix(uploads.prefix, date))
            .await?;
        report.list_requests += list_requests(today.len());
        if is_today && let Some(newest) = today.iter().map(|object| object.last_modified).max() {
            let age = now.signed_duration_since(newest).num_seconds().max(0);
            report.newest_upload_age_seconds = Some(age as u64);
        }
        if stale_rules.is_empty() {
            return Ok(verdicts);
        }
        let previous = fleet::previous_day(date);
        let yesterday = match &previous {
            Some(previous)
                if stale_rules
                    .iter()
                    .any(|(_, t)| fleet::needs_previous_day(date, now, t)) =>
            {
                let listed = self
                    .objects
                    .list(uploads.bucket, &fleet::day_prefix(uploads.prefix, previous))
                    .await?;
                report.list_requests += list_requests(listed.len());
                Some(listed)
            }
            _ => None,
        };
        for (name, thresholds) in stale_rules {
            let yesterday = yesterday
                .as_deref()
                .filter(|_| fleet::needs_previous_day(date, now, thresholds));
            let day_fleet = Fleet::new(date, uploads.prefix, &today, yesterday, now, thresholds);
            report.read_units += day_fleet.to_confirm().len() as u64;
            verdicts.insert(
                name.to_owned(),
                fleet::confirm(uploads.states, &day_fleet).await?,
            );
        }
        Ok(verdicts)
    }

    /// The dates alerts are decided for, newest first, by the stage's clock.
    pub fn alerting_dates(&self) -> Vec<Date> {
        let today = (self.clock)().date_naive();
        (0..i64::from(self.config.alert_days))
            .filter_map(|back| today.checked_sub_signed(chrono::Duration::days(back)))
            .filter_map(|day| Date::parse(&day.format("%Y-%m-%d").to_string()).ok())
            .collect()
    }

    /// A token naming one evaluation, written with every outbox lease it
    /// takes. Records are compared whole to tell a write whose response was
    /// lost from another's; two evaluations of the same totals can decide
    /// the same record to the nanosecond (the same clock, in tests), and
    /// only the holder tells them apart, so that both do not publish.
    fn lease_holder(&self) -> String {
        let evaluation = self.evaluations.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{evaluation}", self.id)
    }

    /// Whether alerts are decided for `date`: the last
    /// [`StageConfig::alert_days`] days by the stage's clock. Older dates
    /// (a backfill, a reconcile of last month) get no new decisions:
    /// on-call are not paged for history, and alert records of such dates
    /// would already be past their time to live. A message decided while
    /// the date was recent (its publish failed across the window's edge) is
    /// still delivered.
    fn alerting(&self, date: &Date) -> bool {
        let Ok(day) = chrono::NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d") else {
            return false;
        };
        let today = (self.clock)().date_naive();
        let age = today.signed_duration_since(day).num_days();
        age < i64::from(self.config.alert_days)
    }

    /// Counts a lost race and backs off a little before reading again, or
    /// gives up once there were too many.
    async fn lost(
        &self,
        date: &Date,
        conflicts: &mut u32,
        report: &mut RulesReport,
    ) -> Result<(), StageError> {
        *conflicts += 1;
        report.conflicts += 1;
        if *conflicts > self.config.max_conflicts {
            return Err(StageError::Contended {
                date: date.clone(),
                conflicts: *conflicts,
            });
        }
        // Full jitter from the clock's low bits, so concurrent losers spread.
        let ceiling = 20u64 << (*conflicts).min(5);
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) % ceiling);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        Ok(())
    }

    /// Publishes what processes that died left in outboxes.
    async fn deliver_outboxes(
        &self,
        records: &BTreeMap<String, AlertRecord>,
        holder: &str,
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
            claimed.claimed_by = Some(holder.to_owned());
            claimed.version += 1;
            report.write_units += capacity::write_units(claimed.item_size());
            match self
                .put_alert(&claimed, record.version, None, report)
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
        let Some(notification) = record.outbox.clone() else {
            return Ok(());
        };
        // Publishing after the lease ran out could race a process that took
        // the outbox over: renew it first, and leave it to them if it is gone.
        if record
            .claimed_until
            .is_none_or(|until| until <= (self.clock)() + lease_of(PUBLISH_BUDGET))
        {
            let read_version = record.version;
            record.claimed_until = Some((self.clock)() + lease_of(self.config.lease));
            record.version += 1;
            report.write_units += capacity::write_units(record.item_size());
            if self.put_alert(&record, read_version, None, report).await?
                == PutOutcome::PreconditionFailed
            {
                warn!(alert = %notification.alert, transition = notification.transition, "the outbox's lease ran out and another invocation took it over; it publishes the message");
                return Ok(());
            }
        }
        record.outbox = None;
        self.notifier.publish(&notification).await?;
        report.messages_sent += 1;
        info!(alert = %notification.alert, transition = notification.transition, state = notification.state.as_str(), severity = %notification.severity, subject = %notification.subject(), "alert sent");
        record.claimed_until = None;
        record.claimed_by = None;
        let read_version = record.version;
        record.version += 1;
        // Billed on the larger of the old item (with its outbox) and the new.
        report.write_units += capacity::write_units(record.item_size().max(
            serde_json::to_string(&notification).map_or(0, |json| json.len()) + record.item_size(),
        ));
        if self.put_alert(&record, read_version, None, report).await?
            == PutOutcome::PreconditionFailed
        {
            // Someone took the outbox over after our lease ran out: they
            // will publish it again, and the subscriber sees the same
            // alert and transition twice.
            warn!(alert = %notification.alert, transition = notification.transition, "the message was published after its lease ran out; another invocation may publish it again");
        }
        Ok(())
    }

    /// Raises the day's mark to `generation`. A claim whose response was
    /// lost is retried by the SDK; the retry of a landed claim is refused
    /// only if a newer evaluation raised the mark in between (an equal
    /// generation is accepted), so the claim is this evaluation's exactly
    /// when the mark still holds its generation.
    async fn claim(
        &self,
        date: &Date,
        generation: u64,
        report: &mut RulesReport,
    ) -> Result<PutOutcome, StoreError> {
        put_confirmed(&generation, self.alerts.claim(date, generation), || async {
            report.read_units += MARK_UNITS;
            Ok(Some(self.alerts.mark(date).await?))
        })
        .await
    }

    /// Writes an alert record if the stored one is at `read_version` (and,
    /// given `mark`, the day's mark is still that). A failed condition over
    /// the very record written is this write's own, landed with its
    /// response lost: what it owes next (publishing the outbox it wrote or
    /// claimed, clearing it) is still owed by this process, and no other
    /// process will do it before the lease runs out.
    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
        report: &mut RulesReport,
    ) -> Result<PutOutcome, StoreError> {
        put_confirmed(
            record,
            self.alerts.put_alert(record, read_version, mark),
            || async {
                let stored = self.alerts.alerts(&record.date).await?;
                report.read_units += capacity::consistent_read_units(Some(
                    stored.iter().map(AlertRecord::item_size).sum::<usize>(),
                ));
                Ok(stored.into_iter().find(|r| r.alert == record.alert))
            },
        )
        .await
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

/// Where a tick finds the fleet's uploads, for stale rules: the bucket and
/// key prefix they are listed under, and the state table, whose tombstones
/// say which objects were deleted.
pub struct Uploads<'a, S> {
    pub states: &'a S,
    pub bucket: &'a str,
    pub prefix: &'a str,
}

/// No state table: a tick without the uploads never reads one. Names the
/// type of an absent [`Uploads`] (`None::<&Uploads<NoStateTable>>`).
pub struct NoStateTable;

impl StateStore for NoStateTable {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        Err(StoreError::new(
            format!("reading the state of {}/{}", key.date, key.instance),
            "this rules stage was not given the state table",
        ))
    }

    async fn put(
        &self,
        state: &InstanceState,
        _precondition: &tally_core::ports::Precondition,
    ) -> Result<PutOutcome, StoreError> {
        Err(StoreError::new(
            format!(
                "writing the state of {}/{}",
                state.key.date, state.key.instance
            ),
            "the rules stage never writes the state table",
        ))
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        Err(StoreError::new(
            format!("reading bucket {bucket} of {date}"),
            "this rules stage was not given the state table",
        ))
    }
}

/// ListObjectsV2 returns up to 1,000 keys a request; an empty prefix
/// still costs one.
fn list_requests(keys: usize) -> u64 {
    keys.div_ceil(1000).max(1) as u64
}

/// The longest a Publish may take, with the SDK's retries: the SDK's
/// operation timeout (40 s) and a margin. A publish starts only with at least
/// this much of its lease left, so no other process can take the outbox over
/// while it runs.
const PUBLISH_BUDGET: Duration = Duration::from_secs(45);

/// The day's mark is a few dozen bytes: one unit to read or write.
const MARK_UNITS: u64 = 1;

/// A number no other stage is likely to draw: std's per-process random
/// hash keys (distinct for every `RandomState` made) mixed with the time.
fn stage_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

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
