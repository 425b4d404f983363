//! `tally rules check | test | eval`, as ops run them.

use std::path::PathBuf;
use std::process::{Command, Output};

fn rules_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules-config")
}

fn tally(args: &[&str]) -> (Output, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn check_passes_the_shipped_rules_and_names_every_problem_of_bad_ones() {
    let shipped = rules_config();
    let (output, stdout, _) = tally(&["rules", "check", shipped.to_str().unwrap()]);
    assert!(output.status.success());
    assert!(stdout.contains("rules ok"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ops.yaml"),
        "rules:\n  - name: a\n    counter: X\n    max: lots\n  - name: b\n    expr: 'X >'\n",
    )
    .unwrap();
    let (output, _, stderr) = tally(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let shown = dir.path().display().to_string();
    assert!(
        stderr.contains(&format!("{shown}/ops.yaml:4:10: rule \"a\": max:")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}/ops.yaml:6:11: rule \"b\": expr:")),
        "{stderr}"
    );
    assert!(stderr.contains("2 problems"), "{stderr}");
}

#[test]
fn test_runs_ops_tests_and_fails_on_a_wrong_expectation() {
    let shipped = rules_config();
    let (output, stdout, stderr) = tally(&["rules", "test", "--rules", shipped.to_str().unwrap()]);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.yaml");
    std::fs::write(
        &file,
        "tests:\n  - name: expects silence\n    evaluations:\n      - totals: {COUNTER1: 191122}\n        alerts: []\n",
    )
    .unwrap();
    let (output, stdout, _) = tally(&[
        "rules",
        "test",
        file.to_str().unwrap(),
        "--rules",
        shipped.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout.contains(&format!(
            "FAIL  {}:4:9: test \"expects silence\"",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn eval_says_which_alerts_a_snapshot_would_fire() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("2015-11-16");
    std::fs::write(&snapshot, "COUNTER1 191122\nbids 100\n").unwrap();
    let (output, stdout, stderr) =
        tally(&["rules", "eval", "--snapshot", snapshot.to_str().unwrap()]);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("2 counters on 2015-11-16"), "{stdout}");
    assert!(
        stdout.contains("FIRING critical: counter1-max COUNTER1=191122 > 150000 (2015-11-16)"),
        "{stdout}"
    );

    let json = dir.path().join("day.json");
    std::fs::write(
        &json,
        r#"{"date": "2015-11-16", "counters": {"COUNTER1": 5}}"#,
    )
    .unwrap();
    let (output, stdout, _) = tally(&[
        "rules",
        "eval",
        "--snapshot",
        json.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["firing"].as_array().unwrap().len(), 0);

    let undated = dir.path().join("totals.txt");
    std::fs::write(&undated, "COUNTER1 5\n").unwrap();
    let (output, _, stderr) = tally(&["rules", "eval", "--snapshot", undated.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("give --date YYYY-MM-DD"), "{stderr}");
}
