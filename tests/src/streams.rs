//! The tests' view of a table's stream: [`tally_aws::streams`] (shared with
//! `tally dev pump`, which reads the streams as Lambda's event source
//! mapping would), failing the test on any error instead of returning it.

use serde_json::Value;

pub use tally_aws::streams::lambda_record;

/// One table's stream, read from the start of its (single) shard.
pub struct StreamReader(tally_aws::streams::StreamReader);

impl StreamReader {
    /// Opens the stream of `table` at its oldest record.
    pub async fn open(
        sdk: &aws_config::SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> StreamReader {
        StreamReader(
            tally_aws::streams::StreamReader::open(sdk, dynamodb, table)
                .await
                .unwrap_or_else(|e| panic!("open the stream of {table}: {e}")),
        )
    }

    /// Every record written since the last call, in Lambda's shape.
    pub async fn read_new(&mut self) -> Vec<Value> {
        self.0
            .read_new()
            .await
            .unwrap_or_else(|e| panic!("read the stream: {e}"))
    }
}

/// A Lambda DynamoDB stream event carrying `records`.
pub fn lambda_event(records: &[Value]) -> aws_lambda_events::event::dynamodb::Event {
    tally_aws::streams::lambda_event(records).expect("records in Lambda's shape")
}
