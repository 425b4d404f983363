//! The ports in memory, each keeping the conditions its DynamoDB and SQLite
//! counterparts keep, for tests that choose every interleaving themselves
//! or need no database at all: the bucket, the state table, the aggregate
//! stage's tables and the alert topic.
//!
//! [`MemoryBucket`] models S3 honestly enough for ingest's walk back through
//! a key's history: a versioned bucket keeps every upload as a version and
//! every delete as a marker, newest listed first; an unversioned one keeps
//! only the current object, lists it with version id `null`, and forgets a
//! deleted key. ETags are the MD5 of the body, as S3 computes them for a
//! single PUT. Each upload's last-modified time comes from a clock a test
//! can set ([`MemoryBucket::set_now`]), so "this instance last wrote at
//! 23:59" needs no waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tally_core::aggregate::{Basis, PartialItem, TotalItem, partial_key};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{
    ListedObject, Notifier, ObjectBody, ObjectLocation, ObjectMeta, ObjectStore, ObjectVersion,
    ObjectWriter, Precondition, PutOutcome, StateStore, StoreError, TotalsStore,
};
use tally_core::rules::alert::Notification;
use tally_core::state::{InstanceState, bucket_of};
use tally_embedded::directory::DirectoryStore;

/// The version id S3 gives an object written while versioning was off.
const NULL_VERSION: &str = "null";

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock has already failed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One entry of a key's history.
#[derive(Debug, Clone)]
enum Entry {
    Object {
        version_id: String,
        body: Bytes,
        last_modified: DateTime<Utc>,
    },
    DeleteMarker {
        version_id: String,
    },
}

/// What an upload to a [`MemoryBucket`] returns, as S3's PutObject does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub etag: String,
    /// `None` on an unversioned bucket, as S3 answers.
    pub version_id: Option<String>,
}

/// A bucket in memory, versioned or not. Clones share the objects.
#[derive(Debug, Clone)]
pub struct MemoryBucket {
    versioned: bool,
    /// How many entries one [`ObjectStore::versions`] page holds.
    page: usize,
    keys: Arc<Mutex<BTreeMap<String, Vec<Entry>>>>,
    next_version: Arc<AtomicU64>,
    /// The time uploads are stamped with; the system clock's when unset.
    now: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl MemoryBucket {
    /// A bucket with versioning enabled, listing a key's whole remaining
    /// history in one page (S3's adapter lists one entry a page; this walks
    /// pages of several).
    pub fn versioned() -> MemoryBucket {
        MemoryBucket::new(true)
    }

    /// A bucket that keeps only each key's current object.
    pub fn unversioned() -> MemoryBucket {
        MemoryBucket::new(false)
    }

    pub fn new(versioned: bool) -> MemoryBucket {
        MemoryBucket {
            versioned,
            page: usize::MAX,
            keys: Arc::default(),
            next_version: Arc::default(),
            now: Arc::default(),
        }
    }

    /// Stamps the uploads from now on with `now` as their last-modified
    /// time (S3's `LastModified`), until set again. Clones share the clock.
    pub fn set_now(&self, now: DateTime<Utc>) {
        *locked(&self.now) = Some(now);
    }

    fn now(&self) -> DateTime<Utc> {
        locked(&self.now).unwrap_or_else(Utc::now)
    }

    /// Lists at most `entries` entries of a key's history a page.
    pub fn with_version_pages_of(self, entries: usize) -> MemoryBucket {
        MemoryBucket {
            page: entries.max(1),
            ..self
        }
    }

    pub fn etag_of(body: &[u8]) -> String {
        DirectoryStore::etag_of(body)
    }

    /// Stores `body` under `key`: a new version, or the key's only object.
    /// Its last-modified time is the bucket's clock's, even when the body is
    /// the one already stored, as on S3.
    pub fn upload(&self, key: &str, body: impl Into<Bytes>) -> Put {
        let body = body.into();
        let etag = Self::etag_of(&body);
        let last_modified = self.now();
        let mut keys = locked(&self.keys);
        let history = keys.entry(key.to_owned()).or_default();
        if self.versioned {
            let version_id = self.next_version_id();
            history.push(Entry::Object {
                version_id: version_id.clone(),
                body,
                last_modified,
            });
            Put {
                etag,
                version_id: Some(version_id),
            }
        } else {
            *history = vec![Entry::Object {
                version_id: NULL_VERSION.to_owned(),
                body,
                last_modified,
            }];
            Put {
                etag,
                version_id: None,
            }
        }
    }

    /// Deletes `key`: places a delete marker, or removes the object.
    pub fn delete(&self, key: &str) {
        let mut keys = locked(&self.keys);
        if self.versioned {
            let version_id = self.next_version_id();
            keys.entry(key.to_owned())
                .or_default()
                .push(Entry::DeleteMarker { version_id });
        } else {
            keys.remove(key);
        }
    }

    /// The current body of `key`, if it has one.
    pub fn current(&self, key: &str) -> Option<Bytes> {
        match locked(&self.keys).get(key)?.last()? {
            Entry::Object { body, .. } => Some(body.clone()),
            Entry::DeleteMarker { .. } => None,
        }
    }

    /// Every current object under `prefix`, with its body, in key order.
    pub fn current_objects(&self, prefix: &str) -> Vec<(String, Bytes)> {
        locked(&self.keys)
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, history)| match history.last() {
                Some(Entry::Object { body, .. }) => Some((key.clone(), body.clone())),
                _ => None,
            })
            .collect()
    }

    fn next_version_id(&self) -> String {
        format!("v{}", self.next_version.fetch_add(1, Ordering::SeqCst))
    }

    /// The entry a location names: that version (the current object, for
    /// `null` on an unversioned bucket), or the key's newest entry.
    fn entry(&self, key: &str, version_id: Option<&str>) -> Option<Entry> {
        let keys = locked(&self.keys);
        let history = keys.get(key)?;
        match version_id {
            None => history.last().cloned(),
            Some(wanted) => history
                .iter()
                .find(|e| matches!(e, Entry::Object { version_id, .. } if version_id == wanted))
                .cloned(),
        }
    }

    fn meta(&self, version_id: String, body: &Bytes) -> ObjectMeta {
        ObjectMeta {
            etag: Self::etag_of(body),
            version_id: self.versioned.then_some(version_id),
            size: body.len() as u64,
        }
    }
}

impl ObjectStore for MemoryBucket {
    async fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> Result<Option<(ObjectMeta, ObjectBody)>, StoreError> {
        Ok(
            match self.entry(&location.key, location.version_id.as_deref()) {
                Some(Entry::Object {
                    version_id, body, ..
                }) => {
                    let meta = self.meta(version_id, &body);
                    if meta.size > max_bytes {
                        Some((meta, ObjectBody::OverCap))
                    } else {
                        Some((meta, ObjectBody::Read(body)))
                    }
                }
                Some(Entry::DeleteMarker { .. }) | None => None,
            },
        )
    }

    async fn head(&self, _bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(match self.entry(key, None) {
            Some(Entry::Object {
                version_id, body, ..
            }) => Some(self.meta(version_id, &body)),
            Some(Entry::DeleteMarker { .. }) | None => None,
        })
    }

    async fn versions(
        &self,
        _bucket: &str,
        key: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        let keys = locked(&self.keys);
        let newest_first = keys
            .get(key)
            .into_iter()
            .flatten()
            .rev()
            .map(|entry| match entry {
                Entry::Object {
                    version_id, body, ..
                } => ObjectVersion::Object {
                    version_id: version_id.clone(),
                    etag: Self::etag_of(body),
                },
                Entry::DeleteMarker { version_id } => ObjectVersion::DeleteMarker {
                    version_id: version_id.clone(),
                },
            });
        Ok(match after {
            None => newest_first.take(self.page).collect(),
            Some(after) => newest_first
                .skip_while(|v| v.version_id() != after)
                .skip(1)
                .take(self.page)
                .collect(),
        })
    }
}

/// The rules stage's snapshots and rules files: written as uploads are,
/// listed as S3 lists current objects.
impl ObjectWriter for MemoryBucket {
    async fn put(
        &self,
        _bucket: &str,
        key: &str,
        body: Bytes,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        self.upload(key, body);
        Ok(())
    }

    async fn list(&self, _bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        Ok(locked(&self.keys)
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, history)| match history.last() {
                Some(Entry::Object {
                    body,
                    last_modified,
                    ..
                }) => Some(ListedObject {
                    key: key.clone(),
                    etag: Self::etag_of(body),
                    last_modified: *last_modified,
                    size: body.len() as u64,
                }),
                _ => None,
            })
            .collect())
    }
}

/// The state table in memory, applying [`Precondition::holds`] as both
/// adapters do. Clones share the items.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore {
    items: Arc<Mutex<BTreeMap<UploadKey, InstanceState>>>,
}

impl StateStore for MemoryStateStore {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        Ok(locked(&self.items).get(key).cloned())
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let mut items = locked(&self.items);
        if !precondition.holds(state, items.get(&state.key)) {
            return Ok(PutOutcome::PreconditionFailed);
        }
        items.insert(state.key.clone(), state.clone());
        Ok(PutOutcome::Written)
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        Ok(locked(&self.items)
            .values()
            .filter(|s| &s.key.date == date && bucket_of(&s.key.instance) == bucket)
            .cloned()
            .collect())
    }
}

/// The partial items and totals in memory, with the adapters' rules: a
/// partial is written only over the version it was read at, a total only
/// over the basis it was computed against. Clones share the items.
#[derive(Debug, Clone, Default)]
pub struct MemoryTotalsStore {
    partials: Arc<Mutex<BTreeMap<String, PartialItem>>>,
    totals: Arc<Mutex<BTreeMap<(String, String), TotalItem>>>,
}

impl TotalsStore for MemoryTotalsStore {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        Ok(locked(&self.partials)
            .get(&partial_key(date, bucket))
            .cloned())
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        let mut partials = locked(&self.partials);
        let stored = partials.get(&item.part).map_or(0, |p| p.version);
        if stored != read_version {
            return Ok(PutOutcome::PreconditionFailed);
        }
        partials.insert(item.part.clone(), item.clone());
        Ok(PutOutcome::Written)
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        Ok(locked(&self.partials)
            .values()
            .filter(|p| p.date == *date)
            .cloned()
            .collect())
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        let totals = locked(&self.totals);
        Ok(counters
            .iter()
            .filter_map(|counter| {
                totals
                    .get(&(date.as_str().to_owned(), counter.clone()))
                    .map(|total| (counter.clone(), total.clone()))
            })
            .collect())
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        let mut totals = locked(&self.totals);
        let key = (item.date.as_str().to_owned(), item.counter.clone());
        if totals.get(&key).map(|t| &t.basis) != replaces {
            return Ok(PutOutcome::PreconditionFailed);
        }
        totals.insert(key, item.clone());
        Ok(PutOutcome::Written)
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        Ok(locked(&self.totals)
            .iter()
            .filter(|((d, _), _)| d == date.as_str())
            .map(|(_, total)| total.clone())
            .collect())
    }
}

/// The alert topic in memory: every message published, in order. The next
/// publishes can be made to fail, as SNS does when it is down (or the
/// process dies before its publish). Clones share the messages.
#[derive(Debug, Clone, Default)]
pub struct MemoryTopic {
    sent: Arc<Mutex<Vec<Notification>>>,
    failing: Arc<AtomicUsize>,
}

impl MemoryTopic {
    /// Every message published so far, in order.
    pub fn sent(&self) -> Vec<Notification> {
        locked(&self.sent).clone()
    }

    /// Makes the next `publishes` publishes fail.
    pub fn fail_next(&self, publishes: usize) {
        self.failing.store(publishes, Ordering::SeqCst);
    }
}

impl Notifier for MemoryTopic {
    async fn publish(&self, notification: &Notification) -> Result<(), StoreError> {
        if self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new("publishing an alert", "injected outage"));
        }
        locked(&self.sent).push(notification.clone());
        Ok(())
    }
}
