//! `palate report --compare A B`: two runs' figures side by side with their deltas — the A/B of a
//! server flag, a model or a prompt version. Each row knows which direction is better, so the
//! delta says whether B improved on A.

use serde::Serialize;

use super::{GpuStats, KindStats, RunReport};
use crate::metrics::RunSummary;

/// Which way a figure should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
    /// A count whose change is neither good nor bad (requests, tokens).
    Neither,
}

/// One figure of both runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub better: Better,
}

impl Row {
    /// B − A.
    pub fn delta(&self) -> Option<f64> {
        Some(self.b? - self.a?)
    }

    /// (B − A) ÷ A in percent; `None` when A is 0.
    pub fn delta_pct(&self) -> Option<f64> {
        let (a, d) = (self.a?, self.delta()?);
        (a != 0.0).then(|| 100.0 * d / a.abs())
    }

    /// `Some(true)` when B is better than A, `Some(false)` when worse, `None` when equal or
    /// neither.
    pub fn improved(&self) -> Option<bool> {
        let d = self.delta()?;
        match self.better {
            _ if d == 0.0 => None,
            Better::Higher => Some(d > 0.0),
            Better::Lower => Some(d < 0.0),
            Better::Neither => None,
        }
    }
}

/// Both runs and every row.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: super::RunInfo,
    pub b: super::RunInfo,
    pub rows: Vec<Row>,
}

fn row(label: impl Into<String>, a: Option<f64>, b: Option<f64>, better: Better) -> Row {
    Row {
        label: label.into(),
        a,
        b,
        better,
    }
}

/// The run-level figures, in the order of `palate report`'s table.
fn summary_rows(a: &RunSummary, b: &RunSummary) -> Vec<Row> {
    use Better::{Higher, Lower, Neither};
    let f = |label: &str, g: fn(&RunSummary) -> Option<f64>, better| row(label, g(a), g(b), better);
    let error_rate = |s: &RunSummary| {
        (s.requests > 0).then(|| 100.0 * s.requests_failed as f64 / s.requests as f64)
    };
    vec![
        f(
            "restaurants done",
            |s| Some(s.restaurants_done as f64),
            Neither,
        ),
        f(
            "restaurants failed",
            |s| Some(s.restaurants_failed as f64),
            Lower,
        ),
        f("analyses ok", |s| Some(s.analyses_ok as f64), Higher),
        f("analyses failed", |s| Some(s.analyses_failed as f64), Lower),
        f("requests", |s| Some(s.requests as f64), Neither),
        row("request error rate %", error_rate(a), error_rate(b), Lower),
        f("req/s", |s| Some(s.requests_per_s), Higher),
        f("output tokens/s", |s| Some(s.output_tokens_per_s), Higher),
        f("goodput req/s", |s| Some(s.goodput_rps), Higher),
        f("goodput tokens/s", |s| Some(s.goodput_tokens_per_s), Higher),
        f("SLA compliance %", |s| Some(s.sla_compliance_pct), Higher),
        f("TTFT p50 ms", |s| s.ttft_ms.p50, Lower),
        f("TTFT p95 ms", |s| s.ttft_ms.p95, Lower),
        f("TTFT p99 ms", |s| s.ttft_ms.p99, Lower),
        f("TPOT p50 ms", |s| s.tpot_ms.p50, Lower),
        f("TPOT p95 ms", |s| s.tpot_ms.p95, Lower),
        f("E2E p50 ms", |s| s.e2e_ms.p50, Lower),
        f("E2E p95 ms", |s| s.e2e_ms.p95, Lower),
        f("queue p95 ms", |s| s.queue_ms.p95, Lower),
        f("prompt tokens", |s| Some(s.prompt_tokens as f64), Neither),
        f("cached tokens", |s| Some(s.cached_tokens as f64), Higher),
        f(
            "output tokens",
            |s| Some(s.completion_tokens as f64),
            Neither,
        ),
        f("analysis s", |s| Some(s.analysis_ms / 1000.0), Lower),
        f("cost USD", |s| s.cost_usd, Lower),
    ]
}

/// A per-kind row: its label, how to read it, and which way is better.
type KindFigure = (&'static str, fn(&KindStats) -> Option<f64>, Better);

/// Per kind present in either run: its throughput and latency.
fn kind_rows(a: &[KindStats], b: &[KindStats]) -> Vec<Row> {
    use Better::{Higher, Lower};
    let mut kinds: Vec<&str> = a.iter().chain(b).map(|k| k.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let find = |v: &[KindStats], kind: &str| v.iter().find(|k| k.kind == kind).cloned();
    let figures: [KindFigure; 5] = [
        ("output tokens/s", |k| Some(k.output_tokens_per_s), Higher),
        ("goodput tokens/s", |k| Some(k.goodput_tokens_per_s), Higher),
        ("TTFT p95 ms", |k| k.ttft_ms.p95, Lower),
        ("TPOT p50 ms", |k| k.tpot_ms.p50, Lower),
        ("E2E p95 ms", |k| k.e2e_ms.p95, Lower),
    ];
    let mut rows = Vec::new();
    for kind in kinds {
        let (ka, kb) = (find(a, kind), find(b, kind));
        for (label, g, better) in figures {
            let v = |k: &Option<KindStats>| k.as_ref().and_then(g);
            rows.push(row(format!("{kind} {label}"), v(&ka), v(&kb), better));
        }
    }
    rows
}

/// A GPU row: its label, how to read it, and which way is better.
type GpuFigure = (&'static str, fn(&GpuStats) -> f64, Better);

pub fn compare(a: &RunReport, b: &RunReport) -> Comparison {
    use Better::{Higher, Lower};
    let mut rows = summary_rows(&a.summary, &b.summary);
    rows.extend(kind_rows(&a.kinds, &b.kinds));
    let gpu: [GpuFigure; 3] = [
        ("GPU utilisation mean %", |g| g.utilization_mean_pct, Higher),
        ("GPU idle share %", |g| g.idle_share_pct, Lower),
        ("GPU memory peak %", |g| g.memory_peak_pct, Lower),
    ];
    for (label, f, better) in gpu {
        rows.push(row(
            label,
            a.gpu.as_ref().map(f),
            b.gpu.as_ref().map(f),
            better,
        ));
    }
    Comparison {
        a: a.run.clone(),
        b: b.run.clone(),
        rows,
    }
}

/// A figure as the tables print it: three significant places at most.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The delta column: `+12.0 (+3.4 %) better`.
pub fn delta_text(r: &Row) -> String {
    let Some(d) = r.delta() else {
        return "-".into();
    };
    let pct = r
        .delta_pct()
        .map_or(String::new(), |p| format!(" ({p:+.1} %)"));
    let verdict = match r.improved() {
        Some(true) => " better",
        Some(false) => " worse",
        None => "",
    };
    let sign = if d > 0.0 { "+" } else { "" };
    format!("{sign}{}{pct}{verdict}", num(Some(d)))
}

/// The terminal table.
pub fn table(c: &Comparison) -> String {
    let head = |r: &super::RunInfo| format!("run {} ({}, {})", r.run_id, r.model, r.started_at);
    let mut out = format!("A: {}\nB: {}\n", head(&c.a), head(&c.b));
    out.push_str(&format!(
        "{:<32} {:>12} {:>12}  {}\n",
        "", "A", "B", "B − A"
    ));
    for r in &c.rows {
        out.push_str(&format!(
            "{:<32} {:>12} {:>12}  {}\n",
            r.label,
            num(r.a),
            num(r.b),
            delta_text(r)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_know_which_way_is_better() {
        let ttft = row("TTFT p95 ms", Some(800.0), Some(600.0), Better::Lower);
        assert_eq!(ttft.delta(), Some(-200.0));
        assert_eq!(ttft.delta_pct(), Some(-25.0));
        assert_eq!(ttft.improved(), Some(true));
        assert_eq!(delta_text(&ttft), "-200 (-25.0 %) better");
        let rps = row("req/s", Some(2.0), Some(1.5), Better::Higher);
        assert_eq!(rps.improved(), Some(false));
        assert_eq!(delta_text(&rps), "-0.500 (-25.0 %) worse");
        let n = row("requests", Some(0.0), Some(10.0), Better::Neither);
        assert_eq!((n.delta_pct(), n.improved()), (None, None));
        assert_eq!(delta_text(&n), "+10");
        let missing = row("cost USD", None, Some(1.0), Better::Lower);
        assert_eq!(delta_text(&missing), "-");
    }

    #[test]
    fn kinds_in_only_one_run_still_get_rows() {
        let k = |kind: &str, tps: f64| KindStats {
            kind: kind.into(),
            requests: 1,
            failed: 0,
            ttft_ms: Default::default(),
            tpot_ms: Default::default(),
            e2e_ms: Default::default(),
            output_tokens: 1,
            output_tokens_per_s: tps,
            goodput_rps: 0.0,
            goodput_tokens_per_s: 0.0,
            sla_compliance_pct: 0.0,
        };
        let rows = kind_rows(
            &[k("summary", 10.0)],
            &[k("strengths", 5.0), k("summary", 12.0)],
        );
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0].label, "strengths output tokens/s");
        assert_eq!((rows[0].a, rows[0].b), (None, Some(5.0)));
        assert_eq!((rows[5].a, rows[5].b), (Some(10.0), Some(12.0)));
    }
}
