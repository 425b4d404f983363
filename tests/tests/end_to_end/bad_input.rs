//! A catalogue of bad input, one test each, at every edge of the pipeline:
//! the events ingest is invoked with, the object keys and bodies it reads,
//! the stream records the aggregate and rules stages are handed, counter
//! names that look like DynamoDB expression syntax, the rules files ops
//! write, and expressions that cannot be evaluated.
//!
//! The rule every test here follows: each one asserts
//!
//! 1. **a clear error** that names the thing and the fix, checked on the
//!    text a user sees (the reason in ingest's report, the reason a stage
//!    logs, or the error a handler or loader returns), and
//! 2. **that nothing already stored changed**: the stores first hold a
//!    good upload (ingested, aggregated, evaluated, snapshot written),
//!    the bad input is thrown, and the state table, the totals, the snapshot
//!    (and, for rules, the alert records) are compared with before.
//!
//! What "the fix" is depends on who can act: a rejected body names the
//! token and byte offset for the producer's owner; an ignored key says what
//! the convention is; an undecodable event or stream record names the
//! message or record so it can be found in the dead-letter queue; a rules
//! file gives file:line:column; a rule that cannot be evaluated names the
//! rule and the operation. Where the stores legitimately move (a stream
//! record refused for a good upload), "nothing changed" is what the refused
//! stage keeps: the totals, or the snapshot and the alert records. Counter
//! names that look like DynamoDB expression syntax are valid input: for
//! them the test asserts no error and every store and output unchanged.
//!
//! Many cases are also covered at unit level or in the other end-to-end
//! files; each test names where, and still checks both properties here end
//! to end, against the AWS API server and through the real handlers.
//!
//! What these tests cannot see, and why:
//!
//! - Bytes that are not JSON at all never reach a handler: the Lambda
//!   runtime decodes the payload into JSON and fails the invocation itself
//!   before any tally code runs (`tally invoke` does the same with its own
//!   message, in the `tally` binary, which this crate cannot run). The
//!   handler is given what it can receive: JSON of the wrong shape, and
//!   envelopes whose inner text (an SNS `Message`, an SQS `body`) is
//!   truncated or not JSON, which ingest decodes itself.
//! - `tally rules check` is not run as a command here (this crate cannot
//!   build the `tally` binary); it loads a folder through
//!   `tally_rules::bundle::load_config_dir`, which is tested here, and its
//!   exit code for a bad folder is tested in cli/tests/rules.rs.
//! - For the 100 MB object, peak memory is not measured (it would include
//!   the test's own copy of the object); the bytes the server delivers to
//!   ingest are counted instead, by a relay between them, which would count
//!   all 100 MB if the adapter read the object whole.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::timeout::TimeoutConfig;
use serde_json::{Value, json};
use tally_aws::alerts_table::DynamoAlertStore;
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::DynamoStateStore;
use tally_core::key::Date;
use tally_core::ports::AlertStore;
use tally_core::rules::RuleSet;
use tally_core::rules::alert::AlertRecord;
use tally_core::state::StateItem;
use tally_ingest::{IngestConfig, IngestResponse, Ingestor};
use tally_tests::rules_world::{DATE, RulesWorld, body};
use tally_tests::streams::lambda_event;
use tally_tests::{S3Change, s3_event, sdk_config, sns_event, sqs_event};

// ---------------------------------------------------------------------------
// The harness: a pipeline with one upload, what it stored, and what the stages log.
// ---------------------------------------------------------------------------

/// Rules of that world: one limit that the first upload does not break.
const RULES: &str = r#"
rules:
  - name: errors-high
    counter: errors
    max: 5
    severity: critical
"#;

/// The good upload every test starts from.
const FIRST_BODY: &str = "requests 10\nerrors 1\n";

/// Everything the pipeline has stored for [`DATE`].
#[derive(Debug, PartialEq)]
struct Stored {
    state: Vec<StateItem>,
    totals: BTreeMap<String, i128>,
    snapshot_text: Option<String>,
    /// Carries `generated_at`, so a snapshot rewritten with the same totals shows.
    snapshot_json: Option<String>,
    alerts: Vec<AlertRecord>,
}

/// A whole pipeline on the server with `FIRST_BODY` uploaded as `i-1`,
/// ingested, aggregated and evaluated, and the stage's clock moved on so
/// that any later snapshot differs from the stored one.
async fn with_first_upload(rules: &str) -> (RulesWorld, Stored) {
    let mut world = RulesWorld::new(rules).await;
    world.upload("i-1", FIRST_BODY).await;
    world.pump().await;
    world.advance(Duration::from_secs(60));
    let before = stored(&world).await;
    assert_eq!(
        before.totals,
        totals(&[("errors", 1), ("requests", 10)]),
        "the first upload reached the totals"
    );
    assert!(
        before.snapshot_json.is_some(),
        "the first upload wrote a snapshot"
    );
    (world, before)
}

async fn stored(world: &RulesWorld) -> Stored {
    let mut state = world.pipeline.ingest.all_state().await;
    state.sort_by(|a, b| a.instance.cmp(&b.instance));
    let mut alerts = alert_store(world)
        .alerts(&date())
        .await
        .expect("read the alert records");
    alerts.sort_by(|a, b| a.alert.cmp(&b.alert));
    Stored {
        state,
        totals: world.pipeline.totals(DATE).await,
        snapshot_text: world.object(&format!("totals/{DATE}")).await,
        snapshot_json: world.object(&format!("totals/{DATE}.json")).await,
        alerts,
    }
}

/// Hands `event` to ingest, which must fail the invocation (so that Lambda
/// retries it and then sends it to the dead-letter queue), and returns the
/// error users see.
async fn ingest_refuses(world: &RulesWorld, event: &Value) -> String {
    match world.pipeline.ingest.ingestor.handle(event).await {
        Err(error) => error.to_string(),
        Ok((_, report)) => panic!("ingest accepted an event it must refuse: {report:?}"),
    }
}

/// Nothing reached the state table's stream (so nothing can reach the
/// totals), and every store reads as it did before the bad input.
async fn assert_nothing_changed(world: &mut RulesWorld, before: &Stored, input: &str) {
    let records = world.pipeline.stream.read_new().await;
    assert!(
        records.is_empty(),
        "{input}: the state table changed: {records:#?}"
    );
    assert_eq!(&stored(world).await, before, "{input}: a store changed");
}

fn alert_store(world: &RulesWorld) -> DynamoAlertStore {
    DynamoAlertStore::new(world.pipeline.ingest.dynamodb.clone(), &world.alerts_table)
}

fn date() -> Date {
    Date::parse(DATE).expect("the test date is valid")
}

fn totals(pairs: &[(&str, i128)]) -> BTreeMap<String, i128> {
    pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
}

/// What the stages log while a test runs, as the fmt subscriber writes it.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures this thread's logs until the guard drops. `#[tokio::test]`
    /// runs the handlers on the test's own thread, so their logs land here.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let buffer = logs.0.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(buffer.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the log buffer")).into_owned()
    }

    /// The logged line holding every one of `needles`; fails the test if none does.
    fn line_with(&self, needles: &[&str]) -> String {
        let text = self.text();
        let line = text
            .lines()
            .find(|line| needles.iter().all(|needle| line.contains(needle)))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no log line holds all of {needles:?}; the log:\n{text}"));
        // Shown with --nocapture: the catalogue's messages as users see them.
        eprintln!("logged: {line}");
        line
    }
}

// ---------------------------------------------------------------------------
// Events ingest is invoked with.
// ---------------------------------------------------------------------------

/// The SNS notification for a fresh, good upload of `i-2`: ingesting it
/// would change the stores, so a refusal is visible if it fails to refuse.
async fn good_event_for_i2(world: &RulesWorld) -> Value {
    let ingest = &world.pipeline.ingest;
    let uploaded = ingest
        .upload(&format!("counters/{DATE}/i-2"), "requests 5\nerrors 9\n")
        .await;
    ingest.created_event(&uploaded)
}

// Unit level: ingest/src/event.rs (undecodable_input_names_the_message_and_the_field).
#[tokio::test]
async fn truncated_sns_message_is_refused_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let inner = good_event_for_i2(&world).await.to_string();
    let mut event = sns_event(&json!({}));
    // The S3 event inside SNS's envelope, cut off halfway, as a truncating
    // relay or a hand-edited replay would leave it.
    event["Records"][0]["Sns"]["Message"] = inner[..inner.len() / 2].into();
    let message = ingest_refuses(&world, &event).await;
    assert!(
        message.starts_with("1 of 1 records failed; first: SNS message ")
            && message.contains("the S3 event is not JSON: EOF while parsing"),
        "{message}"
    );
    assert_nothing_changed(&mut world, &before, "a truncated SNS message").await;
}

// Unit level: ingest/src/event.rs (undecodable_input_names_the_message_and_the_field).
#[tokio::test]
async fn sns_record_whose_message_is_not_a_string_is_refused_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let inner = good_event_for_i2(&world).await;
    let mut event = sns_event(&inner);
    // The S3 event as a JSON object instead of the string SNS always sends.
    event["Records"][0]["Sns"]["Message"] = inner;
    let message = ingest_refuses(&world, &event).await;
    assert!(
        message.starts_with(
            "1 of 1 records failed; first: SNS envelope does not decode: Records[0].Sns.Message: invalid type: map, expected a string"
        ),
        "{message}"
    );
    assert_nothing_changed(&mut world, &before, "an SNS Message that is not a string").await;
}

// Unit level: ingest/src/event.rs; end to end for SQS: tests/tests/ingest.rs
// (one_undecodable_sqs_message_fails_alone).
#[tokio::test]
async fn sqs_message_whose_body_is_not_json_fails_alone_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    // Bytes that are not JSON at all, as the body of a queued message: the
    // runtime decoded the SQS event, ingest decodes the body.
    let event = sqs_event(&[(
        "m-garbage".into(),
        "\u{1}\u{2}PK\u{3}\u{4} not an S3 event".into(),
    )]);
    let (response, report) = world
        .pipeline
        .ingest
        .ingestor
        .handle(&event)
        .await
        .expect("an SQS invocation reports its failed messages instead of failing");
    let IngestResponse::Sqs(response) = response else {
        panic!("an SQS invocation answers with batchItemFailures");
    };
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-garbage"]);
    assert_eq!((report.written, report.rejected), (0, 0));
    logs.line_with(&[
        "undecodable message",
        "SQS message m-garbage: the S3 event is not JSON",
    ]);
    assert_nothing_changed(&mut world, &before, "an SQS body that is not JSON").await;
}

// Unit level: ingest/src/event.rs (undecodable_input_names_the_message_and_the_field).
#[tokio::test]
async fn records_given_as_an_object_instead_of_a_list_are_refused_and_change_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let mut event = good_event_for_i2(&world).await;
    let record = event["Records"][0].take();
    event["Records"] = json!({ "0": record });
    let message = ingest_refuses(&world, &event).await;
    assert_eq!(
        message,
        "1 of 1 records failed; first: the event is not one ingest accepts (SNS, S3 or SQS records): no Records[0].EventSource or eventSource"
    );
    assert_nothing_changed(&mut world, &before, "\"Records\": {}").await;
}

#[tokio::test]
async fn s3_record_with_size_as_a_string_is_refused_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let mut inner = good_event_for_i2(&world).await;
    inner["Records"][0]["s3"]["object"]["size"] = "12".into();
    let message = ingest_refuses(&world, &sns_event(&inner)).await;
    assert!(
        message.contains(
            "S3 record 0 does not decode: s3.object.size: invalid type: string \"12\", expected i64"
        ),
        "{message}"
    );
    assert_nothing_changed(&mut world, &before, "size as a string").await;
}

#[tokio::test]
async fn s3_record_with_the_key_as_a_number_is_refused_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let mut inner = good_event_for_i2(&world).await;
    inner["Records"][0]["s3"]["object"]["key"] = json!(20151116);
    let message = ingest_refuses(&world, &sns_event(&inner)).await;
    assert!(
        message.contains(
            "S3 record 0 does not decode: s3.object.key: invalid type: integer `20151116`, expected a string"
        ),
        "{message}"
    );
    assert_nothing_changed(&mut world, &before, "key as a number").await;
}

// ---------------------------------------------------------------------------
// Keys ingest does not own: ignored with a log line, not failed (docs/design.md §1).
// ---------------------------------------------------------------------------

/// Uploads a good body at `key` for real and delivers its event: if ingest
/// did not ignore the key, the body would reach the state table. The log
/// line must name the key and give `reason`.
async fn ignored_key(world: &RulesWorld, logs: &Logs, key: &str, reason: &str) {
    let ingest = &world.pipeline.ingest;
    let uploaded = ingest.upload(key, "requests 5\nerrors 9\n").await;
    let (_, report) = ingest
        .ingestor
        .handle(&sns_event(&ingest.created_event(&uploaded)))
        .await
        .unwrap_or_else(|e| panic!("{key:?}: an ignored key must not fail the invocation: {e}"));
    assert_eq!(
        (
            report.records,
            report.ignored,
            report.failed,
            report.rejected
        ),
        (1, 1, 0, 0),
        "{key:?}: {report:?}"
    );
    assert_eq!(report.capacity.writes, 0, "{key:?}");
    logs.line_with(&["key ignored", &format!("key={key}"), reason]);
}

// Unit level: core/src/key.rs (keys_off_the_convention_say_why); end to end:
// tests/tests/ingest.rs (keys_and_events_off_the_convention_are_ignored_not_failed).
#[tokio::test]
async fn uploads_under_another_prefix_are_ignored_with_a_log_line_and_change_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    for key in [
        format!("uploads/{DATE}/i-2"),
        format!("countersX/{DATE}/i-2"),
    ] {
        ignored_key(
            &world,
            &logs,
            &key,
            "reason=key is not under the prefix \"counters\"/",
        )
        .await;
    }
    assert_nothing_changed(&mut world, &before, "other prefixes").await;
}

#[tokio::test]
async fn folder_markers_are_ignored_with_a_log_line_and_change_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    // What the S3 console's "Create folder" makes: an empty object whose key ends in '/'.
    for key in ["counters/".to_owned(), format!("counters/{DATE}/sub/")] {
        ignored_key(
            &world,
            &logs,
            &key,
            "reason=key should be <prefix>/<YYYY-MM-DD>/<instance-id> with no further '/'",
        )
        .await;
    }
    assert_nothing_changed(&mut world, &before, "folder markers").await;
}

#[tokio::test]
async fn keys_with_invalid_dates_are_ignored_with_a_log_line_and_change_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    for bad in ["2015-13-45", "2015-02-30", "2015-11-1", "20151116"] {
        ignored_key(
            &world,
            &logs,
            &format!("counters/{bad}/i-1"),
            &format!("reason=\"{bad}\" is not a calendar date in YYYY-MM-DD form"),
        )
        .await;
    }
    assert_nothing_changed(&mut world, &before, "invalid dates").await;
}

#[tokio::test]
async fn an_empty_instance_id_is_ignored_with_a_log_line_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    ignored_key(
        &world,
        &logs,
        &format!("counters/{DATE}/"),
        "reason=the instance id (the last path segment) is empty",
    )
    .await;
    assert_nothing_changed(&mut world, &before, "an empty instance id").await;
}

#[tokio::test]
async fn an_instance_id_over_255_bytes_is_ignored_with_a_log_line_and_changes_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let (logs, _guard) = Logs::capture();
    // 128 two-byte characters: 256 bytes, though only 128 characters.
    let instance = "é".repeat(128);
    ignored_key(
        &world,
        &logs,
        &format!("counters/{DATE}/{instance}"),
        "reason=the instance id is 256 bytes, over the 255-byte limit",
    )
    .await;
    assert_nothing_changed(&mut world, &before, "an over-long instance id").await;
}

// Unit level: ingest/src/apply.rs (Ingestor::apply's bucket check).
#[tokio::test]
async fn events_for_another_bucket_are_ignored_with_a_reason_and_change_nothing() {
    let (mut world, before) = with_first_upload(RULES).await;
    let ingest = &world.pipeline.ingest;
    // Another bucket on the same server holds a good upload at a key of the
    // convention: reading it would change the state.
    let other = format!("{}-other", ingest.bucket);
    ingest
        .s3
        .create_bucket()
        .bucket(&other)
        .send()
        .await
        .expect("create the other bucket");
    let key = format!("counters/{DATE}/i-1");
    let put = ingest
        .s3
        .put_object()
        .bucket(&other)
        .key(&key)
        .body(b"requests 999\n".to_vec().into())
        .send()
        .await
        .expect("upload to the other bucket");
    let event = s3_event(&S3Change {
        event_name: "ObjectCreated:Put",
        bucket: &other,
        key: &key,
        etag: put.e_tag.as_deref(),
        version_id: None,
        sequencer: Some(&ingest.next_sequencer()),
        event_millis: 1_447_700_000_000,
    });
    // Ingest as deployed with TALLY_BUCKET set to its own bucket.
    let own_bucket_only = Ingestor::new(
        ingest.store.clone(),
        S3ObjectStore::new(ingest.s3.clone()),
        IngestConfig {
            bucket: Some(ingest.bucket.clone()),
            ..IngestConfig::default()
        },
    );
    let (logs, _guard) = Logs::capture();
    let (_, report) = own_bucket_only
        .handle(&sns_event(&event))
        .await
        .expect("another bucket's event is ignored, not failed");
    assert_eq!((report.ignored, report.failed, report.written), (1, 0, 0));
    logs.line_with(&[
        "key ignored",
        &format!("reason=bucket {other} is not {}", ingest.bucket),
    ]);
    assert_nothing_changed(&mut world, &before, "another bucket's event").await;
}

// ---------------------------------------------------------------------------
// Bodies of every rejected kind (docs/design.md §1): rejected whole, the instance
// keeps its last accepted state, the reason says where.
// Unit level: core/src/body.rs; end to end: tests/tests/ingest.rs
// (every_rejected_body_keeps_the_previous_state_and_says_exactly_why).
// ---------------------------------------------------------------------------

/// Uploads `body` over the first upload's object, ingests it, and checks
/// the rejection reason in the report (the embedded runtime prints it, the
/// Lambda logs it with the key) and that nothing stored changed.
async fn rejected_body(body: &[u8], reason: &str) {
    let (mut world, before) = with_first_upload(RULES).await;
    let ingest = &world.pipeline.ingest;
    let key = format!("counters/{DATE}/i-1");
    let uploaded = ingest.upload(&key, body.to_vec()).await;
    let (logs, guard) = Logs::capture();
    let (_, report) = ingest
        .ingestor
        .handle(&sns_event(&ingest.created_event(&uploaded)))
        .await
        .expect("a rejected body is logged and counted, not failed");
    drop(guard);
    assert_eq!(
        (report.rejected, report.failed, report.capacity.writes),
        (1, 0, 0),
        "{reason}: {report:?}"
    );
    assert_eq!(report.rejections, [(key.clone(), reason.to_owned())]);
    logs.line_with(&["upload rejected", &format!("{key}: {reason}")]);
    assert_nothing_changed(&mut world, &before, reason).await;
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerrors \xc3\x28 2\n",
        "body is not UTF-8: invalid byte at offset 19",
    )
    .await;
}

#[tokio::test]
async fn a_body_with_an_odd_number_of_tokens_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerrors 2\nlatency\n",
        "body has an odd number of tokens (5): name \"latency\" at byte 21 has no value",
    )
    .await;
}

#[tokio::test]
async fn a_body_with_a_bad_value_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerrors 2.5\n",
        "token 4 (\"2.5\") at byte 19 is not an integer",
    )
    .await;
}

#[tokio::test]
async fn a_body_with_a_value_outside_i64_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerrors -9223372036854775809\n",
        "token 4 (\"-9223372036854775809\") at byte 19 is outside the signed 64-bit range [-9223372036854775808, 9223372036854775807]",
    )
    .await;
}

#[tokio::test]
async fn a_body_naming_a_counter_twice_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerrors 2\nrequests 12\n",
        "token 5 at byte 21 repeats counter name \"requests\" (first at token 1); each counter may appear once",
    )
    .await;
}

#[tokio::test]
async fn a_body_with_a_name_over_255_bytes_is_rejected_whole_and_changes_nothing() {
    let body = format!("requests 11\n{} 2\n", "n".repeat(256));
    rejected_body(
        body.as_bytes(),
        &format!(
            "token 3 (\"{}…\") at byte 12 is not a counter name: 256 bytes, over the 255-byte limit",
            "n".repeat(64)
        ),
    )
    .await;
}

#[tokio::test]
async fn a_body_with_a_control_character_in_a_name_is_rejected_whole_and_changes_nothing() {
    rejected_body(
        b"requests 11\nerr\x00ors 2\n",
        "token 3 (\"err\\0ors\") at byte 12 is not a counter name: it contains '\\0', and names may not contain whitespace or control characters",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_size_cap_is_rejected_whole_and_changes_nothing() {
    // Valid tokens all the way: only the size is wrong.
    let mut body = Vec::new();
    let mut n = 0;
    while body.len() <= tally_core::body::DEFAULT_MAX_BODY_BYTES as usize {
        body.extend_from_slice(format!("c{n} 1\n").as_bytes());
        n += 1;
    }
    let size = body.len();
    rejected_body(
        &body,
        &format!(
            "body is {size} bytes, over the 1048576-byte cap; split the counters or raise the cap"
        ),
    )
    .await;
}

// ---------------------------------------------------------------------------
// A 100 MB object: refused by the cap before it is read whole.
// End to end for a body just over the cap: tests/tests/ingest.rs
// (an_object_over_the_cap_is_refused_from_its_size_and_the_state_kept).
// ---------------------------------------------------------------------------

/// A TCP relay between an S3 client and the server that counts the bytes
/// the server's answers deliver to the client. Each connection is relayed
/// by two threads; when the client closes its end, the relay stops sending.
struct CountingRelay {
    endpoint: String,
    delivered: Arc<AtomicU64>,
}

/// How the relay passes the server's answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    AsSent,
    /// Without `Content-Length`, the body ending when the connection closes
    /// (as HTTP/1.1 allows): the client cannot know the size up front.
    WithoutLength,
}

impl CountingRelay {
    fn start(upstream: &str, answers: Answers) -> CountingRelay {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let endpoint = format!(
            "http://{}",
            listener.local_addr().expect("the relay's address")
        );
        let delivered = Arc::new(AtomicU64::new(0));
        let counter = delivered.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(client_reader), Ok(server_writer)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    relay(client_reader, server_writer, None, Answers::AsSent)
                });
                let counter = counter.clone();
                std::thread::spawn(move || relay(server, client, Some(counter), answers));
            }
        });
        CountingRelay {
            endpoint,
            delivered,
        }
    }
}

/// Copies `from` to `to` until either end closes, counting what it passes
/// on; with [`Answers::WithoutLength`], the first answer's head is
/// rewritten on the way.
fn relay(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>, answers: Answers) {
    let mut buffer = vec![0u8; 64 * 1024];
    // The first answer's bytes until its head is complete, when it is rewritten.
    let mut head: Option<Vec<u8>> = (answers == Answers::WithoutLength).then(Vec::new);
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut out = buffer[..read].to_vec();
        if let Some(pending) = head.as_mut() {
            pending.extend_from_slice(&out);
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            out = without_length(&pending[..end]);
            out.extend_from_slice(&pending[end + 4..]);
            head = None;
        }
        // Counted before the write: a client that hangs up after the head
        // makes the write fail, and what was sent on must still count (an
        // upper bound on what reached it, which is what the test bounds).
        if let Some(count) = &count {
            count.fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// An answer's head (status line and headers, without the blank line)
/// with `Content-Length` dropped and the connection closing after the body.
fn without_length(head: &[u8]) -> Vec<u8> {
    let mut rewritten = String::new();
    for line in String::from_utf8_lossy(head).split("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    rewritten.into_bytes()
}

/// An ingest over the test's state table that reads the bucket through a relay.
fn ingest_through(
    world: &RulesWorld,
    relay: &CountingRelay,
    sdk: &aws_config::SdkConfig,
) -> (
    Ingestor<DynamoStateStore, S3ObjectStore>,
    aws_sdk_s3::Client,
) {
    let relayed = sdk
        .clone()
        .into_builder()
        .endpoint_url(&relay.endpoint)
        .build();
    let s3 = tally_aws::config::s3(&relayed);
    let ingestor = Ingestor::new(
        world.pipeline.ingest.store.clone(),
        S3ObjectStore::new(s3.clone()),
        IngestConfig::default(),
    );
    (ingestor, s3)
}

#[tokio::test]
async fn a_100_mb_object_is_refused_by_the_size_cap_before_it_is_read_whole() {
    const SIZE: usize = 100 * 1024 * 1024;
    let (mut world, before) = with_first_upload(RULES).await;
    let sdk = sdk_config().await;
    // Valid counters all the way over the first upload's object, so
    // only the size can refuse it. The server takes a while to store
    // 100 MB: this upload alone gets a long timeout.
    let mut body = b"requests 11\n".repeat(SIZE / 12);
    body.resize(SIZE, b'\n');
    let patient = sdk
        .clone()
        .into_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(300))
                .operation_timeout(Duration::from_secs(300))
                .build(),
        )
        .build();
    let ingest = &world.pipeline.ingest;
    let key = format!("counters/{DATE}/i-1");
    let put = tally_aws::config::s3(&patient)
        .put_object()
        .bucket(&ingest.bucket)
        .key(&key)
        .body(body.into())
        .send()
        .await
        .expect("upload 100 MB to the test server");
    let event = s3_event(&S3Change {
        event_name: "ObjectCreated:Put",
        bucket: &ingest.bucket,
        key: &key,
        etag: put.e_tag.as_deref(),
        version_id: None,
        sequencer: Some(&ingest.next_sequencer()),
        event_millis: 1_447_700_000_000,
    });

    // As S3 answers: the length is known, and the body is never read.
    let relay = CountingRelay::start(&tally_tests::endpoint(), Answers::AsSent);
    let (ingestor, relayed_s3) = ingest_through(&world, &relay, &sdk);
    let (_, report) = ingestor
        .handle(&sns_event(&event))
        .await
        .expect("an object over the cap is rejected, not failed");
    assert_eq!(
        report.rejections,
        [(
            key.clone(),
            "body is 104857600 bytes, over the 1048576-byte cap; split the counters or raise the cap"
                .to_owned()
        )]
    );
    // The answer's head and what the sockets buffered before the client
    // hung up: far below the object. An adapter that read the body whole
    // (and then checked its size) would have been sent all 100 MB.
    let delivered = relay.delivered.load(Ordering::Relaxed);
    eprintln!("the relay delivered {delivered} bytes of the 100 MB object");
    assert!(
        delivered > 0 && delivered < 16 * 1024 * 1024,
        "{delivered} bytes of the 100 MB object reached ingest"
    );
    // The relay does count body bytes: a plain read of 32 MiB through it
    // is counted whole.
    let read = relayed_s3
        .get_object()
        .bucket(&ingest.bucket)
        .key(&key)
        .range("bytes=0-33554431")
        .send()
        .await
        .expect("a ranged read through the relay")
        .body
        .collect()
        .await
        .expect("the range's bytes")
        .into_bytes();
    assert_eq!(read.len(), 32 * 1024 * 1024);
    let counted = relay.delivered.load(Ordering::Relaxed) - delivered;
    assert!(
        counted >= 32 * 1024 * 1024,
        "the relay counted {counted} bytes of a 32 MiB read"
    );

    // When the answer does not say its length (or says it wrongly), the
    // adapter reads in chunks and stops one chunk past the cap.
    let relay = CountingRelay::start(&tally_tests::endpoint(), Answers::WithoutLength);
    let (ingestor, _) = ingest_through(&world, &relay, &sdk);
    let mut later = event.clone();
    later["Records"][0]["s3"]["object"]["sequencer"] = ingest.next_sequencer().into();
    let (_, report) = ingestor
        .handle(&sns_event(&later))
        .await
        .expect("an object over the cap is rejected, not failed");
    let [(rejected_key, reason)] = report.rejections.as_slice() else {
        panic!("one rejection expected: {report:?}");
    };
    assert_eq!(rejected_key, &key);
    // The size given is then what was read before stopping: past the cap,
    // and nowhere near the object's 100 MB, which shows the length really
    // was withheld. (It is a lower bound that the message states as the
    // size; S3 always sends the length, so this only shows if it is wrong.)
    let size: u64 = reason
        .strip_prefix("body is ")
        .and_then(|rest| {
            rest.strip_suffix(
                " bytes, over the 1048576-byte cap; split the counters or raise the cap",
            )
        })
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("not the size cap's reason: {reason}"));
    assert!(size > 1024 * 1024 && size < 2 * 1024 * 1024, "{reason}");
    let delivered = relay.delivered.load(Ordering::Relaxed);
    eprintln!("the relay delivered {delivered} bytes of the 100 MB object sent without its length");
    assert!(
        delivered >= size && delivered < 16 * 1024 * 1024,
        "{delivered} bytes of the 100 MB object reached ingest"
    );
    assert_nothing_changed(&mut world, &before, "a 100 MB object").await;
}

// ---------------------------------------------------------------------------
// Stream records the aggregate stage cannot read.
// Unit level: aggregate/src/handler.rs (decode_record); end to end:
// tests/tests/aggregate.rs (an_undecodable_record_stops_the_batch_there_and_is_reported).
// ---------------------------------------------------------------------------

/// The state stream's record of a fresh, good upload of `i-2`.
async fn state_record_of_i2(world: &mut RulesWorld) -> Value {
    world.upload("i-2", "requests 5\nerrors 9\n").await;
    let mut records = world.pipeline.stream.read_new().await;
    assert_eq!(records.len(), 1, "one state change: {records:#?}");
    records.remove(0)
}

/// Hands the aggregate stage `bad` alone: it must report the record as
/// failed with `reason` logged, and the totals, the totals' stream and the
/// snapshot must be as before. Then the genuine record goes through, so the
/// refusal held back nothing it should not have.
async fn refused_state_record(bad: impl FnOnce(&mut Value), reason: &str) {
    let (mut world, before) = with_first_upload(RULES).await;
    let good = state_record_of_i2(&mut world).await;
    let mut record = good.clone();
    bad(&mut record);
    let (logs, guard) = Logs::capture();
    let (response, report) = world
        .pipeline
        .aggregator
        .handle(&lambda_event(&[record]))
        .await;
    drop(guard);
    assert_eq!(report.failed, 1, "{reason}: {report:?}");
    assert_eq!(response.batch_item_failures.len(), 1, "{reason}");
    let event_id = good["eventID"].as_str().expect("an eventID");
    logs.line_with(&[
        "undecodable stream record",
        &format!("stream record {event_id} (sequence number "),
        reason,
    ]);
    assert!(
        world.totals_stream.read_new().await.is_empty(),
        "{reason}: a total changed"
    );
    assert_eq!(world.pipeline.totals(DATE).await, before.totals, "{reason}");
    assert_eq!(
        world.object(&format!("totals/{DATE}.json")).await,
        before.snapshot_json,
        "{reason}"
    );

    let (response, _) = world
        .pipeline
        .aggregator
        .handle(&lambda_event(&[good]))
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        world.pipeline.totals(DATE).await,
        totals(&[("errors", 10), ("requests", 15)])
    );
}

#[tokio::test]
async fn a_state_record_without_images_is_refused_and_changes_no_total() {
    refused_state_record(
        |record| {
            let change = record["dynamodb"]
                .as_object_mut()
                .expect("the record's dynamodb part");
            change.remove("NewImage");
            change.remove("OldImage");
        },
        "the record has neither an old nor a new image",
    )
    .await;
}

#[tokio::test]
async fn a_state_record_whose_counters_are_of_the_wrong_dynamodb_type_is_refused_and_changes_no_total()
 {
    refused_state_record(
        |record| {
            record["dynamodb"]["NewImage"]["Counters"] = json!({"S": "requests 5 errors 9"});
        },
        "NewImage {Counters: S, Date: S, Deleted: BOOL, ETag: S, Instance: S, ObjectKey: S, Ordering: S, Part: S} is not a state item: Expected map",
    )
    .await;
}

#[tokio::test]
async fn a_state_record_with_an_invalid_date_is_refused_and_changes_no_total() {
    refused_state_record(
        |record| {
            record["dynamodb"]["NewImage"]["Date"] = json!({"S": "2015-02-30"});
        },
        "is not a state item: \"2015-02-30\" is not a calendar date in YYYY-MM-DD form",
    )
    .await;
}

#[tokio::test]
async fn a_state_record_without_a_sequence_number_is_refused_and_changes_no_total() {
    refused_state_record(
        |record| {
            record["dynamodb"]
                .as_object_mut()
                .expect("the record's dynamodb part")
                .remove("SequenceNumber");
        },
        "sequence number \"\" is not a decimal number of at most 40 digits",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Stream records the rules stage cannot read.
// Unit level: rules/src/handler.rs (a_record_that_is_not_a_total_names_itself);
// end to end: tests/tests/rules.rs
// (an_undecodable_record_is_reported_and_the_rest_still_evaluated).
// ---------------------------------------------------------------------------

async fn refused_totals_record(bad: impl Fn(&mut Value), reason: &str) {
    let (mut world, before) = with_first_upload(RULES).await;
    world.upload("i-2", "requests 5\nerrors 9\n").await;
    let good = world.aggregate().await;
    assert!(!good.is_empty(), "the upload changed totals");
    let refused: Vec<Value> = good
        .iter()
        .map(|record| {
            let mut record = record.clone();
            bad(&mut record);
            record
        })
        .collect();
    let (logs, guard) = Logs::capture();
    let (response, report) = world.evaluate(&refused).await;
    drop(guard);
    assert_eq!(report.failed, refused.len() as u64, "{reason}: {report:?}");
    assert_eq!(report.snapshots_written, 0, "{reason}");
    assert_eq!(response.batch_item_failures.len(), 1, "{reason}");
    logs.line_with(&["undecodable stream record", "stream record ", reason]);
    // The totals moved (the upload was good), but what the rules stage
    // keeps did not: the snapshot, and the alert records.
    let now = stored(&world).await;
    assert_eq!(now.snapshot_json, before.snapshot_json, "{reason}");
    assert_eq!(now.alerts, before.alerts, "{reason}");
    assert!(
        world.messages(0).await.is_empty(),
        "{reason}: an alert was sent"
    );

    let (response, report) = world.evaluate(&good).await;
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("errors 10\nrequests 15\n")
    );
}

#[tokio::test]
async fn a_totals_record_without_its_date_key_is_refused_and_changes_nothing() {
    refused_totals_record(
        |record| {
            record["dynamodb"]["Keys"]
                .as_object_mut()
                .expect("the record's keys")
                .remove("Date");
        },
        "Keys {Counter: S} are not a total's key (Counter: S, Date: S): missing field `Date`",
    )
    .await;
}

#[tokio::test]
async fn a_totals_record_whose_key_is_of_the_wrong_dynamodb_type_is_refused_and_changes_nothing() {
    refused_totals_record(
        |record| {
            record["dynamodb"]["Keys"]["Date"] = json!({"N": "20151116"});
        },
        "Keys {Counter: S, Date: N} are not a total's key (Counter: S, Date: S): Expected string",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Counter names that look like DynamoDB expression syntax.
// Unit level: core/src/body.rs (names_keep_punctuation_and_non_ascii_unchanged);
// ingest only: tests/tests/ingest.rs
// (an_sns_wrapped_upload_reaches_the_state_table_with_names_and_ids_intact).
// ---------------------------------------------------------------------------

#[tokio::test]
async fn counter_names_that_look_like_dynamodb_expressions_are_stored_and_output_unchanged() {
    // Names cannot hold whitespace (docs/design.md §1), so fragments such as
    // `) OR attribute_exists(x` and `SET x = :v` are written without spaces;
    // everything else DynamoDB's expression syntax gives meaning to is here:
    // placeholders, attribute names of the tables, functions, paths.
    let names = [
        "#a",
        ":v",
        ")OR(attribute_exists(x)",
        "SET#x=:v",
        "Counter",
        "Date",
        "Value",
        "Contributors",
        "Basis",
        "attribute_not_exists(Counter)",
        "a.b",
        "a[0]",
        "#",
        ":",
        "--",
        "'",
        "\"",
        "zähler",
        "計數",
    ];
    let rules = r##"
rules:
  - name: colon-v-high
    counter: ":v"
    max: 100
  - name: hash-a-and-parenthesis
    expr: 'counter("#a") + counter(")OR(attribute_exists(x)") > 0'
"##;
    let (mut world, _) = with_first_upload(rules).await;
    let body_of = |scale: i64| -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} {}\n", (i as i64 + 1) * scale))
            .collect()
    };
    world.upload("i-2", &body_of(1)).await;
    world.upload("i-3", &body_of(100)).await;
    let report = world.pump().await;
    assert_eq!(report.rule_errors, 0, "{report:?}");

    let mut expected = totals(&[("errors", 1), ("requests", 10)]);
    for (i, name) in names.iter().enumerate() {
        expected.insert((*name).to_owned(), (i as i128 + 1) * 101);
    }
    assert_eq!(world.pipeline.totals(DATE).await, expected);
    assert_eq!(world.pipeline.batch_totals(DATE).await, expected);
    let state = world.pipeline.ingest.all_state().await;
    let i2 = state
        .iter()
        .find(|item| item.instance == "i-2")
        .expect("i-2's state");
    let stored_names: Vec<&str> = i2.counters.keys().map(String::as_str).collect();
    let mut sorted_names = names.to_vec();
    sorted_names.sort_unstable();
    assert_eq!(stored_names, sorted_names);

    let text: String = expected
        .iter()
        .map(|(name, value)| format!("{name} {value}\n"))
        .collect();
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some(text.as_str())
    );
    let json: Value = serde_json::from_str(
        &world
            .object(&format!("totals/{DATE}.json"))
            .await
            .expect("the JSON snapshot"),
    )
    .expect("the JSON snapshot parses");
    let counters: BTreeMap<String, i128> = json["counters"]
        .as_object()
        .expect("counters")
        .iter()
        .map(|(name, value)| (name.clone(), value.as_i64().expect("a whole number").into()))
        .collect();
    assert_eq!(counters, expected);

    let messages = world.messages(2).await;
    let mut fired: Vec<(String, Value)> = messages
        .iter()
        .map(|envelope| {
            let alert = body(envelope);
            (
                alert["rule"].as_str().expect("a rule").to_owned(),
                alert["counter"].clone(),
            )
        })
        .collect();
    fired.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fired,
        [
            ("colon-v-high".to_owned(), json!(":v")),
            ("hash-a-and-parenthesis".to_owned(), Value::Null),
        ],
        "{messages:#?}"
    );
}

// ---------------------------------------------------------------------------
// Rules files: YAML bombs and deep nesting.
// Unit level: core/src/rules/load.rs
// (anchors_are_refused_so_a_yaml_bomb_cannot_expand,
// deep_nesting_and_huge_files_are_refused_before_parsing); the S3 source
// keeping good rules over a typo: tests/tests/rules.rs
// (rules_from_a_bucket_reload_on_change_and_a_broken_file_silences_nothing).
// ---------------------------------------------------------------------------

/// "Billion laughs": nine levels of nine aliases each, 9^9 strings if expanded.
fn yaml_bomb() -> String {
    let mut text = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..9 {
        let previous = format!("*a{}", level - 1);
        let aliases = [previous.as_str(); 9].join(",");
        text.push_str(&format!("a{level}: &a{level} [{aliases}]\n"));
    }
    text.push_str("rules:\n  - name: laughs\n    counter: a8\n    max: 1\n");
    text
}

/// Ten thousand nested `[`, as a fuzzer or a broken generator writes them.
fn deep_nesting() -> String {
    format!(
        "rules:\n  - name: deep\n    counter: x\n    max: {}1{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    )
}

/// Refuses `text` as a rules file everywhere one is loaded: the loader,
/// the folder loader the build and `tally rules check` use, and the
/// rules stage's S3 source, which must keep the last good rules running.
async fn refused_rules_file(text: &str, problem: &str) {
    // The loader: quickly, at file:line:column.
    let started = Instant::now();
    let problems = RuleSet::load(&[("ops.yaml", text)])
        .expect_err("the file must be refused")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        problems.contains(&format!("ops.yaml:{problem}")),
        "{problems}"
    );
    assert!(problems.ends_with("1 problem in the rules"), "{problems}");

    // The folder loader behind the build's check and `tally rules check`
    // (cli/src/run.rs load_rules); the command's own exit code and output
    // for a bad folder are tested in cli/tests/rules.rs.
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("ops.yaml"), text).expect("write the rules file");
    let problems = tally_rules::bundle::load_config_dir(dir.path(), "rules-config")
        .expect_err("the folder must be refused");
    assert!(
        problems.contains(&format!("rules-config/ops.yaml:{problem}")),
        "{problems}"
    );

    // The rules stage's source on S3: good rules first, then the bad file
    // over them. The good rules stay in force and still page on-call.
    let (mut world, before) = with_first_upload(RULES).await;
    let s3 = world.pipeline.ingest.s3.clone();
    let bucket = world.pipeline.ingest.bucket.clone();
    let put = |body: String| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            s3.put_object()
                .bucket(&bucket)
                .key("rules/ops.yaml")
                .body(body.into_bytes().into())
                .send()
                .await
                .expect("upload the rules file");
        }
    };
    let source = tally_rules::RuleSource::from_bucket(
        S3ObjectStore::new(s3.clone()),
        &bucket,
        "rules/",
        Duration::ZERO,
        RuleSet::default(),
    );
    put(RULES.to_owned()).await;
    assert!(source.current().await.rule("errors-high").is_some());
    put(text.to_owned()).await;
    let (logs, guard) = Logs::capture();
    let rules = source.current().await;
    drop(guard);
    assert!(
        rules.rule("errors-high").is_some(),
        "the bad file disabled the good rules"
    );
    // The reason is one log entry over several lines: the summary, then
    // one line per problem.
    logs.line_with(&["rules not reloaded"]);
    let entry = format!(
        "rules not reloaded error=the rules under s3://{bucket}/rules/ do not validate; still using the previous rules:\ns3://{bucket}/rules/ops.yaml:{problem}\n1 problem in the rules"
    );
    assert!(
        logs.text().contains(&entry),
        "no {entry:?} in:\n{}",
        logs.text()
    );
    assert_nothing_changed(&mut world, &before, "a bad rules file").await;

    world.rules = (*rules).clone();
    world.upload("i-2", "errors 9\n").await;
    world.pump().await;
    let messages = world.messages(1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(body(&messages[0])["rule"], "errors-high");
}

#[tokio::test]
async fn a_yaml_bomb_rules_file_is_refused_quickly_and_the_good_rules_keep_running() {
    refused_rules_file(
        &yaml_bomb(),
        "1:9: anchors and aliases (& and *) are not allowed in rules files; write each rule out",
    )
    .await;
}

#[tokio::test]
async fn a_rules_file_nested_10000_deep_is_refused_quickly_and_the_good_rules_keep_running() {
    refused_rules_file(&deep_nesting(), "4:1: brackets nest deeper than 64 levels").await;
}

// ---------------------------------------------------------------------------
// Expressions that cannot be evaluated on the day's totals: an error for
// that rule only, the other rules still evaluated, no panic, and the
// failing rule's alert left as it was.
// Unit level: core/src/rules/expr.rs
// (division_by_zero_and_overflow_are_errors_of_the_evaluation); end to end
// for one division: tests/tests/rules.rs
// (a_rule_that_errors_is_reported_and_the_others_still_fire).
// ---------------------------------------------------------------------------

/// Makes a world whose `failing` rules hold on `firing_body` (uploaded as
/// `i-9`), lets them fire, then uploads `failing_body` for `i-9` and
/// `errors 9` for `i-1`: each failing rule must log its own `errors`, keep
/// its alert record, send nothing, and `errors-high` must still fire.
async fn rules_that_fail_to_evaluate(
    failing: &[(&str, &str)],
    firing_body: &str,
    failing_body: &str,
    errors: &[(&str, &str)],
) {
    let mut rules = RULES.to_owned();
    for (name, expr) in failing {
        rules.push_str(&format!("  - name: {name}\n    expr: '{expr}'\n"));
    }
    let (mut world, _) = with_first_upload(&rules).await;
    world.upload("i-9", firing_body).await;
    let report = world.pump().await;
    assert_eq!(report.rule_errors, 0, "{report:?}");
    let fired = world.messages(failing.len()).await;
    assert_eq!(fired.len(), failing.len(), "{fired:#?}");
    let before = stored(&world).await;

    world.upload("i-9", failing_body).await;
    world.upload("i-1", "requests 10\nerrors 9\n").await;
    let (logs, guard) = Logs::capture();
    let report = world.pump().await;
    drop(guard);
    assert_eq!(report.rule_errors, errors.len() as u64, "{report:?}");
    for (rule, message) in errors {
        logs.line_with(&[
            "rule error",
            &format!("rule={rule}"),
            &format!("error={message}"),
        ]);
    }
    let messages = world.messages(1).await;
    let more = world.messages(0).await;
    let sent: Vec<(String, String)> = messages
        .iter()
        .chain(&more)
        .map(|envelope| {
            let alert = body(envelope);
            (
                alert["rule"].as_str().expect("a rule").to_owned(),
                alert["state"].as_str().expect("a state").to_owned(),
            )
        })
        .collect();
    assert_eq!(sent, [("errors-high".to_owned(), "firing".to_owned())]);
    let after = stored(&world).await;
    for (rule, _) in failing {
        let record = |stored: &Stored| {
            stored
                .alerts
                .iter()
                .find(|record| record.alert == *rule)
                .cloned()
                .unwrap_or_else(|| panic!("{rule}: no alert record"))
        };
        assert_eq!(
            record(&after),
            record(&before),
            "{rule}: an evaluation error moved the alert"
        );
    }
}

#[tokio::test]
async fn an_expression_dividing_by_a_zero_total_is_that_rules_error_only() {
    rules_that_fail_to_evaluate(
        &[
            ("a-per-b", r#"counter("A") / counter("B") > 1"#),
            // The way to get a fractional ratio without ratio(): a float
            // dividend, which evalexpr divides without a check.
            (
                "a-per-b-float",
                r#"counter("A") * 1.0 / counter("B") > 1.5"#,
            ),
            ("a-mod-b", r#"counter("A") % counter("B") == 0"#),
        ],
        "A 10\nB 5\n",
        "A 10\nB 0\n",
        &[
            (
                "a-per-b",
                "division of 10 by 0 (division by zero or overflow)",
            ),
            (
                "a-per-b-float",
                "division of 10 by 0 (division by zero or overflow)",
            ),
            (
                "a-mod-b",
                "remainder of 10 by 0 (division by zero or overflow)",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn expressions_overflowing_i64_are_those_rules_errors_only() {
    rules_that_fail_to_evaluate(
        &[
            ("big-doubled", "big * 2 > 0"),
            ("big-plus-one", "big + 1 > 0"),
            ("small-negated", "-small < 0"),
            ("small-over-minus-one", "small / minus < 0"),
        ],
        "big 1\nsmall 1\nminus -1\n",
        "big 9223372036854775807\nsmall -9223372036854775808\nminus -1\n",
        &[
            (
                "big-doubled",
                "9223372036854775807 * 2 overflows the 64-bit integers expressions compute with; keep intermediate values in range",
            ),
            (
                "big-plus-one",
                "9223372036854775807 + 1 overflows the 64-bit integers expressions compute with",
            ),
            (
                "small-negated",
                "-(-9223372036854775808) overflows the 64-bit integers expressions compute with",
            ),
            (
                "small-over-minus-one",
                "division of -9223372036854775808 by -1 (division by zero or overflow)",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn builtin_functions_overflowing_i64_are_those_rules_errors_only() {
    rules_that_fail_to_evaluate(
        &[
            ("small-abs", "math::abs(small) > 0"),
            ("one-shifted", "shl(1, shift) > 0"),
        ],
        "small 1\nshift 1\n",
        "small -9223372036854775808\nshift 64\n",
        &[
            ("small-abs", "math::abs(-9223372036854775808) overflows"),
            (
                "one-shifted",
                "shl(1, 64) shifts by 64 bits; a shift is 0 to 63 bits",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn totals_beyond_i64_are_summed_exactly_and_compared_without_error() {
    // Two instances at i64::MAX: the total needs i128 (docs/design.md §1), the
    // snapshot shows it exactly, and expressions compare it as a float.
    let rules = format!(
        "{RULES}  - name: big-total\n    expr: 'big > 9000000000000000000'\n  - name: big-sum\n    expr: 'sum(\"bi*\") > 18000000000000000000'\n"
    );
    let (mut world, _) = with_first_upload(&rules).await;
    world.upload("i-2", "big 9223372036854775807\n").await;
    world.upload("i-3", "big 9223372036854775807\n").await;
    let report = world.pump().await;
    assert_eq!(report.rule_errors, 0, "{report:?}");
    assert_eq!(
        world.pipeline.totals(DATE).await["big"],
        2 * i128::from(i64::MAX)
    );
    assert_eq!(
        world.object(&format!("totals/{DATE}")).await.as_deref(),
        Some("big 18446744073709551614\nerrors 1\nrequests 10\n")
    );
    let messages = world.messages(2).await;
    let mut fired: Vec<String> = messages
        .iter()
        .map(|envelope| body(envelope)["rule"].as_str().expect("a rule").to_owned())
        .collect();
    fired.sort();
    assert_eq!(fired, ["big-sum", "big-total"]);
}
