//! The aggregate stage's tables in SQLite: the partial items and the totals,
//! with the totals' change log as the totals table's stream, which the rules
//! stage consumes. The file, its schema and the conditional write are
//! [`crate::database`]'s.
//!
//! A partial item is written only over the version it was read at (or
//! where none is stored, when that version is 0); a total only over the
//! basis it replaces (or where none is stored): the conditions the DynamoDB
//! adapters state as condition expressions. A total that lands appends its
//! old and new image to `totals_changes` in the same transaction; a write
//! whose condition fails appends nothing.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;
use tally_core::aggregate::{Basis, PartialItem, TotalItem};
use tally_core::key::Date;
use tally_core::ports::{PutOutcome, StoreError, TotalsStore};

use crate::database::{Database, at_version, change_rows};

/// One row of the totals' change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalChange {
    pub sequence: i64,
    pub old: Option<TotalItem>,
    pub new: TotalItem,
}

impl Database {
    /// The partial items and the totals.
    pub fn totals(&self) -> SqliteTotalsStore {
        SqliteTotalsStore { db: self.clone() }
    }

    /// Rows of the totals' change log after `after`, oldest first.
    pub fn total_changes_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<TotalChange>, StoreError> {
        let rows = {
            let connection = self.lock()?;
            change_rows(&connection, "totals_changes", after, limit)
                .map_err(|e| self.error("reading the totals' change log", e))?
        };
        rows.into_iter()
            .map(|(sequence, old, new)| {
                Ok(TotalChange {
                    sequence,
                    old: old.as_deref().map(|t| self.decode(t)).transpose()?,
                    new: self.decode(&new)?,
                })
            })
            .collect()
    }
}

/// The aggregate stage's tables in SQLite.
#[derive(Clone)]
pub struct SqliteTotalsStore {
    db: Database,
}

impl SqliteTotalsStore {
    /// Every live total of a day, as the downstream job's snapshot lists them.
    pub fn live_totals(&self, date: &Date) -> Result<BTreeMap<String, i128>, StoreError> {
        Ok(self
            .totals_sync(date)?
            .into_iter()
            .filter_map(|total| total.value.map(|value| (total.counter, value.0)))
            .collect())
    }

    fn totals_sync(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        let connection = self.db.lock()?;
        self.db.select(
            &connection,
            "listing a day's totals",
            "SELECT item FROM totals WHERE date = ?1 ORDER BY counter",
            params![date.as_str()],
        )
    }
}

impl TotalsStore for SqliteTotalsStore {
    async fn partial(&self, date: &Date, bucket: u64) -> Result<Option<PartialItem>, StoreError> {
        let connection = self.db.lock()?;
        self.db.select_one(
            &connection,
            "reading a partial item",
            "SELECT item FROM partials WHERE part = ?1",
            params![tally_core::aggregate::partial_key(date, bucket)],
        )
    }

    async fn put_partial(
        &self,
        item: &PartialItem,
        read_version: u64,
    ) -> Result<PutOutcome, StoreError> {
        let encoded = self.db.encode(item)?;
        self.db.write_if::<PartialItem>(
            ("SELECT item FROM partials WHERE part = ?1", &[&item.part]),
            |_, stored| Ok(at_version(stored.map(|p| p.version), read_version)),
            |connection, _| {
                connection
                    .execute(
                        "INSERT INTO partials (part, date, item) VALUES (?1, ?2, ?3)
                         ON CONFLICT (part) DO UPDATE SET item = excluded.item",
                        params![item.part, item.date.as_str(), encoded],
                    )
                    .map(|_| ())
                    .map_err(|e| self.db.error("writing a partial item", e))
            },
        )
    }

    async fn partials(&self, date: &Date) -> Result<Vec<PartialItem>, StoreError> {
        let connection = self.db.lock()?;
        let mut partials: Vec<PartialItem> = self.db.select(
            &connection,
            "listing a day's partial items",
            "SELECT item FROM partials WHERE date = ?1",
            params![date.as_str()],
        )?;
        partials.sort_by_key(|p| p.bucket);
        Ok(partials)
    }

    async fn totals_of(
        &self,
        date: &Date,
        counters: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, TotalItem>, StoreError> {
        let connection = self.db.lock()?;
        let mut found = BTreeMap::new();
        for counter in counters {
            let total: Option<TotalItem> = self.db.select_one(
                &connection,
                "reading a total",
                "SELECT item FROM totals WHERE date = ?1 AND counter = ?2",
                params![date.as_str(), counter],
            )?;
            if let Some(total) = total {
                found.insert(counter.clone(), total);
            }
        }
        Ok(found)
    }

    async fn put_total(
        &self,
        item: &TotalItem,
        replaces: Option<&Basis>,
    ) -> Result<PutOutcome, StoreError> {
        let new_item = self.db.encode(item)?;
        self.db.write_if::<TotalItem>(
            (
                "SELECT item FROM totals WHERE date = ?1 AND counter = ?2",
                &[&item.date.as_str(), &item.counter],
            ),
            |_, stored| Ok(stored.map(|t| &t.basis) == replaces),
            |connection, old_item| {
                connection
                    .execute(
                        "INSERT INTO totals (date, counter, item) VALUES (?1, ?2, ?3)
                         ON CONFLICT (date, counter) DO UPDATE SET item = excluded.item",
                        params![item.date.as_str(), item.counter, new_item],
                    )
                    .and_then(|_| {
                        connection.execute(
                            "INSERT INTO totals_changes (old_item, new_item) VALUES (?1, ?2)",
                            params![old_item, new_item],
                        )
                    })
                    .map(|_| ())
                    .map_err(|e| self.db.error("writing a total and its change", e))
            },
        )
    }

    async fn totals(&self, date: &Date) -> Result<Vec<TotalItem>, StoreError> {
        self.totals_sync(date)
    }
}
