//! Folding a batch of state changes into the partial items and recomputing
//! the totals they move, written once over [`TotalsStore`].
//!
//! The scheme and its argument are in [`tally_core::aggregate`]. This module
//! does the I/O, in two steps per batch:
//!
//! 1. per (date, bucket), in stream order: read the partial item, fold in the
//!    changes not folded in yet, write it conditional on the version read
//!    (also when they cancel out, so that the group is done whole and a
//!    redelivered tail skips it; only changes that move no counter at all
//!    go unwritten);
//! 2. per date: read the day's partial items and the touched counters'
//!    stored totals, recompute those totals, and write each one whose basis
//!    covers the stored one's, as a compare-and-swap on the stored basis. A
//!    stored total whose basis already covers the new one is left alone (a
//!    newer computation got there first); one whose basis is not covered,
//!    or a swap that fails, means partial writes this read has not seen:
//!    read the partials again and retry those counters.
//!
//! A failure in either step is reported with the lowest sequence number it
//! concerns, so Lambda redelivers from there; everything before it is done.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::Serialize;
use tally_core::aggregate::{
    Basis, Fold, PartialItem, SequenceNumber, StateChange, TotalItem, totals_from_partials,
};
use tally_core::capacity::MAX_ITEM_BYTES;
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, StoreError, TotalsStore};
use tracing::{info, warn};

/// How many times a day's totals are recomputed when concurrent invocations
/// keep overtaking each other, before the batch is failed and redelivered.
const MAX_TOTAL_ROUNDS: usize = 5;

/// Partial items processed at once.
const CONCURRENCY: usize = 8;

/// What a batch did, and what it cost in DynamoDB capacity units (computed
/// from item sizes by DynamoDB's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AggregateReport {
    pub changes: u64,
    /// Changes already folded in by an earlier delivery.
    pub already_applied: u64,
    pub partial_writes: u64,
    pub total_writes: u64,
    /// Totals left with no contributor, written as removed.
    pub totals_removed: u64,
    pub write_units: u64,
    pub read_units: u64,
    /// Records that could not be applied (reported back to Lambda).
    pub failed: u64,
}

/// A failure, with the lowest sequence number it concerns.
#[derive(Debug)]
pub struct Failure {
    pub from: SequenceNumber,
    pub error: StoreError,
}

/// The aggregate stage's logic over its tables.
#[derive(Debug, Clone)]
pub struct Aggregator<T> {
    store: T,
}

impl<T: TotalsStore> Aggregator<T> {
    pub fn new(store: T) -> Aggregator<T> {
        Aggregator { store }
    }

    pub fn store(&self) -> &T {
        &self.store
    }

    /// Applies a batch of changes, in stream order. Returns what it did and
    /// the failures, each with the lowest sequence number to redeliver from.
    pub async fn apply(&self, changes: &[StateChange]) -> (AggregateReport, Vec<Failure>) {
        let mut report = AggregateReport {
            changes: changes.len() as u64,
            ..AggregateReport::default()
        };
        let mut failures = Vec::new();

        let mut groups: BTreeMap<(&Date, u64), Vec<&StateChange>> = BTreeMap::new();
        for change in changes {
            groups
                .entry((&change.date, change.bucket))
                .or_default()
                .push(change);
        }
        // The futures are built before they are streamed: a closure inside
        // the stream would make the whole future unprovably Send.
        let folds: Vec<_> = groups
            .into_iter()
            .map(|((date, bucket), group)| async move {
                let result = self.fold(date, bucket, &group).await;
                (date.clone(), bucket, group, result)
            })
            .collect();
        let folded: Vec<_> = futures::stream::iter(folds)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        // Per date: the counters to recompute, the partial versions this
        // batch stands on, and the first change (to resume from on failure).
        let mut days: BTreeMap<Date, Day> = BTreeMap::new();
        for (date, bucket, group, result) in folded {
            match result {
                Ok(step) => {
                    report.already_applied += step.fold.already_applied as u64;
                    report.partial_writes += step.writes;
                    report.write_units += step.write_units;
                    report.read_units += step.read_units;
                    let day = days.entry(date).or_insert_with(|| Day {
                        counters: BTreeSet::new(),
                        own: BTreeMap::new(),
                        first: group[0].sequence.clone(),
                        changes: 0,
                    });
                    day.counters.extend(step.fold.changed);
                    day.counters.extend(step.fold.already_applied_counters);
                    day.own.insert(bucket, step.version);
                    day.first = day.first.clone().min(group[0].sequence.clone());
                    day.changes += group.len() as u64;
                }
                Err(error) => {
                    report.failed += group.len() as u64;
                    failures.push(Failure {
                        from: group[0].sequence.clone(),
                        error,
                    });
                }
            }
        }

        for (date, day) in days {
            if day.counters.is_empty() {
                continue;
            }
            if let Err(error) = self
                .write_totals(&date, day.counters, &day.own, &mut report)
                .await
            {
                report.failed += day.changes;
                failures.push(Failure {
                    from: day.first,
                    error,
                });
            }
        }
        (report, failures)
    }

    /// Step 1 for one bucket: fold its changes into its partial item.
    async fn fold(
        &self,
        date: &Date,
        bucket: u64,
        changes: &[&StateChange],
    ) -> Result<FoldStep, StoreError> {
        let stored = self.store.partial(date, bucket).await?;
        let read_units = stored.as_ref().map_or(1, PartialItem::read_units);
        let mut partial = stored
            .clone()
            .unwrap_or_else(|| PartialItem::empty(date, bucket));
        let read_version = partial.version;
        let fold = partial.fold(changes.iter().copied());
        if !fold.must_write() {
            return Ok(FoldStep {
                fold,
                version: read_version,
                writes: 0,
                write_units: 0,
                read_units,
            });
        }
        let size = partial.item_size();
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::new(
                format!("writing partial item {}", partial.part),
                format!(
                    "it would be {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte item limit: the day has more distinct counters than one bucket can hold"
                ),
            ));
        }
        match self.store.put_partial(&partial, read_version).await? {
            PutOutcome::Written => Ok(FoldStep {
                // Changes that cancel out leave every sum as it was at the
                // version read, so a total computed from that version
                // already includes them.
                version: if fold.changed.is_empty() {
                    read_version
                } else {
                    partial.version
                },
                write_units: partial.write_units_over(stored.as_ref()),
                writes: 1,
                read_units,
                fold,
            }),
            // Only one invocation at a time holds a bucket's records, so this
            // is a delivery overlapping a retry of itself: let Lambda retry.
            PutOutcome::PreconditionFailed => Err(StoreError::new(
                format!("writing partial item {}", partial.part),
                format!(
                    "it changed after it was read at version {read_version}; the batch will be retried"
                ),
            )),
        }
    }

    /// Step 2 for one day: recompute and write the totals of `counters`.
    /// `own` holds the partial versions the caller's changes are folded into
    /// (bucket → version): a stored total computed from at least those
    /// includes them, and needs no write from this caller.
    pub async fn write_totals(
        &self,
        date: &Date,
        mut counters: BTreeSet<String>,
        own: &BTreeMap<u64, u64>,
        report: &mut AggregateReport,
    ) -> Result<(), StoreError> {
        let includes_own = |basis: &Basis| {
            own.iter().all(|(bucket, version)| {
                basis.0.get(*bucket as usize).copied().unwrap_or(0) >= *version
            })
        };
        for round in 0..MAX_TOTAL_ROUNDS {
            let partials = self.store.partials(date).await?;
            report.read_units += partials
                .iter()
                .map(PartialItem::read_units)
                .sum::<u64>()
                .max(1);
            let stored = self.store.totals_of(date, &counters).await?;
            report.read_units += counters.len() as u64;
            let mut writes = Vec::new();
            let mut behind = BTreeSet::new();
            for total in totals_from_partials(date, &partials, &counters) {
                let current = stored.get(&total.counter);
                match current {
                    // Written already from partials that include this batch's.
                    Some(s) if includes_own(&s.basis) => {}
                    // Written from partial writes this read has not seen yet.
                    Some(s) if !total.basis.covers(&s.basis) => {
                        behind.insert(total.counter);
                    }
                    _ => writes.push((total, current.cloned())),
                }
            }
            let puts: Vec<_> = writes
                .into_iter()
                .map(|(total, current)| async move {
                    let result = self
                        .store
                        .put_total(&total, current.as_ref().map(|c| &c.basis))
                        .await;
                    (total, current, result)
                })
                .collect();
            let written: Vec<_> = futures::stream::iter(puts)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (total, current, result) in written {
                match result? {
                    PutOutcome::Written => {
                        report.total_writes += 1;
                        report.totals_removed += u64::from(total.is_removed());
                        report.write_units += total.write_units_over(current.as_ref());
                    }
                    PutOutcome::PreconditionFailed => {
                        report.write_units += TotalItem::failed_write_units(current.as_ref());
                        behind.insert(total.counter);
                    }
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            warn!(date = %date, counters = behind.len(), round, "totals moved under a concurrent invocation; recomputing them");
            counters = behind;
        }
        Err(StoreError::new(
            format!("writing the totals of {date}"),
            format!(
                "concurrent invocations moved them {MAX_TOTAL_ROUNDS} times in a row; the batch will be retried"
            ),
        ))
    }
}

/// One date's share of a batch.
struct Day {
    counters: BTreeSet<String>,
    own: BTreeMap<u64, u64>,
    first: SequenceNumber,
    changes: u64,
}

struct FoldStep {
    fold: Fold,
    /// The partial's version after this step.
    version: u64,
    writes: u64,
    write_units: u64,
    read_units: u64,
}

/// Logs a batch's report.
pub fn log_report(report: &AggregateReport) {
    info!(
        report = %serde_json::to_string(report).unwrap_or_default(),
        write_units = report.write_units,
        read_units = report.read_units,
        "aggregate done"
    );
}
