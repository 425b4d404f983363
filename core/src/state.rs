//! The state table: one item per (Date, Instance) holding that instance's last
//! accepted body.
//!
//! # Why per instance and not per counter
//!
//! The per-counter design tally replaces kept one item per (Counter, Date)
//! with a map of every instance's value. DynamoDB bills a write on the whole
//! item, so each upload cost one write per counter, each write grew with the
//! fleet, and an item hit the 400 KB limit at about fifteen thousand
//! instances. Here an upload is one
//! write of one item the size of one body, whatever the fleet.
//!
//! # Key
//!
//! | attribute  | type | role |
//! |------------|------|------|
//! | `Part`     | S    | hash key: `<date>#<bucket>`, bucket = FNV-1a 64 of the instance id mod [`BUCKETS`], two digits |
//! | `Instance` | S    | range key: the instance id as in the object key |
//!
//! A day's uploads all share a date, so a hash key of the date alone would
//! send the whole fleet's writes to one partition (1,000 write units/s):
//! 100,000 instances uploading a 100-counter body (a ~1.7 KB item, 2 write
//! units) every minute need about 3,300.
//! Spreading each day over [`BUCKETS`] hash keys gives 64 × 1,000 write units/s
//! of headroom, and still lets the aggregate stage and `reconcile` read one
//! day's state as 64 strongly consistent queries. The bucket function is part
//! of the schema: it must never change for existing data.
//!
//! # Other attributes
//!
//! `Date` (S), `Counters` (M of name → N, the accepted body; empty for a
//! deleted object), `Ordering` (S, see [`crate::ordering`]), `ETag` and
//! `VersionId` (S, of the object the body was read from; absent when
//! deleted), `Deleted` (BOOL: a tombstone, kept so that a stale create
//! delivered later cannot resurrect the instance), `ObjectKey` (S).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::body::Counter;
use crate::capacity;
use crate::key::{Date, UploadKey};
use crate::ordering::OrderingKey;

/// How many hash keys one day of state is spread over.
pub const BUCKETS: u64 = 64;

/// Attribute names of the state table, for adapters that build expressions.
pub mod attr {
    pub const PART: &str = "Part";
    pub const INSTANCE: &str = "Instance";
    pub const ORDERING: &str = "Ordering";
    pub const ETAG: &str = "ETag";
    pub const DELETED: &str = "Deleted";
}

/// The state table's hash key for one instance on one day.
pub fn partition_key(key: &UploadKey) -> String {
    bucket_key(&key.date, bucket_of(&key.instance))
}

/// The hash key of one bucket of one day: `<date>#NN`.
pub fn bucket_key(date: &Date, bucket: u64) -> String {
    format!("{date}#{bucket:02}")
}

/// Which of the day's [`BUCKETS`] an instance's state lives in.
pub fn bucket_of(instance: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(instance.as_bytes());
    hasher.finish() % BUCKETS
}

/// What the state says the object holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An accepted body, read from the object with this ETag (and version).
    Live {
        counters: BTreeMap<String, i64>,
        etag: String,
        version_id: Option<String>,
    },
    /// The object was removed; it contributes nothing.
    Deleted,
}

impl Content {
    pub fn live(counters: &[Counter<'_>], etag: String, version_id: Option<String>) -> Content {
        Content::Live {
            counters: counters
                .iter()
                .map(|c| (c.name.to_owned(), c.value))
                .collect(),
            etag,
            version_id,
        }
    }

    /// The counters this content contributes to the day's totals.
    pub fn counters(&self) -> Option<&BTreeMap<String, i64>> {
        match self {
            Content::Live { counters, .. } => Some(counters),
            Content::Deleted => None,
        }
    }

    /// Whether writing `self` over `other` would change what the instance
    /// contributes. Two bodies with the same counters are the same whatever
    /// their ETags (a re-upload with different whitespace changes nothing).
    pub fn same_contribution(&self, other: &Content) -> bool {
        self.counters() == other.counters()
    }

    pub fn etag(&self) -> Option<&str> {
        match self {
            Content::Live { etag, .. } => Some(etag),
            Content::Deleted => None,
        }
    }
}

/// One instance's state on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub key: UploadKey,
    pub object_key: String,
    pub ordering: OrderingKey,
    pub content: Content,
}

/// The state table's item, as stored and as it appears in stream images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateItem {
    #[serde(rename = "Part")]
    pub part: String,
    #[serde(rename = "Instance")]
    pub instance: String,
    #[serde(rename = "Date")]
    pub date: Date,
    #[serde(rename = "Counters", default)]
    pub counters: BTreeMap<String, i64>,
    #[serde(rename = "Ordering")]
    pub ordering: OrderingKey,
    #[serde(rename = "ETag", default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "VersionId", default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(rename = "Deleted", default)]
    pub deleted: bool,
    #[serde(rename = "ObjectKey")]
    pub object_key: String,
}

/// An item that does not describe a valid state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateItemError {
    #[error(
        "state item {part}/{instance}: a live item has no ETag; it was not written by tally: delete it, and the instance's next upload writes it anew"
    )]
    LiveWithoutETag { part: String, instance: String },
    #[error(
        "state item {part}/{instance}: stored under the wrong hash key (expected {expected}); it was not written by tally: delete it, and the instance's next upload writes it anew"
    )]
    WrongPartition {
        part: String,
        instance: String,
        expected: String,
    },
}

impl From<&InstanceState> for StateItem {
    fn from(state: &InstanceState) -> StateItem {
        let (counters, etag, version_id, deleted) = match &state.content {
            Content::Live {
                counters,
                etag,
                version_id,
            } => (
                counters.clone(),
                Some(etag.clone()),
                version_id.clone(),
                false,
            ),
            Content::Deleted => (BTreeMap::new(), None, None, true),
        };
        StateItem {
            part: partition_key(&state.key),
            instance: state.key.instance.clone(),
            date: state.key.date.clone(),
            counters,
            ordering: state.ordering.clone(),
            etag,
            version_id,
            deleted,
            object_key: state.object_key.clone(),
        }
    }
}

impl TryFrom<StateItem> for InstanceState {
    type Error = StateItemError;

    fn try_from(item: StateItem) -> Result<InstanceState, StateItemError> {
        let key = UploadKey {
            date: item.date,
            instance: item.instance,
        };
        let expected = partition_key(&key);
        if expected != item.part {
            return Err(StateItemError::WrongPartition {
                part: item.part,
                instance: key.instance,
                expected,
            });
        }
        let content = if item.deleted {
            Content::Deleted
        } else {
            Content::Live {
                counters: item.counters,
                etag: item.etag.ok_or_else(|| StateItemError::LiveWithoutETag {
                    part: item.part.clone(),
                    instance: key.instance.clone(),
                })?,
                version_id: item.version_id,
            }
        };
        Ok(InstanceState {
            key,
            object_key: item.object_key,
            ordering: item.ordering,
            content,
        })
    }
}

impl InstanceState {
    /// The size DynamoDB bills for this state's item.
    pub fn item_size(&self) -> usize {
        // Serializing a plain struct of strings, numbers and a string-keyed map
        // into serde_dynamo's own value type cannot fail.
        serde_dynamo::to_item::<_, serde_dynamo::Item>(StateItem::from(self))
            .map(|item| capacity::item_size(&item))
            .unwrap_or(capacity::MAX_ITEM_BYTES + 1)
    }
}

/// An item's attribute names and DynamoDB types, as `{Counters: S, Date: S}`,
/// for an error about an image or key that does not decode: serde_dynamo's
/// errors ("Expected map", "Expected string") do not say which attribute
/// is wrong, and the values may be too large to log.
pub fn attribute_types(item: &serde_dynamo::Item) -> String {
    use serde_dynamo::AttributeValue as A;
    let mut attributes: Vec<(&str, &str)> = item
        .iter()
        .map(|(name, value)| {
            let kind = match value {
                A::N(_) => "N",
                A::S(_) => "S",
                A::Bool(_) => "BOOL",
                A::B(_) => "B",
                A::Null(_) => "NULL",
                A::M(_) => "M",
                A::L(_) => "L",
                A::Ss(_) => "SS",
                A::Ns(_) => "NS",
                A::Bs(_) => "BS",
            };
            (name.as_str(), kind)
        })
        .collect();
    attributes.sort_unstable();
    let listed: Vec<String> = attributes
        .iter()
        .map(|(name, kind)| format!("{name}: {kind}"))
        .collect();
    format!("{{{}}}", listed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn attribute_types_name_each_attribute_with_its_dynamodb_type() {
        let item: serde_dynamo::Item = serde_json::from_value::<
            std::collections::HashMap<String, serde_dynamo::AttributeValue>,
        >(serde_json::json!({
            "Date": {"S": "2015-11-16"},
            "Counters": {"S": "requests 5"},
            "Deleted": {"BOOL": false},
            "Basis": {"L": [{"N": "1"}]}
        }))
        .unwrap()
        .into();
        assert_eq!(
            attribute_types(&item),
            "{Basis: L, Counters: S, Date: S, Deleted: BOOL}"
        );
    }

    fn state(instance: &str, content: Content) -> InstanceState {
        fixtures::state(instance, "0A1B2C3D4E5F678901", content)
    }

    #[test]
    fn the_bucket_function_is_stable() {
        // These values are stored in every deployed table: they must never change.
        assert_eq!(bucket_of("i-1"), bucket_of("i-1"));
        let spread: std::collections::HashSet<u64> =
            (0..1000).map(|i| bucket_of(&format!("i-{i}"))).collect();
        assert_eq!(spread.len(), BUCKETS as usize);
        let fixed: Vec<u64> = ["i-1", "i-2", "web 1", "インスタンス"]
            .iter()
            .map(|i| bucket_of(i))
            .collect();
        assert_eq!(fixed, [14, 27, 22, 0]);
    }

    #[test]
    fn live_and_deleted_states_round_trip_through_the_item() {
        let live = state(
            "web 1",
            Content::Live {
                counters: [("a.b".to_owned(), 5), ("計數".to_owned(), -1)].into(),
                etag: "\"abc\"".into(),
                version_id: Some("v1".into()),
            },
        );
        let deleted = state("i-2", Content::Deleted);
        for s in [live, deleted] {
            let item = StateItem::from(&s);
            let dynamo: serde_dynamo::Item = serde_dynamo::to_item(&item).unwrap();
            let back: StateItem = serde_dynamo::from_item(dynamo).unwrap();
            assert_eq!(InstanceState::try_from(back).unwrap(), s);
        }
    }

    #[test]
    fn an_item_under_the_wrong_hash_key_is_refused() {
        let mut item = StateItem::from(&state("i-1", Content::Deleted));
        item.part = "2015-11-16#00".into();
        assert!(matches!(
            InstanceState::try_from(item),
            Err(StateItemError::WrongPartition { .. })
        ));
    }

    #[test]
    fn same_contribution_compares_counters_not_etags() {
        let a = Content::Live {
            counters: [("x".to_owned(), 1)].into(),
            etag: "1".into(),
            version_id: None,
        };
        let b = Content::Live {
            counters: [("x".to_owned(), 1)].into(),
            etag: "2".into(),
            version_id: None,
        };
        assert!(a.same_contribution(&b));
        assert!(!a.same_contribution(&Content::Deleted));
        assert!(Content::Deleted.same_contribution(&Content::Deleted));
        let empty = Content::Live {
            counters: BTreeMap::new(),
            etag: "3".into(),
            version_id: None,
        };
        // An empty body contributes nothing, like a deleted object, but it is
        // still a live object: the difference matters for resurrection.
        assert!(!empty.same_contribution(&Content::Deleted));
    }

    #[test]
    fn a_seed_body_item_is_about_two_kib() {
        let counters = (0..100).map(|i| (format!("COUNTER{i}"), 123_456)).collect();
        let s = state(
            "i-0123456789abcdef0",
            Content::Live {
                counters,
                etag: "\"0123456789abcdef0123456789abcdef\"".into(),
                version_id: None,
            },
        );
        let size = s.item_size();
        assert!((1500..2500).contains(&size), "{size}");
        assert_eq!(capacity::write_units(size), 2);
    }
}
