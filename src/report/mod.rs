//! report: a run's metrics as people read them. `palate report` prints a table (throughput,
//! goodput, SLA compliance, latency percentiles, token savings, cost, failures by reason);
//! `--html FILE` writes one self-contained page of SVG charts ([`html`]); `--daily` prints the
//! `daily_metrics` view.

pub mod html;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::metrics::{AnalysisMetrics, RequestMetrics, RunSummary, RunTally};
use crate::store::StoreError;

/// A run's record.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_id: i64,
    pub job_name: String,
    pub command: String,
    pub model: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// One HTTP attempt, as charts need it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestPoint {
    /// Seconds from the run's first request to this attempt's start.
    pub t_s: f64,
    pub kind: String,
    pub ok: bool,
    pub meets_sla: bool,
    pub queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: f64,
    pub completion_tokens: u64,
}

/// A server-side sample (`server_metrics`), timed like [`RequestPoint`].
#[derive(Debug, Clone, Serialize)]
pub struct SamplePoint {
    pub t_s: f64,
    pub name: String,
    pub value: f64,
}

/// Everything the table and the charts show.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: RunInfo,
    pub summary: RunSummary,
    pub requests: Vec<RequestPoint>,
    pub samples: Vec<SamplePoint>,
}

fn millis(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis() as f64)
}

/// The newest run, or `run_id`.
pub fn load(conn: &Connection, run_id: Option<i64>) -> Result<Option<RunReport>, StoreError> {
    let q = "SELECT run_id, job_name, command, model, status, started_at, finished_at, wall_ms, summary_json
             FROM runs WHERE (?1 IS NULL OR run_id = ?1) ORDER BY run_id DESC LIMIT 1";
    let row = conn
        .query_row(q, params![run_id], |r| {
            Ok((
                RunInfo {
                    run_id: r.get(0)?,
                    job_name: r.get(1)?,
                    command: r.get(2)?,
                    model: r.get(3)?,
                    status: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                },
                r.get::<_, Option<f64>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })
        .optional()?;
    let Some((run, wall_ms, summary_json)) = row else {
        return Ok(None);
    };
    let mut q = conn.prepare(
        "SELECT started_at, kind, status, coalesce(meets_sla, 0), queue_ms, ttft_ms, e2e_ms,
                completion_tokens, prompt_tokens, cached_tokens, itl_mean_ms
         FROM vllm_metrics WHERE run_id = ?1 ORDER BY started_at, id",
    )?;
    let rows = q.query_map([run.run_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            RequestMetrics {
                kind: r.get(1)?,
                ok: r.get::<_, String>(2)? == "ok",
                queue_ms: r.get(4)?,
                ttft_ms: r.get(5)?,
                e2e_ms: r.get(6)?,
                completion_tokens: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                prompt_tokens: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                cached_tokens: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                itl_mean_ms: r.get(10)?,
                ..Default::default()
            },
            r.get::<_, bool>(3)?,
        ))
    })?;
    let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
    let t0 = rows
        .iter()
        .filter_map(|(at, _, _)| millis(at))
        .fold(f64::INFINITY, f64::min);
    let t0 = if t0.is_finite() {
        t0
    } else {
        millis(&run.started_at).unwrap_or(0.0)
    };
    let requests: Vec<RequestPoint> = rows
        .iter()
        .map(|(at, m, meets)| RequestPoint {
            t_s: (millis(at).unwrap_or(t0) - t0) / 1000.0,
            kind: m.kind.clone(),
            ok: m.ok,
            meets_sla: *meets,
            queue_ms: m.queue_ms,
            ttft_ms: m.ttft_ms,
            tpot_ms: m.tpot_ms(),
            e2e_ms: m.e2e_ms,
            completion_tokens: m.completion_tokens.unwrap_or(0),
        })
        .collect();
    let summary = match summary_json.and_then(|j| serde_json::from_str(&j).ok()) {
        Some(s) => s,
        // A run that stopped before its summary was written: rebuilt from its requests.
        None => {
            let mut t = RunTally::default();
            rows.iter()
                .for_each(|(_, m, meets)| t.add_judged(m, *meets));
            for a in analyses(conn, run.run_id)? {
                t.add_analysis(&a);
            }
            t.finish(wall_ms.unwrap_or(0.0), Default::default())
        }
    };
    let mut q = conn.prepare(
        "SELECT at, name, sum(value) FROM server_metrics WHERE run_id = ?1
         GROUP BY at, name ORDER BY at",
    )?;
    let samples = q
        .query_map([run.run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(at, name, value)| SamplePoint {
            t_s: (millis(&at).unwrap_or(t0) - t0) / 1000.0,
            name,
            value,
        })
        .collect();
    Ok(Some(RunReport {
        run,
        summary,
        requests,
        samples,
    }))
}

fn analyses(conn: &Connection, run_id: i64) -> Result<Vec<AnalysisMetrics>, StoreError> {
    let mut q = conn.prepare(
        "SELECT restaurant_id, kind, outcome, failure_reason, est_tokens_all_reviews, est_tokens_selected
         FROM analysis_metrics WHERE run_id = ?1",
    )?;
    let rows = q.query_map([run_id], |r| {
        Ok(AnalysisMetrics {
            restaurant_id: r.get(0)?,
            kind: r.get(1)?,
            ok: r.get::<_, String>(2)? == "ok",
            failure_reason: r.get(3)?,
            est_tokens_all_reviews: r.get::<_, i64>(4)? as u64,
            est_tokens_selected: r.get::<_, i64>(5)? as u64,
            ..Default::default()
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// The terminal table.
pub fn table(r: &RunReport) -> String {
    let s = &r.summary;
    let run = &r.run;
    let mut out = format!(
        "run {} · {} · {} · {} · {}\n  {} → {} ({:.1} s; analysis {:.1} s)\n",
        run.run_id,
        run.job_name,
        run.command,
        run.model,
        run.status,
        run.started_at,
        run.finished_at.as_deref().unwrap_or("-"),
        s.wall_ms / 1000.0,
        s.analysis_ms / 1000.0
    );
    let sla = s.sla.map_or(String::new(), |l| {
        let e2e = l
            .e2e_ms
            .map_or(String::new(), |e| format!(", E2E ≤ {e:.0} ms"));
        format!(
            " (TTFT ≤ {:.0} ms, TPOT ≤ {:.0} ms{e2e})",
            l.ttft_ms, l.tpot_ms
        )
    });
    let cost = match (s.cost_usd, s.usd_per_1k_tokens) {
        (Some(c), Some(k)) => format!("${c:.4} · ${k:.6} per 1k tokens"),
        (Some(c), None) => format!("${c:.4}"),
        _ => "no GPU price set ([cost] gpu_usd_per_hour)".into(),
    };
    let rows = [
        (
            "restaurants",
            format!(
                "{} done · {} skipped · {} failed",
                s.restaurants_done, s.restaurants_skipped, s.restaurants_failed
            ),
        ),
        (
            "analyses",
            format!("{} ok · {} failed", s.analyses_ok, s.analyses_failed),
        ),
        (
            "throughput",
            format!(
                "{} requests ({} failed) · {:.3} req/s · {:.1} output tokens/s",
                s.requests, s.requests_failed, s.requests_per_s, s.output_tokens_per_s
            ),
        ),
        (
            "goodput",
            format!(
                "{:.3} req/s · SLA compliance {:.1} %{sla}",
                s.goodput_rps, s.sla_compliance_pct
            ),
        ),
        (
            "tokens",
            format!(
                "{} prompt ({} cached) · {} output · {} saved by selection",
                s.prompt_tokens, s.cached_tokens, s.completion_tokens, s.tokens_saved_by_selection
            ),
        ),
        ("cost", cost),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:<12} {v}\n"));
    }
    out.push_str(&format!(
        "{:<12} {:>8} {:>8} {:>8}\n",
        "latency ms", "p50", "p95", "p99"
    ));
    for (name, p) in [
        ("TTFT", s.ttft_ms),
        ("TPOT", s.tpot_ms),
        ("ITL", s.itl_ms),
        ("E2E", s.e2e_ms),
        ("queue", s.queue_ms),
    ] {
        out.push_str(&format!(
            "  {name:<10} {:>8} {:>8} {:>8}\n",
            ms(p.p50),
            ms(p.p95),
            ms(p.p99)
        ));
    }
    if !s.failure_reasons.is_empty() {
        out.push_str("failures by reason\n");
        for (reason, n) in &s.failure_reasons {
            out.push_str(&format!("  {n:>4}× {reason}\n"));
        }
    }
    out
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

/// The last `days` days of `daily_metrics`, newest first.
pub fn daily(conn: &Connection, days: u32) -> Result<Vec<Day>, StoreError> {
    let mut q = conn.prepare(
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

pub fn daily_table(days: &[Day]) -> String {
    let mut out = format!(
        "{:<10} {:>9} {:>7} {:>11} {:>12} {:>10}\n",
        "day", "requests", "good", "compliance", "goodput r/s", "TTFT mean"
    );
    for d in days {
        out.push_str(&format!(
            "{:<10} {:>9} {:>7} {:>10}% {:>12} {:>10}\n",
            d.day,
            d.requests,
            d.good,
            d.sla_compliance_pct
                .map_or("-".into(), |v| format!("{v:.1}")),
            d.goodput_rps.map_or("-".into(), |v| format!("{v:.3}")),
            ms(d.ttft_mean_ms)
        ));
    }
    out
}
