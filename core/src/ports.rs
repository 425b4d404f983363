//! The ports: what the stages need from the outside world, as traits.
//!
//! Each port has an AWS adapter (DynamoDB, S3) and an embedded one (SQLite, a
//! directory), and the stage logic is written once over the trait. The
//! traits say only what the logic relies on; in particular [`StateStore::put`]
//! must be atomic with its precondition, because concurrent invocations for
//! the same instance race on it.

use std::future::Future;

use bytes::Bytes;

use crate::key::UploadKey;
use crate::ordering::OrderingKey;
use crate::state::InstanceState;

/// A failure of an outside system that retrying the whole unit of work may cure
/// (throttling that outlived the SDK's retries, a timeout, a 5xx) or that an
/// operator must fix (missing table, denied access). Either way the work is
/// not done and must not be acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {source}")]
pub struct StoreError {
    /// What was attempted, on what: `DynamoDB PutItem on table tally-state (2015-11-16/i-1)`.
    pub operation: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    pub fn new(
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// Where an object is: bucket, decoded key and, for versioned buckets, the
/// exact version an event was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

/// What a store says of an object without reading its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub etag: String,
    pub version_id: Option<String>,
    pub size: u64,
}

/// An object as read, or the fact that it is too big to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectBody {
    Read(Bytes),
    /// The object is larger than the cap; its body was not read.
    OverCap,
}

/// The bucket the instances upload to.
pub trait ObjectStore: Send + Sync {
    /// Reads an object, or `None` when it (or the named version) does not
    /// exist. An object over `max_bytes` is reported as [`ObjectBody::OverCap`]
    /// from its metadata, before any of its body is transferred.
    fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Option<(ObjectMeta, ObjectBody)>, StoreError>> + Send;

    /// The current version's metadata, or `None` when the key has no object.
    fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectMeta>, StoreError>> + Send;
}

/// When a state write may land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No state is stored, or the stored ordering is older than the new
    /// state's ([`OrderingKey::supersedes`]).
    Supersedes,
    /// The stored state is exactly this one (same ordering and same ETag, or
    /// both deleted): used to correct a write this process made itself.
    Replaces {
        ordering: OrderingKey,
        etag: Option<String>,
    },
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The precondition did not hold; nothing was written.
    PreconditionFailed,
}

/// The state table.
pub trait StateStore: Send + Sync {
    /// A strongly consistent read of one instance's state.
    fn get(
        &self,
        key: &UploadKey,
    ) -> impl Future<Output = Result<Option<InstanceState>, StoreError>> + Send;

    /// Writes `state` if `precondition` holds, atomically.
    fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;
}

/// An ETag without the quotes GetObject puts around it, as S3 events carry it,
/// so the two compare equal. Adapters store and compare only this form.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}
