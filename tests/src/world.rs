//! A fresh bucket and state table on the test server, with ingest wired to them.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use tally_aws::bucket::S3ObjectStore;
use tally_aws::state_table::{DynamoStateStore, create_state_table};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::StateStore;
use tally_core::state::{InstanceState, StateItem};
use tally_ingest::{IngestConfig, Ingestor};

use crate::{S3Change, s3_event, sdk_config, unique};

/// What S3 said about an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub key: String,
    pub etag: String,
    pub version_id: Option<String>,
    pub sequencer: String,
}

/// One test's own bucket and state table.
pub struct IngestWorld {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub table: String,
    pub store: DynamoStateStore,
    pub ingestor: Ingestor<DynamoStateStore, S3ObjectStore>,
    sequence: AtomicU64,
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
            sequence: AtomicU64::new(0x00AB_0000_0000_0000),
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
            etag: output
                .e_tag
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned(),
            version_id: output.version_id,
            sequencer: self.next_sequencer(),
        }
    }

    /// Deletes the object and returns the sequencer of its removal event.
    pub async fn delete(&self, key: &str) -> String {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .expect("delete on the test server");
        self.next_sequencer()
    }

    /// The S3 event AWS would send for this upload (with its version id, if any).
    pub fn created_event(&self, uploaded: &Uploaded) -> serde_json::Value {
        s3_event(&S3Change {
            event_name: "ObjectCreated:Put",
            bucket: &self.bucket,
            key: &uploaded.key,
            etag: Some(&uploaded.etag),
            version_id: uploaded.version_id.as_deref(),
            sequencer: Some(&uploaded.sequencer),
        })
    }

    pub fn removed_event(&self, key: &str, sequencer: &str) -> serde_json::Value {
        s3_event(&S3Change {
            event_name: "ObjectRemoved:Delete",
            bucket: &self.bucket,
            key,
            etag: None,
            version_id: None,
            sequencer: Some(sequencer),
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
