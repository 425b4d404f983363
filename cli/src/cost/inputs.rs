//! What an estimate depends on, as the command line gives it: the
//! workload, the items' shape, the stream batching, the Lambda settings of
//! both designs and the prices. These structs are both the flags (clap
//! reads them) and the model's inputs (the JSON output echoes them), so a
//! new input is one field with its flag, default and check, not a flag
//! plus a copy.

use serde::Serialize;

use super::parse::{parse_duration_ms, parse_hours, parse_percent, parse_window};
use super::prices::{HOURS_PER_MONTH, Prices};

/// Everything the estimate depends on, validated.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct Inputs {
    #[command(flatten)]
    pub workload: Workload,
    #[command(flatten)]
    pub shape: Shape,
    #[command(flatten)]
    pub streams: Streams,
    #[command(flatten)]
    pub lambda: Lambdas,
    /// The per-counter design's functions (`seed` in the JSON, as before).
    #[command(flatten)]
    #[serde(rename = "seed")]
    pub per_counter: PerCounterLambdas,
    #[command(flatten)]
    pub ticks: Ticks,
    #[command(flatten)]
    pub prices: Prices,
}

impl Inputs {
    pub fn periods_per_month(&self) -> f64 {
        HOURS_PER_MONTH * 3600.0 / self.workload.period_seconds as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "Workload")]
pub struct Workload {
    /// Instances uploading.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub instances: u64,
    /// Counters each instance reports.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub counters: u64,
    /// Seconds between one instance's uploads.
    #[arg(long = "period", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub period_seconds: u64,
    /// Percentage of the counters whose value moves each period (the same
    /// counters on every changing instance, as in the rounds of docs/design.md §5).
    #[arg(long = "changed-counters", value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_percent)]
    pub changed_counters_percent: f64,
    /// Percentage of the instances whose body changes each period; the
    /// others re-upload an identical body.
    #[arg(long = "changed-instances", value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_percent)]
    pub changed_instances_percent: f64,
}

/// How names and values are built; `None` is the measured runs' shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "Item shape (default: as in the measured runs)")]
pub struct Shape {
    /// Bytes of an instance id (`i-` and hex; today's EC2 ids are 19).
    /// Default: i-000, i-001, … as the measured runs name them.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(3..=255))]
    pub instance_id_bytes: Option<u64>,
    /// Bytes of a counter name (`C` and digits). Default: COUNTER1, COUNTER2, …
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(2..=255))]
    pub counter_name_bytes: Option<u64>,
    /// Decimal digits of each value. Default: 1000 × instance + counter, as
    /// the measured runs upload.
    #[arg(long, value_name = "DIGITS", value_parser = clap::value_parser!(u32).range(1..=18))]
    pub value_digits: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "Stream batching (tally's aggregate and rules event sources)")]
pub struct Streams {
    /// Most records in one stream batch (the event source's BatchSize).
    #[arg(long, value_name = "RECORDS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Seconds Lambda gathers records before invoking
    /// (MaximumBatchingWindowInSeconds); 0 invokes as records arrive (it
    /// polls four times a second). Reaction time grows with it.
    #[arg(long = "batch-window", value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_window)]
    pub batch_window_seconds: f64,
    /// Shards of each stream (DynamoDB gives a table one per partition; a
    /// batch never mixes shards).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub shards: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "tally's Lambda functions (assumed until measured)")]
pub struct Lambdas {
    /// Memory of each function, MB (BENCHMARKS.md: peak ≤ 48 MB, so 128).
    #[arg(long, value_name = "MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(128..=10_240))]
    pub memory_mb: u64,
    /// Average billed duration of an ingest invocation (one upload), ms.
    #[arg(long, value_name = "MS", default_value_t = 60.0, value_parser = parse_duration_ms)]
    pub ingest_ms: f64,
    /// Average billed duration of an aggregate invocation (one batch), ms.
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = parse_duration_ms)]
    pub aggregate_ms: f64,
    /// Average billed duration of a rules invocation (one batch), ms.
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = parse_duration_ms)]
    pub rules_ms: f64,
}

/// The per-counter design's functions. Its flags keep their `--seed-`
/// prefix: scripts already pass them.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(
    next_help_heading = "The per-counter design tally replaces (assumed: its durations are not known here)"
)]
pub struct PerCounterLambdas {
    /// Memory of the per-counter design's functions, MB (it ran at 1536).
    #[arg(id = "seed_memory_mb", long = "seed-memory-mb", value_name = "MB", default_value_t = 1536, value_parser = clap::value_parser!(u64).range(128..=10_240))]
    pub memory_mb: u64,
    /// Average duration of its per-upload invocation, ms (an S3 GET and one
    /// UpdateItem per counter, at a few ms each).
    #[arg(id = "seed_ingest_ms", long = "seed-ingest-ms", value_name = "MS", default_value_t = 500.0, value_parser = parse_duration_ms)]
    pub ingest_ms: f64,
    /// Average duration of its totals invocation (one stream batch), ms.
    #[arg(id = "seed_aggregate_ms", long = "seed-aggregate-ms", value_name = "MS", default_value_t = 100.0, value_parser = parse_duration_ms)]
    pub aggregate_ms: f64,
    /// Its stream batch size (it had no batching window: Lambda invoked as
    /// records arrived).
    #[arg(id = "seed_batch_size", long = "seed-batch-size", value_name = "RECORDS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
}

/// The rules stage's clock, as the template deploys it.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "The rules stage's ticks")]
pub struct Ticks {
    /// Seconds between ticks (the template's TickSchedule: one a minute).
    #[arg(long = "tick", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub tick_seconds: u64,
    /// Dates a tick evaluates (the rules stage's TALLY_ALERT_DAYS: today and yesterday).
    #[arg(long, value_name = "DAYS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=35))]
    pub alert_days: u64,
    /// Hours into a day during which a tick also lists yesterday's uploads
    /// (a stale rule's forget_after).
    #[arg(long, value_name = "HOURS", default_value_t = 6.0, value_parser = parse_hours)]
    pub forget_after_hours: f64,
    /// A tick's Lambda duration (assumed: it reads what a rules batch reads
    /// and lists the uploads).
    #[arg(long, value_name = "MS", default_value_t = 250.0, value_parser = parse_duration_ms)]
    pub tick_ms: f64,
}
