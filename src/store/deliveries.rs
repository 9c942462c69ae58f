//! The app-database outbox. When the job has an app database, storing a restaurant's results
//! also queues the restaurant here, in the same transaction; a delivery reads what the app
//! reads — its current valid results and the summary of the run that produced them — and the
//! row goes only once the app's database has committed them. A sink that is down therefore
//! loses nothing: the next run, or `palate sync`, delivers what is still queued.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{Db, Store, StoreError};
use crate::domain::{cap_text, now, Kind};
use crate::metrics::percentile;

/// What a round of deliveries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub delivered: u64,
    /// Still queued afterwards (the app's database refused or was unreachable).
    pub queued: u64,
}

/// One restaurant as the app's database receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub restaurant_id: String,
    /// When it was queued: the outbox row is removed only if still this one.
    pub queued_at: String,
    /// Its newest valid result of each kind (the `current_results` view).
    pub results: Vec<AppResult>,
    pub summary: RestaurantSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppResult {
    pub kind: Kind,
    pub result_json: String,
    pub model: String,
    pub prompt_version: String,
    pub input_hash: String,
    pub run_id: i64,
    /// RFC 3339 UTC with milliseconds: a newer result sorts after an older one.
    pub created_at: String,
}

/// The run that last analysed the restaurant, and its requests.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RestaurantSummary {
    pub run_id: i64,
    pub analysed_at: String,
    pub analyses_ok: i64,
    pub analyses_failed: i64,
    pub reviews_total: i64,
    pub reviews_selected: i64,
    pub requests: i64,
    pub requests_failed: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    /// Share of requests that met every SLA.
    pub goodput: Option<f64>,
}

/// Queues `restaurant_id` for delivery of what `run_id` stored (replacing an older queue entry).
pub(super) fn queue(
    tx: &Transaction<'_>,
    restaurant_id: &str,
    run_id: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO deliveries (restaurant_id, run_id, queued_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (restaurant_id) DO UPDATE SET run_id = excluded.run_id,
             queued_at = excluded.queued_at, attempts = 0, last_error = NULL",
    )?
    .execute(params![restaurant_id, run_id, now()])?;
    Ok(())
}

impl Db {
    /// Restaurants waiting for delivery, oldest first.
    pub fn pending_deliveries(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT restaurant_id FROM deliveries ORDER BY queued_at, restaurant_id LIMIT ?1",
        )?;
        let rows = q.query_map(params![limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn pending_delivery_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// What the app's database should hold for a queued restaurant; `None` if not queued.
    pub fn delivery(&self, restaurant_id: &str) -> Result<Option<Delivery>, StoreError> {
        let queued: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT run_id, queued_at FROM deliveries WHERE restaurant_id = ?1",
                params![restaurant_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((run_id, queued_at)) = queued else {
            return Ok(None);
        };
        Ok(Some(Delivery {
            restaurant_id: restaurant_id.to_string(),
            queued_at,
            results: self.current_results(restaurant_id)?,
            summary: self.restaurant_summary(restaurant_id, run_id)?,
        }))
    }

    fn current_results(&self, restaurant_id: &str) -> Result<Vec<AppResult>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT kind, result_json, model, prompt_version, input_hash, run_id, created_at
             FROM current_results WHERE restaurant_id = ?1 ORDER BY kind",
        )?;
        let rows = q.query_map(params![restaurant_id], |r| {
            Ok(AppResult {
                kind: r.get(0)?,
                result_json: r.get(1)?,
                model: r.get(2)?,
                prompt_version: r.get(3)?,
                input_hash: r.get(4)?,
                run_id: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn restaurant_summary(
        &self,
        restaurant_id: &str,
        run_id: i64,
    ) -> Result<RestaurantSummary, StoreError> {
        let mut s = self.conn.query_row(
            "SELECT coalesce(max(created_at), ''), coalesce(sum(outcome = 'ok'), 0),
                    coalesce(sum(outcome = 'failed'), 0), coalesce(max(reviews_total), 0),
                    coalesce(max(reviews_selected), 0)
             FROM analysis_metrics WHERE run_id = ?1 AND restaurant_id = ?2",
            params![run_id, restaurant_id],
            |r| {
                Ok(RestaurantSummary {
                    run_id,
                    analysed_at: r.get(0)?,
                    analyses_ok: r.get(1)?,
                    analyses_failed: r.get(2)?,
                    reviews_total: r.get(3)?,
                    reviews_selected: r.get(4)?,
                    ..Default::default()
                })
            },
        )?;
        let mut q = self.conn.prepare_cached(
            "SELECT status, coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), ttft_ms,
                    coalesce(meets_sla, 0)
             FROM vllm_metrics WHERE run_id = ?1 AND restaurant_id = ?2",
        )?;
        let mut rows = q.query(params![run_id, restaurant_id])?;
        let (mut ttft, mut good) = (Vec::new(), 0i64);
        while let Some(r) = rows.next()? {
            s.requests += 1;
            s.requests_failed += i64::from(r.get::<_, String>(0)? != "ok");
            s.prompt_tokens += r.get::<_, i64>(1)?;
            s.completion_tokens += r.get::<_, i64>(2)?;
            ttft.extend(r.get::<_, Option<f64>>(3)?);
            good += r.get::<_, i64>(4)?;
        }
        s.ttft_p50_ms = percentile(&ttft, 50.0);
        s.ttft_p95_ms = percentile(&ttft, 95.0);
        s.goodput = (s.requests > 0).then(|| good as f64 / s.requests as f64);
        Ok(s)
    }

    /// The app's database committed `d`: remove its queue entry unless a newer one replaced it.
    pub fn delivered(&self, d: &Delivery) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM deliveries WHERE restaurant_id = ?1 AND queued_at = ?2",
            params![d.restaurant_id, d.queued_at],
        )?;
        Ok(())
    }

    /// A delivery failed: it stays queued, with the reason.
    pub fn delivery_failed(&self, restaurant_id: &str, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2, last_try_at = ?3
             WHERE restaurant_id = ?1",
            params![restaurant_id, cap_text(error), now()],
        )?;
        Ok(())
    }
}

impl Store {
    pub async fn pending_deliveries(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.call(move |db| db.pending_deliveries(limit)).await
    }

    pub async fn pending_delivery_count(&self) -> Result<u64, StoreError> {
        self.call(|db| db.pending_delivery_count()).await
    }

    pub async fn delivery(&self, restaurant_id: String) -> Result<Option<Delivery>, StoreError> {
        self.call(move |db| db.delivery(&restaurant_id)).await
    }

    pub async fn delivered(&self, d: Delivery) -> Result<(), StoreError> {
        self.call(move |db| db.delivered(&d)).await
    }

    pub async fn delivery_failed(
        &self,
        restaurant_id: String,
        error: String,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.delivery_failed(&restaurant_id, &error))
            .await
    }
}
