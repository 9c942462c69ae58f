//! eval: `palate eval` scores a job's analyses against labelled data, so quality is measured,
//! not assumed. The truth is each review's rating: 1–2 is negative, 4–5 positive (3 is left out
//! of label accuracy, and counts as not positive in a restaurant's true positive share).
//!
//! Per restaurant, every review is labelled once ([`label_all`]); from those labels come the
//! per-review accuracy, the aggregate error of every sampling cap (re-drawn several times) and
//! of the TOP-K selection, each beside the tokens it costs. A few restaurants are labelled again
//! for consistency, and the MMR picks' diversity is measured on the embeddings.

mod measure;
mod report;

use std::collections::HashMap;

use futures::StreamExt;
use serde::Serialize;

use crate::domain::StoredReview;
use crate::pipeline::{analyse_plan, Conduct, Pipeline};
use crate::store::RestaurantRow;
use crate::validate::{sentiment_labels, Label};
pub use measure::Restaurant;
pub use report::EvalReport;

/// What `palate eval` measures, and on how much.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOptions {
    /// Restaurants evaluated (the first ones in id order); 0 = all.
    pub restaurants: usize,
    /// Restaurants labelled `repeats` times for consistency.
    pub consistency_restaurants: usize,
    pub repeats: usize,
    /// Sampling caps whose aggregate error and tokens are measured.
    pub caps: Vec<usize>,
    /// Random draws per cap and restaurant.
    pub draws: usize,
    /// Restaurants labelled at once.
    pub concurrency: usize,
}

/// One restaurant's reviews and the labels one run gave them.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub reviews: Vec<StoredReview>,
    /// By review id; empty when the sentiment result was invalid.
    pub labels: HashMap<String, Label>,
    /// Why the sentiment result is invalid, if it is.
    pub failure: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Labels every review of a restaurant with the job's sentiment prompt, as a run would.
pub async fn label_all(p: &Pipeline, restaurant_id: &str, reviews: Vec<StoredReview>) -> Labelled {
    let plan = p.planner.sentiment(restaurant_id, &reviews);
    let outcomes = analyse_plan(
        p.llm.as_ref(),
        &plan,
        Conduct::from(&p.cfg.llm),
        reviews.len(),
    )
    .await;
    let mut out = Labelled {
        reviews,
        labels: HashMap::new(),
        failure: None,
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    for k in outcomes {
        out.prompt_tokens += k
            .requests
            .iter()
            .filter_map(|m| m.prompt_tokens)
            .sum::<u64>();
        out.completion_tokens += k
            .requests
            .iter()
            .filter_map(|m| m.completion_tokens)
            .sum::<u64>();
        match &k.outcome {
            Ok(v) => out.labels.extend(sentiment_labels(v)),
            Err(f) => out.failure = Some(f.message.clone()),
        }
    }
    out
}

/// Evaluates `restaurants`: labels, selection, diversity and consistency of each.
pub async fn evaluate(
    p: &Pipeline,
    restaurants: Vec<RestaurantRow>,
    opts: &EvalOptions,
) -> anyhow::Result<EvalReport> {
    let n = match opts.restaurants {
        0 => restaurants.len(),
        n => n.min(restaurants.len()),
    };
    let results: Vec<anyhow::Result<Restaurant>> = futures::stream::iter(&restaurants[..n])
        .enumerate()
        .map(|(i, r)| async move {
            let repeats = if i < opts.consistency_restaurants {
                opts.repeats.max(1)
            } else {
                1
            };
            measure::restaurant(p, &r.restaurant_id, repeats, opts).await
        })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let restaurants = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(EvalReport::of(restaurants, opts, p))
}
