//! The per-counter design tally replaces, priced on the same fleet and
//! prices as tally: one DynamoDB item per (Counter, Date) holding every
//! instance's value in a map. Per upload one Lambda at 1536 MB reads the
//! object and updates every counter's item, changed or not; each item that
//! changed emits a stream record, and a second Lambda writes that
//! counter's total (plus its `ByDate` copy) per record. No reads are billed
//! (the stream carries the images) and S3 invokes the function directly
//! (no SNS).
//!
//! DynamoDB bills a write on the whole item, and that is the argument
//! between the two designs: this item grows with the fleet, so every write
//! does, until the item passes DynamoDB's 400 KB limit and the design
//! cannot hold the fleet at all. `tally demo` prices its rounds with the
//! same item ([`counter_item`], [`upload_write_units`]).
//!
//! # Its reported $4,471 a year
//!
//! At the measured workload (100 instances × 100 counters every minute)
//! this model writes 20,000 units a minute to the counter items and 20,000
//! to the totals, the figures measured on the design (docs/design.md §5).
//! On today's on-demand prices that alone is about $13,100 a year, three
//! times the design's whole reported figure, so it is unlikely to have been
//! priced on demand (DynamoDB had no on-demand mode until November 2018).
//! Priced as provisioned capacity sized to the average rate (668 write
//! units), plus Lambda at 1536 MB with the assumed durations (500 ms per
//! upload, 100 ms per stream batch), the model gives about $4,840 a year, 8%
//! above the reported figure. The remaining gap is not fudged away: the
//! design's durations and how it sized its tables are not known here, and
//! the output says so and names the flags that change them.

use std::collections::HashMap;

use serde::Serialize;
use serde_dynamo::{AttributeValue, Item};
use tally_core::capacity::{self, MAX_ITEM_BYTES};

use super::bill::{Parts, Usage, function, table};
use super::error::CostError;
use super::fleet::{DATE, Fleet, records_per_batch};
use super::inputs::Inputs;
use super::numbers::grouped;

/// The yearly figures reported for the designs tally replaces.
pub const REPORTED_SERVERLESS_PER_YEAR: f64 = 4471.0;
pub const REPORTED_EC2_PER_YEAR: f64 = 701.0;

/// Instances a counter item's map is built from at a time.
const MAP_CHUNK: u64 = 4096;

/// Where the per-counter design's units come from, per period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerCounterItems {
    /// The size of one counter's item (the last counter's, holding every
    /// instance's value); it grows with the fleet.
    pub item_bytes: usize,
    pub write_units_per_upload: u64,
    pub state_write_units: f64,
    pub stream_records: f64,
    pub total_write_units_per_record: u64,
    pub totals_write_units: f64,
    pub records_per_batch: f64,
}

/// The yearly figures reported for the designs tally replaces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reported {
    pub lambda_and_dynamodb: f64,
    pub ec2: f64,
}

pub const REPORTED: Reported = Reported {
    lambda_and_dynamodb: REPORTED_SERVERLESS_PER_YEAR,
    ec2: REPORTED_EC2_PER_YEAR,
};

/// One counter's item on one day, with the given instances' values.
pub fn counter_item(
    counter: &str,
    date: &str,
    values: impl IntoIterator<Item = (String, i64)>,
) -> Item {
    let map = values
        .into_iter()
        .map(|(instance, value)| (instance, AttributeValue::N(value.to_string())))
        .collect();
    let mut item = Item::from(HashMap::<String, AttributeValue>::new());
    item.insert("Counter".to_owned(), AttributeValue::S(counter.to_owned()));
    item.insert("Date".to_owned(), AttributeValue::S(date.to_owned()));
    item.insert("InstanceValues".to_owned(), AttributeValue::M(map));
    item
}

/// The bytes these instances' values add to a counter's item. DynamoDB
/// sizes a map as the sum of its entries, so the shares of disjoint sets of
/// instances add up.
pub fn values_bytes(
    counter: &str,
    date: &str,
    values: impl IntoIterator<Item = (String, i64)>,
) -> usize {
    let empty = capacity::item_size(&counter_item(counter, date, []));
    capacity::item_size(&counter_item(counter, date, values)) - empty
}

/// Write units of one upload: it updates every counter's item, changed or
/// not, and each update is billed on the whole item, `values_bytes` of
/// instance values included.
pub fn upload_write_units<'a>(
    counters: impl IntoIterator<Item = &'a str>,
    date: &str,
    values_bytes: usize,
) -> u64 {
    counters
        .into_iter()
        .map(|counter| {
            let key = capacity::item_size(&counter_item(counter, date, []));
            capacity::write_units(key + values_bytes)
        })
        .sum()
}

/// The per-counter design's units per period, or why it cannot hold the
/// fleet.
pub fn per_counter(
    inputs: &Inputs,
    fleet: &Fleet,
) -> Result<Result<(Parts, PerCounterItems), String>, CostError> {
    let w = &inputs.workload;
    let period = w.period_seconds as f64;
    // The map's share of the item, built a chunk of instances at a time.
    // Sized with the last counter's values; every counter's item holds the
    // same instances.
    let last = w.counters - 1;
    let name = &fleet.names[last as usize];
    let empty = capacity::item_size(&counter_item(name, DATE, []));
    let mut map_bytes = 0usize;
    let mut start = 0;
    while start < w.instances {
        let end = (start + MAP_CHUNK).min(w.instances);
        map_bytes += values_bytes(
            name,
            DATE,
            (start..end).map(|i| (fleet.shape.instance_id(i), fleet.value(i, last))),
        );
        if empty + map_bytes > MAX_ITEM_BYTES {
            // The entries so far average map_bytes / end bytes each.
            let limit = (MAX_ITEM_BYTES - empty) as u64 * end / map_bytes as u64;
            return Ok(Err(format!(
                "the per-counter design cannot hold {} instances: its item for one counter, which holds every instance's value, passes DynamoDB's {}-byte item limit at about {} instances with these ids and values (fewer with longer ids: --instance-id-bytes 19 for today's EC2 ids)",
                grouped(w.instances as f64),
                grouped(MAX_ITEM_BYTES as f64),
                grouped(limit as f64)
            )));
        }
        start = end;
    }
    let item_bytes = empty + map_bytes;
    let per_upload = upload_write_units(fleet.names.iter().map(String::as_str), DATE, map_bytes);
    let uploads = w.instances as f64;
    let state_wu = uploads * per_upload as f64;

    // An update that changes nothing emits no stream record; each one that
    // does makes the totals function write that counter's total and DynamoDB
    // its ByDate copy (the index projects the same attributes).
    let records = fleet.changed.len() as f64 * fleet.changed_counters as f64;
    let total_value: i128 = fleet.sums.iter().map(|bucket| bucket[last as usize]).sum();
    let mut total = Item::from(HashMap::<String, AttributeValue>::new());
    total.insert("Counter".to_owned(), AttributeValue::S(name.clone()));
    total.insert("Date".to_owned(), AttributeValue::S(DATE.to_owned()));
    total.insert(
        "Value".to_owned(),
        AttributeValue::N(total_value.to_string()),
    );
    let total_wu = capacity::write_units(capacity::item_size(&total));
    let totals_wu = records * total_wu as f64;
    // One shard, no batching window (the design predates it): batches hold
    // what arrives between two polls.
    let per_batch = records_per_batch(records, 1.0, period, 0.0, inputs.per_counter.batch_size);
    let batches = if records > 0.0 {
        records / per_batch
    } else {
        0.0
    };

    // The names keep the `seed` the JSON output has always used for this
    // design (`tally cost --json`'s readers match on them).
    let functions = vec![
        function(
            "seed ingest",
            uploads,
            inputs.per_counter.memory_mb,
            inputs.per_counter.ingest_ms,
            "assumed (the per-counter design's setting: 1536 MB; duration not known here)",
        ),
        function(
            "seed totals",
            batches,
            inputs.per_counter.memory_mb,
            inputs.per_counter.aggregate_ms,
            "assumed (the per-counter design's setting: 1536 MB; duration not known here)",
        ),
    ];
    let tables = vec![
        table("seed counters (Counter, Date)", state_wu, 0.0, inputs),
        table("seed totals", totals_wu, 0.0, inputs),
        table("seed totals ByDate index", totals_wu, 0.0, inputs),
    ];
    let usage = Usage {
        uploads,
        write_units: tables.iter().map(|t| t.write_units_per_period).sum(),
        read_units: 0.0,
        lambda_invocations: functions.iter().map(|f| f.invocations_per_period).sum(),
        lambda_gb_seconds: functions.iter().map(|f| f.gb_seconds_per_period).sum(),
        sns_publishes: 0.0,
        // Every upload is read: the design does not compare ETags.
        s3_gets: uploads,
        s3_puts: 0.0,
    };
    let items = PerCounterItems {
        item_bytes,
        write_units_per_upload: per_upload,
        state_write_units: state_wu,
        stream_records: records,
        total_write_units_per_record: 2 * total_wu,
        totals_write_units: 2.0 * totals_wu,
        records_per_batch: if records > 0.0 { per_batch } else { 0.0 },
    };
    Ok(Ok(((usage, tables, functions), items)))
}
