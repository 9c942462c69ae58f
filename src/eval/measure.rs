//! The measures of `palate eval`, per restaurant and over all of them.

use std::collections::HashMap;

use serde::Serialize;

use super::{label_all, EvalOptions, Labelled};
use crate::domain::StoredReview;
use crate::index::dot;
use crate::pipeline::Pipeline;
use crate::select::{select, sentiment_sample};
use crate::validate::Label;

/// The truth a review's rating gives: `Some(true)` positive (4–5), `Some(false)` negative (1–2).
fn truth(r: &StoredReview) -> Option<bool> {
    match r.rating? {
        x if x >= 4.0 => Some(true),
        x if x <= 2.0 => Some(false),
        _ => None,
    }
}

/// Right and judged label counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub correct: usize,
    pub judged: usize,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.correct += o.correct;
        self.judged += o.judged;
    }

    pub fn rate(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.correct as f64 / self.judged as f64)
    }
}

/// Positive share by rating and by label over `reviews` (those with a label).
fn shares(reviews: &[&StoredReview], labels: &HashMap<String, Label>) -> Option<(f64, f64)> {
    let labelled: Vec<(&StoredReview, Label)> = reviews
        .iter()
        .filter_map(|r| Some((*r, *labels.get(&r.review_id)?)))
        .collect();
    let n = labelled.len() as f64;
    if n == 0.0 {
        return None;
    }
    let truly = labelled
        .iter()
        .filter(|(r, _)| truth(r) == Some(true))
        .count() as f64;
    let said = labelled
        .iter()
        .filter(|(_, l)| *l == Label::Positive)
        .count() as f64;
    Some((truly / n, said / n))
}

/// One restaurant's measures.
#[derive(Debug, Clone, Serialize)]
pub struct Restaurant {
    pub restaurant_id: String,
    pub reviews: usize,
    pub failure: Option<String>,
    pub accuracy: Tally,
    pub accuracy_en: Tally,
    pub accuracy_ko: Tally,
    /// True positive share (ratings 4–5 among all reviews) and the share labelled positive.
    pub true_positive_share: f64,
    pub positive_share: Option<f64>,
    /// The same over the English reviews only (the VADER baseline's ground).
    pub english: Option<(f64, f64)>,
    /// Per cap: mean absolute error of the sample's positive share against the true share, the
    /// error of the sample a run draws, and the estimated tokens of labelling that sample: sent,
    /// and computed with the prefix cache (instructions once, then each request's reviews),
    /// both with the output tokens.
    pub caps: Vec<(usize, f64, f64, u64, u64)>,
    /// TOP-K + MMR selection: its positive share's error, its review tokens and all reviews'.
    pub selection: Option<(f64, u64, u64)>,
    /// Mean pairwise cosine distance of the MMR picks, and of random picks as many; the same
    /// for the whole selection (TOP-K + MMR).
    pub diversity: Option<(f64, f64)>,
    pub selection_diversity: Option<(f64, f64)>,
    /// Share of reviews given the same label in every repeat (when repeated).
    pub consistency: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Labels a restaurant `repeats` times and measures it.
pub async fn restaurant(
    p: &Pipeline,
    restaurant_id: &str,
    repeats: usize,
    opts: &EvalOptions,
) -> anyhow::Result<Restaurant> {
    let all = p
        .store
        .restaurant_reviews(restaurant_id.to_string())
        .await?;
    let first = label_all(p, restaurant_id, all.clone()).await;
    let mut again = Vec::new();
    for _ in 1..repeats {
        again.push(label_all(p, restaurant_id, all.clone()).await);
    }
    let ids: Vec<String> = all.iter().map(|r| r.review_id.clone()).collect();
    let picked = select(p.index.as_ref(), restaurant_id, p.cfg.select, &ids).await?;
    let selected: Vec<StoredReview> = (picked.iter())
        .filter_map(|id| all.iter().find(|r| &r.review_id == id).cloned())
        .collect();
    let s = p.cfg.select;
    let picks = p
        .index
        .select(restaurant_id, s.k, s.diverse, s.lambda)
        .await?;
    let mmr: Vec<&str> = picks.diverse.iter().map(|h| h.review_id.as_str()).collect();
    let vectors = p
        .store
        .restaurant_vectors(restaurant_id.to_string(), p.embed_model_id.clone())
        .await?
        .into_iter()
        .map(Into::into)
        .collect::<Vec<_>>();
    let mut r = accuracy(restaurant_id, &first);
    r.caps = caps(p, restaurant_id, &first, opts);
    r.selection = selection_error(p, &first, &selected, r.true_positive_share);
    r.diversity = diversity(&vectors, &mmr);
    let all_picked: Vec<&str> = selected.iter().map(|r| r.review_id.as_str()).collect();
    r.selection_diversity = diversity(&vectors, &all_picked);
    r.consistency = consistency(&first, &again);
    tracing::info!(restaurant_id, valid = r.failure.is_none(), "evaluated");
    Ok(r)
}

fn accuracy(restaurant_id: &str, l: &Labelled) -> Restaurant {
    let mut t = [Tally::default(); 3];
    for r in &l.reviews {
        let (Some(truth), Some(label)) = (truth(r), l.labels.get(&r.review_id)) else {
            continue;
        };
        let right = usize::from(
            *label
                == if truth {
                    Label::Positive
                } else {
                    Label::Negative
                },
        );
        let lang = match r.lang.as_deref() {
            Some("en") => 1,
            _ => 2,
        };
        for i in [0, lang] {
            t[i].add(Tally {
                correct: right,
                judged: 1,
            });
        }
    }
    let every: Vec<&StoredReview> = l.reviews.iter().collect();
    let english: Vec<&StoredReview> = (l.reviews.iter())
        .filter(|r| r.lang.as_deref() == Some("en"))
        .collect();
    let truly = l.reviews.iter().filter(|r| truth(r) == Some(true)).count();
    Restaurant {
        restaurant_id: restaurant_id.to_string(),
        reviews: l.reviews.len(),
        failure: l.failure.clone(),
        accuracy: t[0],
        accuracy_en: t[1],
        accuracy_ko: t[2],
        true_positive_share: truly as f64 / l.reviews.len().max(1) as f64,
        positive_share: shares(&every, &l.labels).map(|(_, s)| s),
        english: shares(&english, &l.labels),
        caps: Vec::new(),
        selection: None,
        diversity: None,
        selection_diversity: None,
        consistency: None,
        prompt_tokens: l.prompt_tokens,
        completion_tokens: l.completion_tokens,
    }
}

/// For each cap: the sample's error over `opts.draws` draws and for the draw a run makes, and
/// the tokens of labelling it (planned prompt tokens + measured output tokens per review).
fn caps(
    p: &Pipeline,
    id: &str,
    l: &Labelled,
    opts: &EvalOptions,
) -> Vec<(usize, f64, f64, u64, u64)> {
    if l.labels.is_empty() {
        return Vec::new();
    }
    let truly =
        l.reviews.iter().filter(|r| truth(r) == Some(true)).count() as f64 / l.reviews.len() as f64;
    let out_per_review = l.completion_tokens as f64 / l.reviews.len() as f64;
    let error = |seed: &str, cap: usize| -> f64 {
        let s = sentiment_sample(seed, &l.reviews, cap);
        let refs: Vec<&StoredReview> = s.iter().collect();
        shares(&refs, &l.labels).map_or(f64::NAN, |(_, said)| (said - truly).abs())
    };
    opts.caps
        .iter()
        .map(|&cap| {
            let draws: Vec<f64> = (0..opts.draws.max(1))
                .map(|d| error(&format!("{id}#{d}"), cap))
                .collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let sample = sentiment_sample(id, &l.reviews, cap);
            let plan = p.planner.sentiment(id, &sample);
            let sent: u64 = plan.requests.iter().map(|r| r.prompt_tokens).sum();
            let computed: u64 = (plan.requests.iter())
                .map(|r| r.prompt_tokens - r.prefix_tokens)
                .sum::<u64>()
                + plan.requests.first().map_or(0, |r| r.prefix_tokens);
            let out = (out_per_review * sample.len() as f64).round() as u64;
            (cap, mean, error(id, cap), sent + out, computed + out)
        })
        .collect()
}

/// The selection's positive share against the truth, and review tokens selected vs all.
fn selection_error(
    p: &Pipeline,
    l: &Labelled,
    selected: &[StoredReview],
    truly: f64,
) -> Option<(f64, u64, u64)> {
    let refs: Vec<&StoredReview> = selected.iter().collect();
    let (_, said) = shares(&refs, &l.labels)?;
    let tokens = |rs: &[StoredReview]| rs.iter().map(|r| p.planner.counter.count(&r.text)).sum();
    Some(((said - truly).abs(), tokens(selected), tokens(&l.reviews)))
}

fn mean_distance(vs: &[&Vec<f32>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for (i, a) in vs.iter().enumerate() {
        for b in &vs[i + 1..] {
            sum += 1.0 - dot(a, b) as f64;
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Mean pairwise cosine distance of `ids`, and of 20 random picks of the same size.
fn diversity(vectors: &[(String, Vec<f32>)], ids: &[&str]) -> Option<(f64, f64)> {
    let picked: Vec<&Vec<f32>> = ids
        .iter()
        .filter_map(|s| vectors.iter().find(|(id, _)| id == s).map(|(_, v)| v))
        .collect();
    if picked.len() < 2 || vectors.len() <= picked.len() {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let random: f64 = (0..20)
        .map(|_| {
            let mut idx: Vec<usize> = (0..vectors.len()).collect();
            rng.shuffle(&mut idx);
            let vs: Vec<&Vec<f32>> = idx[..picked.len()].iter().map(|&i| &vectors[i].1).collect();
            mean_distance(&vs)
        })
        .sum::<f64>()
        / 20.0;
    Some((mean_distance(&picked), random))
}

/// Share of reviews labelled the same in the first run and every repeat.
fn consistency(first: &Labelled, again: &[Labelled]) -> Option<f64> {
    if again.is_empty() || first.labels.is_empty() {
        return None;
    }
    let same = (first.labels.iter())
        .filter(|(id, l)| again.iter().all(|a| a.labels.get(*id) == Some(l)))
        .count();
    Some(same as f64 / first.labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(id: &str, rating: f64, lang: &str) -> StoredReview {
        StoredReview {
            review_id: id.into(),
            text: String::new(),
            content_hash: String::new(),
            lang: Some(lang.into()),
            rating: Some(rating),
        }
    }

    fn labelled(labels: &[(&str, Label)]) -> Labelled {
        Labelled {
            reviews: vec![
                review("a", 5.0, "en"),
                review("b", 1.0, "ko"),
                review("c", 3.0, "en"),
                review("d", 4.0, "ko"),
            ],
            labels: labels.iter().map(|(i, l)| (i.to_string(), *l)).collect(),
            failure: None,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    #[test]
    fn accuracy_judges_ratings_1_2_and_4_5_and_shares_count_every_review() {
        use Label::*;
        let l = labelled(&[
            ("a", Positive),
            ("b", Negative),
            ("c", Positive),
            ("d", Mixed),
        ]);
        let r = accuracy("x", &l);
        assert_eq!(
            (r.accuracy.correct, r.accuracy.judged),
            (2, 3),
            "c (3 stars) not judged"
        );
        assert_eq!((r.accuracy_en.correct, r.accuracy_en.judged), (1, 1));
        assert_eq!((r.accuracy_ko.correct, r.accuracy_ko.judged), (1, 2));
        assert_eq!(r.true_positive_share, 0.5);
        assert_eq!(r.positive_share, Some(0.5));
        assert_eq!(r.english, Some((0.5, 1.0)));
    }

    #[test]
    fn consistency_counts_labels_equal_in_every_repeat() {
        use Label::*;
        let first = labelled(&[("a", Positive), ("b", Negative)]);
        let same = labelled(&[("a", Positive), ("b", Negative)]);
        let moved = labelled(&[("a", Positive), ("b", Mixed)]);
        assert_eq!(
            consistency(&first, &[same.clone(), same.clone()]),
            Some(1.0)
        );
        assert_eq!(consistency(&first, &[same, moved]), Some(0.5));
        assert_eq!(consistency(&first, &[]), None);
    }

    #[test]
    fn distance_is_one_minus_cosine() {
        let (a, b) = (vec![1.0f32, 0.0], vec![0.0f32, 1.0]);
        assert!((mean_distance(&[&a, &b]) - 1.0).abs() < 1e-9);
        assert_eq!(mean_distance(&[&a, &a]), 0.0);
    }
}
