//! `tally demo`, run as a person runs it: the binary, no flags but a directory.

use std::process::Command;

#[test]
fn the_demo_runs_the_pipeline_fires_and_resolves_an_alert_and_shows_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run tally demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let minute = |n: u32| -> String {
        let start = stdout
            .find(&format!("minute {n}:"))
            .unwrap_or_else(|| panic!("no minute {n} in:\n{stdout}"));
        let rest = &stdout[start..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_owned()
    };
    // One conditional write per changed upload; none for an identical one.
    assert!(
        minute(1).contains(
            "100 state writes (200 write units; the per-counter design: 20000 write units)"
        ),
        "{stdout}"
    );
    assert!(minute(1).contains("COUNTER1 = 100000"), "{stdout}");
    assert!(
        minute(2).contains("0 state writes (0 write units"),
        "{stdout}"
    );
    assert!(minute(2).contains("alerts: none sent"), "{stdout}");
    // The alert fires once, stays quiet while firing, resolves.
    assert!(
        minute(3).contains("ALERT  FIRING critical: counter1-max COUNTER1=160000 > 150000"),
        "{stdout}"
    );
    assert!(minute(4).contains("alerts: none sent"), "{stdout}");
    assert!(
        minute(5).contains("ALERT  RESOLVED: counter1-max COUNTER1=136000"),
        "{stdout}"
    );
    assert!(minute(5).contains("is not an integer"), "{stdout}");
    // One instance goes silent: the stale rule fires once for the fleet,
    // naming it, and resolves when it uploads again.
    assert!(minute(6).contains("alerts: none sent"), "{stdout}");
    assert!(
        minute(10)
            .contains("ALERT  FIRING critical: instances-silent 1 of 80 instances silent over 5m"),
        "{stdout}"
    );
    assert!(minute(10).contains(": i-00050 (last wrote "), "{stdout}");
    assert!(
        minute(11).contains("ALERT  RESOLVED: instances-silent"),
        "{stdout}"
    );
    assert!(
        minute(11).contains("why: the stale instances wrote again"),
        "{stdout}"
    );
    // The snapshot is where it says, in the format downstream jobs read.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("the snapshot for downstream jobs: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let path = line.trim_start_matches("the snapshot for downstream jobs: ");
    let snapshot = std::fs::read_to_string(path).unwrap();
    assert!(snapshot.starts_with("COUNTER1 136000\n"), "{snapshot}");
    assert_eq!(snapshot.lines().count(), 100);
    assert!(std::path::Path::new(&format!("{path}.json")).is_file());
}
