//! Each function's own figures as CloudWatch metrics, in the Embedded Metric
//! Format (EMF).
//!
//! After each invocation a Lambda `main` passes its stage's report to
//! [`emit`], which prints one JSON line to stdout. Lambda sends stdout to the
//! function's log group and CloudWatch Logs turns the line into metrics:
//! no `cloudwatch:PutMetricData` call, no permission beyond writing the log
//! (which the role has), no latency added to the invocation.
//!
//! Namespace [`NAMESPACE`] (`tally`), one dimension [`DIMENSION`]
//! (`Function`) whose value is the deployed function's name
//! (`AWS_LAMBDA_FUNCTION_NAME`, so two stacks in one account do not mix
//! their figures), or the stage's name outside Lambda. The metrics of each
//! stage, and which fields of its report each one sums, are
//! [`Stage::metrics`]; the aggregate function emits the aggregate stage's
//! per stream batch and [`RECONCILE`]'s per scheduled reconcile, the rules
//! function the rules stage's per stream batch and [`TICK`]'s per tick.
//! `deploy/template.yaml`'s alarms name them (`UploadsRejected`,
//! `RuleErrors`, `ReconcileDrift`, `Heartbeat`, `NewestUploadAge`), and
//! `tests/tests/end_to_end/deploy.rs` checks
//! that every metric an alarm watches is one a function emits, and that
//! every field named here exists in the stage's report.
//!
//! The reports are taken through `serde` (every stage's report is
//! `Serialize`): this crate knows no stage crate, so the mapping from report
//! fields to metrics is data here rather than code in each stage.
//!
//! A metric may be *optional* ([`Metric::optional`]): when its report field
//! is absent or null the line leaves it out, rather than saying 0. An
//! upload age of 0 would read as "an upload this second"; no value is the
//! truth, and the alarm on it says what it does with no value.
//!
//! Few metrics on purpose: CloudWatch bills each metric (name and dimension
//! value) by the month, and these fourteen are the figures an operator acts
//! on; the full report of every invocation is in its log line anyway.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of tally's own metrics.
pub const NAMESPACE: &str = "tally";

/// The one dimension every metric carries.
pub const DIMENSION: &str = "Function";

/// One metric: its name, its unit, and the report fields it sums (a dotted
/// path reaches into a nested object: `capacity.write_units`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub fields: &'static [&'static str],
    /// Left out of the line when its (single) field is absent or null.
    pub optional: bool,
}

const fn count(name: &'static str, fields: &'static [&'static str]) -> Metric {
    Metric {
        name,
        unit: "Count",
        fields,
        optional: false,
    }
}

/// Uploads whose body was accepted (written, or the same counters as
/// stored), uploads rejected whole, and the DynamoDB capacity used.
pub const INGEST: &[Metric] = &[
    count("UploadsAccepted", &["written", "unchanged"]),
    count("UploadsRejected", &["rejected"]),
    count("WriteUnits", &["capacity.write_units"]),
    count("ReadUnits", &["capacity.read_units"]),
];

/// Totals written (changed, or removed when no contributor is left), and
/// the DynamoDB capacity used.
pub const AGGREGATE: &[Metric] = &[
    count("TotalsChanged", &["total_writes"]),
    count("WriteUnits", &["write_units"]),
    count("ReadUnits", &["read_units"]),
];

/// Alert messages published, rules that failed on real totals, and the
/// DynamoDB capacity used.
pub const RULES: &[Metric] = &[
    count("AlertsSent", &["messages_sent"]),
    count("RuleErrors", &["rule_errors"]),
    count("WriteUnits", &["write_units"]),
    count("ReadUnits", &["read_units"]),
];

/// What the scheduled reconcile found wrong: of yesterday, the partial
/// items and totals that differed from the state table (repaired); of
/// today, the totals whose drift held still between two checks. The stream
/// path should leave none, so one is worth an alarm.
pub const RECONCILE: &[Metric] = &[count("ReconcileDrift", &["drift"])];

/// What a tick of the rules stage's clock did: the rules stage's figures,
/// plus the dead man's switch. `Heartbeat` is 1 for a tick that evaluated
/// every alerting date and 0 for one that failed, so its sum falls to 0
/// when the schedule, the function or a permission is gone (the template's
/// alarm treats no data as breaching). `NewestUploadAge` is the age in
/// seconds of the newest upload the tick listed, when it listed one: the
/// fleet (or its path to the bucket) gone silent.
pub const TICK: &[Metric] = &[
    count("AlertsSent", &["messages_sent"]),
    count("RuleErrors", &["rule_errors"]),
    count("WriteUnits", &["write_units"]),
    count("ReadUnits", &["read_units"]),
    count("Heartbeat", &["heartbeat"]),
    Metric {
        name: "NewestUploadAge",
        unit: "Seconds",
        fields: &["newest_upload_age_seconds"],
        optional: true,
    },
];

/// The three stages, the scheduled reconcile the aggregate function also
/// runs, and the tick the rules function also runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Ingest,
    Aggregate,
    Rules,
    Reconcile,
    Tick,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Aggregate,
        Stage::Rules,
        Stage::Reconcile,
        Stage::Tick,
    ];

    /// The stage's name: its binary's, or `reconcile` or `tick` (outside
    /// Lambda only: in Lambda the dimension is the function's name).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Aggregate => "aggregate",
            Stage::Rules => "rules",
            Stage::Reconcile => "reconcile",
            Stage::Tick => "tick",
        }
    }

    /// The metrics the stage emits.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Stage::Ingest => INGEST,
            Stage::Aggregate => AGGREGATE,
            Stage::Rules => RULES,
            Stage::Reconcile => RECONCILE,
            Stage::Tick => TICK,
        }
    }
}

/// A report that cannot be turned into the stage's metrics: a field the
/// mapping names is missing or not a whole number (a renamed report field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} metric {metric}: report field {field} is {problem}")]
pub struct MetricsError {
    pub stage: &'static str,
    pub metric: &'static str,
    pub field: &'static str,
    pub problem: &'static str,
}

/// The EMF line for one invocation's report.
pub fn line<R: Serialize>(
    stage: Stage,
    function: &str,
    report: &R,
    timestamp_ms: u64,
) -> Result<String, MetricsError> {
    let error = |metric: &Metric, field, problem| MetricsError {
        stage: stage.name(),
        metric: metric.name,
        field,
        problem,
    };
    let report = serde_json::to_value(report).unwrap_or(Value::Null);
    let mut document = Map::new();
    let mut definitions = Vec::new();
    for metric in stage.metrics() {
        let mut sum: u64 = 0;
        let mut absent = false;
        for field in metric.fields {
            let value = field
                .split('.')
                .try_fold(&report, |value, key| value.get(key))
                .filter(|value| !value.is_null());
            let value = match value {
                Some(value) => value,
                None if metric.optional => {
                    absent = true;
                    continue;
                }
                None => return Err(error(metric, field, "missing")),
            };
            let value = value
                .as_u64()
                .ok_or_else(|| error(metric, field, "not a whole number"))?;
            sum = sum.saturating_add(value);
        }
        if absent {
            continue;
        }
        document.insert(metric.name.to_owned(), json!(sum));
        definitions.push(json!({ "Name": metric.name, "Unit": metric.unit }));
    }
    document.insert(DIMENSION.to_owned(), json!(function));
    document.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    Ok(Value::Object(document).to_string())
}

/// Prints the invocation's metrics as one EMF line on stdout. A report that
/// does not fit the mapping is logged, never fails the invocation.
pub fn emit<R: Serialize>(stage: Stage, report: &R) {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| stage.name().to_owned());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match line(stage, &function, report, now) {
        Ok(line) => println!("{line}"),
        Err(e) => tracing::warn!(error = %e, "metrics not emitted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Capacity {
        read_units: u64,
        write_units: u64,
    }

    #[derive(Serialize)]
    struct IngestLike {
        written: u64,
        unchanged: u64,
        rejected: u64,
        failed: u64,
        capacity: Capacity,
    }

    #[test]
    fn a_line_is_one_emf_document_with_every_metric_declared_and_valued() {
        let report = IngestLike {
            written: 3,
            unchanged: 2,
            rejected: 1,
            failed: 0,
            capacity: Capacity {
                read_units: 7,
                write_units: 6,
            },
        };
        let text = line(
            Stage::Ingest,
            "tally-IngestFunction-x",
            &report,
            1_447_632_000_000,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains('\n'));
        let document: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(document["Function"], "tally-IngestFunction-x");
        assert_eq!(document["UploadsAccepted"], 5);
        assert_eq!(document["UploadsRejected"], 1);
        assert_eq!(document["WriteUnits"], 6);
        assert_eq!(document["ReadUnits"], 7);
        let aws = &document["_aws"];
        assert_eq!(aws["Timestamp"], 1_447_632_000_000_u64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "tally");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        let declared: Vec<&str> = directive["Metrics"]
            .as_array()
            .map(|m| m.iter().filter_map(|d| d["Name"].as_str()).collect())
            .unwrap_or_default();
        let names: Vec<&str> = INGEST.iter().map(|m| m.name).collect();
        assert_eq!(declared, names);
        // EMF: every declared metric's value is a member of the root object.
        for name in names {
            assert!(document[name].is_u64(), "{name}");
        }
    }

    #[test]
    fn a_field_the_report_lacks_is_an_error_naming_it() {
        #[derive(Serialize)]
        struct Renamed {
            accepted: u64,
        }
        let error = line(Stage::Ingest, "ingest", &Renamed { accepted: 1 }, 0)
            .err()
            .unwrap_or_else(|| panic!("a missing field went unnoticed"));
        assert_eq!(
            error.to_string(),
            "ingest metric UploadsAccepted: report field written is missing"
        );
    }

    #[derive(Serialize)]
    struct TickLike {
        messages_sent: u64,
        rule_errors: u64,
        write_units: u64,
        read_units: u64,
        heartbeat: u64,
        newest_upload_age_seconds: Option<u64>,
    }

    fn tick_line(newest_upload_age_seconds: Option<u64>) -> Value {
        let report = TickLike {
            messages_sent: 1,
            rule_errors: 0,
            write_units: 3,
            read_units: 130,
            heartbeat: 1,
            newest_upload_age_seconds,
        };
        let text = line(Stage::Tick, "tally-RulesFunction-x", &report, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn declared(document: &Value) -> Vec<(String, String)> {
        document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|d| (d["Name"].to_string(), d["Unit"].to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_tick_beats_the_heartbeat_and_gives_the_newest_uploads_age_in_seconds() {
        let document = tick_line(Some(75));
        assert_eq!(document["Heartbeat"], 1);
        assert_eq!(document["NewestUploadAge"], 75);
        assert_eq!(document["AlertsSent"], 1);
        assert!(
            declared(&document).contains(&("\"NewestUploadAge\"".into(), "\"Seconds\"".into()))
        );
    }

    #[test]
    fn a_tick_that_listed_no_upload_leaves_the_age_out_rather_than_saying_zero() {
        let document = tick_line(None);
        assert_eq!(document["Heartbeat"], 1);
        assert!(document.get("NewestUploadAge").is_none(), "{document}");
        assert!(
            declared(&document)
                .iter()
                .all(|(name, _)| name != "\"NewestUploadAge\""),
            "{document}"
        );
        // A metric that is not optional still names a missing field.
        #[derive(Serialize)]
        struct NoHeartbeat {
            messages_sent: u64,
            rule_errors: u64,
            write_units: u64,
            read_units: u64,
        }
        let report = NoHeartbeat {
            messages_sent: 0,
            rule_errors: 0,
            write_units: 0,
            read_units: 0,
        };
        let error = line(Stage::Tick, "tick", &report, 0)
            .err()
            .unwrap_or_else(|| panic!("a missing heartbeat went unnoticed"));
        assert_eq!(
            error.to_string(),
            "tick metric Heartbeat: report field heartbeat is missing"
        );
    }

    #[test]
    fn metric_names_are_unique_per_stage_and_valid_for_cloudwatch() {
        for stage in Stage::ALL {
            let mut names: Vec<&str> = stage.metrics().iter().map(|m| m.name).collect();
            assert!(names.iter().all(|n| {
                !n.is_empty() && n.len() <= 255 && n.chars().all(|c| c.is_ascii_alphanumeric())
            }));
            names.sort_unstable();
            let len = names.len();
            names.dedup();
            assert_eq!(names.len(), len, "{stage:?}");
        }
    }
}
