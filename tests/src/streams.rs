//! Reading a table's stream through the DynamoDB Streams API and handing its
//! records on in the shape Lambda's event source mapping delivers them.
//!
//! The Streams API and Lambda's event differ: the API's records (as the SDK
//! types them) have `ApproximateCreationDateTime` as a timestamp and images
//! as typed attribute values; Lambda's JSON has epoch seconds, images in
//! DynamoDB JSON (`{"S": "..."}`), and adds `eventSourceARN`. [`lambda_record`]
//! converts one into the other; a test checks the result against the sample
//! event AWS documents.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Value, json};

/// One table's stream, read from the start of its (single) shard.
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    iterator: Option<String>,
}

impl StreamReader {
    /// Opens the stream of `table` at its oldest record.
    pub async fn open(
        sdk: &aws_config::SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> StreamReader {
        let stream_arn = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe the table")
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the table has a stream");
        let client = aws_sdk_dynamodbstreams::Client::new(sdk);
        let shard = client
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await
            .expect("describe the stream")
            .stream_description
            .and_then(|d| d.shards)
            .and_then(|shards| shards.into_iter().next())
            .and_then(|shard| shard.shard_id)
            .expect("the stream has a shard");
        let iterator = client
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("a shard iterator")
            .shard_iterator;
        StreamReader {
            client,
            stream_arn,
            iterator,
        }
    }

    /// Every record written since the last call, in Lambda's shape.
    pub async fn read_new(&mut self) -> Vec<Value> {
        let mut records = Vec::new();
        while let Some(iterator) = self.iterator.clone() {
            let output = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(1000)
                .send()
                .await
                .expect("read the stream");
            let page = output.records.unwrap_or_default();
            let done = page.is_empty();
            records.extend(page.into_iter().map(|r| lambda_record(r, &self.stream_arn)));
            self.iterator = output.next_shard_iterator;
            if done {
                break;
            }
        }
        records
    }
}

fn image(attributes: Option<HashMap<String, AttributeValue>>) -> Option<Value> {
    let attributes = attributes.filter(|a| !a.is_empty())?;
    let item: serde_dynamo::Item = attributes
        .into_iter()
        .map(|(name, value)| (name, serde_dynamo::AttributeValue::from(value)))
        .collect::<HashMap<_, _>>()
        .into();
    Some(serde_json::to_value(item).expect("an item is JSON"))
}

/// One Streams API record as Lambda delivers it.
pub fn lambda_record(record: Record, stream_arn: &str) -> Value {
    let change = record
        .dynamodb
        .expect("a stream record has a dynamodb part");
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": change.approximate_creation_date_time.map(|t| t.secs()).unwrap_or(0),
        "Keys": image(change.keys).unwrap_or_else(|| json!({})),
        "SequenceNumber": change.sequence_number,
        "SizeBytes": change.size_bytes.unwrap_or(0),
        "StreamViewType": change.stream_view_type.map(|v| v.as_str().to_owned()),
    });
    if let Some(new) = image(change.new_image) {
        dynamodb["NewImage"] = new;
    }
    if let Some(old) = image(change.old_image) {
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
    out
}

/// A Lambda DynamoDB stream event carrying `records`.
pub fn lambda_event(records: &[Value]) -> aws_lambda_events::event::dynamodb::Event {
    serde_json::from_value(json!({ "Records": records })).expect("records in Lambda's shape")
}
