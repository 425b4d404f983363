//! The harness for tally's end-to-end tests: AWS SDK clients pointed at the
//! AWS API server that `scripts/test` starts on loopback (moto's server
//! mode), uniquely named resources so tests can share one server, and the
//! events AWS sends, built from the samples AWS documents.
//!
//! There is no fallback: without the server these tests fail, with a message
//! that says how to run them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde_json::Value;

/// The server's endpoint, from `TALLY_TEST_ENDPOINT`.
pub fn endpoint() -> String {
    match std::env::var("TALLY_TEST_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "TALLY_TEST_ENDPOINT is not set: these tests need an AWS API server. \
             Run scripts/test, which installs and starts moto's server and runs every test."
        ),
    }
}

/// SDK configuration for the test server: fixed test credentials, us-east-1,
/// and the same retry and timeout policy as production ([`tally_aws::config`]).
pub async fn sdk_config() -> SdkConfig {
    let base = tally_aws::config::load().await;
    let mut builder = base.into_builder();
    builder.set_endpoint_url(Some(endpoint()));
    builder.set_region(Some(Region::new("us-east-1")));
    builder.set_credentials_provider(Some(
        aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests"),
        ),
    ));
    builder.set_behavior_version(Some(BehaviorVersion::latest()));
    builder.build()
}

/// A name no other test (or test run against the same server) uses.
pub fn unique(stem: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{stem}-{}-{n}-{nanos}", std::process::id())
}

/// A sample event AWS documents (as `sam local generate-event` prints it).
pub fn aws_sample(name: &str) -> Value {
    let path = format!(
        "{}/fixtures/aws-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What an S3 event record says about one object change.
#[derive(Debug, Clone)]
pub struct S3Change<'a> {
    pub event_name: &'a str,
    pub bucket: &'a str,
    /// The key as stored; the event carries it URL-encoded, as S3 does.
    pub key: &'a str,
    pub etag: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub sequencer: Option<&'a str>,
    /// `eventTime`, in milliseconds since 1970.
    pub event_millis: i64,
}

/// An S3 event in the shape of AWS's documented sample, describing `change`.
pub fn s3_event(change: &S3Change<'_>) -> Value {
    let sample = if change.event_name.starts_with("ObjectRemoved") {
        "s3-delete"
    } else {
        "s3-put"
    };
    let mut event = aws_sample(sample);
    let record = &mut event["Records"][0];
    record["eventName"] = change.event_name.into();
    record["eventTime"] = chrono::DateTime::from_timestamp_millis(change.event_millis)
        .expect("an event time within chrono's range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
        .into();
    record["s3"]["bucket"]["name"] = change.bucket.into();
    record["s3"]["bucket"]["arn"] = format!("arn:aws:s3:::{}", change.bucket).into();
    let object = record["s3"]["object"]
        .as_object_mut()
        .expect("the sample has s3.object");
    object.insert("key".into(), url_encode_key(change.key).into());
    for (field, value) in [
        ("eTag", change.etag),
        ("versionId", change.version_id),
        ("sequencer", change.sequencer),
    ] {
        match value {
            Some(value) => object.insert(field.into(), value.into()),
            None => object.remove(field),
        };
    }
    event
}

/// The SNS notification Lambda receives for `message`, in the shape of AWS's sample.
pub fn sns_event(message: &Value) -> Value {
    let mut event = aws_sample("sns-notification");
    let sns = &mut event["Records"][0]["Sns"];
    sns["Message"] = message.to_string().into();
    sns["Subject"] = "Amazon S3 Notification".into();
    event
}

/// The SQS event Lambda receives for these message bodies, in the shape of AWS's sample.
pub fn sqs_event(bodies: &[(String, String)]) -> Value {
    let sample = aws_sample("sqs-receive-message");
    let template = sample["Records"][0].clone();
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            let mut record = template.clone();
            record["messageId"] = id.as_str().into();
            record["body"] = body.as_str().into();
            record
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// URL-encodes a key the way S3 notifications do: form encoding, `+` for space.
pub fn url_encode_key(key: &str) -> String {
    tally_core::key::encode_event_key(key)
}

/// A new SNS topic with a new SQS queue subscribed to it, as on-call's
/// tooling would subscribe: not raw delivery, so each queued body is SNS's
/// envelope (`Subject`, `Message`, `MessageAttributes`). Returns the topic's
/// ARN and the queue's URL.
pub async fn alert_queue(sdk: &SdkConfig) -> (String, String) {
    let sns = aws_sdk_sns::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let topic_arn = tally_aws::topic::create_topic(&sns, &unique("alerts"))
        .await
        .expect("CreateTopic");
    let queue = tally_aws::queue::Queue::create(&sqs, &unique("on-call"), 30)
        .await
        .expect("CreateQueue");
    queue
        .subscribe_to(&sns, &topic_arn)
        .await
        .expect("Subscribe");
    (topic_arn, queue.url().to_owned())
}

/// Long-polls a queue until at least `expected_at_least` messages have come
/// or `wait` has passed, deleting each one received, and returns their
/// bodies parsed as SNS envelopes. Fewer than expected is for the caller to
/// judge. With 0 it polls for the whole `wait`, to show that nothing (more)
/// arrives.
pub async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    expected_at_least: usize,
    wait: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    let mut envelopes = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if (expected_at_least > 0 && envelopes.len() >= expected_at_least) || left.is_zero() {
            return envelopes;
        }
        // Whole seconds, at least one, at most SQS's maximum of 20.
        let poll = left.as_secs().clamp(1, 20) as i32;
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(poll)
            .send()
            .await
            .expect("ReceiveMessage");
        for message in output.messages.unwrap_or_default() {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle.clone().expect("a receipt handle"))
                .send()
                .await
                .expect("DeleteMessage");
            let body = message.body.expect("a message body");
            envelopes.push(
                serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("not an SNS envelope ({e}): {body}")),
            );
        }
    }
}

pub mod faults;
pub mod http_faults;
pub mod rules_world;
pub mod seed;
pub mod streams;
pub mod world;

/// What a property test against the server runs on: a two-thread runtime,
/// and `PROPTEST_CASES` cases (200 by default) with bounded shrinking, since
/// each replay is a whole script against the server.
pub fn property_runner() -> (tokio::runtime::Runtime, proptest::test_runner::Config) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = proptest::test_runner::Config {
        cases,
        max_shrink_iters: 100,
        ..proptest::test_runner::Config::default()
    };
    (runtime, config)
}
