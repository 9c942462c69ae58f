//! store: SQLite in WAL mode holds reviews, embeddings, runs, results and metrics. All of
//! palate's SQL is in this folder: [`Db`] is the typed, synchronous API over one connection, and
//! [`Store`] runs a `Db` on a dedicated thread fed by a channel, so SQLite's blocking calls never
//! run on the async runtime and writes never contend for the lock.
//!
//! - [`reviews`]: reviews, restaurants and the embedding cache; ingest's writer.
//! - [`results`]: analysis results and their metrics; [`ResultSink`], the seam for the app's
//!   database.
//! - [`runs`]: run records, server samples and the queries behind `palate report`.
//! - [`deliveries`]: the outbox of restaurants whose results the app's database has not yet
//!   received.
//! - `cards`: the queries behind the results page (`palate report --results`).

mod cards;
pub mod deliveries;
pub mod health;
pub mod results;
pub mod reviews;
pub mod runs;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

pub use cards::{CardResult, CardRow};
pub use deliveries::{AppResult, Delivery, DeliveryReport, RestaurantSummary};
pub use results::{RestaurantResults, ResultRow, ResultSink, StoredResult};
pub use reviews::{IngestWriter, RestaurantRow, ReviewVector, Upsert};
pub use runs::{Day, QualityDay, RunRecord, RunStart};
pub use schema::MIGRATIONS;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create folder for database {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than this palate knows ({known}): upgrade palate"
    )]
    TooNew { found: usize, known: usize },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store thread has stopped")]
    Closed,
}

/// One open database: the typed API every SQL statement of palate sits behind.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed) the database, sets WAL and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: path.into(),
                source,
            })?;
        }
        let started = std::time::Instant::now();
        loop {
            match Self::open_once(path) {
                // Two processes opening a fresh file at once: switching it to WAL can be
                // refused at once (SQLITE_BUSY without the busy handler); try again.
                Err(StoreError::Sqlite(e) | StoreError::Open { source: e, .. })
                    if busy(&e) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(5..50)));
                }
                r => return r,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })?;
        // The busy timeout first: switching a fresh file to WAL takes a write lock that a
        // second process opening it at the same moment must wait for, not fail on.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Reads through a memory map: a restaurant's vectors (1,000 × 1.5 KB, in overflow pages)
        // load in 2.3 ms instead of 10.8 ms through the pager (`palate bench selection`). Writes
        // still go through the WAL, so durability is unchanged.
        conn.pragma_update(None, "mmap_size", 268_435_456i64)?;
        // 64 MiB of page cache (SQLite's default is 2 MiB): the b-tree interior pages of a large
        // catalogue's tables and indexes stay cached, so a restaurant's reads go to leaf pages
        // only (10,000 restaurants: palate's CPU per request 1.20 → 1.09 ms). Bounded, so memory
        // stays flat with the catalogue.
        conn.pragma_update(None, "cache_size", -65_536i64)?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn })
    }
}

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// Handle to the store thread. Cheap to clone; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut db = Db::open(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("palate-store".into())
            .spawn(move || {
                for job in rx {
                    job(&mut db);
                }
            })
            .map_err(|e| StoreError::Folder {
                path: path.into(),
                source: e,
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` on the store thread and waits for what it returns: for long synchronous work
    /// such as ingesting a file. The caller's tracing span goes with it, so log lines stay
    /// attached to the restaurant or file they belong to.
    pub async fn with_db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> T + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |db| {
            let _entered = span.enter();
            let _ = done.send(f(db));
        });
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    /// [`Store::with_db`] for a fallible `f`.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.with_db(f).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_opening_a_fresh_database_do_not_race_in_the_migrations() {
        for trial in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("fresh.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let (p, start) = (p.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&p).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                o.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            }
            let c = Db::open(&p).unwrap().conn;
            let v: i64 = c
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v as usize, MIGRATIONS.len());
        }
    }

    #[test]
    fn migrations_apply_once_and_reopen_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/p.db");
        drop(Db::open(&p).unwrap());
        let c = Db::open(&p).unwrap().conn;
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn embeddings_stored_before_migration_8_survive_it_and_fit_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.db");
        let mut c = Connection::open(&p).unwrap();
        let tx = c.transaction().unwrap();
        for sql in &MIGRATIONS[..7] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.commit().unwrap();
        let v: Vec<f32> = (0..384).map(|i| i as f32 / 384.0).collect();
        for h in ["a", "b"] {
            c.execute(
                "INSERT INTO embeddings VALUES (?1, 'm', 384, ?2, 'now')",
                rusqlite::params![h, reviews::to_blob(&v)],
            )
            .unwrap();
        }
        drop(c);
        let db = Db::open(&p).unwrap();
        let (blob, n): (Vec<u8>, i64) = (db.conn)
            .query_row(
                "SELECT vector, (SELECT count(*) FROM embeddings) FROM embeddings
                 WHERE content_hash = 'b' AND model_id = 'm'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((reviews::from_blob(&blob), n), (v, 2));
        // A rowid table: each 1.5 KB row in its leaf page, no overflow page per vector.
        let overflow: i64 = (db.conn)
            .query_row(
                "SELECT count(*) FROM dbstat WHERE name = 'embeddings' AND pagetype = 'overflow'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(overflow, 0);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.db");
        let c = Db::open(&p).unwrap().conn;
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Db::open(&p),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn store_thread_runs_calls_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("p.db")).unwrap();
        assert_eq!(s.restaurant_count().await.unwrap(), 0);
        assert!(s.restaurant("x".into()).await.unwrap().is_none());
    }
}
