//! embed: turns review texts into L2-normalised vectors, each text once per model: the vectors
//! are cached in the store by (content hash, model id).
//!
//! - `local` (default, [`FastEmbedder`]): fastembed running a local multilingual ONNX model
//!   (multilingual-e5-small, Korean and English) on a dedicated thread.
//! - `openai` ([`OpenAiEmbedder`]): any OpenAI-compatible `/v1/embeddings` endpoint (vLLM,
//!   text-embeddings-inference, llama.cpp), batched by tokens, retried as the chat client is.

mod local;
mod remote;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::Secret;
use crate::store::{Store, StoreError};

pub use local::FastEmbedder;
pub use remote::OpenAiEmbedder;

/// The job file's `[embed]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    pub backend: EmbedBackend,
    /// Folder with model.onnx, tokenizer.json, config.json, special_tokens_map.json,
    /// tokenizer_config.json (made by `scripts/setup.sh embed`). `local` only.
    pub model_dir: PathBuf,
    /// Identifies the model in the embedding cache: change it when the model changes. Default:
    /// `multilingual-e5-small-q4` (local), `openai:<model>` (openai).
    pub model_id: Option<String>,
    /// ONNX Runtime shared library (`libonnxruntime.so.*`). `local` only.
    pub ort_dylib: PathBuf,
    /// Texts per ONNX call (local; batches are sorted by length so padding stays small), or
    /// the most texts per request (openai).
    pub batch_size: usize,
    /// ONNX intra-op threads (0 = all cores). `local` only.
    pub threads: usize,
    /// The embeddings server's base URL, e.g. `http://tei:8080/v1`. `openai` only.
    pub url: Option<String>,
    /// The model name sent to it. `openai` only.
    pub model: Option<String>,
    /// Its bearer token (`PALATE_EMBED_API_KEY`); never logged or stored.
    pub api_key: Option<Secret>,
    /// Estimated tokens per request (openai): a batch closes before it would exceed them.
    pub max_batch_tokens: usize,
    /// Prepended to every text sent to the openai backend (e5 models want "query: ").
    pub prefix: String,
    /// Per-request timeout, seconds (openai).
    pub timeout_s: u64,
    /// Texts sent to the openai backend are cut to about this many tokens (estimated), as the
    /// local model cuts at 512: servers refuse, rather than cut, an input over their limit.
    pub max_input_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbedBackend {
    #[default]
    Local,
    Openai,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            backend: EmbedBackend::Local,
            model_dir: ".cache/models/me5".into(),
            model_id: None,
            ort_dylib: ".cache/onnxruntime/libonnxruntime.so.1.24.4".into(),
            batch_size: 32,
            threads: 0,
            url: None,
            model: None,
            api_key: None,
            max_batch_tokens: 8192,
            prefix: String::new(),
            timeout_s: 60,
            max_input_tokens: 512,
        }
    }
}

impl EmbedConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.max_batch_tokens == 0 || self.max_input_tokens == 0 {
            return Err(
                "embed.batch_size, max_batch_tokens and max_input_tokens must be at least 1".into(),
            );
        }
        if self.backend == EmbedBackend::Openai && (self.url.is_none() || self.model.is_none()) {
            return Err("embed.backend = \"openai\" needs embed.url and embed.model".into());
        }
        Ok(())
    }

    /// The model's id in the embedding cache.
    pub fn cache_id(&self) -> String {
        match (&self.model_id, self.backend) {
            (Some(id), _) => id.clone(),
            (None, EmbedBackend::Local) => "multilingual-e5-small-q4".into(),
            (None, EmbedBackend::Openai) => {
                format!("openai:{}", self.model.as_deref().unwrap_or_default())
            }
        }
    }
}

/// The embedder `cfg` names.
pub async fn load(cfg: &EmbedConfig) -> Result<Box<dyn Embedder>, EmbedError> {
    Ok(match cfg.backend {
        EmbedBackend::Local => Box::new(FastEmbedder::load(cfg).await?),
        EmbedBackend::Openai => Box::new(OpenAiEmbedder::new(cfg)?),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("ONNX Runtime library {0} not found: run scripts/setup.sh embed, or set embed.ort_dylib / ORT_DYLIB_PATH")]
    NoRuntime(PathBuf),
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error(
        "embedding model file {0} not found: run scripts/setup.sh embed, or set embed.model_dir"
    )]
    NoModelFile(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedding model failed: {0}")]
    Model(String),
    #[error("the embedding thread has stopped")]
    Closed,
    #[error("embeddings server {url}: {message}")]
    Remote { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something that embeds texts.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Identifies the model in the embedding cache.
    fn model_id(&self) -> &str;
    /// One L2-normalised vector per text, in the order given.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
}

pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Embeds every stored review (of one restaurant, or all) that has no vector for this model yet;
/// returns how many texts were embedded.
pub async fn embed_missing(
    store: &Store,
    embedder: &dyn Embedder,
    restaurant_id: Option<&str>,
    chunk: usize,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<usize, EmbedError> {
    let model = embedder.model_id().to_string();
    let (mut done, mut after) = (0, String::new());
    loop {
        if cancel.is_cancelled() {
            return Ok(done);
        }
        let todo = (store.missing_embeddings_after(
            model.clone(),
            restaurant_id.map(str::to_string),
            after.clone(),
            chunk,
        ))
        .await?;
        let Some((last, _)) = todo.last() else {
            return Ok(done);
        };
        after = last.clone();
        let (hashes, texts): (Vec<String>, Vec<String>) = todo.into_iter().unzip();
        let vecs = embedder.embed(texts).await?;
        let n = vecs.len();
        store
            .put_embeddings(model.clone(), hashes.into_iter().zip(vecs).collect())
            .await?;
        done += n;
        tracing::info!(embedded = done, "embedding reviews");
    }
}
