//! What the model tests need of a world, as two traits, and the world over
//! SQLite and a bucket in memory that the stage crates' own tests run them
//! on; tally-tests implements the same traits over DynamoDB and S3 on the
//! AWS API server, so one scenario is checked on both.
//!
//! [`IngestWorld`]: a bucket and a state table with ingest wired to them,
//! and S3's events for what happens to the bucket. [`PipelineWorld`]: the
//! aggregate stage on top, fed from the state table's stream (DynamoDB
//! Streams in Lambda's shape there, the SQLite change log here).

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::Value;
use tally_aggregate::Aggregator;
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::ports::{ObjectStore, StateStore, TotalsStore};
use tally_core::state::{StateItem, bucket_key};
use tally_embedded::database::Database;
use tally_embedded::state_table::SqliteStateStore;
use tally_embedded::totals_tables::SqliteTotalsStore;
use tally_ingest::{IngestConfig, Ingestor};

use crate::events::{S3Change, s3_event};
use crate::memory::MemoryBucket;

/// When S3 says an event happened: its sequencer and its event time.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub sequencer: String,
    pub event_millis: i64,
}

/// 2015-11-16T10:00:00Z, when a test world's clock starts.
const CLOCK_START_MILLIS: i64 = 1_447_668_000_000;

/// The stamps S3 gives a bucket's events, in the order they happen: one
/// millisecond apart unless a test asks for a tie.
#[derive(Debug)]
pub struct Stamps {
    sequence: AtomicU64,
    clock_millis: AtomicI64,
}

impl Default for Stamps {
    fn default() -> Stamps {
        Stamps {
            sequence: AtomicU64::new(0x00AB_0000_0000_0000),
            clock_millis: AtomicI64::new(CLOCK_START_MILLIS),
        }
    }
}

impl Stamps {
    pub fn next(&self) -> Stamp {
        Stamp {
            sequencer: self.next_sequencer(),
            event_millis: self.clock_millis.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// The next sequencer S3 would give an event, as S3 writes it: hex whose
    /// length grows, so comparisons must pad.
    pub fn next_sequencer(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{n:X}")
    }

    /// Makes the next stamp fall in the same millisecond as the last one,
    /// so time-ordered events tie.
    pub fn same_millisecond_next(&self) {
        self.clock_millis.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bucket and a state table with ingest wired to them.
///
/// The futures need not be `Send`: a model test drives one world on one task.
pub trait IngestWorld {
    type State: StateStore + Clone + 'static;
    type Objects: ObjectStore + Clone + 'static;

    fn ingestor(&self) -> &Ingestor<Self::State, Self::Objects>;

    fn state_store(&self) -> &Self::State;

    /// The bucket as the port ingest reads it through.
    fn object_store(&self) -> Self::Objects;

    /// Makes the next upload or delete happen in the same millisecond as
    /// the last one.
    fn same_millisecond_next(&self);

    /// Uploads `body` to `key` and returns the event S3 sends for it.
    fn upload(&self, key: &str, body: &str) -> impl Future<Output = Value>;

    /// Deletes `key` (on a versioned bucket: places a delete marker) and
    /// returns the event S3 sends for it.
    fn delete(&self, key: &str) -> impl Future<Output = Value>;

    /// Every current object under `prefix` with its body: what a batch job
    /// reads.
    fn current_objects(&self, prefix: &str) -> impl Future<Output = Vec<(String, Bytes)>>;
}

/// An [`IngestWorld`] with the aggregate stage fed from the state table's
/// stream.
pub trait PipelineWorld {
    type Ingest: IngestWorld;
    type Totals: TotalsStore + Clone + 'static;
    /// One record of the state table's stream, as the aggregate stage is
    /// handed it.
    type Record: Clone;

    fn ingest(&self) -> &Self::Ingest;

    fn aggregator(&self) -> &Aggregator<Self::Totals>;

    /// Every stream record written since the last call, in order.
    fn read_new(&mut self) -> impl Future<Output = Vec<Self::Record>>;

    /// The state table hash key (`<date>#<bucket>`) the record's change
    /// was written under: what DynamoDB spreads shards by.
    fn partition_key(record: &Self::Record) -> String;

    /// Delivers `records` as one batch to `aggregator`, and returns the
    /// offset of the record the invocation reports as failed (Lambda goes
    /// on from there), or `None` when it succeeded whole.
    fn deliver<T: TotalsStore>(
        aggregator: &Aggregator<T>,
        records: &[Self::Record],
    ) -> impl Future<Output = Option<usize>>;
}

/// The bucket name the embedded worlds' events carry.
const BUCKET: &str = "fleet";

/// A bucket in memory and the state table in an in-memory SQLite database.
pub struct EmbeddedIngestWorld {
    pub bucket: MemoryBucket,
    pub db: Database,
    pub store: SqliteStateStore,
    pub ingestor: Ingestor<SqliteStateStore, MemoryBucket>,
    /// Events carry no sequencer, only their time, as some emulators send them.
    pub timed: bool,
    stamps: Stamps,
}

impl EmbeddedIngestWorld {
    pub fn new(versioned: bool, timed: bool) -> EmbeddedIngestWorld {
        let db = Database::open(":memory:").expect("an in-memory SQLite database");
        let store = db.state();
        let bucket = MemoryBucket::new(versioned);
        let ingestor = Ingestor::new(store.clone(), bucket.clone(), IngestConfig::default());
        EmbeddedIngestWorld {
            bucket,
            db,
            store,
            ingestor,
            timed,
            stamps: Stamps::default(),
        }
    }

    fn sequencer<'a>(&self, stamp: &'a Stamp) -> Option<&'a str> {
        (!self.timed).then_some(stamp.sequencer.as_str())
    }
}

impl IngestWorld for EmbeddedIngestWorld {
    type State = SqliteStateStore;
    type Objects = MemoryBucket;

    fn ingestor(&self) -> &Ingestor<SqliteStateStore, MemoryBucket> {
        &self.ingestor
    }

    fn state_store(&self) -> &SqliteStateStore {
        &self.store
    }

    fn object_store(&self) -> MemoryBucket {
        self.bucket.clone()
    }

    fn same_millisecond_next(&self) {
        self.stamps.same_millisecond_next();
    }

    async fn upload(&self, key: &str, body: &str) -> Value {
        let put = self.bucket.upload(key, body.as_bytes().to_vec());
        let stamp = self.stamps.next();
        s3_event(&S3Change {
            event_name: "ObjectCreated:Put",
            bucket: BUCKET,
            key,
            etag: Some(&put.etag),
            version_id: put.version_id.as_deref(),
            sequencer: self.sequencer(&stamp),
            event_millis: stamp.event_millis,
        })
    }

    async fn delete(&self, key: &str) -> Value {
        self.bucket.delete(key);
        let stamp = self.stamps.next();
        s3_event(&S3Change {
            event_name: "ObjectRemoved:Delete",
            bucket: BUCKET,
            key,
            etag: None,
            version_id: None,
            sequencer: self.sequencer(&stamp),
            event_millis: stamp.event_millis,
        })
    }

    async fn current_objects(&self, prefix: &str) -> Vec<(String, Bytes)> {
        self.bucket.current_objects(prefix)
    }
}

/// [`EmbeddedIngestWorld`] with the aggregate stage over the same SQLite
/// database, fed from its state change log as `tally run` feeds it.
pub struct EmbeddedPipelineWorld {
    pub ingest: EmbeddedIngestWorld,
    pub aggregator: Aggregator<SqliteTotalsStore>,
    /// The last change-log row read.
    read: i64,
}

impl EmbeddedPipelineWorld {
    pub fn new(versioned: bool) -> EmbeddedPipelineWorld {
        let ingest = EmbeddedIngestWorld::new(versioned, false);
        let aggregator = Aggregator::new(ingest.db.totals());
        EmbeddedPipelineWorld {
            ingest,
            aggregator,
            read: 0,
        }
    }
}

impl PipelineWorld for EmbeddedPipelineWorld {
    type Ingest = EmbeddedIngestWorld;
    type Totals = SqliteTotalsStore;
    type Record = StateChange;

    fn ingest(&self) -> &EmbeddedIngestWorld {
        &self.ingest
    }

    fn aggregator(&self) -> &Aggregator<SqliteTotalsStore> {
        &self.aggregator
    }

    async fn read_new(&mut self) -> Vec<StateChange> {
        let rows = self
            .ingest
            .store
            .changes_after(self.read, 1_000_000)
            .expect("read the state change log");
        if let Some(last) = rows.last() {
            self.read = last.sequence;
        }
        rows.into_iter()
            .map(|row| {
                let sequence = SequenceNumber::parse(&row.sequence.to_string())
                    .expect("a change-log row number is a sequence number");
                StateChange::from_images(
                    sequence,
                    row.old.as_ref().map(StateItem::from),
                    Some(StateItem::from(&row.new)),
                )
                .expect("a change-log row of one instance")
            })
            .collect()
    }

    fn partition_key(record: &StateChange) -> String {
        bucket_key(&record.date, record.bucket)
    }

    async fn deliver<T: TotalsStore>(
        aggregator: &Aggregator<T>,
        records: &[StateChange],
    ) -> Option<usize> {
        let (_, failures) = aggregator.apply(records).await;
        let lowest = failures.into_iter().map(|f| f.from).min()?;
        Some(
            records
                .iter()
                .position(|r| r.sequence == lowest)
                .unwrap_or(0),
        )
    }
}
