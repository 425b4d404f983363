//! A fresh bucket and state table on the test server, with ingest wired to them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::{DynamoStateStore, create_state_table};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{StateStore, normalize_etag};
use tally_core::state::{InstanceState, StateItem};
use tally_ingest::{IngestConfig, Ingestor};

use crate::{S3Change, s3_event, sdk_config, unique};

/// When S3 says an event happened: its sequencer and its event time.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub sequencer: String,
    pub event_millis: i64,
}

/// What S3 said about an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub key: String,
    pub etag: String,
    pub version_id: Option<String>,
    pub stamp: Stamp,
}

/// A deletion and when it happened.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub key: String,
    pub stamp: Stamp,
}

/// 2015-11-16T10:00:00Z, when the test world's clock starts.
const CLOCK_START_MILLIS: i64 = 1_447_668_000_000;

/// One test's own bucket and state table.
pub struct IngestWorld {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub table: String,
    pub store: DynamoStateStore,
    pub ingestor: Ingestor<DynamoStateStore, S3ObjectStore>,
    /// Events carry no sequencer, only their time, as some emulators send them.
    pub timed: bool,
    sequence: AtomicU64,
    clock_millis: AtomicI64,
}

impl IngestWorld {
    pub async fn new() -> IngestWorld {
        IngestWorld::with(IngestConfig::default(), false).await
    }

    pub async fn versioned() -> IngestWorld {
        IngestWorld::with(IngestConfig::default(), true).await
    }

    pub async fn with(config: IngestConfig, versioned: bool) -> IngestWorld {
        let sdk = sdk_config().await;
        let s3 = tally_aws::config::s3(&sdk);
        let dynamodb = tally_aws::config::dynamodb(&sdk);
        let bucket = unique("fleet").to_lowercase();
        let table = unique("state");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create the bucket on the test server");
        if versioned {
            s3.put_bucket_versioning()
                .bucket(&bucket)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .expect("enable versioning");
        }
        create_state_table(&dynamodb, &table)
            .await
            .expect("create the state table on the test server");
        let store = DynamoStateStore::new(dynamodb.clone(), &table);
        let ingestor = Ingestor::new(store.clone(), S3ObjectStore::new(s3.clone()), config);
        IngestWorld {
            s3,
            dynamodb,
            bucket,
            table,
            store,
            ingestor,
            timed: false,
            sequence: AtomicU64::new(0x00AB_0000_0000_0000),
            clock_millis: AtomicI64::new(CLOCK_START_MILLIS),
        }
    }

    /// The same world, with events that carry no sequencer (ordered by time).
    pub fn timed(self) -> IngestWorld {
        IngestWorld {
            timed: true,
            ..self
        }
    }

    /// Makes the next upload or delete happen in the same millisecond as the
    /// last one, so time-ordered events tie.
    pub fn same_millisecond_next(&self) {
        self.clock_millis.fetch_sub(1, Ordering::Relaxed);
    }

    fn stamp(&self) -> Stamp {
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

    pub async fn upload(&self, key: &str, body: impl Into<Vec<u8>>) -> Uploaded {
        let output = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .expect("upload to the test server");
        Uploaded {
            key: key.to_owned(),
            etag: normalize_etag(output.e_tag.as_deref().unwrap_or_default()),
            version_id: output.version_id,
            stamp: self.stamp(),
        }
    }

    /// Deletes the object (on a versioned bucket: places a delete marker).
    pub async fn delete(&self, key: &str) -> Deleted {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .expect("delete on the test server");
        Deleted {
            key: key.to_owned(),
            stamp: self.stamp(),
        }
    }

    fn sequencer<'a>(&self, stamp: &'a Stamp) -> Option<&'a str> {
        (!self.timed).then_some(stamp.sequencer.as_str())
    }

    /// The S3 event AWS would send for this upload (with its version id, if any).
    pub fn created_event(&self, uploaded: &Uploaded) -> serde_json::Value {
        s3_event(&S3Change {
            event_name: "ObjectCreated:Put",
            bucket: &self.bucket,
            key: &uploaded.key,
            etag: Some(&uploaded.etag),
            version_id: uploaded.version_id.as_deref(),
            sequencer: self.sequencer(&uploaded.stamp),
            event_millis: uploaded.stamp.event_millis,
        })
    }

    /// The S3 event AWS would send for this deletion.
    pub fn removed_event(&self, deleted: &Deleted) -> serde_json::Value {
        s3_event(&S3Change {
            event_name: "ObjectRemoved:Delete",
            bucket: &self.bucket,
            key: &deleted.key,
            etag: None,
            version_id: None,
            sequencer: self.sequencer(&deleted.stamp),
            event_millis: deleted.stamp.event_millis,
        })
    }

    pub async fn state(&self, date: &str, instance: &str) -> Option<InstanceState> {
        self.store
            .get(&UploadKey {
                date: Date::parse(date).expect("a valid test date"),
                instance: instance.to_owned(),
            })
            .await
            .expect("read the state table")
    }

    /// Every item of the state table, decoded with serde_dynamo.
    pub async fn all_state(&self) -> Vec<StateItem> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan the state table");
            for item in page.items.unwrap_or_default() {
                items.push(serde_dynamo::from_item(item).expect("a well-formed state item"));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        items
    }
}

/// The ingest world plus the aggregate stage: partials and totals tables,
/// the aggregator, and a reader of the state table's stream.
pub struct PipelineWorld {
    pub ingest: IngestWorld,
    pub partials_table: String,
    pub totals_table: String,
    pub aggregator: tally_aggregate::Aggregator<tally_aws::totals_tables::DynamoTotalsStore>,
    pub stream: crate::streams::StreamReader,
}

impl PipelineWorld {
    pub async fn new(versioned: bool) -> PipelineWorld {
        let ingest = IngestWorld::with(IngestConfig::default(), versioned).await;
        let sdk = sdk_config().await;
        let partials_table = unique("partials");
        let totals_table = unique("totals");
        tally_aws::totals_tables::create_partials_table(&ingest.dynamodb, &partials_table)
            .await
            .expect("create the partials table");
        tally_aws::totals_tables::create_totals_table(&ingest.dynamodb, &totals_table)
            .await
            .expect("create the totals table");
        let aggregator =
            tally_aggregate::Aggregator::new(tally_aws::totals_tables::DynamoTotalsStore::new(
                ingest.dynamodb.clone(),
                &partials_table,
                &totals_table,
            ));
        let stream =
            crate::streams::StreamReader::open(&sdk, &ingest.dynamodb, &ingest.table).await;
        PipelineWorld {
            ingest,
            partials_table,
            totals_table,
            aggregator,
            stream,
        }
    }

    /// The day's live totals as the `ByDate` index lists them.
    pub async fn totals(&self, date: &str) -> std::collections::BTreeMap<String, i128> {
        use tally_core::ports::TotalsStore;
        self.aggregator
            .store()
            .totals(&Date::parse(date).expect("a valid test date"))
            .await
            .expect("query the totals")
            .into_iter()
            .filter_map(|t| t.value.map(|v| (t.counter, v.0)))
            .collect()
    }

    /// What a batch job computes from the bucket: the sum over the day's
    /// objects of their bodies (every object's body must be accepted).
    pub async fn batch_totals(&self, date: &str) -> std::collections::BTreeMap<String, i128> {
        let mut totals = std::collections::BTreeMap::new();
        let listed = self
            .ingest
            .s3
            .list_objects_v2()
            .bucket(&self.ingest.bucket)
            .prefix(format!("counters/{date}/"))
            .send()
            .await
            .expect("list the bucket");
        for object in listed.contents.unwrap_or_default() {
            let key = object.key.expect("a listed object has a key");
            let body = self
                .ingest
                .s3
                .get_object()
                .bucket(&self.ingest.bucket)
                .key(&key)
                .send()
                .await
                .expect("read an object")
                .body
                .collect()
                .await
                .expect("read an object's body")
                .into_bytes();
            let counters = tally_core::body::parse(&body, tally_core::body::DEFAULT_MAX_BODY_BYTES)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            for counter in counters {
                *totals.entry(counter.name.to_owned()).or_insert(0i128) +=
                    i128::from(counter.value);
            }
        }
        totals
    }
}
