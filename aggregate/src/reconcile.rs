//! `reconcile`: recompute a day's totals from the state table and repair drift.
//!
//! The safety net the polling batch job tally replaces was: for one date it
//! reads every instance's state (strongly consistent), rebuilds each bucket's
//! partial item from it, and recomputes every counter's total, writing only
//! what differs. It repairs whatever the stream could not deliver, for example
//! after the aggregate stage was down longer than the stream's 24 hours.
//!
//! Run it for a day whose uploads have stopped and whose stream backlog the
//! stage has processed (say, yesterday, with the stage caught up). A partial
//! rebuilt from the state table already holds every change in it, but keeps
//! its `AppliedThrough`: a change still waiting in the stream would be folded
//! in a second time. So do not run it while the stage's event source is
//! paused with that day's records still in the stream.
//!
//! It goes a bucket at a time (the state table's hash keys), so it holds one
//! bucket's states in memory, about a sixty-fourth of the day's: some
//! 14 MB at 100,000 instances of 100 counters (about 9 KB a state, as
//! measured), which the aggregate function's 128 MB holds. In each bucket
//! it reads what it compares against first, the partial item with its
//! version (and, before any bucket, the day's totals), then the bucket's
//! states, and writes a repaired partial conditional on the version it
//! read. A fold landing between the reads is then in the state already and
//! has moved that version, so the repair's condition fails and the bucket
//! is read again (a few rounds, then it stops and says to let the stage
//! drain) instead of the repair overwriting the fold.
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

    // The totals are read before any state, like each bucket's partial.
    let stored_totals = store.totals(date).await?;
    // Every counter the day has, in the state or in the totals.
    let mut counters: BTreeSet<String> = stored_totals.iter().map(|t| t.counter.clone()).collect();
    let mut wanted = Vec::with_capacity(BUCKETS as usize);
    for bucket in 0..BUCKETS {
        let checked = reconcile_bucket(states, store, date, bucket, repair).await?;
        report.instances += checked.instances;
        report.partials_repaired += u64::from(checked.differed);
        counters.extend(checked.want.contributors.keys().cloned());
        wanted.push(checked.want);
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

/// One bucket as reconcile found it.
struct CheckedBucket {
    /// What the bucket's partial item should hold, by the state table.
    want: PartialItem,
    instances: u64,
    /// Whether the stored partial differed (and, repairing, was repaired).
    differed: bool,
}

/// Checks (and with `repair`, fixes) one bucket's partial item against the
/// bucket's states: the partial first, then the states, then a write
/// conditional on the partial's version (see the module doc). Only this
/// bucket's states are held, so a day of any size reconciles in the memory
/// of its largest bucket.
async fn reconcile_bucket<S: StateStore, T: TotalsStore>(
    states: &S,
    store: &T,
    date: &Date,
    bucket: u64,
    repair: bool,
) -> Result<CheckedBucket, StoreError> {
    for _ in 0..REPAIR_ROUNDS {
        let stored = store.partial(date, bucket).await?;
        let bucket_states = states.bucket(date, bucket).await?;
        let instances = bucket_states.len() as u64;
        let want = expected_partial(date, bucket, &bucket_states)?;
        drop(bucket_states);
        let Some((repaired, read_version)) = repair_of(stored.as_ref(), &want) else {
            return Ok(CheckedBucket {
                want,
                instances,
                differed: false,
            });
        };
        let checked = CheckedBucket {
            want,
            instances,
            differed: true,
        };
        if !repair {
            return Ok(checked);
        }
        let outcome = put_confirmed(
            &repaired,
            store.put_partial(&repaired, read_version),
            || store.partial(date, bucket),
        )
        .await?;
        if outcome == PutOutcome::Written {
            return Ok(checked);
        }
        // The stage folded a change into this bucket since it was read.
    }
    Err(StoreError::new(
        format!("repairing partial item {}", partial_key(date, bucket)),
        format!(
            "the aggregate stage changed it during each of {REPAIR_ROUNDS} reads: let it drain, then run reconcile again"
        ),
    ))
}

/// What a bucket's partial item should hold: every live state folded into
/// an empty partial, as if each instance's body arrived once.
fn expected_partial(
    date: &Date,
    bucket: u64,
    states: &[InstanceState],
) -> Result<PartialItem, StoreError> {
    let first = SequenceNumber::parse("1").map_err(|e| StoreError::new("reconcile", e))?;
    let mut expected = PartialItem::empty(date, bucket);
    for state in states {
        let change = StateChange::from_images(first.clone(), None, Some(StateItem::from(state)))
            .map_err(|e| StoreError::new(format!("reading state of {}", state.key.instance), e))?;
        // Each state is its own first change on an empty partial.
        expected.applied_through = SequenceNumber::zero();
        let _ = expected.fold([&change]);
    }
    Ok(expected)
}

/// The partial item that repairs `stored` to hold what `want` holds, with
/// the next version and the stored `AppliedThrough` (so a change the stage
/// folded in is not folded in again), and the version it is written over;
/// `None` when nothing differs.
fn repair_of(stored: Option<&PartialItem>, want: &PartialItem) -> Option<(PartialItem, u64)> {
    let (read_version, applied_through) = match stored {
        Some(p)
            if p.sums == want.sums
                && p.contributors == want.contributors
                && p.instances == want.instances =>
        {
            return None;
        }
        Some(p) => (p.version, p.applied_through.clone()),
        None if want.sums.is_empty() && want.instances == 0 => return None,
        None => (0, SequenceNumber::zero()),
    };
    let repaired = PartialItem {
        version: read_version + 1,
        applied_through,
        ..want.clone()
    };
    Some((repaired, read_version))
}
