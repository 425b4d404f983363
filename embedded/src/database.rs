//! One SQLite file holding every table of the embedded runtime, as the
//! DynamoDB tables are on AWS. This module opens the file, takes its lock,
//! creates the schema, and keeps what the tables share: the stages'
//! checkpoints and the runtime's sequencer (`positions`), the change logs'
//! plumbing, and the conditional write. The tables' adapters sit above it,
//! one module each like their DynamoDB counterparts: the state table and its
//! change log in [`crate::state_table`], the partial items and the totals
//! with the totals' change log in [`crate::totals_tables`], the alert records
//! and marks in [`crate::alerts_table`]. Each adds its accessor
//! ([`Database::state`], [`Database::totals`], [`Database::alerts`]) to
//! [`Database`]; this module names none of them.
//!
//! Every item is stored as JSON of the same type the DynamoDB adapters map
//! with `serde_dynamo`, and every conditional write runs its check and its
//! write in one immediate transaction, so concurrent writers are serialized
//! exactly as DynamoDB's conditional writes and transactions are. The change
//! logs are appended in the write's own transaction: the embedded
//! counterpart of a NEW_AND_OLD_IMAGES stream. A write whose condition fails
//! appends nothing.
//!
//! **Pruning.** A stream keeps a record 24 hours; the change logs keep a row
//! until its consumer has passed it: [`Database::prune_changes_through`]
//! deletes the rows up to a consumer's checkpoint, so the file holds the
//! tables and the changes not yet consumed, not the history. The sequences
//! are `AUTOINCREMENT`, so a number is never handed out twice, even once
//! every row before it is gone, and a checkpoint stays a position in its
//! log. SQLite does not give deleted rows' pages back to the file system;
//! it reuses them for the next rows, which is what stops the growth: the
//! file levels off at its high-water mark, the tables plus the most changes
//! ever waiting at once (one cycle's), with no `VACUUM` needed.
//!
//! **One process per database.** The embedded runtime assumes it is the only
//! one: its outbox lease is one second because an outbox left behind can only
//! be a dead process's (a second process would take over messages still being
//! published and send them twice), and two processes would each scan the
//! folder and ingest every change twice over, racing on the stages'
//! checkpoints. So [`Database::open`] takes an exclusive OS lock (`flock` on
//! Unix, `LockFileEx` on Windows) on a file beside the database,
//! `<database>.lock`, writes its process id into it, and holds it for as long
//! as the database is open; a second open fails at once, naming the lock file
//! and the holder. The operating system releases the lock when the holder's
//! process ends, however it ends (`kill -9` included), so a crash never
//! leaves a stale lock; the file itself stays, and its content only names the
//! last holder. Not the database file itself: SQLite holds POSIX locks on it,
//! which the process loses when any descriptor on the file is closed, so
//! SQLite asks that nothing else open it. Not SQLite's exclusive locking mode
//! either: it is taken at the first write, a second process finds out only
//! after its busy timeout, and nothing can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_core::ports::{PutOutcome, StoreError};

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS state (
        part TEXT NOT NULL,
        instance TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (part, instance)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS state_changes (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        old_item TEXT,
        new_item TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS partials (
        part TEXT PRIMARY KEY,
        date TEXT NOT NULL,
        item TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS partials_by_date ON partials (date);
    CREATE TABLE IF NOT EXISTS totals (
        date TEXT NOT NULL,
        counter TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (date, counter)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS totals_changes (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        old_item TEXT,
        new_item TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS alerts (
        date TEXT NOT NULL,
        alert TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (date, alert)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS marks (
        date TEXT PRIMARY KEY,
        generation INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS positions (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// Rows of a change log (`state_changes`, `totals_changes`) after `after`,
/// oldest first, as (sequence, old item, new item) JSON text.
pub(crate) fn change_rows(
    connection: &Connection,
    table: &str,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, Option<String>, String)>> {
    let mut statement = connection.prepare(&format!(
        "SELECT sequence, old_item, new_item FROM {table} WHERE sequence > ?1 ORDER BY sequence LIMIT ?2"
    ))?;
    let rows = statement.query_map(params![after, limit as i64], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })?;
    rows.collect()
}

/// Whether a versioned item may be written over what is stored: the stored
/// item is at `read_version`, or absent when that is 0.
pub(crate) fn at_version(stored: Option<u64>, read_version: u64) -> bool {
    stored.unwrap_or(0) == read_version
}

/// The embedded runtime's database file.
#[derive(Clone)]
pub struct Database {
    connection: Arc<Mutex<Connection>>,
    path: String,
    /// Keeps the database's lock while any handle on it, or any store
    /// over it, is in use.
    _lock: Option<Arc<DatabaseLock>>,
}

/// The exclusive lock on a database (see the module doc), held while the
/// file is open: released when the last handle on the database is dropped
/// or the process ends.
#[derive(Debug)]
struct DatabaseLock {
    _file: File,
}

impl DatabaseLock {
    /// The lock file of the database at `path`.
    pub fn path_of(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock, or says who holds it.
    fn take(database: &Path) -> Result<DatabaseLock, StoreError> {
        let lock_path = Self::path_of(database);
        let lock = lock_path.display();
        let opening = || format!("opening database {}", database.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::new(opening(), format!("creating its lock file {lock}: {e}"))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let holder = match file.read_to_string(&mut holder) {
                    Ok(_) => holder.trim().parse::<u32>().ok(),
                    Err(_) => None,
                };
                let holder = holder.map_or_else(
                    || "another process".to_owned(),
                    |pid| format!("process {pid}"),
                );
                return Err(StoreError::new(
                    opening(),
                    format!(
                        "it is in use by {holder}, which holds the lock {lock}; one process at a time can run on a database: stop that one (Ctrl-C), or give this one another database (tally run --state)"
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::new(opening(), format!("locking {lock}: {e}")));
            }
        }
        // Only for the message a second process shows.
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .and_then(|()| file.flush())
            .map_err(|e| StoreError::new(opening(), format!("writing {lock}: {e}")))?;
        Ok(DatabaseLock { _file: file })
    }
}

/// The change logs standing in for the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeLog {
    /// `state_changes`, the state table's stream, which the aggregate
    /// stage consumes.
    State,
    /// `totals_changes`, the totals table's stream, which the rules stage
    /// consumes.
    Totals,
}

impl ChangeLog {
    fn table(self) -> &'static str {
        match self {
            ChangeLog::State => "state_changes",
            ChangeLog::Totals => "totals_changes",
        }
    }
}

impl Database {
    /// Opens (creating if needed) the database at `path`, taking its lock
    /// (see the module doc); an in-memory database (`:memory:`) has none.
    pub fn open(path: impl AsRef<Path>) -> Result<Database, StoreError> {
        let path = path.as_ref();
        let display = path.display().to_string();
        // Before SQLite opens the file: a holder in the middle of a write
        // would otherwise make this wait out the busy timeout first.
        let lock = match path.to_str() {
            Some(":memory:" | "") => None,
            _ => Some(Arc::new(DatabaseLock::take(path)?)),
        };
        let connection = Connection::open(path)
            .map_err(|e| StoreError::new(format!("opening database {display}"), e))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| StoreError::new(format!("creating the tables in {display}"), e))?;
        Ok(Database {
            connection: Arc::new(Mutex::new(connection)),
            path: display,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn error(
        &self,
        what: &str,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::new(format!("{what} in database {}", self.path), error)
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.lock_or(|what, why| self.error(what, why))
    }

    /// The connection, or the error `error` makes of a poisoned lock (a
    /// store names itself in its errors).
    pub(crate) fn lock_or(
        &self,
        error: impl FnOnce(&str, &str) -> StoreError,
    ) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.connection.lock().map_err(|_| {
            error(
                "locking the connection",
                "a writer panicked while holding it; restart the process (committed writes are safe on disk)",
            )
        })
    }

    /// A named position in a change log (a stage's checkpoint), 0 at first.
    pub fn position(&self, name: &str) -> Result<i64, StoreError> {
        let connection = self.lock()?;
        connection
            .query_row(
                "SELECT position FROM positions WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.error(&format!("reading position {name}"), e))
    }

    /// Moves a named position on; it never moves back.
    pub fn set_position(&self, name: &str, position: i64) -> Result<(), StoreError> {
        let connection = self.lock()?;
        connection
            .execute(
                "INSERT INTO positions (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)",
                params![name, position],
            )
            .map(|_| ())
            .map_err(|e| self.error(&format!("writing position {name}"), e))
    }

    /// The next value of a named counter that survives restarts: the
    /// runtime's sequencer, so an event seen after a restart still orders
    /// after every event seen before it.
    pub fn next_in_sequence(&self, name: &str) -> Result<u64, StoreError> {
        let connection = self.lock()?;
        let next: i64 = connection
            .query_row(
                "INSERT INTO positions (name, position) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET position = position + 1
                 RETURNING position",
                params![name],
                |row| row.get(0),
            )
            .map_err(|e| self.error(&format!("advancing sequence {name}"), e))?;
        Ok(next.max(0) as u64)
    }

    /// The last sequence number the state's change log handed out (0 before
    /// the first), pruned or not.
    pub fn last_state_change(&self) -> Result<i64, StoreError> {
        self.last_of(ChangeLog::State)
    }

    /// The last sequence number the totals' change log handed out (0 before
    /// the first), pruned or not.
    pub fn last_total_change(&self) -> Result<i64, StoreError> {
        self.last_of(ChangeLog::Totals)
    }

    fn last_of(&self, log: ChangeLog) -> Result<i64, StoreError> {
        let table = log.table();
        let connection = self.lock()?;
        // The rows may be pruned; AUTOINCREMENT's counter is not.
        connection
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0)",
                params![table],
                |row| row.get(0),
            )
            .map_err(|e| self.error(&format!("reading the end of {table}"), e))
    }

    /// Deletes the rows of a change log up to and including `through`, the
    /// checkpoint of its consumer, and says how many went.
    pub fn prune_changes_through(&self, log: ChangeLog, through: i64) -> Result<usize, StoreError> {
        let table = log.table();
        let connection = self.lock()?;
        connection
            .execute(
                &format!("DELETE FROM {table} WHERE sequence <= ?1"),
                params![through],
            )
            .map_err(|e| self.error(&format!("pruning {table}"), e))
    }

    /// The items (one JSON column) a query selects, decoded.
    pub(crate) fn select<T: DeserializeOwned>(
        &self,
        connection: &Connection,
        what: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let mut statement = connection.prepare(sql).map_err(|e| self.error(what, e))?;
        let items = statement
            .query_map(params, |row| row.get::<_, String>(0))
            .map_err(|e| self.error(what, e))?;
        items
            .map(|item| self.decode(&item.map_err(|e| self.error(what, e))?))
            .collect()
    }

    /// The one item (one JSON column) a query selects, if any, decoded.
    pub(crate) fn select_one<T: DeserializeOwned>(
        &self,
        connection: &Connection,
        what: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StoreError> {
        let item: Option<String> = connection
            .query_row(sql, params, |row| row.get(0))
            .optional()
            .map_err(|e| self.error(what, e))?;
        item.map(|item| self.decode(&item)).transpose()
    }

    /// Runs `write` in one immediate transaction if `holds` says the stored
    /// item (read by `read`, in the same transaction) allows it: the
    /// embedded counterpart of a conditional write.
    pub(crate) fn write_if<T: DeserializeOwned>(
        &self,
        read: (&str, &[&dyn rusqlite::ToSql]),
        holds: impl FnOnce(&Connection, Option<&T>) -> Result<bool, StoreError>,
        write: impl FnOnce(&Connection, Option<String>) -> Result<(), StoreError>,
    ) -> Result<PutOutcome, StoreError> {
        let mut connection = self.lock()?;
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error("starting a write", e))?;
        let (sql, params) = read;
        let stored_text: Option<String> = transaction
            .query_row(sql, params, |row| row.get(0))
            .optional()
            .map_err(|e| self.error("reading before a write", e))?;
        let stored: Option<T> = stored_text.as_deref().map(|t| self.decode(t)).transpose()?;
        if !holds(&transaction, stored.as_ref())? {
            return Ok(PutOutcome::PreconditionFailed);
        }
        write(&transaction, stored_text)?;
        transaction
            .commit()
            .map_err(|e| self.error("committing a write", e))?;
        Ok(PutOutcome::Written)
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, text: &str) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|e| self.error("decoding an item", e))
    }

    pub(crate) fn encode<T: Serialize>(&self, item: &T) -> Result<String, StoreError> {
        serde_json::to_string(item).map_err(|e| self.error("encoding an item", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_in_use_is_refused_until_its_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.sqlite");
        // The state store alone keeps the lock once the database handle
        // that opened it is gone.
        let state = Database::open(&path).unwrap().state();

        let refused = Database::open(&path).err().unwrap().to_string();
        let lock = dir.path().join("tally.sqlite.lock");
        assert!(refused.contains(&lock.display().to_string()), "{refused}");
        assert!(
            refused.contains(&format!("process {}", std::process::id())),
            "{refused}"
        );

        drop(state);
        Database::open(&path).unwrap();
    }
}
