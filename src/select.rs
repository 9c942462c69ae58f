//! select: per restaurant, the K reviews nearest its centroid (representative) plus up to M
//! diverse ones by MMR, through the [`VectorIndex`]. A restaurant with K reviews or fewer sends
//! all of them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::index::{IndexError, Selection, VectorIndex};

/// The job file's `[select]` section.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectConfig {
    /// Representative reviews: the K nearest the restaurant's centroid.
    pub k: usize,
    /// Extra diverse reviews chosen by MMR after the K representative ones.
    pub diverse: usize,
    /// MMR trade-off: 1.0 = pure relevance to the centroid, 0.0 = pure diversity.
    pub lambda: f32,
    /// Reviews labelled for the restaurant's sentiment aggregate: all of them up to this many,
    /// a uniform random sample of this many beyond (the TOP-K are the most typical reviews by
    /// design, so they are not used for it). See docs/quality.md for the error against tokens.
    pub sentiment_sample: usize,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            k: 8,
            diverse: 4,
            lambda: 0.5,
            sentiment_sample: 32,
        }
    }
}

impl SelectConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 {
            return Err("select.k must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err("select.lambda must be between 0 and 1".into());
        }
        if self.sentiment_sample == 0 {
            return Err("select.sentiment_sample must be at least 1".into());
        }
        Ok(())
    }
}

/// The restaurant's selected reviews, in prompt order, taken from `all` (its stored reviews).
pub async fn select(
    index: &dyn VectorIndex,
    restaurant_id: &str,
    cfg: SelectConfig,
    known: &[String],
) -> Result<Vec<String>, IndexError> {
    let selection: Selection = index
        .select(restaurant_id, cfg.k, cfg.diverse, cfg.lambda)
        .await?;
    Ok(selection
        .review_ids()
        .filter(|id| known.binary_search_by(|k| k.as_str().cmp(id)).is_ok())
        .map(str::to_string)
        .collect())
}

/// The reviews the sentiment aggregate is taken over: all of `all` up to `cap`, else a uniform
/// random sample of `cap`, drawn with a seed from the restaurant's id so that a re-run of the
/// same input labels the same reviews. In review-id order.
pub fn sentiment_sample<T: Clone>(restaurant_id: &str, all: &[T], cap: usize) -> Vec<T> {
    if all.len() <= cap {
        return all.to_vec();
    }
    let digest = Sha256::digest(restaurant_id.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    let mut rng = fastrand::Rng::with_seed(u64::from_le_bytes(seed));
    let mut idx: Vec<usize> = (0..all.len()).collect();
    // Partial Fisher-Yates: the first `cap` places are a uniform sample without replacement.
    for i in 0..cap {
        let j = rng.usize(i..idx.len());
        idx.swap(i, j);
    }
    let mut picked: Vec<usize> = idx[..cap].to_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| all[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StoredReview;

    fn reviews(n: usize) -> Vec<StoredReview> {
        (0..n)
            .map(|i| StoredReview {
                review_id: format!("r{i:03}"),
                text: String::new(),
                content_hash: String::new(),
                lang: None,
                rating: None,
            })
            .collect()
    }

    #[test]
    fn the_sample_is_everything_up_to_the_cap_then_uniform_and_repeatable() {
        assert_eq!(sentiment_sample("x", &reviews(5), 8).len(), 5);
        let all = reviews(100);
        let a = sentiment_sample("x", &all, 10);
        assert_eq!(a.len(), 10);
        let ids = |v: &[StoredReview]| v.iter().map(|r| r.review_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&a),
            ids(&sentiment_sample("x", &all, 10)),
            "same restaurant, same sample"
        );
        assert_ne!(ids(&a), ids(&sentiment_sample("y", &all, 10)));
        // Uniform: over many restaurants every review is drawn about equally often.
        let mut hits = vec![0u32; 100];
        for s in 0..2000 {
            for r in sentiment_sample(&s.to_string(), &all, 10) {
                hits[r.review_id[1..].parse::<usize>().unwrap()] += 1;
            }
        }
        assert!(hits.iter().all(|&h| (120..=290).contains(&h)), "{hits:?}");
    }
}
