//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched), so
//! it opens anywhere without a network. Charts: latency distributions (TTFT, TPOT, E2E), TTFT over
//! time against the SLA, throughput and requests completed over time, queue depth (palate's queue, requests in flight,
//! the server's waiting queue where it was scraped) and SLA compliance over time.

use std::fmt::Write as _;

use super::{table, RunReport};

const W: f64 = 660.0;
const H: f64 = 270.0;
const L: f64 = 62.0;
const R: f64 = 18.0;
const T: f64 = 34.0;
const B: f64 = 42.0;

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

fn color(id: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(k, _)| *k == id)
        .map_or("#000000", |(_, c)| c)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn x_px(x: f64, xmax: f64) -> f64 {
    L + (x / xmax).clamp(0.0, 1.0) * (W - L - R)
}

fn y_px(y: f64, ymax: f64) -> f64 {
    H - B - (y / ymax).clamp(0.0, 1.0) * (H - T - B)
}

/// The frame: title, axes, five ticks each way with labels.
fn frame(id: &str, title: &str, x_label: &str, y_label: &str, xmax: f64, ymax: f64) -> String {
    let mut s = format!(
        r##"<svg class="chart" data-chart="{id}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">
<rect width="{W}" height="{H}" fill="#ffffff"/><text x="{L}" y="20" class="t">{}</text>
"##,
        esc(title)
    );
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (x, y) = (x_px(f * xmax, xmax), y_px(f * ymax, ymax));
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" class="y">{}</text><text x="{x:.1}" y="{}" class="x">{}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0,
            label(f * ymax),
            H - B + 16.0,
            label(f * xmax)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{L}" x2="{L}" y1="{T}" y2="{}" stroke="#555"/><line x1="{L}" x2="{}" y1="{}" y2="{}" stroke="#555"/><text x="{}" y="{}" class="x">{}</text><text x="14" y="{}" class="y" transform="rotate(-90 14 {})">{}</text>"##,
        H - B,
        W - R,
        H - B,
        H - B,
        (L + W - R) / 2.0,
        H - 6.0,
        esc(x_label),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(y_label)
    );
    s
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn empty(id: &str, title: &str) -> String {
    format!(
        r#"<svg class="chart" data-chart="{id}" width="{W}" height="80" xmlns="http://www.w3.org/2000/svg"><text x="{L}" y="20" class="t">{}</text><text x="{L}" y="50">no data in this run</text></svg>"#,
        esc(title)
    )
}

/// Distribution of `values` (ms) in 24 bins up to their 99th percentile (higher ones in the last).
fn histogram(id: &str, title: &str, values: &[f64]) -> String {
    if values.is_empty() {
        return empty(id, title);
    }
    let top = crate::metrics::percentile(values, 99.0).unwrap_or(1.0);
    let xmax = nice(top * 1.05);
    const BINS: usize = 24;
    let mut counts = [0u32; BINS];
    for v in values {
        let i = ((v / xmax) * BINS as f64)
            .floor()
            .clamp(0.0, (BINS - 1) as f64) as usize;
        counts[i] += 1;
    }
    let ymax = nice(counts.iter().copied().max().unwrap_or(1) as f64);
    let mut s = frame(id, title, "ms", "requests", xmax, ymax);
    let bw = (W - L - R) / BINS as f64;
    for (i, &c) in counts.iter().enumerate() {
        let y = y_px(c as f64, ymax);
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
            L + i as f64 * bw + 1.0,
            bw - 2.0,
            H - B - y,
            color(id)
        );
    }
    s + "</svg>"
}

/// Points (x s, y ms) with an optional horizontal threshold line.
fn scatter(id: &str, title: &str, points: &[(f64, f64)], threshold: Option<f64>) -> String {
    if points.is_empty() {
        return empty(id, title);
    }
    let xmax = nice(points.iter().map(|p| p.0).fold(0.0, f64::max));
    let ymax = nice(
        points
            .iter()
            .map(|p| p.1)
            .chain(threshold)
            .fold(0.0, f64::max),
    );
    let mut s = frame(id, title, "seconds into the run", "TTFT ms", xmax, ymax);
    for (x, y) in points {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
            x_px(*x, xmax),
            y_px(*y, ymax),
            color(id)
        );
    }
    if let Some(t) = threshold {
        let y = y_px(t, ymax);
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" class="y">SLA {t:.0} ms</text>"##,
            W - R,
            W - R,
            y - 4.0
        );
    }
    s + "</svg>"
}

/// A line of a chart: its colour id, legend and points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over time, one per series.
fn lines(title: &str, y_label: &str, series: &[Series]) -> String {
    let id = series.first().map_or("none", |s| s.0);
    if series.iter().all(|s| s.2.is_empty()) {
        return empty(id, title);
    }
    let xmax = nice(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.0))
            .fold(0.0, f64::max),
    );
    let ymax = nice(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let mut s = frame(id, title, "seconds into the run", y_label, xmax, ymax);
    for (i, (sid, legend, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_px(*x, xmax), y_px(*y, ymax)))
            .collect();
        let c = color(sid);
        // Legends sit on the title's row, right-aligned, clear of the plot.
        let lx = W - R - (series.len() - i) as f64 * 150.0;
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="3"/><rect x="{lx:.1}" y="{}" width="12" height="12" fill="{c}"/><text x="{:.1}" y="{}" class="l">{}</text>"#,
            path.join(" "),
            10.0,
            lx + 16.0,
            21.0,
            esc(legend)
        );
    }
    s + "</svg>"
}

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
    let q = &r.requests;
    let ttft: Vec<f64> = q.iter().filter_map(|x| x.ttft_ms).collect();
    let tpot: Vec<f64> = q.iter().filter_map(|x| x.tpot_ms).collect();
    let e2e: Vec<f64> = q.iter().filter(|x| x.ok).map(|x| x.e2e_ms).collect();
    let ttft_t: Vec<(f64, f64)> = q
        .iter()
        .filter_map(|x| x.ttft_ms.map(|t| (x.t_s, t)))
        .collect();
    let (w, n) = buckets(r);
    let mut tokens = vec![0.0; n];
    let mut done = vec![0.0; n];
    let mut started = vec![0.0; n];
    let mut good = vec![0.0; n];
    for x in q {
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
    let at = |i: usize| i as f64 * w;
    let throughput: Vec<(f64, f64)> = tokens
        .iter()
        .enumerate()
        .map(|(i, v)| (at(i), *v))
        .collect();
    let requests: Vec<(f64, f64)> = done.iter().enumerate().map(|(i, v)| (at(i), *v)).collect();
    let compliance: Vec<(f64, f64)> = started
        .iter()
        .zip(&good)
        .enumerate()
        .filter(|(_, (s, _))| **s > 0.0)
        .map(|(i, (s, g))| (at(i), 100.0 * g / s))
        .collect();
    let depth = |f: &dyn Fn(f64) -> usize| -> Vec<(f64, f64)> {
        (0..n).map(|i| (at(i), f(at(i)) as f64)).collect()
    };
    let waiting = depth(&|t| {
        q.iter()
            .filter(|x| x.t_s - x.queue_ms / 1000.0 <= t && t < x.t_s)
            .count()
    });
    let in_flight = depth(&|t| {
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
    let sla = r.summary.sla.map(|s| s.ttft_ms);
    let charts = [
        histogram("ttft-hist", "TTFT distribution", &ttft),
        histogram("tpot-hist", "TPOT distribution", &tpot),
        histogram("e2e-hist", "End-to-end latency distribution", &e2e),
        scatter("ttft-time", "TTFT over time", &ttft_t, sla),
        lines(
            "Throughput over time",
            "output tokens/s",
            &[("throughput", "output tokens/s", throughput)],
        ),
        lines(
            "Requests completed over time",
            "requests/s",
            &[("requests", "requests/s", requests)],
        ),
        lines(
            "Queue depth",
            "requests",
            &[
                ("queue", "waiting in palate", waiting),
                ("in-flight", "in flight", in_flight),
                ("server-waiting", "waiting on the server", server_waiting),
            ],
        ),
        lines(
            "SLA compliance over time",
            "% of requests",
            &[("compliance", "meeting every SLA", compliance)],
        ),
    ];
    let title = format!("palate run {} — {}", r.run.run_id, r.run.job_name);
    let mut html = format!(
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
    );
    for c in charts {
        html.push_str(&c);
        html.push('\n');
    }
    html.push_str("</div></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
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
