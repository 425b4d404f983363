//! The SDK configuration shared by every client a process builds.
//!
//! Clients are built once per process (outside the Lambda handler) from the
//! standard AWS environment: region, credentials, and `AWS_ENDPOINT_URL` (or
//! a service-specific `AWS_ENDPOINT_URL_S3`, ...) exactly as the SDK defines
//! them. On top of the SDK's defaults tally sets:
//!
//! - the standard retry mode (exponential backoff with jitter; throttling,
//!   5xx and transient network errors are retried) with
//!   [`DEFAULT_MAX_ATTEMPTS`] attempts, overridable with `AWS_MAX_ATTEMPTS`;
//! - an operation timeout, so a hung connection fails the work instead of the
//!   whole Lambda invocation timing out;
//! - path-style S3 addressing when a custom endpoint is set, because
//!   `bucket.127.0.0.1` does not resolve and S3-compatible servers expect it.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// The loaded configuration, re-exported so crates wiring clients need not
/// depend on `aws-config` themselves.
pub use aws_config::SdkConfig;

/// Attempts per AWS call, first try included, unless `AWS_MAX_ATTEMPTS` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Loads the shared configuration from the environment.
pub async fn load() -> SdkConfig {
    let max_attempts = std::env::var("AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_MAX_ATTEMPTS);
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(40))
                .build(),
        )
        .load()
        .await
}

/// A DynamoDB client.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An SNS client.
pub fn sns(config: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(config)
}

/// An S3 client; path-style when an endpoint is configured.
pub fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
