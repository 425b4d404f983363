//! A fresh bucket and state table on the test server, with ingest wired to
//! them, and the aggregate stage on top: the AWS side of the test kit's
//! worlds ([`tally_testkit::world`]), so the model tests run here as they
//! run over SQLite in the stage crates.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::{DynamoStateStore, create_state_table};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{StateStore, normalize_etag};
use tally_core::state::{InstanceState, StateItem};
use tally_ingest::{IngestConfig, Ingestor};
pub use tally_testkit::world::Stamp;
use tally_testkit::world::{IngestWorld, PipelineWorld, Stamps};

use crate::{S3Change, s3_event, sdk_config, unique};

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

/// One test's own bucket and state table.
pub struct AwsIngestWorld {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub table: String,
    pub store: DynamoStateStore,
    pub ingestor: Ingestor<DynamoStateStore, S3ObjectStore>,
    /// Events carry no sequencer, only their time, as some emulators send them.
    pub timed: bool,
    stamps: Stamps,
}

impl AwsIngestWorld {
    pub async fn new() -> AwsIngestWorld {
        AwsIngestWorld::with(IngestConfig::default(), false).await
    }

    pub async fn versioned() -> AwsIngestWorld {
        AwsIngestWorld::with(IngestConfig::default(), true).await
    }

    pub async fn with(config: IngestConfig, versioned: bool) -> AwsIngestWorld {
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
        AwsIngestWorld {
            s3,
            dynamodb,
            bucket,
            table,
            store,
            ingestor,
            timed: false,
            stamps: Stamps::default(),
        }
    }

    /// The same world, with events that carry no sequencer (ordered by time).
    pub fn timed(self) -> AwsIngestWorld {
        AwsIngestWorld {
            timed: true,
            ..self
        }
    }

    /// Makes the next upload or delete happen in the same millisecond as the
    /// last one, so time-ordered events tie.
    pub fn same_millisecond_next(&self) {
        self.stamps.same_millisecond_next();
    }

    fn stamp(&self) -> Stamp {
        self.stamps.next()
    }

    /// The next sequencer S3 would give an event, as S3 writes it: hex whose
    /// length grows, so comparisons must pad.
    pub fn next_sequencer(&self) -> String {
        self.stamps.next_sequencer()
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
pub struct AwsPipelineWorld {
    pub ingest: AwsIngestWorld,
    pub partials_table: String,
    pub totals_table: String,
    pub aggregator: tally_aggregate::Aggregator<tally_aws::totals_tables::DynamoTotalsStore>,
    pub stream: crate::streams::StreamReader,
}

impl AwsPipelineWorld {
    pub async fn new(versioned: bool) -> AwsPipelineWorld {
        let ingest = AwsIngestWorld::with(IngestConfig::default(), versioned).await;
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
        AwsPipelineWorld {
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
        tally_testkit::aggregate_model::batch_totals(&self.ingest, date)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl IngestWorld for AwsIngestWorld {
    type State = DynamoStateStore;
    type Objects = S3ObjectStore;

    fn ingestor(&self) -> &Ingestor<DynamoStateStore, S3ObjectStore> {
        &self.ingestor
    }

    fn state_store(&self) -> &DynamoStateStore {
        &self.store
    }

    fn object_store(&self) -> S3ObjectStore {
        S3ObjectStore::new(self.s3.clone())
    }

    fn same_millisecond_next(&self) {
        AwsIngestWorld::same_millisecond_next(self);
    }

    async fn upload(&self, key: &str, body: &str) -> serde_json::Value {
        let uploaded = AwsIngestWorld::upload(self, key, body).await;
        self.created_event(&uploaded)
    }

    async fn delete(&self, key: &str) -> serde_json::Value {
        let deleted = AwsIngestWorld::delete(self, key).await;
        self.removed_event(&deleted)
    }

    async fn current_objects(&self, prefix: &str) -> Vec<(String, bytes::Bytes)> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let listed = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list the bucket");
            for object in listed.contents.unwrap_or_default() {
                let key = object.key.expect("a listed object has a key");
                let body = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("read an object")
                    .body
                    .collect()
                    .await
                    .expect("read an object's body")
                    .into_bytes();
                objects.push((key, body));
            }
            match listed.next_continuation_token {
                Some(next) => token = Some(next),
                None => return objects,
            }
        }
    }
}

impl PipelineWorld for AwsPipelineWorld {
    type Ingest = AwsIngestWorld;
    type Totals = tally_aws::totals_tables::DynamoTotalsStore;
    /// A stream record in the shape Lambda delivers it.
    type Record = serde_json::Value;

    fn ingest(&self) -> &AwsIngestWorld {
        &self.ingest
    }

    fn aggregator(&self) -> &tally_aggregate::Aggregator<Self::Totals> {
        &self.aggregator
    }

    async fn read_new(&mut self) -> Vec<serde_json::Value> {
        self.stream.read_new().await
    }

    fn partition_key(record: &serde_json::Value) -> String {
        record["dynamodb"]["Keys"]["Part"]["S"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn deliver<T: tally_core::ports::TotalsStore>(
        aggregator: &tally_aggregate::Aggregator<T>,
        records: &[serde_json::Value],
    ) -> Option<usize> {
        let (response, _) = aggregator
            .handle(&crate::streams::lambda_event(records))
            .await;
        let sequence = response
            .batch_item_failures
            .first()?
            .item_identifier
            .clone();
        Some(
            sequence
                .and_then(|sequence| {
                    records
                        .iter()
                        .position(|r| r["dynamodb"]["SequenceNumber"] == sequence.as_str())
                })
                .unwrap_or(0),
        )
    }
}
