//! The Lambda handler: a DynamoDB stream batch in, `batchItemFailures` out.
//!
//! Records are decoded with `aws_lambda_events` (images through
//! `serde_dynamo` into the state item). `INSERT`, `MODIFY` and `REMOVE` are
//! state changes. A `REMOVE` made by DynamoDB's time-to-live (user identity
//! `Service` / `dynamodb.amazonaws.com`) is the expiry of an old day's state,
//! not an instance going away, so it leaves the totals as they are.
//!
//! A record that does not decode is logged with its event id and reported
//! as failed, and nothing after it in the batch is applied, so no later
//! change of its bucket moves past it. Lambda redelivers from it; once its
//! retries run out, Lambda moves on and sends the record's position to the
//! on-failure destination, and `reconcile` repairs its day.
//!
//! The response names the lowest failed sequence number; Lambda redelivers
//! from there, and everything after it that was applied is skipped then.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::ports::TotalsStore;
use tally_core::state::StateItem;
use tracing::{error, info};

use crate::apply::{AggregateReport, Aggregator, log_report};

/// What one stream record means for the totals.
#[derive(Debug)]
pub enum Decoded {
    Change(StateChange),
    /// A time-to-live expiry: nothing to do.
    Expired,
}

/// Why a record could not be read, naming it.
#[derive(Debug, thiserror::Error)]
#[error("stream record {event_id} (sequence number {sequence}): {reason}")]
pub struct RecordError {
    pub event_id: String,
    pub sequence: String,
    pub reason: String,
}

/// Decodes one record of the state table's stream.
pub fn decode_record(record: &EventRecord) -> Result<Decoded, RecordError> {
    let sequence_text = record.change.sequence_number.clone().unwrap_or_default();
    let fail = |reason: String| RecordError {
        event_id: record.event_id.clone(),
        sequence: sequence_text.clone(),
        reason,
    };
    let sequence = SequenceNumber::parse(&sequence_text).map_err(|e| fail(e.to_string()))?;
    let expired = record.event_name == "REMOVE"
        && record.user_identity.as_ref().is_some_and(|identity| {
            identity.type_ == "Service" && identity.principal_id == "dynamodb.amazonaws.com"
        });
    if expired {
        return Ok(Decoded::Expired);
    }
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE") {
        return Err(fail(format!("unknown eventName {:?}", record.event_name)));
    }
    let image =
        |item: &serde_dynamo::Item, which: &str| -> Result<Option<StateItem>, RecordError> {
            if item.is_empty() {
                return Ok(None);
            }
            serde_dynamo::from_item(item.clone())
                .map(Some)
                .map_err(|e| {
                    fail(format!(
                        "{which} {} is not a state item: {e}",
                        tally_core::state::attribute_types(item)
                    ))
                })
        };
    let old = image(&record.change.old_image, "OldImage")?;
    let new = image(&record.change.new_image, "NewImage")?;
    StateChange::from_images(sequence, old, new)
        .map(Decoded::Change)
        .map_err(|e| fail(e.to_string()))
}

impl<T: TotalsStore> Aggregator<T> {
    /// Handles one batch as Lambda delivers it.
    pub async fn handle(&self, event: &Event) -> (DynamoDbEventResponse, AggregateReport) {
        let mut changes = Vec::with_capacity(event.records.len());
        // The sequence numbers as the stream wrote them, to report back.
        let mut reported_as: HashMap<SequenceNumber, String> = HashMap::new();
        let mut lowest_failed: Option<(SequenceNumber, String)> = None;
        let mut note_failure = |sequence: SequenceNumber, reported: String| {
            if lowest_failed
                .as_ref()
                .is_none_or(|(lowest, _)| sequence < *lowest)
            {
                lowest_failed = Some((sequence, reported));
            }
        };
        let mut undecodable = 0;
        for record in &event.records {
            match decode_record(record) {
                Ok(Decoded::Change(change)) => {
                    if let Some(text) = &record.change.sequence_number {
                        reported_as.insert(change.sequence.clone(), text.clone());
                    }
                    changes.push(change);
                }
                Ok(Decoded::Expired) => {
                    info!(event_id = %record.event_id, "time-to-live expiry left the totals as they are")
                }
                Err(e) => {
                    error!(error = %e, "undecodable stream record; nothing after it in this batch is applied");
                    undecodable += 1;
                    // Without a sequence number Lambda cannot resume from the
                    // record: fail from the start of the batch instead.
                    let sequence = SequenceNumber::parse(&e.sequence)
                        .unwrap_or_else(|_| SequenceNumber::zero());
                    let reported = record
                        .change
                        .sequence_number
                        .clone()
                        .or_else(|| {
                            event
                                .records
                                .first()
                                .and_then(|r| r.change.sequence_number.clone())
                        })
                        .unwrap_or_default();
                    note_failure(sequence, reported);
                    break;
                }
            }
        }

        let (mut report, failures) = self.apply(&changes).await;
        report.failed += undecodable;
        for failure in failures {
            error!(error = %failure.error, from = %failure.from, "batch not fully applied; Lambda will redeliver from this record");
            let reported = reported_as
                .get(&failure.from)
                .cloned()
                .unwrap_or_else(|| failure.from.as_reported().to_owned());
            note_failure(failure.from, reported);
        }
        log_report(&report);

        let mut response = DynamoDbEventResponse::default();
        if let Some((_, reported)) = lowest_failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(reported);
            response.batch_item_failures.push(failure);
        }
        (response, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(new_image: serde_json::Value) -> EventRecord {
        serde_json::from_value(serde_json::json!({
            "eventID": "e-1",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "Keys": {"Part": {"S": "2015-11-16#14"}, "Instance": {"S": "i-1"}},
                "NewImage": new_image,
                "SequenceNumber": "100",
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/state/stream/x"
        }))
        .unwrap()
    }

    /// serde_dynamo says only "Expected map"; the error lists the image's
    /// attributes with their types, so the wrong one can be seen.
    #[test]
    fn an_image_of_the_wrong_types_names_its_attributes_and_types() {
        let bad = record(serde_json::json!({
            "Part": {"S": "2015-11-16#14"}, "Instance": {"S": "i-1"},
            "Date": {"S": "2015-11-16"}, "Counters": {"S": "requests 5"},
            "Ordering": {"S": "s:0A"}, "ObjectKey": {"S": "counters/2015-11-16/i-1"}
        }));
        let error = decode_record(&bad).unwrap_err().to_string();
        assert_eq!(
            error,
            "stream record e-1 (sequence number 100): NewImage {Counters: S, Date: S, Instance: S, ObjectKey: S, Ordering: S, Part: S} is not a state item: Expected map"
        );
    }
}
