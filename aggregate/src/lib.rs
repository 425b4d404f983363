//! tally's aggregate stage: the state table's stream in, exact daily totals
//! out, every state change applied exactly once.
//!
//! The scheme (a two-level tree of partial sums per bucket, then totals
//! recomputed from them under a version basis) and the reasons for it are in
//! [`tally_core::aggregate`]. This crate does the I/O over the
//! [`TotalsStore`](tally_core::ports::TotalsStore) port, so the Lambda
//! (`main.rs`, DynamoDB) and the embedded runtime run the same code.
//!
//! - [`apply`]: one batch of changes against the tables;
//! - [`handler`]: one Lambda invocation, its decoding and failure reporting;
//! - [`reconcile`]: recompute a day from the state table and repair drift;
//! - [`scheduled`]: the scheduled reconcile of yesterday and check of today,
//!   told apart from a stream batch;
//! - [`settings`] (feature `aws`, on by default): the environment the Lambda reads;
//! - [`wiring`] (feature `aws`): the stage over DynamoDB, as the Lambda and the `tally`
//!   command's AWS tools build it.

pub mod apply;
pub mod handler;
pub mod reconcile;
pub mod scheduled;
#[cfg(feature = "aws")]
pub mod settings;
#[cfg(feature = "aws")]
pub mod wiring;

pub use apply::{AggregateReport, Aggregator};
