//! Applying one upload notice to the state table, written once over the ports.
//!
//! # The goal
//!
//! Once uploads stop, each instance's state item holds the last accepted body
//! of the object that currently exists (or a tombstone if none does), whatever
//! the delivery did: duplicates, reordering, retries after a partial failure,
//! concurrent invocations for the same key.
//!
//! # The steps, and why each is there
//!
//! 1. **Read the stored state** (strongly consistent). If its ordering is
//!    newer than the notice's, the notice is stale: stop, with no object read
//!    and no write. If it is the notice's own ordering, this is a redelivery
//!    of an event already applied: only step 4 runs, because the first
//!    delivery may have crashed between its write and its check. Events
//!    ordered by time alone can also tie with *another* event (two uploads
//!    in one millisecond); such a notice goes on to step 2 only when step 4
//!    could not settle the state from the bucket. Once the state matches
//!    the bucket, nothing the notice brings can be newer, and writing it
//!    would only be undone by step 4 after the totals had seen it.
//! 2. **Skip identical re-uploads.** If the event's ETag is the stored one,
//!    nothing changed: stop without reading the object. Otherwise read the
//!    object (the event's exact version, when it has one) and parse it. A
//!    body with the same counters as the stored one also stops here: an
//!    identical re-upload costs no write and makes no stream record.
//! 3. **Write conditionally**: only if the stored ordering is still older
//!    (DynamoDB evaluates the condition atomically with the write), so a
//!    slow, stale invocation can never overwrite newer state: the "lost
//!    update" of the per-counter design tally replaces. A rejected body
//!    writes nothing: the instance keeps its last accepted state.
//! 4. **Check the object again after writing**, and correct the write if the
//!    object has moved on. Step 2 leaves the stored ordering behind when it
//!    skips an identical upload; without this check, an older event (say B
//!    in the uploads A, B, A) processed late could then overwrite A with B
//!    although A is what the bucket holds. Every write is followed by a HEAD
//!    of the key, so whichever write lands last is checked against the bucket
//!    after it lands, and once uploads stop the last check sees the final
//!    object. The correction replaces only this invocation's own write
//!    (same ordering and ETag), so it cannot undo a newer one; and after
//!    each correction the check looks at the bucket again, since the object
//!    may have moved on while the correction was read and written.
//!
//! When the object the check finds **cannot be stored** (a rejected body,
//! or an item too large), the state must hold what came last before it: the
//! newest accepted upload, or a tombstone if a delete came after that. The
//! check walks the key's versions back from the newest
//! ([`ObjectStore::versions`]), passes over rejected ones, and corrects to
//! the first accepted version, or to a tombstone at the first delete
//! marker. Without the walk, B in the uploads A, B, A, C (C rejected, the
//! second A skipped as identical) would stay, since the current object
//! offers nothing to correct to.
//!
//! Step 2 needs no walk when the event's own object is rejected: a rejected
//! upload changes nothing the state should hold, and every accepted upload
//! or delete around it has its own event, which either writes (and checks)
//! or finds the state already holding what it brings.
//!
//! A write whose response was lost (a timeout after the write landed) is
//! retried by the SDK, fails its condition, and is recognised by reading the
//! item back ([`put_confirmed`]): step 3's write and every correction. Taken
//! for a newer writer's, a correction whose response was lost would end the
//! check without the look at the bucket that undoes a correction the bucket
//! has since overtaken (uploads A, delete, A again, with the first event
//! late: its correction to a tombstone lands just after the second A's event
//! found A stored).
//!
//! # Where it stops short
//!
//! Only on an **unversioned bucket**, and only when the newest upload is
//! rejected: the instance keeps the last accepted body ingest managed to
//! read, which under reordering is not always the last accepted upload. An
//! older event handled after the rejected upload reads the rejected bytes,
//! and the accepted ones are gone: no design can do better there. The
//! instance's next accepted upload puts it right, and instances upload every
//! period. The embedded directory is such a bucket. On a versioned bucket
//! (the template deploys one) the rule is exact while the versions are kept:
//! the template expires old versions after a day, and an event handled
//! later than that (redriven from the dead-letter queue, say) finds the
//! history gone and keeps what it read, as on an unversioned bucket.

use std::collections::BTreeSet;
use std::fmt;

use tally_core::body::{self, BodyError};
use tally_core::capacity::{self, MAX_ITEM_BYTES};
use tally_core::key::parse_key;
use tally_core::ports::{
    ObjectBody, ObjectLocation, ObjectStore, ObjectVersion, Precondition, PutOutcome, StateStore,
    StoreError, normalize_etag, put_confirmed,
};
use tally_core::state::{Content, InstanceState};

use crate::event::{Change, Notice};

/// How many times step 4 corrects a write before failing the event so that
/// Lambda redelivers it (an object rewritten faster than ingest can read it).
const MAX_CORRECTIONS: usize = 3;

/// What ingest is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// The key prefix of uploads (`counters`).
    pub prefix: String,
    /// Bodies larger than this are rejected without being read.
    pub max_body_bytes: u64,
    /// When set, events for other buckets are ignored.
    pub bucket: Option<String>,
    /// How many records of one invocation are processed at once.
    pub concurrency: usize,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            prefix: tally_core::key::DEFAULT_PREFIX.to_owned(),
            max_body_bytes: body::DEFAULT_MAX_BODY_BYTES,
            bucket: None,
            concurrency: 16,
        }
    }
}

/// Why an upload's body was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(
        "the body parses, but its state item would be {bytes} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte item limit; report fewer or shorter counters per instance"
    )]
    ItemTooLarge { bytes: usize },
}

/// What applying a notice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key or bucket is not tally's; nothing to do.
    Ignored(String),
    /// The stored state is newer.
    Stale,
    /// The stored state came from this very event, delivered before.
    Duplicate,
    /// The object's counters are the stored ones.
    Unchanged,
    /// The object no longer exists; its removal event will be applied.
    Gone,
    /// The body was rejected; the stored state is untouched.
    Rejected(Rejection),
    /// The state was written; `corrected` when step 4 had to fix it.
    Written { corrected: bool },
    /// A newer state landed first; nothing was written.
    Superseded,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ignored(why) => write!(f, "ignored: {why}"),
            Outcome::Stale => f.write_str("stale"),
            Outcome::Duplicate => f.write_str("duplicate"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::Gone => f.write_str("object gone"),
            Outcome::Rejected(r) => write!(f, "rejected: {r}"),
            Outcome::Written { corrected: false } => f.write_str("written"),
            Outcome::Written { corrected: true } => f.write_str("written and corrected"),
            Outcome::Superseded => f.write_str("superseded"),
        }
    }
}

/// DynamoDB capacity a piece of work consumed, by DynamoDB's billing rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    pub read_units: u64,
    pub write_units: u64,
    pub writes: u64,
}

impl std::ops::AddAssign for Capacity {
    fn add_assign(&mut self, other: Capacity) {
        self.read_units += other.read_units;
        self.write_units += other.write_units;
        self.writes += other.writes;
    }
}

/// Ingest's logic over a state store and an object store.
#[derive(Debug, Clone)]
pub struct Ingestor<S, O> {
    state: S,
    objects: O,
    config: IngestConfig,
}

/// What step 4 found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// The write was already what the bucket says.
    Current,
    /// The write was corrected to what the bucket says.
    Corrected,
    /// The write stays although the bucket says otherwise: the bucket's
    /// body cannot be stored and there is no history to fall back on, or a
    /// newer write replaced this one (its writer checks it).
    Kept,
}

/// The object's content as read: accepted, rejected, or not there.
enum Read {
    Live(Content),
    Rejected(Rejection),
    Gone,
}

impl<S: StateStore, O: ObjectStore> Ingestor<S, O> {
    pub fn new(state: S, objects: O, config: IngestConfig) -> Ingestor<S, O> {
        Ingestor {
            state,
            objects,
            config,
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Applies one notice; see the module docs for the steps.
    pub async fn apply(&self, notice: &Notice) -> Result<(Outcome, Capacity), StoreError> {
        let mut used = Capacity::default();
        if let Some(bucket) = &self.config.bucket
            && bucket != &notice.bucket
        {
            return Ok((
                Outcome::Ignored(format!("bucket {} is not {bucket}", notice.bucket)),
                used,
            ));
        }
        let key = match parse_key(&notice.object_key, &self.config.prefix) {
            Ok(key) => key,
            Err(e) => return Ok((Outcome::Ignored(e.to_string()), used)),
        };

        // Step 1.
        let stored = self.state.get(&key).await?;
        used.read_units += capacity::consistent_read_units(stored.as_ref().map(|s| s.item_size()));
        if let Some(stored) = &stored {
            if stored.ordering == notice.ordering {
                // This event again (or, for time-ordered keys, another upload in
                // the same millisecond). The first delivery may have written and
                // crashed before step 4, so finish step 4 for it first.
                match self
                    .check_after_write(stored.clone(), &notice.bucket, &mut used)
                    .await?
                {
                    // The state now matches the bucket as it is, which is at
                    // least as new as anything this notice could bring.
                    Checked::Corrected => {
                        return Ok((Outcome::Written { corrected: true }, used));
                    }
                    // The same holds when it matched already. A time-ordered
                    // notice that went on would write what the bucket no longer
                    // holds (a duplicate of a delete whose write step 4 turned
                    // into the upload after it, say) and step 4 would then undo
                    // it: a flap of the instance's counters downstream.
                    Checked::Current => return Ok((Outcome::Duplicate, used)),
                    Checked::Kept if !notice.ordering.replaces_equal() => {
                        return Ok((Outcome::Duplicate, used));
                    }
                    Checked::Kept => {}
                }
            } else if !notice.ordering.supersedes(&stored.ordering) {
                return Ok((Outcome::Stale, used));
            }
        }

        // Step 2.
        let mut new_state = InstanceState {
            key,
            object_key: notice.object_key.clone(),
            ordering: notice.ordering.clone(),
            content: Content::Deleted,
        };
        new_state.content = match &notice.change {
            Change::Removed => Content::Deleted,
            Change::Created { etag } => {
                let stored_etag = stored.as_ref().and_then(|s| s.content.etag());
                if let (Some(event_etag), Some(stored_etag)) = (etag, stored_etag)
                    && normalize_etag(event_etag) == stored_etag
                {
                    return Ok((Outcome::Unchanged, used));
                }
                let location = ObjectLocation {
                    bucket: notice.bucket.clone(),
                    key: notice.object_key.clone(),
                    version_id: notice.version_id.clone(),
                };
                match self.read_storable(&location, &new_state).await? {
                    Read::Live(content) => content,
                    Read::Rejected(rejection) => return Ok((Outcome::Rejected(rejection), used)),
                    Read::Gone => return Ok((Outcome::Gone, used)),
                }
            }
        };
        if let Some(stored) = &stored
            && stored.content.same_contribution(&new_state.content)
        {
            return Ok((Outcome::Unchanged, used));
        }

        // Step 3.
        let stored_size = stored.as_ref().map_or(0, |s| s.item_size());
        used += write_cost(new_state.item_size().max(stored_size));
        let outcome = self
            .put_own(&new_state, &Precondition::Supersedes, &mut used)
            .await?;
        if outcome == PutOutcome::PreconditionFailed {
            return Ok((Outcome::Superseded, used));
        }

        // Step 4.
        let checked = self
            .check_after_write(new_state, &notice.bucket, &mut used)
            .await?;
        Ok((
            Outcome::Written {
                corrected: checked == Checked::Corrected,
            },
            used,
        ))
    }

    /// Step 4: makes sure the state still says what the bucket says, and
    /// corrects this invocation's own write if it does not.
    async fn check_after_write(
        &self,
        mut written: InstanceState,
        bucket: &str,
        used: &mut Capacity,
    ) -> Result<Checked, StoreError> {
        let mut corrected = false;
        for attempt in 0..=MAX_CORRECTIONS {
            let head = self.objects.head(bucket, &written.object_key).await?;
            let still_current = match (&written.content, &head) {
                (Content::Deleted, None) => true,
                (Content::Live { etag, .. }, Some(meta)) => *etag == meta.etag,
                _ => false,
            };
            let settled = if corrected {
                Checked::Corrected
            } else {
                Checked::Current
            };
            if still_current {
                return Ok(settled);
            }
            if attempt == MAX_CORRECTIONS {
                // The object changed under every correction. Fail, so that the
                // event is redelivered and its redelivery checks again.
                return Err(StoreError::new(
                    format!(
                        "checking s3://{bucket}/{} after writing its state",
                        written.object_key
                    ),
                    format!(
                        "the object changed during each of {MAX_CORRECTIONS} corrections; the event will be retried"
                    ),
                ));
            }
            let Some(content) = self.bucket_says(bucket, &written).await? else {
                // The current body cannot be stored and the bucket keeps no
                // history to fall back on: keep what was written.
                break;
            };
            if content == written.content {
                // The current body cannot be stored, and the history says
                // what was written.
                return Ok(settled);
            }
            // Same ordering, and only over this invocation's own write: a
            // correction can never undo a newer state.
            let correction = InstanceState {
                content,
                ..written.clone()
            };
            let precondition = Precondition::Replaces {
                ordering: written.ordering.clone(),
                etag: written.content.etag().map(str::to_owned),
            };
            *used += write_cost(correction.item_size().max(written.item_size()));
            match self.put_own(&correction, &precondition, used).await? {
                PutOutcome::Written => {
                    corrected = true;
                    written = correction;
                }
                // Something newer replaced the write; its writer checks it.
                PutOutcome::PreconditionFailed => break,
            }
        }
        Ok(if corrected {
            Checked::Corrected
        } else {
            Checked::Kept
        })
    }

    /// What the state of `like`'s object should hold, as the bucket is now:
    /// the current object's body, a tombstone when there is none, and when
    /// the current body cannot be stored, the newest version that can be
    /// (see [`Ingestor::newest_storable`]).
    async fn bucket_says(
        &self,
        bucket: &str,
        like: &InstanceState,
    ) -> Result<Option<Content>, StoreError> {
        let current = ObjectLocation {
            bucket: bucket.to_owned(),
            key: like.object_key.clone(),
            version_id: None,
        };
        Ok(match self.read_storable(&current, like).await? {
            Read::Live(content) => Some(content),
            Read::Gone => Some(Content::Deleted),
            Read::Rejected(_) => self.newest_storable(bucket, like).await?,
        })
    }

    /// Walks the key's history back from the newest entry: a delete marker
    /// means a tombstone, the first version whose body can be stored is the
    /// last accepted upload, and rejected versions are passed over. `None`
    /// when the history runs out first: an unversioned bucket keeps none.
    async fn newest_storable(
        &self,
        bucket: &str,
        like: &InstanceState,
    ) -> Result<Option<Content>, StoreError> {
        // Versions with the same ETag have the same body, so one reading
        // decides for all of them (an instance that keeps uploading the same
        // bad body leaves many).
        let mut rejected_etags = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .objects
                .versions(bucket, &like.object_key, after.as_deref())
                .await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            after = Some(last.version_id().to_owned());
            for version in page {
                let (version_id, etag) = match version {
                    ObjectVersion::DeleteMarker { .. } => return Ok(Some(Content::Deleted)),
                    ObjectVersion::Object { version_id, etag } => (version_id, etag),
                };
                if rejected_etags.contains(&etag) {
                    continue;
                }
                let location = ObjectLocation {
                    bucket: bucket.to_owned(),
                    key: like.object_key.clone(),
                    version_id: Some(version_id),
                };
                match self.read_storable(&location, like).await? {
                    Read::Live(content) => return Ok(Some(content)),
                    Read::Rejected(_) => {
                        rejected_etags.insert(etag);
                    }
                    // Deleted for good since it was listed: no longer history.
                    Read::Gone => {}
                }
            }
        }
    }

    /// A conditional write whose failed condition is confirmed by reading
    /// the item back ([`put_confirmed`]): a write that landed with its
    /// response lost is this invocation's own, and what it owes after its
    /// write (the check of step 4) still runs.
    async fn put_own(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
        used: &mut Capacity,
    ) -> Result<PutOutcome, StoreError> {
        let mut read_back_units = 0;
        let read_back = &mut read_back_units;
        let outcome = put_confirmed(state, self.state.put(state, precondition), || async move {
            let now = self.state.get(&state.key).await?;
            *read_back = capacity::consistent_read_units(now.as_ref().map(|s| s.item_size()));
            Ok(now)
        })
        .await?;
        used.read_units += read_back_units;
        Ok(outcome)
    }

    /// Reads an object and decides whether it can be stored: its body must
    /// parse, and the state item it would make in place of `like`'s content
    /// must fit in one item.
    async fn read_storable(
        &self,
        location: &ObjectLocation,
        like: &InstanceState,
    ) -> Result<Read, StoreError> {
        Ok(match self.read(location).await? {
            Read::Live(content) => {
                let candidate = InstanceState {
                    content,
                    ..like.clone()
                };
                let bytes = candidate.item_size();
                if bytes > MAX_ITEM_BYTES {
                    Read::Rejected(Rejection::ItemTooLarge { bytes })
                } else {
                    Read::Live(candidate.content)
                }
            }
            other => other,
        })
    }

    async fn read(&self, location: &ObjectLocation) -> Result<Read, StoreError> {
        let cap = self.config.max_body_bytes;
        Ok(match self.objects.get(location, cap).await? {
            None => Read::Gone,
            Some((meta, ObjectBody::OverCap)) => {
                Read::Rejected(Rejection::Body(BodyError::TooLarge {
                    size: meta.size,
                    cap,
                }))
            }
            Some((meta, ObjectBody::Read(bytes))) => match body::parse(&bytes, cap) {
                Ok(counters) => Read::Live(Content::live(&counters, meta.etag, meta.version_id)),
                Err(e) => Read::Rejected(Rejection::Body(e)),
            },
        })
    }
}

fn write_cost(item_bytes: usize) -> Capacity {
    Capacity {
        read_units: 0,
        write_units: capacity::write_units(item_bytes),
        writes: 1,
    }
}
