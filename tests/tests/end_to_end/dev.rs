//! The `tally` command's AWS tools, run as a person runs them: the real
//! binary (built from this checkout on first use, [`tally_tests::cli`] says
//! how and why) against the AWS API server `scripts/test` starts (moto's server),
//! configured only through the usual AWS environment variables. Uploads go
//! through the S3 API, and what the pipeline produced is read back through
//! DynamoDB, S3 and an SQS queue subscribed to the alert topic.
//!
//! Without the server (`TALLY_TEST_ENDPOINT`) these tests fail, never skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use tally_core::key::Date;
use tally_core::ports::TotalsStore;
use tally_tests::rules_world::body;
use tally_tests::{endpoint, receive_all, sdk_config, unique};

/// Runs `tally` with the test server as its AWS endpoint, the region and
/// credentials `sdk_config` uses, and `env` on top; nothing of the
/// caller's own TALLY_* or AWS_* settings leaks in.
fn tally(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    let mut command = Command::new(tally_tests::cli::tally_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .envs(env)
        .output()
        .unwrap_or_else(|e| panic!("run tally {args:?}: {e}"))
}

/// `tally` that must succeed; its stdout.
fn tally_ok(args: &[&str], env: &BTreeMap<String, String>) -> String {
    let output = tally(args, env);
    let (stdout, stderr) = texts(&output);
    assert!(
        output.status.success(),
        "tally {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A dev environment made by `tally dev up`, and clients to look at it.
struct Dev {
    _dir: tempfile::TempDir,
    config: PathBuf,
    file: Value,
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
}

impl Dev {
    async fn up() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dev.json");
        let name = unique("e2e");
        let stdout = tally_ok(
            &["dev", "up", "--name", &name, "--config", path(&config)],
            &BTreeMap::new(),
        );
        assert!(
            stdout.contains(&format!("export TALLY_STATE_TABLE='{name}-state'")),
            "{stdout}"
        );
        let sdk = sdk_config().await;
        Dev {
            file: serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap(),
            _dir: dir,
            config,
            s3: tally_aws::config::s3(&sdk),
            dynamodb: tally_aws::config::dynamodb(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
        }
    }

    fn text(&self, field: &str) -> String {
        self.file[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.file))
            .to_owned()
    }

    fn table(&self, which: &str) -> String {
        self.file["tables"][which].as_str().unwrap().to_owned()
    }

    /// The variables `dev up` set for the functions.
    fn environment(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.file["environment"].clone()).unwrap()
    }

    fn pump_once(&self) -> String {
        tally_ok(
            &["dev", "pump", "--once", "--config", path(&self.config)],
            &BTreeMap::new(),
        )
    }

    async fn upload(&self, bucket: &str, key: &str, body: &str) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }

    async fn object(&self, key: &str) -> Option<String> {
        let output = self
            .s3
            .get_object()
            .bucket(self.text("bucket"))
            .key(key)
            .send()
            .await
            .ok()?;
        let bytes = output.body.collect().await.unwrap().into_bytes();
        Some(String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// The day's totals, read strongly consistently from the totals table.
    async fn total(&self, date: &Date, counter: &str) -> Option<i128> {
        let store = tally_aws::totals_tables::DynamoTotalsStore::new(
            self.dynamodb.clone(),
            self.table("partials"),
            self.table("totals"),
        );
        let totals = store
            .totals_of(date, &[counter.to_owned()].into())
            .await
            .unwrap();
        totals
            .get(counter)
            .and_then(|total| total.value.map(|value| value.0))
    }

    /// Alerts that arrived on the alert queue: at least `expected` within
    /// 10 s, then whatever else comes within 2 s more.
    async fn alerts(&self, expected: usize) -> Vec<Value> {
        let queue = self.text("alert_queue_url");
        let mut messages = receive_all(&self.sqs, &queue, expected, Duration::from_secs(10)).await;
        messages.extend(receive_all(&self.sqs, &queue, 0, Duration::from_secs(2)).await);
        messages
    }

    async fn subscriptions(&self, topic: &str) -> usize {
        self.sns
            .list_subscriptions_by_topic()
            .topic_arn(self.text(topic))
            .send()
            .await
            .unwrap()
            .subscriptions
            .unwrap_or_default()
            .len()
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn today() -> Date {
    Date::parse(&chrono::Utc::now().format("%Y-%m-%d").to_string()).unwrap()
}

/// The lines of `pump`'s output about batches of one function.
fn batches<'a>(stdout: &'a str, function: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|line| line.starts_with(function))
        .collect()
}

#[tokio::test]
async fn dev_up_and_pump_run_the_worked_example_through_the_whole_pipeline() {
    let dev = Dev::up().await;
    // Again: nothing fails and nothing is duplicated.
    let again = tally_ok(
        &[
            "dev",
            "up",
            "--name",
            dev.file["name"].as_str().unwrap(),
            "--config",
            path(&dev.config),
        ],
        &BTreeMap::new(),
    );
    assert!(again.contains("export TALLY_BUCKET="), "{again}");
    let file_again: Value =
        serde_json::from_str(&std::fs::read_to_string(&dev.config).unwrap()).unwrap();
    assert_eq!(file_again, dev.file);
    assert_eq!(dev.subscriptions("upload_topic_arn").await, 1);
    assert_eq!(dev.subscriptions("alert_topic_arn").await, 1);
    let notifications = dev
        .s3
        .get_bucket_notification_configuration()
        .bucket(dev.text("bucket"))
        .send()
        .await
        .unwrap();
    assert_eq!(notifications.topic_configurations().len(), 1);

    // The worked example: four instances, 191122 in all, over the limit of
    // the bundled counter1-max rule (150000).
    let date = today();
    let bucket = dev.text("bucket");
    for (instance, value) in [
        ("i-1", 12345),
        ("i-2", 123456),
        ("i-3", 1000),
        ("i-4", 54321),
    ] {
        dev.upload(
            &bucket,
            &format!("counters/{date}/{instance}"),
            &format!("COUNTER1 {value}\n"),
        )
        .await;
    }
    let stdout = dev.pump_once();
    assert!(!batches(&stdout, "ingest").is_empty(), "{stdout}");
    assert!(!batches(&stdout, "aggregate").is_empty(), "{stdout}");
    assert!(!batches(&stdout, "rules").is_empty(), "{stdout}");

    assert_eq!(dev.total(&date, "COUNTER1").await, Some(191_122));
    assert_eq!(
        dev.object(&format!("totals/{date}")).await.as_deref(),
        Some("COUNTER1 191122\n")
    );
    let json: Value =
        serde_json::from_str(&dev.object(&format!("totals/{date}.json")).await.unwrap()).unwrap();
    assert_eq!(json["date"], date.as_str());
    assert_eq!(json["counters"]["COUNTER1"], 191_122);

    let alerts = dev.alerts(1).await;
    assert_eq!(alerts.len(), 1, "exactly one alert: {alerts:#?}");
    let alert = body(&alerts[0]);
    assert_eq!(alert["rule"], "counter1-max");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["value"], 191_122);
    assert_eq!(alerts[0]["MessageAttributes"]["state"]["Value"], "firing");

    // One instance's object goes: its contribution goes with it.
    dev.s3
        .delete_object()
        .bucket(&bucket)
        .key(format!("counters/{date}/i-2"))
        .send()
        .await
        .unwrap();
    let stdout = dev.pump_once();
    assert!(!batches(&stdout, "rules").is_empty(), "{stdout}");
    assert_eq!(dev.total(&date, "COUNTER1").await, Some(191_122 - 123_456));
    assert_eq!(
        dev.object(&format!("totals/{date}")).await.as_deref(),
        Some("COUNTER1 67666\n")
    );
    let alerts = dev.alerts(1).await;
    assert_eq!(alerts.len(), 1, "exactly one resolution: {alerts:#?}");
    let alert = body(&alerts[0]);
    assert_eq!(alert["rule"], "counter1-max");
    assert_eq!(alert["state"], "resolved");
    assert_eq!(alert["value"], 67_666);

    // The positions were saved: a third pump finds nothing to do but its
    // tick, which finds every alert already decided.
    let stdout = dev.pump_once();
    for function in ["ingest", "aggregate", "rules"] {
        assert!(batches(&stdout, function).is_empty(), "{stdout}");
    }
    let ticks = batches(&stdout, "tick");
    assert_eq!(ticks.len(), 1, "{stdout}");
    assert!(
        ticks[0].starts_with("tick       2 dates: ")
            && ticks[0].ends_with(", 0 messages sent, 0 snapshots written"),
        "{stdout}"
    );
    assert!(dev.alerts(0).await.is_empty());
}

#[tokio::test]
async fn a_tick_through_invoke_and_pump_decides_what_no_batch_brought() {
    let dev = Dev::up().await;
    let env = dev.environment();
    let dir = tempfile::tempdir().unwrap();
    let bucket = dev.text("bucket");
    let date = today();

    // Ingested and aggregated, but the totals' batch never reaches rules.
    let key = format!("counters/{date}/web-1");
    dev.upload(&bucket, &key, "COUNTER1 191122").await;
    let event_file = dir.path().join("s3-put.json");
    std::fs::write(
        &event_file,
        put_event(&bucket, &key, "0055AED6DCD90281E5").to_string(),
    )
    .unwrap();
    tally_ok(&["invoke", "ingest", "--event", path(&event_file)], &env);
    let sdk = sdk_config().await;
    let mut stream =
        tally_tests::streams::StreamReader::open(&sdk, &dev.dynamodb, &dev.table("state")).await;
    let batch_file = dir.path().join("state-batch.json");
    std::fs::write(
        &batch_file,
        serde_json::json!({ "Records": stream.read_new().await }).to_string(),
    )
    .unwrap();
    tally_ok(&["invoke", "aggregate", "--event", path(&batch_file)], &env);
    assert!(dev.alerts(0).await.is_empty());

    // The schedule's tick decides it: one alert, the snapshot, a heartbeat.
    let stdout = tally_ok(&["invoke", "rules", "--tick"], &env);
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["ticks"], 1, "{stdout}");
    assert_eq!(response["heartbeat"], 1, "{stdout}");
    assert_eq!(response["messages_sent"], 1, "{stdout}");
    let alerts = dev.alerts(1).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = body(&alerts[0]);
    assert_eq!(alert["rule"], "counter1-max");
    assert_eq!(alert["state"], "firing");
    assert_eq!(
        dev.object(&format!("totals/{date}")).await.as_deref(),
        Some("COUNTER1 191122\n")
    );

    // The same event from a file, as a replay of the schedule's: decided
    // already, nothing sent again.
    let tick_file = dir.path().join("tick.json");
    std::fs::write(&tick_file, tally_rules::invocation::TICK_EVENT).unwrap();
    let stdout = tally_ok(&["invoke", "rules", "--event", path(&tick_file)], &env);
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["messages_sent"], 0, "{stdout}");

    // The pump ticks on its clock too: with --once, once the streams are
    // drained (the totals' stream still holds the batch the tick decided).
    let stdout = dev.pump_once();
    let ticks = batches(&stdout, "tick");
    assert_eq!(ticks.len(), 1, "{stdout}");
    assert!(
        ticks[0].starts_with("tick       2 dates: ")
            && ticks[0].ends_with(", 0 messages sent, 0 snapshots written"),
        "{stdout}"
    );
    assert!(dev.alerts(0).await.is_empty());
}

/// The S3 event AWS sends for an upload, in the shape of its documented sample.
fn put_event(bucket: &str, key: &str, sequencer: &str) -> Value {
    tally_tests::s3_event(&tally_tests::S3Change {
        event_name: "ObjectCreated:Put",
        bucket,
        key,
        etag: None,
        version_id: None,
        sequencer: Some(sequencer),
        event_millis: 1_447_668_000_000,
    })
}

#[tokio::test]
async fn invoke_runs_one_handler_on_an_event_file_and_reconcile_checks_and_repairs() {
    let dev = Dev::up().await;
    let env = dev.environment();
    let dir = tempfile::tempdir().unwrap();
    let bucket = dev.text("bucket");
    let date = Date::parse("2015-11-16").unwrap();

    // An upload, and the S3 event AWS would send for it, given to ingest.
    let key = format!("counters/{date}/web 1");
    dev.upload(&bucket, &key, "COUNTER1 5 COUNTER2 7").await;
    let event = put_event(&bucket, &key, "0055AED6DCD90281E5");
    let event_file = dir.path().join("s3-put.json");
    std::fs::write(&event_file, event.to_string()).unwrap();
    let stdout = tally_ok(&["invoke", "ingest", "--event", path(&event_file)], &env);
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["written"], 1, "{stdout}");

    // The state table's stream, in Lambda's shape, given to aggregate.
    let sdk = sdk_config().await;
    let mut stream =
        tally_tests::streams::StreamReader::open(&sdk, &dev.dynamodb, &dev.table("state")).await;
    let records = stream.read_new().await;
    assert_eq!(records.len(), 1);
    let batch_file = dir.path().join("state-batch.json");
    std::fs::write(
        &batch_file,
        serde_json::json!({ "Records": records }).to_string(),
    )
    .unwrap();
    let stdout = tally_ok(&["invoke", "aggregate", "--event", path(&batch_file)], &env);
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    assert_eq!(dev.total(&date, "COUNTER2").await, Some(7));

    let stdout = tally_ok(&["reconcile", "--date", date.as_str()], &env);
    assert!(stdout.contains("1 instances, 2 counters"), "{stdout}");
    assert!(stdout.ends_with("no drift\n"), "{stdout}");

    // A second instance ingested but never aggregated: drift, repaired.
    let key = format!("counters/{date}/web 2");
    dev.upload(&bucket, &key, "COUNTER1 10").await;
    let event = put_event(&bucket, &key, "0055AED6DCD90281E6");
    std::fs::write(&event_file, event.to_string()).unwrap();
    tally_ok(&["invoke", "ingest", "--event", path(&event_file)], &env);
    let check = tally(&["reconcile", "--date", date.as_str()], &env);
    let (stdout, stderr) = texts(&check);
    assert_eq!(check.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("COUNTER1: stored 5 from 1 instances, recomputed 15 from 2"),
        "{stdout}"
    );
    assert!(
        stderr.contains("--repair"),
        "the error says what to do: {stderr}"
    );
    let stdout = tally_ok(&["reconcile", "--date", date.as_str(), "--repair"], &env);
    assert!(stdout.contains("totals repaired: 1"), "{stdout}");
    assert_eq!(dev.total(&date, "COUNTER1").await, Some(15));
    let stdout = tally_ok(&["reconcile", "--date", date.as_str()], &env);
    assert!(stdout.ends_with("no drift\n"), "{stdout}");

    // AWS's own sample events: a key off the convention is ignored; a
    // stream record that is not a state item is reported as a failed item
    // (exit 1, the response still printed).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/aws-events");
    let stdout = tally_ok(
        &[
            "invoke",
            "ingest",
            "--event",
            path(&fixtures.join("s3-put.json")),
        ],
        &env,
    );
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&response["ignored"], &response["written"]),
        (&1.into(), &0.into())
    );
    let output = tally(
        &[
            "invoke",
            "aggregate",
            "--event",
            path(&fixtures.join("dynamodb-update.json")),
        ],
        &env,
    );
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        response["batchItemFailures"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(stderr.contains("batch item failure"), "{stderr}");

    // Without its settings a function says which variable is missing.
    let output = tally(
        &["invoke", "aggregate", "--event", path(&batch_file)],
        &BTreeMap::new(),
    );
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("TALLY_PARTIALS_TABLE is not set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn backfill_ingests_what_was_in_the_bucket_before_and_never_twice() {
    let dev = Dev::up().await;
    let env = dev.environment();
    // A bucket without notifications: uploads there reach nothing until
    // a backfill.
    let old_bucket = unique("before").to_lowercase();
    dev.s3
        .create_bucket()
        .bucket(&old_bucket)
        .send()
        .await
        .unwrap();
    let date = "2015-11-16";
    for (key, body) in [
        (format!("counters/{date}/i-1"), "COUNTER1 12345"),
        (format!("counters/{date}/i-2"), "COUNTER1 123456"),
        (format!("counters/{date}/i 3+"), "COUNTER1 1000 COUNTER2 4"),
        (format!("counters/{date}/broken"), "COUNTER1 12x"),
        (format!("counters/{date}/"), ""),
        ("counters/2015-11-17/i-1".to_owned(), "COUNTER1 1"),
    ] {
        dev.upload(&old_bucket, &key, body).await;
    }

    let stdout = tally_ok(&["backfill", "--bucket", &old_bucket, "--date", date], &env);
    assert!(stdout.contains(": 5 objects"), "{stdout}");
    assert!(stdout.contains("      3 accepted"), "{stdout}");
    assert!(stdout.contains("      1 rejected"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "counters/{date}/broken: token 2 (\"12x\") at byte"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("      1 ignored"), "{stdout}");

    // The stages downstream take the backfilled state like any other.
    dev.pump_once();
    let day = Date::parse(date).unwrap();
    assert_eq!(
        dev.total(&day, "COUNTER1").await,
        Some(12_345 + 123_456 + 1000)
    );
    assert_eq!(dev.total(&day, "COUNTER2").await, Some(4));

    // Again: nothing new, except an object that changed since.
    dev.upload(&old_bucket, &format!("counters/{date}/i-1"), "COUNTER1 5")
        .await;
    let stdout = tally_ok(&["backfill", "--bucket", &old_bucket, "--date", date], &env);
    assert!(stdout.contains("      1 accepted"), "{stdout}");
    assert!(stdout.contains("      2 unchanged"), "{stdout}");
    dev.pump_once();
    assert_eq!(dev.total(&day, "COUNTER1").await, Some(5 + 123_456 + 1000));

    // A missing bucket is named, with what to do.
    let output = tally(&["backfill", "--bucket", "no-such-bucket-here"], &env);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("no-such-bucket-here"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}
