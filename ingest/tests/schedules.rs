//! Delivery schedules that once left the state wrong, replayed step by step
//! over the test kit's in-memory state table and versioned bucket, so the
//! exact interleaving is the test's to choose and no server is needed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::ports::{ObjectStore, Precondition, PutOutcome, StateStore, StoreError};
use tally_core::state::{Content, InstanceState};
use tally_ingest::event::{Change, Notice};
use tally_ingest::{IngestConfig, Ingestor, Outcome};
use tally_testkit::memory::{MemoryBucket, MemoryStateStore, Put};
use tokio::sync::Notify;

const BUCKET: &str = "fleet";
const KEY: &str = "counters/2015-11-16/i-1";
const A: &str = "requests 10\n";
const B: &str = "requests 20\n";
/// An odd number of tokens: rejected whole.
const REJECTED: &str = "requests 30 errors\n";

/// The state table, with the first correction (a `Replaces` write) held
/// back until the test resumes it, then landed with its response lost: the
/// SDK's retry fails its condition, and that failure is what the caller sees.
#[derive(Clone)]
struct LostCorrectionResponse {
    inner: MemoryStateStore,
    reached: Arc<Notify>,
    resume: Arc<Notify>,
    held: Arc<AtomicBool>,
}

impl LostCorrectionResponse {
    fn new(inner: MemoryStateStore) -> LostCorrectionResponse {
        LostCorrectionResponse {
            inner,
            reached: Arc::new(Notify::new()),
            resume: Arc::new(Notify::new()),
            held: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl StateStore for LostCorrectionResponse {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let correction = matches!(precondition, Precondition::Replaces { .. });
        if !correction || self.held.swap(true, Ordering::SeqCst) {
            return self.inner.put(state, precondition).await;
        }
        self.reached.notify_one();
        self.resume.notified().await;
        self.inner.put(state, precondition).await?;
        self.inner.put(state, precondition).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        self.inner.bucket(date, bucket).await
    }
}

fn ordering(sequencer: &str) -> OrderingKey {
    OrderingKey::from_sequencer(sequencer).unwrap()
}

fn created(uploaded: &Put, sequencer: &str) -> Notice {
    Notice {
        bucket: BUCKET.into(),
        object_key: KEY.into(),
        version_id: uploaded.version_id.clone(),
        ordering: ordering(sequencer),
        change: Change::Created {
            etag: Some(uploaded.etag.clone()),
        },
    }
}

fn removed(sequencer: &str) -> Notice {
    Notice {
        bucket: BUCKET.into(),
        object_key: KEY.into(),
        version_id: None,
        ordering: ordering(sequencer),
        change: Change::Removed,
    }
}

fn counters_of(body: &str) -> Option<BTreeMap<String, i64>> {
    let counters = tally_core::body::parse(body.as_bytes(), 1 << 20).unwrap();
    Some(
        counters
            .iter()
            .map(|c| (c.name.to_owned(), c.value))
            .collect(),
    )
}

async fn content(state: &MemoryStateStore) -> Option<Content> {
    let key = UploadKey {
        date: Date::parse("2015-11-16").unwrap(),
        instance: "i-1".into(),
    };
    state.get(&key).await.unwrap().map(|s| s.content)
}

async fn contributes(state: &MemoryStateStore) -> Option<BTreeMap<String, i64>> {
    content(state).await.and_then(|c| c.counters().cloned())
}

async fn apply<S: StateStore, O: ObjectStore>(
    ingestor: &Ingestor<S, O>,
    notice: &Notice,
) -> Outcome {
    ingestor
        .apply(notice)
        .await
        .expect("the fakes do not fail")
        .0
}

#[tokio::test]
async fn a_lost_correction_response_still_checks_the_bucket_again() {
    // W(1) uploads A, delete(2) places a marker, W(3) uploads A again (same
    // ETag). The first event, late, reads version 1 and writes A; its check
    // finds the marker and corrects the state to a tombstone. Meanwhile W(3)
    // lands and its event finds A stored: unchanged. The correction lands,
    // its response is lost and the retry fails its condition. Taken for
    // another's write, it ended the check without the look at the bucket
    // that would have found A again, and the delete's event then found the
    // tombstone it expects: the state said deleted while the bucket held A.
    let bucket = MemoryBucket::versioned();
    let state = MemoryStateStore::default();
    let w1 = bucket.upload(KEY, A);
    bucket.delete(KEY);
    let lossy = LostCorrectionResponse::new(state.clone());
    let late = Ingestor::new(lossy.clone(), bucket.clone(), IngestConfig::default());
    let plain = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());

    let meanwhile = async {
        lossy.reached.notified().await;
        let w3 = bucket.upload(KEY, A);
        assert_eq!(apply(&plain, &created(&w3, "3")).await, Outcome::Unchanged);
        lossy.resume.notify_one();
    };
    let e1 = created(&w1, "1");
    let (first, ()) = tokio::join!(apply(&late, &e1), meanwhile);
    apply(&plain, &removed("2")).await;

    assert_eq!(
        contributes(&state).await,
        counters_of(A),
        "the bucket holds A"
    );
    // The landed correction is reported as one.
    assert!(
        matches!(first, Outcome::Written { corrected: true }),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_rejected_newest_upload_on_a_versioned_bucket_keeps_the_newest_accepted_version() {
    // Uploads A(1), B(2), A(3), then a rejected C(4). A's events write A and
    // find A stored; C's is rejected; B's, delivered last, reads version 2
    // and writes B, and its check finds C, which cannot be stored. The
    // newest accepted upload is A, and the versions say so.
    let bucket = MemoryBucket::versioned();
    let state = MemoryStateStore::default();
    let ingestor = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());
    let a1 = bucket.upload(KEY, A);
    let b2 = bucket.upload(KEY, B);
    let a3 = bucket.upload(KEY, A);
    let c4 = bucket.upload(KEY, REJECTED);

    apply(&ingestor, &created(&a1, "1")).await;
    assert_eq!(
        apply(&ingestor, &created(&a3, "3")).await,
        Outcome::Unchanged
    );
    let rejected = apply(&ingestor, &created(&c4, "4")).await;
    assert!(matches!(rejected, Outcome::Rejected(_)), "{rejected:?}");
    apply(&ingestor, &created(&b2, "2")).await;

    assert_eq!(contributes(&state).await, counters_of(A));
}

#[tokio::test]
async fn a_rejected_upload_after_a_delete_and_a_re_upload_keeps_the_re_upload() {
    // A(1), delete(2), A(3), rejected C(4). A's second event finds A stored;
    // the delete's event, delivered last, writes a tombstone, and its check
    // finds C. The versions under C say A was uploaded after the delete.
    let bucket = MemoryBucket::versioned();
    let state = MemoryStateStore::default();
    let ingestor = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());
    let a1 = bucket.upload(KEY, A);
    bucket.delete(KEY);
    let a3 = bucket.upload(KEY, A);
    let c4 = bucket.upload(KEY, REJECTED);

    apply(&ingestor, &created(&a1, "1")).await;
    assert_eq!(
        apply(&ingestor, &created(&a3, "3")).await,
        Outcome::Unchanged
    );
    apply(&ingestor, &created(&c4, "4")).await;
    apply(&ingestor, &removed("2")).await;

    assert_eq!(contributes(&state).await, counters_of(A));
}

#[tokio::test]
async fn a_rejected_upload_after_a_delete_leaves_the_tombstone() {
    // A(1), delete(2), rejected C(3), with A's event first. Walking back from
    // C must stop at the delete marker, not reach A behind it.
    let bucket = MemoryBucket::versioned();
    let state = MemoryStateStore::default();
    let ingestor = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());
    let a1 = bucket.upload(KEY, A);
    bucket.delete(KEY);
    let c3 = bucket.upload(KEY, REJECTED);

    apply(&ingestor, &created(&a1, "1")).await;
    apply(&ingestor, &created(&c3, "3")).await;
    apply(&ingestor, &removed("2")).await;

    assert_eq!(content(&state).await, Some(Content::Deleted));
}

/// The state table, recording every item written: what its stream carries
/// to the totals.
#[derive(Clone, Default)]
struct Recorded {
    inner: MemoryStateStore,
    written: Arc<std::sync::Mutex<Vec<Content>>>,
}

impl StateStore for Recorded {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let outcome = self.inner.put(state, precondition).await?;
        if outcome == PutOutcome::Written {
            self.written.lock().unwrap().push(state.content.clone());
        }
        Ok(outcome)
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        self.inner.bucket(date, bucket).await
    }
}

#[tokio::test]
async fn a_duplicate_time_ordered_delete_after_a_re_upload_writes_nothing() {
    // Events that carry only their time. A delete at millisecond 1, then A
    // uploaded at millisecond 2. The delete's event, first, writes a
    // tombstone and its check corrects it to A, under the delete's time;
    // A's event then finds A stored. The delete's event delivered again
    // ties with the stored time. Going on, it wrote the tombstone again and
    // its check put A back: the instance's counters left the totals and
    // came back, enough to fire an alert on a drop.
    let bucket = MemoryBucket::versioned();
    let state = Recorded::default();
    let ingestor = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());
    bucket.upload(KEY, A);
    bucket.delete(KEY);
    let a = bucket.upload(KEY, A);
    let at = |millis: i64| OrderingKey::from_event_time_millis(1_447_632_000_000 + millis).unwrap();
    let delete = Notice {
        ordering: at(1),
        ..removed("1")
    };
    let upload = Notice {
        ordering: at(2),
        ..created(&a, "2")
    };

    apply(&ingestor, &delete).await;
    assert_eq!(apply(&ingestor, &upload).await, Outcome::Unchanged);
    let written_before = state.written.lock().unwrap().len();
    assert_eq!(apply(&ingestor, &delete).await, Outcome::Duplicate);

    assert_eq!(
        state.written.lock().unwrap().len(),
        written_before,
        "the redelivered delete wrote {:?}",
        &state.written.lock().unwrap()[written_before..]
    );
    assert_eq!(contributes(&state.inner).await, counters_of(A));
}
