//! What every analysing command does first: ingest the job's inputs, load the prompts and the
//! embedder, embed what is missing, build the LLM client.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::embed::embed_missing;
use crate::infer::OpenAiClient;
use crate::ingest::{ingest_file, IngestError, IngestOptions, IngestReport};
use crate::pipeline::Pipeline;
use crate::plan::{Planner, Prompts, TokenCounter};
use crate::store::Store;

/// Texts embedded per round trip to the embedding thread and the store.
const EMBED_CHUNK: usize = 256;

/// Ingests the job's inputs, stopping between files when `cancel` is cancelled.
pub async fn ingest_inputs(
    store: &Store,
    cfg: &Config,
    cancel: &CancellationToken,
) -> (Vec<IngestReport>, Vec<IngestError>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for f in cfg.job.inputs.clone() {
        if cancel.is_cancelled() {
            break;
        }
        let o = IngestOptions {
            stop: Some(cancel.clone()),
            ..cfg.ingest_options()
        };
        match store.with_db(move |db| ingest_file(db, &f, &o)).await {
            Ok(Ok(r)) => ok.push(r),
            Ok(Err(e)) => bad.push(e),
            Err(e) => bad.push(e.into()),
        }
    }
    (ok, bad)
}

/// A run stopped by a signal before its analysis began.
#[derive(Debug, thiserror::Error)]
#[error("stopped before the analysis began")]
pub struct Interrupted;

/// Loads everything a pipeline needs: prompts, the embedder if a review lacks its vector (and
/// embeds what is missing), the LLM client. The LLM server is first asked for when a restaurant
/// needs it.
pub async fn pipeline(
    cfg: Config,
    store: Store,
    only: Option<&str>,
    cancel: &CancellationToken,
) -> anyhow::Result<Arc<Pipeline>> {
    let planner = Planner {
        prompts: Prompts::load(&cfg.llm.prompts_dir)?,
        counter: TokenCounter::load(cfg.plan.tokenizer.as_deref())?,
        limits: cfg.plan.limits(),
        max: cfg.llm.max_tokens(),
        language: cfg.plan.language,
    };
    // The embedding model loads only when a review lacks its vector: a night with nothing new,
    // or `analyze` of an embedded restaurant, never loads it.
    let embed_model_id = cfg.embed.cache_id();
    let missing =
        (store.missing_embeddings(embed_model_id.clone(), only.map(str::to_string), 1)).await?;
    if !missing.is_empty() {
        let embedder = crate::embed::load(&cfg.embed).await?;
        let t = Instant::now();
        let n = embed_missing(&store, embedder.as_ref(), only, EMBED_CHUNK, cancel).await?;
        if cancel.is_cancelled() {
            return Err(Interrupted.into());
        }
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(
            embedded = n,
            secs,
            per_s = n as f64 / secs,
            "embedded new reviews"
        );
    }
    let llm = OpenAiClient::new(&cfg.llm)?;
    let index = crate::index::open(&cfg.index, store.clone(), &embed_model_id).await?;
    let sink = crate::sink::open(&cfg.sink, store.clone()).await?;
    Ok(Arc::new(Pipeline {
        cfg,
        sink,
        store,
        index,
        llm: Arc::new(llm),
        planner,
        embed_model_id,
        ready: tokio::sync::OnceCell::new(),
    }))
}
