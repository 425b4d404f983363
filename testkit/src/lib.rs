//! tally's test support, written once over the ports (`tally_core::ports`)
//! so that a scenario runs on every adapter: the stage crates' tests run it
//! over SQLite and memory with no server, and tally-tests over DynamoDB and
//! S3 on the AWS API server.
//!
//! - [`events`]: the S3, SNS and SQS events Lambda delivers, from AWS's
//!   documented samples;
//! - [`memory`]: the bucket, the state table and the aggregate stage's
//!   tables in memory;
//! - [`faults`]: crashes, failing groups, lost responses and held-back calls
//!   around any adapter;
//! - [`world`]: what the model tests need of a world, and the world over
//!   SQLite and memory;
//! - [`ingest_model`], [`aggregate_model`]: the model-based property tests
//!   of ingest, and of ingest and aggregate together.
//!
//! It names no AWS type and depends on no SDK crate itself: the AWS side of a
//! scenario is tally-tests'.

pub mod aggregate_model;
pub mod events;
pub mod faults;
pub mod ingest_model;
pub mod memory;
pub mod world;

/// Re-exported so the test files that call `proptest!` need no dependency
/// of their own on it.
pub use proptest;

/// How many cases a model test runs against the AWS API server, where each
/// is a whole script of HTTP calls.
pub const SERVER_CASES: u32 = 200;

/// How many cases a model test runs over SQLite and memory: a case takes
/// milliseconds there, so five times the server's in a few seconds.
pub const EMBEDDED_CASES: u32 = 1_000;

/// What a model test runs on: a two-thread runtime, and `PROPTEST_CASES`
/// cases (`default_cases` when unset) with bounded shrinking, since against
/// the server each replay is a whole script.
///
/// Failing cases are saved to, and replayed from, a
/// `.proptest-regressions` file beside the test's source file. Proptest's
/// default looks for a `lib.rs` or `main.rs` above the file instead, which
/// puts the file of a test binary with a `main.rs` somewhere nobody looks.
pub fn property_runner(
    default_cases: u32,
) -> (tokio::runtime::Runtime, proptest::test_runner::Config) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = proptest::test_runner::Config {
        cases,
        max_shrink_iters: 100,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    };
    (runtime, config)
}
