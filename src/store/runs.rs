//! Run records, server-side samples, and the queries behind `palate report`.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Db, Store, StoreError};
use crate::domain::{
    cap_text, now, ErrorClass, Failure, Kind, RequestStatus, ResultStatus, RunStatus,
};
use crate::metrics::scrape::{Sample, SampleSink};
use crate::metrics::{AnalysisMetrics, RequestMetrics, RunSummary};

/// What a run is, recorded when it starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub job_name: String,
    /// `run` or `analyze`.
    pub command: &'static str,
    pub model: String,
    /// The validated configuration as JSON, secrets shown as `***`.
    pub config_json: String,
}

/// A run's record.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: i64,
    pub job_name: String,
    pub command: String,
    pub model: String,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Wall time, once finished.
    pub wall_ms: Option<f64>,
    /// The summary written when it finished; `None` for a run that stopped before.
    pub summary: Option<RunSummary>,
}

/// One day of the `daily_metrics` view.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: String,
    pub requests: i64,
    pub good: i64,
    pub sla_compliance_pct: Option<f64>,
    pub goodput_rps: Option<f64>,
    pub ttft_mean_ms: Option<f64>,
}

/// One day of the `daily_quality` view.
#[derive(Debug, Clone, Serialize)]
pub struct QualityDay {
    pub day: String,
    pub analyses: i64,
    pub valid_pct: Option<f64>,
    pub degenerate: i64,
    pub wrong_language: i64,
    pub no_strengths: i64,
    pub summary_chars: Option<f64>,
    pub strengths_chars: Option<f64>,
}

/// A stored request with when it started and whether it met the SLA of its run.
pub type StoredRequest = (String, RequestMetrics, bool);

impl Db {
    pub fn start_run(&self, r: &RunStart) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO runs (job_name, command, model, started_at, status, config_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.job_name,
                r.command,
                r.model,
                now(),
                RunStatus::Running,
                r.config_json
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        s: &RunSummary,
    ) -> Result<(), StoreError> {
        self.conn.execute(
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

    /// Marks a run failed with the error that ended it.
    pub fn fail_run(&self, run_id: i64, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, status = ?3, error = ?4 WHERE run_id = ?1",
            params![run_id, now(), RunStatus::Failed, cap_text(error)],
        )?;
        Ok(())
    }

    /// Runs still `running` when the caller holds the database lock exclusively: their process
    /// is gone (killed, crashed, power lost). Marks them failed and returns their ids.
    pub fn fail_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        let mut q = self.conn.prepare(
            "UPDATE runs SET status = ?1, error = 'abandoned: its process ended without finishing it (killed or crashed)'
             WHERE status = ?2 RETURNING run_id",
        )?;
        let ids = q.query_map(params![RunStatus::Failed, RunStatus::Running], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// Server-side samples of a run (see `metrics::scrape`).
    pub fn put_samples(&mut self, run_id: i64, samples: &[Sample]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
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

    /// The newest run, or `run_id`.
    pub fn run(&self, run_id: Option<i64>) -> Result<Option<RunRecord>, StoreError> {
        let q = "SELECT run_id, job_name, command, model, status, started_at, finished_at, wall_ms, summary_json
                 FROM runs WHERE (?1 IS NULL OR run_id = ?1) ORDER BY run_id DESC LIMIT 1";
        Ok(self
            .conn
            .query_row(q, params![run_id], |r| {
                let summary: Option<String> = r.get(8)?;
                Ok(RunRecord {
                    run_id: r.get(0)?,
                    job_name: r.get(1)?,
                    command: r.get(2)?,
                    model: r.get(3)?,
                    status: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                    wall_ms: r.get(7)?,
                    summary: summary.and_then(|j| serde_json::from_str(&j).ok()),
                })
            })
            .optional()?)
    }

    /// A run's requests in start order, with what charts and summaries need.
    pub fn run_requests(&self, run_id: i64) -> Result<Vec<StoredRequest>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT started_at, kind, status, coalesce(meets_sla, 0), queue_ms, ttft_ms, e2e_ms,
                    completion_tokens, prompt_tokens, cached_tokens, itl_mean_ms
             FROM vllm_metrics WHERE run_id = ?1 ORDER BY started_at, id",
        )?;
        let rows = q.query_map([run_id], |r| {
            let m = RequestMetrics {
                kind: r.get(1)?,
                ok: r.get::<_, RequestStatus>(2)? == RequestStatus::Ok,
                queue_ms: r.get(4)?,
                ttft_ms: r.get(5)?,
                e2e_ms: r.get(6)?,
                completion_tokens: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                prompt_tokens: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                cached_tokens: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                itl_mean_ms: r.get(10)?,
                ..Default::default()
            };
            Ok((r.get(0)?, m, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run's analyses, as far as a summary needs them.
    pub fn run_analyses(&self, run_id: i64) -> Result<Vec<AnalysisMetrics>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT restaurant_id, kind, outcome, failure_reason, failure_group, error_class,
                    est_tokens_all_reviews, est_tokens_selected, coalesce(output_chars, 0),
                    coalesce(empty, 0)
             FROM analysis_metrics WHERE run_id = ?1",
        )?;
        let rows = q.query_map([run_id], |r| {
            let failed = r.get::<_, ResultStatus>(2)? == ResultStatus::Failed;
            let message: Option<String> = r.get(3)?;
            let group: Option<String> = r.get(4)?;
            let class: Option<ErrorClass> = r.get(5)?;
            Ok(AnalysisMetrics {
                restaurant_id: r.get(0)?,
                kind: r.get::<_, Kind>(1)?,
                failure: failed.then(|| stored_failure(message, group, class)),
                est_tokens_all_reviews: r.get::<_, i64>(6)? as u64,
                est_tokens_selected: r.get::<_, i64>(7)? as u64,
                output_chars: r.get::<_, i64>(8)? as usize,
                empty: r.get(9)?,
                ..Default::default()
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run's server samples summed over labels (endpoints, GPUs): (time, name, value); a
    /// GPU's utilisation is the mean over GPUs and its temperature the hottest.
    pub fn run_samples(&self, run_id: i64) -> Result<Vec<(String, String, f64)>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT at, name, CASE name WHEN 'gpu_utilization_percent' THEN avg(value)
                    WHEN 'gpu_temperature_celsius' THEN max(value) ELSE sum(value) END
             FROM server_metrics WHERE run_id = ?1 GROUP BY at, name ORDER BY at",
        )?;
        let rows = q.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last `days` days of `daily_metrics`, newest first.
    pub fn daily(&self, days: u32) -> Result<Vec<Day>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT day, requests, good, sla_compliance_pct, goodput_rps, ttft_mean_ms FROM daily_metrics
             WHERE day >= date('now', '-' || ?1 || ' days') ORDER BY day DESC",
        )?;
        let rows = q.query_map([days], |r| {
            Ok(Day {
                day: r.get(0)?,
                requests: r.get(1)?,
                good: r.get(2)?,
                sla_compliance_pct: r.get(3)?,
                goodput_rps: r.get(4)?,
                ttft_mean_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Db {
    /// The last `days` days of `daily_quality`, newest first.
    pub fn daily_quality(&self, days: u32) -> Result<Vec<QualityDay>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT day, analyses, valid_pct, degenerate, wrong_language, no_strengths,
                    summary_chars, strengths_chars FROM daily_quality
             WHERE day >= date('now', '-' || ?1 || ' days') ORDER BY day DESC",
        )?;
        let rows = q.query_map([days], |r| {
            Ok(QualityDay {
                day: r.get(0)?,
                analyses: r.get(1)?,
                valid_pct: r.get(2)?,
                degenerate: r.get(3)?,
                wrong_language: r.get(4)?,
                no_strengths: r.get(5)?,
                summary_chars: r.get(6)?,
                strengths_chars: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A failure as stored. Rows written before migration 3 have no group or class: they count
/// under their message, as permanent.
fn stored_failure(
    message: Option<String>,
    group: Option<String>,
    class: Option<ErrorClass>,
) -> Failure {
    let message = message.unwrap_or_else(|| "unknown".into());
    Failure {
        class: class.unwrap_or(ErrorClass::Permanent),
        group: group.unwrap_or_else(|| message.clone()),
        message,
    }
}

impl Store {
    pub async fn start_run(&self, r: RunStart) -> Result<i64, StoreError> {
        self.call(move |db| db.start_run(&r)).await
    }

    pub async fn fail_run(&self, run_id: i64, error: String) -> Result<(), StoreError> {
        self.call(move |db| db.fail_run(run_id, &error)).await
    }

    pub async fn fail_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        self.call(|db| db.fail_abandoned_runs()).await
    }

    pub async fn finish_run(
        &self,
        run_id: i64,
        status: RunStatus,
        summary: RunSummary,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.finish_run(run_id, status, &summary))
            .await
    }
}

#[async_trait::async_trait]
impl SampleSink for Store {
    async fn put_samples(&self, run_id: i64, samples: Vec<Sample>) -> Result<(), String> {
        self.call(move |db| db.put_samples(run_id, &samples))
            .await
            .map_err(|e| e.to_string())
    }
}
