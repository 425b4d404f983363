//! tally's side of the comparison, stage by stage as docs/design.md and the
//! stage modules describe them (docs/design.md §4 Ingest, §5 Aggregate,
//! §6 Rules and alerts), per upload period:
//!
//! - **ingest**, per upload (one invocation each: SNS delivers one S3 event
//!   per message): a strongly consistent read of the instance's state; for a
//!   changed body an S3 GET, one conditional write and a HEAD; an identical
//!   re-upload (same ETag) stops after the read.
//! - **aggregate**, per stream batch: per touched bucket a read and a
//!   conditional write of its partial item; a read of the day's partials; a
//!   read of each changed total and one write of it (plus its `ByDate` copy).
//! - **rules**, per totals-stream batch: the 64 partials read twice (the
//!   isolated read), the day's mark read and claimed, the alert records
//!   queried, two snapshot PUTs.
//!
//! The items billed are tally's own types ([`StateItem`], [`PartialItem`],
//! [`TotalItem`]) built from the sample fleet and sized by the functions the
//! stages log their capacity with ([`tally_core::capacity`]), so a change to
//! an item's shape changes this model with it. This file changes when a
//! stage's reads or writes do.
//!
//! Lambda durations and peak memory have not been measured on AWS for tally
//! yet: the defaults are assumptions, printed as such, with `--ingest-ms`,
//! `--aggregate-ms`, `--rules-ms` and `--memory-mb` to override them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tally_core::aggregate::{Basis, Exact, PartialItem, SequenceNumber, TotalItem, partial_key};
use tally_core::capacity::{self, MAX_ITEM_BYTES};
use tally_core::ordering::OrderingKey;
use tally_core::state::{BUCKETS, StateItem, bucket_key};

use super::bill::{Parts, Usage, function, table};
use super::error::CostError;
use super::fleet::{DATE, Fleet, item_bytes, records_per_batch};
use super::inputs::Inputs;

/// A DynamoDB stream sequence number as the partial items record it.
const SEQUENCE_NUMBER: &str = "4421584500000000017450439091";
/// An S3 sequencer as events carry it.
const SEQUENCER: &str = "0055AED6DCD90281E5";
/// The rules stage's day mark: one read and one claim (a write) per batch.
const MARK_UNITS: u64 = 1;
/// The day's alert records, queried once per batch: one 4 KB read unit with
/// the shipped rules (docs/design.md §6's measured 130 = 128 partials + mark + this).
const ALERT_QUERY_UNITS: u64 = 1;
/// The snapshot for the downstream job that reads it: the text and the JSON
/// object, one PUT each.
pub const SNAPSHOT_PUTS: u64 = 2;

/// Where tally's units come from, per period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TallyStages {
    pub changed_uploads: u64,
    pub identical_uploads: u64,
    pub state_item_bytes: usize,
    pub ingest_write_units_per_upload: f64,
    pub ingest_write_units: f64,
    pub ingest_read_units: f64,
    pub occupied_buckets: u64,
    pub aggregate_batches: f64,
    pub records_per_batch: f64,
    pub partial_item_bytes: usize,
    pub partial_writes: f64,
    pub partial_write_units: f64,
    pub changed_totals_per_batch: u64,
    pub total_writes: f64,
    pub total_write_units: f64,
    pub aggregate_write_units: f64,
    pub aggregate_read_units: f64,
    pub rules_batches: f64,
    pub rules_read_units_per_batch: f64,
    pub rules_write_units_per_batch: f64,
}

/// tally's units per period, stage by stage.
pub fn tally(inputs: &Inputs, fleet: &Fleet) -> Result<(Parts, TallyStages), CostError> {
    let w = &inputs.workload;
    let s = &inputs.streams;
    let period = w.period_seconds as f64;

    // Ingest: the state item of each sampled instance, as ingest writes it.
    let ordering =
        OrderingKey::from_sequencer(SEQUENCER).map_err(|e| CostError::Item(e.to_string()))?;
    let (mut write_units, mut read_units, mut largest) = (0u64, 0u64, 0usize);
    for &i in &fleet.sample {
        let instance = fleet.shape.instance_id(i);
        let item = StateItem {
            part: bucket_key(&fleet.date, fleet.buckets[i as usize]),
            instance: instance.clone(),
            date: fleet.date.clone(),
            counters: fleet
                .names
                .iter()
                .enumerate()
                .map(|(c, name)| (name.clone(), fleet.value(i, c as u64)))
                .collect(),
            ordering: ordering.clone(),
            // An S3 ETag: an MD5 in hex, as ingest stores it.
            etag: Some(format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15)),
            version_id: None,
            deleted: false,
            object_key: format!("counters/{DATE}/{instance}"),
        };
        let bytes = item_bytes(&item)?;
        // A changed body replaces one of the same shape: billed on either.
        write_units += capacity::write_units(bytes);
        read_units += capacity::consistent_read_units(Some(bytes));
        largest = largest.max(bytes);
    }
    if largest > MAX_ITEM_BYTES {
        return Err(CostError::ItemTooLarge {
            item: "one instance's state item",
            bytes: largest,
        });
    }
    let sampled = fleet.sample.len() as f64;
    let write_per_upload = write_units as f64 / sampled;
    let read_per_upload = read_units as f64 / sampled;
    let changed = fleet.changed.len() as u64;
    let uploads = w.instances as f64;
    let ingest_wu = changed as f64 * write_per_upload;
    // Every upload reads the state first, an identical one included.
    let ingest_ru = uploads * read_per_upload;

    // Aggregate: split each shard's changes into batches and see which
    // buckets each batch touches. Buckets go to shards as partitions would.
    struct Batches {
        per_period: f64,
        records: f64,
        /// Per chunk of records, the buckets it touches.
        touched: Vec<BTreeSet<u64>>,
    }
    let mut shards = Vec::new();
    for shard in 0..s.shards {
        let records: Vec<u64> = fleet
            .changed
            .iter()
            .map(|&i| fleet.buckets[i as usize])
            .filter(|b| b % s.shards == shard)
            .collect();
        if records.is_empty() {
            continue;
        }
        let n = records.len() as f64;
        let per_batch = records_per_batch(n, 1.0, period, s.batch_window_seconds, s.batch_size);
        let touched = records
            .chunks(per_batch as usize)
            .map(|chunk| chunk.iter().copied().collect())
            .collect();
        shards.push(Batches {
            per_period: n / per_batch,
            records: per_batch,
            touched,
        });
    }
    // How often each bucket's partial is written, for the versions the
    // items carry (half a day's worth: a typical mid-day item).
    let periods_per_day = 86_400.0 / period;
    let mut touches = [0f64; BUCKETS as usize];
    for shard in &shards {
        let weight = shard.per_period / shard.touched.len() as f64;
        for chunk in &shard.touched {
            for &b in chunk {
                touches[b as usize] += weight;
            }
        }
    }
    let version = |b: u64| ((touches[b as usize] * periods_per_day / 2.0).round() as u64).max(1);

    let sums = &fleet.sums;
    let applied_through =
        SequenceNumber::parse(SEQUENCE_NUMBER).map_err(|e| CostError::Item(e.to_string()))?;
    let mut partials: BTreeMap<u64, PartialItem> = BTreeMap::new();
    for b in fleet.occupied_buckets() {
        partials.insert(
            b,
            PartialItem {
                part: partial_key(&fleet.date, b),
                date: fleet.date.clone(),
                bucket: b,
                sums: fleet
                    .names
                    .iter()
                    .zip(&sums[b as usize])
                    .map(|(name, sum)| (name.clone(), Exact(*sum)))
                    .collect(),
                contributors: fleet
                    .names
                    .iter()
                    .map(|name| (name.clone(), fleet.occupied[b as usize] as i64))
                    .collect(),
                instances: fleet.occupied[b as usize] as i64,
                version: version(b),
                applied_through: applied_through.clone(),
            },
        );
    }
    let largest_partial = partials
        .values()
        .map(PartialItem::item_size)
        .max()
        .unwrap_or(0);
    if largest_partial > MAX_ITEM_BYTES {
        return Err(CostError::ItemTooLarge {
            item: "a bucket's partial item (it holds every counter)",
            bytes: largest_partial,
        });
    }
    // A partial is rewritten over one of the same shape; a bucket without
    // one is still billed a unit for the read that finds nothing.
    let mut bucket_wu = [1u64; BUCKETS as usize];
    let mut bucket_ru = [1u64; BUCKETS as usize];
    for (b, partial) in &partials {
        bucket_wu[*b as usize] = partial.write_units_over(Some(partial));
        bucket_ru[*b as usize] = partial.read_units();
    }
    let partial_wu = |b: &u64| bucket_wu[*b as usize];
    let partial_ru = |b: &u64| bucket_ru[*b as usize];
    let day_partials_ru: u64 = partials
        .values()
        .map(PartialItem::read_units)
        .sum::<u64>()
        .max(1);

    // The changed totals: the first `changed_counters` counters, each
    // rewritten over its previous value.
    let basis = Basis((0..BUCKETS).map(version).collect());
    let (mut total_table_wu, mut total_index_wu) = (0u64, 0u64);
    for (c, name) in fleet
        .names
        .iter()
        .enumerate()
        .take(fleet.changed_counters as usize)
    {
        let value: i128 = sums.iter().map(|bucket| bucket[c]).sum();
        let total = TotalItem {
            counter: name.clone(),
            date: fleet.date.clone(),
            value: Some(Exact(value)),
            contributors: w.instances as i64,
            basis: basis.clone(),
        };
        let previous = TotalItem {
            value: Some(Exact(value - 1)),
            ..total.clone()
        };
        // Over an item with the same value the index is not written, so the
        // difference between the two is the ByDate copy's share.
        let table_only = total.write_units_over(Some(&total));
        total_table_wu += table_only;
        total_index_wu += total.write_units_over(Some(&previous)) - table_only;
    }

    let (mut batches, mut partial_writes, mut partial_write_units, mut partial_read_units) =
        (0.0, 0.0, 0.0, 0.0);
    let mut weighted_records = 0.0;
    for shard in &shards {
        let chunks = shard.touched.len() as f64;
        let touched: f64 = shard.touched.iter().map(|t| t.len() as f64).sum::<f64>() / chunks;
        let wu: f64 = shard
            .touched
            .iter()
            .map(|t| t.iter().map(partial_wu).sum::<u64>() as f64)
            .sum::<f64>()
            / chunks;
        let ru: f64 = shard
            .touched
            .iter()
            .map(|t| t.iter().map(partial_ru).sum::<u64>() as f64)
            .sum::<f64>()
            / chunks;
        batches += shard.per_period;
        weighted_records += shard.per_period * shard.records;
        partial_writes += shard.per_period * touched;
        partial_write_units += shard.per_period * wu;
        // Step 1 reads each touched partial; step 2 reads the whole day's.
        partial_read_units += shard.per_period * (ru + day_partials_ru as f64);
    }
    let changed_totals = if batches > 0.0 {
        fleet.changed_counters
    } else {
        0
    };
    let total_writes = batches * changed_totals as f64;
    let totals_table_wu = batches * total_table_wu as f64;
    let totals_index_wu = batches * total_index_wu as f64;
    // Each changed total is read before it is written: one unit each.
    let totals_ru = batches * changed_totals as f64;
    let aggregate_wu = partial_write_units + totals_table_wu + totals_index_wu;
    let aggregate_ru = partial_read_units + totals_ru;

    // Rules: the totals stream gets a burst of the batch's changed totals
    // after each aggregate batch, spread over its shards by counter.
    let rules_batches = if total_writes > 0.0 {
        let hit = s.shards.min(changed_totals) as f64;
        let records = total_writes / hit;
        let burst = changed_totals as f64 / hit;
        let per_batch = if burst >= s.batch_size as f64 {
            // A burst larger than a batch is split; batches do not merge it.
            burst / (burst / s.batch_size as f64).ceil()
        } else {
            records_per_batch(records, burst, period, s.batch_window_seconds, s.batch_size)
        };
        hit * records / per_batch
    } else {
        0.0
    };
    // The isolated read is at least two reads of all 64 partials; a bucket
    // with no item still costs a unit.
    let partials_isolated: u64 = 2 * (0..BUCKETS).map(|b| partial_ru(&b)).sum::<u64>();
    let rules_ru_per_batch = (partials_isolated + MARK_UNITS + ALERT_QUERY_UNITS) as f64;
    let rules_wu_per_batch = MARK_UNITS as f64;

    let functions = vec![
        function(
            "ingest",
            uploads,
            inputs.lambda.memory_mb,
            inputs.lambda.ingest_ms,
            "assumed (measured only against a local emulator: BENCHMARKS.md)",
        ),
        function(
            "aggregate",
            batches,
            inputs.lambda.memory_mb,
            inputs.lambda.aggregate_ms,
            "assumed (measured only against a local emulator: BENCHMARKS.md)",
        ),
        function(
            "rules",
            rules_batches,
            inputs.lambda.memory_mb,
            inputs.lambda.rules_ms,
            "assumed (measured only against a local emulator: BENCHMARKS.md)",
        ),
    ];
    let tables = vec![
        table("state", ingest_wu, ingest_ru, inputs),
        table(
            "partials",
            partial_write_units,
            partial_read_units + rules_batches * partials_isolated as f64,
            inputs,
        ),
        table("totals", totals_table_wu, totals_ru, inputs),
        table("totals ByDate index", totals_index_wu, 0.0, inputs),
        table(
            "alert state",
            rules_batches * rules_wu_per_batch,
            rules_batches * (MARK_UNITS + ALERT_QUERY_UNITS) as f64,
            inputs,
        ),
    ];
    let usage = Usage {
        uploads,
        write_units: tables.iter().map(|t| t.write_units_per_period).sum(),
        read_units: tables.iter().map(|t| t.read_units_per_period).sum(),
        lambda_invocations: functions.iter().map(|f| f.invocations_per_period).sum(),
        lambda_gb_seconds: functions.iter().map(|f| f.gb_seconds_per_period).sum(),
        // One SNS publish per S3 event; deliveries to Lambda are free.
        sns_publishes: uploads,
        // A changed body is read (GET) and checked after the write (HEAD).
        s3_gets: 2.0 * changed as f64,
        s3_puts: rules_batches * SNAPSHOT_PUTS as f64,
    };
    let stages = TallyStages {
        changed_uploads: changed,
        identical_uploads: w.instances - changed,
        state_item_bytes: largest,
        ingest_write_units_per_upload: write_per_upload,
        ingest_write_units: ingest_wu,
        ingest_read_units: ingest_ru,
        occupied_buckets: fleet.occupied_buckets().count() as u64,
        aggregate_batches: batches,
        records_per_batch: if batches > 0.0 {
            weighted_records / batches
        } else {
            0.0
        },
        partial_item_bytes: largest_partial,
        partial_writes,
        partial_write_units,
        changed_totals_per_batch: changed_totals,
        total_writes,
        total_write_units: totals_table_wu + totals_index_wu,
        aggregate_write_units: aggregate_wu,
        aggregate_read_units: aggregate_ru,
        rules_batches,
        rules_read_units_per_batch: rules_ru_per_batch,
        rules_write_units_per_batch: rules_wu_per_batch,
    };
    Ok(((usage, tables, functions), stages))
}
