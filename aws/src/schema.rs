//! Table creation for test servers and local tooling, and the conditional
//! write every store makes. Production tables come from the deployment
//! template; these create the same shapes, idempotently.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType,
};
use tally_core::ports::{PutOutcome, StoreError};

use crate::store_error;

/// A string key attribute of a table or index.
pub(crate) fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| StoreError::new(format!("describing key {name}"), e))
}

/// The definition of a string key attribute.
pub(crate) fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::new(format!("describing attribute {name}"), e))
}

/// A stream carrying both images of every change.
pub(crate) fn both_images() -> Result<StreamSpecification, StoreError> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build()
        .map_err(|e| StoreError::new("describing a stream", e))
}

/// Sends a CreateTable (an existing table is fine) and waits until the
/// table is active.
pub(crate) async fn create(
    client: &Client,
    table: &str,
    request: aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder,
) -> Result<(), StoreError> {
    if let Err(e) = request.send().await {
        let e = e.into_service_error();
        if !e.is_resource_in_use_exception() {
            return Err(store_error(format!("DynamoDB CreateTable {table}"), e));
        }
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map(|_| ())
        .map_err(|e| StoreError::new(format!("waiting for table {table}"), e))
}

/// Sends a conditional PutItem: a failed condition is an outcome, not an error.
pub(crate) async fn conditional_put(
    request: PutItemFluentBuilder,
    operation: impl FnOnce() -> String,
) -> Result<PutOutcome, StoreError> {
    match request.send().await {
        Ok(_) => Ok(PutOutcome::Written),
        Err(e) => {
            let e = e.into_service_error();
            if e.is_conditional_check_failed_exception() {
                Ok(PutOutcome::PreconditionFailed)
            } else {
                Err(store_error(operation(), e))
            }
        }
    }
}
