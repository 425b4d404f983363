//! tally's rules stage: the totals table's stream in, on-call alerts and the
//! daily snapshot for the downstream job out.
//!
//! Per batch and date it reads the day's exact totals once (the aggregate
//! stage's partial items, strongly consistent), evaluates the rules the
//! batch's changed counters can affect, moves each affected alert through
//! its state machine with a conditional write, publishes the transitions,
//! and writes the day's snapshot. The snapshot needs the whole day in every
//! batch anyway, so expressions that sum or count globs read the same
//! totals rather than a second query.
//!
//! - [`stage`]: one date's evaluation, the outbox, the snapshot;
//! - [`handler`]: a DynamoDB stream batch in, `batchItemFailures` out;
//! - [`invocation`]: what the function was invoked with, a stream batch or
//!   a tick of the clock (the schedule's `{"tick": {}}`), and the tick's
//!   heartbeat;
//! - [`changes`]: which dates and counters a batch of the totals stream
//!   asks to evaluate (the handler's and the embedded runtime's rule);
//! - [`source`]: which rules apply: bundled at build time, or from a bucket
//!   prefix (cached by ETag) so ops can change them without a deploy;
//! - [`settings`] (feature `aws`, on by default): the environment the Lambda reads;
//! - [`bundle`]: the check that keeps invalid rules out of a build, and
//!   the loader of a folder of rules files;
//! - [`wiring`] (feature `aws`): the stage over DynamoDB, SNS and S3, as the Lambda and the
//!   `tally` command's AWS tools build it.

pub mod bundle;
pub mod changes;
pub mod handler;
pub mod invocation;
#[cfg(feature = "aws")]
pub mod settings;
pub mod source;
pub mod stage;
#[cfg(feature = "aws")]
pub mod wiring;

pub use handler::decode_record;
pub use source::RuleSource;
pub use stage::{RulesReport, RulesStage, StageConfig};

/// The rules in `rules-config/`, checked when this crate was built.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_rules.rs"));

    /// The bundled rules, loaded.
    pub fn rules() -> tally_core::rules::RuleSet {
        // The build script refused to build if these did not load, and they
        // are compiled in, so this cannot fail; if it ever did, say so
        // loudly rather than silence every alert without a word.
        tally_core::rules::RuleSet::load(FILES).unwrap_or_else(|problems| {
            tracing::error!(%problems, "the bundled rules do not load; no rules apply");
            tally_core::rules::RuleSet::default()
        })
    }
}
