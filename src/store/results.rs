//! Runs, analysis results and the metrics tables.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now, StoreError};
use crate::metrics::{AnalysisMetrics, ErrorClass, RequestMetrics, RunSummary, Sla};

/// The key results are versioned by: a result is current only if all of these match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultKey {
    pub restaurant_id: String,
    pub input_hash: String,
    pub prompt_version: String,
    pub model: String,
}

/// One analysis outcome to store: `Ok(json)` is a validated result, `Err(reason)` a failure.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub kind: &'static str,
    pub outcome: Result<String, String>,
    /// Why it failed, when it did.
    pub error_class: Option<ErrorClass>,
    pub attempts: u32,
    /// The model whose answer this is, when one answered.
    pub answered_by: Option<String>,
}

pub fn start_run(
    conn: &Connection,
    job_name: &str,
    command: &str,
    model: &str,
    config_json: &str,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO runs (job_name, command, model, started_at, status, config_json)
         VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
        params![job_name, command, model, now(), config_json],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    status: &str,
    s: &RunSummary,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE runs SET finished_at = ?2, status = ?3, restaurants_done = ?4, restaurants_skipped = ?5,
             restaurants_failed = ?6, requests = ?7, prompt_tokens = ?8, completion_tokens = ?9, wall_ms = ?10,
             summary_json = ?11
         WHERE run_id = ?1",
        params![
            run_id, now(), status, s.restaurants_done as i64, s.restaurants_skipped as i64,
            s.restaurants_failed as i64, s.requests as i64, s.prompt_tokens as i64,
            s.completion_tokens as i64, s.wall_ms, serde_json::to_string(s).ok()
        ],
    )?;
    Ok(())
}

/// True when all of `kinds` are settled under `key`: a valid result, or a failure that the same
/// input, prompts and model would only repeat (invalid output, context too long). The restaurant
/// can then be skipped; failures from transient or permanent request errors are retried.
pub fn has_current_results(
    conn: &Connection,
    key: &ResultKey,
    kinds: &[&str],
) -> Result<bool, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT count(*) FROM results WHERE restaurant_id = ?1 AND input_hash = ?2
         AND prompt_version = ?3 AND model = ?4
         AND (status = 'ok' OR error_class IN ('invalid_output', 'context_length'))",
    )?;
    let n: i64 = q.query_row(
        params![
            key.restaurant_id,
            key.input_hash,
            key.prompt_version,
            key.model
        ],
        |r| r.get(0),
    )?;
    Ok(n as usize >= kinds.len())
}

/// Writes a restaurant's analyses, their metrics and its requests' metrics in one transaction,
/// so a killed run never leaves a result without its metrics. A failure never replaces a valid
/// result stored under the same key.
pub fn put_analysis(
    conn: &mut Connection,
    run_id: i64,
    key: &ResultKey,
    rows: &[ResultRow],
    analyses: &[AnalysisMetrics],
    requests: &[RequestMetrics],
    sla: &Sla,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let at = now();
    for r in rows {
        let (json, err, status) = match &r.outcome {
            Ok(j) => (Some(j.as_str()), None, "ok"),
            Err(e) => (None, Some(e.as_str()), "failed"),
        };
        tx.execute(
            "INSERT INTO results (restaurant_id, kind, input_hash, prompt_version, model, status,
                                  result_json, error, error_class, attempts, run_id, created_at,
                                  answered_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?12, ?9, ?10, ?11, ?13)
             ON CONFLICT (restaurant_id, kind, input_hash, prompt_version, model) DO UPDATE SET
                 status = excluded.status, result_json = excluded.result_json, error = excluded.error,
                 error_class = excluded.error_class, answered_by = excluded.answered_by,
                 attempts = excluded.attempts, run_id = excluded.run_id, created_at = excluded.created_at
             WHERE results.status = 'failed' OR excluded.status = 'ok'",
            params![
                key.restaurant_id, r.kind, key.input_hash, key.prompt_version, key.model, status,
                json, err, r.attempts, run_id, at, r.error_class.map(|c| c.as_str()),
                r.answered_by
            ],
        )?;
    }
    for a in analyses {
        tx.execute(
            "INSERT INTO analysis_metrics (run_id, restaurant_id, kind, outcome, failure_reason, attempts,
                 processing_ms, prompt_tokens, completion_tokens, reviews_total, reviews_selected,
                 est_tokens_all_reviews, est_tokens_selected, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                run_id, a.restaurant_id, a.kind, if a.ok { "ok" } else { "failed" }, a.failure_reason,
                a.attempts, a.processing_ms, a.prompt_tokens as i64, a.completion_tokens as i64,
                a.reviews_total as i64, a.reviews_selected as i64, a.est_tokens_all_reviews as i64,
                a.est_tokens_selected as i64, at
            ],
        )?;
    }
    for m in requests {
        put_request(&tx, run_id, m, sla)?;
    }
    tx.commit()?;
    Ok(())
}

fn put_request(
    conn: &Connection,
    run_id: i64,
    m: &RequestMetrics,
    sla: &Sla,
) -> Result<(), StoreError> {
    let mut q = conn.prepare_cached(
        "INSERT INTO vllm_metrics (run_id, restaurant_id, kind, attempt, request_id, endpoint, model,
             status, error_class, error, finish_reason, queue_ms, ttft_ms, e2e_ms, tpot_ms, itl_mean_ms,
             tokens_per_s, prompt_tokens, completion_tokens, cached_tokens, server_prompt_ms,
             server_decode_ms, started_at, retry, priority, est_prefill_tokens, itl_p95_ms,
             server_queue_ms, prefill_ms, decode_ms, meets_sla)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
    )?;
    q.execute(params![
        run_id,
        m.restaurant_id,
        m.kind,
        m.attempt,
        m.request_id,
        m.endpoint,
        m.model,
        if m.ok { "ok" } else { "error" },
        m.error_class.map(|c| c.as_str()),
        m.error,
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

/// Server-side samples of a run (see `metrics::scrape`).
pub fn put_samples(
    conn: &mut Connection,
    run_id: i64,
    samples: &[crate::metrics::scrape::Sample],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut q = tx.prepare_cached(
            "INSERT INTO server_metrics (run_id, source, at, name, labels, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for s in samples {
            q.execute(params![run_id, s.source, s.at, s.name, s.labels, s.value])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A stored result as `palate analyze` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredResult {
    pub kind: String,
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub model: String,
    pub created_at: String,
}

/// The results stored under `key`, one per kind.
pub fn results_for(conn: &Connection, key: &ResultKey) -> Result<Vec<StoredResult>, StoreError> {
    let mut q = conn.prepare(
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

/// Status of the newest run, if any (used by tests and `palate run` resume logging).
pub fn last_run_status(conn: &Connection) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT run_id, status FROM runs ORDER BY run_id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}
