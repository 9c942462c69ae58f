//! palate: a batch pipeline that analyses restaurant reviews with LLMs served by vLLM.
//!
//! # Layout
//!
//! Data flows one way, one module per stage:
//!
//! - [`ingest`]: reads CSV/JSONL review files row by row, validates each row, writes bad rows to a
//!   rejects file with line number and reason.
//! - [`embed`]: the [`embed::Embedder`] trait; fastembed on a local multilingual ONNX model, on a
//!   dedicated thread; each review embedded once per model.
//! - [`index`]: the [`index::VectorIndex`] trait; the embedded exact index over the store.
//! - [`select`]: per restaurant, TOP-K nearest the centroid plus diverse reviews by MMR.
//! - [`plan`]: renders the prompts from `prompts/` with a shared prefix; packs per-review
//!   sentiment into batches by token count (the model's tokenizer or an estimate); JSON schemas.
//! - [`infer`]: the [`infer::LlmClient`] trait; async-openai streaming against OpenAI-compatible
//!   endpoints; one shortest-prefill-first queue, a place per endpoint, governor quotas, retries
//!   honouring Retry-After, endpoint benching and a fallback model chain.
//! - [`validate`]: schema and evidence checks; `finish_reason = length` is a failure.
//! - [`store`]: SQLite (WAL, migrations) on a dedicated thread: reviews, embeddings, runs,
//!   results, `analysis_metrics`, `vllm_metrics`.
//! - [`metrics`]: per-request and per-run measures (TTFT, TPOT, ITL, goodput, percentiles,
//!   cost); server `/metrics` and NVML sampling during a run.
//!
//! Reading and measuring: [`report`] (`palate report`: table, HTML charts, daily view),
//! [`sim`] (a simulated vLLM server for benchmarks and fault tests, never the product path) and
//! [`bench`] (`palate bench scheduling`).
//!
//! Around them: [`config`] (job file + flags → one `Config`), [`cli`] (clap definitions),
//! [`pipeline`] (runs the stages per restaurant), [`commands`] (each subcommand), [`output`]
//! (everything printed for people).

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod embed;
pub mod index;
pub mod infer;
pub mod ingest;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod select;
pub mod sim;
pub mod store;
pub mod validate;
