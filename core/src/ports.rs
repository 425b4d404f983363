//! The ports: what the stages need from the outside world, as traits.
//!
//! Each port has an AWS adapter (DynamoDB, S3) and an embedded one (SQLite, a
//! directory), and the stage logic is written once over the trait. The
//! traits say only what the logic relies on; in particular [`StateStore::put`]
//! must be atomic with its precondition, because concurrent invocations for
//! the same instance race on it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::aggregate::{Basis, PartialItem, TotalItem};
use crate::key::{Date, UploadKey};
use crate::ordering::OrderingKey;
use crate::rules::alert::{AlertRecord, Notification};
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

/// One entry of a key's history in a versioned bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectVersion {
    /// A stored body, readable by its version id.
    Object { version_id: String, etag: String },
    /// A delete marker: the key was deleted at this point of its history.
    DeleteMarker { version_id: String },
}

impl ObjectVersion {
    pub fn version_id(&self) -> &str {
        match self {
            ObjectVersion::Object { version_id, .. }
            | ObjectVersion::DeleteMarker { version_id } => version_id,
        }
    }
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

    /// The next entries of the key's history, newest first, after the entry
    /// with version id `after` (from the newest when `None`): its object
    /// versions and delete markers in the exact order they were made. A page
    /// holds at least one entry while any remain; an empty one ends the
    /// history.
    ///
    /// A store that keeps no versions has no history to walk back through
    /// and returns an empty page (or only its current object, as S3 lists an
    /// unversioned bucket): ingest then keeps the last accepted body it read,
    /// which is all an unversioned bucket allows.
    fn versions(
        &self,
        bucket: &str,
        key: &str,
        after: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ObjectVersion>, StoreError>> + Send;
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

/// A conditional write whose outcome decides what happens next, with a lost
/// response told apart from a lost race.
///
/// When a write lands but its response is lost (a timeout after DynamoDB
/// applied it), the SDK retries it, and the retry fails its own condition
/// because the first attempt changed the item. Taken at its word, that
/// failure says "someone else wrote first", and the writer would stop doing
/// what it owes after its own write (ingest's check of the bucket, the
/// rules stage's publish). So a failed condition is confirmed by reading the
/// item back: if it holds exactly what this write put there, the write is
/// this writer's own and counts as [`PutOutcome::Written`].
///
/// The read-back costs one strongly consistent read, and only on the rare
/// failed condition. Stores that never lose a response (the embedded ones)
/// pay nothing extra: their failed conditions are real and the read-back
/// finds another writer's item.
pub async fn put_confirmed<T, W, R>(
    written: &T,
    write: W,
    read_back: impl FnOnce() -> R,
) -> Result<PutOutcome, StoreError>
where
    T: PartialEq,
    W: Future<Output = Result<PutOutcome, StoreError>>,
    R: Future<Output = Result<Option<T>, StoreError>>,
{
    match write.await? {
        PutOutcome::Written => Ok(PutOutcome::Written),
        PutOutcome::PreconditionFailed => Ok(if read_back().await?.as_ref() == Some(written) {
            PutOutcome::Written
        } else {
            PutOutcome::PreconditionFailed
        }),
    }
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

    /// Strongly consistent reads of every instance's state in one of a
    /// day's [`BUCKETS`](crate::state::BUCKETS): a bucket at a time, so that
    /// reading a whole day (reconcile) holds one bucket's states in memory,
    /// not the fleet's.
    fn bucket(
        &self,
        date: &Date,
        bucket: u64,
    ) -> impl Future<Output = Result<Vec<InstanceState>, StoreError>> + Send;
}

/// How many times [`TotalsStore::partials_isolated`] reads again.
pub const ISOLATED_READ_ATTEMPTS: usize = 8;

/// The aggregate stage's tables: the partial items and the totals.
pub trait TotalsStore: Send + Sync {
    /// A strongly consistent read of one bucket's partial item.
    fn partial(
        &self,
        date: &Date,
        bucket: u64,
    ) -> impl Future<Output = Result<Option<PartialItem>, StoreError>> + Send;

    /// Writes a partial item if the stored one is at `read_version` (or
    /// absent, for version 0), atomically.
    fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;

    /// Strongly consistent reads of every partial item of a day.
    fn partials(
        &self,
        date: &Date,
    ) -> impl Future<Output = Result<Vec<PartialItem>, StoreError>> + Send;

    /// Every partial item of a day as of one instant: never one item from
    /// before a concurrent write and another from after it. The rules stage
    /// alerts on these totals, which must be a state the day really passed
    /// through.
    ///
    /// Read twice, until two reads in a row find the same versions. Versions
    /// only grow, so an item whose version is the same in both reads did not
    /// change between them, and every item held its version at the instant
    /// the first read ended and the second began. (DynamoDB's
    /// TransactGetItems would do it in one call, at the same cost, but its
    /// emulators cap it at 25 items, and a day has 64.)
    fn partials_isolated(
        &self,
        date: &Date,
    ) -> impl Future<Output = Result<Vec<PartialItem>, StoreError>> + Send {
        async move {
            let versions = |partials: &[PartialItem]| -> Vec<(u64, u64)> {
                partials.iter().map(|p| (p.bucket, p.version)).collect()
            };
            let mut first = self.partials(date).await?;
            for _ in 0..ISOLATED_READ_ATTEMPTS {
                let second = self.partials(date).await?;
                if versions(&first) == versions(&second) {
                    return Ok(second);
                }
                first = second;
            }
            Err(StoreError::new(
                format!("reading the partial items of {date} as of one instant"),
                format!(
                    "they changed between every two of {} reads; the aggregate stage is writing them continuously",
                    ISOLATED_READ_ATTEMPTS + 1
                ),
            ))
        }
    }

    /// Strongly consistent reads of some counters' totals on one day.
    fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> impl Future<Output = Result<BTreeMap<String, TotalItem>, StoreError>> + Send;

    /// Writes a total if the stored one still has basis `replaces` (or, for
    /// `None`, there is none), atomically: a compare-and-swap on the basis.
    fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;

    /// Every total of a day, removed ones included.
    fn totals(
        &self,
        date: &Date,
    ) -> impl Future<Output = Result<Vec<TotalItem>, StoreError>> + Send;
}

/// Writing and listing objects: the rules stage's snapshots, and rules
/// files kept in a bucket.
pub trait ObjectWriter: Send + Sync {
    /// Writes an object whole (one PUT, so readers see the old or the new
    /// body, never a mix).
    fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every current object under a prefix, in key order.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ListedObject>, StoreError>> + Send;
}

/// An object as a listing describes it, without reading its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    /// Without quotes ([`normalize_etag`]).
    pub etag: String,
    /// When the object was last written (S3's `LastModified`, a file's
    /// modification time). An identical re-upload moves it although it
    /// changes nothing else: it is how the rules stage tells a silent
    /// instance from an idle one ([`crate::fleet`]).
    pub last_modified: DateTime<Utc>,
    pub size: u64,
}

/// The alert-state table: one record per alert per date, and per date a
/// *mark*, the newest totals generation an evaluation has claimed.
///
/// The mark is what keeps a slow evaluation of older totals from deciding
/// anything: every record write is conditional on the mark still being the
/// writer's generation, atomically with the record's own version check.
pub trait AlertStore: Send + Sync {
    /// Strongly consistent reads of every alert record of a day.
    fn alerts(
        &self,
        date: &Date,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send;

    /// A strongly consistent read of the day's mark (0 when there is none).
    fn mark(&self, date: &Date) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Raises the day's mark to `generation`, unless it is already above.
    fn claim(
        &self,
        date: &Date,
        generation: u64,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;

    /// Writes a record if the stored one is at `read_version` (absent, for
    /// 0) and, when `mark` is given, the day's mark is still that, atomically.
    fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;
}

/// Where alert messages go: the alert topic, or stdout on one machine.
pub trait Notifier: Send + Sync {
    fn publish(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An ETag without the quotes GetObject puts around it, as S3 events carry it,
/// so the two compare equal. Adapters store and compare only this form.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

impl Precondition {
    /// Whether the precondition holds for writing `new` over `stored`. The
    /// DynamoDB adapter states the same rule as a condition expression; this
    /// is the rule for adapters that check it themselves inside a transaction.
    pub fn holds(&self, new: &InstanceState, stored: Option<&InstanceState>) -> bool {
        match (self, stored) {
            (Precondition::Supersedes, None) => true,
            (Precondition::Supersedes, Some(stored)) => new.ordering.supersedes(&stored.ordering),
            (Precondition::Replaces { .. }, None) => false,
            (Precondition::Replaces { ordering, etag }, Some(stored)) => {
                stored.ordering == *ordering && stored.content.etag() == etag.as_deref()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::state::Content;

    fn state(ordering: OrderingKey, etag: Option<&str>) -> InstanceState {
        let content = etag.map_or(Content::Deleted, |etag| fixtures::live(&[], etag));
        InstanceState {
            ordering,
            ..fixtures::state("i-1", "0", content)
        }
    }

    #[test]
    fn supersedes_holds_over_nothing_or_older_state_only() {
        let seq = |s| OrderingKey::from_sequencer(s).unwrap();
        let new = state(seq("2"), Some("b"));
        assert!(Precondition::Supersedes.holds(&new, None));
        assert!(Precondition::Supersedes.holds(&new, Some(&state(seq("1"), Some("a")))));
        assert!(!Precondition::Supersedes.holds(&new, Some(&state(seq("2"), Some("a")))));
        assert!(!Precondition::Supersedes.holds(&new, Some(&state(seq("3"), None))));
        let timed = state(OrderingKey::from_event_time_millis(5).unwrap(), Some("b"));
        assert!(Precondition::Supersedes.holds(&timed, Some(&timed.clone())));
    }

    #[test]
    fn replaces_holds_only_over_the_exact_state_named() {
        let seq = |s| OrderingKey::from_sequencer(s).unwrap();
        let new = state(seq("2"), Some("c"));
        let mine = Precondition::Replaces {
            ordering: seq("2"),
            etag: Some("b".into()),
        };
        assert!(mine.holds(&new, Some(&state(seq("2"), Some("b")))));
        assert!(!mine.holds(&new, Some(&state(seq("2"), Some("x")))));
        assert!(!mine.holds(&new, Some(&state(seq("3"), Some("b")))));
        assert!(!mine.holds(&new, None));
        let tombstone = Precondition::Replaces {
            ordering: seq("2"),
            etag: None,
        };
        assert!(tombstone.holds(&new, Some(&state(seq("2"), None))));
        assert!(!tombstone.holds(&new, Some(&state(seq("2"), Some("b")))));
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
        }
    }

    #[test]
    fn a_failed_condition_over_this_writes_own_item_is_this_writes_success() {
        let failed = || async { Ok(PutOutcome::PreconditionFailed) };
        // The write landed, its response was lost, the retry failed: ours.
        let landed = block_on(put_confirmed(&7, failed(), || async { Ok(Some(7)) }));
        assert_eq!(landed.unwrap(), PutOutcome::Written);
        // Someone else's item, or none: a real lost race.
        let other = block_on(put_confirmed(&7, failed(), || async { Ok(Some(8)) }));
        assert_eq!(other.unwrap(), PutOutcome::PreconditionFailed);
        let none = block_on(put_confirmed(&7, failed(), || async { Ok(None) }));
        assert_eq!(none.unwrap(), PutOutcome::PreconditionFailed);
        // A write that reports success reads nothing back.
        let written = block_on(put_confirmed(
            &7,
            async { Ok(PutOutcome::Written) },
            || async { Err(StoreError::new("read", "must not be called")) },
        ));
        assert_eq!(written.unwrap(), PutOutcome::Written);
    }

    #[test]
    fn etags_compare_without_quotes() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }
}
