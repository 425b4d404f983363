//! The alert-state table in SQLite: the alert records and each day's mark
//! (the newest totals generation an evaluation has claimed). The file, its
//! schema and the conditional write are [`crate::database`]'s.
//!
//! A claim moves a day's mark on, never back; an alert record is written
//! only over the version it was read at, and, when the writer holds a mark,
//! only while the day's mark is still that one: the conditions the DynamoDB
//! adapter states as condition expressions, checked and written in one
//! immediate transaction.

use rusqlite::{Connection, OptionalExtension, params};
use tally_core::key::Date;
use tally_core::ports::{AlertStore, PutOutcome, StoreError};
use tally_core::rules::alert::AlertRecord;

use crate::database::{Database, at_version};

impl Database {
    /// The alert records and marks.
    pub fn alerts(&self) -> SqliteAlertStore {
        SqliteAlertStore { db: self.clone() }
    }
}

/// The alert-state table in SQLite.
#[derive(Clone)]
pub struct SqliteAlertStore {
    db: Database,
}

impl SqliteAlertStore {
    fn mark_in(&self, connection: &Connection, date: &Date) -> Result<u64, StoreError> {
        let mark: Option<i64> = connection
            .query_row(
                "SELECT generation FROM marks WHERE date = ?1",
                params![date.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.db.error("reading a day's mark", e))?;
        Ok(mark.unwrap_or_default().max(0) as u64)
    }
}

impl AlertStore for SqliteAlertStore {
    async fn alerts(&self, date: &Date) -> Result<Vec<AlertRecord>, StoreError> {
        let connection = self.db.lock()?;
        self.db.select(
            &connection,
            "listing a day's alerts",
            "SELECT item FROM alerts WHERE date = ?1 ORDER BY alert",
            params![date.as_str()],
        )
    }

    async fn mark(&self, date: &Date) -> Result<u64, StoreError> {
        let connection = self.db.lock()?;
        self.mark_in(&connection, date)
    }

    async fn claim(&self, date: &Date, generation: u64) -> Result<PutOutcome, StoreError> {
        let connection = self.db.lock()?;
        let changed = connection
            .execute(
                "INSERT INTO marks (date, generation) VALUES (?1, ?2)
                 ON CONFLICT (date) DO UPDATE SET generation = excluded.generation
                 WHERE marks.generation <= excluded.generation",
                params![date.as_str(), generation as i64],
            )
            .map_err(|e| self.db.error("claiming a day's mark", e))?;
        Ok(if changed == 1 {
            PutOutcome::Written
        } else {
            PutOutcome::PreconditionFailed
        })
    }

    async fn put_alert(
        &self,
        record: &AlertRecord,
        read_version: u64,
        mark: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let encoded = self.db.encode(record)?;
        self.db.write_if::<AlertRecord>(
            (
                "SELECT item FROM alerts WHERE date = ?1 AND alert = ?2",
                &[&record.date.as_str(), &record.alert],
            ),
            |connection, stored| {
                let mark_holds = match mark {
                    Some(expected) => self.mark_in(connection, &record.date)? == expected,
                    None => true,
                };
                Ok(mark_holds && at_version(stored.map(|r| r.version), read_version))
            },
            |connection, _| {
                connection
                    .execute(
                        "INSERT INTO alerts (date, alert, item) VALUES (?1, ?2, ?3)
                         ON CONFLICT (date, alert) DO UPDATE SET item = excluded.item",
                        params![record.date.as_str(), record.alert, encoded],
                    )
                    .map(|_| ())
                    .map_err(|e| self.db.error("writing an alert", e))
            },
        )
    }
}
