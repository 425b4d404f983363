//! The ingest model test (`tally_testkit::ingest_model`) over SQLite and a
//! bucket in memory, versioned and not: no server. tally-tests runs the
//! same cases over DynamoDB and S3.

use tally_testkit::ingest_model;
use tally_testkit::proptest::prelude::*;
use tally_testkit::world::EmbeddedIngestWorld;

#[test]
fn ingest_model_leaves_each_instances_last_accepted_body_in_the_state_table() {
    let (runtime, config) = tally_testkit::property_runner(tally_testkit::EMBEDDED_CASES);
    proptest!(config, |(case in ingest_model::case())| {
        let world = EmbeddedIngestWorld::new(case.versioned, case.timed);
        let result = runtime.block_on(ingest_model::run(&world, case));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    });
}
