//! index: vector search per restaurant behind [`VectorIndex`].
//!
//! - `embedded` (default): vectors stay in palate's SQLite store and one restaurant's vectors are
//!   searched exactly ([`exact`]): they are L2-normalised, so cosine similarity is a dot product;
//!   1,000 × 384 floats is well under a millisecond, and exact means recall 1.0.
//! - `qdrant` (feature `qdrant`): a Qdrant server holds the vectors, one point per review, and
//!   answers each restaurant's filtered search; for catalogues that outgrow one machine and for
//!   several workers sharing one index.

mod exact;
#[cfg(feature = "qdrant")]
mod qdrant;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::Secret;
use crate::store::{Store, StoreError};

pub use exact::{centroid, centroid_of, dot, mmr, nearest, select_exact};
#[cfg(feature = "qdrant")]
pub use qdrant::QdrantIndex;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("qdrant at {url}: {message}")]
    Qdrant { url: String, message: String },
    #[error("qdrant collection {collection} holds {found}-dimensional vectors, but embedding model {model} makes {expected}: set index.collection to another name, or delete the collection")]
    Dimension {
        collection: String,
        model: String,
        found: u64,
        expected: u64,
    },
    #[error("index.backend = \"qdrant\" needs palate built with `--features qdrant` (or `full`)")]
    NotBuilt,
}

/// The job file's `[index]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    pub backend: Backend,
    /// Qdrant's gRPC address (port 6334 by default).
    pub url: String,
    /// The Qdrant collection; default `palate_<embedding model id>_<dimension>`, so a new
    /// model never mixes its vectors with the old one's.
    pub collection: Option<String>,
    /// Qdrant's API key (`PALATE_QDRANT_API_KEY`); never logged or stored.
    pub api_key: Option<Secret>,
    /// Who picks the diverse reviews: `palate` ranks the candidates the server's filtered search
    /// returns with the embedded index's own MMR (the same selection on both backends), `server`
    /// uses Qdrant's MMR query (diversity = 1 − lambda; it does not count the TOP-K as already
    /// picked, so its picks can differ).
    pub mmr: MmrBy,
    /// Points per upsert request.
    pub upsert_batch: usize,
    /// Per-request timeout, seconds.
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Embedded,
    Qdrant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MmrBy {
    #[default]
    Palate,
    Server,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            url: "http://127.0.0.1:6334".into(),
            collection: None,
            api_key: None,
            mmr: MmrBy::Palate,
            upsert_batch: 256,
            timeout_s: 30,
        }
    }
}

impl IndexConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.upsert_batch == 0 {
            return Err("index.upsert_batch must be at least 1".into());
        }
        if self.backend == Backend::Qdrant && self.url.trim().is_empty() {
            return Err("index.url is required with index.backend = \"qdrant\"".into());
        }
        Ok(())
    }

    /// The collection name for `model_id`'s `dim`-dimensional vectors.
    pub fn collection_for(&self, model_id: &str, dim: usize) -> String {
        self.collection.clone().unwrap_or_else(|| {
            let safe: String = (model_id.chars())
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("palate_{safe}_{dim}")
        })
    }
}

/// A review found by a search, with its similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub review_id: String,
    pub score: f32,
}

/// Which reviews a restaurant's prompts will quote, in prompt order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// The K reviews nearest the restaurant's centroid, nearest first.
    pub representative: Vec<Hit>,
    /// Up to M more by MMR, in pick order.
    pub diverse: Vec<Hit>,
}

impl Selection {
    pub fn review_ids(&self) -> impl Iterator<Item = &str> {
        (self.representative.iter().chain(&self.diverse)).map(|h| h.review_id.as_str())
    }
}

#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// From one read of the restaurant's vectors: the `k` nearest its centroid (the normalised
    /// mean), then — if it has more than `k` — up to `diverse` more by maximal marginal
    /// relevance, each maximising `lambda * sim(centroid) - (1 - lambda) * max sim(picked)`.
    /// Empty if the restaurant has no vectors.
    async fn select(
        &self,
        restaurant_id: &str,
        k: usize,
        diverse: usize,
        lambda: f32,
    ) -> Result<Selection, IndexError>;
}

/// The index `cfg` names, over the vectors of `model_id` in `store`. Connecting to Qdrant
/// checks (or creates) its collection before any restaurant is analysed.
pub async fn open(
    cfg: &IndexConfig,
    store: Store,
    model_id: &str,
) -> Result<Arc<dyn VectorIndex>, IndexError> {
    match cfg.backend {
        Backend::Embedded => Ok(Arc::new(EmbeddedIndex::new(store, model_id))),
        #[cfg(feature = "qdrant")]
        Backend::Qdrant => Ok(Arc::new(QdrantIndex::connect(cfg, store, model_id).await?)),
        #[cfg(not(feature = "qdrant"))]
        Backend::Qdrant => Err(IndexError::NotBuilt),
    }
}

/// Whether `cfg`'s index answers, without creating anything: what it is (`palate doctor`).
pub async fn ping(cfg: &IndexConfig) -> Result<String, IndexError> {
    match cfg.backend {
        Backend::Embedded => Ok("embedded (vectors in the work database)".into()),
        #[cfg(feature = "qdrant")]
        Backend::Qdrant => Ok(format!(
            "Qdrant {} at {}",
            QdrantIndex::ping(cfg).await?,
            crate::domain::redact_url(&cfg.url)
        )),
        #[cfg(not(feature = "qdrant"))]
        Backend::Qdrant => Err(IndexError::NotBuilt),
    }
}

/// The embedded index: vectors from the store's embedding cache, searched exactly.
pub struct EmbeddedIndex {
    store: Store,
    model_id: String,
}

impl EmbeddedIndex {
    pub fn new(store: Store, model_id: &str) -> Self {
        Self {
            store,
            model_id: model_id.to_string(),
        }
    }
}

#[async_trait]
impl VectorIndex for EmbeddedIndex {
    async fn select(
        &self,
        restaurant_id: &str,
        k: usize,
        diverse: usize,
        lambda: f32,
    ) -> Result<Selection, IndexError> {
        let items: Vec<(String, Vec<f32>)> = (self.store)
            .restaurant_vectors(restaurant_id.to_string(), self.model_id.clone())
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(select_exact(&items, k, diverse, lambda))
    }
}
