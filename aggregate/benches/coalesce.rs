//! Coalescing benchmarks: one batch of 100 state-stream records, as Lambda
//! delivers it, folded into per-(date, bucket) partial items and the totals
//! they move.
//!
//! Why: this is the aggregate stage's whole CPU cost per invocation.
//! docs/design.md §8 asks that an invocation's own CPU time be a small fraction of its AWS
//! round trips (a DynamoDB call takes milliseconds, and a batch makes a few
//! hundred), and the functions run at 128 MB, i.e. a fraction of a vCPU; it
//! also bounds how quickly the embedded runtime gets through one round of
//! the sample workload, 100 uploads ("well under a second").
//!
//! The grouping of a batch by (date, bucket) lives inside
//! [`Aggregator::apply`], interleaved with the reads and conditional writes
//! of each partial item and total, so it cannot be timed apart from its
//! I/O. What is timed instead:
//!
//! - `coalesce/decode-100`: [`decode_record`] on each of the 100 records
//!   (images from DynamoDB's attribute values into state items, then into a
//!   state change): the pure first half of the handler.
//! - `coalesce/handle-memory-100`: [`Aggregator::handle`], the Lambda
//!   handler, over a store that keeps the partial items and totals in
//!   memory maps (the test kit's `MemoryTotalsStore`, with the same
//!   conditional-write rules as the DynamoDB and SQLite adapters). This is the handler's own CPU:
//!   decoding, grouping, folding each bucket, recomputing the 100 totals
//!   from the day's partials, and costing every write by DynamoDB's rules.
//! - `coalesce/handle-sqlite-100`: the same handler over the embedded
//!   runtime's SQLite store (an in-memory database), as `tally run` uses it.
//!
//! The workload is the sample workload (docs/design.md §8): 100 instances,
//! each reporting `COUNTER1`..`COUNTER100`, uploading once a minute. Each
//! iteration handles the next minute's batch: 100 `MODIFY` records whose old image is the
//! previous minute's body and whose new image has every counter grown, so
//! every iteration folds 100 changes into the ~54 buckets the instances
//! hash to and rewrites all 100 totals, as in production. Building the
//! batch is outside the timing. Throughput is in records per second.
//!
//! Run with `cargo bench -p tally-aggregate --bench coalesce`
//! (add `-- --warm-up-time 1 --measurement-time 3` for a quick run);
//! `cargo test -p tally-aggregate --benches` runs each benchmark once as a
//! smoke test.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hint::black_box;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tally_aggregate::Aggregator;
use tally_aggregate::handler::decode_record;
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::ports::TotalsStore;
use tally_core::state::{StateItem, partition_key};
use tally_embedded::database::Database;
use tally_testkit::memory::MemoryTotalsStore;

const INSTANCES: usize = 100;
const COUNTERS: usize = 100;
const DATE: &str = "2015-11-16";

/// Instance `n`'s body at `minute`: its cumulative counters, each grown by
/// a rate of its own every minute.
fn body(n: usize, minute: u64) -> BTreeMap<String, i64> {
    (1..=COUNTERS)
        .map(|c| {
            let base = (n * 7_919 + c * 104_729) as i64 % 100_000;
            let rate = 1 + ((n * 31 + c * 17) % 97) as i64;
            (format!("COUNTER{c}"), base + rate * minute as i64)
        })
        .collect()
}

fn instance(n: usize) -> String {
    format!("i-{n:017x}")
}

/// Instance `n`'s state item at `minute`, as the stream's images carry it.
fn image(n: usize, minute: u64) -> serde_dynamo::Item {
    let key = UploadKey {
        date: Date::parse(DATE).expect("a valid date"),
        instance: instance(n),
    };
    let sequencer = format!("{:016X}{:02X}", minute + 1, n);
    let item = StateItem {
        part: partition_key(&key),
        instance: key.instance.clone(),
        date: key.date.clone(),
        counters: body(n, minute),
        ordering: OrderingKey::from_sequencer(&sequencer).expect("a valid sequencer"),
        etag: Some(format!("\"{minute:032x}\"")),
        version_id: None,
        deleted: false,
        object_key: format!("counters/{DATE}/{}", key.instance),
    };
    serde_dynamo::to_item(item).expect("a state item maps to attribute values")
}

/// The stream batch of `minute`: every instance's upload of that minute, in
/// stream order; the first minute's records are inserts.
fn batch(minute: u64) -> Event {
    let mut event = Event::default();
    event.records = (0..INSTANCES)
        .map(|n| {
            let mut record = EventRecord::default();
            record.event_id = format!("{minute}-{n}");
            record.event_name = if minute == 0 { "INSERT" } else { "MODIFY" }.to_owned();
            record.event_source = Some("aws:dynamodb".to_owned());
            record.aws_region = "eu-west-1".to_owned();
            // The handler reads the images only; `Keys` is left empty.
            record.change.new_image = image(n, minute);
            if minute > 0 {
                record.change.old_image = image(n, minute - 1);
            }
            // Sequence numbers grow with the minute, then with the record.
            record.change.sequence_number = Some(format!(
                "{}{:08}",
                44_215_845 + minute,
                minute * 1_000 + n as u64
            ));
            record
        })
        .collect();
    event
}

/// Handles one batch and checks that it landed whole.
fn handle_checked<T: TotalsStore>(
    runtime: &tokio::runtime::Runtime,
    aggregator: &Aggregator<T>,
    event: &Event,
) -> tally_aggregate::AggregateReport {
    let (response, report) = runtime.block_on(aggregator.handle(event));
    assert!(
        response.batch_item_failures.is_empty(),
        "the batch failed: {report:?}"
    );
    report
}

fn bench_coalesce(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("coalesce");
    group.throughput(Throughput::Elements(INSTANCES as u64));

    let event = batch(1);
    let decoded = event
        .records
        .iter()
        .filter_map(|r| decode_record(r).ok())
        .count();
    assert_eq!(decoded, INSTANCES, "every record decodes");
    group.bench_function("decode-100", |b| {
        b.iter(|| {
            black_box(&event)
                .records
                .iter()
                .map(decode_record)
                .collect::<Vec<_>>()
        })
    });

    // Each store starts from the first minute's inserts; every iteration
    // then handles the next minute.
    let memory = Aggregator::new(MemoryTotalsStore::default());
    let sqlite = Aggregator::new(
        Database::open(":memory:")
            .expect("an in-memory database")
            .totals(),
    );
    handle_checked(&runtime, &memory, &batch(0));
    handle_checked(&runtime, &sqlite, &batch(0));
    let report = handle_checked(&runtime, &memory, &batch(1));
    assert_eq!(report.total_writes, COUNTERS as u64, "{report:?}");
    eprintln!(
        "coalesce: one minute's batch of {INSTANCES} records: {} partial writes, {} total writes, {} write units, {} read units",
        report.partial_writes, report.total_writes, report.write_units, report.read_units
    );
    handle_checked(&runtime, &sqlite, &batch(1));

    for (label, minute) in [
        ("handle-memory-100", Cell::new(2)),
        ("handle-sqlite-100", Cell::new(2)),
    ] {
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let event = batch(minute.get());
                    minute.set(minute.get() + 1);
                    event
                },
                |event| {
                    let (response, report) = if label.contains("memory") {
                        runtime.block_on(memory.handle(black_box(&event)))
                    } else {
                        runtime.block_on(sqlite.handle(black_box(&event)))
                    };
                    debug_assert!(response.batch_item_failures.is_empty());
                    report.total_writes
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_coalesce);
criterion_main!(benches);
