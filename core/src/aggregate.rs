//! The aggregate stage's domain: state changes to exact daily totals.
//!
//! # The scheme: a two-level tree, and why
//!
//! Every state change (one instance's body before and after) must land in
//! the totals exactly once, although Lambda may deliver a stream batch again
//! whole, in halves, or from a reported failure onwards, several shards run
//! at once, and an event does not say which shard it came from. Three
//! schemes are workable; at the sample workload (100 instances × 100
//! counters a minute) and at 100,000 instances they cost:
//!
//! | scheme | per batch of 100 changes, sample workload | at 100,000 instances |
//! |---|---|---|
//! | recompute each changed total from a consistent read of the day's state | reads the whole day: 100 items, ~43 read units | reads 100,000 items (~170 MB) per batch |
//! | per-counter deltas guarded by each instance's version | ≤ 100 total writes of items carrying every instance's guard (~1.5 KB) | each total item holds 100,000 guards: over the 400 KB item limit |
//! | two-level tree (chosen) | measured: 54 partial writes + 100 total writes = 362 write units, 208 read units | the same: bounded by the 64 buckets and the counters, not the fleet |
//!
//! The tree:
//!
//! 1. **Partial items**, one per (date, bucket) for the state table's 64
//!    buckets ([`crate::state::BUCKETS`]): exact sums and contributor counts
//!    of that bucket's instances, a `Version` that grows with every write, and
//!    `AppliedThrough`, the stream sequence number of the last change folded
//!    in. All state items of one bucket share one hash key, so DynamoDB puts
//!    their stream records in one shard, in order, and Lambda hands one
//!    shard's records to one invocation at a time (with a parallelization
//!    factor, still one at a time per hash key). A change whose sequence
//!    number is not above `AppliedThrough` has been folded in already: a
//!    redelivered batch, a bisected half or a resumed tail skips it. The
//!    partial write is conditional on the version read, so a change is folded
//!    in at most once and never lost. A (date, bucket) group of a batch is
//!    either written whole, `AppliedThrough` moved and version bumped, or
//!    not processed at all, even when its changes cancel out: Lambda
//!    redelivers from the lowest record a batch reports failed, whichever
//!    group failed, so a group whose fold was not written may come back as
//!    a tail only, and its changes must not be folded in again one by one.
//! 2. **Totals** are recomputed from the partial items rather than adjusted
//!    by deltas: `total(D, c) = Σ over buckets of partial(D, b).sum(c)`. The
//!    counters to recompute are those the batch's changes touch, including
//!    changes skipped as already folded in, so a batch redelivered after a
//!    crash between its partial writes and its total writes still finishes
//!    the totals. Each total item records the partial versions it was
//!    computed from (its `Basis`, one version per bucket). A total is written
//!    only over a stored one whose basis its own covers, as a compare-and-swap
//!    on that stored basis; a stored basis that already covers the new one
//!    means a newer computation got there first, and one that is not covered
//!    (or a failed swap) means partial writes this computation has not seen,
//!    so it reads the partials again. Every fold is followed by a computation
//!    that sees it, and no write replaces a total computed from newer
//!    partials, so once the stream is drained each total is the sum of the
//!    final partials.
//!
//! A total is recomputed when its counter's sum or contributors changed in a
//! partial this batch wrote, or was touched by a change skipped as folded
//! in already. Changes that cancel within one bucket move no total (one
//! atomic partial write shows readers all or none of them), though their
//! partial is written; changes that cancel across buckets rewrite the
//! unchanged value with its newer basis, since a concurrent invocation may
//! have read one partial write and not the other. A group whose changes
//! each move no counter (the same body under a new ETag) is not written at
//! all: folding any of them again, in any later delivery, adds nothing.
//!
//! # What it relies on
//!
//! All records of one (date, bucket) must reach the stage in stream order,
//! one invocation at a time, and a later record of a bucket must carry a
//! larger sequence number. What AWS promises towards that, and where it stops:
//!
//! - *Change data capture for DynamoDB Streams* (DynamoDB Developer Guide):
//!   each stream record appears once, and for each item the records appear
//!   in the order of the item's modifications. The order is promised per
//!   item, not per hash key. A stream is made of shards, which DynamoDB
//!   creates and splits by itself (a shard may split in response to high
//!   write activity on its table); a parent shard must be processed before
//!   its children.
//! - *Using AWS Lambda with Amazon DynamoDB* (Lambda Developer Guide): Lambda
//!   hands a shard's records to the function in order, one batch at a time
//!   with `ParallelizationFactor` 1, reading a parent shard before its
//!   children; with a larger factor it processes one shard's batches
//!   concurrently and keeps the order only per item (partition and sort
//!   key). The template keeps the factor at 1.
//! - *DynamoDB burst and adaptive capacity* ("Isolate frequently accessed
//!   items") and *Key range throughput exceeded (hot partitions)* (its
//!   "split for heat"): DynamoDB splits a partition that stays hot, and it
//!   may isolate frequently accessed items in partitions of their own. On a
//!   table with a sort key, as the state table is (`Part`, `Instance`), such
//!   a split can fall between two sort keys of one hash key.
//!
//! So a bucket's records share one shard for as long as its hash key lives in
//! one partition. A state bucket is small (a day of 1/64th of the fleet: a few
//! MB at 100,000 instances, against a partition's 10 GB) and cool (under a
//! tenth of a partition's 1,000 write units a second at 100,000 instances),
//! but AWS does not publish when it splits for heat: this is an assumption
//! the stage makes, not a promise it is given.
//!
//! **What goes wrong when a hash key is split.** After a split, the bucket's
//! instances are divided between two sibling child shards. Lambda finishes
//! the parent first, so nothing written before the split is out of order,
//! and each instance's records stay in order in its own shard; but the two
//! shards are polled and invoked independently, at once, and each runs ahead
//! of the other by whatever its polling, batching and retries make it.
//!
//! - Two invocations folding the bucket at once both read version v and
//!   write conditional on v: one write fails, its group is reported and
//!   redelivered, and the retry reads the winner's partial. The race itself
//!   loses nothing and counts nothing twice.
//! - The loss comes from `AppliedThrough`, one sequence number per bucket.
//!   Nothing orders the sequence numbers of sibling shards against each
//!   other (in practice both grow with time, so they interleave). Once the
//!   invocation of one shard writes `AppliedThrough` = s, every record of
//!   the other shard numbered below s and not yet folded in (written
//!   earlier, or merely numbered lower) is skipped as "folded in already".
//!   Whenever the shards lag each other, which is the normal case, changes
//!   of the lagging shard's instances are silently dropped. A dropped change
//!   is never made up for: the instance's next change is a delta from the
//!   state the dropped one produced, so the bucket stays off by the dropped
//!   delta for the rest of the day.
//! - Nothing is counted twice: a change is folded in only above the stored
//!   `AppliedThrough`, which only grows, in a write conditional on the
//!   version read. The error is always changes missing, never extra.
//!
//! **How it is caught and repaired.** `reconcile` recomputes a day from a
//! strongly consistent read of the state table, which the stream does not
//! touch. The scheduled reconcile compares every total of the day with that
//! recomputation and publishes the drift it finds, which raises the drift
//! alarm; with repair it rebuilds each partial that differs from the state
//! (keeping its `AppliedThrough`) and rewrites the totals that differ; a
//! repair is exact for a day whose stream backlog has drained (see
//! `reconcile`'s module docs). A dropped change is therefore wrong in the
//! totals from the moment it happens until the next scheduled run that
//! covers its day.
//!
//! A counter left with no contributor keeps its item with `Contributors` 0
//! and no `Value`: it is reported as removed, and the kept `Basis` stops an
//! older computation from bringing it back.
//!
//! # Limits
//!
//! A partial item holds every counter its bucket's instances report, so with
//! 20-byte names about 8,000 distinct counters per day fit in DynamoDB's
//! 400 KB item; more needs a wider tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::capacity;
use crate::key::Date;
use crate::state::{BUCKETS, StateItem, bucket_of};

/// A stream record's sequence number: decimal digits, compared as numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SequenceNumber(String);

/// Digits a sequence number is padded to so that text order is number order.
const SEQUENCE_DIGITS: usize = 40;

impl SequenceNumber {
    pub fn parse(text: &str) -> Result<SequenceNumber, ChangeError> {
        let significant = text.trim_start_matches('0');
        if text.is_empty()
            || !text.bytes().all(|b| b.is_ascii_digit())
            || significant.len() > SEQUENCE_DIGITS
        {
            return Err(ChangeError::BadSequenceNumber {
                text: text.to_owned(),
            });
        }
        Ok(SequenceNumber(format!("{significant:0>SEQUENCE_DIGITS$}")))
    }

    /// Below every real sequence number: nothing applied yet.
    pub fn zero() -> SequenceNumber {
        SequenceNumber("0".repeat(SEQUENCE_DIGITS))
    }

    /// The number as the stream wrote it, without padding.
    pub fn as_reported(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_reported())
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = ChangeError;

    fn try_from(text: String) -> Result<SequenceNumber, ChangeError> {
        SequenceNumber::parse(&text)
    }
}

impl From<SequenceNumber> for String {
    fn from(sequence: SequenceNumber) -> String {
        sequence.0
    }
}

/// A stream record that does not describe a state change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("sequence number {text:?} is not a decimal number of at most 40 digits")]
    BadSequenceNumber { text: String },
    #[error("the record has neither an old nor a new image")]
    NoImage,
    #[error("the old and new images are of different instances ({old} and {new})")]
    DifferentInstances { old: String, new: String },
}

/// One instance's state change, as the state table's stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub sequence: SequenceNumber,
    pub date: Date,
    pub bucket: u64,
    pub instance: String,
    /// What the instance contributed before and after (empty when it did not).
    pub old: BTreeMap<String, i64>,
    pub new: BTreeMap<String, i64>,
    /// Whether the instance had a live body before and after (an empty
    /// body is live and contributes nothing; a tombstone is not live).
    pub was_live: bool,
    pub is_live: bool,
}

impl StateChange {
    /// From a record's images; either may be absent (an insert, a removal).
    pub fn from_images(
        sequence: SequenceNumber,
        old: Option<StateItem>,
        new: Option<StateItem>,
    ) -> Result<StateChange, ChangeError> {
        let (date, instance) = match (&old, &new) {
            (Some(o), Some(n)) if (&o.date, &o.instance) != (&n.date, &n.instance) => {
                return Err(ChangeError::DifferentInstances {
                    old: format!("{}/{}", o.date, o.instance),
                    new: format!("{}/{}", n.date, n.instance),
                });
            }
            (Some(item), _) | (None, Some(item)) => (item.date.clone(), item.instance.clone()),
            (None, None) => return Err(ChangeError::NoImage),
        };
        let live = |item: &Option<StateItem>| item.as_ref().is_some_and(|item| !item.deleted);
        let (was_live, is_live) = (live(&old), live(&new));
        let contribution = |item: Option<StateItem>| match item {
            Some(item) if !item.deleted => item.counters,
            _ => BTreeMap::new(),
        };
        Ok(StateChange {
            sequence,
            bucket: bucket_of(&instance),
            date,
            instance,
            old: contribution(old),
            new: contribution(new),
            was_live,
            is_live,
        })
    }

    /// What this change does to each counter it touches.
    pub fn deltas(&self) -> BTreeMap<&str, Delta> {
        let mut deltas: BTreeMap<&str, Delta> = BTreeMap::new();
        for (name, value) in &self.old {
            let delta = deltas.entry(name).or_default();
            delta.sum -= i128::from(*value);
            delta.contributors -= 1;
        }
        for (name, value) in &self.new {
            let delta = deltas.entry(name).or_default();
            delta.sum += i128::from(*value);
            delta.contributors += 1;
        }
        deltas.retain(|_, delta| !delta.is_zero());
        deltas
    }
}

/// A change to one counter's sum and to how many instances report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub sum: i128,
    pub contributors: i64,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        self.sum == 0 && self.contributors == 0
    }
}

/// An exact sum, carried through serde as decimal text because `i128` is
/// wider than serde_dynamo's numbers; stores turn it into a number where the
/// schema says N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Exact(pub i128);

impl Serialize for Exact {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Exact, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map(Exact)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an integer")))
    }
}

/// One bucket's share of one day's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialItem {
    #[serde(rename = "Part")]
    pub part: String,
    #[serde(rename = "Date")]
    pub date: Date,
    #[serde(rename = "Bucket")]
    pub bucket: u64,
    /// Counter → sum over the bucket's instances that report it.
    #[serde(rename = "Sums", default)]
    pub sums: BTreeMap<String, Exact>,
    /// Counter → how many of the bucket's instances report it (never 0).
    #[serde(rename = "Contributors", default)]
    pub contributors: BTreeMap<String, i64>,
    /// How many of the bucket's instances have a live body (empty bodies
    /// included), for the rules' `instances()`.
    #[serde(rename = "Instances", default)]
    pub instances: i64,
    #[serde(rename = "Version")]
    pub version: u64,
    #[serde(rename = "AppliedThrough")]
    pub applied_through: SequenceNumber,
}

impl PartialItem {
    /// The empty partial a bucket starts from.
    pub fn empty(date: &Date, bucket: u64) -> PartialItem {
        PartialItem {
            part: partial_key(date, bucket),
            date: date.clone(),
            bucket,
            sums: BTreeMap::new(),
            contributors: BTreeMap::new(),
            instances: 0,
            version: 0,
            applied_through: SequenceNumber::zero(),
        }
    }

    /// Folds in the changes not folded in yet, in stream order. The caller
    /// writes the result, conditional on the version it read, when
    /// [`Fold::must_write`]; the version has then been bumped.
    pub fn fold<'a>(&mut self, changes: impl IntoIterator<Item = &'a StateChange>) -> Fold {
        let before = (self.sums.clone(), self.contributors.clone());
        let mut fold = Fold::default();
        for change in changes {
            let deltas = change.deltas();
            if change.sequence <= self.applied_through {
                fold.already_applied += 1;
                fold.already_applied_counters
                    .extend(deltas.keys().map(|name| (*name).to_owned()));
                continue;
            }
            let instances = i64::from(change.is_live) - i64::from(change.was_live);
            if !deltas.is_empty() || instances != 0 {
                fold.moving += 1;
            }
            self.instances += instances;
            for (name, delta) in deltas {
                let sum = self.sums.entry(name.to_owned()).or_default();
                sum.0 += delta.sum;
                let count = self.contributors.entry(name.to_owned()).or_default();
                *count += delta.contributors;
                if *count == 0 {
                    self.sums.remove(name);
                    self.contributors.remove(name);
                }
            }
            self.applied_through = change.sequence.clone();
        }
        // Within one bucket changes may cancel out: one atomic write shows
        // readers either all of them or none, so only the net result counts
        // for the totals. The write itself is still owed (see `Fold::moving`).
        let (sums, contributors) = before;
        let names: BTreeSet<&String> = sums
            .keys()
            .chain(self.sums.keys())
            .chain(contributors.keys())
            .chain(self.contributors.keys())
            .collect();
        fold.changed = names
            .into_iter()
            .filter(|name| {
                sums.get(*name) != self.sums.get(*name)
                    || contributors.get(*name) != self.contributors.get(*name)
            })
            .cloned()
            .collect();
        if fold.must_write() {
            self.version += 1;
        }
        fold
    }

    /// The size DynamoDB bills for this item.
    pub fn item_size(&self) -> usize {
        serde_dynamo::to_item::<_, serde_dynamo::Item>(self)
            .map(|item| capacity::item_size(&item))
            .unwrap_or(capacity::MAX_ITEM_BYTES + 1)
    }
}

/// What folding a bucket's changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    /// Counters whose sum or contributors in this partial changed.
    pub changed: BTreeSet<String>,
    /// Changes folded in now that move at least one counter, whether or not
    /// they cancel out. Their `AppliedThrough` must be written: a later
    /// delivery of only some of them (a resumed tail) would otherwise fold
    /// those in again, alone, and the bucket would keep their half.
    pub moving: usize,
    /// Changes skipped as folded in by an earlier delivery.
    pub already_applied: usize,
    /// Counters those skipped changes touch: their totals may not be written
    /// yet if the earlier delivery stopped before its totals.
    pub already_applied_counters: BTreeSet<String>,
}

impl Fold {
    /// Whether the partial must be written (with its version bumped). A fold
    /// of changes that each move no counter (the same body under a new ETag)
    /// needs no write: folding any of them again, in any later delivery,
    /// adds nothing, so leaving `AppliedThrough` behind them loses nothing.
    pub fn must_write(&self) -> bool {
        self.moving > 0
    }
}

/// The partial items table's hash key: `<date>#<bucket>`, like the state's.
pub fn partial_key(date: &Date, bucket: u64) -> String {
    crate::state::bucket_key(date, bucket)
}

/// The partial versions a total was computed from: one per bucket, 0 for a
/// bucket with no partial yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Basis(pub Vec<u64>);

impl Basis {
    /// No partial versions: covered by every basis.
    pub fn none() -> Basis {
        Basis(Vec::new())
    }

    pub fn of(partials: &[PartialItem]) -> Basis {
        let mut versions = vec![0; BUCKETS as usize];
        for partial in partials {
            if let Some(slot) = versions.get_mut(partial.bucket as usize) {
                *slot = partial.version;
            }
        }
        Basis(versions)
    }

    /// Whether this basis is at least as new as `other` in every bucket.
    pub fn covers(&self, other: &Basis) -> bool {
        (0..BUCKETS as usize)
            .all(|b| self.0.get(b).copied().unwrap_or(0) >= other.0.get(b).copied().unwrap_or(0))
    }
}

/// One counter's total for one day, as the totals table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalItem {
    #[serde(rename = "Counter")]
    pub counter: String,
    #[serde(rename = "Date")]
    pub date: Date,
    /// The total; absent when no instance reports the counter (removed).
    #[serde(rename = "Value", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Exact>,
    #[serde(rename = "Contributors")]
    pub contributors: i64,
    /// Absent when read through the `ByDate` index, which does not project it.
    #[serde(rename = "Basis", default = "Basis::none")]
    pub basis: Basis,
}

impl TotalItem {
    pub fn is_removed(&self) -> bool {
        self.contributors <= 0
    }

    /// The item as stored: serde_dynamo's mapping, with `Value` a number.
    pub fn to_item(&self) -> Result<serde_dynamo::Item, serde_dynamo::Error> {
        let mut item: serde_dynamo::Item = serde_dynamo::to_item(self)?;
        if let Some(serde_dynamo::AttributeValue::S(text)) = item.remove("Value") {
            item.insert("Value".to_owned(), serde_dynamo::AttributeValue::N(text));
        }
        Ok(item)
    }

    /// Reads an item as stored (or as the `ByDate` index projects it).
    pub fn from_item(mut item: serde_dynamo::Item) -> Result<TotalItem, serde_dynamo::Error> {
        if let Some(serde_dynamo::AttributeValue::N(text)) = item.remove("Value") {
            item.insert("Value".to_owned(), serde_dynamo::AttributeValue::S(text));
        }
        serde_dynamo::from_item(item)
    }

    /// Sizes of the item and of its copy in the `ByDate` index (keys,
    /// `Value` and `Contributors`).
    fn sizes(&self) -> (usize, usize) {
        let Ok(mut item) = self.to_item() else {
            return (capacity::MAX_ITEM_BYTES, 0);
        };
        let table = capacity::item_size(&item);
        item.remove("Basis");
        (table, capacity::item_size(&item))
    }

    /// Write units of writing this total over `stored`: the table write is
    /// billed on the larger item, and the index is written only when what it
    /// projects changes.
    pub fn write_units_over(&self, stored: Option<&TotalItem>) -> u64 {
        let (table, index) = self.sizes();
        let (stored_table, stored_index) = stored.map_or((0, 0), TotalItem::sizes);
        let index_changed =
            stored.is_none_or(|s| (s.value, s.contributors) != (self.value, self.contributors));
        capacity::write_units(table.max(stored_table))
            + if index_changed {
                capacity::write_units(index.max(stored_index))
            } else {
                0
            }
    }

    /// Write units a conditional write whose condition failed is billed:
    /// the stored item's size, and no index write.
    pub fn failed_write_units(stored: Option<&TotalItem>) -> u64 {
        capacity::write_units(stored.map_or(1, |s| s.sizes().0))
    }

    /// Read units of a strongly consistent read of this total.
    pub fn read_units(&self) -> u64 {
        capacity::consistent_read_units(Some(self.sizes().0))
    }
}

impl PartialItem {
    /// Write units of writing this partial item over `stored`.
    pub fn write_units_over(&self, stored: Option<&PartialItem>) -> u64 {
        capacity::write_units(
            self.item_size()
                .max(stored.map_or(0, PartialItem::item_size)),
        )
    }

    /// Read units of a strongly consistent read of this partial item.
    pub fn read_units(&self) -> u64 {
        capacity::consistent_read_units(Some(self.item_size()))
    }
}

/// Recomputes the totals of `counters` on `date` from the day's partial items.
pub fn totals_from_partials(
    date: &Date,
    partials: &[PartialItem],
    counters: &BTreeSet<String>,
) -> Vec<TotalItem> {
    let basis = Basis::of(partials);
    counters
        .iter()
        .map(|counter| {
            let (sum, contributors) =
                partials
                    .iter()
                    .fold((0i128, 0i64), |(sum, contributors), partial| {
                        (
                            sum + partial.sums.get(counter).map_or(0, |s| s.0),
                            contributors + partial.contributors.get(counter).copied().unwrap_or(0),
                        )
                    });
            TotalItem {
                counter: counter.clone(),
                date: date.clone(),
                value: (contributors > 0).then_some(Exact(sum)),
                contributors,
                basis: basis.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::state::Content;

    fn item(instance: &str, content: Content) -> StateItem {
        StateItem::from(&fixtures::state(instance, "1", content))
    }

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn change(n: u64, instance: &str, old: Option<Content>, new: Option<Content>) -> StateChange {
        StateChange::from_images(
            seq(n),
            old.map(|c| item(instance, c)),
            new.map(|c| item(instance, c)),
        )
        .unwrap()
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(seq(9) < seq(10));
        assert!(
            SequenceNumber::parse("4421584500000000017450439091").unwrap()
                > SequenceNumber::parse("999999999999999999999").unwrap()
        );
        assert_eq!(seq(42).to_string(), "42");
        assert!(SequenceNumber::parse("12a").is_err());
        assert!(SequenceNumber::parse("").is_err());
        assert!(SequenceNumber::zero() < seq(1));
    }

    #[test]
    fn a_partial_counts_the_instances_with_a_live_body_empty_ones_included() {
        let date = Date::parse("2015-11-16").unwrap();
        let mut partial = PartialItem::empty(&date, 0);
        let counted = fixtures::live(&[("a", 5)], "e1");
        let empty = fixtures::live(&[], "e2");
        let fold = partial.fold(&[
            change(1, "i-1", None, Some(counted.clone())),
            // An empty body is an instance that reports nothing: it counts,
            // and changes no counter, yet the item must be written.
            change(2, "i-2", None, Some(empty.clone())),
            // The same instance again: still one.
            change(
                3,
                "i-1",
                Some(counted.clone()),
                Some(fixtures::live(&[("a", 6)], "e3")),
            ),
        ]);
        assert!(fold.must_write());
        assert_eq!(partial.instances, 2);
        let only_empty = partial.fold(&[change(4, "i-3", None, Some(empty.clone()))]);
        assert!(only_empty.must_write(), "the count moved");
        assert!(only_empty.changed.is_empty(), "no counter did");
        partial.fold(&[
            change(5, "i-2", Some(empty), Some(Content::Deleted)),
            // Delivered again: not counted twice.
            change(4, "i-3", None, Some(fixtures::live(&[], "e2"))),
        ]);
        assert_eq!(partial.instances, 2);
    }

    #[test]
    fn deltas_cover_inserts_overwrites_removed_counters_and_deletes() {
        let insert = change(
            1,
            "i-1",
            None,
            Some(fixtures::live(&[("a", 5), ("b", 1)], "e1")),
        );
        assert_eq!(
            insert.deltas(),
            [
                (
                    "a",
                    Delta {
                        sum: 5,
                        contributors: 1
                    }
                ),
                (
                    "b",
                    Delta {
                        sum: 1,
                        contributors: 1
                    }
                )
            ]
            .into()
        );
        let overwrite = change(
            2,
            "i-1",
            Some(fixtures::live(&[("a", 5), ("b", 1)], "e1")),
            Some(fixtures::live(&[("a", 7), ("c", 0)], "e2")),
        );
        assert_eq!(
            overwrite.deltas(),
            [
                (
                    "a",
                    Delta {
                        sum: 2,
                        contributors: 0
                    }
                ),
                (
                    "b",
                    Delta {
                        sum: -1,
                        contributors: -1
                    }
                ),
                (
                    "c",
                    Delta {
                        sum: 0,
                        contributors: 1
                    }
                ),
            ]
            .into()
        );
        let delete = change(
            3,
            "i-1",
            Some(fixtures::live(&[("a", 7)], "e2")),
            Some(Content::Deleted),
        );
        assert_eq!(
            delete.deltas(),
            [(
                "a",
                Delta {
                    sum: -7,
                    contributors: -1
                }
            )]
            .into()
        );
        let same = change(
            4,
            "i-1",
            Some(fixtures::live(&[("a", 7)], "e2")),
            Some(fixtures::live(&[("a", 7)], "e3")),
        );
        assert!(same.deltas().is_empty());
    }

    #[test]
    fn folding_skips_what_is_folded_already_and_drops_counters_without_contributors() {
        let date = Date::parse("2015-11-16").unwrap();
        let changes = [
            change(10, "i-1", None, Some(fixtures::live(&[("a", 5)], "e1"))),
            change(
                11,
                "i-1",
                Some(fixtures::live(&[("a", 5)], "e1")),
                Some(fixtures::live(&[("b", 2)], "e2")),
            ),
        ];
        let mut partial = PartialItem::empty(&date, 3);
        let fold = partial.fold(&changes);
        // a came and went within the bucket: only b changed.
        assert_eq!(fold.changed, ["b".to_owned()].into());
        assert_eq!(partial.version, 1);
        assert_eq!(partial.sums, [("b".to_owned(), Exact(2))].into());
        assert_eq!(partial.contributors, [("b".to_owned(), 1)].into());
        assert_eq!(partial.applied_through, seq(11));
        // The whole batch again, or its second half: nothing changes, and the
        // skipped changes name every counter they touch.
        let before = partial.clone();
        let again = partial.fold(&changes);
        assert!(again.changed.is_empty());
        assert_eq!(again.already_applied, 2);
        assert_eq!(
            again.already_applied_counters,
            ["a".to_owned(), "b".to_owned()].into()
        );
        assert_eq!(partial.fold(&changes[1..]).already_applied, 1);
        assert_eq!(partial, before);
    }

    #[test]
    fn changes_that_cancel_out_are_written_with_their_applied_through() {
        let date = Date::parse("2015-11-16").unwrap();
        let a = || fixtures::live(&[("a", 5)], "e1");
        let b = || fixtures::live(&[("a", 2)], "e2");
        let mut partial = PartialItem::empty(&date, 3);
        let _ = partial.fold(&[change(9, "i-1", None, Some(a()))]);
        let there_and_back = [
            change(10, "i-1", Some(a()), Some(b())),
            change(12, "i-1", Some(b()), Some(a())),
        ];
        let fold = partial.fold(&there_and_back);
        // No total moves, but the write is owed: a resumed tail holding only
        // the way back must find it folded in already.
        assert!(fold.changed.is_empty());
        assert!(fold.must_write());
        assert_eq!(
            (partial.version, partial.applied_through.clone()),
            (2, seq(12))
        );
        let tail = partial.fold(&there_and_back[1..]);
        assert!(!tail.must_write());
        assert_eq!(tail.already_applied, 1);
        assert_eq!(partial.sums, [("a".to_owned(), Exact(5))].into());
    }

    #[test]
    fn a_change_that_moves_no_counter_changes_no_version() {
        let date = Date::parse("2015-11-16").unwrap();
        let mut partial = PartialItem::empty(&date, 3);
        let _ = partial.fold(&[change(
            1,
            "i-1",
            None,
            Some(fixtures::live(&[("a", 5)], "e1")),
        )]);
        let same = change(
            2,
            "i-1",
            Some(fixtures::live(&[("a", 5)], "e1")),
            Some(fixtures::live(&[("a", 5)], "e2")),
        );
        let fold = partial.fold(&[same]);
        assert!(fold.changed.is_empty());
        assert!(!fold.must_write());
        assert_eq!(partial.version, 1);
    }

    #[test]
    fn totals_sum_the_partials_and_report_removed_counters() {
        let date = Date::parse("2015-11-16").unwrap();
        let mut p0 = PartialItem::empty(&date, 0);
        let _ = p0.fold(&[change(
            1,
            "i-1",
            None,
            Some(fixtures::live(
                &[("COUNTER1", 12_345), ("x", i64::MAX)],
                "e",
            )),
        )]);
        let mut p5 = PartialItem::empty(&date, 5);
        let _ = p5.fold(&[change(
            2,
            "i-2",
            None,
            Some(fixtures::live(
                &[("COUNTER1", 123_456), ("x", i64::MAX)],
                "e",
            )),
        )]);
        let counters: BTreeSet<String> = ["COUNTER1", "x", "gone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let totals = totals_from_partials(&date, &[p0, p5], &counters);
        assert_eq!(totals[0].value, Some(Exact(135_801)));
        assert_eq!(totals[0].contributors, 2);
        assert_eq!(totals[1].counter, "gone");
        assert!(totals[1].is_removed());
        assert_eq!(totals[1].value, None);
        assert_eq!(totals[2].value, Some(Exact(2 * i128::from(i64::MAX))));
        assert_eq!(totals[2].basis.0[0], 1);
        assert_eq!(totals[2].basis.0[5], 1);
        assert_eq!(totals[2].basis.0.len(), 64);
    }

    #[test]
    fn a_basis_covers_another_only_when_newer_or_equal_everywhere() {
        let mut a = Basis(vec![0; 64]);
        let mut b = Basis(vec![0; 64]);
        a.0[1] = 2;
        b.0[2] = 3;
        assert!(!a.covers(&b) && !b.covers(&a));
        let mut both = a.clone();
        both.0[2] = 3;
        assert!(both.covers(&a) && both.covers(&b) && both.covers(&both));
    }

    #[test]
    fn totals_are_stored_with_a_numeric_value_and_read_back() {
        let total = TotalItem {
            counter: "bids-won".into(),
            date: Date::parse("2015-11-16").unwrap(),
            value: Some(Exact(191_122)),
            contributors: 4,
            basis: Basis(vec![1; 64]),
        };
        let item = total.to_item().unwrap();
        assert_eq!(
            item.get("Value"),
            Some(&serde_dynamo::AttributeValue::N("191122".into()))
        );
        assert_eq!(TotalItem::from_item(item).unwrap(), total);
        // About 200 bytes: one unit in the table and one in the index, and
        // no index write when only the basis changes.
        assert_eq!(total.write_units_over(None), 2);
        let moved_basis = TotalItem {
            basis: Basis(vec![2; 64]),
            ..total.clone()
        };
        assert_eq!(moved_basis.write_units_over(Some(&total)), 1);
        assert_eq!(TotalItem::failed_write_units(Some(&total)), 1);
    }

    #[test]
    fn exact_sums_travel_as_text() {
        let json = serde_json::to_string(&Exact(i128::MAX)).unwrap();
        assert_eq!(json, format!("\"{}\"", i128::MAX));
        assert_eq!(
            serde_json::from_str::<Exact>(&json).unwrap(),
            Exact(i128::MAX)
        );
        assert!(serde_json::from_str::<Exact>("\"1.5\"").is_err());
    }
}
