//! `tally invoke --bootstrap` against a fake function: a small Python
//! program that implements the Lambda Runtime API loop as a `provided`
//! runtime's bootstrap does (ask for the next event, answer it, ask again).
//! What it saw (the headers, Lambda's variables) comes back in its response,
//! so the test checks the Runtime API `tally` serves, the measurements it
//! prints, and that the process is gone afterwards. Other modes make it
//! fail the ways a real function can: an error response, an init error, an
//! exit before asking for an event, a crash mid-invocation.
//!
//! Needs only Python 3 (which the other tests need for their AWS API
//! server); no AWS endpoint is contacted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FAKE: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
base = "http://" + api + "/2018-06-01/runtime"
mode = os.environ.get("FAKE_MODE", "echo")
with open(os.environ["FAKE_PID_FILE"], "w") as out:
    out.write(str(os.getpid()))
print("fake bootstrap starting", flush=True)

def post(path, body, headers=None):
    request = urllib.request.Request(base + path, data=body, method="POST", headers=headers or {})
    with urllib.request.urlopen(request) as answer:
        return answer.status

if mode == "exit":
    sys.exit(3)
if mode == "init-error":
    post("/init/error", b'{"errorMessage":"TALLY_STATE_TABLE is not set","errorType":"Settings"}',
         {"Lambda-Runtime-Function-Error-Type": "Runtime.Settings"})
    sys.exit(1)

ballast = None
while True:
    with urllib.request.urlopen(base + "/invocation/next") as answer:
        headers = dict(answer.headers)
        event = json.load(answer)
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    if mode == "crash":
        os._exit(7)
    if mode == "error":
        post("/invocation/" + request_id + "/error",
             b'{"errorMessage":"the state table is missing","errorType":"StoreError"}',
             {"Lambda-Runtime-Function-Error-Type": "Runtime.StoreError"})
        continue
    # Grow the resident set by about 40 MB, so the peak shows it.
    ballast = bytearray(40 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    status = post("/invocation/" + request_id + "/response", json.dumps({
        "event": event,
        "headers": {k: v for k, v in headers.items() if k.startswith("Lambda-Runtime-")},
        "env": {k: os.environ.get(k) for k in [
            "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "AWS_LAMBDA_FUNCTION_VERSION", "LAMBDA_TASK_ROOT", "TALLY_STATE_TABLE"]},
    }).encode())
    assert status == 202, status
"#;

/// A fake bootstrap in a temporary folder, and where it writes its PID.
struct Fake {
    dir: tempfile::TempDir,
    bootstrap: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap");
        std::fs::write(&bootstrap, FAKE).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fake { dir, bootstrap }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    fn event(&self, json: &str) -> PathBuf {
        let path = self.dir.path().join("event.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    /// `tally invoke FUNCTION --event EVENT --bootstrap FAKE` in `mode`.
    fn invoke(&self, function: &str, event: &Path, mode: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["invoke", function, "--event"])
            .arg(event)
            .arg("--bootstrap")
            .arg(&self.bootstrap)
            .args(extra)
            .env("FAKE_MODE", mode)
            .env("FAKE_PID_FILE", self.pid_file())
            .env("TALLY_STATE_TABLE", "state-for-the-fake")
            .env("AWS_REGION", "eu-west-1")
            .output()
            .unwrap()
    }

    /// Whether the fake's process still exists.
    fn still_running(&self) -> bool {
        let pid = std::fs::read_to_string(self.pid_file()).unwrap();
        Path::new(&format!("/proc/{}", pid.trim())).exists()
    }
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A number printed before `unit` after `label` ("init 12.5 ms").
fn figure(stderr: &str, label: &str) -> f64 {
    let start = stderr
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {stderr}"));
    stderr[start + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {stderr}"))
}

#[test]
fn a_bootstrap_gets_the_event_with_lambdas_headers_and_is_measured_and_stopped() {
    let fake = Fake::new();
    let event = fake.event(r#"{"Records": [{"note": "an upload"}]}"#);
    let output = fake.invoke("ingest", &event, "echo", &["--function-name", "ingest-fn"]);
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let response: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(response["event"]["Records"][0]["note"], "an upload");
    let headers = &response["headers"];
    let request_id = headers["Lambda-Runtime-Aws-Request-Id"].as_str().unwrap();
    assert_eq!(request_id.len(), 36, "{headers}");
    assert_eq!(
        headers["Lambda-Runtime-Invoked-Function-Arn"],
        "arn:aws:lambda:eu-west-1:000000000000:function:ingest-fn"
    );
    assert!(
        headers["Lambda-Runtime-Trace-Id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-"),
        "{headers}"
    );
    let deadline: u128 = headers["Lambda-Runtime-Deadline-Ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // The deployment's 60 s for ingest, counted from the event.
    assert!(
        deadline > now + 50_000 && deadline < now + 61_000,
        "{deadline} vs {now}"
    );
    let env = &response["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "ingest-fn");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    // The function's own variables come from the caller's environment.
    assert_eq!(env["TALLY_STATE_TABLE"], "state-for-the-fake");

    // The function's log went to stderr, not into the response.
    assert!(stderr.contains("fake bootstrap starting"), "{stderr}");
    assert!(figure(&stderr, "init ") > 0.0, "{stderr}");
    assert!(figure(&stderr, "duration ") > 0.0, "{stderr}");
    // The 40 MB the fake touched while handling the event.
    assert!(figure(&stderr, "peak memory ") > 40.0, "{stderr}");
    assert!(
        !fake.still_running(),
        "the bootstrap was left running after the invocation"
    );
}

#[test]
fn an_error_response_fails_the_command_with_the_functions_error() {
    let fake = Fake::new();
    let event = fake.event(r#"{"Records": []}"#);
    let output = fake.invoke("aggregate", &event, "error", &["--memory-mb", "256"]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the invocation failed (Lambda would retry it) with Runtime.StoreError"),
        "{stderr}"
    );
    assert!(stderr.contains("the state table is missing"), "{stderr}");
    assert!(stderr.contains("memory size 256 MB"), "{stderr}");
    assert!(!fake.still_running());
}

#[test]
fn a_function_that_fails_at_init_says_so_and_what_to_check() {
    let fake = Fake::new();
    let event = fake.event("{}");
    let output = fake.invoke("ingest", &event, "init-error", &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed to start: it reported an init error (Runtime.Settings)"),
        "{stderr}"
    );
    assert!(stderr.contains("tally dev up"), "{stderr}");

    let output = fake.invoke("ingest", &event, "exit", &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exited (exit status: 3) before asking for an event"),
        "{stderr}"
    );
}

#[test]
fn a_crash_during_the_invocation_is_named() {
    let fake = Fake::new();
    let event = fake.event("{}");
    let output = fake.invoke("ingest", &event, "crash", &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exited (exit status: 7) during the invocation, without a response"),
        "{stderr}"
    );
}

#[test]
fn what_is_not_a_bootstrap_is_refused_with_what_to_pass() {
    let fake = Fake::new();
    let event = fake.event("{}");
    let zip = fake.dir.path().join("bootstrap.zip");
    std::fs::write(&zip, b"PK\x03\x04not really").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "ingest", "--event"])
        .arg(&event)
        .arg("--bootstrap")
        .arg(&zip)
        .output()
        .unwrap();
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a zip; unzip it first"), "{stderr}");

    // A stream function's event is checked before anything starts; the
    // rules function's names both shapes it takes, a batch and a tick.
    let event = fake.event(r#"{"Records": 5}"#);
    let output = fake.invoke("aggregate", &event, "echo", &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a DynamoDB stream event as Lambda delivers it"),
        "{stderr}"
    );
    let output = fake.invoke("rules", &event, "echo", &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not an event the rules function takes")
            && stderr.contains("not a DynamoDB stream batch")
            && stderr.contains(r#"nor a tick ({"tick": {}}"#),
        "{stderr}"
    );

    // --memory-mb means nothing without --bootstrap.
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["invoke", "ingest", "--event"])
        .arg(&event)
        .args(["--memory-mb", "256"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
