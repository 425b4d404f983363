//! tally's domain, free of AWS types and I/O.
//!
//! Everything here is pure so that it can be tested exhaustively and shared,
//! unchanged, by the Lambda functions and by the embedded runtime:
//!
//! - [`body`]: the upload format and why a body is rejected;
//! - [`aggregate`]: state changes to exact totals, exactly once;
//! - [`fleet`]: which instances stopped uploading, from the bucket's listing;
//! - [`key`]: the object-key convention, calendar dates, event-key decoding;
//! - [`ordering`]: the order of events on one key (S3's `sequencer`);
//! - [`state`]: the state table's item and its partitioning;
//! - [`capacity`]: DynamoDB's billing rules, to report real write units;
//! - [`ports`]: the traits the stages run over, implemented by adapters;
//! - [`rules`]: ops' rules, their evaluation and the alert state machine;
//! - [`snapshot`]: the day's totals as the downstream job reads them;
//! - [`totals`]: fleet totals as a batch job computes them.

pub mod aggregate;
pub mod body;
pub mod capacity;
#[cfg(test)]
mod fixtures;
pub mod fleet;
pub mod key;
pub mod ordering;
pub mod ports;
pub mod rules;
pub mod snapshot;
pub mod state;
pub mod totals;
