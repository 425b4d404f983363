//! The aggregate model test (`tally_testkit::aggregate_model`) over SQLite
//! (state table, change log, partials and totals) and a bucket in memory:
//! no server. tally-tests runs the same cases over DynamoDB, its stream and
//! S3.

use tally_testkit::aggregate_model;
use tally_testkit::proptest::prelude::*;
use tally_testkit::world::EmbeddedPipelineWorld;

#[test]
fn aggregate_model_totals_equal_the_batch_recomputation_whatever_the_delivery() {
    let (runtime, config) = tally_testkit::property_runner(tally_testkit::EMBEDDED_CASES);
    proptest!(config, |(case in aggregate_model::case())| {
        let mut world = EmbeddedPipelineWorld::new(false);
        let result = runtime.block_on(aggregate_model::run(&mut world, case));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
}
