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
//! It reads what it compares against first, the partial items with their
//! versions and the totals, and the state after them, and writes each
//! repaired partial conditional on the version it read. A fold landing
//! between the reads is then in the state already and has moved that
//! version, so the repair's condition fails and the bucket is read again
//! (a few rounds, then it stops and says to let the stage drain) instead of
//! the repair overwriting the fold.
//!
//! The day's existing totals are listed through the `ByDate` index, which is
//! eventually consistent: a total written in the last moment may be missed
//! by a check, though every counter the state holds is checked anyway, and
//! repairs go through strongly consistent reads and the basis swap. Its reads
//! grow with the fleet, which is why it is a repair tool and not the stage.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tally_core::aggregate::{
    Exact, PartialItem, SequenceNumber, StateChange, partial_key, totals_from_partials,
};
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, StateStore, StoreError, TotalsStore, put_confirmed};
use tally_core::state::{BUCKETS, InstanceState, StateItem};

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

/// Rounds of reading and repairing the partial items, when the aggregate
/// stage keeps moving the ones being repaired, before giving up.
const REPAIR_ROUNDS: usize = 4;

/// Compares (and with `repair`, fixes) one day's partials and totals
/// against the state table.
pub async fn reconcile<S: StateStore, T: TotalsStore>(
    states: &S,
    aggregator: &Aggregator<T>,
    date: &Date,
    repair: bool,
) -> Result<ReconcileReport, StoreError> {
    let store = aggregator.store();
    let mut report = ReconcileReport {
        repaired: repair,
        ..ReconcileReport::default()
    };

    // What is compared against (partials with their versions, and totals) is
    // read before the state: a fold landing between the reads is then
    // already in the state, and moves the version a repair is conditional
    // on, so the repair fails and the bucket is read again rather than its
    // fold overwritten.
    let mut buckets: BTreeSet<u64> = (0..BUCKETS).collect();
    let mut round = 0;
    let (day, stored_totals, wanted) = loop {
        round += 1;
        let stored: BTreeMap<u64, PartialItem> = store
            .partials(date)
            .await?
            .into_iter()
            .map(|p| (p.bucket, p))
            .collect();
        let stored_totals = store.totals(date).await?;
        let day = states.day(date).await?;
        let wanted = expected_partials(date, &day)?;
        let mut moved = BTreeSet::new();
        for bucket in &buckets {
            let want = &wanted[*bucket as usize];
            let Some((repaired, read_version)) = repair_of(stored.get(bucket), want) else {
                continue;
            };
            if !repair {
                report.partials_repaired += 1;
                continue;
            }
            let outcome = put_confirmed(
                &repaired,
                store.put_partial(&repaired, read_version),
                || store.partial(date, *bucket),
            )
            .await?;
            match outcome {
                PutOutcome::Written => report.partials_repaired += 1,
                PutOutcome::PreconditionFailed => {
                    moved.insert(*bucket);
                }
            }
        }
        if moved.is_empty() {
            break (day, stored_totals, wanted);
        }
        if round == REPAIR_ROUNDS {
            return Err(StoreError::new(
                format!(
                    "repairing partial items {}",
                    moved
                        .iter()
                        .map(|b| partial_key(date, *b))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "the aggregate stage changed them during each of {REPAIR_ROUNDS} reads: let it drain, then run reconcile again"
                ),
            ));
        }
        buckets = moved;
    };
    report.instances = day.len() as u64;

    // Every counter the day has, in the state or in the totals.
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

/// What each bucket's partial item should hold (indexed by bucket): every
/// live state folded into an empty partial, as if each instance's body
/// arrived once.
fn expected_partials(date: &Date, day: &[InstanceState]) -> Result<Vec<PartialItem>, StoreError> {
    let first = SequenceNumber::parse("1").map_err(|e| StoreError::new("reconcile", e))?;
    let mut expected: Vec<PartialItem> = (0..BUCKETS)
        .map(|bucket| PartialItem::empty(date, bucket))
        .collect();
    for state in day {
        let change = StateChange::from_images(first.clone(), None, Some(StateItem::from(state)))
            .map_err(|e| StoreError::new(format!("reading state of {}", state.key.instance), e))?;
        let Some(partial) = expected.get_mut(change.bucket as usize) else {
            continue;
        };
        // Each state is its own first change on an empty partial.
        partial.applied_through = SequenceNumber::zero();
        let _ = partial.fold([&change]);
    }
    Ok(expected)
}

/// The partial item that repairs `stored` to hold what `want` holds, with
/// the next version and the stored `AppliedThrough` (so a change the stage
/// folded in is not folded in again), and the version it is written over;
/// `None` when nothing differs.
fn repair_of(stored: Option<&PartialItem>, want: &PartialItem) -> Option<(PartialItem, u64)> {
    let (read_version, applied_through) = match stored {
        Some(p) if p.sums == want.sums && p.contributors == want.contributors => return None,
        Some(p) => (p.version, p.applied_through.clone()),
        None if want.sums.is_empty() => return None,
        None => (0, SequenceNumber::zero()),
    };
    let repaired = PartialItem {
        version: read_version + 1,
        applied_through,
        ..want.clone()
    };
    Some((repaired, read_version))
}
