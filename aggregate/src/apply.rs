//! Folding a batch of state changes into the partial items and recomputing
//! the totals they move, written once over [`TotalsStore`].
//!
//! The scheme and its argument are in [`tally_core::aggregate`]. This module
//! does the I/O, in two steps per batch:
//!
//! 1. per (date, bucket), in stream order: read the partial item, fold in the
//!    changes not folded in yet, write it conditional on the version read;
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
    PartialItem, SequenceNumber, StateChange, totals_from_partials, touched_counters,
};
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
                (group, result)
            })
            .collect();
        let folded: Vec<_> = futures::stream::iter(folds)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let mut settled: Vec<StateChange> = Vec::new();
        for (group, result) in folded {
            match result {
                Ok(step) => {
                    report.already_applied += step.already_applied;
                    report.partial_writes += step.writes;
                    report.write_units += step.write_units;
                    report.read_units += step.read_units;
                    settled.extend(group.into_iter().cloned());
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

        for (date, counters) in touched_counters(&settled) {
            if let Err(error) = self.write_totals(&date, counters, &mut report).await {
                let day: Vec<&StateChange> = settled.iter().filter(|c| c.date == date).collect();
                report.failed += day.len() as u64;
                if let Some(first) = day.iter().map(|c| &c.sequence).min() {
                    failures.push(Failure {
                        from: first.clone(),
                        error,
                    });
                }
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
        let mut partial = stored.unwrap_or_else(|| PartialItem::empty(date, bucket));
        let read_version = partial.version;
        let already_applied = changes
            .iter()
            .filter(|c| c.sequence <= partial.applied_through)
            .count() as u64;
        if !partial.fold(changes.iter().copied()) {
            return Ok(FoldStep {
                already_applied,
                writes: 0,
                write_units: 0,
                read_units,
            });
        }
        match self.store.put_partial(&partial, read_version).await? {
            PutOutcome::Written => Ok(FoldStep {
                already_applied,
                writes: 1,
                write_units: partial.write_units(),
                read_units,
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
    pub async fn write_totals(
        &self,
        date: &Date,
        mut counters: BTreeSet<String>,
        report: &mut AggregateReport,
    ) -> Result<(), StoreError> {
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
                let replaces = stored.get(&total.counter).map(|s| &s.basis);
                match replaces {
                    // Written already from partials at least as new: nothing to do.
                    Some(basis) if basis.covers(&total.basis) => {}
                    // Written from partial writes this read has not seen yet.
                    Some(basis) if !total.basis.covers(basis) => {
                        behind.insert(total.counter);
                    }
                    _ => writes.push((total, replaces.cloned())),
                }
            }
            let puts: Vec<_> = writes
                .into_iter()
                .map(|(total, replaces)| async move {
                    let result = self.store.put_total(&total, replaces.as_ref()).await;
                    (total, result)
                })
                .collect();
            let written: Vec<_> = futures::stream::iter(puts)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (total, result) in written {
                // A write whose condition fails is billed like one that lands.
                report.write_units += total.write_units();
                match result? {
                    PutOutcome::Written => {
                        report.total_writes += 1;
                        report.totals_removed += u64::from(total.is_removed());
                    }
                    PutOutcome::PreconditionFailed => {
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

struct FoldStep {
    already_applied: u64,
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
