//! Fuzzes the decoding of DynamoDB stream records by the two stages that
//! read a stream: `tally_aggregate::handler::decode_record` (the state
//! table's stream) and `tally_rules::handler::decode_record` (the totals
//! table's stream).
//!
//! Records come from tally's own tables, but an item written by hand, by an
//! older version or by another tool reaches the stream too, and a panic
//! would fail the batch over and over, holding up its shard until the
//! stream's retention drops it. Decoding must return an error naming the
//! record instead. On success: the sequence number must survive its
//! round trip through the form Lambda is told to resume from, the instance's
//! bucket must be one of the day's buckets, the per-counter deltas the
//! aggregate stage applies next must be computable, and only INSERT, MODIFY
//! and REMOVE records may decode.
//!
//! Input: bytes deserialized as a Lambda DynamoDB stream event
//! (`aws_lambda_events`); those that are not one are skipped.

#![no_main]

use aws_lambda_events::event::dynamodb::Event;
use libfuzzer_sys::fuzz_target;
use tally_core::aggregate::SequenceNumber;
use tally_core::state::BUCKETS;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Event>(data) else {
        return;
    };
    for record in &event.records {
        let known = matches!(record.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE");
        match tally_aggregate::handler::decode_record(record) {
            Ok(tally_aggregate::handler::Decoded::Change(change)) => {
                let reported = change.sequence.as_reported();
                assert_eq!(
                    SequenceNumber::parse(reported).as_ref(),
                    Ok(&change.sequence)
                );
                assert!(change.bucket < BUCKETS);
                let deltas = change.deltas();
                assert!(deltas.len() <= change.old.len() + change.new.len());
                assert!(known);
            }
            Ok(tally_aggregate::handler::Decoded::Expired) => {
                assert_eq!(record.event_name, "REMOVE");
            }
            Err(error) => {
                let _ = error.to_string();
            }
        }
        match tally_rules::handler::decode_record(record) {
            Ok(_) => assert!(known),
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
});
