//! `tally cost`, run as a person (or a script) runs it: the binary, flags
//! and all.

use std::process::{Command, Output};

fn cost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("cost")
        .args(args)
        .output()
        .expect("run tally cost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The dollar figures on the report line that starts with `label`.
fn dollars(stdout: &str, label: &str) -> Vec<f64> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|word| word.strip_prefix('$'))
        .map(|amount| amount.replace(',', "").parse().expect("a dollar amount"))
        .collect()
}

#[test]
fn the_sample_workload_by_default_and_tally_costs_less() {
    let output = cost(&[]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.starts_with("tally cost: 100 instances × 100 counters every 60 s"),
        "{stdout}"
    );
    // Every measured figure at this workload is reproduced.
    assert!(stdout.contains("matches"), "{stdout}");
    assert!(!stdout.contains("DIFFERS"), "{stdout}");
    // The rules stage's clock, on its own line, then with tally's total.
    let [ticks, with_ticks] = dollars(&stdout, "ticks per year")[..] else {
        panic!("two figures on the ticks' line:\n{stdout}");
    };
    let [tally_year, _] = dollars(&stdout, "total per year")[..] else {
        panic!("two figures on the yearly total:\n{stdout}");
    };
    assert!(0.0 < ticks && ticks < tally_year, "{ticks} vs {tally_year}");
    assert!((tally_year + ticks - with_ticks).abs() < 0.011, "{stdout}");
    for label in ["total per month", "total per year"] {
        let [tally, per_counter] = dollars(&stdout, label)[..] else {
            panic!("two figures on {label:?}:\n{stdout}");
        };
        assert!(
            0.0 < tally && tally < per_counter,
            "{label}: {tally} vs {per_counter}"
        );
    }
    // The per-counter design's own figures, and why the model differs, are in the report.
    let words = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "$4,471.00 a year on Lambda + DynamoDB",
        "$701.00 on EC2",
        "no on-demand mode until November 2018",
        "measured only against a local emulator",
        "--ingest-ms",
    ] {
        assert!(words.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}

#[test]
fn json_carries_every_figure_input_and_assumption() {
    let output = cost(&["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let tally = json["tally"]["per_year_usd"]
        .as_f64()
        .expect("tally's yearly cost");
    // The per-counter design keeps its old key, `seed`, which scripts read.
    let per_counter = json["seed"]["per_year_usd"]
        .as_f64()
        .expect("the per-counter design's yearly cost");
    assert!(
        0.0 < tally && tally < per_counter,
        "{tally} vs {per_counter}"
    );
    // docs/design.md §3 and §5: 100 uploads of 100 counters are 200 write units; 362 per batch.
    assert_eq!(
        json["tally_stages"]["ingest_write_units"].as_f64(),
        Some(200.0)
    );
    assert_eq!(
        json["tally_stages"]["aggregate_write_units"].as_f64(),
        Some(362.0)
    );
    let checks = json["checks"].as_array().expect("checks");
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c["matches"] == true), "{checks:?}");
    let assumptions = json["assumptions"].as_array().expect("assumptions");
    assert!(assumptions.iter().any(|a| a["kind"] == "assumed"));
    assert!(assumptions.iter().any(|a| a["kind"] == "price"));
    assert_eq!(json["inputs"]["prices"]["billing"], "on-demand");
}

#[test]
fn flags_override_prices_and_durations() {
    let base = cost(&["--json"]);
    let doubled = cost(&["--json", "--write-price", "1.25", "--ingest-ms", "120"]);
    let figure = |output: &Output, path: &[&str]| {
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        path.iter()
            .fold(&json, |value, key| &value[*key])
            .as_f64()
            .expect("a number")
    };
    let gb = ["tally", "per_month", "lambda_gb_seconds"];
    assert!(figure(&doubled, &gb) > 1.9 * figure(&base, &gb));
    let dynamodb = ["tally", "per_month_usd", "dynamodb"];
    assert!(figure(&doubled, &dynamodb) > figure(&base, &dynamodb));
}

#[test]
fn a_fleet_the_per_counter_design_cannot_hold_still_prices_tally() {
    let output = cost(&["--instances", "100000", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(json["seed"].is_null());
    let reason = json["seed_infeasible"].as_str().unwrap_or_default();
    assert!(reason.contains("item limit"), "{reason}");
    assert!(json["tally"]["per_year_usd"].as_f64().unwrap_or_default() > 0.0);
}

#[test]
fn bad_values_exit_2_and_say_what_to_give() {
    let output = cost(&["--changed-counters", "120"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--changed-counters"), "{stderr}");
    assert!(stderr.contains("from 0 to 100"), "{stderr}");
}

#[test]
fn a_workload_tally_cannot_store_exits_1_with_what_to_do() {
    let output = cost(&["--instances", "10", "--counters", "30000"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("fewer --counters"), "{stderr}");
}

#[test]
fn help_shows_examples_and_the_price_flags() {
    let output = cost(&["--help"]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    for needle in [
        "Examples:",
        "tally cost --json",
        "--write-price",
        "--seed-ingest-ms",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}
