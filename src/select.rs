//! select: per restaurant, the K reviews nearest its centroid (representative) plus up to M
//! diverse ones by MMR. A restaurant with K reviews or fewer sends all of them.

use crate::config::SelectConfig;
use crate::index::{Hit, IndexError, VectorIndex};

/// Which reviews a restaurant's prompts will quote, in prompt order.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub representative: Vec<Hit>,
    pub diverse: Vec<Hit>,
}

impl Selection {
    pub fn review_ids(&self) -> Vec<String> {
        self.representative
            .iter()
            .chain(&self.diverse)
            .map(|h| h.review_id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.representative.len() + self.diverse.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub async fn select(
    index: &dyn VectorIndex,
    restaurant_id: &str,
    cfg: SelectConfig,
) -> Result<Selection, IndexError> {
    let Some(centroid) = index.centroid(restaurant_id).await? else {
        return Ok(Selection {
            representative: Vec::new(),
            diverse: Vec::new(),
        });
    };
    let representative = index.nearest(restaurant_id, &centroid, cfg.k).await?;
    let diverse = if representative.len() < cfg.k || cfg.diverse == 0 {
        Vec::new() // fewer than K reviews: all of them are already in
    } else {
        let exclude: Vec<String> = representative.iter().map(|h| h.review_id.clone()).collect();
        index
            .mmr(restaurant_id, &centroid, cfg.diverse, cfg.lambda, &exclude)
            .await?
    };
    Ok(Selection {
        representative,
        diverse,
    })
}
