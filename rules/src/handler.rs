//! The Lambda handler: a batch of the totals table's stream in,
//! `batchItemFailures` out.
//!
//! A record says only which (date, counter) changed; the values are read
//! afresh per date by the stage, so a stale or repeated record can never
//! make it decide on old totals. Every record is evaluated, one that only
//! moves the total's basis included ([`crate::changes`] argues why). A
//! record that does not decode is logged and reported as failed; the others
//! are still evaluated (evaluation is idempotent, so what Lambda redelivers
//! after the failed record is evaluated again harmlessly). A date that
//! fails ([`crate::stage::StageError`]: a store error, or still losing to
//! newer evaluations after the stage's limit) reports its first record, so
//! Lambda delivers it again and no evaluation is dropped.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Deserialize;
use tally_core::aggregate::SequenceNumber;
use tally_core::key::Date;
use tally_core::ports::{AlertStore, Notifier, ObjectWriter, TotalsStore};
use tally_core::rules::RuleSet;
use tally_core::rules::alert::Trigger;
use tracing::error;

use crate::changes;
use crate::stage::{RulesReport, RulesStage, log_report};

/// The totals table's key, which every stream record carries.
#[derive(Debug, Deserialize)]
struct TotalKey {
    #[serde(rename = "Counter")]
    counter: String,
    #[serde(rename = "Date")]
    date: Date,
}

/// Why a record could not be read, naming it.
#[derive(Debug, thiserror::Error)]
#[error("stream record {event_id} (sequence number {sequence}): {reason}")]
pub struct RecordError {
    pub event_id: String,
    pub sequence: String,
    pub reason: String,
}

/// What a record of the totals stream is about: the date and counter whose
/// total it wrote. The images are not read (the stage reads the day afresh).
pub fn decode_record(record: &EventRecord) -> Result<(Date, String), RecordError> {
    let fail = |reason: String| RecordError {
        event_id: record.event_id.clone(),
        sequence: record.change.sequence_number.clone().unwrap_or_default(),
        reason,
    };
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE") {
        return Err(fail(format!("unknown eventName {:?}", record.event_name)));
    }
    let key: TotalKey = serde_dynamo::from_item(record.change.keys.clone()).map_err(|e| {
        fail(format!(
            "Keys {} are not a total's key (Counter: S, Date: S): {e}",
            tally_core::state::attribute_types(&record.change.keys)
        ))
    })?;
    Ok((key.date, key.counter))
}

impl<T, A, N, W> RulesStage<T, A, N, W>
where
    T: TotalsStore,
    A: AlertStore,
    N: Notifier,
    W: ObjectWriter,
{
    /// Handles one batch as Lambda delivers it.
    pub async fn handle(
        &self,
        rules: &RuleSet,
        event: &Event,
    ) -> (DynamoDbEventResponse, RulesReport) {
        let mut report = RulesReport {
            records: event.records.len() as u64,
            ..RulesReport::default()
        };
        let mut lowest_failed: Option<(SequenceNumber, String)> = None;
        let mut note_failure = |record: &EventRecord| {
            let reported = record.change.sequence_number.clone().unwrap_or_default();
            // A record without a usable sequence number fails the batch
            // from its start.
            let sequence =
                SequenceNumber::parse(&reported).unwrap_or_else(|_| SequenceNumber::zero());
            let reported = if sequence == SequenceNumber::zero() {
                event
                    .records
                    .first()
                    .and_then(|r| r.change.sequence_number.clone())
                    .unwrap_or_default()
            } else {
                reported
            };
            if lowest_failed
                .as_ref()
                .is_none_or(|(lowest, _)| sequence < *lowest)
            {
                lowest_failed = Some((sequence, reported));
            }
        };
        let mut decoded = Vec::with_capacity(event.records.len());
        for record in &event.records {
            match decode_record(record) {
                Ok((date, counter)) => decoded.push((date, counter, record)),
                Err(e) => {
                    error!(error = %e, "undecodable stream record; the rest of the batch is still evaluated");
                    report.failed += 1;
                    note_failure(record);
                }
            }
        }
        let dates = changes::by_date(decoded);
        report.dates = dates.len() as u64;
        for (date, changes) in &dates {
            if let Err(e) = self
                .process_date(
                    rules,
                    date,
                    Trigger::Changed(&changes.counters),
                    &mut report,
                )
                .await
            {
                error!(date = %date, error = %e, "date not evaluated; Lambda will redeliver its records");
                report.failed += 1;
                note_failure(changes.first);
            }
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

    fn record(event_name: &str, old_value: Option<&str>, new_value: Option<&str>) -> EventRecord {
        let image = |value: Option<&str>, basis: &str| match value {
            Some(value) => serde_json::json!({
                "Counter": {"S": "a#b"}, "Date": {"S": "2015-11-16"},
                "Value": {"N": value}, "Contributors": {"N": "2"},
                "Basis": {"L": [{"N": basis}]}
            }),
            None => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "eventID": "1",
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "Keys": {"Counter": {"S": "a#b"}, "Date": {"S": "2015-11-16"}},
                "OldImage": image(old_value, "1"),
                "NewImage": image(new_value, "2"),
                "SequenceNumber": "100",
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:1:table/totals/stream/x"
        }))
        .unwrap()
    }

    #[test]
    fn a_record_names_the_date_and_counter_whatever_its_images_say() {
        let about = (Date::parse("2015-11-16").unwrap(), "a#b".to_owned());
        // A new basis with the same value is evaluated like any change.
        for (event, old, new) in [
            ("MODIFY", Some("5"), Some("5")),
            ("MODIFY", Some("5"), Some("6")),
            ("INSERT", None, Some("5")),
            ("REMOVE", Some("5"), None),
        ] {
            assert_eq!(decode_record(&record(event, old, new)).unwrap(), about);
        }
    }

    #[test]
    fn a_record_that_is_not_a_total_names_itself() {
        let mut bad = record("MODIFY", Some("5"), Some("6"));
        bad.change.keys.remove("Date");
        let error = decode_record(&bad).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "stream record 1 (sequence number 100): Keys {Counter: S} are not a total's key (Counter: S, Date: S): missing field `Date`"
            ),
            "{error}"
        );
        // serde_dynamo's message does not name the attribute; the listing does.
        let mut wrong_type = record("MODIFY", Some("5"), Some("6"));
        wrong_type.change.keys.insert(
            "Date".into(),
            serde_dynamo::AttributeValue::N("20151116".into()),
        );
        let error = decode_record(&wrong_type).unwrap_err().to_string();
        assert!(
            error.ends_with("Keys {Counter: S, Date: N} are not a total's key (Counter: S, Date: S): Expected string"),
            "{error}"
        );
    }
}
