//! `reconcile`: recompute a day's totals from the state table and repair drift.
//!
//! The safety net the seed's batch job was: for one date it reads every
//! instance's state (strongly consistent), rebuilds each bucket's partial
//! item from it, and recomputes every counter's total, writing only what
//! differs. It repairs whatever the stream could not deliver, for example
//! after the aggregate stage was down longer than the stream's 24 hours.
//!
//! Run it for a day whose uploads have stopped and whose stream backlog the
//! stage has processed (say, yesterday, with the stage caught up). A partial
//! rebuilt from the state table already holds every change in it, but keeps
//! its `AppliedThrough`: a change still waiting in the stream would be folded
//! in a second time. So do not run it while the stage's event source is
//! paused with that day's records still in the stream.
//!
//! The day's existing totals are listed through the `ByDate` index, which is
//! eventually consistent: a total written in the last moment may be missed
//! by a check, though every counter the state holds is checked anyway, and
//! repairs go through strongly consistent reads and the basis swap. Its reads
//! grow with the fleet, which is why it is a repair tool and not the stage.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tally_core::aggregate::{
    Exact, PartialItem, SequenceNumber, StateChange, totals_from_partials,
};
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, StateStore, StoreError, TotalsStore};
use tally_core::state::{BUCKETS, StateItem};

use crate::apply::{AggregateReport, Aggregator};

/// What a reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub instances: u64,
    /// Buckets whose partial item differed from the state table.
    pub partials_repaired: u64,
    /// Counters whose total differed from the recomputation.
    pub totals_repaired: u64,
    pub counters: u64,
    /// Whether differences were written (false for a check).
    pub repaired: bool,
    /// Each total that differed, as stored and as recomputed.
    pub drift: Vec<TotalDrift>,
}

/// One counter's total as the totals table held it and as the state table
/// says it should be. `None` is no value: absent, or no contributor left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalDrift {
    pub counter: String,
    pub stored: Option<Exact>,
    pub stored_contributors: i64,
    pub recomputed: Option<Exact>,
    pub recomputed_contributors: i64,
}

/// Compares (and with `repair`, fixes) one day's partials and totals
/// against the state table.
pub async fn reconcile<S: StateStore, T: TotalsStore>(
    states: &S,
    aggregator: &Aggregator<T>,
    date: &Date,
    repair: bool,
) -> Result<ReconcileReport, StoreError> {
    let store = aggregator.store();
    let day = states.day(date).await?;
    let mut report = ReconcileReport {
        instances: day.len() as u64,
        repaired: repair,
        ..ReconcileReport::default()
    };

    // What each bucket's partial item should hold: every live state folded
    // into an empty partial, as if each instance's body arrived once.
    let first = SequenceNumber::parse("1").map_err(|e| StoreError::new("reconcile", e))?;
    let mut expected: BTreeMap<u64, PartialItem> = BTreeMap::new();
    for state in &day {
        let change = StateChange::from_images(first.clone(), None, Some(StateItem::from(state)))
            .map_err(|e| StoreError::new(format!("reading state of {}", state.key.instance), e))?;
        let bucket = change.bucket;
        let partial = expected
            .entry(bucket)
            .or_insert_with(|| PartialItem::empty(date, bucket));
        // Each state is its own first change on an empty partial.
        partial.applied_through = SequenceNumber::zero();
        let _ = partial.fold([&change]);
    }

    let mut wanted = Vec::with_capacity(BUCKETS as usize);
    for bucket in 0..BUCKETS {
        let stored = store.partial(date, bucket).await?;
        let want = expected
            .remove(&bucket)
            .unwrap_or_else(|| PartialItem::empty(date, bucket));
        wanted.push(want.clone());
        let (stored_sums, stored_contributors, read_version, applied_through) = match &stored {
            Some(p) => (
                &p.sums,
                &p.contributors,
                p.version,
                p.applied_through.clone(),
            ),
            None => (
                &want.sums,
                &want.contributors,
                0,
                want.applied_through.clone(),
            ),
        };
        let differs = match &stored {
            Some(_) => *stored_sums != want.sums || *stored_contributors != want.contributors,
            None => !want.sums.is_empty(),
        };
        if !differs {
            continue;
        }
        report.partials_repaired += 1;
        if repair {
            let repaired = PartialItem {
                version: read_version + 1,
                applied_through,
                ..want
            };
            if store.put_partial(&repaired, read_version).await? == PutOutcome::PreconditionFailed {
                return Err(StoreError::new(
                    format!("repairing partial item {}", repaired.part),
                    "the aggregate stage changed it meanwhile: let it drain, then run reconcile again",
                ));
            }
        }
    }

    // Every counter the day has, in the state or in the totals.
    let stored_totals = store.totals(date).await?;
    let mut counters: BTreeSet<String> = stored_totals.iter().map(|t| t.counter.clone()).collect();
    for state in &day {
        if let Some(values) = state.content.counters() {
            counters.extend(values.keys().cloned());
        }
    }
    report.counters = counters.len() as u64;
    // Compare with the totals the state table implies, repaired or not.
    let recomputed = totals_from_partials(date, &wanted, &counters);
    let stored: BTreeMap<&str, (Option<Exact>, i64)> = stored_totals
        .iter()
        .map(|t| (t.counter.as_str(), (t.value, t.contributors.max(0))))
        .collect();
    let drift: Vec<TotalDrift> = recomputed
        .iter()
        .filter(|t| stored.get(t.counter.as_str()).copied() != Some((t.value, t.contributors)))
        // A counter that never had a total and has no contributor is fine.
        .filter(|t| !t.is_removed() || stored.contains_key(t.counter.as_str()))
        .map(|t| {
            let (stored, stored_contributors) =
                stored.get(t.counter.as_str()).copied().unwrap_or((None, 0));
            TotalDrift {
                counter: t.counter.clone(),
                stored,
                stored_contributors,
                recomputed: t.value,
                recomputed_contributors: t.contributors,
            }
        })
        .collect();
    let drifted: BTreeSet<String> = drift.iter().map(|d| d.counter.clone()).collect();
    report.totals_repaired = drifted.len() as u64;
    report.drift = drift;
    if repair && !drifted.is_empty() {
        // Stand on every bucket as it is now, repaired.
        let own: BTreeMap<u64, u64> = store
            .partials(date)
            .await?
            .iter()
            .map(|p| (p.bucket, p.version))
            .collect();
        let mut writes = AggregateReport::default();
        aggregator
            .write_totals(date, drifted, &own, &mut writes)
            .await?;
    }
    Ok(report)
}
