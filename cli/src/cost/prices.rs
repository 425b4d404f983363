//! The price list: every dollar figure the command prints is some usage
//! times one of these prices, so they live in one table, with their
//! defaults written once (as the flags' defaults) and the date they were
//! taken. A price change is an edit here and nowhere else.

use serde::Serialize;

use super::parse::{parse_price, parse_utilization};

/// Hours AWS's pricing pages and calculator count in a month.
pub const HOURS_PER_MONTH: f64 = 730.0;
pub const MONTHS_PER_YEAR: f64 = 12.0;

/// The price list the defaults come from, and when.
const TAKEN: &str = "us-east-1 list prices as published in 2025 (DynamoDB on-demand after its 1 Nov 2024 cut; Lambda x86)";

/// What each billed request or unit costs, in USD.
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[command(next_help_heading = "Prices (USD; defaults: us-east-1 list prices, 2025)")]
pub struct Prices {
    #[arg(skip = TAKEN)]
    pub taken: &'static str,
    /// How DynamoDB bills throughput.
    #[arg(long, value_enum, default_value_t = Billing::OnDemand)]
    pub billing: Billing,
    /// On-demand: dollars per million write request units.
    #[arg(long = "write-price", value_name = "USD", default_value_t = 0.625, value_parser = parse_price)]
    pub write_per_million: f64,
    /// On-demand: dollars per million read request units.
    #[arg(long = "read-price", value_name = "USD", default_value_t = 0.125, value_parser = parse_price)]
    pub read_per_million: f64,
    /// Provisioned: dollars per write capacity unit-hour.
    #[arg(long = "wcu-hour-price", value_name = "USD", default_value_t = 0.00065, value_parser = parse_price)]
    pub wcu_hour: f64,
    /// Provisioned: dollars per read capacity unit-hour.
    #[arg(long = "rcu-hour-price", value_name = "USD", default_value_t = 0.00013, value_parser = parse_price)]
    pub rcu_hour: f64,
    /// Provisioned: the share of provisioned capacity the average load uses
    /// (100 sizes tables to the average rate exactly: a lower bound).
    #[arg(long = "utilization", value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_utilization)]
    pub utilization_percent: f64,
    /// Lambda: dollars per GB-second.
    #[arg(long = "gb-second-price", value_name = "USD", default_value_t = 0.000_016_666_7, value_parser = parse_price)]
    pub gb_second: f64,
    /// Lambda: dollars per million invocations.
    #[arg(long = "lambda-request-price", value_name = "USD", default_value_t = 0.20, value_parser = parse_price)]
    pub lambda_per_million: f64,
    /// SNS: dollars per million publishes (S3's event notifications).
    #[arg(long = "sns-price", value_name = "USD", default_value_t = 0.50, value_parser = parse_price)]
    pub sns_per_million: f64,
    /// S3: dollars per thousand GET or HEAD requests.
    #[arg(long = "s3-get-price", value_name = "USD", default_value_t = 0.0004, value_parser = parse_price)]
    pub s3_get_per_thousand: f64,
    /// S3: dollars per thousand PUT requests (and LIST requests, billed alike).
    #[arg(long = "s3-put-price", value_name = "USD", default_value_t = 0.005, value_parser = parse_price)]
    pub s3_put_per_thousand: f64,
    /// EventBridge Scheduler: dollars per million invocations (the first 14
    /// million a month are free; not counted here).
    #[arg(long = "scheduler-price", value_name = "USD", default_value_t = 1.00, value_parser = parse_price)]
    pub scheduler_per_million: f64,
    /// CloudWatch Logs: dollars per GB ingested.
    #[arg(long = "logs-price", value_name = "USD", default_value_t = 0.50, value_parser = parse_price)]
    pub logs_per_gb: f64,
    /// CloudWatch: dollars per custom metric per month.
    #[arg(long = "metric-price", value_name = "USD", default_value_t = 0.30, value_parser = parse_price)]
    pub metric_month: f64,
    /// CloudWatch: dollars per standard alarm per month.
    #[arg(long = "alarm-price", value_name = "USD", default_value_t = 0.10, value_parser = parse_price)]
    pub alarm_month: f64,
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
