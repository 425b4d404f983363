//! `reconcile --repair` racing the aggregate stage, over the SQLite tables:
//! a fold that lands while reconcile is reading must survive the repair.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tally_aggregate::Aggregator;
use tally_aggregate::reconcile::reconcile;
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::ports::{Precondition, PutOutcome, StateStore, StoreError, TotalsStore};
use tally_core::state::{Content, InstanceState, StateItem, bucket_of};
use tally_embedded::database::Database;
use tally_embedded::state_table::SqliteStateStore;
use tally_embedded::totals_tables::SqliteTotalsStore;

const DATE: &str = "2015-11-16";

fn state(instance: &str, sequencer: &str, requests: i64) -> InstanceState {
    InstanceState {
        key: UploadKey {
            date: Date::parse(DATE).unwrap(),
            instance: instance.to_owned(),
        },
        object_key: format!("counters/{DATE}/{instance}"),
        ordering: OrderingKey::from_sequencer(sequencer).unwrap(),
        content: Content::Live {
            counters: [("requests".to_owned(), requests)].into(),
            etag: format!("e{sequencer}"),
            version_id: None,
        },
    }
}

/// Writes a state and folds its change in, as ingest and the aggregate
/// stage do.
async fn upload<T: TotalsStore>(
    states: &SqliteStateStore,
    aggregator: &Aggregator<T>,
    sequence: u64,
    old: Option<&InstanceState>,
    new: &InstanceState,
) {
    assert_eq!(
        states.put(new, &Precondition::Supersedes).await.unwrap(),
        PutOutcome::Written
    );
    let change = StateChange::from_images(
        SequenceNumber::parse(&sequence.to_string()).unwrap(),
        old.map(StateItem::from),
        Some(StateItem::from(new)),
    )
    .unwrap();
    let (_, failures) = aggregator.apply(&[change]).await;
    assert!(failures.is_empty());
}

/// A state table on which an upload lands, and is folded in by the
/// aggregate stage, during the first read of the uploading instance's
/// bucket: just before the read (`upload_first`) or just after it.
struct UploadDuringFirstRead {
    states: SqliteStateStore,
    aggregator: Aggregator<SqliteTotalsStore>,
    before: InstanceState,
    after: InstanceState,
    upload_first: bool,
    done: Arc<AtomicBool>,
}

impl UploadDuringFirstRead {
    async fn upload_once(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            upload(
                &self.states,
                &self.aggregator,
                2,
                Some(&self.before),
                &self.after,
            )
            .await;
        }
    }
}

impl StateStore for UploadDuringFirstRead {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        self.states.get(key).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        self.states.put(state, precondition).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        let racing = bucket == bucket_of(&self.after.key.instance);
        if racing && self.upload_first {
            self.upload_once().await;
        }
        let states = self.states.bucket(date, bucket).await?;
        if racing {
            self.upload_once().await;
        }
        Ok(states)
    }
}

#[tokio::test]
async fn a_fold_landing_between_reconciles_reads_is_kept_by_the_repair() {
    let db = Database::open(":memory:").unwrap();
    let aggregator = Aggregator::new(db.totals());
    let before = state("i-1", "01", 10);
    let after = state("i-1", "02", 3);
    upload(&db.state(), &aggregator, 1, None, &before).await;

    let racing = UploadDuringFirstRead {
        states: db.state(),
        aggregator: aggregator.clone(),
        before,
        after,
        upload_first: false,
        done: Arc::new(AtomicBool::new(false)),
    };
    let date = Date::parse(DATE).unwrap();
    reconcile(&racing, &aggregator, &date, true).await.unwrap();

    // The state says 3; the repair must not bring back the 10 it read
    // before the fold.
    let totals: BTreeMap<String, i128> = db.totals().live_totals(&date).unwrap();
    assert_eq!(totals, [("requests".to_owned(), 3)].into());
    let check = reconcile(&db.state(), &aggregator, &date, false)
        .await
        .unwrap();
    assert_eq!((check.partials_repaired, check.totals_repaired), (0, 0));
}

/// The bucket has drifted (its partial says 999), and the upload lands
/// after reconcile read the partials but before it read the state: the
/// repair, computed from the state, must not be written over the fold it
/// did not read, but read again and repair the bucket as it now is.
#[tokio::test]
async fn a_fold_landing_before_the_state_read_makes_the_repair_read_again() {
    let db = Database::open(":memory:").unwrap();
    let aggregator = Aggregator::new(db.totals());
    let before = state("i-1", "01", 10);
    let after = state("i-1", "02", 3);
    upload(&db.state(), &aggregator, 1, None, &before).await;
    let date = Date::parse(DATE).unwrap();
    let bucket = tally_core::state::bucket_of("i-1");
    let mut drifted = db.totals().partial(&date, bucket).await.unwrap().unwrap();
    drifted
        .sums
        .insert("requests".into(), tally_core::aggregate::Exact(999));
    drifted.version += 1;
    let outcome = db.totals().put_partial(&drifted, drifted.version - 1).await;
    assert_eq!(outcome.unwrap(), PutOutcome::Written);

    let racing = UploadDuringFirstRead {
        states: db.state(),
        aggregator: aggregator.clone(),
        before,
        after,
        upload_first: true,
        done: Arc::new(AtomicBool::new(false)),
    };
    let report = reconcile(&racing, &aggregator, &date, true).await.unwrap();
    assert_eq!(report.partials_repaired, 1);

    let totals: BTreeMap<String, i128> = db.totals().live_totals(&date).unwrap();
    assert_eq!(totals, [("requests".to_owned(), 3)].into());
    let check = reconcile(&db.state(), &aggregator, &date, false)
        .await
        .unwrap();
    assert_eq!((check.partials_repaired, check.totals_repaired), (0, 0));
}
