//! The ingest and aggregate model tests (`tally_testkit`) against the AWS
//! API server: the same cases the stage crates run over SQLite and memory,
//! here over DynamoDB, its stream and S3.
//!
//! A binary of their own, not modules of `end_to_end`: each runs minutes of
//! continuous calls, and run beside the other suites on the one server, a
//! stream read of another suite once never reached the end of its shard
//! (moto kept answering with records) and the run hung. Cargo runs test
//! binaries one after another, so here they have the server to themselves,
//! as they always had.
//!
//! Without the server (`TALLY_TEST_ENDPOINT`) they fail, never skip.

mod aggregate_model;
mod ingest_model;
