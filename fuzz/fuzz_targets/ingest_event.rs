//! Fuzzes ingest's decoding of what invokes it, `tally_ingest::event::decode`:
//! SNS notifications, direct S3 events and SQS messages (raw or
//! SNS-enveloped), each carrying an S3 event as JSON text inside JSON.
//!
//! Anyone who can publish to the topic or the queue decides these bytes, and
//! a panic would fail the whole invocation, so Lambda would retry it until
//! the message reached the dead-letter queue, taking every good record of the
//! batch with it. Decoding must return an error for what it cannot read,
//! never panic. On success the shape must follow the source (an S3 test
//! event has no messages, a direct S3 event one), and every notice's
//! ordering key has its kind's fixed width, since keys compare as bytes.
//!
//! Input: bytes parsed as JSON; those that are not JSON are skipped (Lambda
//! hands the handler parsed JSON).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tally_ingest::event::{Record, Source, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(invocation) = decode(&payload) else {
        return;
    };
    match invocation.source {
        Source::Test => assert!(invocation.messages.is_empty()),
        Source::S3 => assert_eq!(invocation.messages.len(), 1),
        Source::Sns | Source::Sqs => {}
    }
    for message in &invocation.messages {
        let Ok(records) = &message.records else {
            continue;
        };
        for record in records {
            if let Record::Notice(notice) = record {
                // Ordering keys compare as plain bytes, so each kind has
                // one fixed width: `S` and 32 hex digits, or `T` and 20
                // decimal digits.
                let ordering = notice.ordering.as_str();
                let width_ok = match ordering.as_bytes().first() {
                    Some(b'S') => ordering.len() == 33,
                    Some(b'T') => ordering.len() == 21,
                    _ => false,
                };
                assert!(width_ok, "ordering key {ordering:?}");
            }
        }
    }
});
