//! `tally demo`, run as a person runs it: the binary, no flags but a directory.

use std::process::Command;

#[test]
fn the_demo_shows_ingest_writing_once_per_upload_and_nothing_for_repeats() {
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

    let after = |title: &str| {
        let start = stdout
            .find(title)
            .unwrap_or_else(|| panic!("no {title:?} in:\n{stdout}"));
        stdout[start..]
            .lines()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    // One conditional write per upload, a body item of about 2 KB (2 units each).
    assert!(
        after("round 1").starts_with("  state table: 100 writes, 200 write units"),
        "{stdout}"
    );
    assert!(
        after("round 2").starts_with("  state table: 0 writes, 0 write units"),
        "{stdout}"
    );
    assert!(after("round 2").contains("; 0 change records"), "{stdout}");
    assert!(
        after("round 3").starts_with("  state table: 100 writes, 200 write units"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the seed's per-counter design: 10000 writes, 20000 write units"),
        "{stdout}"
    );
    assert!(
        stdout.contains(": rejected: token 4 (\"12x\") at byte 20 is not an integer"),
        "{stdout}"
    );
    assert!(
        after("round 5").starts_with("  state table: 0 writes"),
        "{stdout}"
    );
    assert!(dir.path().join("state.sqlite").exists());
}

#[test]
fn bad_arguments_exit_2_with_a_hint() {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["demo", "--instances", "0"])
        .output()
        .expect("run tally demo");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--instances"), "{stderr}");
}
