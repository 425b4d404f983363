//! What the rules stage's clock costs: one tick every `--tick` seconds (the
//! template's `TickSchedule`, one a minute), on top of the stages the
//! uploads drive ([`super::tally_model`]), whatever the fleet uploads.
//!
//! Per tick (`rules/src/invocation.rs`, `RulesStage::tick`), for each date
//! it alerts on (`--alert-days`, the stage's `TALLY_ALERT_DAYS`: today and
//! yesterday):
//!
//! - the isolated read of the day's 64 partial items (each read twice,
//!   strongly consistent, billed on each item's size as the stage counts
//!   it), the day's mark and the query of its alert records: what a rules
//!   batch reads, built from the same items ([`TallyStages::rules_read_units_per_batch`]);
//!   a tick on totals already claimed writes nothing;
//! - the listing of the uploads for stale instances: `ListObjectsV2`
//!   returns at most 1,000 keys a page, so ⌈instances / 1,000⌉ requests
//!   for today's prefix, and as many again for yesterday's during the
//!   first `forget_after` hours of the day (`--forget-after-hours`, 6),
//!   while yesterday's instances can still count as stale; S3 bills a LIST
//!   as a PUT. The state-table reads of instances that look stale (a
//!   tombstone check each) are left out: a handful, and only while some
//!   are stale;
//!
//! and once per tick: the Scheduler invocation, the Lambda request and its
//! compute (`--tick-ms` × `--memory-mb`), and the log bytes (the tick's
//! metrics line, measured by rendering it, and its report line). The two
//! metrics only a tick emits (`Heartbeat`, `NewestUploadAge`) and their
//! two alarms are billed by the month whatever the tick rate.

use serde::Serialize;
use tally_rules::RulesReport;
use tally_rules::invocation::TickReport;

use super::inputs::Inputs;
use super::prices::{HOURS_PER_MONTH, MONTHS_PER_YEAR};
use super::tally_model::TallyStages;

/// Keys `ListObjectsV2` returns at most per request.
pub const KEYS_PER_LIST_PAGE: u64 = 1000;

/// The custom metrics only a tick emits, and the alarms on them.
pub const TICK_METRICS: u64 = 2;
pub const TICK_ALARMS: u64 = 2;

/// What the JSON log line around a tick's report adds to it (timestamp,
/// level, target, message, the request id): counted, not measured on AWS.
const LOG_ENVELOPE_BYTES: usize = 200;

/// A gigabyte as CloudWatch Logs bills it.
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A deployed function's name as the metrics line carries it.
const FUNCTION_NAME: &str = "tally-RulesFunction-0123456789AB";

/// The ticks' figures, per tick and per year.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TickCost {
    pub tick_seconds: u64,
    pub ticks_per_year: f64,
    pub dates_per_tick: u64,
    pub read_units_per_tick: f64,
    pub list_requests_per_tick: f64,
    pub log_bytes_per_tick: u64,
    pub gb_seconds_per_tick: f64,
    pub per_year_usd: TickDollars,
}

/// Dollars per year, by service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickDollars {
    pub dynamodb: f64,
    pub s3_list: f64,
    pub lambda: f64,
    pub scheduler: f64,
    pub logs: f64,
    pub metrics_and_alarms: f64,
    pub total: f64,
}

/// The bytes a tick logs: its metrics line and its report line.
fn log_bytes() -> u64 {
    let report = TickReport {
        rules: RulesReport {
            ticks: 1,
            dates: 2,
            alerts_checked: 20,
            read_units: 260,
            newest_upload_age_seconds: Some(42),
            ..RulesReport::default()
        },
        heartbeat: 1,
    };
    let metrics = tally_aws::metrics::line(
        tally_aws::metrics::Stage::Tick,
        FUNCTION_NAME,
        &report,
        1_447_632_000_000,
    )
    .map_or(0, |line| line.len() + 1);
    // The report is logged as a JSON string inside the log's JSON: its
    // quotes are escaped.
    let logged = serde_json::to_string(&report)
        .map(|json| serde_json::to_string(&json).map_or(0, |s| s.len()))
        .unwrap_or(0);
    (metrics + logged + LOG_ENVELOPE_BYTES) as u64
}

/// What the ticks cost at these inputs.
pub fn ticks(inputs: &Inputs, stages: &TallyStages) -> TickCost {
    let t = &inputs.ticks;
    let p = &inputs.prices;
    let ticks_per_year = HOURS_PER_MONTH * MONTHS_PER_YEAR * 3600.0 / t.tick_seconds as f64;
    let read_units = t.alert_days as f64 * stages.rules_read_units_per_batch;
    let pages = inputs.workload.instances.div_ceil(KEYS_PER_LIST_PAGE) as f64;
    // Yesterday's prefix is listed too during the first forget_after hours.
    let lists = pages * (1.0 + t.forget_after_hours.min(24.0) / 24.0);
    let log_bytes = log_bytes();
    let gb_seconds = t.tick_ms / 1000.0 * inputs.lambda.memory_mb as f64 / 1024.0;
    let dynamodb = ticks_per_year * read_units / 1e6 * p.read_per_million;
    let s3_list = ticks_per_year * lists / 1000.0 * p.s3_put_per_thousand;
    let lambda = ticks_per_year * (gb_seconds * p.gb_second + p.lambda_per_million / 1e6);
    let scheduler = ticks_per_year / 1e6 * p.scheduler_per_million;
    let logs = ticks_per_year * log_bytes as f64 / GIB * p.logs_per_gb;
    let metrics_and_alarms = MONTHS_PER_YEAR
        * (TICK_METRICS as f64 * p.metric_month + TICK_ALARMS as f64 * p.alarm_month);
    TickCost {
        tick_seconds: t.tick_seconds,
        ticks_per_year,
        dates_per_tick: t.alert_days,
        read_units_per_tick: read_units,
        list_requests_per_tick: lists,
        log_bytes_per_tick: log_bytes,
        gb_seconds_per_tick: gb_seconds,
        per_year_usd: TickDollars {
            dynamodb,
            s3_list,
            lambda,
            scheduler,
            logs,
            metrics_and_alarms,
            total: dynamodb + s3_list + lambda + scheduler + logs + metrics_and_alarms,
        },
    }
}
