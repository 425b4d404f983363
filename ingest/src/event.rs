//! Decoding what invokes ingest into [`Notice`]s, one per S3 event record.
//!
//! Ingest is invoked four ways, told apart by the first record's source:
//!
//! | invocation | envelope | S3 event inside |
//! |---|---|---|
//! | SNS subscription (primary) | `SnsEvent` | the `Message` string |
//! | S3 notification straight to Lambda | `S3Event` | the event itself |
//! | SQS queue fed by S3 | `SqsEvent` | each message `body` |
//! | SQS queue fed by SNS | `SqsEvent` | each `body` is an SNS envelope whose `Message` is the event |
//!
//! S3 also sends `s3:TestEvent` when a notification is configured; it is
//! acknowledged and ignored.
//!
//! Envelopes are decoded with `aws_lambda_events`. S3 records are decoded with
//! its `S3EventRecord` too, after filling in `userIdentity` and
//! `requestParameters` when they are missing: ingest does not use them, and
//! some senders (test servers, hand-written events) omit them, which the
//! strict type would otherwise refuse for the whole invocation. `sequencer`,
//! `versionId` and `eTag` are optional already; what ingest does without a
//! sequencer is in [`tally_core::ordering`].

use aws_lambda_events::event::s3::S3EventRecord;
use aws_lambda_events::event::sns::SnsEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::Value;
use tally_core::key::decode_event_key;
use tally_core::ordering::{OrderingError, OrderingKey};

/// What happened to the object, as far as the totals care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or overwritten; the event's ETag when it has one.
    Created { etag: Option<String> },
    /// Deleted, a delete marker placed, or expired by a lifecycle rule.
    Removed,
}

/// One S3 event record, reduced to what ingest uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub bucket: String,
    /// The object key, URL-decoded.
    pub object_key: String,
    pub version_id: Option<String>,
    pub ordering: OrderingKey,
    pub change: Change,
}

/// A record ingest does not act on, and why. Logged, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

/// One S3 event record's outcome of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Notice(Notice),
    Skipped(Skipped),
}

/// How the invocation arrived; decides how failures are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sns,
    S3,
    Sqs,
    /// `s3:TestEvent` sent directly.
    Test,
}

/// One message of the invocation: for SQS a queue message (which can fail on
/// its own), otherwise the whole event.
#[derive(Debug)]
pub struct Message {
    /// The SQS message id, for `batchItemFailures`.
    pub id: Option<String>,
    pub records: Result<Vec<Record>, DecodeError>,
}

/// The invocation, decoded.
#[derive(Debug)]
pub struct Invocation {
    pub source: Source,
    pub messages: Vec<Message>,
}

/// An event or record that ingest cannot read. Retrying will not help, so the
/// message is failed and ends in the dead-letter queue for a person to see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the event is not one ingest accepts (SNS, S3 or SQS records): {detail}")]
    UnknownEvent { detail: String },
    #[error("{envelope} envelope does not decode: {detail}")]
    Envelope {
        envelope: &'static str,
        detail: String,
    },
    #[error("{context}: the S3 event is not JSON: {detail}")]
    NotJson { context: String, detail: String },
    #[error("{context}: S3 record {index} does not decode: {detail}")]
    Record {
        context: String,
        index: usize,
        detail: String,
    },
}

/// Decodes an invocation's payload.
pub fn decode(payload: &Value) -> Result<Invocation, DecodeError> {
    if is_test_event(payload) {
        return Ok(Invocation {
            source: Source::Test,
            messages: vec![],
        });
    }
    let first = payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first());
    let event_source = first
        .and_then(|r| r.get("EventSource").or_else(|| r.get("eventSource")))
        .and_then(Value::as_str);
    match event_source {
        Some("aws:sns") => {
            let event: SnsEvent = envelope(payload, "SNS")?;
            let messages = event
                .records
                .into_iter()
                .map(|record| {
                    let context = format!("SNS message {}", record.sns.message_id);
                    Message {
                        id: None,
                        records: decode_s3_text(&record.sns.message, &context),
                    }
                })
                .collect();
            Ok(Invocation {
                source: Source::Sns,
                messages,
            })
        }
        Some("aws:s3") => Ok(Invocation {
            source: Source::S3,
            messages: vec![Message {
                id: None,
                records: decode_s3_event(payload, "S3 event"),
            }],
        }),
        Some("aws:sqs") => {
            let event: SqsEvent = envelope(payload, "SQS")?;
            let messages = event
                .records
                .into_iter()
                .map(|message| {
                    let id = message.message_id.clone();
                    let context = format!(
                        "SQS message {}",
                        id.as_deref().unwrap_or("(without messageId)")
                    );
                    let records = match &message.body {
                        Some(body) => decode_queued(body, &context),
                        None => Err(DecodeError::NotJson {
                            context: context.clone(),
                            detail: "the message has no body".into(),
                        }),
                    };
                    Message { id, records }
                })
                .collect();
            Ok(Invocation {
                source: Source::Sqs,
                messages,
            })
        }
        other => Err(DecodeError::UnknownEvent {
            detail: match other {
                Some(source) => format!("event source {source:?}"),
                None => "no Records[0].EventSource or eventSource".into(),
            },
        }),
    }
}

// Both decoders go through serde_path_to_error: serde's own messages
// ("invalid type: integer `5`, expected a string") do not say which field
// is wrong, and an event has dozens; the path ("s3.object.key: ...") does.
fn envelope<T: serde::de::DeserializeOwned>(
    payload: &Value,
    envelope: &'static str,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(payload).map_err(|e| DecodeError::Envelope {
        envelope,
        detail: e.to_string(),
    })
}

fn is_test_event(value: &Value) -> bool {
    value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
}

/// An SQS body: an S3 event, or an SNS envelope around one (raw message
/// delivery off).
fn decode_queued(body: &str, context: &str) -> Result<Vec<Record>, DecodeError> {
    let value = parse_json(body, context)?;
    if value.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = value.get("Message").and_then(Value::as_str)
    {
        return decode_s3_text(inner, &format!("{context} (SNS envelope)"));
    }
    decode_s3_value(&value, context)
}

fn decode_s3_text(text: &str, context: &str) -> Result<Vec<Record>, DecodeError> {
    decode_s3_value(&parse_json(text, context)?, context)
}

fn parse_json(text: &str, context: &str) -> Result<Value, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::NotJson {
        context: context.to_owned(),
        detail: e.to_string(),
    })
}

fn decode_s3_value(value: &Value, context: &str) -> Result<Vec<Record>, DecodeError> {
    if is_test_event(value) {
        return Ok(vec![]);
    }
    decode_s3_event(value, context)
}

fn decode_s3_event(value: &Value, context: &str) -> Result<Vec<Record>, DecodeError> {
    let records = value
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| DecodeError::Record {
            context: context.to_owned(),
            index: 0,
            detail: "no \"Records\" array".into(),
        })?;
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            decode_s3_record(record).map_err(|detail| DecodeError::Record {
                context: context.to_owned(),
                index,
                detail,
            })
        })
        .collect()
}

/// Decodes one S3 record, tolerating the fields ingest does not use.
fn decode_s3_record(value: &Value) -> Result<Record, String> {
    let mut value = value.clone();
    let object = value
        .as_object_mut()
        .ok_or_else(|| "the record is not a JSON object".to_owned())?;
    for unused in ["userIdentity", "requestParameters"] {
        object
            .entry(unused)
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let record: S3EventRecord =
        serde_path_to_error::deserialize(value).map_err(|e| e.to_string())?;

    let event_name = record.event_name.ok_or_else(|| "no eventName".to_owned())?;
    let bucket = record
        .s3
        .bucket
        .name
        .ok_or_else(|| "no s3.bucket.name".to_owned())?;
    let encoded_key = record
        .s3
        .object
        .key
        .ok_or_else(|| "no s3.object.key".to_owned())?;
    let object_key = decode_event_key(&encoded_key)
        .map_err(|e| format!("s3.object.key {encoded_key:?}: {e}"))?;
    let what = format!("{event_name} s3://{bucket}/{object_key}");

    let change = if event_name.starts_with("ObjectCreated:") {
        Change::Created {
            etag: record.s3.object.e_tag,
        }
    } else if event_name.starts_with("ObjectRemoved:")
        || event_name.starts_with("LifecycleExpiration:")
    {
        Change::Removed
    } else {
        return Ok(Record::Skipped(Skipped {
            what,
            why: "not a create or a removal".into(),
        }));
    };
    let ordering = match record.s3.object.sequencer.as_deref() {
        Some(sequencer) => OrderingKey::from_sequencer(sequencer),
        None => OrderingKey::from_event_time_millis(record.event_time.timestamp_millis()),
    }
    .map_err(|e: OrderingError| format!("{what}: {e}"))?;
    Ok(Record::Notice(Notice {
        bucket,
        object_key,
        version_id: record.s3.object.version_id,
        ordering,
        change,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s3_record(name: &str, key: &str) -> Value {
        json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2015-11-16T10:00:00.123Z",
            "eventName": name,
            "userIdentity": {"principalId": "EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "tally",
                "bucket": {"name": "fleet", "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": "arn:aws:s3:::fleet"},
                "object": {"key": key, "size": 12, "eTag": "0123456789abcdef0123456789abcdef", "sequencer": "0055AED6DCD90281E5"}
            }
        })
    }

    fn notices(invocation: Invocation) -> Vec<Notice> {
        invocation
            .messages
            .into_iter()
            .flat_map(|m| m.records.unwrap())
            .filter_map(|r| match r {
                Record::Notice(n) => Some(n),
                Record::Skipped(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_direct_s3_event_decodes_with_its_key_url_decoded() {
        let event = json!({"Records": [s3_record("ObjectCreated:Put", "counters/2015-11-16/web+1%2Bz%C3%A4")]});
        let invocation = decode(&event).unwrap();
        assert_eq!(invocation.source, Source::S3);
        let n = &notices(invocation)[0];
        assert_eq!(n.object_key, "counters/2015-11-16/web 1+zä");
        assert_eq!(n.bucket, "fleet");
        assert_eq!(
            n.change,
            Change::Created {
                etag: Some("0123456789abcdef0123456789abcdef".into())
            }
        );
        assert_eq!(
            n.ordering,
            OrderingKey::from_sequencer("0055AED6DCD90281E5").unwrap()
        );
    }

    #[test]
    fn records_without_user_identity_request_parameters_or_sequencer_still_decode() {
        let mut record = s3_record("ObjectCreated:Put", "counters/2015-11-16/i-1");
        let object = record.as_object_mut().unwrap();
        object.remove("userIdentity");
        object.remove("requestParameters");
        object.remove("responseElements");
        record["s3"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("sequencer");
        let n = &notices(decode(&json!({"Records": [record]})).unwrap())[0];
        // 2015-11-16T10:00:00.123Z
        assert_eq!(
            n.ordering,
            OrderingKey::from_event_time_millis(1_447_668_000_123).unwrap()
        );
    }

    #[test]
    fn sns_and_sqs_envelopes_unwrap_to_the_same_notice() {
        let s3_event =
            json!({"Records": [s3_record("ObjectRemoved:Delete", "counters/2015-11-16/i-1")]});
        let sns_envelope = json!({
            "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
            "Message": s3_event.to_string(), "Timestamp": "2015-11-16T10:00:00.200Z",
            "SignatureVersion": "1", "Signature": "EXAMPLE", "SigningCertURL": "EXAMPLE", "UnsubscribeURL": "EXAMPLE"
        });
        let sns = json!({"Records": [{
            "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:uploads:1",
            "Sns": sns_envelope
        }]});
        let sqs = |body: String| {
            json!({"Records": [{
                "messageId": "q-1", "receiptHandle": "h", "body": body, "attributes": {},
                "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"
            }]})
        };
        let direct = notices(decode(&s3_event).unwrap());
        let via_sns = decode(&sns).unwrap();
        assert_eq!(via_sns.source, Source::Sns);
        assert_eq!(notices(via_sns), direct);
        let via_sqs = decode(&sqs(s3_event.to_string())).unwrap();
        assert_eq!(via_sqs.messages[0].id.as_deref(), Some("q-1"));
        assert_eq!(notices(via_sqs), direct);
        assert_eq!(
            notices(decode(&sqs(sns_envelope.to_string())).unwrap()),
            direct
        );
        assert_eq!(direct[0].change, Change::Removed);
    }

    #[test]
    fn test_events_are_acknowledged_with_nothing_to_do() {
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2015-11-16T10:00:00.000Z", "Bucket": "fleet", "RequestId": "R", "HostId": "H"});
        let direct = decode(&test_event).unwrap();
        assert_eq!(direct.source, Source::Test);
        assert!(direct.messages.is_empty());
        let sqs = json!({"Records": [{"messageId": "q-1", "body": test_event.to_string(), "eventSource": "aws:sqs"}]});
        assert!(
            decode(&sqs).unwrap().messages[0]
                .records
                .as_ref()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn other_event_names_are_skipped_with_a_reason() {
        let event =
            json!({"Records": [s3_record("ObjectRestore:Completed", "counters/2015-11-16/i-1")]});
        let records = decode(&event).unwrap().messages.remove(0).records.unwrap();
        assert!(matches!(&records[0], Record::Skipped(s) if s.why.contains("not a create")));
        let lifecycle = json!({"Records": [s3_record("LifecycleExpiration:Delete", "counters/2015-11-16/i-1")]});
        assert_eq!(
            notices(decode(&lifecycle).unwrap())[0].change,
            Change::Removed
        );
    }

    #[test]
    fn undecodable_input_names_the_message_and_the_field() {
        assert!(matches!(
            decode(&json!({"hello": "world"})),
            Err(DecodeError::UnknownEvent { .. })
        ));
        let sqs = json!({"Records": [{"messageId": "q-9", "body": "{not json", "eventSource": "aws:sqs"}]});
        let invocation = decode(&sqs).unwrap();
        let error = invocation.messages[0].records.as_ref().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("SQS message q-9: the S3 event is not JSON"),
            "{error}"
        );

        let mut record = s3_record("ObjectCreated:Put", "counters/2015-11-16/i-1");
        record["s3"]["object"]["sequencer"] = json!("XYZ");
        let error = decode(&json!({"Records": [record]}))
            .unwrap()
            .messages
            .remove(0)
            .records
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("sequencer \"XYZ\" is not hexadecimal"),
            "{error}"
        );

        let mut record = s3_record("ObjectCreated:Put", "counters/2015-11-16/i-1");
        record["s3"]["bucket"]
            .as_object_mut()
            .unwrap()
            .remove("name");
        let error = decode(&json!({"Records": [record]}))
            .unwrap()
            .messages
            .remove(0)
            .records
            .unwrap_err();
        assert!(error.to_string().contains("no s3.bucket.name"), "{error}");

        let broken_sns = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": 5}}]});
        assert!(matches!(
            decode(&broken_sns),
            Err(DecodeError::Envelope {
                envelope: "SNS",
                ..
            })
        ));
        let broken_sns = json!({"Records": [{
            "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:uploads:1",
            "Sns": {"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
                    "Message": 5, "Timestamp": "2015-11-16T10:00:00.200Z", "SignatureVersion": "1",
                    "Signature": "EXAMPLE", "SigningCertURL": "EXAMPLE", "UnsubscribeURL": "EXAMPLE"}
        }]});
        let error = decode(&broken_sns).unwrap_err().to_string();
        assert_eq!(
            error,
            "SNS envelope does not decode: Records[0].Sns.Message: invalid type: integer `5`, expected a string"
        );

        // The field of an S3 record that is of the wrong type is named.
        for (field, value, expected) in [
            (
                "size",
                json!("12"),
                "s3.object.size: invalid type: string \"12\", expected i64",
            ),
            (
                "key",
                json!(20151116),
                "s3.object.key: invalid type: integer `20151116`, expected a string",
            ),
        ] {
            let mut record = s3_record("ObjectCreated:Put", "counters/2015-11-16/i-1");
            record["s3"]["object"][field] = value;
            let error = decode(&json!({"Records": [record]}))
                .unwrap()
                .messages
                .remove(0)
                .records
                .unwrap_err()
                .to_string();
            assert_eq!(
                error,
                format!("S3 event: S3 record 0 does not decode: {expected}")
            );
        }
    }
}
