//! The aggregate stage's tables on DynamoDB: partial items and totals.
//!
//! - **partials**: hash key `Part` (`<date>#<bucket>`), one item per bucket
//!   of a day ([`tally_core::aggregate::PartialItem`]; sums are decimal text
//!   because they are exact `i128`). No stream.
//! - **totals** (the per-counter design's totals table, kept as is): hash
//!   key `Counter`, range key `Date`, `Value` (N), plus `Contributors` and
//!   `Basis` ([`tally_core::aggregate::TotalItem`]); global secondary index
//!   `ByDate` (hash `Date`, range `Counter`, projecting `Value` and
//!   `Contributors`); stream `NEW_AND_OLD_IMAGES` for the rules stage.
//!
//! A total is written as a compare-and-swap on the stored total's basis
//! (`#basis = :basis`, or `attribute_not_exists(#counter)` for a new one),
//! with placeholders throughout, since `Counter`, `Date` and `Value` are
//! reserved words.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, GlobalSecondaryIndex, KeyType, KeysAndAttributes, Projection,
    ProjectionType,
};
use tally_core::aggregate::{Basis, PartialItem, TotalItem, partial_key};
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, StoreError, TotalsStore};
use tally_core::state::BUCKETS;

use crate::schema::{self, key, string_attribute};
use crate::store_error;

/// The name of the totals table's index by date.
pub const BY_DATE: &str = "ByDate";

/// How often unprocessed keys of a BatchGetItem are asked for again.
const BATCH_GET_ATTEMPTS: u32 = 8;

/// The partials and totals tables, reached through one client.
#[derive(Clone, Debug)]
pub struct DynamoTotalsStore {
    client: Client,
    partials_table: String,
    totals_table: String,
}

impl DynamoTotalsStore {
    pub fn new(
        client: Client,
        partials_table: impl Into<String>,
        totals_table: impl Into<String>,
    ) -> DynamoTotalsStore {
        DynamoTotalsStore {
            client,
            partials_table: partials_table.into(),
            totals_table: totals_table.into(),
        }
    }

    pub fn totals_table(&self) -> &str {
        &self.totals_table
    }

    fn decode_partial(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<PartialItem, StoreError> {
        serde_dynamo::from_item(item).map_err(|e| {
            StoreError::new(
                format!("decoding a partial item of {}", self.partials_table),
                e,
            )
        })
    }

    fn decode_total(&self, item: HashMap<String, AttributeValue>) -> Result<TotalItem, StoreError> {
        TotalItem::from_item(item.into())
            .map_err(|e| StoreError::new(format!("decoding a total of {}", self.totals_table), e))
    }

    /// A BatchGetItem on one table, asking again for unprocessed keys with
    /// backoff (throttling, or the 16 MB response cap).
    async fn batch_get(
        &self,
        table: &str,
        keys: KeysAndAttributes,
        operation: impl Fn() -> String,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut pending = HashMap::from([(table.to_owned(), keys)]);
        let mut items = Vec::new();
        for attempt in 0..BATCH_GET_ATTEMPTS {
            if attempt > 0 {
                // Full jitter from the clock's low bits: no random-number
                // crate for one sleep, and concurrent callers still spread.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos()) % (50 << attempt));
                tokio::time::sleep(Duration::from_millis((25 << attempt) + jitter)).await;
            }
            let output = self
                .client
                .batch_get_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| store_error(operation(), e.into_service_error()))?;
            items.extend(
                output
                    .responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default(),
            );
            match output.unprocessed_keys {
                Some(unprocessed) if !unprocessed.is_empty() => pending = unprocessed,
                _ => return Ok(items),
            }
        }
        Err(StoreError::new(
            operation(),
            format!("keys were still unprocessed after {BATCH_GET_ATTEMPTS} attempts"),
        ))
    }
}

impl TotalsStore for DynamoTotalsStore {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        let part = partial_key(date, bucket);
        let output = self
            .client
            .get_item()
            .table_name(&self.partials_table)
            .key("Part", AttributeValue::S(part.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                store_error(
                    format!("DynamoDB GetItem on table {} ({part})", self.partials_table),
                    e.into_service_error(),
                )
            })?;
        output
            .item
            .map(|item| self.decode_partial(item))
            .transpose()
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        let operation = || {
            format!(
                "DynamoDB PutItem on table {} ({})",
                self.partials_table, item.part
            )
        };
        let encoded = serde_dynamo::to_item(item).map_err(|e| StoreError::new(operation(), e))?;
        let request = self
            .client
            .put_item()
            .table_name(&self.partials_table)
            .set_item(Some(encoded));
        let request = if read_version == 0 {
            request
                .condition_expression("attribute_not_exists(#part)")
                .expression_attribute_names("#part", "Part")
        } else {
            request
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", "Version")
                .expression_attribute_values(
                    ":version",
                    AttributeValue::N(read_version.to_string()),
                )
        };
        schema::conditional_put(request, operation).await
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        let operation = || {
            format!(
                "DynamoDB BatchGetItem on table {} ({date})",
                self.partials_table
            )
        };
        let mut keys = KeysAndAttributes::builder().consistent_read(true);
        for bucket in 0..BUCKETS {
            keys = keys.keys(HashMap::from([(
                "Part".to_owned(),
                AttributeValue::S(partial_key(date, bucket)),
            )]));
        }
        let request = keys.build().map_err(|e| StoreError::new(operation(), e))?;
        let mut partials = self
            .batch_get(&self.partials_table, request, operation)
            .await?
            .into_iter()
            .map(|item| self.decode_partial(item))
            .collect::<Result<Vec<_>, _>>()?;
        partials.sort_by_key(|p| p.bucket);
        Ok(partials)
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        let operation = || {
            format!(
                "DynamoDB BatchGetItem on table {} ({date})",
                self.totals_table
            )
        };
        let keys: Vec<HashMap<String, AttributeValue>> = counters
            .iter()
            .map(|counter| {
                HashMap::from([
                    ("Counter".to_owned(), AttributeValue::S(counter.clone())),
                    ("Date".to_owned(), AttributeValue::S(date.to_string())),
                ])
            })
            .collect();
        let mut totals = BTreeMap::new();
        // BatchGetItem takes at most 100 keys.
        for chunk in keys.chunks(100) {
            let request = KeysAndAttributes::builder()
                .consistent_read(true)
                .set_keys(Some(chunk.to_vec()))
                .build()
                .map_err(|e| StoreError::new(operation(), e))?;
            for item in self
                .batch_get(&self.totals_table, request, operation)
                .await?
            {
                let total = self.decode_total(item)?;
                totals.insert(total.counter.clone(), total);
            }
        }
        Ok(totals)
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        let operation = || {
            format!(
                "DynamoDB PutItem on table {} ({} {})",
                self.totals_table, item.counter, item.date
            )
        };
        let encoded: HashMap<String, AttributeValue> = item
            .to_item()
            .map_err(|e| StoreError::new(operation(), e))?
            .into();
        let request = self
            .client
            .put_item()
            .table_name(&self.totals_table)
            .set_item(Some(encoded));
        let request = match replaces {
            None => request
                .condition_expression("attribute_not_exists(#counter)")
                .expression_attribute_names("#counter", "Counter"),
            Some(basis) => {
                let basis = serde_dynamo::to_attribute_value(basis)
                    .map_err(|e| StoreError::new(operation(), e))?;
                request
                    .condition_expression("#basis = :basis")
                    .expression_attribute_names("#basis", "Basis")
                    .expression_attribute_values(":basis", basis)
            }
        };
        schema::conditional_put(request, operation).await
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        let mut totals = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.totals_table)
                .index_name(BY_DATE)
                .key_condition_expression("#date = :date")
                .expression_attribute_names("#date", "Date")
                .expression_attribute_values(":date", AttributeValue::S(date.to_string()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| {
                    store_error(
                        format!(
                            "DynamoDB Query on index {BY_DATE} of table {} ({date})",
                            self.totals_table
                        ),
                        e.into_service_error(),
                    )
                })?;
            for item in page.items.unwrap_or_default() {
                totals.push(self.decode_total(item)?);
            }
            match page.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(totals),
            }
        }
    }
}

/// Creates the partials table unless it exists. For test servers and local
/// tooling; production tables come from the deployment template.
pub async fn create_partials_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let request = client
        .create_table()
        .table_name(table)
        .key_schema(key("Part", KeyType::Hash)?)
        .attribute_definitions(string_attribute("Part")?)
        .billing_mode(BillingMode::PayPerRequest);
    schema::create(client, table, request).await
}

/// Creates the totals table with its `ByDate` index and stream unless it exists.
pub async fn create_totals_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let by_date = GlobalSecondaryIndex::builder()
        .index_name(BY_DATE)
        .key_schema(key("Date", KeyType::Hash)?)
        .key_schema(key("Counter", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("Value")
                .non_key_attributes("Contributors")
                .build(),
        )
        .build()
        .map_err(|e| StoreError::new(format!("describing index {BY_DATE}"), e))?;
    let request = client
        .create_table()
        .table_name(table)
        .key_schema(key("Counter", KeyType::Hash)?)
        .key_schema(key("Date", KeyType::Range)?)
        .attribute_definitions(string_attribute("Counter")?)
        .attribute_definitions(string_attribute("Date")?)
        .global_secondary_indexes(by_date)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(schema::both_images()?);
    schema::create(client, table, request).await
}
