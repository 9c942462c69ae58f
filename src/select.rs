//! select: per restaurant, the K reviews nearest its centroid (representative) plus up to M
//! diverse ones by MMR, through the [`VectorIndex`]. A restaurant with K reviews or fewer sends
//! all of them.

use serde::{Deserialize, Serialize};

use crate::domain::StoredReview;
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
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            k: 8,
            diverse: 4,
            lambda: 0.5,
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
        Ok(())
    }
}

/// The restaurant's selected reviews, in prompt order, taken from `all` (its stored reviews).
pub async fn select(
    index: &dyn VectorIndex,
    restaurant_id: &str,
    cfg: SelectConfig,
    all: &[StoredReview],
) -> Result<Vec<StoredReview>, IndexError> {
    let selection: Selection = index
        .select(restaurant_id, cfg.k, cfg.diverse, cfg.lambda)
        .await?;
    Ok(selection
        .review_ids()
        .filter_map(|id| all.iter().find(|r| r.review_id == id).cloned())
        .collect())
}
