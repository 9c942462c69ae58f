//! SVG chart primitives of the HTML report: a frame with axes and ticks, histograms, scatter
//! plots and line charts, each a self-contained `<svg>` element.

use std::fmt::Write as _;

use super::COLORS;

const W: f64 = 660.0;
const H: f64 = 270.0;
const L: f64 = 62.0;
const R: f64 = 18.0;
const T: f64 = 34.0;
const B: f64 = 42.0;

fn color(id: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(k, _)| *k == id)
        .map_or("#000000", |(_, c)| c)
}

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round axis maximum at or above `v`.
pub(super) fn nice(v: f64) -> f64 {
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
pub(super) fn histogram(id: &str, title: &str, values: &[f64]) -> String {
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
pub(super) fn scatter(
    id: &str,
    title: &str,
    points: &[(f64, f64)],
    threshold: Option<f64>,
) -> String {
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
pub(super) type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Lines over time, one per series.
pub(super) fn lines(title: &str, y_label: &str, series: &[Series]) -> String {
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
