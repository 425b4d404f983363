//! `tally cost`: what tally costs on AWS per month and per year, next to the
//! seed's per-counter design, computed rather than guessed.
//!
//! # The job
//!
//! Given a fleet (instances, counters, upload period, how much of it changes)
//! and the stream batching, the command prints the DynamoDB write and read
//! units, Lambda invocations and GB-seconds, SNS and S3 requests, and dollars
//! per month and per year, for tally and for the seed's design; then where
//! each figure comes from, and every price and assumption with the flag that
//! overrides it. The yearly figure at the seed's workload is what gets put
//! next to the seed's own ($4,471 for Lambda + DynamoDB, $701 on EC2), so the
//! yearly figures are printed for both DynamoDB billing modes.
//!
//! # Units from items, not from constants
//!
//! DynamoDB bills a request by the size of the item it touches, and that is
//! the whole argument between the two designs: the seed's item holds every
//! instance's value, so each of its writes grows with the fleet, while
//! tally's items are bounded by one body, by the 64 buckets and by the
//! counters. So the command does not carry "2 write units per upload": it
//! builds representative items of both designs (tally's [`StateItem`],
//! [`PartialItem`] and [`TotalItem`]; the seed's `(Counter, Date,
//! InstanceValues)` item), with names and values like the measured runs'
//! (`COUNTER1`…, `i-000`…, `1000 × instance + counter`), and bills them with
//! the functions the stages use to log their capacity
//! ([`tally_core::capacity`]). At the seed's workload this reproduces the
//! README's measured tables exactly (the output says so, and a test pins it);
//! elsewhere it computes what those runs would have measured.
//!
//! # What each design does, as modelled
//!
//! tally (README, DESIGN §2), per upload period:
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
//! The seed (DESIGN §2 and §7): per upload, one Lambda at 1536 MB that reads
//! the object and updates every counter's item (billed whole, changed or
//! not); each item that changed emits a stream record, and a second Lambda
//! writes that counter's total (plus its `ByDate` copy) per record. No reads
//! are billed (the stream carries the images) and S3 invokes the function
//! directly (no SNS).
//!
//! # Not measured yet
//!
//! Lambda durations and peak memory have not been measured for tally yet:
//! the defaults are assumptions, printed as such, with
//! `--ingest-ms`, `--aggregate-ms`, `--rules-ms` and `--memory-mb` to
//! override them. The seed's durations are not known here either.
//!
//! # The seed's $4,471 a year
//!
//! At the seed's workload the model writes 20,000 units a minute to the
//! seed's counter items and 20,000 to its totals (DESIGN §7's measured
//! figures). On today's on-demand prices that alone is about $13,100 a year,
//! three times the seed's whole figure, so the seed is unlikely to have been
//! priced on demand (DynamoDB had no on-demand mode until November 2018). Priced as
//! provisioned capacity sized to the average rate (668 write units), plus
//! Lambda at 1536 MB with the assumed durations (500 ms per upload, 100 ms
//! per stream batch), the model gives about $4,840 a year, 8% above the
//! seed's figure. The remaining gap is not fudged away: the seed's
//! durations and how it sized its tables are not known here, and the
//! output says so and names the flags that change them.
//!
//! Numbers are `f64` because batches per period can be fractional (a
//! batching window longer than the period merges rounds); units per item
//! are exact integers from the billing functions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Result;
use serde::Serialize;
use serde_dynamo::{AttributeValue, Item};
use tally_core::aggregate::{Basis, Exact, PartialItem, SequenceNumber, TotalItem, partial_key};
use tally_core::capacity::{self, MAX_ITEM_BYTES};
use tally_core::key::Date;
use tally_core::ordering::OrderingKey;
use tally_core::state::{BUCKETS, StateItem, bucket_key, bucket_of};

const AFTER_HELP: &str = "\
Examples:
  tally cost                                   the seed's workload: 100 instances × 100 counters every 60 s
  tally cost --instances 100000                a large fleet (the seed's design cannot hold it: the output says why)
  tally cost --changed-counters 10             only a tenth of the counters move each period
  tally cost --batch-window 10                 react faster: smaller stream batches, more writes
  tally cost --billing provisioned             DynamoDB provisioned capacity instead of on-demand
  tally cost --ingest-ms 35 --memory-mb 128    use measured Lambda figures
  tally cost --json                            every figure, input and assumption, for machines

Units are computed from item sizes by DynamoDB's billing rules; prices are us-east-1 list prices
(see the assumptions the command prints). Durations are assumptions until measured.";

/// Hours AWS's pricing pages and calculator count in a month.
const HOURS_PER_MONTH: f64 = 730.0;
const MONTHS_PER_YEAR: f64 = 12.0;
/// Without a batching window Lambda polls a stream shard four times a second.
const STREAM_POLL_SECONDS: f64 = 0.25;
/// Items are built for at most this many counter values; a larger fleet is
/// sampled (every instance's body has the same shape, so sizes differ by a
/// byte or two between instances).
const SAMPLE_VALUES: u64 = 250_000;
/// Instances the seed's item map is built from at a time.
const SEED_MAP_CHUNK: u64 = 4096;
/// The date the items carry (the seed's example day).
const DATE: &str = "2015-11-16";
/// A DynamoDB stream sequence number as the partial items record it.
const SEQUENCE_NUMBER: &str = "4421584500000000017450439091";
/// An S3 sequencer as events carry it.
const SEQUENCER: &str = "0055AED6DCD90281E5";
/// The rules stage's day mark: one read and one claim (a write) per batch.
const MARK_UNITS: u64 = 1;
/// The day's alert records, queried once per batch: one 4 KB read unit with
/// the shipped rules (README's measured 130 = 128 partials + mark + this).
const ALERT_QUERY_UNITS: u64 = 1;
/// The snapshot for task B: the text and the JSON object, one PUT each.
const SNAPSHOT_PUTS: u64 = 2;

/// The price list the defaults come from, and when.
const PRICES_TAKEN: &str = "us-east-1 list prices as published in 2025 (DynamoDB on-demand after its 1 Nov 2024 cut; Lambda x86)";

/// The seed's own yearly figures, as it reported them.
const SEED_SERVERLESS_PER_YEAR: f64 = 4471.0;
const SEED_EC2_PER_YEAR: f64 = 701.0;

/// What tally costs on AWS per month and per year, next to the seed's design.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CostArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    streams: StreamArgs,
    #[command(flatten)]
    lambda: LambdaArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    prices: PriceArgs,
    /// Print every figure, input and assumption as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Workload")]
struct WorkloadArgs {
    /// Instances uploading.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    instances: u64,
    /// Counters each instance reports.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    counters: u64,
    /// Seconds between one instance's uploads.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    period: u64,
    /// Percentage of the counters whose value moves each period (the same
    /// counters on every changing instance, as in the README's rounds).
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_percent)]
    changed_counters: f64,
    /// Percentage of the instances whose body changes each period; the
    /// others re-upload an identical body.
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_percent)]
    changed_instances: f64,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Item shape (default: as in the measured runs)")]
struct ShapeArgs {
    /// Bytes of an instance id (`i-` and hex; today's EC2 ids are 19).
    /// Default: i-000, i-001, … as the measured runs name them.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(3..=255))]
    instance_id_bytes: Option<u64>,
    /// Bytes of a counter name (`C` and digits). Default: COUNTER1, COUNTER2, …
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(2..=255))]
    counter_name_bytes: Option<u64>,
    /// Decimal digits of each value. Default: 1000 × instance + counter, as
    /// the measured runs upload.
    #[arg(long, value_name = "DIGITS", value_parser = clap::value_parser!(u32).range(1..=18))]
    value_digits: Option<u32>,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Stream batching (tally's aggregate and rules event sources)")]
struct StreamArgs {
    /// Most records in one stream batch (the event source's BatchSize).
    #[arg(long, value_name = "RECORDS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
    /// Seconds Lambda gathers records before invoking
    /// (MaximumBatchingWindowInSeconds); 0 invokes as records arrive (it
    /// polls four times a second). Reaction time grows with it.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_window)]
    batch_window: f64,
    /// Shards of each stream (DynamoDB gives a table one per partition; a
    /// batch never mixes shards).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    shards: u64,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "tally's Lambda functions (assumed until measured)")]
struct LambdaArgs {
    /// Memory of each function, MB (DESIGN §7: peak ≤ 48 MB, so 128).
    #[arg(long, value_name = "MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(128..=10_240))]
    memory_mb: u64,
    /// Average billed duration of an ingest invocation (one upload), ms.
    #[arg(long, value_name = "MS", default_value_t = 60.0, value_parser = parse_duration_ms)]
    ingest_ms: f64,
    /// Average billed duration of an aggregate invocation (one batch), ms.
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = parse_duration_ms)]
    aggregate_ms: f64,
    /// Average billed duration of a rules invocation (one batch), ms.
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = parse_duration_ms)]
    rules_ms: f64,
}

#[derive(Debug, Clone, clap::Args)]
#[command(
    next_help_heading = "The seed's design (assumed: the seed's durations are not known here)"
)]
struct SeedArgs {
    /// Memory of the seed's functions, MB (the seed ran at 1536).
    #[arg(long, value_name = "MB", default_value_t = 1536, value_parser = clap::value_parser!(u64).range(128..=10_240))]
    seed_memory_mb: u64,
    /// Average duration of the seed's per-upload invocation, ms (an S3 GET
    /// and one UpdateItem per counter, at a few ms each).
    #[arg(long, value_name = "MS", default_value_t = 500.0, value_parser = parse_duration_ms)]
    seed_ingest_ms: f64,
    /// Average duration of the seed's totals invocation (one stream batch), ms.
    #[arg(long, value_name = "MS", default_value_t = 100.0, value_parser = parse_duration_ms)]
    seed_aggregate_ms: f64,
    /// The seed's stream batch size (it had no batching window: Lambda
    /// invoked as records arrived).
    #[arg(long, value_name = "RECORDS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    seed_batch_size: u64,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Prices (USD; defaults: us-east-1 list prices, 2025)")]
struct PriceArgs {
    /// How DynamoDB bills throughput.
    #[arg(long, value_enum, default_value_t = Billing::OnDemand)]
    billing: Billing,
    /// On-demand: dollars per million write request units.
    #[arg(long, value_name = "USD", default_value_t = 0.625, value_parser = parse_price)]
    write_price: f64,
    /// On-demand: dollars per million read request units.
    #[arg(long, value_name = "USD", default_value_t = 0.125, value_parser = parse_price)]
    read_price: f64,
    /// Provisioned: dollars per write capacity unit-hour.
    #[arg(long, value_name = "USD", default_value_t = 0.00065, value_parser = parse_price)]
    wcu_hour_price: f64,
    /// Provisioned: dollars per read capacity unit-hour.
    #[arg(long, value_name = "USD", default_value_t = 0.00013, value_parser = parse_price)]
    rcu_hour_price: f64,
    /// Provisioned: the share of provisioned capacity the average load uses
    /// (100 sizes tables to the average rate exactly: a lower bound).
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_utilization)]
    utilization: f64,
    /// Lambda: dollars per GB-second.
    #[arg(long, value_name = "USD", default_value_t = 0.000_016_666_7, value_parser = parse_price)]
    gb_second_price: f64,
    /// Lambda: dollars per million invocations.
    #[arg(long, value_name = "USD", default_value_t = 0.20, value_parser = parse_price)]
    lambda_request_price: f64,
    /// SNS: dollars per million publishes (S3's event notifications).
    #[arg(long, value_name = "USD", default_value_t = 0.50, value_parser = parse_price)]
    sns_price: f64,
    /// S3: dollars per thousand GET or HEAD requests.
    #[arg(long, value_name = "USD", default_value_t = 0.0004, value_parser = parse_price)]
    s3_get_price: f64,
    /// S3: dollars per thousand PUT requests.
    #[arg(long, value_name = "USD", default_value_t = 0.005, value_parser = parse_price)]
    s3_put_price: f64,
}

/// How DynamoDB bills reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Billing {
    /// Per request unit.
    OnDemand,
    /// Per capacity unit-hour, sized to the average rate (at least 1 per table and index).
    Provisioned,
}

fn parse_number(text: &str, what: &str, example: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "{text:?} is not {what}; give a number such as {example}"
        )),
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value = parse_number(text.trim_end_matches('%'), "a percentage", "10")?;
    if value > 100.0 {
        return Err(format!(
            "{text} is over 100; give a percentage from 0 to 100"
        ));
    }
    Ok(value)
}

fn parse_utilization(text: &str) -> Result<f64, String> {
    let value = parse_percent(text)?;
    if value < 1.0 {
        return Err(format!(
            "{text} would provision without bound; give a percentage from 1 to 100 (AWS's auto scaling targets 70)"
        ));
    }
    Ok(value)
}

fn parse_window(text: &str) -> Result<f64, String> {
    let value = parse_number(text, "a number of seconds", "10")?;
    if value > 300.0 {
        return Err(format!(
            "{text} s is over Lambda's 300 s maximum batching window; give 0 to 300"
        ));
    }
    Ok(value)
}

fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let value = parse_number(text, "a duration in milliseconds", "60")?;
    if !(1.0..=900_000.0).contains(&value) {
        return Err(format!(
            "{text} ms is outside what Lambda bills (1 ms to its 15-minute limit); give 1 to 900000"
        ));
    }
    Ok(value)
}

fn parse_price(text: &str) -> Result<f64, String> {
    parse_number(text.trim_start_matches('$'), "a price in dollars", "0.625")
}

/// Everything the estimate depends on, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    pub workload: Workload,
    pub shape: Shape,
    pub streams: Streams,
    pub lambda: Lambdas,
    pub seed: SeedLambdas,
    pub prices: Prices,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub instances: u64,
    pub counters: u64,
    pub period_seconds: u64,
    pub changed_counters_percent: f64,
    pub changed_instances_percent: f64,
}

/// How names and values are built; `None` is the measured runs' shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Shape {
    pub instance_id_bytes: Option<u64>,
    pub counter_name_bytes: Option<u64>,
    pub value_digits: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Streams {
    pub batch_size: u64,
    pub batch_window_seconds: f64,
    pub shards: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lambdas {
    pub memory_mb: u64,
    pub ingest_ms: f64,
    pub aggregate_ms: f64,
    pub rules_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedLambdas {
    pub memory_mb: u64,
    pub ingest_ms: f64,
    pub aggregate_ms: f64,
    pub batch_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    pub taken: &'static str,
    pub billing: Billing,
    pub write_per_million: f64,
    pub read_per_million: f64,
    pub wcu_hour: f64,
    pub rcu_hour: f64,
    pub utilization_percent: f64,
    pub gb_second: f64,
    pub lambda_per_million: f64,
    pub sns_per_million: f64,
    pub s3_get_per_thousand: f64,
    pub s3_put_per_thousand: f64,
}

impl From<&CostArgs> for Inputs {
    fn from(args: &CostArgs) -> Inputs {
        let p = &args.prices;
        Inputs {
            workload: Workload {
                instances: args.workload.instances,
                counters: args.workload.counters,
                period_seconds: args.workload.period,
                changed_counters_percent: args.workload.changed_counters,
                changed_instances_percent: args.workload.changed_instances,
            },
            shape: Shape {
                instance_id_bytes: args.shape.instance_id_bytes,
                counter_name_bytes: args.shape.counter_name_bytes,
                value_digits: args.shape.value_digits,
            },
            streams: Streams {
                batch_size: args.streams.batch_size,
                batch_window_seconds: args.streams.batch_window,
                shards: args.streams.shards,
            },
            lambda: Lambdas {
                memory_mb: args.lambda.memory_mb,
                ingest_ms: args.lambda.ingest_ms,
                aggregate_ms: args.lambda.aggregate_ms,
                rules_ms: args.lambda.rules_ms,
            },
            seed: SeedLambdas {
                memory_mb: args.seed.seed_memory_mb,
                ingest_ms: args.seed.seed_ingest_ms,
                aggregate_ms: args.seed.seed_aggregate_ms,
                batch_size: args.seed.seed_batch_size,
            },
            prices: Prices {
                taken: PRICES_TAKEN,
                billing: p.billing,
                write_per_million: p.write_price,
                read_per_million: p.read_price,
                wcu_hour: p.wcu_hour_price,
                rcu_hour: p.rcu_hour_price,
                utilization_percent: p.utilization,
                gb_second: p.gb_second_price,
                lambda_per_million: p.lambda_request_price,
                sns_per_million: p.sns_price,
                s3_get_per_thousand: p.s3_get_price,
                s3_put_per_thousand: p.s3_put_price,
            },
        }
    }
}

impl Inputs {
    /// The seed's workload (DESIGN §7) with the default prices and
    /// assumptions, as `tally cost` with no flags (a test holds the two equal).
    #[cfg(test)]
    pub fn seed_workload() -> Inputs {
        Inputs {
            workload: Workload {
                instances: 100,
                counters: 100,
                period_seconds: 60,
                changed_counters_percent: 100.0,
                changed_instances_percent: 100.0,
            },
            shape: Shape::default(),
            streams: Streams {
                batch_size: 100,
                batch_window_seconds: 60.0,
                shards: 1,
            },
            lambda: Lambdas {
                memory_mb: 128,
                ingest_ms: 60.0,
                aggregate_ms: 250.0,
                rules_ms: 250.0,
            },
            seed: SeedLambdas {
                memory_mb: 1536,
                ingest_ms: 500.0,
                aggregate_ms: 100.0,
                batch_size: 100,
            },
            prices: Prices {
                taken: PRICES_TAKEN,
                billing: Billing::OnDemand,
                write_per_million: 0.625,
                read_per_million: 0.125,
                wcu_hour: 0.00065,
                rcu_hour: 0.00013,
                utilization_percent: 100.0,
                gb_second: 0.000_016_666_7,
                lambda_per_million: 0.20,
                sns_per_million: 0.50,
                s3_get_per_thousand: 0.0004,
                s3_put_per_thousand: 0.005,
            },
        }
    }

    fn periods_per_month(&self) -> f64 {
        HOURS_PER_MONTH * 3600.0 / self.workload.period_seconds as f64
    }
}

/// Why no estimate can be made for these inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum CostError {
    /// Instance ids of this width cannot tell the fleet apart.
    IdsTooShort {
        bytes: u64,
        instances: u64,
        needed: u64,
    },
    /// Counter names of this width cannot tell the counters apart.
    NamesTooShort {
        bytes: u64,
        counters: u64,
        needed: u64,
    },
    /// tally cannot store this workload: an item would pass DynamoDB's limit.
    ItemTooLarge { item: &'static str, bytes: usize },
    /// Building a representative item failed (a bug, not an input problem).
    Item(String),
}

impl fmt::Display for CostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CostError::IdsTooShort {
                bytes,
                instances,
                needed,
            } => write!(
                f,
                "--instance-id-bytes {bytes} cannot name {instances} distinct instances (i- and hex digits): give at least {needed}, or leave it out"
            ),
            CostError::NamesTooShort {
                bytes,
                counters,
                needed,
            } => write!(
                f,
                "--counter-name-bytes {bytes} cannot name {counters} distinct counters (C and digits): give at least {needed}, or leave it out"
            ),
            CostError::ItemTooLarge { item, bytes } => write!(
                f,
                "this workload cannot be stored: {item} would be {} bytes, over DynamoDB's {}-byte item limit; give fewer --counters or shorter names (--counter-name-bytes)",
                grouped(*bytes as f64),
                grouped(MAX_ITEM_BYTES as f64)
            ),
            CostError::Item(reason) => write!(
                f,
                "cannot build a representative item ({reason}); this is a bug in tally cost, please report it with the command line"
            ),
        }
    }
}

impl std::error::Error for CostError {}

/// One period's or one month's use of the billed services.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub uploads: f64,
    pub write_units: f64,
    pub read_units: f64,
    pub lambda_invocations: f64,
    pub lambda_gb_seconds: f64,
    pub sns_publishes: f64,
    pub s3_gets: f64,
    pub s3_puts: f64,
}

impl Usage {
    fn scaled(&self, by: f64) -> Usage {
        Usage {
            uploads: self.uploads * by,
            write_units: self.write_units * by,
            read_units: self.read_units * by,
            lambda_invocations: self.lambda_invocations * by,
            lambda_gb_seconds: self.lambda_gb_seconds * by,
            sns_publishes: self.sns_publishes * by,
            s3_gets: self.s3_gets * by,
            s3_puts: self.s3_puts * by,
        }
    }
}

/// A table's (or index's) units per period, and the capacity that would be
/// provisioned for them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub name: &'static str,
    pub write_units_per_period: f64,
    pub read_units_per_period: f64,
    pub provisioned_wcu: u64,
    pub provisioned_rcu: u64,
}

/// A Lambda function's invocations and compute per period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub name: &'static str,
    pub invocations_per_period: f64,
    pub memory_mb: u64,
    pub duration_ms: f64,
    /// Where the duration and memory come from.
    pub source: &'static str,
    pub gb_seconds_per_period: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dollars {
    pub dynamodb: f64,
    pub lambda: f64,
    pub sns: f64,
    pub s3: f64,
    pub total: f64,
}

/// One design's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesignCost {
    pub design: &'static str,
    pub per_period: Usage,
    pub per_month: Usage,
    pub tables: Vec<Table>,
    pub functions: Vec<Function>,
    /// Dollars per month with the chosen billing mode.
    pub per_month_usd: Dollars,
    pub per_year_usd: f64,
    /// Dollars per year under each DynamoDB billing mode.
    pub per_year_on_demand_usd: f64,
    pub per_year_provisioned_usd: f64,
}

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

/// Where the seed's units come from, per period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedItems {
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

/// A figure the README or DESIGN measured, next to what this model computes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub what: String,
    pub measured: f64,
    pub computed: f64,
    pub source: &'static str,
    pub matches: bool,
}

/// One assumption, where it comes from, and the flag that changes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assumption {
    pub what: &'static str,
    pub value: String,
    /// measured, computed, assumed, price, or convention.
    pub kind: &'static str,
    pub flag: &'static str,
}

/// The whole estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub inputs: Inputs,
    pub periods_per_month: f64,
    pub tally: DesignCost,
    pub tally_stages: TallyStages,
    /// `None` when the seed's design cannot hold the fleet (`seed_infeasible` says why).
    pub seed: Option<DesignCost>,
    pub seed_items: Option<SeedItems>,
    pub seed_infeasible: Option<String>,
    pub seed_reported_per_year_usd: SeedReported,
    /// The instances' own uploads (S3 PUTs): the same for every design, not in the totals.
    pub uploads_per_month: f64,
    pub uploads_per_month_usd: f64,
    pub checks: Vec<Check>,
    pub assumptions: Vec<Assumption>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedReported {
    pub lambda_and_dynamodb: f64,
    pub ec2: f64,
}

pub fn run(args: CostArgs) -> Result<()> {
    let estimate = estimate(&Inputs::from(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate)?);
    } else {
        print!("{}", render(&estimate));
    }
    Ok(())
}

/// The representative fleet: names, values, buckets, and who changes.
struct Fleet {
    shape: Shape,
    instances: u64,
    counters: u64,
    date: Date,
    names: Vec<String>,
    /// The bucket of every instance.
    buckets: Vec<u64>,
    /// Instances per bucket.
    occupied: [u64; BUCKETS as usize],
    /// Instances whose body changes each period, in upload order.
    changed: Vec<u64>,
    /// How many counters move on a changing instance (the first ones).
    changed_counters: u64,
    /// Instances whose items are built (all of them for small fleets).
    sample: Vec<u64>,
    /// Each counter's sum over each bucket's instances.
    sums: Vec<Vec<i128>>,
}

/// `percent` of `of`, rounded up so that any share above 0 is at least one.
fn share(percent: f64, of: u64) -> u64 {
    // The small tolerance keeps 10% of 100 at 10 despite binary fractions.
    (((percent / 100.0) * of as f64 - 1e-9).ceil().max(0.0) as u64).min(of)
}

impl Fleet {
    fn new(inputs: &Inputs) -> Result<Fleet, CostError> {
        let w = &inputs.workload;
        let shape = inputs.shape.clone();
        if let Some(bytes) = shape.instance_id_bytes {
            let needed = 2 + format!("{:x}", w.instances - 1).len() as u64;
            if bytes < needed {
                return Err(CostError::IdsTooShort {
                    bytes,
                    instances: w.instances,
                    needed,
                });
            }
        }
        if let Some(bytes) = shape.counter_name_bytes {
            let needed = 1 + w.counters.to_string().len() as u64;
            if bytes < needed {
                return Err(CostError::NamesTooShort {
                    bytes,
                    counters: w.counters,
                    needed,
                });
            }
        }
        let date = Date::parse(DATE).map_err(|e| CostError::Item(e.to_string()))?;
        let names = (0..w.counters).map(|c| shape.counter_name(c)).collect();
        let buckets: Vec<u64> = (0..w.instances)
            .map(|i| bucket_of(&shape.instance_id(i)))
            .collect();
        let mut occupied = [0; BUCKETS as usize];
        for &b in &buckets {
            occupied[b as usize] += 1;
        }
        let changed_counters = share(w.changed_counters_percent, w.counters);
        let changing = if changed_counters == 0 {
            0
        } else {
            share(w.changed_instances_percent, w.instances)
        };
        // Spread the changing instances evenly over the fleet.
        let changed = (0..changing)
            .map(|k| k * w.instances / changing.max(1))
            .collect();
        let step = (w.instances * w.counters).div_ceil(SAMPLE_VALUES).max(1);
        let sample = (0..w.instances).step_by(step as usize).collect();
        let mut fleet = Fleet {
            shape,
            instances: w.instances,
            counters: w.counters,
            date,
            names,
            buckets,
            occupied,
            changed,
            changed_counters,
            sample,
            sums: Vec::new(),
        };
        fleet.sums = fleet.bucket_sums();
        Ok(fleet)
    }

    fn value(&self, instance: u64, counter: u64) -> i64 {
        self.shape.value(instance, counter)
    }

    fn occupied_buckets(&self) -> impl Iterator<Item = u64> + '_ {
        (0..BUCKETS).filter(|&b| self.occupied[b as usize] > 0)
    }

    /// Each counter's sum over each bucket's instances: exact when the
    /// fleet is small, otherwise the bucket's size times the sampled mean.
    fn bucket_sums(&self) -> Vec<Vec<i128>> {
        let mut sums = vec![vec![0i128; self.counters as usize]; BUCKETS as usize];
        if self.sample.len() as u64 == self.instances {
            for (i, &b) in self.buckets.iter().enumerate() {
                for (c, sum) in sums[b as usize].iter_mut().enumerate() {
                    *sum += i128::from(self.value(i as u64, c as u64));
                }
            }
        } else {
            let n = self.sample.len() as i128;
            for c in 0..self.counters {
                let mean = self
                    .sample
                    .iter()
                    .map(|&i| i128::from(self.value(i, c)))
                    .sum::<i128>()
                    / n.max(1);
                for (bucket, instances) in sums.iter_mut().zip(self.occupied) {
                    bucket[c as usize] = mean * i128::from(instances);
                }
            }
        }
        sums
    }
}

impl Shape {
    fn instance_id(&self, i: u64) -> String {
        match self.instance_id_bytes {
            // As the measured runs name them (tests/src/seed.rs).
            None => format!("i-{i:03}"),
            Some(bytes) => format!("i-{i:0width$x}", width = bytes as usize - 2),
        }
    }

    fn counter_name(&self, c: u64) -> String {
        match self.counter_name_bytes {
            None => format!("COUNTER{}", c + 1),
            Some(bytes) => format!("C{:0width$}", c + 1, width = bytes as usize - 1),
        }
    }

    fn value(&self, instance: u64, counter: u64) -> i64 {
        let base = 1000 * instance + counter;
        match self.value_digits {
            // As the measured runs upload them (tests/src/seed.rs).
            None => base as i64,
            Some(digits) => {
                // Spread over [10^(d-1), 10^d) so every value has `digits` digits.
                let low = 10u128.pow(digits - 1);
                let span = 9 * low;
                (low + (u128::from(base) * 7919) % span) as i64
            }
        }
    }
}

fn item_bytes<T: Serialize>(item: T) -> Result<usize, CostError> {
    serde_dynamo::to_item::<_, Item>(item)
        .map(|item| capacity::item_size(&item))
        .map_err(|e| CostError::Item(e.to_string()))
}

/// Records per stream batch: what arrives on one shard within the batching
/// window (or one poll), at least one, at most the batch size. `records` is
/// how many arrive on the shard per period, evenly spread (the worst case
/// for batching: uploads aligned to the minute batch better), and `burst`
/// how many arrive together.
fn records_per_batch(records: f64, burst: f64, period: f64, window: f64, size: u64) -> f64 {
    let window = if window > 0.0 {
        window
    } else {
        STREAM_POLL_SECONDS
    };
    // The tolerance keeps 100 records × 60 s / 60 s at 100.
    let gathered = (records * window / period + 1e-9).floor();
    gathered.max(burst).max(1.0).min(size as f64)
}

/// Computes the estimate: tally always, the seed's design when it can hold
/// the fleet.
pub fn estimate(inputs: &Inputs) -> Result<Estimate, CostError> {
    let fleet = Fleet::new(inputs)?;
    let periods = inputs.periods_per_month();
    let ((tally_period, tally_tables, tally_functions), stages) = tally(inputs, &fleet)?;
    let tally = design("tally", inputs, tally_period, tally_tables, tally_functions);
    let (seed, seed_items, seed_infeasible) = match seed(inputs, &fleet)? {
        Ok(((usage, tables, functions), items)) => (
            Some(design("seed", inputs, usage, tables, functions)),
            Some(items),
            None,
        ),
        Err(reason) => (None, None, Some(reason)),
    };
    let uploads_per_month = inputs.workload.instances as f64 * periods;
    let checks = checks(inputs, &fleet, &stages, seed_items.as_ref());
    Ok(Estimate {
        inputs: inputs.clone(),
        periods_per_month: periods,
        assumptions: assumptions(inputs, &stages, seed_items.as_ref()),
        tally,
        tally_stages: stages,
        seed,
        seed_items,
        seed_infeasible,
        seed_reported_per_year_usd: SeedReported {
            lambda_and_dynamodb: SEED_SERVERLESS_PER_YEAR,
            ec2: SEED_EC2_PER_YEAR,
        },
        uploads_per_month,
        uploads_per_month_usd: uploads_per_month / 1000.0 * inputs.prices.s3_put_per_thousand,
        checks,
    })
}

/// A design's units per period: the totals, per table, per function.
type Parts = (Usage, Vec<Table>, Vec<Function>);

fn function(
    name: &'static str,
    invocations: f64,
    memory_mb: u64,
    duration_ms: f64,
    source: &'static str,
) -> Function {
    Function {
        name,
        invocations_per_period: invocations,
        memory_mb,
        duration_ms,
        source,
        gb_seconds_per_period: invocations * duration_ms / 1000.0 * memory_mb as f64 / 1024.0,
    }
}

fn table(name: &'static str, write_units: f64, read_units: f64, inputs: &Inputs) -> Table {
    // Provisioned capacity is per second; a table or index needs at least one unit of each.
    let per_second = |units: f64| {
        let needed = units
            / inputs.workload.period_seconds as f64
            / (inputs.prices.utilization_percent / 100.0);
        ((needed - 1e-9).ceil() as u64).max(1)
    };
    Table {
        name,
        write_units_per_period: write_units,
        read_units_per_period: read_units,
        provisioned_wcu: per_second(write_units),
        provisioned_rcu: per_second(read_units),
    }
}

/// tally's units per period, stage by stage.
fn tally(inputs: &Inputs, fleet: &Fleet) -> Result<(Parts, TallyStages), CostError> {
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

/// The seed's item for one counter, with the given instances' values.
fn seed_item(counter: &str, values: impl Iterator<Item = (String, i64)>) -> Item {
    let map = values
        .map(|(instance, value)| (instance, AttributeValue::N(value.to_string())))
        .collect();
    let mut item = Item::from(std::collections::HashMap::<String, AttributeValue>::new());
    item.insert("Counter".to_owned(), AttributeValue::S(counter.to_owned()));
    item.insert("Date".to_owned(), AttributeValue::S(DATE.to_owned()));
    item.insert("InstanceValues".to_owned(), AttributeValue::M(map));
    item
}

/// The seed's units per period, or why its design cannot hold the fleet.
fn seed(inputs: &Inputs, fleet: &Fleet) -> Result<Result<(Parts, SeedItems), String>, CostError> {
    let w = &inputs.workload;
    let period = w.period_seconds as f64;
    // The map's share of the item, built a chunk of instances at a time:
    // DynamoDB sizes a map as the sum of its entries, so the chunks add up.
    // Sized with the last counter's values; every counter's item holds the
    // same instances.
    let last = w.counters - 1;
    let name = &fleet.names[last as usize];
    let empty = capacity::item_size(&seed_item(name, std::iter::empty()));
    let mut map_bytes = 0usize;
    let mut start = 0;
    while start < w.instances {
        let end = (start + SEED_MAP_CHUNK).min(w.instances);
        let chunk = seed_item(
            name,
            (start..end).map(|i| (fleet.shape.instance_id(i), fleet.value(i, last))),
        );
        map_bytes += capacity::item_size(&chunk) - empty;
        if empty + map_bytes > MAX_ITEM_BYTES {
            // The entries so far average map_bytes / end bytes each.
            let limit = (MAX_ITEM_BYTES - empty) as u64 * end / map_bytes as u64;
            return Ok(Err(format!(
                "the seed's design cannot hold {} instances: its per-counter item, which holds every instance's value, passes DynamoDB's {}-byte item limit at about {} instances with these ids and values (fewer with longer ids: --instance-id-bytes 19 for today's EC2 ids)",
                grouped(w.instances as f64),
                grouped(MAX_ITEM_BYTES as f64),
                grouped(limit as f64)
            )));
        }
        start = end;
    }
    let item_bytes = empty + map_bytes;
    // Every upload updates every counter's item, changed or not, and each
    // update is billed on the whole item.
    let per_upload: u64 = fleet
        .names
        .iter()
        .map(|name| {
            let base = capacity::item_size(&seed_item(name, std::iter::empty()));
            capacity::write_units(base + map_bytes)
        })
        .sum();
    let uploads = w.instances as f64;
    let state_wu = uploads * per_upload as f64;

    // An update that changes nothing emits no stream record; each one that
    // does makes the totals function write that counter's total and DynamoDB
    // its ByDate copy (the index projects the same attributes).
    let records = fleet.changed.len() as f64 * fleet.changed_counters as f64;
    let total_value: i128 = fleet.sums.iter().map(|bucket| bucket[last as usize]).sum();
    let mut total = Item::from(std::collections::HashMap::<String, AttributeValue>::new());
    total.insert("Counter".to_owned(), AttributeValue::S(name.clone()));
    total.insert("Date".to_owned(), AttributeValue::S(DATE.to_owned()));
    total.insert(
        "Value".to_owned(),
        AttributeValue::N(total_value.to_string()),
    );
    let total_wu = capacity::write_units(capacity::item_size(&total));
    let totals_wu = records * total_wu as f64;
    // One shard, no batching window (the seed predates it): batches hold
    // what arrives between two polls.
    let per_batch = records_per_batch(records, 1.0, period, 0.0, inputs.seed.batch_size);
    let batches = if records > 0.0 {
        records / per_batch
    } else {
        0.0
    };

    let functions = vec![
        function(
            "seed ingest",
            uploads,
            inputs.seed.memory_mb,
            inputs.seed.ingest_ms,
            "assumed (the seed's setting: 1536 MB; duration not known here)",
        ),
        function(
            "seed totals",
            batches,
            inputs.seed.memory_mb,
            inputs.seed.aggregate_ms,
            "assumed (the seed's setting: 1536 MB; duration not known here)",
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
        // Every upload is read: the seed does not compare ETags.
        s3_gets: uploads,
        s3_puts: 0.0,
    };
    let items = SeedItems {
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

/// Dollars for one design's units.
fn dollars(inputs: &Inputs, usage: &Usage, tables: &[Table], billing: Billing) -> Dollars {
    let p = &inputs.prices;
    let per_month = usage.scaled(inputs.periods_per_month());
    let dynamodb = match billing {
        Billing::OnDemand => {
            per_month.write_units / 1e6 * p.write_per_million
                + per_month.read_units / 1e6 * p.read_per_million
        }
        Billing::Provisioned => {
            tables
                .iter()
                .map(|t| {
                    t.provisioned_wcu as f64 * p.wcu_hour + t.provisioned_rcu as f64 * p.rcu_hour
                })
                .sum::<f64>()
                * HOURS_PER_MONTH
        }
    };
    let lambda = per_month.lambda_invocations / 1e6 * p.lambda_per_million
        + per_month.lambda_gb_seconds * p.gb_second;
    let sns = per_month.sns_publishes / 1e6 * p.sns_per_million;
    let s3 = per_month.s3_gets / 1000.0 * p.s3_get_per_thousand
        + per_month.s3_puts / 1000.0 * p.s3_put_per_thousand;
    Dollars {
        dynamodb,
        lambda,
        sns,
        s3,
        total: dynamodb + lambda + sns + s3,
    }
}

fn design(
    name: &'static str,
    inputs: &Inputs,
    per_period: Usage,
    tables: Vec<Table>,
    functions: Vec<Function>,
) -> DesignCost {
    let chosen = dollars(inputs, &per_period, &tables, inputs.prices.billing);
    let on_demand = dollars(inputs, &per_period, &tables, Billing::OnDemand);
    let provisioned = dollars(inputs, &per_period, &tables, Billing::Provisioned);
    DesignCost {
        design: name,
        per_month: per_period.scaled(inputs.periods_per_month()),
        per_period,
        tables,
        functions,
        per_year_usd: chosen.total * MONTHS_PER_YEAR,
        per_month_usd: chosen,
        per_year_on_demand_usd: on_demand.total * MONTHS_PER_YEAR,
        per_year_provisioned_usd: provisioned.total * MONTHS_PER_YEAR,
    }
}

/// The README's and DESIGN's measured figures, where this workload is the
/// one they were measured at.
fn checks(
    inputs: &Inputs,
    fleet: &Fleet,
    stages: &TallyStages,
    seed: Option<&SeedItems>,
) -> Vec<Check> {
    let w = &inputs.workload;
    let mut checks = Vec::new();
    let measured_fleet =
        w.instances == 100 && w.counters == 100 && inputs.shape == Shape::default();
    if !measured_fleet {
        return checks;
    }
    let mut check = |what: String, measured: f64, computed: f64, source: &'static str| {
        checks.push(Check {
            matches: (measured - computed).abs() < 0.5,
            what,
            measured,
            computed,
            source,
        });
    };
    let everyone = fleet.changed.len() == 100;
    if everyone {
        check(
            "ingest write units per round of 100 uploads".into(),
            200.0,
            stages.ingest_write_units,
            "README: tally demo, round 1 and 3",
        );
    }
    // The README's aggregate table: (records per batch, % changed) → (write, read) units per round.
    const AGGREGATE: [(u64, u64, f64, f64); 6] = [
        (10, 10, 500.0, 740.0),
        (10, 50, 1300.0, 1140.0),
        (10, 100, 2300.0, 1640.0),
        (100, 10, 182.0, 118.0),
        (100, 50, 262.0, 158.0),
        (100, 100, 362.0, 208.0),
    ];
    let one_round = (stages.records_per_batch * stages.aggregate_batches - 100.0).abs() < 1e-6;
    if everyone && inputs.streams.shards == 1 && one_round {
        for (records, percent, wu, ru) in AGGREGATE {
            if (stages.records_per_batch - records as f64).abs() < 1e-9
                && fleet.changed_counters == percent
            {
                check(
                    format!(
                        "aggregate write units per round ({records}-record batches, {percent}% changed)"
                    ),
                    wu,
                    stages.aggregate_write_units,
                    "README: seed_costs example",
                );
                check(
                    format!(
                        "aggregate read units per round ({records}-record batches, {percent}% changed)"
                    ),
                    ru,
                    stages.aggregate_read_units,
                    "README: seed_costs example",
                );
            }
        }
    }
    if stages.rules_batches > 0.0 {
        check(
            "rules read units per batch".into(),
            130.0,
            stages.rules_read_units_per_batch,
            "README: rules_costs example",
        );
        check(
            "rules write units per batch (no alert transition)".into(),
            1.0,
            stages.rules_write_units_per_batch,
            "README: rules_costs example",
        );
    }
    if let Some(seed) = seed {
        let per_minute = 60.0 / w.period_seconds as f64;
        check(
            "seed state write units per minute".into(),
            20_000.0,
            seed.state_write_units * per_minute,
            "DESIGN §7: measured on the seed's design",
        );
        if everyone && fleet.changed_counters == 100 {
            check(
                "seed totals write units per minute, everything changing (+ByDate)".into(),
                20_000.0,
                seed.totals_write_units * per_minute,
                "DESIGN §7: measured on the seed's design",
            );
        }
    }
    checks
}

fn assumptions(inputs: &Inputs, stages: &TallyStages, seed: Option<&SeedItems>) -> Vec<Assumption> {
    let p = &inputs.prices;
    let l = &inputs.lambda;
    let sd = &inputs.seed;
    let s = &inputs.streams;
    let mut list = vec![
        Assumption {
            what: "tally's DynamoDB units",
            value: format!(
                "computed from item sizes by DynamoDB's rules (tally_core::capacity): state item {} B, partial item {} B",
                grouped(stages.state_item_bytes as f64),
                grouped(stages.partial_item_bytes as f64)
            ),
            kind: "computed",
            flag: "--instance-id-bytes, --counter-name-bytes, --value-digits",
        },
        Assumption {
            what: "tally's Lambda memory",
            value: format!(
                "{} MB (DESIGN §7: peak ≤ 48 MB; measured 11–18 MB on the seed's workload: BENCHMARKS.md)",
                l.memory_mb
            ),
            kind: "assumed",
            flag: "--memory-mb",
        },
        Assumption {
            what: "tally's Lambda durations",
            value: format!(
                "ingest {} ms per upload, aggregate {} ms and rules {} ms per batch (measured only against a local emulator, whose calls are slower than DynamoDB's: BENCHMARKS.md)",
                l.ingest_ms, l.aggregate_ms, l.rules_ms
            ),
            kind: "assumed",
            flag: "--ingest-ms, --aggregate-ms, --rules-ms",
        },
        Assumption {
            what: "tally's stream batching",
            value: format!(
                "batches of up to {} records, {} s window, {} shard(s); uploads spread evenly over the period (the worst case for batching)",
                s.batch_size, s.batch_window_seconds, s.shards
            ),
            kind: "assumed",
            flag: "--batch-size, --batch-window, --shards",
        },
        Assumption {
            what: "rules stage extras",
            value: "the day's alert records fit one read unit (the shipped rules); alert messages (one per transition) are too few to count".into(),
            kind: "measured",
            flag: "",
        },
        Assumption {
            what: "the seed's design",
            value: "one item per (Counter, Date) with every instance's value, updated for every counter on every upload; a totals write (+ByDate copy) per changed item's stream record; S3 invokes its function directly; no reads billed".into(),
            kind: "assumed",
            flag: "",
        },
        Assumption {
            what: "the seed's Lambda",
            value: format!(
                "{} MB; {} ms per upload, {} ms per stream batch of up to {} records (no batching window)",
                sd.memory_mb, sd.ingest_ms, sd.aggregate_ms, sd.batch_size
            ),
            kind: "assumed",
            flag: "--seed-memory-mb, --seed-ingest-ms, --seed-aggregate-ms, --seed-batch-size",
        },
        Assumption {
            what: "prices",
            value: format!(
                "{}: DynamoDB ${}/M write and ${}/M read request units; provisioned ${}/WCU-h and ${}/RCU-h at {}% utilization; Lambda ${}/GB-s and ${}/M requests; SNS ${}/M publishes; S3 ${}/1,000 GET or HEAD and ${}/1,000 PUT",
                p.taken,
                p.write_per_million,
                p.read_per_million,
                p.wcu_hour,
                p.rcu_hour,
                p.utilization_percent,
                p.gb_second,
                p.lambda_per_million,
                p.sns_per_million,
                p.s3_get_per_thousand,
                p.s3_put_per_thousand
            ),
            kind: "price",
            flag: "--billing, --write-price, --read-price, --wcu-hour-price, --rcu-hour-price, --utilization, --gb-second-price, --lambda-request-price, --sns-price, --s3-get-price, --s3-put-price",
        },
        Assumption {
            what: "not counted",
            value: "free tiers; storage (a day of state is a few hundred KB at the seed's fleet); DynamoDB Streams reads by Lambda (free); SNS deliveries to Lambda (free); data transfer within the region (free); cold starts; retries".into(),
            kind: "convention",
            flag: "",
        },
        Assumption {
            what: "month and year",
            value: format!("a month is {HOURS_PER_MONTH} hours (AWS's convention), a year 12 months"),
            kind: "convention",
            flag: "",
        },
    ];
    if let Some(seed) = seed {
        list.insert(
            5,
            Assumption {
                what: "the seed's DynamoDB units",
                value: format!(
                    "computed from its item: {} B at {} instances (it grows with the fleet), {} write units per upload",
                    grouped(seed.item_bytes as f64),
                    grouped(inputs.workload.instances as f64),
                    seed.write_units_per_upload
                ),
                kind: "computed",
                flag: "",
            },
        );
    }
    list
}

fn grouped(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn usd(value: f64) -> String {
    let cents = (value * 100.0).round();
    format!(
        "${}.{:02}",
        grouped((cents / 100.0).trunc()),
        (cents % 100.0).abs() as u64
    )
}

/// Units with one decimal when they are fractional (batches per period).
fn amount(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        grouped(value)
    } else {
        format!("{value:.1}")
    }
}

/// Width the report's prose is wrapped to.
const WIDTH: usize = 100;

/// Appends `text` wrapped at [`WIDTH`]: the first line after `first`, the
/// others indented to line up under it.
fn wrap(out: &mut String, first: &str, text: &str) {
    let indent = " ".repeat(first.chars().count());
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// "1 batch", "2.5 batches".
fn count(value: f64, noun: &str) -> String {
    let plural = if (value - 1.0).abs() < 1e-9 { "" } else { "es" };
    format!("{} {noun}{plural}", amount(value))
}

/// The estimate as a person reads it.
pub fn render(e: &Estimate) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &e.inputs.workload;
    let t = &e.tally;
    let st = &e.tally_stages;
    let billing = match e.inputs.prices.billing {
        Billing::OnDemand => "on-demand",
        Billing::Provisioned => "provisioned",
    };
    // Writing to a String cannot fail, so the results of writeln! are ignored.
    let _ = writeln!(
        out,
        "tally cost: {} instances × {} counters every {} s; {}% of the counters move on {}% of the instances",
        grouped(w.instances as f64),
        grouped(w.counters as f64),
        w.period_seconds,
        w.changed_counters_percent,
        w.changed_instances_percent
    );
    let _ = writeln!(
        out,
        "DynamoDB billed {billing}; a month is {HOURS_PER_MONTH} h ({} upload periods)\n",
        grouped(e.periods_per_month)
    );
    let seed_cell = |f: &dyn Fn(&DesignCost) -> String| {
        e.seed.as_ref().map_or_else(|| "cannot run".to_owned(), f)
    };
    let _ = writeln!(
        out,
        "{:<28}{:>18}{:>22}",
        "per month", "tally", "seed (per counter)"
    );
    type Cell = Box<dyn Fn(&DesignCost) -> String>;
    let rows: Vec<(&str, Cell)> = vec![
        ("uploads", Box::new(|d| grouped(d.per_month.uploads))),
        (
            "DynamoDB write units",
            Box::new(|d| grouped(d.per_month.write_units)),
        ),
        (
            "DynamoDB read units",
            Box::new(|d| grouped(d.per_month.read_units)),
        ),
        (
            "Lambda invocations",
            Box::new(|d| grouped(d.per_month.lambda_invocations)),
        ),
        (
            "Lambda GB-seconds",
            Box::new(|d| grouped(d.per_month.lambda_gb_seconds)),
        ),
        (
            "SNS publishes",
            Box::new(|d| grouped(d.per_month.sns_publishes)),
        ),
        (
            "S3 GET and HEAD requests",
            Box::new(|d| grouped(d.per_month.s3_gets)),
        ),
        (
            "S3 PUT requests",
            Box::new(|d| grouped(d.per_month.s3_puts)),
        ),
        ("DynamoDB", Box::new(|d| usd(d.per_month_usd.dynamodb))),
        ("Lambda", Box::new(|d| usd(d.per_month_usd.lambda))),
        (
            "SNS and S3",
            Box::new(|d| usd(d.per_month_usd.sns + d.per_month_usd.s3)),
        ),
        ("total per month", Box::new(|d| usd(d.per_month_usd.total))),
        ("total per year", Box::new(|d| usd(d.per_year_usd))),
    ];
    for (label, cell) in &rows {
        if *label == "DynamoDB" {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{label:<28}{:>18}{:>22}",
            cell(t),
            seed_cell(cell.as_ref())
        );
    }

    let _ = writeln!(
        out,
        "\nWhere the units come from, per {} s period:",
        w.period_seconds
    );
    wrap(
        &mut out,
        "  tally ingest     ",
        &format!(
            "{} uploads, one invocation each. {} changed: {} WU each (a {} B state item, one conditional write) = {} WU. {} RU (one consistent read per upload). {} identical re-uploads write nothing.",
            grouped(w.instances as f64),
            grouped(st.changed_uploads as f64),
            amount(st.ingest_write_units_per_upload),
            grouped(st.state_item_bytes as f64),
            amount(st.ingest_write_units),
            amount(st.ingest_read_units),
            grouped(st.identical_uploads as f64)
        ),
    );
    wrap(
        &mut out,
        "  tally aggregate  ",
        &format!(
            "{} of {} records: {} partial writes = {} WU (a {} B item; {} of the 64 buckets hold instances), {} total writes with their ByDate copies = {} WU. In all {} WU, {} RU.",
            count(st.aggregate_batches, "batch"),
            amount(st.records_per_batch),
            amount(st.partial_writes),
            amount(st.partial_write_units),
            grouped(st.partial_item_bytes as f64),
            st.occupied_buckets,
            amount(st.total_writes),
            amount(st.total_write_units),
            amount(st.aggregate_write_units),
            amount(st.aggregate_read_units)
        ),
    );
    wrap(
        &mut out,
        "  tally rules      ",
        &format!(
            "{}, each {} RU (64 partials read twice, the day's mark, the alert records), {} WU (the mark) and {SNAPSHOT_PUTS} snapshot PUTs.",
            count(st.rules_batches, "batch"),
            amount(st.rules_read_units_per_batch),
            amount(st.rules_write_units_per_batch),
        ),
    );
    match (&e.seed_items, &e.seed_infeasible) {
        (Some(seed), _) => {
            wrap(
                &mut out,
                "  seed state       ",
                &format!(
                    "{} uploads, one invocation each, each updating {} counter items: {} WU per upload (a {} B item holding every instance's value: it grows with the fleet) = {} WU, changed or not.",
                    grouped(w.instances as f64),
                    grouped(w.counters as f64),
                    grouped(seed.write_units_per_upload as f64),
                    grouped(seed.item_bytes as f64),
                    grouped(seed.state_write_units)
                ),
            );
            wrap(
                &mut out,
                "  seed totals      ",
                &format!(
                    "{} stream records (items that changed) × {} WU (a total and its ByDate copy) = {} WU; {} records per invocation.",
                    grouped(seed.stream_records),
                    seed.total_write_units_per_record,
                    grouped(seed.totals_write_units),
                    amount(seed.records_per_batch)
                ),
            );
        }
        (None, Some(reason)) => wrap(&mut out, "  seed             ", reason),
        (None, None) => {}
    }
    if !e.checks.is_empty() {
        let _ = writeln!(
            out,
            "\nMeasured figures at this workload (README, DESIGN §7):"
        );
        for c in &e.checks {
            wrap(
                &mut out,
                "  ",
                &format!(
                    "{}: measured {}, computed {}: {} ({}).",
                    c.what,
                    grouped(c.measured),
                    amount(c.computed),
                    if c.matches { "matches" } else { "DIFFERS" },
                    c.source
                ),
            );
        }
    }

    let _ = writeln!(out, "\nPer year, under each DynamoDB billing mode:");
    let _ = writeln!(out, "{:<28}{:>18}{:>22}", "", "on-demand", "provisioned");
    let _ = writeln!(
        out,
        "{:<28}{:>18}{:>22}",
        "tally",
        usd(t.per_year_on_demand_usd),
        usd(t.per_year_provisioned_usd)
    );
    let _ = writeln!(
        out,
        "{:<28}{:>18}{:>22}",
        "seed (as modelled here)",
        seed_cell(&|d: &DesignCost| usd(d.per_year_on_demand_usd)),
        seed_cell(&|d: &DesignCost| usd(d.per_year_provisioned_usd))
    );
    wrap(
        &mut out,
        "  ",
        &format!(
            "The seed's own figures: {} a year on Lambda + DynamoDB, {} on EC2.",
            usd(SEED_SERVERLESS_PER_YEAR),
            usd(SEED_EC2_PER_YEAR)
        ),
    );
    if let Some(seed) = &e.seed {
        wrap(
            &mut out,
            "  ",
            &format!(
                "Modelled here, the seed's design costs {} a year with provisioned capacity ({:+.0}% from its {}) and {} on today's on-demand prices. Its figure fits provisioned capacity: DynamoDB had no on-demand mode until November 2018, and on-demand writes alone would cost more than it. The rest of the gap is what is not known here: the seed's Lambda durations (--seed-ingest-ms, --seed-aggregate-ms) and how it sized its tables (--utilization).",
                usd(seed.per_year_provisioned_usd),
                (seed.per_year_provisioned_usd / SEED_SERVERLESS_PER_YEAR - 1.0) * 100.0,
                usd(SEED_SERVERLESS_PER_YEAR),
                usd(seed.per_year_on_demand_usd)
            ),
        );
    }
    wrap(
        &mut out,
        "  ",
        &format!(
            "Not in either total: the instances' own uploads, {} S3 PUTs a month ({}), the same for every design.",
            grouped(e.uploads_per_month),
            usd(e.uploads_per_month_usd)
        ),
    );

    let _ = writeln!(
        out,
        "\nAssumptions (what kind; the flags that change them):"
    );
    for a in &e.assumptions {
        let flag = if a.flag.is_empty() {
            String::new()
        } else {
            format!("; {}", a.flag)
        };
        wrap(
            &mut out,
            "  - ",
            &format!("{}: {} ({}{flag})", a.what, a.value, a.kind),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `tally cost` as the command line parses it.
    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: CostArgs,
    }

    fn parse(args: &[&str]) -> Result<Inputs, clap::Error> {
        let args = std::iter::once("cost").chain(args.iter().copied());
        Command::try_parse_from(args).map(|c| Inputs::from(&c.args))
    }

    #[test]
    fn the_defaults_are_the_seed_workload() {
        assert_eq!(parse(&[]).ok(), Some(Inputs::seed_workload()));
        let inputs = parse(&[
            "--instances",
            "1000",
            "--billing",
            "provisioned",
            "--changed-counters",
            "10%",
        ]);
        let inputs = inputs.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inputs.workload.instances, 1000);
        assert_eq!(inputs.workload.changed_counters_percent, 10.0);
        assert_eq!(inputs.prices.billing, Billing::Provisioned);
        assert!(parse(&["--instances", "0"]).is_err());
        assert!(parse(&["--batch-window", "301"]).is_err());
    }

    fn with(change: impl FnOnce(&mut Inputs)) -> Estimate {
        let mut inputs = Inputs::seed_workload();
        change(&mut inputs);
        match estimate(&inputs) {
            Ok(e) => e,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_seed_workload_reproduces_every_measured_figure() {
        let e = with(|_| {});
        assert!(e.checks.len() >= 7, "{:?}", e.checks);
        for check in &e.checks {
            assert!(check.matches, "{check:?}");
        }
        // README: 100 uploads × 2 write units.
        assert_eq!(e.tally_stages.ingest_write_units, 200.0);
        assert_eq!(e.tally_stages.ingest_write_units_per_upload, 2.0);
        assert_eq!(e.tally_stages.aggregate_write_units, 362.0);
        assert_eq!(e.tally_stages.aggregate_read_units, 208.0);
        assert_eq!(e.tally_stages.rules_read_units_per_batch, 130.0);
        assert_eq!(e.tally_stages.occupied_buckets, 54);
    }

    #[test]
    fn smaller_changes_and_batches_match_the_readme_table() {
        for (size, percent, wu, ru) in [
            (10, 10.0, 500.0, 740.0),
            (10, 50.0, 1300.0, 1140.0),
            (10, 100.0, 2300.0, 1640.0),
            (100, 10.0, 182.0, 118.0),
            (100, 50.0, 262.0, 158.0),
        ] {
            let e = with(|i| {
                i.streams.batch_size = size;
                i.workload.changed_counters_percent = percent;
            });
            assert_eq!(e.tally_stages.aggregate_write_units, wu, "{size} {percent}");
            assert_eq!(e.tally_stages.aggregate_read_units, ru, "{size} {percent}");
            assert!(e.checks.iter().all(|c| c.matches), "{:?}", e.checks);
        }
    }

    #[test]
    fn an_identical_round_costs_reads_only() {
        let e = with(|i| i.workload.changed_counters_percent = 0.0);
        let s = &e.tally_stages;
        assert_eq!(s.ingest_write_units, 0.0);
        assert_eq!(s.ingest_read_units, 100.0);
        assert_eq!(s.identical_uploads, 100);
        assert_eq!(s.aggregate_batches, 0.0);
        assert_eq!(s.rules_batches, 0.0);
        assert_eq!(e.tally.per_period.write_units, 0.0);
        assert_eq!(e.tally.per_period.s3_gets, 0.0);
        // The seed writes every counter's item anyway.
        let seed = e.seed_items.as_ref().map(|s| s.state_write_units);
        assert_eq!(seed, Some(20_000.0));
    }

    #[test]
    fn doubling_the_fleet_doubles_the_seeds_item_and_not_tallys() {
        let small = with(|_| {});
        let large = with(|i| i.workload.instances = 200);
        let (Some(a), Some(b)) = (&small.seed_items, &large.seed_items) else {
            panic!("the seed holds 200 instances");
        };
        // The map of instance values is nearly all of the item.
        let ratio = b.item_bytes as f64 / a.item_bytes as f64;
        assert!(
            (1.9..2.1).contains(&ratio),
            "{} → {}",
            a.item_bytes,
            b.item_bytes
        );
        // The same body; only the measured runs' values (1000 × instance +
        // counter) gain a digit on the new instances.
        let (x, y) = (
            small.tally_stages.state_item_bytes,
            large.tally_stages.state_item_bytes,
        );
        assert!(y.abs_diff(x) * 100 < x, "{x} → {y}");
        assert_eq!(
            small.tally_stages.ingest_write_units_per_upload,
            large.tally_stages.ingest_write_units_per_upload
        );
    }

    #[test]
    fn tally_costs_less_than_the_seed_in_both_billing_modes() {
        let e = with(|_| {});
        let Some(seed) = &e.seed else {
            panic!("the seed holds 100 instances");
        };
        assert!(e.tally.per_year_usd < seed.per_year_usd);
        assert!(e.tally.per_year_on_demand_usd < seed.per_year_on_demand_usd);
        assert!(e.tally.per_year_provisioned_usd < seed.per_year_provisioned_usd);
        // DESIGN §7: 20,000 + 20,000 write units a minute.
        assert_eq!(seed.per_period.write_units, 40_000.0);
    }

    #[test]
    fn the_seeds_provisioned_figure_is_near_its_own() {
        let e = with(|_| {});
        let Some(seed) = &e.seed else {
            panic!("the seed holds 100 instances");
        };
        let off = seed.per_year_provisioned_usd / SEED_SERVERLESS_PER_YEAR - 1.0;
        assert!(off.abs() < 0.15, "{}", seed.per_year_provisioned_usd);
    }

    #[test]
    fn a_year_is_twelve_months_and_a_month_730_hours() {
        let e = with(|_| {});
        assert!((e.tally.per_year_usd - 12.0 * e.tally.per_month_usd.total).abs() < 1e-9);
        assert_eq!(e.periods_per_month, 43_800.0);
        assert_eq!(e.tally.per_month.uploads, 4_380_000.0);
    }

    #[test]
    fn no_batching_window_means_more_batches_and_more_writes() {
        let windowed = with(|_| {});
        let eager = with(|i| i.streams.batch_window_seconds = 0.0);
        assert_eq!(windowed.tally_stages.aggregate_batches, 1.0);
        // 100 records a minute, polled four times a second: one per batch.
        assert_eq!(eager.tally_stages.aggregate_batches, 100.0);
        assert!(
            eager.tally_stages.aggregate_write_units > windowed.tally_stages.aggregate_write_units
        );
    }

    #[test]
    fn a_window_longer_than_the_period_merges_rounds() {
        let e = with(|i| {
            i.streams.batch_window_seconds = 120.0;
            i.streams.batch_size = 1000;
        });
        assert_eq!(e.tally_stages.aggregate_batches, 0.5);
        assert_eq!(e.tally_stages.aggregate_write_units, 181.0);
    }

    #[test]
    fn provisioned_tables_get_at_least_one_unit() {
        let e = with(|i| i.prices.billing = Billing::Provisioned);
        assert!(
            e.tally
                .tables
                .iter()
                .all(|t| t.provisioned_wcu >= 1 && t.provisioned_rcu >= 1)
        );
        let state = &e.tally.tables[0];
        // 200 write units a minute is 3.3 a second.
        assert_eq!(state.provisioned_wcu, 4);
        assert!(
            (e.tally.per_month_usd.dynamodb - 6.643).abs() < 0.01,
            "{}",
            e.tally.per_month_usd.dynamodb
        );
    }

    #[test]
    fn a_fleet_past_the_seeds_item_limit_leaves_only_tally() {
        let e = with(|i| i.workload.instances = 100_000);
        assert!(e.seed.is_none());
        let reason = e.seed_infeasible.clone().unwrap_or_default();
        assert!(reason.contains("item limit"), "{reason}");
        // Tally's per-upload write stays at one body's size.
        assert_eq!(e.tally_stages.ingest_write_units_per_upload, 2.0);
        assert_eq!(e.tally_stages.occupied_buckets, 64);
        assert!(render(&e).contains("cannot run"));
    }

    #[test]
    fn longer_ids_grow_the_seeds_item_and_are_checked() {
        let e = with(|i| i.shape.instance_id_bytes = Some(19));
        let Some(seed) = &e.seed_items else {
            panic!("the seed holds 100 instances");
        };
        assert_eq!(seed.write_units_per_upload, 300);
        let short = estimate(&Inputs {
            shape: Shape {
                instance_id_bytes: Some(3),
                ..Shape::default()
            },
            ..Inputs::seed_workload()
        });
        assert!(matches!(
            short,
            Err(CostError::IdsTooShort { needed: 4, .. })
        ));
    }

    #[test]
    fn too_many_counters_for_one_item_is_an_error_that_says_what_to_do() {
        let result = estimate(&Inputs {
            workload: Workload {
                instances: 1,
                counters: 30_000,
                ..Inputs::seed_workload().workload
            },
            ..Inputs::seed_workload()
        });
        let Err(error) = result else {
            panic!("30,000 counters do not fit one item");
        };
        assert!(matches!(error, CostError::ItemTooLarge { .. }));
        assert!(error.to_string().contains("fewer --counters"), "{error}");
    }

    #[test]
    fn the_report_names_every_assumption_kind_and_the_seeds_figures() {
        // Compare words, not line breaks: the prose is wrapped.
        let text = render(&with(|_| {}))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for needle in [
            "total per year",
            "$4,471.00 a year on Lambda + DynamoDB",
            "$701.00 on EC2",
            "assumed",
            "measured 362, computed 362: matches",
            "--ingest-ms",
            "2025",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    #[test]
    fn numbers_are_grouped_and_dollars_have_cents() {
        assert_eq!(grouped(1_752_000_000.0), "1,752,000,000");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(usd(1234.567), "$1,234.57");
        assert_eq!(usd(0.004), "$0.00");
        assert_eq!(share(10.0, 100), 10);
        assert_eq!(share(0.5, 100), 1);
        assert_eq!(share(0.0, 100), 0);
    }

    #[test]
    fn bad_flag_values_say_what_to_give() {
        assert!(parse_percent("120").unwrap_err().contains("0 to 100"));
        assert!(parse_price("-1").unwrap_err().contains("such as"));
        assert!(parse_window("400").unwrap_err().contains("300"));
        assert!(parse_duration_ms("0").unwrap_err().contains("1 to 900000"));
        assert_eq!(parse_percent("10%"), Ok(10.0));
        assert_eq!(parse_price("$0.5"), Ok(0.5));
    }
}
