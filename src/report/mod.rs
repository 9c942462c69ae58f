//! report: a run's metrics as people read them. `palate report` prints a table (throughput,
//! goodput, SLA compliance, latency percentiles, token savings, cost, failures by reason);
//! `--html FILE` writes one self-contained page of SVG charts ([`html`]); `--daily` prints the
//! `daily_metrics` view. `--results FILE` writes a page of the analyses themselves, a card per
//! restaurant ([`results`]).

pub mod breakdown;
pub mod compare;
pub mod html;
pub mod results;

use serde::Serialize;

use crate::metrics::{fmt_ms, Quality, RequestMetrics, RunSummary, RunTally};
use crate::store::{Day, Db, QualityDay, StoreError};
pub use breakdown::{GpuStats, KindStats};

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

impl RequestPoint {
    fn new(t_s: f64, m: &RequestMetrics, meets_sla: bool) -> Self {
        Self {
            t_s,
            kind: m.kind.as_str().to_string(),
            ok: m.ok,
            meets_sla,
            queue_ms: m.queue_ms,
            ttft_ms: m.ttft_ms,
            tpot_ms: m.tpot_ms(),
            e2e_ms: m.e2e_ms,
            completion_tokens: m.completion_tokens.unwrap_or(0),
        }
    }
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
    pub kinds: Vec<KindStats>,
    pub gpu: Option<GpuStats>,
}

fn epoch_ms(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis() as f64)
}

/// The newest run, or `run_id`.
pub fn load(db: &Db, run_id: Option<i64>) -> Result<Option<RunReport>, StoreError> {
    let Some(rec) = db.run(run_id)? else {
        return Ok(None);
    };
    let rows = db.run_requests(rec.run_id)?;
    // Times are seconds from the run's first request (its start if it sent none).
    let first = (rows.iter().filter_map(|(at, _, _)| epoch_ms(at))).fold(f64::INFINITY, f64::min);
    let t0 = Some(first)
        .filter(|t| t.is_finite())
        .unwrap_or_else(|| epoch_ms(&rec.started_at).unwrap_or(0.0));
    let t_s = |at: &str| (epoch_ms(at).unwrap_or(t0) - t0) / 1000.0;
    let requests: Vec<RequestPoint> = rows
        .iter()
        .map(|(at, m, meets)| RequestPoint::new(t_s(at), m, *meets))
        .collect();
    let summary = match rec.summary {
        Some(s) => s,
        // A run that stopped before its summary was written: rebuilt from its rows.
        None => {
            let mut t = RunTally::default();
            rows.iter()
                .for_each(|(_, m, meets)| t.add_judged(m, *meets));
            db.run_analyses(rec.run_id)?
                .iter()
                .for_each(|a| t.add_analysis(a));
            t.finish(rec.wall_ms.unwrap_or(0.0), Default::default())
        }
    };
    let samples: Vec<SamplePoint> = db
        .run_samples(rec.run_id)?
        .into_iter()
        .map(|(at, name, value)| SamplePoint {
            t_s: t_s(&at),
            name,
            value,
        })
        .collect();
    let run = RunInfo {
        run_id: rec.run_id,
        job_name: rec.job_name,
        command: rec.command,
        model: rec.model,
        status: rec.status.to_string(),
        started_at: rec.started_at,
        finished_at: rec.finished_at,
    };
    let kinds = breakdown::by_kind(&requests, summary.analysis_ms);
    let gpu = breakdown::gpu(&samples);
    Ok(Some(RunReport {
        run,
        summary,
        requests,
        samples,
        kinds,
        gpu,
    }))
}

/// The GPU figures of run `run_id` from its samples alone (`[alerts]`).
pub fn run_gpu(db: &Db, run_id: i64) -> Result<Option<GpuStats>, StoreError> {
    let samples: Vec<SamplePoint> = (db.run_samples(run_id)?.into_iter())
        .map(|(_, name, value)| SamplePoint {
            t_s: 0.0,
            name,
            value,
        })
        .collect();
    Ok(breakdown::gpu(&samples))
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
    for (k, v) in totals(s) {
        out.push_str(&format!("{k:<12} {v}\n"));
    }
    out.push_str(&format!(
        "{:<12} {}\n",
        "GPU",
        breakdown::gpu_line(r.gpu.as_ref())
    ));
    out.push_str(&latencies(s));
    out.push_str(&breakdown::kinds_table(&r.kinds));
    if !s.failure_reasons.is_empty() {
        out.push_str("failures by reason\n");
        for (reason, n) in &s.failure_reasons {
            out.push_str(&format!("  {n:>4}× {reason}\n"));
        }
    }
    out
}

/// The table's counts, rates, tokens, cost and answer quality, one (label, line) each.
fn totals(s: &RunSummary) -> [(&'static str, String); 7] {
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
    [
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
                "{:.3} req/s · {:.1} output tokens/s · SLA compliance {:.1} %{sla}",
                s.goodput_rps, s.goodput_tokens_per_s, s.sla_compliance_pct
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
        ("quality", quality(&s.quality)),
    ]
}

fn quality(q: &Quality) -> String {
    let chars: Vec<String> = (q.mean_output_chars.iter())
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    format!(
        "{} degenerate · {} wrong language · {} with no strength · mean result chars: {}",
        q.degenerate,
        q.wrong_language,
        q.no_strengths,
        if chars.is_empty() {
            "-".into()
        } else {
            chars.join(", ")
        }
    )
}

/// p50/p95/p99 of each latency.
fn latencies(s: &RunSummary) -> String {
    let mut out = format!(
        "{:<12} {:>8} {:>8} {:>8}\n",
        "latency ms", "p50", "p95", "p99"
    );
    for (name, p) in [
        ("TTFT", s.ttft_ms),
        ("TPOT", s.tpot_ms),
        ("ITL", s.itl_ms),
        ("E2E", s.e2e_ms),
        ("queue", s.queue_ms),
    ] {
        out.push_str(&format!(
            "  {name:<10} {:>8} {:>8} {:>8}\n",
            fmt_ms(p.p50, ""),
            fmt_ms(p.p95, ""),
            fmt_ms(p.p99, "")
        ));
    }
    out
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
            fmt_ms(d.ttft_mean_ms, "")
        ));
    }
    out
}

/// Answer quality per day: the drift a nightly run shows.
pub fn quality_table(days: &[QualityDay]) -> String {
    let mut out = format!(
        "{:<10} {:>9} {:>7} {:>11} {:>9} {:>12} {:>14} {:>16}\n",
        "day",
        "analyses",
        "valid",
        "degenerate",
        "language",
        "no strength",
        "summary chars",
        "strengths chars"
    );
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for d in days {
        out.push_str(&format!(
            "{:<10} {:>9} {:>6}% {:>11} {:>9} {:>12} {:>14} {:>16}\n",
            d.day,
            d.analyses,
            d.valid_pct.map_or("-".into(), |v| format!("{v:.1}")),
            d.degenerate,
            d.wrong_language,
            d.no_strengths,
            opt(d.summary_chars),
            opt(d.strengths_chars)
        ));
    }
    out
}
