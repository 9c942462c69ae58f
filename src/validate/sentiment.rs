//! Sentiment: one label per review, keyed by its reference, and the restaurant's aggregate that
//! palate computes from the labels of an unbiased sample (the model is never asked for one).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::{review_ref, ValidationError};
use crate::plan::ReviewRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Positive,
    Negative,
    Mixed,
    Neutral,
}

impl Label {
    /// The score a label counts as in the mean: +1, -1, or 0 for mixed and neutral.
    pub fn score(self) -> f64 {
        match self {
            Self::Positive => 1.0,
            Self::Negative => -1.0,
            Self::Mixed | Self::Neutral => 0.0,
        }
    }
}

/// `{"R1": "positive", "R2": "negative", ...}` with its keys in the order written, duplicates
/// kept (a plain map would silently keep the last of two).
struct Labels(Vec<(String, Label)>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of review references to labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Labels, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Label>()? {
                    out.push(entry);
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A batch's labels: every reference exactly once, in order, nothing else.
pub fn sentiment(text: &str, refs: &[ReviewRef]) -> Result<Value, ValidationError> {
    let Labels(labels) = super::parse(text)?;
    let mut seen = HashSet::new();
    let mut reviews = Vec::new();
    for (reference, label) in &labels {
        let r = review_ref(refs, reference)?;
        if !seen.insert(reference.as_str()) {
            return Err(ValidationError::LabelledTwice(reference.clone()));
        }
        reviews.push(json!({"review_id": r.review_id, "label": label, "in_sample": r.in_sample}));
    }
    if let Some(missing) = refs.iter().find(|r| !seen.contains(r.reference.as_str())) {
        return Err(ValidationError::Unlabelled(missing.reference.clone()));
    }
    Ok(json!({ "reviews": reviews }))
}

/// The restaurant's sentiment from its reviews' labels: the share of each label and the mean
/// score (+1 positive, -1 negative, 0 otherwise) over the reviews in the sample, each with a 95 %
/// interval for sampling error: Wilson's for shares, the normal one for the mean, both narrowed
/// by the finite-population correction (zero width when every review is labelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Labelled reviews in the sample.
    pub sample_size: usize,
    /// The restaurant's reviews the sample was drawn from.
    pub reviews_total: usize,
    pub positive: f64,
    pub negative: f64,
    pub mixed: f64,
    pub neutral: f64,
    pub positive_ci95: [f64; 2],
    pub negative_ci95: [f64; 2],
    pub mean_score: f64,
    pub mean_score_ci95: [f64; 2],
}

const Z95: f64 = 1.959_964;

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Wilson score interval for `k` of `n`, narrowed around `k/n` by `fpc`.
fn wilson(k: usize, n: usize, fpc: f64) -> [f64; 2] {
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let (lo, hi) = (centre - half, centre + half);
    [
        round3((p - (p - lo) * fpc).clamp(0.0, 1.0)),
        round3((p + (hi - p) * fpc).clamp(0.0, 1.0)),
    ]
}

impl Aggregate {
    /// `None` when the sample is empty.
    pub fn of(labels: &[Label], reviews_total: usize) -> Option<Self> {
        let n = labels.len();
        if n == 0 {
            return None;
        }
        let big_n = reviews_total.max(n) as f64;
        let fpc = if big_n > 1.0 {
            ((big_n - n as f64) / (big_n - 1.0)).max(0.0).sqrt()
        } else {
            0.0
        };
        let count = |l: Label| labels.iter().filter(|&&x| x == l).count();
        let share = |l: Label| round3(count(l) as f64 / n as f64);
        let scores: Vec<f64> = labels.iter().map(|l| l.score()).collect();
        let mean = scores.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let half = Z95 * (var / n as f64).sqrt() * fpc;
        Some(Self {
            sample_size: n,
            reviews_total: reviews_total.max(n),
            positive: share(Label::Positive),
            negative: share(Label::Negative),
            mixed: share(Label::Mixed),
            neutral: share(Label::Neutral),
            positive_ci95: wilson(count(Label::Positive), n, fpc),
            negative_ci95: wilson(count(Label::Negative), n, fpc),
            mean_score: round3(mean),
            mean_score_ci95: [
                round3((mean - half).max(-1.0)),
                round3((mean + half).min(1.0)),
            ],
        })
    }
}

/// Each review's label in a valid sentiment result, by review id.
pub fn sentiment_labels(v: &Value) -> HashMap<String, Label> {
    let reviews = v["reviews"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    reviews
        .iter()
        .filter_map(|r| {
            let id = r["review_id"].as_str()?.to_string();
            Some((id, serde_json::from_value(r["label"].clone()).ok()?))
        })
        .collect()
}

/// Joins a restaurant's validated sentiment batches into one result: every review's label, in
/// batch order, and the [`Aggregate`] over those in the sample of `reviews_total`.
pub fn merge_sentiment(parts: Vec<Value>, reviews_total: usize) -> Value {
    let mut reviews = Vec::new();
    for mut p in parts {
        if let Value::Array(r) = p["reviews"].take() {
            reviews.extend(r);
        }
    }
    let sample: Vec<Label> = reviews
        .iter()
        .filter(|r| r["in_sample"].as_bool().unwrap_or(true))
        .filter_map(|r| serde_json::from_value(r["label"].clone()).ok())
        .collect();
    json!({"reviews": reviews, "aggregate": Aggregate::of(&sample, reviews_total)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_shares_intervals_and_the_finite_population() {
        let mut labels = vec![Label::Positive; 6];
        labels.extend([
            Label::Negative,
            Label::Negative,
            Label::Mixed,
            Label::Neutral,
        ]);
        let sampled = Aggregate::of(&labels, 100).unwrap();
        assert_eq!(
            (sampled.sample_size, sampled.positive, sampled.negative),
            (10, 0.6, 0.2)
        );
        assert_eq!(sampled.mean_score, 0.4);
        let [lo, hi] = sampled.positive_ci95;
        assert!(lo < 0.6 && hi > 0.6 && lo > 0.25 && hi < 0.9, "{lo} {hi}");
        // Every review labelled: no sampling error left.
        let all = Aggregate::of(&labels, 10).unwrap();
        assert_eq!(all.positive_ci95, [0.6, 0.6]);
        assert_eq!(all.mean_score_ci95, [0.4, 0.4]);
        assert!(Aggregate::of(&[], 5).is_none());
    }

    #[test]
    fn merge_counts_only_the_sample() {
        let a = json!({"reviews": [{"review_id": "a", "label": "positive", "in_sample": true},
                                   {"review_id": "s", "label": "negative", "in_sample": false}]});
        let b = json!({"reviews": [{"review_id": "b", "label": "negative", "in_sample": true}]});
        let m = merge_sentiment(vec![a, b], 2);
        assert_eq!(m["reviews"].as_array().unwrap().len(), 3);
        assert_eq!(m["aggregate"]["sample_size"], 2);
        assert_eq!(m["aggregate"]["positive"], 0.5);
    }
}
