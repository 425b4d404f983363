//! The alert topic on SNS: where the rules stage sends each transition.
//!
//! One Publish per message, with `MessageStructure: json` so that each kind
//! of subscriber gets the rendering it can use: queues, Lambda functions and
//! HTTP endpoints get `default`, the notification as compact JSON (the body
//! docs/design.md §7 promises); email gets the plain text; SMS gets the subject line.
//! The subject and the message attributes `severity`, `rule` and `state` go
//! with every delivery, so subscribers can filter without parsing the body.

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use tally_core::ports::{Notifier, StoreError};
use tally_core::rules::alert::Notification;

use crate::store_error;

/// An SNS topic, reached through one client.
#[derive(Clone, Debug)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> SnsNotifier {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

/// A String message attribute.
fn attribute(value: &str) -> Result<MessageAttributeValue, aws_sdk_sns::error::BuildError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
}

/// The per-protocol message SNS expects with `MessageStructure: json`.
fn structured_message(notification: &Notification) -> Result<String, serde_json::Error> {
    let default = serde_json::to_string(notification)?;
    serde_json::to_string(&serde_json::json!({
        "default": default,
        "email": notification.text(),
        "sms": notification.subject(),
    }))
}

impl Notifier for SnsNotifier {
    async fn publish(&self, notification: &Notification) -> Result<(), StoreError> {
        let operation = || format!("SNS Publish to {} ({})", self.topic_arn, notification.alert);
        let message =
            structured_message(notification).map_err(|e| StoreError::new(operation(), e))?;
        let string = |value: &str| attribute(value).map_err(|e| StoreError::new(operation(), e));
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message_structure("json")
            .message(message)
            .subject(notification.subject())
            .message_attributes("severity", string(notification.severity.as_str())?)
            .message_attributes("rule", string(&notification.rule)?)
            .message_attributes("state", string(notification.state.as_str())?)
            .send()
            .await
            .map_err(|e| store_error(operation(), e.into_service_error()))?;
        Ok(())
    }
}

/// Creates an SNS topic unless it exists (`CreateTopic` returns the
/// existing topic's ARN for the same name) and returns its ARN. For test
/// servers and local tooling; production topics come from the deployment
/// template.
pub async fn create_topic(client: &Client, name: &str) -> Result<String, StoreError> {
    let operation = || format!("SNS CreateTopic {name}");
    client
        .create_topic()
        .name(name)
        .send()
        .await
        .map_err(|e| store_error(operation(), e.into_service_error()))?
        .topic_arn
        .ok_or_else(|| StoreError::new(operation(), "no topic ARN came back"))
}
