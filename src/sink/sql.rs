//! The app's database through sqlx: MariaDB/MySQL or PostgreSQL, its tables made by versioned
//! migrations (`migrations/app/<dialect>/`, embedded in the binary and recorded in
//! `_sqlx_migrations`). One transaction per restaurant; a stored result is replaced only by a
//! newer one, so re-delivering the same restaurant, or an older run's, changes nothing.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::OnceCell;

use super::{SinkError, SinkKind};
use crate::store::{AppResult, Delivery, RestaurantSummary};

const MYSQL: &[(i64, &str, &str)] = &[(
    1,
    "app tables",
    include_str!("../../migrations/app/mysql/0001_app_tables.sql"),
)];
const POSTGRES: &[(i64, &str, &str)] = &[(
    1,
    "app tables",
    include_str!("../../migrations/app/postgres/0001_app_tables.sql"),
)];

/// Connections per worker: deliveries are one restaurant at a time per run.
const MAX_CONNECTIONS: u32 = 4;

pub struct SqlDb {
    pool: Pool,
    shown: String,
    /// The most a restaurant's write may take, connecting included.
    timeout: Duration,
    /// Set once the migrations ran (at the first delivery: a database that is down when the
    /// run starts does not stop it).
    migrated: OnceCell<()>,
}

enum Pool {
    My(MySqlPool),
    Pg(PgPool),
}

fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = (files.iter())
        .map(|&(v, d, sql)| {
            Migration::new(
                v,
                Cow::Borrowed(d),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// An RFC 3339 timestamp from the work database.
fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad timestamp {s:?}: {e}"))
}

impl SqlDb {
    pub fn open(
        kind: SinkKind,
        url: &str,
        shown: String,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let err = |e: sqlx::Error| SinkError::Db {
            url: shown.clone(),
            message: e.to_string(),
        };
        let pool = match kind {
            SinkKind::Mariadb => Pool::My(
                MySqlPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(timeout)
                    .connect_lazy(url)
                    .map_err(err)?,
            ),
            SinkKind::Postgres => Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(timeout)
                    .connect_lazy(url)
                    .map_err(err)?,
            ),
            SinkKind::Sqlite => unreachable!("the sqlite sink has no app database"),
        };
        Ok(Self {
            pool,
            shown,
            timeout,
            migrated: OnceCell::new(),
        })
    }

    /// The server's version, within the timeout (`palate doctor`).
    pub async fn version(&self) -> Result<String, SinkError> {
        let query = async {
            match &self.pool {
                Pool::My(p) => {
                    sqlx::query_scalar::<_, String>("SELECT version()")
                        .fetch_one(p)
                        .await
                }
                Pool::Pg(p) => {
                    sqlx::query_scalar::<_, String>("SELECT version()")
                        .fetch_one(p)
                        .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, query).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => Err(self.error(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> SinkError {
        SinkError::Db {
            url: self.shown.clone(),
            message: e.to_string(),
        }
    }

    /// The restaurant's results and summary, in one transaction, within the timeout: a
    /// statement waiting on a lock the app holds (PostgreSQL waits for ever, MariaDB 50 s) or on
    /// a server that stopped answering would otherwise hold the run up. The transaction left
    /// behind is rolled back.
    pub async fn write(&self, d: &Delivery) -> Result<(), SinkError> {
        tokio::time::timeout(self.timeout, self.write_now(d))
            .await
            .unwrap_or_else(|_| {
                Err(self.error(format!(
                    "no answer within {} s (timeout_s)",
                    self.timeout.as_secs_f64()
                )))
            })
    }

    async fn write_now(&self, d: &Delivery) -> Result<(), SinkError> {
        self.migrated
            .get_or_try_init(|| async {
                match &self.pool {
                    Pool::My(p) => migrator(MYSQL).run(p).await,
                    Pool::Pg(p) => migrator(POSTGRES).run(p).await,
                }
                .map_err(|e| self.error(format!("migrations: {e}")))
            })
            .await?;
        let at = Utc::now();
        match &self.pool {
            Pool::My(p) => {
                let mut tx = p.begin().await.map_err(|e| self.error(e))?;
                for r in &d.results {
                    my_result(&mut tx, &d.restaurant_id, r, at)
                        .await
                        .map_err(|e| self.error(e))?;
                }
                my_summary(&mut tx, &d.restaurant_id, &d.summary, at)
                    .await
                    .map_err(|e| self.error(e))?;
                tx.commit().await.map_err(|e| self.error(e))
            }
            Pool::Pg(p) => {
                let mut tx = p.begin().await.map_err(|e| self.error(e))?;
                for r in &d.results {
                    pg_result(&mut tx, &d.restaurant_id, r, at)
                        .await
                        .map_err(|e| self.error(e))?;
                }
                pg_summary(&mut tx, &d.restaurant_id, &d.summary, at)
                    .await
                    .map_err(|e| self.error(e))?;
                tx.commit().await.map_err(|e| self.error(e))
            }
        }
    }
}

type MyTx<'a> = sqlx::Transaction<'a, sqlx::MySql>;
type PgTx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// MariaDB applies `ON DUPLICATE KEY UPDATE` assignments left to right, so every guard reads the
/// old `created_at`, which is assigned last.
async fn my_result(
    tx: &mut MyTx<'_>,
    restaurant_id: &str,
    r: &AppResult,
    at: DateTime<Utc>,
) -> Result<(), String> {
    sqlx::query(
        "INSERT INTO palate_results (restaurant_id, kind, result_json, model, prompt_version,
             input_hash, run_id, created_at, delivered_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE
             result_json = IF(VALUES(created_at) >= created_at, VALUES(result_json), result_json),
             model = IF(VALUES(created_at) >= created_at, VALUES(model), model),
             prompt_version = IF(VALUES(created_at) >= created_at, VALUES(prompt_version), prompt_version),
             input_hash = IF(VALUES(created_at) >= created_at, VALUES(input_hash), input_hash),
             run_id = IF(VALUES(created_at) >= created_at, VALUES(run_id), run_id),
             delivered_at = IF(VALUES(created_at) >= created_at, VALUES(delivered_at), delivered_at),
             created_at = GREATEST(created_at, VALUES(created_at))",
    )
    .bind(restaurant_id)
    .bind(r.kind.as_str())
    .bind(&r.result_json)
    .bind(&r.model)
    .bind(&r.prompt_version)
    .bind(&r.input_hash)
    .bind(r.run_id)
    .bind(instant(&r.created_at)?.naive_utc())
    .bind(at.naive_utc())
    .execute(&mut **tx)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn my_summary(
    tx: &mut MyTx<'_>,
    restaurant_id: &str,
    s: &RestaurantSummary,
    at: DateTime<Utc>,
) -> Result<(), String> {
    if s.analysed_at.is_empty() {
        return Ok(()); // no analysis recorded for the run (nothing to summarise)
    }
    let newer = "VALUES(analysed_at) >= analysed_at";
    let cols = [
        "run_id",
        "analyses_ok",
        "analyses_failed",
        "reviews_total",
        "reviews_selected",
        "requests",
        "requests_failed",
        "prompt_tokens",
        "completion_tokens",
        "ttft_p50_ms",
        "ttft_p95_ms",
        "goodput",
        "delivered_at",
    ];
    let updates: Vec<String> = (cols.iter())
        .map(|c| format!("{c} = IF({newer}, VALUES({c}), {c})"))
        .chain(["analysed_at = GREATEST(analysed_at, VALUES(analysed_at))".to_string()])
        .collect();
    let sql = format!(
        "INSERT INTO palate_restaurants (restaurant_id, analysed_at, {})
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE {}",
        cols.join(", "),
        updates.join(", ")
    );
    sqlx::query(&sql)
        .bind(restaurant_id)
        .bind(instant(&s.analysed_at)?.naive_utc())
        .bind(s.run_id)
        .bind(s.analyses_ok)
        .bind(s.analyses_failed)
        .bind(s.reviews_total)
        .bind(s.reviews_selected)
        .bind(s.requests)
        .bind(s.requests_failed)
        .bind(s.prompt_tokens)
        .bind(s.completion_tokens)
        .bind(s.ttft_p50_ms)
        .bind(s.ttft_p95_ms)
        .bind(s.goodput)
        .bind(at.naive_utc())
        .execute(&mut **tx)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn pg_result(
    tx: &mut PgTx<'_>,
    restaurant_id: &str,
    r: &AppResult,
    at: DateTime<Utc>,
) -> Result<(), String> {
    sqlx::query(
        "INSERT INTO palate_results (restaurant_id, kind, result_json, model, prompt_version,
             input_hash, run_id, created_at, delivered_at)
         VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (restaurant_id, kind) DO UPDATE SET
             result_json = excluded.result_json, model = excluded.model,
             prompt_version = excluded.prompt_version, input_hash = excluded.input_hash,
             run_id = excluded.run_id, created_at = excluded.created_at,
             delivered_at = excluded.delivered_at
         WHERE palate_results.created_at <= excluded.created_at",
    )
    .bind(restaurant_id)
    .bind(r.kind.as_str())
    .bind(&r.result_json)
    .bind(&r.model)
    .bind(&r.prompt_version)
    .bind(&r.input_hash)
    .bind(r.run_id)
    .bind(instant(&r.created_at)?)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn pg_summary(
    tx: &mut PgTx<'_>,
    restaurant_id: &str,
    s: &RestaurantSummary,
    at: DateTime<Utc>,
) -> Result<(), String> {
    if s.analysed_at.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO palate_restaurants (restaurant_id, analysed_at, run_id, analyses_ok,
             analyses_failed, reviews_total, reviews_selected, requests, requests_failed,
             prompt_tokens, completion_tokens, ttft_p50_ms, ttft_p95_ms, goodput, delivered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (restaurant_id) DO UPDATE SET
             analysed_at = excluded.analysed_at, run_id = excluded.run_id,
             analyses_ok = excluded.analyses_ok, analyses_failed = excluded.analyses_failed,
             reviews_total = excluded.reviews_total, reviews_selected = excluded.reviews_selected,
             requests = excluded.requests, requests_failed = excluded.requests_failed,
             prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
             ttft_p50_ms = excluded.ttft_p50_ms, ttft_p95_ms = excluded.ttft_p95_ms,
             goodput = excluded.goodput, delivered_at = excluded.delivered_at
         WHERE palate_restaurants.analysed_at <= excluded.analysed_at",
    )
    .bind(restaurant_id)
    .bind(instant(&s.analysed_at)?)
    .bind(s.run_id)
    .bind(s.analyses_ok as i32)
    .bind(s.analyses_failed as i32)
    .bind(s.reviews_total as i32)
    .bind(s.reviews_selected as i32)
    .bind(s.requests as i32)
    .bind(s.requests_failed as i32)
    .bind(s.prompt_tokens)
    .bind(s.completion_tokens)
    .bind(s.ttft_p50_ms)
    .bind(s.ttft_p95_ms)
    .bind(s.goodput)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
