//! Faults injected between the stages and their stores, for tests of what
//! survives them. Each wraps any adapter of a port, so the same fault is
//! tried over memory, SQLite and the AWS API server.
//!
//! [`crashing`] wraps a state store and an object store around one shared
//! budget of operations; [`Crashing::new`] wraps one store (the aggregate
//! stage's tables) around its own. Once the budget is spent every operation fails, as
//! if the invocation died there. A write that would spend past the budget
//! either is lost or lands with its response lost (a timeout after the write
//! landed), as the test chooses. [`FailingPart`] fails the writes of one
//! (date, bucket) group or one date's totals and lets the rest of a batch
//! through, always or while a switch is on. [`LostResponse`] makes every write twice,
//! as the SDK does when a response is lost after the write landed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tally_core::aggregate::{Basis, PartialItem, TotalItem};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{
    AlertStore, ObjectBody, ObjectLocation, ObjectMeta, ObjectStore, ObjectVersion, ObjectWriter,
    Precondition, PutOutcome, StateStore, StoreError, TotalsStore,
};
use tally_core::rules::alert::AlertRecord;
use tally_core::state::InstanceState;

/// A store that crashes once the shared budget is spent.
#[derive(Clone)]
pub struct Crashing<T> {
    inner: T,
    budget: Arc<AtomicI64>,
    write_lands: bool,
}

/// Wraps both stores around one budget of `operations` successful calls.
pub fn crashing<S, O>(
    state: S,
    objects: O,
    operations: i64,
    write_lands: bool,
) -> (Crashing<S>, Crashing<O>) {
    let budget = Arc::new(AtomicI64::new(operations));
    (
        Crashing {
            inner: state,
            budget: budget.clone(),
            write_lands,
        },
        Crashing {
            inner: objects,
            budget,
            write_lands,
        },
    )
}

fn crash() -> StoreError {
    StoreError::new("injected crash", "the invocation died here")
}

impl<T> Crashing<T> {
    /// One store with its own budget of `operations` successful calls.
    pub fn new(inner: T, operations: i64, write_lands: bool) -> Crashing<T> {
        Crashing {
            inner,
            budget: Arc::new(AtomicI64::new(operations)),
            write_lands,
        }
    }

    fn spend(&self) -> bool {
        self.budget.fetch_sub(1, Ordering::SeqCst) > 0
    }
}

impl<T: StateStore> StateStore for Crashing<T> {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.get(key).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.bucket(date, bucket).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        if !self.spend() {
            if self.write_lands {
                // The write lands; only its response is lost.
                let _ = self.inner.put(state, precondition).await;
            }
            return Err(crash());
        }
        self.inner.put(state, precondition).await
    }
}

impl<T: ObjectStore> ObjectStore for Crashing<T> {
    async fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> Result<Option<(ObjectMeta, ObjectBody)>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.get(location, max_bytes).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.head(bucket, key).await
    }

    async fn versions(
        &self,
        bucket: &str,
        key: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.versions(bucket, key, after).await
    }
}

impl<T: TotalsStore> TotalsStore for Crashing<T> {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.partial(date, bucket).await
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        if !self.spend() {
            if self.write_lands {
                let _ = self.inner.put_partial(item, read_version).await;
            }
            return Err(crash());
        }
        self.inner.put_partial(item, read_version).await
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.partials(date).await
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.totals_of(date, counters).await
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        if !self.spend() {
            if self.write_lands {
                let _ = self.inner.put_total(item, replaces).await;
            }
            return Err(crash());
        }
        self.inner.put_total(item, replaces).await
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        if !self.spend() {
            return Err(crash());
        }
        self.inner.totals(date).await
    }
}

/// Which part of the aggregate stage's tables a [`FailingPart`] store fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Writes of one (date, bucket)'s partial item: that group of a batch
    /// fails while the others go through.
    Partial { date: Date, bucket: u64 },
    /// Writes of one date's totals.
    Totals { date: Date },
}

/// A store (the aggregate stage's tables) whose writes to one [`Part`] fail,
/// as throttling past the SDK's retries or a conflict fails one group of a
/// batch and not the others. The failed write is lost, or lands with its
/// response lost, as the test chooses; every other call goes through.
#[derive(Clone)]
pub struct FailingPart<T> {
    inner: T,
    part: Part,
    write_lands: bool,
    /// When given, the part fails only while this is set.
    switch: Option<Arc<AtomicBool>>,
}

impl<T> FailingPart<T> {
    pub fn new(inner: T, part: Part, write_lands: bool) -> FailingPart<T> {
        FailingPart {
            inner,
            part,
            write_lands,
            switch: None,
        }
    }

    /// The same store, failing the part only while `switch` is set: the
    /// throttling passes and a redelivery goes through.
    pub fn while_set(self, switch: Arc<AtomicBool>) -> FailingPart<T> {
        FailingPart {
            switch: Some(switch),
            ..self
        }
    }

    fn fails(&self, target: &Part) -> bool {
        *target == self.part
            && self
                .switch
                .as_ref()
                .is_none_or(|switch| switch.load(Ordering::SeqCst))
    }
}

fn throttled(part: &Part) -> StoreError {
    StoreError::new(
        format!("injected failure writing {part:?}"),
        "throttled past the SDK's retries",
    )
}

impl<T: TotalsStore> TotalsStore for FailingPart<T> {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        self.inner.partial(date, bucket).await
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        let target = Part::Partial {
            date: item.date.clone(),
            bucket: item.bucket,
        };
        if self.fails(&target) {
            if self.write_lands {
                let _ = self.inner.put_partial(item, read_version).await;
            }
            return Err(throttled(&self.part));
        }
        self.inner.put_partial(item, read_version).await
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        self.inner.partials(date).await
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        self.inner.totals_of(date, counters).await
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        if self.fails(&Part::Totals {
            date: item.date.clone(),
        }) {
            if self.write_lands {
                let _ = self.inner.put_total(item, replaces).await;
            }
            return Err(throttled(&self.part));
        }
        self.inner.put_total(item, replaces).await
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        self.inner.totals(date).await
    }
}

/// A state store whose writes land but whose responses are lost once: every
/// `put` is made twice, as the SDK retries a request that timed out after it
/// landed, and reports what the second attempt saw.
#[derive(Clone)]
pub struct LostResponse<T> {
    inner: T,
}

impl<T> LostResponse<T> {
    pub fn new(inner: T) -> LostResponse<T> {
        LostResponse { inner }
    }
}

impl<T: StateStore> StateStore for LostResponse<T> {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        self.inner.get(key).await
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        self.inner.bucket(date, bucket).await
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put(state, precondition).await?;
        self.inner.put(state, precondition).await
    }
}

/// Which call a [`Paused`] store holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseBefore {
    TotalsOf,
    PutTotal,
    /// Writing the partial item of this bucket.
    PutPartial(u64),
    /// Just after the day's partial items were read (the rules stage's read
    /// of the totals it evaluates).
    PartialsRead,
    /// Writing an alert record.
    PutAlert,
    /// Claiming a day's mark.
    Claim,
    /// Writing an object (the rules stage's snapshot).
    PutObject,
}

/// A store (the aggregate stage's tables, or the alert-state table) with
/// one call held back: at the first call of the chosen kind, the store
/// signals `reached` and waits for `resume`, so a test can order two
/// invocations' steps exactly.
#[derive(Clone)]
pub struct Paused<T> {
    inner: T,
    before: PauseBefore,
    pub reached: Arc<tokio::sync::Notify>,
    pub resume: Arc<tokio::sync::Notify>,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Paused<T> {
    pub fn new(inner: T, before: PauseBefore) -> Paused<T> {
        Paused {
            inner,
            before,
            reached: Arc::new(tokio::sync::Notify::new()),
            resume: Arc::new(tokio::sync::Notify::new()),
            paused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    async fn maybe_pause(&self, at: PauseBefore) {
        if at == self.before && !self.paused.swap(true, Ordering::SeqCst) {
            self.reached.notify_one();
            self.resume.notified().await;
        }
    }
}

impl<T: TotalsStore> TotalsStore for Paused<T> {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        self.inner.partial(date, bucket).await
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        self.maybe_pause(PauseBefore::PutPartial(item.bucket)).await;
        self.inner.put_partial(item, read_version).await
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        let partials = self.inner.partials(date).await;
        self.maybe_pause(PauseBefore::PartialsRead).await;
        partials
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        self.maybe_pause(PauseBefore::TotalsOf).await;
        self.inner.totals_of(date, counters).await
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        self.maybe_pause(PauseBefore::PutTotal).await;
        self.inner.put_total(item, replaces).await
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        self.inner.totals(date).await
    }
}

impl<T: AlertStore> AlertStore for Paused<T> {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alerts(date).await
    }

    async fn mark(&self, date: &Date) -> Result<u64, StoreError> {
        self.inner.mark(date).await
    }

    async fn claim(&self, date: &Date, generation: u64) -> Result<PutOutcome, StoreError> {
        self.maybe_pause(PauseBefore::Claim).await;
        self.inner.claim(date, generation).await
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.maybe_pause(PauseBefore::PutAlert).await;
        self.inner.put_alert(record, read_version, mark).await
    }
}

impl<T: ObjectWriter> ObjectWriter for Paused<T> {
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.maybe_pause(PauseBefore::PutObject).await;
        self.inner.put(bucket, key, body, content_type).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<tally_core::ports::ListedObject>, StoreError> {
        self.inner.list(bucket, prefix).await
    }
}
