//! The ingest model test (`tally_testkit::ingest_model`) over DynamoDB and
//! S3 on the AWS API server: the same cases `ingest/tests/model.rs` runs
//! over SQLite and memory, here through the SDK, S3's own versioning and
//! DynamoDB's condition expressions.

use proptest::prelude::*;
use tally_ingest::IngestConfig;
use tally_testkit::ingest_model;
use tally_tests::world::AwsIngestWorld;

#[test]
fn ingest_model_leaves_each_instances_last_accepted_body_in_the_state_table() {
    let (runtime, config) = tally_testkit::property_runner(tally_testkit::SERVER_CASES);
    proptest!(config, |(case in ingest_model::case())| {
        let result = runtime.block_on(async {
            let world = AwsIngestWorld::with(IngestConfig::default(), case.versioned).await;
            let world = if case.timed { world.timed() } else { world };
            ingest_model::run(&world, case).await
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
}
