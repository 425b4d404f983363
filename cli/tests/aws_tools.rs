//! The `tally` command's AWS tools where no AWS API is needed: their help,
//! and `dev up`'s refusal to create anything when no endpoint is set. What
//! they do against the server is tested in tally-tests (its `dev` module).

use std::process::{Command, Output};

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_aws_command_has_an_example_and_its_exit_codes_in_its_help() {
    for command in [
        &["backfill"][..],
        &["reconcile"],
        &["invoke"],
        &["dev", "up"],
        &["dev", "pump"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        let (stdout, _) = texts(&output);
        assert!(output.status.success(), "{command:?}");
        assert!(
            stdout.contains("Examples:\n") && stdout.contains("\n  tally "),
            "no example in {command:?}:\n{stdout}"
        );
        assert!(stdout.contains("Exit codes: 0"), "{command:?}:\n{stdout}");
    }
}

#[test]
fn dev_up_refuses_to_create_anything_without_an_endpoint() {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["dev", "up", "--config", "/nonexistent/dev.json"])
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("AWS_ENDPOINT_URL is not set"), "{stderr}");
}

#[test]
fn invoke_rules_takes_a_tick_and_names_an_event_it_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, r#"{"hello": 1}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "rules", "--event"])
        .arg(&garbage)
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("garbage.json is not an event the rules function takes")
            && stderr.contains(r#"nor a tick ({"tick": {}}"#),
        "{stderr}"
    );
    // A tick needs no file; it is the rules function's alone.
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "aggregate", "--tick"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--tick applies to `tally invoke rules` only"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "rules"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--event <FILE>"), "{stderr}");
    // Past the event, a tick goes on to the function's environment.
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "rules", "--tick"])
        .env_remove("TALLY_PARTIALS_TABLE")
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TALLY_PARTIALS_TABLE is not set"),
        "{stderr}"
    );
}
