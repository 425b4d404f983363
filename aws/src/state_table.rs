//! The state table on DynamoDB.
//!
//! Items are mapped with `serde_dynamo` from [`StateItem`]; the schema and
//! its reasons are documented in [`tally_core::state`]. Every expression
//! names attributes through `#` placeholders: `Date` and `Counters`' keys are
//! arbitrary, and several attribute names are DynamoDB reserved words.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{Precondition, PutOutcome, StateStore, StoreError};
use tally_core::state::{InstanceState, StateItem, attr, bucket_key, partition_key};

use crate::{schema, store_error};

/// The state table, reached through one client.
#[derive(Clone, Debug)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn operation(&self, verb: &str, key: &UploadKey) -> String {
        format!(
            "DynamoDB {verb} on table {} ({}/{})",
            self.table, key.date, key.instance
        )
    }
}

impl StateStore for DynamoStateStore {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PART, AttributeValue::S(partition_key(key)))
            .key(attr::INSTANCE, AttributeValue::S(key.instance.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(self.operation("GetItem", key), e.into_service_error()))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let item: StateItem = serde_dynamo::from_item(item)
            .map_err(|e| StoreError::new(self.operation("decoding the GetItem result", key), e))?;
        InstanceState::try_from(item)
            .map(Some)
            .map_err(|e| StoreError::new(self.operation("reading state", key), e))
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let item = serde_dynamo::to_item(StateItem::from(state)).map_err(|e| {
            StoreError::new(self.operation("encoding the PutItem item", &state.key), e)
        })?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#ordering", attr::ORDERING);
        let request = match precondition {
            Precondition::Supersedes => {
                let comparison = if state.ordering.replaces_equal() {
                    "<="
                } else {
                    "<"
                };
                request
                    .condition_expression(format!(
                        "attribute_not_exists(#part) OR #ordering {comparison} :ordering"
                    ))
                    .expression_attribute_names("#part", attr::PART)
                    .expression_attribute_values(
                        ":ordering",
                        AttributeValue::S(state.ordering.as_str().to_owned()),
                    )
            }
            Precondition::Replaces { ordering, etag } => {
                let request = request
                    .expression_attribute_names("#etag", attr::ETAG)
                    .expression_attribute_values(
                        ":ordering",
                        AttributeValue::S(ordering.as_str().to_owned()),
                    );
                match etag {
                    Some(etag) => request
                        .condition_expression("#ordering = :ordering AND #etag = :etag")
                        .expression_attribute_values(":etag", AttributeValue::S(etag.clone())),
                    None => request.condition_expression(
                        "#ordering = :ordering AND attribute_not_exists(#etag)",
                    ),
                }
            }
        };
        schema::conditional_put(request, || self.operation("PutItem", &state.key)).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        let part = bucket_key(date, bucket);
        query_partition(&self.client, &self.table, attr::PART, &part)
            .await?
            .into_iter()
            .map(|item| {
                let item: StateItem = serde_dynamo::from_item(item).map_err(|e| {
                    StoreError::new(
                        format!("decoding a state item of {part} in {}", self.table),
                        e,
                    )
                })?;
                InstanceState::try_from(item).map_err(|e| {
                    StoreError::new(format!("reading state of {part} in {}", self.table), e)
                })
            })
            .collect()
    }
}

/// Reads every page of a strongly consistent query of one hash key.
pub(crate) async fn query_partition(
    client: &Client,
    table: &str,
    key_attribute: &str,
    key: &str,
) -> Result<Vec<std::collections::HashMap<String, AttributeValue>>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("#key = :key")
            .expression_attribute_names("#key", key_attribute)
            .expression_attribute_values(":key", AttributeValue::S(key.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("DynamoDB Query on table {table} ({key})"),
                    e.into_service_error(),
                )
            })?;
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(last) if !last.is_empty() => start = Some(last),
            _ => return Ok(items),
        }
    }
}

/// Creates the state table (on-demand, stream with both images) unless it
/// exists, and waits until it is active. For test servers and local
/// tooling; production tables come from the deployment template.
pub async fn create_state_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let request = client
        .create_table()
        .table_name(table)
        .key_schema(schema::key(attr::PART, KeyType::Hash)?)
        .key_schema(schema::key(attr::INSTANCE, KeyType::Range)?)
        .attribute_definitions(schema::string_attribute(attr::PART)?)
        .attribute_definitions(schema::string_attribute(attr::INSTANCE)?)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(schema::both_images()?);
    schema::create(client, table, request).await
}
