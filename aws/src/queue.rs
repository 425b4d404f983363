//! SQS queues read the way Lambda's SQS event source reads them, and
//! subscribed to SNS topics the way on-call's tooling (or a test) would.
//!
//! On AWS the ingest function is subscribed to the upload topic and SNS
//! invokes it. A loop on a laptop cannot be invoked, so `tally dev pump`
//! subscribes a queue to the topic instead and polls it; ingest accepts
//! SQS messages carrying SNS envelopes as one of its documented
//! invocations. [`Queue::lambda_event`] builds exactly the event Lambda's
//! SQS event source delivers (checked against AWS's documented sample by a
//! test), so the handler sees what it would see in production. The same
//! code subscribes the alert queue people (and the tests) read alerts from.
//!
//! Behind the `dev` feature, with [`crate::streams`]: the Lambda binaries
//! never poll a queue.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{Value, json};
use tally_core::ports::StoreError;

use crate::store_error;

/// An SQS queue, its URL and ARN.
#[derive(Clone, Debug)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
    arn: String,
}

impl Queue {
    /// Creates the queue unless it exists (`CreateQueue` with the same
    /// attributes is idempotent), with this visibility timeout: how long a
    /// received message stays hidden before it is delivered again.
    pub async fn create(
        client: &aws_sdk_sqs::Client,
        name: &str,
        visibility_timeout_seconds: u32,
    ) -> Result<Queue, StoreError> {
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_seconds.to_string(),
            )
            .send()
            .await
            .map_err(|e| store_error(format!("SQS CreateQueue {name}"), e.into_service_error()))?
            .queue_url
            .ok_or_else(|| {
                StoreError::new(format!("SQS CreateQueue {name}"), "no queue URL came back")
            })?;
        Queue::open(client, &url).await
    }

    /// The queue at `url`.
    pub async fn open(client: &aws_sdk_sqs::Client, url: &str) -> Result<Queue, StoreError> {
        let operation = || format!("SQS GetQueueAttributes {url}");
        let arn = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| store_error(operation(), e.into_service_error()))?
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| StoreError::new(operation(), "the queue has no QueueArn"))?;
        Ok(Queue {
            client: client.clone(),
            url: url.to_owned(),
            arn,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The region in the queue's ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`).
    pub fn region(&self) -> &str {
        self.arn.split(':').nth(3).unwrap_or_default()
    }

    /// Subscribes the queue to `topic_arn` (not raw delivery: each body is
    /// SNS's envelope, as on-call's tools and ingest expect), after
    /// allowing the topic to send to it. Both steps are idempotent: SNS
    /// returns the existing subscription for the same topic and endpoint.
    pub async fn subscribe_to(
        &self,
        sns: &aws_sdk_sns::Client,
        topic_arn: &str,
    ) -> Result<String, StoreError> {
        // AWS refuses SNS's deliveries unless the queue's policy allows
        // them; emulators do not check, but the same setup works on both.
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "topic-may-send",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": self.arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
            }]
        });
        self.client
            .set_queue_attributes()
            .queue_url(&self.url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("SQS SetQueueAttributes Policy on {}", self.url),
                    e.into_service_error(),
                )
            })?;
        let operation = || format!("SNS Subscribe {} to {topic_arn}", self.arn);
        sns.subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(&self.arn)
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| store_error(operation(), e.into_service_error()))?
            .subscription_arn
            .ok_or_else(|| StoreError::new(operation(), "no subscription ARN came back"))
    }

    /// Receives up to `max` messages (SQS caps it at 10), waiting up to
    /// `wait_seconds` for the first (long polling; 0 answers at once).
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<Message>, StoreError> {
        Ok(self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("SQS ReceiveMessage {}", self.url),
                    e.into_service_error(),
                )
            })?
            .messages
            .unwrap_or_default())
    }

    /// The event Lambda's SQS event source delivers for `messages`.
    pub fn lambda_event(&self, messages: &[Message]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|message| {
                let attributes: HashMap<&str, &str> = message
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                // Lambda spells message attributes in camel case; tally's
                // queues carry none but string ones, so binary values are
                // left out rather than encoded.
                let message_attributes: serde_json::Map<String, Value> = message
                    .message_attributes
                    .iter()
                    .flatten()
                    .map(|(name, value)| {
                        (
                            name.clone(),
                            json!({
                                "stringValue": value.string_value,
                                "stringListValues": value.string_list_values.clone().unwrap_or_default(),
                                "binaryListValues": [],
                                "dataType": value.data_type,
                            }),
                        )
                    })
                    .collect();
                json!({
                    "messageId": message.message_id,
                    "receiptHandle": message.receipt_handle,
                    "body": message.body,
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": message.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": self.region(),
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Deletes the messages with these receipt handles (processed, as
    /// Lambda deletes a batch's messages that did not fail).
    pub async fn delete(&self, receipt_handles: &[String]) -> Result<(), StoreError> {
        let operation = || format!("SQS DeleteMessageBatch {}", self.url);
        for chunk in receipt_handles.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| StoreError::new(operation(), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| store_error(operation(), e.into_service_error()))?;
            if let Some(failed) = output.failed.first() {
                // Not fatal for correctness (the message comes back and
                // ingest is idempotent), but the caller should know.
                return Err(StoreError::new(
                    operation(),
                    format!(
                        "{} of {} messages were not deleted; first: {} {}",
                        output.failed.len(),
                        chunk.len(),
                        failed.code,
                        failed.message.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }
}
