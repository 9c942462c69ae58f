//! Analysis results and their metrics, written per restaurant in one transaction; the
//! [`ResultSink`] seam through which results leave the pipeline.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Transaction};
use serde_json::Value;

use super::{Db, Store, StoreError};
use crate::domain::{
    cap_text, now, ErrorClass, Failure, Kind, RequestStatus, ResultKey, ResultStatus,
};
use crate::metrics::{AnalysisMetrics, RequestMetrics, Sla};

/// One analysis outcome to store.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub kind: Kind,
    /// The validated result, or why there is none.
    pub outcome: Result<Value, Failure>,
    pub attempts: u32,
    /// The model whose answer this is, when one answered.
    pub answered_by: Option<String>,
}

/// Everything one restaurant's analysis produced: what a [`ResultSink`] receives.
#[derive(Debug, Clone)]
pub struct RestaurantResults {
    pub key: ResultKey,
    pub rows: Vec<ResultRow>,
    pub analyses: Vec<AnalysisMetrics>,
    pub requests: Vec<RequestMetrics>,
    /// The thresholds each request is judged by (`vllm_metrics.meets_sla`).
    pub sla: Sla,
}

/// Where a restaurant's results go once analysed: the work database (SQLite, [`Store`]), and
/// the app's database in deployments that have one. A write is all or nothing per restaurant,
/// and a failure never replaces a valid result stored under the same key.
#[async_trait]
pub trait ResultSink: Send + Sync {
    async fn put_restaurant(
        &self,
        run_id: i64,
        results: Arc<RestaurantResults>,
    ) -> Result<(), StoreError>;

    /// Delivers what an earlier write left queued for the app's database; `None` when this
    /// sink has no app database.
    async fn deliver_pending(&self) -> Result<Option<super::DeliveryReport>, StoreError> {
        Ok(None)
    }
}

#[async_trait]
impl ResultSink for Store {
    async fn put_restaurant(
        &self,
        run_id: i64,
        results: Arc<RestaurantResults>,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.put_restaurant(run_id, &results, false))
            .await
    }
}

impl Store {
    /// Stores the restaurant's results and queues them for the app's database in the same
    /// transaction (see `deliveries`).
    pub async fn put_restaurant_for_delivery(
        &self,
        run_id: i64,
        results: Arc<RestaurantResults>,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.put_restaurant(run_id, &results, true))
            .await
    }
}

/// A stored result as `palate analyze` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredResult {
    pub kind: Kind,
    pub status: ResultStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub model: String,
    pub created_at: String,
}

impl Db {
    /// True when every kind is settled under `key`: a valid result, or a failure that the same
    /// input, prompts and model would only repeat (see [`ErrorClass::is_final`]). The restaurant
    /// can then be skipped; failures from transient or permanent request errors are retried.
    pub fn has_current_results(&self, key: &ResultKey) -> Result<bool, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT count(*) FROM results WHERE restaurant_id = ?1 AND input_hash = ?2
             AND prompt_version = ?3 AND model = ?4
             AND (status = ?5 OR error_class IN (?6, ?7))",
        )?;
        let n: i64 = q.query_row(
            params![
                key.restaurant_id,
                key.input_hash,
                key.prompt_version,
                key.model,
                ResultStatus::Ok,
                ErrorClass::InvalidOutput,
                ErrorClass::ContextLength
            ],
            |r| r.get(0),
        )?;
        Ok(n as usize >= Kind::ALL.len())
    }

    /// Writes a restaurant's analyses, their metrics and its requests' metrics in one
    /// transaction, so a killed run never leaves a result without its metrics; with `deliver`,
    /// queues the restaurant for the app's database in the same transaction.
    pub fn put_restaurant(
        &mut self,
        run_id: i64,
        r: &RestaurantResults,
        deliver: bool,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let at = now();
        for row in &r.rows {
            put_result(&tx, run_id, &r.key, row, &at)?;
        }
        for a in &r.analyses {
            put_analysis(&tx, run_id, a, &at)?;
        }
        for m in &r.requests {
            put_request(&tx, run_id, m, &r.sla)?;
        }
        if deliver {
            super::deliveries::queue(&tx, &r.key.restaurant_id, run_id)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The results stored under `key`, one per kind.
    pub fn results_for(&self, key: &ResultKey) -> Result<Vec<StoredResult>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT kind, status, result_json, error, model, created_at FROM results
             WHERE restaurant_id = ?1 AND input_hash = ?2 AND prompt_version = ?3 AND model = ?4
             ORDER BY CASE kind WHEN 'sentiment' THEN 0 WHEN 'summary' THEN 1 ELSE 2 END",
        )?;
        let rows = q.query_map(
            params![
                key.restaurant_id,
                key.input_hash,
                key.prompt_version,
                key.model
            ],
            |r| {
                let json: Option<String> = r.get(2)?;
                Ok(StoredResult {
                    kind: r.get(0)?,
                    status: r.get(1)?,
                    result: json.and_then(|j| serde_json::from_str(&j).ok()),
                    error: r.get(3)?,
                    model: r.get(4)?,
                    created_at: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    pub async fn has_current_results(&self, key: ResultKey) -> Result<bool, StoreError> {
        self.call(move |db| db.has_current_results(&key)).await
    }

    pub async fn results_for(&self, key: ResultKey) -> Result<Vec<StoredResult>, StoreError> {
        self.call(move |db| db.results_for(&key)).await
    }
}

/// One result; a failure never replaces a valid result under the same key.
fn put_result(
    tx: &Transaction<'_>,
    run_id: i64,
    key: &ResultKey,
    r: &ResultRow,
    at: &str,
) -> Result<(), StoreError> {
    let (status, json, failure) = match &r.outcome {
        Ok(v) => (ResultStatus::Ok, Some(v.to_string()), None),
        Err(f) => (ResultStatus::Failed, None, Some(f)),
    };
    tx.prepare_cached(
        "INSERT INTO results (restaurant_id, kind, input_hash, prompt_version, model, status,
                              result_json, error, error_class, attempts, run_id, created_at,
                              answered_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (restaurant_id, kind, input_hash, prompt_version, model) DO UPDATE SET
             status = excluded.status, result_json = excluded.result_json, error = excluded.error,
             error_class = excluded.error_class, answered_by = excluded.answered_by,
             attempts = excluded.attempts, run_id = excluded.run_id, created_at = excluded.created_at
         WHERE results.status = 'failed' OR excluded.status = 'ok'",
    )?
    .execute(params![
        key.restaurant_id, r.kind, key.input_hash, key.prompt_version, key.model, status,
        json, failure.map(|f| cap_text(&f.message)), failure.map(|f| f.class), r.attempts, run_id, at,
        r.answered_by
    ])?;
    Ok(())
}

fn put_analysis(
    tx: &Transaction<'_>,
    run_id: i64,
    a: &AnalysisMetrics,
    at: &str,
) -> Result<(), StoreError> {
    let status = match a.failure {
        None => ResultStatus::Ok,
        Some(_) => ResultStatus::Failed,
    };
    let failure = a.failure.as_ref();
    tx.prepare_cached(
        "INSERT INTO analysis_metrics (run_id, restaurant_id, kind, outcome, failure_reason, attempts,
             processing_ms, prompt_tokens, completion_tokens, reviews_total, reviews_selected,
             est_tokens_all_reviews, est_tokens_selected, created_at, failure_group, error_class,
             output_chars, empty)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        run_id, a.restaurant_id, a.kind, status, failure.map(|f| cap_text(&f.message)), a.attempts,
        a.processing_ms, a.prompt_tokens as i64, a.completion_tokens as i64,
        a.reviews_total as i64, a.reviews_selected as i64, a.est_tokens_all_reviews as i64,
        a.est_tokens_selected as i64, at, failure.map(|f| &f.group), failure.map(|f| f.class),
        a.output_chars as i64, a.empty
    ])?;
    Ok(())
}

fn put_request(
    tx: &Transaction<'_>,
    run_id: i64,
    m: &RequestMetrics,
    sla: &Sla,
) -> Result<(), StoreError> {
    let status = if m.ok {
        RequestStatus::Ok
    } else {
        RequestStatus::Error
    };
    tx.prepare_cached(
        "INSERT INTO vllm_metrics (run_id, restaurant_id, kind, attempt, request_id, endpoint, model,
             status, error_class, error, finish_reason, queue_ms, ttft_ms, e2e_ms, tpot_ms, itl_mean_ms,
             tokens_per_s, prompt_tokens, completion_tokens, cached_tokens, server_prompt_ms,
             server_decode_ms, started_at, retry, priority, est_prefill_tokens, itl_p95_ms,
             server_queue_ms, prefill_ms, decode_ms, meets_sla)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
    )?
    .execute(params![
        run_id,
        m.restaurant_id,
        m.kind,
        m.attempt,
        m.request_id,
        m.endpoint,
        m.model,
        status,
        m.error_class,
        m.error.as_deref().map(cap_text),
        m.finish_reason,
        m.queue_ms,
        m.ttft_ms,
        m.e2e_ms,
        m.tpot_ms(),
        m.itl_mean_ms,
        m.tokens_per_s(),
        m.prompt_tokens.map(|v| v as i64),
        m.completion_tokens.map(|v| v as i64),
        m.cached_tokens.map(|v| v as i64),
        m.server_prompt_ms,
        m.server_decode_ms,
        m.started_at,
        m.retry,
        m.priority,
        m.est_prefill_tokens.map(|v| v as i64),
        m.itl_p95_ms,
        m.server_queue_ms,
        m.prefill_ms(),
        m.decode_ms(),
        m.meets(sla)
    ])?;
    Ok(())
}
