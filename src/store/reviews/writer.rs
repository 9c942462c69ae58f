//! [`IngestWriter`]: stores one input file's rows in batches, each batch one transaction that
//! leaves the database consistent.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::Upsert;
use crate::domain::{hex, now, Review};
use crate::store::{Db, StoreError};

/// Rows stored per transaction at first.
const COMMIT_EVERY: usize = 2000;
/// The most rows a batch grows to.
const MAX_BATCH: usize = 128_000;
/// A batch doubles while refreshing its restaurants hashes more than this many stored reviews per
/// row it stored: a file in random restaurant order touches most restaurants in every batch, and
/// with a fixed batch ingest time would grow with the square of the file.
const REFRESH_PER_ROW: usize = 4;

/// Stores the rows of one input file: remembers the ids it has seen (on disk, in a temporary
/// table, so memory stays flat on huge files) and commits in batches.
///
/// Every commit is self-consistent: the restaurants whose reviews the batch added or changed get
/// their reviews hash and count in the same transaction, so a process killed at any moment leaves
/// no stored review whose restaurant row is missing or stale (which the next run would not see
/// as changed). Transactions are `BEGIN IMMEDIATE`: they take the write lock before their first
/// read, so a concurrent writer waits its turn under the busy timeout instead of failing at once
/// on a read-to-write upgrade. Rows stored before an error stay.
pub struct IngestWriter<'db> {
    db: &'db mut Db,
    /// Restaurants whose reviews changed in the open transaction.
    changed: BTreeSet<String>,
    /// Restaurants refreshed by an earlier commit of this file.
    refreshed: BTreeSet<String>,
    /// Restaurants seen only with unchanged reviews: refreshed once at the end (a no-op when
    /// current), which mends a restaurant row that an older palate left missing or stale.
    unchanged: BTreeSet<String>,
    /// Rows stored in the open transaction, and how many make a batch.
    pending: usize,
    batch: usize,
    /// A transaction is open (so dropping the writer rolls it back).
    open: bool,
}

impl Db {
    /// Starts storing one input file's rows.
    pub fn ingest_writer(&mut self) -> Result<IngestWriter<'_>, StoreError> {
        self.conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_seen (review_id TEXT PRIMARY KEY, line INTEGER NOT NULL);
             DELETE FROM ingest_seen;
             BEGIN IMMEDIATE;",
        )?;
        Ok(IngestWriter {
            db: self,
            changed: BTreeSet::new(),
            refreshed: BTreeSet::new(),
            unchanged: BTreeSet::new(),
            pending: 0,
            batch: COMMIT_EVERY,
            open: true,
        })
    }
}

impl IngestWriter<'_> {
    /// Records that `review_id` is on `line` of this file; returns the line it was first seen on
    /// if it was seen before (the row is then a duplicate and nothing is recorded).
    pub fn first_seen(&mut self, review_id: &str, line: u64) -> Result<Option<u64>, StoreError> {
        let c = &self.db.conn;
        let first: Option<i64> = c
            .query_row(
                "SELECT line FROM ingest_seen WHERE review_id = ?1",
                [review_id],
                |r| r.get(0),
            )
            .optional()?;
        if first.is_none() {
            c.execute(
                "INSERT INTO ingest_seen (review_id, line) VALUES (?1, ?2)",
                params![review_id, line as i64],
            )?;
        }
        Ok(first.map(|l| l as u64))
    }

    /// Stores one review; `source` and `line` say where it came from.
    pub fn upsert(&mut self, r: &Review, source: &str, line: u64) -> Result<Upsert, StoreError> {
        let outcome = self.db.upsert_review(r, source, line)?;
        let id = &r.restaurant_id;
        match outcome {
            Upsert::OtherRestaurant(_) => return Ok(outcome),
            Upsert::Inserted | Upsert::Updated => {
                self.unchanged.remove(id);
                self.changed.insert(id.clone());
            }
            Upsert::Unchanged if !self.changed.contains(id) && !self.refreshed.contains(id) => {
                self.unchanged.insert(id.clone());
            }
            Upsert::Unchanged => {}
        }
        self.pending += 1;
        if self.pending >= self.batch {
            self.commit()?;
            self.db.conn.execute_batch("BEGIN IMMEDIATE;")?;
            self.open = true;
        }
        Ok(outcome)
    }

    /// Refreshes the restaurants the open transaction changed and commits it (if one is open:
    /// after a failed `BEGIN`, finishing must not fail again on a `COMMIT` with nothing to commit).
    fn commit(&mut self) -> Result<(), StoreError> {
        if !self.open {
            return Ok(());
        }
        let hashed = self.db.refresh_restaurants(&self.changed)?;
        self.db.conn.execute_batch("COMMIT;")?;
        self.open = false;
        if hashed > self.pending * REFRESH_PER_ROW {
            self.batch = (self.batch * 2).min(MAX_BATCH);
        }
        self.refreshed.append(&mut self.changed);
        self.pending = 0;
        Ok(())
    }

    /// Refreshes the touched restaurants and commits.
    pub fn finish(mut self) -> Result<(), StoreError> {
        let unchanged = std::mem::take(&mut self.unchanged);
        self.changed.extend(unchanged);
        self.commit()?;
        self.db.conn.execute_batch("DELETE FROM ingest_seen;")?;
        Ok(())
    }
}

impl Drop for IngestWriter<'_> {
    /// A writer dropped unfinished (an error, a panic) rolls its open batch back, leaving the
    /// connection usable and the database as of the last commit.
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.conn.execute_batch("ROLLBACK;");
        }
    }
}

impl Db {
    fn upsert_review(&self, r: &Review, source: &str, line: u64) -> Result<Upsert, StoreError> {
        // (restaurant_id, content_hash, rating, created_at, lang) of the stored row.
        type Stored = (String, String, Option<f64>, Option<String>, Option<String>);
        let existing: Option<Stored> = self
            .conn
            .query_row(
                "SELECT restaurant_id, content_hash, rating, created_at, lang FROM reviews WHERE review_id = ?1",
                [&r.review_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
            )
            .optional()?;
        let outcome = match existing {
            Some((rid, ..)) if rid != r.restaurant_id => return Ok(Upsert::OtherRestaurant(rid)),
            Some((_, hash, rating, created, lang))
                if hash == r.content_hash
                    && rating == r.rating
                    && created == r.created_at
                    && lang == r.lang =>
            {
                return Ok(Upsert::Unchanged)
            }
            Some(_) => Upsert::Updated,
            None => Upsert::Inserted,
        };
        self.conn.execute(
            "INSERT INTO reviews (review_id, restaurant_id, text, rating, created_at, lang, content_hash,
                                  source_file, source_line, ingested_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (review_id) DO UPDATE SET text = excluded.text, rating = excluded.rating,
                 created_at = excluded.created_at, lang = excluded.lang, content_hash = excluded.content_hash,
                 source_file = excluded.source_file, source_line = excluded.source_line,
                 ingested_at = excluded.ingested_at",
            params![
                r.review_id, r.restaurant_id, r.text, r.rating, r.created_at, r.lang, r.content_hash,
                source, line as i64, now()
            ],
        )?;
        Ok(outcome)
    }

    /// Recomputes the reviews hash and review count of the given restaurants; returns how many
    /// reviews it hashed.
    fn refresh_restaurants(&self, ids: &BTreeSet<String>) -> Result<usize, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT review_id, content_hash FROM reviews WHERE restaurant_id = ?1 ORDER BY review_id",
        )?;
        let mut hashed = 0;
        for id in ids {
            let mut h = Sha256::new();
            let mut n = 0i64;
            let mut rows = q.query([id])?;
            while let Some(row) = rows.next()? {
                for col in 0..2 {
                    let v = row.get_ref(col)?.as_str().map_err(rusqlite::Error::from)?;
                    h.update(v.as_bytes());
                    h.update([0]);
                }
                n += 1;
            }
            self.conn.execute(
                "INSERT INTO restaurants (restaurant_id, input_hash, review_count, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (restaurant_id) DO UPDATE SET input_hash = excluded.input_hash,
                     review_count = excluded.review_count, updated_at = excluded.updated_at
                 WHERE restaurants.input_hash != excluded.input_hash",
                params![id, hex(&h.finalize()), n, now()],
            )?;
            hashed += n as usize;
        }
        Ok(hashed)
    }
}
