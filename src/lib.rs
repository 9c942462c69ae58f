//! palate: a batch pipeline that analyses restaurant reviews with LLMs served by vLLM.
//!
//! # Layout
//!
//! Layers, bottom to top; a module imports only from layers below it (no cycles):
//!
//! 1. [`domain`]: the shared types: analysis kinds, result/request/run statuses (stored through
//!    `ToSql`/`FromSql`), error classes and [`domain::Failure`], reviews, the result key,
//!    hashing, timestamps, [`domain::Secret`]. Imports no stage.
//! 2. [`metrics`]: per-request and per-run measures (TTFT, TPOT, ITL, goodput, percentiles,
//!    cost) and server `/metrics` + NVML sampling into a [`metrics::scrape::SampleSink`].
//!    [`sim`]: a simulated vLLM server for benchmarks and fault tests, never the product path.
//! 3. [`store`]: all of palate's SQL. [`store::Db`] is the typed API over SQLite (WAL,
//!    migrations); [`store::Store`] runs it on a dedicated thread; [`store::ResultSink`] is the
//!    seam results leave through; `store::deliveries` is the app database's outbox.
//! 4. The stages, in data-flow order, each owning its `[section]` of the job file:
//!    - [`ingest`]: CSV/JSONL files row by row, each bad row to a rejects file with its line.
//!    - [`embed`]: the [`embed::Embedder`] trait; fastembed on a local multilingual ONNX model,
//!      on a dedicated thread, or an OpenAI-compatible `/v1/embeddings`; each review embedded
//!      once per model.
//!    - [`index`]: the [`index::VectorIndex`] trait; the embedded exact index over the store,
//!      and a Qdrant server (feature `qdrant`).
//!    - [`select`]: per restaurant, TOP-K nearest the centroid plus diverse reviews by MMR.
//!    - [`plan`]: prompts from `prompts/` with a shared prefix; sentiment batches by tokens.
//!    - [`infer`]: the [`infer::LlmClient`] trait; streamed completions (own SSE decoder), a shortest-prefill
//!      -first queue, governor quotas, retries honouring Retry-After, endpoint ejection, and a
//!      fallback model chain.
//!    - [`validate`]: schema and evidence checks; [`validate::ValidationError`] names the group.
//!    - [`sink`]: where results go besides the work database: the app's MariaDB or PostgreSQL
//!      (feature `appdb`), delivered from the store's outbox.
//! 5. [`cli`] (clap definitions only) and [`config`] (a job file + flags → one validated
//!    `Config`, assembled from the stages' own sections).
//! 6. [`pipeline`]: runs select → plan → infer → validate → store per restaurant, each in its
//!    own task. [`report`]: `palate report` (table, HTML charts, daily view, results page).
//!    [`eval`]: `palate eval`, quality on labelled data. [`bench`]: `palate bench scheduling`,
//!    `calibrate` and `selection`. [`doctor`]: `palate doctor`, every part a run depends on.
//!    [`watchdog`]: `palate watchdog`, stops an idle LLM server and starts it before a run.
//!    [`telemetry`]: optional OTLP export of the run's spans (layer 2 in what it imports).
//! 7. The edge: [`commands`] (each subcommand) and [`output`] (everything printed for people).

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod embed;
pub mod eval;
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
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod validate;
pub mod watchdog;
