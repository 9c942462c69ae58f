//! The scheduling benchmark's workload: restaurants built from sample review texts and planned
//! by palate's own [`Planner`], so every client (palate's modes and the Python baseline, which
//! reads them from [`export`]) sends the same requests.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::domain::StoredReview;
use crate::metrics::percentile;
use crate::plan::{BatchLimits, MaxTokens, Planner, Prompts, RestaurantPlan, TokenCounter};

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSpec {
    pub restaurants: usize,
    pub reviews_per_restaurant: usize,
    /// Reviews per sentiment request.
    pub sentiment_batch: usize,
    /// Each review text at this multiple of its length (0.5 keeps the first half, 2 repeats it):
    /// the prompt length sweep.
    pub review_scale: f64,
    pub max_tokens: u32,
    /// Review texts are drawn from this file (JSONL with a `text` field).
    pub reviews_file: PathBuf,
    pub prompts_dir: PathBuf,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            restaurants: 200,
            reviews_per_restaurant: 40,
            sentiment_batch: 16,
            review_scale: 1.0,
            max_tokens: 1024,
            reviews_file: "data/reviews.jsonl".into(),
            prompts_dir: "prompts".into(),
        }
    }
}

/// Restaurants of `reviews_per_restaurant` reviews each, drawn in turn from the review file;
/// every review is in the restaurant's prompts.
pub fn plans(w: &WorkloadSpec) -> anyhow::Result<Vec<RestaurantPlan>> {
    let texts = review_texts(&w.reviews_file)?;
    let planner = Planner {
        prompts: Prompts::load(&w.prompts_dir)?,
        counter: TokenCounter::Estimate,
        limits: BatchLimits {
            reviews: w.sentiment_batch.max(1),
            tokens: 4096,
        },
        max: MaxTokens {
            sentiment: w.max_tokens,
            summary: w.max_tokens,
            strengths: w.max_tokens,
        },
        // The simulator answers in English; a real server is asked for the same.
        language: crate::plan::Language::English,
    };
    Ok((0..w.restaurants)
        .map(|i| {
            let reviews: Vec<StoredReview> = (0..w.reviews_per_restaurant)
                .map(|j| StoredReview {
                    review_id: format!("b{i}-{j}"),
                    text: scaled(&texts[(i * 131 + j * 7) % texts.len()], w.review_scale),
                    content_hash: String::new(),
                    lang: None,
                    rating: None,
                })
                .collect();
            planner.plan(&format!("bench-{i:04}"), &reviews, &reviews)
        })
        .collect())
}

/// `text` at `scale` times its length, in whole characters.
fn scaled(text: &str, scale: f64) -> String {
    let n = text.chars().count();
    let want = ((n as f64 * scale).round() as usize).max(1);
    text.chars().cycle().take(want.max(1)).collect()
}

fn review_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read review texts from {}", path.display()))?;
    let texts: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(!texts.is_empty(), "{} has no review texts", path.display());
    Ok(texts)
}

/// The median estimated prompt of the workload's first requests: at most it is "small".
pub fn small_cutoff(plans: &[RestaurantPlan]) -> f64 {
    let sizes: Vec<f64> = (plans.iter().flat_map(|p| &p.requests))
        .map(|r| r.prompt_tokens as f64)
        .collect();
    percentile(&sizes, 50.0).unwrap_or(0.0)
}

/// Writes every first request as one JSON line for `scripts/bench_naive.py`: restaurant, kind,
/// cohort, estimated prefill and the chat body palate would send.
pub fn export(
    plans: &[RestaurantPlan],
    model: &str,
    client: &crate::infer::OpenAiClient,
    path: &Path,
) -> anyhow::Result<usize> {
    let cut = small_cutoff(plans);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    let mut n = 0;
    for p in plans {
        for r in &p.requests {
            let req = crate::infer::ChatRequest {
                restaurant_id: p.restaurant_id.clone(),
                kind: r.kind,
                attempt: 1,
                messages: r.messages.clone(),
                schema: r.schema.clone(),
                max_tokens: r.max_tokens,
                prefill_tokens: r.prompt_tokens,
            };
            let mut body = client.body(&req, model);
            if let Some(b) = body.as_object_mut() {
                b.remove("stream");
                b.remove("stream_options");
            }
            let line = json!({"restaurant": p.restaurant_id, "kind": r.kind.as_str(),
                "cohort": if r.prompt_tokens as f64 <= cut { "small" } else { "large" },
                "est_prefill_tokens": r.prompt_tokens, "body": body});
            writeln!(out, "{line}")?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_scale_cuts_and_repeats_whole_characters() {
        assert_eq!(scaled("맛있어요", 0.5), "맛있");
        assert_eq!(scaled("ab", 2.0), "abab");
        assert_eq!(scaled("ab", 0.1), "a");
    }
}
