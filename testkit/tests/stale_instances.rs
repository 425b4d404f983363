//! The stale-instance check over the ports, with no server: the memory
//! bucket's listing, stamped by a clock the test sets, and the state
//! table's tombstones. What it costs is part of the behaviour: which
//! prefixes a tick lists and which state items it reads.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tally_core::fleet::{LastWrite, Staleness, Thresholds, stale_instances};
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::ports::{ListedObject, ObjectWriter, Precondition, StateStore, StoreError};
use tally_core::state::{Content, InstanceState};
use tally_testkit::memory::{MemoryBucket, MemoryStateStore};

const BUCKET: &str = "counters-bucket";
const PREFIX: &str = "counters";
const BODY: &str = "requests 1\n";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn date(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// The bucket, noting each prefix listed.
struct ListingRecorder {
    bucket: MemoryBucket,
    listed: Mutex<Vec<String>>,
}

impl ObjectWriter for ListingRecorder {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.bucket.put(bucket, key, body, content_type).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        self.listed.lock().unwrap().push(prefix.to_owned());
        self.bucket.list(bucket, prefix).await
    }
}

/// The state table, noting each item read.
struct ReadRecorder {
    states: MemoryStateStore,
    read: Mutex<Vec<String>>,
}

impl StateStore for ReadRecorder {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        self.read
            .lock()
            .unwrap()
            .push(format!("{}/{}", key.date, key.instance));
        self.states.get(key).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<tally_core::ports::PutOutcome, StoreError> {
        self.states.put(state, precondition).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        self.states.bucket(date, bucket).await
    }
}

struct World {
    bucket: MemoryBucket,
    objects: ListingRecorder,
    states: ReadRecorder,
}

impl World {
    fn new() -> World {
        let bucket = MemoryBucket::unversioned();
        World {
            objects: ListingRecorder {
                bucket: bucket.clone(),
                listed: Mutex::default(),
            },
            states: ReadRecorder {
                states: MemoryStateStore::default(),
                read: Mutex::default(),
            },
            bucket,
        }
    }

    fn upload_at(&self, time: &str, day: &str, instance: &str) {
        self.bucket.set_now(at(time));
        self.bucket
            .upload(&format!("{PREFIX}/{day}/{instance}"), BODY);
    }

    /// Deletes the object, and records the tombstone ingest writes for the
    /// delete event.
    async fn delete(&self, day: &str, instance: &str) {
        let object_key = format!("{PREFIX}/{day}/{instance}");
        self.bucket.delete(&object_key);
        let tombstone = InstanceState {
            key: UploadKey {
                date: date(day),
                instance: instance.into(),
            },
            object_key,
            ordering: OrderingKey::from_sequencer("0A").unwrap(),
            content: Content::Deleted,
        };
        self.states
            .states
            .put(&tombstone, &Precondition::Supersedes)
            .await
            .unwrap();
    }

    /// The verdict on 2015-11-17 at `now`, with what it listed and read.
    async fn tick(&self, now: &str) -> (Staleness, Vec<String>, Vec<String>) {
        let thresholds = Thresholds {
            after: Duration::from_secs(5 * 60),
            forget_after: Duration::from_secs(6 * 3600),
        };
        let staleness = stale_instances(
            &self.states,
            &self.objects,
            BUCKET,
            PREFIX,
            &date("2015-11-17"),
            at(now),
            &thresholds,
        )
        .await
        .unwrap();
        let listed = std::mem::take(&mut *self.objects.listed.lock().unwrap());
        let read = std::mem::take(&mut *self.states.read.lock().unwrap());
        (staleness, listed, read)
    }
}

fn last_write(instance: &str, time: &str) -> LastWrite {
    LastWrite {
        instance: instance.into(),
        at: at(time),
    }
}

#[tokio::test]
async fn after_midnight_a_silent_instance_is_stale_until_it_uploads_the_same_bytes_again() {
    let world = World::new();
    for instance in ["silent", "up", "deleted"] {
        world.upload_at("2015-11-16T23:59:00Z", "2015-11-16", instance);
    }
    // Decommissioned yesterday noon: forgotten before the day began.
    world.upload_at("2015-11-16T12:00:00Z", "2015-11-16", "retired");
    world.upload_at("2015-11-17T00:01:00Z", "2015-11-17", "up");
    world.upload_at("2015-11-17T00:01:00Z", "2015-11-17", "deleted");
    world.delete("2015-11-17", "deleted").await;

    let (early, _, read) = world.tick("2015-11-17T00:03:00Z").await;
    assert!(early.stale.is_empty());
    assert_eq!(
        early.fleet, 3,
        "silent, up, and deleted until it would be stale"
    );
    assert!(read.is_empty(), "no one carried over would be stale yet");

    let (staleness, listed, read) = world.tick("2015-11-17T00:05:00Z").await;
    assert_eq!(
        staleness.stale,
        [last_write("silent", "2015-11-16T23:59:00Z")]
    );
    assert!(staleness.forgotten.is_empty());
    assert_eq!(staleness.fleet, 2, "the deleted one left the fleet");
    assert_eq!(listed, ["counters/2015-11-17/", "counters/2015-11-16/"]);
    assert_eq!(
        read,
        ["2015-11-17/deleted", "2015-11-17/silent"],
        "only the carried-over instances that would be stale"
    );

    // The same bytes again, as the rest of the fleet uploads every few
    // minutes: nothing changes in the tables, but it wrote.
    for instance in ["silent", "up"] {
        world.upload_at("2015-11-17T00:06:00Z", "2015-11-17", instance);
    }
    let (back, _, _) = world.tick("2015-11-17T00:07:00Z").await;
    assert!(back.stale.is_empty());
    assert_eq!(back.fleet, 2);
}

#[tokio::test]
async fn an_instance_silent_for_forget_after_is_forgotten_and_yesterday_is_no_longer_listed() {
    let world = World::new();
    world.upload_at("2015-11-16T23:00:00Z", "2015-11-16", "night");
    world.upload_at("2015-11-17T00:30:00Z", "2015-11-17", "morning");
    world.upload_at("2015-11-17T04:58:00Z", "2015-11-17", "up");

    let (at_five, listed, _) = world.tick("2015-11-17T05:00:00Z").await;
    assert_eq!(
        at_five.forgotten,
        [last_write("night", "2015-11-16T23:00:00Z")]
    );
    assert_eq!(
        at_five.stale,
        [last_write("morning", "2015-11-17T00:30:00Z")]
    );
    assert_eq!(at_five.fleet, 2);
    assert_eq!(listed, ["counters/2015-11-17/", "counters/2015-11-16/"]);

    let (at_seven, listed, read) = world.tick("2015-11-17T07:00:00Z").await;
    assert_eq!(listed, ["counters/2015-11-17/"], "the day's prefix alone");
    assert!(read.is_empty());
    assert_eq!(
        at_seven.forgotten,
        [last_write("morning", "2015-11-17T00:30:00Z")]
    );
    assert_eq!(at_seven.stale, [last_write("up", "2015-11-17T04:58:00Z")]);
    assert_eq!(at_seven.fleet, 1);
}
