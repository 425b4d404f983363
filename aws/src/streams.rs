//! Reading a table's DynamoDB stream through the Streams API and handing its
//! records on in the shape Lambda's event source mapping delivers them.
//!
//! In production Lambda's event source mapping reads the state and totals
//! streams; on one laptop `tally dev pump` does its job, and the end-to-end
//! tests do the same by hand. Both use this module, so the conversion they
//! rely on is written (and checked against AWS's documented sample event)
//! once. It is behind the `dev` feature: the Lambda binaries never read a
//! stream themselves and do not carry the Streams client.
//!
//! The Streams API and Lambda's event differ: the API's records (as the SDK
//! types them) have `ApproximateCreationDateTime` as a timestamp and images
//! as typed attribute values; Lambda's JSON has epoch seconds, images in
//! DynamoDB JSON (`{"S": "..."}`), and adds `eventSourceARN`.
//! [`lambda_record`] converts one into the other.
//!
//! [`Stream`] is the low-level reader (shards, iterators from a position,
//! pages), for a poller that keeps its own positions; [`StreamReader`] reads
//! one shard from its start, which is all a test on a fresh table needs.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Value, json};
use tally_core::ports::StoreError;

use crate::store_error;

/// Records per `GetRecords` call: Lambda's default batch size for streams.
pub const DEFAULT_BATCH: i32 = 100;

/// One table's stream.
#[derive(Clone, Debug)]
pub struct Stream {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
}

/// A shard of a stream, and the shard it split from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    pub parent: Option<String>,
}

/// Where to start reading a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// At its oldest record still kept.
    TrimHorizon,
    /// At this sequence number (a record to process again).
    At(String),
    /// Just after this sequence number (the last record processed).
    After(String),
}

/// One `GetRecords` answer: records in Lambda's shape, and the iterator to
/// read on with (`None` once a closed shard has been read to its end).
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Value>,
    pub next: Option<String>,
}

impl Stream {
    /// The current stream of `table`; fails, saying so, when the table has none.
    pub async fn of_table(
        sdk: &aws_config::SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<Stream, StoreError> {
        let description = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("DynamoDB DescribeTable {table}"),
                    e.into_service_error(),
                )
            })?;
        let arn = description
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| {
                StoreError::new(
                    format!("finding the stream of table {table}"),
                    "the table has no stream; it must be created with one (NEW_AND_OLD_IMAGES)",
                )
            })?;
        Ok(Stream {
            client: aws_sdk_dynamodbstreams::Client::new(sdk),
            arn,
        })
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Every shard of the stream, open and closed, parents listed before
    /// their children as DynamoDB lists them.
    pub async fn shards(&self) -> Result<Vec<Shard>, StoreError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .map_err(|e| {
                    store_error(
                        format!("DynamoDB Streams DescribeStream {}", self.arn),
                        e.into_service_error(),
                    )
                })?;
            let Some(description) = output.stream_description else {
                return Ok(shards);
            };
            shards.extend(
                description
                    .shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|shard| {
                        shard.shard_id.map(|id| Shard {
                            id,
                            parent: shard.parent_shard_id,
                        })
                    }),
            );
            match description.last_evaluated_shard_id {
                // A server that repeats itself must not make this loop forever.
                Some(last) if Some(&last) != start.as_ref() => start = Some(last),
                _ => return Ok(shards),
            }
        }
    }

    /// An iterator over `shard` from `position`; `None` when the shard is
    /// closed and has nothing at or after it.
    pub async fn iterator(
        &self,
        shard: &str,
        position: &Position,
    ) -> Result<Option<String>, StoreError> {
        let (kind, sequence) = match position {
            Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Position::At(sequence) => (ShardIteratorType::AtSequenceNumber, Some(sequence)),
            Position::After(sequence) => (ShardIteratorType::AfterSequenceNumber, Some(sequence)),
        };
        let output = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence.cloned())
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!(
                        "DynamoDB Streams GetShardIterator {} shard {shard} at {position:?}",
                        self.arn
                    ),
                    e.into_service_error(),
                )
            })?;
        Ok(output.shard_iterator)
    }

    /// Up to `limit` records from `iterator`, converted to Lambda's shape.
    pub async fn read(&self, iterator: String, limit: i32) -> Result<Page, StoreError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("DynamoDB Streams GetRecords on {}", self.arn),
                    e.into_service_error(),
                )
            })?;
        let records = output
            .records
            .unwrap_or_default()
            .into_iter()
            .map(|record| lambda_record(record, &self.arn))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            records,
            next: output.next_shard_iterator,
        })
    }
}

/// One table's stream, read from the start of its first shard: enough for
/// a test on a fresh table, where the server keeps one shard.
pub struct StreamReader {
    stream: Stream,
    iterator: Option<String>,
}

impl StreamReader {
    /// Opens the stream of `table` at its oldest record.
    pub async fn open(
        sdk: &aws_config::SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<StreamReader, StoreError> {
        let stream = Stream::of_table(sdk, dynamodb, table).await?;
        let shard = stream.shards().await?.into_iter().next().ok_or_else(|| {
            StoreError::new(
                format!("opening the stream {}", stream.arn()),
                "the stream has no shard",
            )
        })?;
        let iterator = stream.iterator(&shard.id, &Position::TrimHorizon).await?;
        Ok(StreamReader { stream, iterator })
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Every record written since the last call, in Lambda's shape.
    pub async fn read_new(&mut self) -> Result<Vec<Value>, StoreError> {
        let mut records = Vec::new();
        while let Some(iterator) = self.iterator.clone() {
            let page = self.stream.read(iterator, 1000).await?;
            let done = page.records.is_empty();
            records.extend(page.records);
            self.iterator = page.next;
            if done {
                break;
            }
        }
        Ok(records)
    }
}

fn image(
    attributes: Option<HashMap<String, AttributeValue>>,
) -> Result<Option<Value>, serde_json::Error> {
    let Some(attributes) = attributes.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let item: serde_dynamo::Item = attributes
        .into_iter()
        .map(|(name, value)| (name, serde_dynamo::AttributeValue::from(value)))
        .collect::<HashMap<_, _>>()
        .into();
    serde_json::to_value(item).map(Some)
}

/// One Streams API record as Lambda delivers it.
pub fn lambda_record(record: Record, stream_arn: &str) -> Result<Value, StoreError> {
    let fail = |detail: String| {
        StoreError::new(
            format!(
                "converting stream record {} of {stream_arn} to Lambda's shape",
                record
                    .event_id
                    .as_deref()
                    .unwrap_or("(without an event id)")
            ),
            detail,
        )
    };
    let change = record
        .dynamodb
        .clone()
        .ok_or_else(|| fail("the record has no dynamodb part".into()))?;
    let image = |attributes, which: &str| {
        image(attributes).map_err(|e| fail(format!("{which} is not JSON: {e}")))
    };
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": change.approximate_creation_date_time.map(|t| t.secs()).unwrap_or(0),
        "Keys": image(change.keys, "Keys")?.unwrap_or_else(|| json!({})),
        "SequenceNumber": change.sequence_number,
        "SizeBytes": change.size_bytes.unwrap_or(0),
        "StreamViewType": change.stream_view_type.map(|v| v.as_str().to_owned()),
    });
    if let Some(new) = image(change.new_image, "NewImage")? {
        dynamodb["NewImage"] = new;
    }
    if let Some(old) = image(change.old_image, "OldImage")? {
        dynamodb["OldImage"] = old;
    }
    let mut out = json!({
        "eventID": record.event_id,
        "eventName": record.event_name.map(|n| n.as_str().to_owned()),
        "eventVersion": record.event_version,
        "eventSource": record.event_source.unwrap_or_else(|| "aws:dynamodb".into()),
        "awsRegion": record.aws_region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    });
    if let Some(identity) = record.user_identity {
        out["userIdentity"] =
            json!({"type": identity.r#type, "principalId": identity.principal_id});
    }
    Ok(out)
}

/// The sequence number of a record in Lambda's shape.
pub fn sequence_number(record: &Value) -> Option<&str> {
    record["dynamodb"]["SequenceNumber"].as_str()
}

/// A Lambda DynamoDB stream event carrying `records` (in Lambda's shape).
pub fn lambda_event(
    records: &[Value],
) -> Result<aws_lambda_events::event::dynamodb::Event, serde_json::Error> {
    serde_json::from_value(json!({ "Records": records }))
}
