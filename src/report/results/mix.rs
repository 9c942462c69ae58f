//! The sentiment mix of a restaurant, read from its sentiment result, and its stacked bar.
//!
//! Results carry an `aggregate` (shares of each label over a sample, with confidence intervals);
//! results stored by older palates have only per-review labels (and an `overall` label), so the
//! shares are then counted from the labels.

use std::fmt::Write as _;

use serde_json::Value;

use super::highlight::esc;
use super::SENTIMENT_COLORS;

/// Shares of each label, in [`LABELS`] order, with what is known of the sample.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mix {
    /// positive, mixed, neutral, negative; fractions of the sample.
    pub shares: [f64; 4],
    /// Reviews labelled.
    pub sample_size: Option<u64>,
    /// Reviews the restaurant had when analysed.
    pub reviews_total: Option<u64>,
    pub positive_ci95: Option<(f64, f64)>,
    pub mean_score: Option<f64>,
    pub mean_score_ci95: Option<(f64, f64)>,
    /// The old shape's `overall.label`.
    pub overall: Option<String>,
}

/// The labels in the order the bar stacks them.
pub(super) const LABELS: [&str; 4] = ["positive", "mixed", "neutral", "negative"];

fn pair(v: &Value) -> Option<(f64, f64)> {
    Some((v.get(0)?.as_f64()?, v.get(1)?.as_f64()?))
}

impl Mix {
    /// The mix of a sentiment result: its `aggregate`, else counted from `reviews`; `None` when
    /// it has neither.
    pub fn of(result: &Value) -> Option<Self> {
        let agg = result.get("aggregate");
        let from_agg = agg.and_then(|a| {
            let shares = LABELS.map(|l| a.get(l).and_then(Value::as_f64));
            shares.iter().any(Option::is_some).then(|| {
                (
                    shares.map(|s| s.unwrap_or(0.0).max(0.0)),
                    a.get("sample_size").and_then(Value::as_u64),
                )
            })
        });
        let (shares, sample_size) = match from_agg {
            Some(s) => s,
            None => Self::counted(result.get("reviews")?.as_array()?)?,
        };
        let field = |k: &str| agg.and_then(|a| a.get(k));
        Some(Self {
            shares,
            sample_size,
            reviews_total: field("reviews_total").and_then(Value::as_u64),
            positive_ci95: field("positive_ci95").and_then(pair),
            mean_score: field("mean_score").and_then(Value::as_f64),
            mean_score_ci95: field("mean_score_ci95").and_then(pair),
            overall: result
                .pointer("/overall/label")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Shares counted from per-review labels (those not marked `"in_sample": false`).
    fn counted(reviews: &[Value]) -> Option<([f64; 4], Option<u64>)> {
        let mut counts = [0u64; 4];
        for r in reviews {
            if r.get("in_sample").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let label = r.get("label").and_then(Value::as_str);
            if let Some(i) = LABELS.iter().position(|l| Some(*l) == label) {
                counts[i] += 1;
            }
        }
        let n: u64 = counts.iter().sum();
        (n > 0).then(|| (counts.map(|c| c as f64 / n as f64), Some(n)))
    }
}

/// A share as a whole percentage.
fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The stacked bar (segments sized by share, labelled when wide enough), its legend, and a line
/// on the sample.
pub(super) fn bar(m: &Mix) -> String {
    let total: f64 = m.shares.iter().sum();
    if total <= 0.0 {
        return "<p class=\"muted\">No review has a sentiment label.</p>\n".into();
    }
    let mut segs = String::new();
    let mut legend = String::new();
    for ((label, color), share) in SENTIMENT_COLORS.iter().zip(m.shares) {
        let width = 100.0 * share / total;
        if width > 0.0 {
            let text = if width >= 7.0 {
                pct(share)
            } else {
                String::new()
            };
            let _ = write!(
                segs,
                r#"<span class="seg" style="width:{width:.2}%;background:{color}" title="{label} {}">{text}</span>"#,
                pct(share)
            );
        }
        let _ = write!(
            legend,
            r#"<span class="key"><i style="background:{color}"></i>{label} {}</span>"#,
            pct(share)
        );
    }
    format!(
        "<div class=\"bar\">{segs}</div>\n<div class=\"legend\">{legend}</div>\n<p class=\"muted\">{}</p>\n",
        sample_line(m)
    )
}

/// "Sample of 40 of 120 reviews · positive 55% (95% CI 40–69%) · mean score +0.30 (…)".
fn sample_line(m: &Mix) -> String {
    let mut parts = vec![match (m.sample_size, m.reviews_total) {
        (Some(n), Some(t)) => format!("Sample of {n} of {t} reviews"),
        (Some(n), None) => format!("Sample of {n} reviews"),
        (None, Some(t)) => format!("Of {t} reviews"),
        (None, None) => "Sample size unknown".into(),
    }];
    if let Some((lo, hi)) = m.positive_ci95 {
        parts.push(format!(
            "positive {} (95% CI {}–{})",
            pct(m.shares[0]),
            pct(lo),
            pct(hi)
        ));
    }
    if let Some(s) = m.mean_score {
        let ci = m.mean_score_ci95.map_or(String::new(), |(lo, hi)| {
            format!(" (95% CI {lo:+.2} to {hi:+.2})")
        });
        parts.push(format!("mean score {s:+.2}{ci}"));
    }
    if let Some(o) = &m.overall {
        parts.push(format!("overall {o}"));
    }
    esc(&parts.join(" · "))
}
