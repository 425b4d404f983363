//! The aggregate model test (`tally_testkit::aggregate_model`) over
//! DynamoDB, DynamoDB Streams and S3 on the AWS API server: the same cases
//! `aggregate/tests/model.rs` runs over SQLite and memory, here with the
//! stream read through the Streams API and handed to the Lambda handler in
//! the shape Lambda delivers it.

use proptest::prelude::*;
use tally_testkit::aggregate_model;
use tally_tests::world::AwsPipelineWorld;

#[test]
fn aggregate_model_totals_equal_the_batch_recomputation_whatever_the_delivery() {
    let (runtime, config) = tally_testkit::property_runner(tally_testkit::SERVER_CASES);
    proptest!(config, |(case in aggregate_model::case())| {
        let result = runtime.block_on(async {
            let mut world = AwsPipelineWorld::new(false).await;
            aggregate_model::run(&mut world, case).await
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
}
