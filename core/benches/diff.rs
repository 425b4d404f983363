//! State-diff benchmarks: one instance's old and new body, as the state
//! table's stream carries them, turned into per-counter changes
//! ([`tally_core::aggregate::StateChange::from_images`] and
//! [`tally_core::aggregate::StateChange::deltas`]).
//!
//! Why: every accepted upload becomes one stream record, and the aggregate
//! stage diffs its two images before anything else; at the sample workload
//! (docs/design.md §8: 100 instances × 100 counters a minute) that is 100 diffs of
//! 100 counters a minute, and at 100,000 instances a thousand times more.
//! docs/design.md §8 asks that an invocation's own CPU time be a small fraction of
//! its AWS round trips (a DynamoDB call takes milliseconds), so a diff must
//! cost microseconds, and stay linear in the body up to the 1 MiB cap.
//!
//! What, each over the union of the old and new counters (throughput is in
//! counters per second):
//!
//! - `diff/<case>`: `from_images` + `deltas`, the images already decoded
//!   (decoding is in the aggregate crate's `coalesce` benchmark). The images
//!   are cloned outside the timing, as the stage owns them once decoded;
//!   dropping the change afterwards is timed.
//! - `deltas/<case>`: `deltas` alone, on a change built beforehand.
//!
//! Cases, with the sample workload's counter names (`COUNTER1` ...
//! `COUNTERn`):
//!
//! - `sample-all-changed-100`: every value grew since the last upload, as
//!   cumulative counters do from one minute to the next (the sample
//!   workload's case);
//! - `sample-10-changed-100`: 10 of 100 moved;
//! - `unchanged-100`: the same counters again (a re-upload whose body was
//!   rewritten): no delta;
//! - `insert-100`: the instance's first upload of the day (no old image);
//! - `delete-100`: the object was removed (a tombstone replaces the body);
//! - `renamed-half-100`: 50 counters gone, 50 new ones and 50 kept at
//!   their values (counters come and go); 150 counters in all;
//! - `all-changed-50000`: 50,000 counters, all moved: about the largest
//!   body the default 1 MiB cap admits.
//!
//! Run with `cargo bench -p tally-core --bench diff`
//! (add `-- --warm-up-time 1 --measurement-time 3` for a quick run);
//! `cargo test -p tally-core --benches` runs each benchmark once as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::state::{StateItem, partition_key};

const INSTANCE: &str = "i-0123456789abcdef0";

/// A state item for [`INSTANCE`] on the sample workload's date, holding
/// `counters` (or a tombstone when `None`).
fn item(counters: Option<BTreeMap<String, i64>>, sequencer: &str) -> StateItem {
    let key = UploadKey {
        date: Date::parse("2015-11-16").expect("a valid date"),
        instance: INSTANCE.to_owned(),
    };
    let deleted = counters.is_none();
    StateItem {
        part: partition_key(&key),
        instance: key.instance.clone(),
        date: key.date.clone(),
        counters: counters.unwrap_or_default(),
        ordering: OrderingKey::from_sequencer(sequencer).expect("a valid sequencer"),
        etag: (!deleted).then(|| format!("\"etag-{sequencer}\"")),
        version_id: None,
        deleted,
        object_key: format!("counters/2015-11-16/{INSTANCE}"),
    }
}

/// `COUNTER<first>` ... `COUNTER<first + n - 1>`, valued by `value(i)`.
fn counters(first: usize, n: usize, value: impl Fn(usize) -> i64) -> BTreeMap<String, i64> {
    (first..first + n)
        .map(|i| (format!("COUNTER{i}"), value(i)))
        .collect()
}

/// A benchmark case: its label, the two images, and how many distinct
/// counters they hold between them.
struct Case {
    label: &'static str,
    old: Option<StateItem>,
    new: Option<StateItem>,
    counters: u64,
}

fn case(
    label: &'static str,
    old: Option<Option<BTreeMap<String, i64>>>,
    new: Option<Option<BTreeMap<String, i64>>>,
) -> Case {
    let names = |side: &Option<Option<BTreeMap<String, i64>>>| -> Vec<String> {
        side.iter()
            .flatten()
            .flat_map(|map| map.keys().cloned())
            .collect()
    };
    let mut union = names(&old);
    union.extend(names(&new));
    union.sort_unstable();
    union.dedup();
    Case {
        label,
        old: old.map(|c| item(c, "0055AED6DCD90C4901")),
        new: new.map(|c| item(c, "0055AED6DCD90C4902")),
        counters: union.len() as u64,
    }
}

fn cases() -> Vec<Case> {
    // Yesterday's minute: counters at their earlier cumulative values.
    let before = |i: usize| (i as i64) * 1_000 + 12_345;
    vec![
        case(
            "sample-all-changed-100",
            Some(Some(counters(1, 100, before))),
            Some(Some(counters(1, 100, |i| before(i) + 17 + i as i64))),
        ),
        case(
            "sample-10-changed-100",
            Some(Some(counters(1, 100, before))),
            Some(Some(counters(1, 100, |i| {
                before(i) + i64::from(i % 10 == 0)
            }))),
        ),
        case(
            "unchanged-100",
            Some(Some(counters(1, 100, before))),
            Some(Some(counters(1, 100, before))),
        ),
        case("insert-100", None, Some(Some(counters(1, 100, before)))),
        case(
            "delete-100",
            Some(Some(counters(1, 100, before))),
            Some(None),
        ),
        case(
            "renamed-half-100",
            Some(Some(counters(1, 100, before))),
            Some(Some(counters(51, 100, before))),
        ),
        case(
            "all-changed-50000",
            Some(Some(counters(1, 50_000, before))),
            Some(Some(counters(1, 50_000, |i| before(i) + 1))),
        ),
    ]
}

fn bench_diff(c: &mut Criterion) {
    let sequence = SequenceNumber::parse("4421584500000000017450439091").expect("digits");
    let cases = cases();

    let mut group = c.benchmark_group("diff");
    for case in &cases {
        // Check outside the timing that each case diffs as its name says.
        let change = StateChange::from_images(sequence.clone(), case.old.clone(), case.new.clone())
            .expect("images of one instance");
        let moved = change.deltas().len() as u64;
        let expected = match case.label {
            "sample-10-changed-100" => 10,
            "unchanged-100" => 0,
            // The 50 counters both bodies hold kept their values.
            "renamed-half-100" => 100,
            _ => case.counters,
        };
        assert_eq!(moved, expected, "{}", case.label);

        group.throughput(Throughput::Elements(case.counters));
        group.bench_function(BenchmarkId::from_parameter(case.label), |b| {
            b.iter_batched(
                || (case.old.clone(), case.new.clone()),
                |(old, new)| {
                    let change = StateChange::from_images(black_box(sequence.clone()), old, new)
                        .expect("images of one instance");
                    // The change (the images' maps) is dropped inside the
                    // timing: the stage pays for that too.
                    change.deltas().len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("deltas");
    for case in &cases {
        let change = StateChange::from_images(sequence.clone(), case.old.clone(), case.new.clone())
            .expect("images of one instance");
        group.throughput(Throughput::Elements(case.counters));
        group.bench_with_input(
            BenchmarkId::from_parameter(case.label),
            &change,
            |b, change| b.iter(|| black_box(change).deltas()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);
