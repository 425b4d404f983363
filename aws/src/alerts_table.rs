//! The alert-state table on DynamoDB: the rules stage's memory of each
//! alert ([`AlertRecord`]) and, per date, the *mark* that keeps a slow
//! evaluation of older totals from deciding anything ([`AlertStore`]).
//!
//! Schema: hash key `Date`, range key `Alert` (`rule` or `rule#counter`),
//! on-demand, no stream (nothing downstream reads the records' changes);
//! `Expires` is the time-to-live attribute, so a day's records go
//! [`RECORD_DAYS`](tally_core::rules::alert::RECORD_DAYS) after the day. Records are mapped with `serde_dynamo`.
//!
//! The mark lives in the same partition as the day's records, as the item
//! with `Alert` = [`MARK`] and a numeric `Generation`: rule names cannot
//! start with `~`, so it never collides with a record, and keeping it beside
//! the records lets one transaction check it and write a record.
//!
//! Counter names inside `Alert` are arbitrary UTF-8 and `Date` is a reserved
//! word, so every expression names attributes and values through
//! placeholders; nothing is ever spliced into an expression.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, ConditionCheck, KeyType, Put, TransactWriteItem,
};
use tally_core::key::Date;
use tally_core::ports::{AlertStore, PutOutcome, StoreError};
use tally_core::rules::alert::{AlertRecord, expiry};

use crate::state_table::query_partition;
use crate::{schema, store_error};

/// The `Alert` key of a day's mark.
pub const MARK: &str = "~mark";

const DATE: &str = "Date";
const ALERT: &str = "Alert";
const GENERATION: &str = "Generation";
const VERSION: &str = "Version";
const EXPIRES: &str = "Expires";

/// The alert-state table, reached through one client.
#[derive(Clone, Debug)]
pub struct DynamoAlertStore {
    client: Client,
    table: String,
}

impl DynamoAlertStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoAlertStore {
        DynamoAlertStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn operation(&self, verb: &str, date: &Date, alert: &str) -> String {
        format!("DynamoDB {verb} on table {} ({date}/{alert})", self.table)
    }

    fn mark_key(date: &Date) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (DATE.to_owned(), AttributeValue::S(date.to_string())),
            (ALERT.to_owned(), AttributeValue::S(MARK.to_owned())),
        ])
    }

    /// The record's item and the condition on the stored record's version,
    /// shared by the plain and the transactional write.
    fn versioned_put(
        &self,
        record: &AlertRecord,
        read_version: u64,
    ) -> Result<VersionedPut, StoreError> {
        let item = serde_dynamo::to_item(record).map_err(|e| {
            StoreError::new(
                self.operation("encoding the item for PutItem", &record.date, &record.alert),
                e,
            )
        })?;
        Ok(if read_version == 0 {
            VersionedPut {
                item,
                condition: "attribute_not_exists(#alert)",
                names: HashMap::from([("#alert".to_owned(), ALERT.to_owned())]),
                values: None,
            }
        } else {
            VersionedPut {
                item,
                condition: "#version = :version",
                names: HashMap::from([("#version".to_owned(), VERSION.to_owned())]),
                values: Some(HashMap::from([(
                    ":version".to_owned(),
                    AttributeValue::N(read_version.to_string()),
                )])),
            }
        })
    }

    async fn put_plain(
        &self,
        record: &AlertRecord,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        let put = self.versioned_put(record, read_version)?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .condition_expression(put.condition)
            .set_expression_attribute_names(Some(put.names))
            .set_expression_attribute_values(put.values);
        schema::conditional_put(request, || {
            self.operation("PutItem", &record.date, &record.alert)
        })
        .await
    }

    /// The record's write and a check that the mark is still `mark`, in one
    /// transaction. The SDK fills in the request's idempotency token once per
    /// call, so its own retry of a transaction that landed unanswered
    /// succeeds again instead of failing on the version it just wrote.
    async fn put_transactional(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: u64,
    ) -> Result<PutOutcome, StoreError> {
        let operation = || self.operation("TransactWriteItems", &record.date, &record.alert);
        // No mark item means mark 0, so "still 0" also holds when it is absent.
        let mark_condition = if mark == 0 {
            "attribute_not_exists(#alert) OR #generation = :generation"
        } else {
            "#generation = :generation"
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(Self::mark_key(&record.date)))
            .condition_expression(mark_condition)
            .expression_attribute_names("#generation", GENERATION)
            .expression_attribute_values(":generation", AttributeValue::N(mark.to_string()));
        let check = if mark == 0 {
            check.expression_attribute_names("#alert", ALERT)
        } else {
            check
        };
        let check = check.build().map_err(|e| StoreError::new(operation(), e))?;
        let put = self.versioned_put(record, read_version)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .condition_expression(put.condition)
            .set_expression_attribute_names(Some(put.names))
            .set_expression_attribute_values(put.values)
            .build()
            .map_err(|e| StoreError::new(operation(), e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => {
                let e = e.into_service_error();
                if read_again(&e) {
                    Ok(PutOutcome::PreconditionFailed)
                } else {
                    Err(store_error(operation(), e))
                }
            }
        }
    }
}

/// A record's item with the condition that guards its version.
struct VersionedPut {
    item: HashMap<String, AttributeValue>,
    condition: &'static str,
    names: HashMap<String, String>,
    values: Option<HashMap<String, AttributeValue>>,
}

/// Whether a cancelled transaction calls for reading again: a condition was
/// false (the mark moved, or the record's version did), or a concurrent
/// transaction on the same items was in flight (`TransactionConflict`, which
/// the SDK does not retry). Either way the caller reads the records and the
/// mark again and decides afresh. Any other reason (throttling, validation)
/// is an error.
fn read_again(error: &TransactWriteItemsError) -> bool {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = error else {
        return false;
    };
    let codes: Vec<&str> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|reason| reason.code().unwrap_or("None"))
        .collect();
    codes
        .iter()
        .any(|code| matches!(*code, "ConditionalCheckFailed" | "TransactionConflict"))
        && codes.iter().all(|code| {
            matches!(
                *code,
                "ConditionalCheckFailed" | "TransactionConflict" | "None"
            )
        })
}

impl AlertStore for DynamoAlertStore {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        let items = query_partition(&self.client, &self.table, DATE, date.as_str()).await?;
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let alert = match item.get(ALERT) {
                Some(AttributeValue::S(alert)) => alert.clone(),
                _ => String::from("(no Alert key)"),
            };
            if alert == MARK {
                continue;
            }
            let record = serde_dynamo::from_item(item).map_err(|e| {
                StoreError::new(self.operation("decoding the Query result", date, &alert), e)
            })?;
            records.push(record);
        }
        Ok(records)
    }

    async fn mark(&self, date: &Date) -> Result<u64, StoreError> {
        let operation = || self.operation("GetItem", date, MARK);
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::mark_key(date)))
            .consistent_read(true)
            .projection_expression("#generation")
            .expression_attribute_names("#generation", GENERATION)
            .send()
            .await
            .map_err(|e| store_error(operation(), e.into_service_error()))?;
        let Some(item) = output.item else {
            return Ok(0);
        };
        match item.get(GENERATION) {
            Some(AttributeValue::N(number)) => number.parse().map_err(|e| {
                StoreError::new(
                    operation(),
                    format!("Generation {number:?} is not a generation: {e}"),
                )
            }),
            other => Err(StoreError::new(
                operation(),
                format!("the mark's Generation is not a number: {other:?}"),
            )),
        }
    }

    async fn claim(&self, date: &Date, generation: u64) -> Result<PutOutcome, StoreError> {
        let mut item = Self::mark_key(date);
        item.insert(
            GENERATION.to_owned(),
            AttributeValue::N(generation.to_string()),
        );
        item.insert(
            EXPIRES.to_owned(),
            AttributeValue::N(expiry(date).to_string()),
        );
        // `<=`, not `<`: claiming the generation already marked is how a
        // redelivered batch carries on with the records it had not written.
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#alert) OR #generation <= :generation")
            .expression_attribute_names("#alert", ALERT)
            .expression_attribute_names("#generation", GENERATION)
            .expression_attribute_values(":generation", AttributeValue::N(generation.to_string()));
        // A transaction checking the mark at this moment makes DynamoDB
        // refuse the put with TransactionConflict, which the SDK does not
        // retry: like a failed condition, it means "read again".
        match request.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception()
                    || e.is_transaction_conflict_exception()
                {
                    Ok(PutOutcome::PreconditionFailed)
                } else {
                    Err(store_error(self.operation("PutItem", date, MARK), e))
                }
            }
        }
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        match mark {
            None => self.put_plain(record, read_version).await,
            Some(mark) => self.put_transactional(record, read_version, mark).await,
        }
    }
}

/// Creates the alert-state table (on-demand, no stream) unless it exists,
/// and waits until it is active. For test servers and local tooling;
/// production tables come from the deployment template, which must also
/// turn on time to live on `Expires` (tests do not need records to expire).
pub async fn create_alerts_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let request = client
        .create_table()
        .table_name(table)
        .key_schema(schema::key(DATE, KeyType::Hash)?)
        .key_schema(schema::key(ALERT, KeyType::Range)?)
        .attribute_definitions(schema::string_attribute(DATE)?)
        .attribute_definitions(schema::string_attribute(ALERT)?)
        .billing_mode(BillingMode::PayPerRequest);
    schema::create(client, table, request).await
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;

    use super::*;

    fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
        let mut error = TransactionCanceledException::builder();
        for code in codes {
            error = error.cancellation_reasons(CancellationReason::builder().code(*code).build());
        }
        TransactWriteItemsError::TransactionCanceledException(error.build())
    }

    // The test server never reports a conflict or throttling inside a
    // transaction, so the reasons other than a false condition are checked here.
    #[test]
    fn a_false_condition_or_a_conflict_means_read_again_and_nothing_else_does() {
        assert!(read_again(&cancelled(&["ConditionalCheckFailed", "None"])));
        assert!(read_again(&cancelled(&["None", "ConditionalCheckFailed"])));
        assert!(read_again(&cancelled(&["TransactionConflict", "None"])));
        assert!(!read_again(&cancelled(&["None", "None"])));
        assert!(!read_again(&cancelled(&[
            "ConditionalCheckFailed",
            "ThrottlingError"
        ])));
        assert!(!read_again(&cancelled(&[])));
    }

    #[test]
    fn a_mark_expires_with_its_days_records() {
        let date = Date::parse("2015-11-16").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            expiry(&date),
            1_447_632_000 + tally_core::rules::alert::RECORD_DAYS * 86_400
        );
    }
}
