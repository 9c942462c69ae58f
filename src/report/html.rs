//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched), so
//! it opens anywhere without a network. Charts: latency distributions (TTFT, TPOT, E2E), TTFT over
//! time against the SLA, throughput and requests completed over time, queue depth (palate's queue, requests in flight,
//! the server's waiting queue where it was scraped) and SLA compliance over time.

mod charts;

use charts::{esc, histogram, lines, scatter, Series};

use super::{table, RunReport};

/// Series colours; each chart's own, so a rendering test can find every chart by its colour.
pub const COLORS: [(&str, &str); 10] = [
    ("ttft-hist", "#1f77b4"),
    ("tpot-hist", "#ff7f0e"),
    ("e2e-hist", "#2ca02c"),
    ("ttft-time", "#d62728"),
    ("throughput", "#9467bd"),
    ("queue", "#8c564b"),
    ("in-flight", "#e377c2"),
    ("server-waiting", "#7f7f7f"),
    ("requests", "#bcbd22"),
    ("compliance", "#17becf"),
];

/// Bucket width for time series: about 60 buckets over the run, at least one second.
fn buckets(r: &RunReport) -> (f64, usize) {
    let end = r
        .requests
        .iter()
        .map(|q| q.t_s + q.e2e_ms / 1000.0)
        .fold(0.0, f64::max);
    let width = (end / 60.0).max(1.0);
    (width, (end / width).ceil() as usize + 1)
}

pub fn page(r: &RunReport) -> String {
    let charts = latency_charts(r).into_iter().chain(time_charts(r));
    let mut html = head(r);
    for c in charts {
        html.push_str(&c);
        html.push('\n');
    }
    html.push_str("</div></body></html>\n");
    html
}

/// Latency distributions (TTFT, TPOT, E2E) and TTFT over time against the SLA.
fn latency_charts(r: &RunReport) -> [String; 4] {
    let q = &r.requests;
    let ttft: Vec<f64> = q.iter().filter_map(|x| x.ttft_ms).collect();
    let tpot: Vec<f64> = q.iter().filter_map(|x| x.tpot_ms).collect();
    let e2e: Vec<f64> = q.iter().filter(|x| x.ok).map(|x| x.e2e_ms).collect();
    let ttft_t: Vec<(f64, f64)> = q
        .iter()
        .filter_map(|x| x.ttft_ms.map(|t| (x.t_s, t)))
        .collect();
    let sla = r.summary.sla.map(|s| s.ttft_ms);
    [
        histogram("ttft-hist", "TTFT distribution", &ttft),
        histogram("tpot-hist", "TPOT distribution", &tpot),
        histogram("e2e-hist", "End-to-end latency distribution", &e2e),
        scatter("ttft-time", "TTFT over time", &ttft_t, sla),
    ]
}

/// Throughput, requests completed, queue depth and SLA compliance over time.
fn time_charts(r: &RunReport) -> [String; 4] {
    let tl = Timeline::new(r);
    [
        lines(
            "Throughput over time",
            "output tokens/s",
            &[("throughput", "output tokens/s", tl.series(&tl.tokens))],
        ),
        lines(
            "Requests completed over time",
            "requests/s",
            &[("requests", "requests/s", tl.series(&tl.done))],
        ),
        lines("Queue depth", "requests", &queue_depth(r, &tl)),
        lines(
            "SLA compliance over time",
            "% of requests",
            &[("compliance", "meeting every SLA", tl.compliance())],
        ),
    ]
}

/// Per-bucket counts over the run (see [`buckets`]).
struct Timeline {
    /// Bucket width, seconds.
    width: f64,
    /// Buckets.
    n: usize,
    /// Output tokens per second of the requests ending in each bucket.
    tokens: Vec<f64>,
    /// Requests per second ending in each bucket.
    done: Vec<f64>,
    /// Requests starting in each bucket.
    started: Vec<f64>,
    /// Of those, the ones meeting every SLA.
    good: Vec<f64>,
}

impl Timeline {
    fn new(r: &RunReport) -> Self {
        let (w, n) = buckets(r);
        let mut tokens = vec![0.0; n];
        let mut done = vec![0.0; n];
        let mut started = vec![0.0; n];
        let mut good = vec![0.0; n];
        for x in &r.requests {
            let end = ((x.t_s + x.e2e_ms / 1000.0) / w) as usize;
            if let Some(b) = tokens.get_mut(end) {
                *b += x.completion_tokens as f64 / w;
            }
            if let Some(b) = done.get_mut(end) {
                *b += 1.0 / w;
            }
            let start = (x.t_s / w) as usize;
            if let Some(b) = started.get_mut(start) {
                *b += 1.0;
            }
            if let (Some(b), true) = (good.get_mut(start), x.meets_sla) {
                *b += 1.0;
            }
        }
        Self {
            width: w,
            n,
            tokens,
            done,
            started,
            good,
        }
    }

    /// Start of bucket `i`, seconds into the run.
    fn at(&self, i: usize) -> f64 {
        i as f64 * self.width
    }

    /// One point per bucket.
    fn series(&self, values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (self.at(i), *v))
            .collect()
    }

    /// Percentage of the requests started in each bucket that met every SLA (buckets where
    /// none started are left out).
    fn compliance(&self) -> Vec<(f64, f64)> {
        self.started
            .iter()
            .zip(&self.good)
            .enumerate()
            .filter(|(_, (s, _))| **s > 0.0)
            .map(|(i, (s, g))| (self.at(i), 100.0 * g / s))
            .collect()
    }

    /// At the start of each bucket, how many requests `f` counts at that time.
    fn depth(&self, f: impl Fn(f64) -> usize) -> Vec<(f64, f64)> {
        (0..self.n)
            .map(|i| (self.at(i), f(self.at(i)) as f64))
            .collect()
    }
}

/// Requests waiting in palate's queue, in flight, and (where scraped) waiting on the server.
fn queue_depth(r: &RunReport, tl: &Timeline) -> [Series<'static>; 3] {
    let q = &r.requests;
    let waiting = tl.depth(|t| {
        q.iter()
            .filter(|x| x.t_s - x.queue_ms / 1000.0 <= t && t < x.t_s)
            .count()
    });
    let in_flight = tl.depth(|t| {
        q.iter()
            .filter(|x| x.t_s <= t && t < x.t_s + x.e2e_ms / 1000.0)
            .count()
    });
    let server_waiting: Vec<(f64, f64)> = r
        .samples
        .iter()
        .filter(|s| s.name == "vllm:num_requests_waiting" || s.name == "llamacpp:requests_deferred")
        .map(|s| (s.t_s.max(0.0), s.value))
        .collect();
    [
        ("queue", "waiting in palate", waiting),
        ("in-flight", "in flight", in_flight),
        ("server-waiting", "waiting on the server", server_waiting),
    ]
}

/// The page up to the charts: title, style, the summary table, and the charts' container.
fn head(r: &RunReport) -> String {
    let title = format!("palate run {} — {}", r.run.run_id, r.run.job_name);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
pre {{ background: #f6f6f6; padding: 12px; overflow-x: auto; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; }}
svg .t {{ font-weight: 600; font-size: 14px; }}
svg text {{ font-size: 11px; fill: #333; }}
svg .y {{ text-anchor: end; }} svg .x {{ text-anchor: middle; }}
</style></head><body>
<h1>{}</h1>
<pre>{}</pre>
<div class="charts">
"#,
        esc(&title),
        esc(&title),
        esc(&table(r))
    )
}

/// `palate report --compare A B --html`: the comparison as a table, each delta coloured by
/// whether B is better (green) or worse (red) than A.
pub fn compare_page(c: &super::compare::Comparison) -> String {
    use super::compare::{delta_text, num};
    let run = |r: &super::RunInfo| {
        esc(&format!(
            "run {} · {} · {} · {}",
            r.run_id, r.job_name, r.model, r.started_at
        ))
    };
    let mut rows = String::new();
    for r in &c.rows {
        let class = match r.improved() {
            Some(true) => " class=\"better\"",
            Some(false) => " class=\"worse\"",
            None => "",
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{}</td></tr>\n",
            esc(&r.label),
            num(r.a),
            num(r.b),
            esc(&delta_text(r))
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>palate: run {} vs run {}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 10px; border-bottom: 1px solid #ddd; }}
td:nth-child(n+2) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.better {{ color: #1a7f37; }} .worse {{ color: #c62828; }}
</style></head><body>
<h1>run {} vs run {}</h1>
<p>A: {}<br>B: {}</p>
<table><tr><th></th><th>A</th><th>B</th><th>B − A</th></tr>
{rows}</table></body></html>
"#,
        c.a.run_id,
        c.b.run_id,
        c.a.run_id,
        c.b.run_id,
        run(&c.a),
        run(&c.b)
    )
}

#[cfg(test)]
mod tests {
    use super::charts::nice;
    use super::*;
    use crate::report::{RequestPoint, RunInfo};

    #[test]
    fn every_chart_is_an_inline_svg_and_nothing_is_fetched() {
        let requests = (0..40)
            .map(|i| RequestPoint {
                t_s: i as f64 * 0.5,
                kind: "summary".into(),
                ok: i % 7 != 0,
                meets_sla: i % 3 != 0,
                queue_ms: 100.0,
                ttft_ms: Some(200.0 + i as f64 * 30.0),
                tpot_ms: Some(20.0),
                e2e_ms: 2000.0,
                completion_tokens: 80,
            })
            .collect();
        let r = RunReport {
            run: RunInfo {
                run_id: 1,
                job_name: "t<est>".into(),
                command: "run".into(),
                model: "m".into(),
                status: "completed".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                finished_at: None,
            },
            summary: Default::default(),
            requests,
            samples: Vec::new(),
            kinds: Vec::new(),
            gpu: None,
        };
        let html = page(&r);
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 8);
        for (id, c) in COLORS.iter().filter(|(id, _)| *id != "server-waiting") {
            assert!(html.contains(c), "{id} is drawn");
        }
        for fetch in ["src=", "href=", "<script", "@import", "url("] {
            assert!(!html.contains(fetch), "nothing fetched: {fetch}");
        }
        assert!(html.contains("t&lt;est&gt;"), "text is escaped");
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(730.0), 800.0);
        assert_eq!(nice(1.3), 1.5);
    }
}
