//! The harness for tally's end-to-end tests: AWS SDK clients pointed at the
//! AWS API server that `scripts/test` starts on loopback (moto's server
//! mode), uniquely named resources so tests can share one server, the
//! events AWS sends (from the test kit, which builds them from the samples
//! AWS documents), and the `tally` binary for the tests that run it.
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

pub use tally_testkit::events::{
    S3Change, aws_sample, s3_event, sns_event, sqs_event, url_encode_key,
};
pub use tally_testkit::faults;

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

pub mod cli;
pub mod http_faults;
pub mod rules_world;
pub mod sample_workload;
pub mod streams;
pub mod world;
