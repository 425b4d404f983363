//! tally's AWS adapters: the core ports over DynamoDB, S3 and SNS.
//!
//! This is the only crate (with the Lambda `main`s) that knows AWS types. The
//! stage logic lives in the stage crates, written once over the ports, so the
//! embedded runtime runs exactly the same code over SQLite and a directory.
//!
//! - [`config`]: one SDK configuration for every client, with the retry and
//!   timeout policy and the handling of custom endpoints;
//! - [`settings`]: the one reader of a stage's environment variables;
//! - [`state_table`]: the state table ([`tally_core::state`]) and its schema;
//! - [`totals_tables`]: the aggregate stage's partial items and the totals;
//! - [`alerts_table`]: the rules stage's alert records and per-day mark;
//! - [`bucket`]: S3: the bucket the fleet uploads to, and the objects the
//!   rules stage writes and lists;
//! - [`topic`]: the SNS topic alerts are published to;
//! - [`metrics`]: each function's figures as CloudWatch metrics (one
//!   Embedded Metric Format line per invocation);
//! - with the `dev` feature, for local tooling (`tally dev`) and tests:
//!   [`streams`], reading a table's stream as Lambda's event source mapping
//!   does, and [`queue`], SQS queues polled as Lambda's SQS event source
//!   polls them and subscribed to topics.

pub mod alerts_table;
pub mod bucket;
pub mod config;
pub mod metrics;
#[cfg(feature = "dev")]
pub mod queue;
mod schema;
pub mod settings;
pub mod state_table;
#[cfg(feature = "dev")]
pub mod streams;
pub mod topic;
pub mod totals_tables;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use tally_core::ports::StoreError;

/// Wraps an SDK error with what was being done, keeping the service's error
/// code and message (`ProvisionedThroughputExceededException: ...`) rather
/// than the SDK's generic "service error".
pub fn store_error<E>(operation: String, error: E) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let detail = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&error).to_string(),
    };
    StoreError::new(operation, detail)
}
