//! What the command prints: the estimate as a person reads it (tables of
//! units and dollars, where each figure comes from, the figures measured
//! at this workload next to the computed ones, every assumption with the
//! flag that changes it) and, as one serializable value, what `--json`
//! prints. This file changes when what is said changes, not when a model
//! does.

use std::fmt::Write;

use serde::Serialize;

use super::bill::DesignCost;
use super::fleet::Fleet;
use super::inputs::{Inputs, Shape};
use super::numbers::{amount, grouped, usd};
use super::per_counter_model::{
    PerCounterItems, REPORTED_EC2_PER_YEAR, REPORTED_SERVERLESS_PER_YEAR, Reported,
};
use super::prices::{Billing, HOURS_PER_MONTH};
use super::tally_model::{SNAPSHOT_PUTS, TallyStages};
use super::tick_model::{KEYS_PER_LIST_PAGE, TICK_ALARMS, TICK_METRICS, TickCost};

/// A figure measured in docs/design.md, next to what this model computes.
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
    /// The rules stage's clock, on top of `tally`.
    pub ticks: TickCost,
    /// The per-counter design's cost; `None` when it cannot hold the fleet
    /// (`per_counter_infeasible` says why). The JSON keeps the keys it has
    /// always had (`seed`, `seed_items`, ...): scripts read them.
    #[serde(rename = "seed")]
    pub per_counter: Option<DesignCost>,
    #[serde(rename = "seed_items")]
    pub per_counter_items: Option<PerCounterItems>,
    #[serde(rename = "seed_infeasible")]
    pub per_counter_infeasible: Option<String>,
    #[serde(rename = "seed_reported_per_year_usd")]
    pub reported_per_year_usd: Reported,
    /// The instances' own uploads (S3 PUTs): the same for every design, not in the totals.
    pub uploads_per_month: f64,
    pub uploads_per_month_usd: f64,
    pub checks: Vec<Check>,
    pub assumptions: Vec<Assumption>,
}

/// The measured figures of docs/design.md, where this workload is the one they were
/// measured at.
pub fn checks(
    inputs: &Inputs,
    fleet: &Fleet,
    stages: &TallyStages,
    per_counter: Option<&PerCounterItems>,
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
            "docs/design.md §3; tally demo, round 1 and 3",
        );
    }
    // The aggregate table of docs/design.md §5: (records per batch, % changed) → (write, read) units per round.
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
                    "docs/design.md §5: the table measured per round",
                );
                check(
                    format!(
                        "aggregate read units per round ({records}-record batches, {percent}% changed)"
                    ),
                    ru,
                    stages.aggregate_read_units,
                    "docs/design.md §5: the table measured per round",
                );
            }
        }
    }
    if stages.rules_batches > 0.0 {
        check(
            "rules read units per batch".into(),
            130.0,
            stages.rules_read_units_per_batch,
            "docs/design.md §6: the rules_costs example",
        );
        check(
            "rules write units per batch (no alert transition)".into(),
            1.0,
            stages.rules_write_units_per_batch,
            "docs/design.md §6: the rules_costs example",
        );
    }
    if let Some(per_counter) = per_counter {
        let per_minute = 60.0 / w.period_seconds as f64;
        check(
            "per-counter design's state write units per minute".into(),
            20_000.0,
            per_counter.state_write_units * per_minute,
            "docs/design.md §5: measured on the per-counter design",
        );
        if everyone && fleet.changed_counters == 100 {
            check(
                "per-counter design's totals write units per minute, everything changing (+ByDate)"
                    .into(),
                20_000.0,
                per_counter.totals_write_units * per_minute,
                "docs/design.md §5: measured on the per-counter design",
            );
        }
    }
    checks
}

pub fn assumptions(
    inputs: &Inputs,
    stages: &TallyStages,
    per_counter: Option<&PerCounterItems>,
) -> Vec<Assumption> {
    let p = &inputs.prices;
    let l = &inputs.lambda;
    let pc = &inputs.per_counter;
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
                "{} MB (BENCHMARKS.md: peak ≤ 48 MB; measured 11–18 MB at 100 instances × 100 counters a minute)",
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
            what: "the per-counter design tally replaces",
            value: "one item per (Counter, Date) with every instance's value, updated for every counter on every upload; a totals write (+ByDate copy) per changed item's stream record; S3 invokes its function directly; no reads billed".into(),
            kind: "assumed",
            flag: "",
        },
        Assumption {
            what: "the per-counter design's Lambda",
            value: format!(
                "{} MB; {} ms per upload, {} ms per stream batch of up to {} records (no batching window)",
                pc.memory_mb, pc.ingest_ms, pc.aggregate_ms, pc.batch_size
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
            value: "free tiers; storage (a day of state is a few hundred KB at 100 instances × 100 counters); DynamoDB Streams reads by Lambda (free); SNS deliveries to Lambda (free); data transfer within the region (free); cold starts; retries".into(),
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
    if let Some(per_counter) = per_counter {
        list.insert(
            5,
            Assumption {
                what: "the per-counter design's DynamoDB units",
                value: format!(
                    "computed from its item: {} B at {} instances (it grows with the fleet), {} write units per upload",
                    grouped(per_counter.item_bytes as f64),
                    grouped(inputs.workload.instances as f64),
                    per_counter.write_units_per_upload
                ),
                kind: "computed",
                flag: "",
            },
        );
    }
    list
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
    let per_counter_cell = |f: &dyn Fn(&DesignCost) -> String| {
        e.per_counter
            .as_ref()
            .map_or_else(|| "cannot run".to_owned(), f)
    };
    let _ = writeln!(
        out,
        "{:<28}{:>18}{:>22}",
        "per month", "tally", "per-counter design"
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
            per_counter_cell(cell.as_ref())
        );
    }

    let tk = &e.ticks;
    let _ = writeln!(
        out,
        "{:<28}{:>18}   one every {} s, on top of tally's total: {} with the ticks",
        "ticks per year",
        usd(tk.per_year_usd.total),
        tk.tick_seconds,
        usd(t.per_year_usd + tk.per_year_usd.total)
    );
    let _ = writeln!(
        out,
        "\nWhere the units come from, per {} s period:",
        w.period_seconds
    );
    wrap(
        &mut out,
        "  tally ingest       ",
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
        "  tally aggregate    ",
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
        "  tally rules        ",
        &format!(
            "{}, each {} RU (64 partials read twice, the day's mark, the alert records), {} WU (the mark) and {SNAPSHOT_PUTS} snapshot PUTs.",
            count(st.rules_batches, "batch"),
            amount(st.rules_read_units_per_batch),
            amount(st.rules_write_units_per_batch),
        ),
    );
    let d = &tk.per_year_usd;
    wrap(
        &mut out,
        "  tally ticks        ",
        &format!(
            "{} a year, each over {} alerting dates: {} RU (per date what a rules batch reads, {} RU), {} LIST requests on average ({} keys a page, yesterday's prefix too in the first {} h), one Scheduler and one Lambda invocation ({:.4} GB-s), {} B of logs. A year: DynamoDB {}, S3 LIST {}, Lambda {}, Scheduler {}, logs {}, and {TICK_METRICS} metrics and {TICK_ALARMS} alarms {}.",
            grouped(tk.ticks_per_year),
            tk.dates_per_tick,
            amount(tk.read_units_per_tick),
            amount(st.rules_read_units_per_batch),
            tk.list_requests_per_tick,
            grouped(KEYS_PER_LIST_PAGE as f64),
            amount(e.inputs.ticks.forget_after_hours),
            tk.gb_seconds_per_tick,
            grouped(tk.log_bytes_per_tick as f64),
            usd(d.dynamodb),
            usd(d.s3_list),
            usd(d.lambda),
            usd(d.scheduler),
            usd(d.logs),
            usd(d.metrics_and_alarms)
        ),
    );
    match (&e.per_counter_items, &e.per_counter_infeasible) {
        (Some(per_counter), _) => {
            wrap(
                &mut out,
                "  per-counter state  ",
                &format!(
                    "{} uploads, one invocation each, each updating {} counter items: {} WU per upload (a {} B item holding every instance's value: it grows with the fleet) = {} WU, changed or not.",
                    grouped(w.instances as f64),
                    grouped(w.counters as f64),
                    grouped(per_counter.write_units_per_upload as f64),
                    grouped(per_counter.item_bytes as f64),
                    grouped(per_counter.state_write_units)
                ),
            );
            wrap(
                &mut out,
                "  per-counter totals ",
                &format!(
                    "{} stream records (items that changed) × {} WU (a total and its ByDate copy) = {} WU; {} records per invocation.",
                    grouped(per_counter.stream_records),
                    per_counter.total_write_units_per_record,
                    grouped(per_counter.totals_write_units),
                    amount(per_counter.records_per_batch)
                ),
            );
        }
        (None, Some(reason)) => wrap(&mut out, "  per-counter        ", reason),
        (None, None) => {}
    }
    if !e.checks.is_empty() {
        let _ = writeln!(out, "\nMeasured figures at this workload (docs/design.md):");
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
        "per-counter (as modelled)",
        per_counter_cell(&|d: &DesignCost| usd(d.per_year_on_demand_usd)),
        per_counter_cell(&|d: &DesignCost| usd(d.per_year_provisioned_usd))
    );
    wrap(
        &mut out,
        "  ",
        &format!(
            "The figures reported for the designs tally replaces: {} a year on Lambda + DynamoDB (the per-counter design), {} on EC2.",
            usd(REPORTED_SERVERLESS_PER_YEAR),
            usd(REPORTED_EC2_PER_YEAR)
        ),
    );
    if let Some(per_counter) = &e.per_counter {
        wrap(
            &mut out,
            "  ",
            &format!(
                "Modelled here, the per-counter design costs {} a year with provisioned capacity ({:+.0}% from its {}) and {} on today's on-demand prices. Its figure fits provisioned capacity: DynamoDB had no on-demand mode until November 2018, and on-demand writes alone would cost more than it. The rest of the gap is what is not known here: its Lambda durations (--seed-ingest-ms, --seed-aggregate-ms) and how it sized its tables (--utilization).",
                usd(per_counter.per_year_provisioned_usd),
                (per_counter.per_year_provisioned_usd / REPORTED_SERVERLESS_PER_YEAR - 1.0) * 100.0,
                usd(REPORTED_SERVERLESS_PER_YEAR),
                usd(per_counter.per_year_on_demand_usd)
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
