//! SQLite as the state table, with a change log as its stream. The file,
//! its schema and the change logs' plumbing are [`crate::database`]'s.
//!
//! Items are stored as the JSON of [`StateItem`], the same mapping the
//! DynamoDB adapter writes through `serde_dynamo`, keyed like the table
//! (`Part`, `Instance`). A write and its precondition run in one immediate
//! transaction, so concurrent writers are serialized exactly as DynamoDB's
//! conditional writes are; the precondition is [`Precondition::holds`], the
//! rule the DynamoDB adapter states as a condition expression.
//!
//! Every write that lands appends a row to `state_changes` with the old and
//! new image, in the same transaction: the embedded counterpart of a
//! NEW_AND_OLD_IMAGES stream. A write that changes nothing is never made (the
//! stages skip it), so the log holds only real changes.
//!
//! SQLite calls are made on the caller's task: they take microseconds on a
//! local file, less than handing them to a blocking thread would cost.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tally_core::key::{Date, UploadKey};
use tally_core::ports::{Precondition, PutOutcome, StateStore, StoreError};
use tally_core::state::{InstanceState, StateItem, bucket_key, partition_key};

use crate::database::{Database, change_rows};

impl Database {
    /// The state table.
    pub fn state(&self) -> SqliteStateStore {
        SqliteStateStore { db: self.clone() }
    }
}

/// The state table in a SQLite database file.
#[derive(Clone)]
pub struct SqliteStateStore {
    /// Keeps the database's lock while this store is in use.
    db: Database,
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub sequence: i64,
    pub old: Option<InstanceState>,
    pub new: InstanceState,
}

impl SqliteStateStore {
    /// Opens (creating if needed) the database at `path`, with every table
    /// of the embedded runtime, taking its lock as [`Database::open`] does.
    ///
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStateStore, StoreError> {
        Ok(Database::open(path)?.state())
    }

    fn error(
        &self,
        what: &str,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::new(
            format!("{what} in state database {}", self.db.path()),
            error,
        )
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.db.lock_or(|what, why| self.error(what, why))
    }

    /// Every stored state, in key order.
    pub fn all(&self) -> Result<Vec<InstanceState>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection
            .prepare("SELECT item FROM state ORDER BY part, instance")
            .map_err(|e| self.error("listing states", e))?;
        let items = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.error("listing states", e))?;
        items
            .map(|item| {
                let item = item.map_err(|e| self.error("listing states", e))?;
                decode(&item).map_err(|e| self.error("decoding a state item", e))
            })
            .collect()
    }

    /// The object keys of every instance with a live (not deleted) state,
    /// read without decoding the states' counters.
    pub fn live_object_keys(&self) -> Result<Vec<String>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection
            .prepare(
                "SELECT json_extract(item, '$.ObjectKey') FROM state
                 WHERE json_extract(item, '$.Deleted') = 0",
            )
            .map_err(|e| self.error("listing live states", e))?;
        let keys = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.error("listing live states", e))?;
        keys.map(|key| key.map_err(|e| self.error("listing live states", e)))
            .collect()
    }

    /// Change-log rows after `after`, oldest first, at most `limit`.
    pub fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<StateChange>, StoreError> {
        let rows = {
            let connection = self.lock()?;
            change_rows(&connection, "state_changes", after, limit)
                .map_err(|e| self.error("reading the change log", e))?
        };
        let decode_image =
            |text: &str| decode(text).map_err(|e| self.error("decoding a change image", e));
        rows.into_iter()
            .map(|(sequence, old, new)| {
                Ok(StateChange {
                    sequence,
                    old: old.as_deref().map(decode_image).transpose()?,
                    new: decode_image(&new)?,
                })
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Item(#[from] tally_core::state::StateItemError),
}

fn decode(text: &str) -> Result<InstanceState, DecodeError> {
    let item: StateItem = serde_json::from_str(text)?;
    Ok(InstanceState::try_from(item)?)
}

fn encode(state: &InstanceState) -> Result<String, serde_json::Error> {
    serde_json::to_string(&StateItem::from(state))
}

impl StateStore for SqliteStateStore {
    async fn get(&self, key: &UploadKey) -> Result<Option<InstanceState>, StoreError> {
        let connection = self.lock()?;
        let item: Option<String> = connection
            .query_row(
                "SELECT item FROM state WHERE part = ?1 AND instance = ?2",
                params![partition_key(key), key.instance],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error("reading state", e))?;
        item.map(|item| decode(&item).map_err(|e| self.error("decoding a state item", e)))
            .transpose()
    }

    async fn put(
        &self,
        state: &InstanceState,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let mut connection = self.lock()?;
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error("starting a write", e))?;
        let part = partition_key(&state.key);
        let old_item: Option<String> = transaction
            .query_row(
                "SELECT item FROM state WHERE part = ?1 AND instance = ?2",
                params![part, state.key.instance],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error("reading state", e))?;
        let old = old_item
            .as_deref()
            .map(decode)
            .transpose()
            .map_err(|e| self.error("decoding a state item", e))?;
        if !precondition.holds(state, old.as_ref()) {
            return Ok(PutOutcome::PreconditionFailed);
        }
        let new_item = encode(state).map_err(|e| self.error("encoding a state item", e))?;
        transaction
            .execute(
                "INSERT INTO state (part, instance, item) VALUES (?1, ?2, ?3)
                 ON CONFLICT (part, instance) DO UPDATE SET item = excluded.item",
                params![part, state.key.instance, new_item],
            )
            .map_err(|e| self.error("writing state", e))?;
        transaction
            .execute(
                "INSERT INTO state_changes (old_item, new_item) VALUES (?1, ?2)",
                params![old_item, new_item],
            )
            .map_err(|e| self.error("appending to the change log", e))?;
        transaction
            .commit()
            .map_err(|e| self.error("committing a write", e))?;
        Ok(PutOutcome::Written)
    }

    async fn bucket(&self, date: &Date, bucket: u64) -> Result<Vec<InstanceState>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection
            .prepare("SELECT item FROM state WHERE part = ?1 ORDER BY instance")
            .map_err(|e| self.error("listing a bucket's states", e))?;
        let items = statement
            .query_map(params![bucket_key(date, bucket)], |row| {
                row.get::<_, String>(0)
            })
            .map_err(|e| self.error("listing a bucket's states", e))?;
        items
            .map(|item| {
                let item = item.map_err(|e| self.error("listing a bucket's states", e))?;
                decode(&item).map_err(|e| self.error("decoding a state item", e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::key::Date;
    use tally_core::ordering::OrderingKey;
    use tally_core::state::Content;

    fn state(sequencer: &str, value: i64) -> InstanceState {
        InstanceState {
            key: UploadKey {
                date: Date::parse("2015-11-16").unwrap(),
                instance: "web 1".into(),
            },
            object_key: "counters/2015-11-16/web 1".into(),
            ordering: OrderingKey::from_sequencer(sequencer).unwrap(),
            content: Content::Live {
                counters: [("zähler".to_owned(), value)].into(),
                etag: format!("e{value}"),
                version_id: None,
            },
        }
    }

    #[tokio::test]
    async fn conditional_writes_log_old_and_new_images_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStateStore::open(&path).unwrap();
        let first = state("1", 10);
        let second = state("2", 20);
        assert_eq!(
            store.put(&first, &Precondition::Supersedes).await.unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            store.put(&second, &Precondition::Supersedes).await.unwrap(),
            PutOutcome::Written
        );
        // An older state never lands over a newer one, and logs nothing.
        assert_eq!(
            store.put(&first, &Precondition::Supersedes).await.unwrap(),
            PutOutcome::PreconditionFailed
        );
        drop(store);

        let store = SqliteStateStore::open(&path).unwrap();
        assert_eq!(store.get(&second.key).await.unwrap(), Some(second.clone()));
        let changes = store.changes_after(0, 10).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!((changes[0].old.as_ref(), &changes[0].new), (None, &first));
        assert_eq!(
            (changes[1].old.as_ref(), &changes[1].new),
            (Some(&first), &second)
        );
        assert_eq!(
            store.changes_after(changes[0].sequence, 10).unwrap().len(),
            1
        );
        assert_eq!(store.all().unwrap(), vec![second.clone()]);
        assert_eq!(store.live_object_keys().unwrap(), vec![second.object_key]);
    }

    #[tokio::test]
    async fn a_pruned_change_log_goes_on_numbering_after_its_checkpoint() {
        use crate::database::ChangeLog;
        use tally_core::ports::{Precondition, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        let write = |sequencer: &str| tally_core::state::InstanceState {
            key: tally_core::key::UploadKey {
                date: Date::parse("2015-11-16").unwrap(),
                instance: "i-1".into(),
            },
            object_key: "counters/2015-11-16/i-1".into(),
            ordering: tally_core::ordering::OrderingKey::from_sequencer(sequencer).unwrap(),
            content: tally_core::state::Content::Live {
                counters: [("a".to_owned(), 1)].into(),
                etag: format!("e{sequencer}"),
                version_id: None,
            },
        };
        let db = Database::open(&path).unwrap();
        let state = db.state();
        for sequencer in ["1", "2"] {
            state
                .put(&write(sequencer), &Precondition::Supersedes)
                .await
                .unwrap();
        }
        assert_eq!(db.prune_changes_through(ChangeLog::State, 2).unwrap(), 2);
        assert_eq!(db.last_state_change().unwrap(), 2);
        drop((state, db));

        // Reopened with every row gone, the next change is still after the
        // checkpoint, so its consumer does not skip it.
        let db = Database::open(&path).unwrap();
        db.state()
            .put(&write("3"), &Precondition::Supersedes)
            .await
            .unwrap();
        let after_checkpoint = db.state().changes_after(2, 10).unwrap();
        assert_eq!(after_checkpoint.len(), 1);
        assert_eq!(after_checkpoint[0].sequence, 3);
    }
}
