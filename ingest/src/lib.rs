//! tally's ingest stage: S3 upload notifications in, the state table out.
//!
//! Each upload notice becomes at most one conditional write of the
//! instance's whole body (see [`apply`] for the steps and the reasons behind
//! them). The logic is generic over the core ports, so the Lambda (`main.rs`,
//! DynamoDB and S3) and the embedded runtime (SQLite and a directory) run the
//! same code.
//!
//! - [`event`]: decoding SNS, S3 and SQS invocations into notices;
//! - [`apply`]: one notice against the stores;
//! - [`handler`]: one invocation, its concurrency and its failure policy;
//! - [`settings`] (feature `aws`, on by default): configuration from the environment;
//! - [`wiring`] (feature `aws`): the stage over DynamoDB and S3, as the Lambda and the
//!   `tally` command's AWS tools build it.

pub mod apply;
pub mod event;
pub mod handler;
#[cfg(feature = "aws")]
pub mod settings;
#[cfg(feature = "aws")]
pub mod wiring;

pub use apply::{Capacity, IngestConfig, Ingestor, Outcome, Rejection};
pub use handler::{IngestReport, IngestResponse, InvocationFailed};
