//! cli: command-line definitions only (clap derive). Flags override the job file; every flag can
//! also come from a `PALATE_*` environment variable, which is how cron jobs usually set secrets.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
pub use bench::*;

#[derive(Debug, Parser)]
#[command(
    name = "palate",
    version,
    about = "Analyse restaurant reviews with LLMs served by vLLM"
)]
pub struct Cli {
    /// Log format: `pretty` for a terminal, `json` (one object per line) for cron and log shippers.
    #[arg(long, env = "PALATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `pretty` when stderr is a terminal, `json` otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read CSV or JSONL review files into the database; bad rows go to a rejects file.
    Ingest(IngestArgs),
    /// Ingest the job's inputs, then analyse every restaurant whose reviews changed since its last
    /// successful analysis. Exit codes: 0 all done, 1 error (or gave up: every endpoint down),
    /// 3 some analyses failed (invalid output or request errors) or an input was unusable,
    /// 4 another palate process holds the database lock, 5 stopped at the job's deadline,
    /// 6 finished but crossed an `[alerts]` threshold, 130 interrupted.
    Run(RunArgs),
    /// Analyse one restaurant (already ingested) and print its three results. Exit codes as
    /// for `run`.
    Analyze(AnalyzeArgs),
    /// A run's metrics: a table (throughput, goodput, SLA compliance, latency percentiles, token
    /// savings, cost, failures), an HTML page of charts, or goodput per day.
    Report(ReportArgs),
    /// Score the analyses on labelled data (each review's rating): per-review accuracy, the
    /// restaurant aggregate's error against the sample size and its tokens, TOP-K selection
    /// against all reviews, consistency over repeats, MMR diversity (see docs/quality.md).
    Eval(EvalArgs),
    /// Deliver the results still queued for the app's database (`[sink]`): those a run could
    /// not deliver because the database was down or refused. Exit 0 when none is left, 3 when
    /// some still are.
    Sync(SyncArgs),
    /// Check everything the job depends on: each endpoint (model served, a one-token completion
    /// with a JSON schema, `priority`, `/metrics`, the vLLM flags the metrics need), the
    /// embedding model and ONNX Runtime, the vector index, the app database, the work database
    /// (schema, integrity, lock holder, runs left running), disk space and the GPU. Exit 0 when
    /// nothing failed, 1 otherwise.
    Doctor(DoctorArgs),
    /// The GPU idle watchdog: every `[watchdog] interval_s` it reads the server's `/metrics`,
    /// NVML and the database lock, stops an idle server when idling until the next need would
    /// cost more than a restart, and starts it before a planned run. Every decision is logged
    /// with its inputs. `--replay TRACE` runs it over a trace with a fake clock instead.
    Watchdog(WatchdogArgs),
    /// Benchmarks whose output states the figures (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchSuite),
}

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Log the decisions and the commands they would run, and run none.
    #[arg(long)]
    pub dry_run: bool,
    /// One check, then exit.
    #[arg(long)]
    pub once: bool,
    /// Decide over a trace of observations (JSON lines, as an always-on server saw them) with a
    /// fake clock and a simulated server; print every decision and the day's cost with and
    /// without the watchdog. Runs nothing.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// With `--replay`, also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// The checks as one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// The run to report (default: the newest).
    #[arg(long)]
    pub run: Option<i64>,
    /// Also write a self-contained HTML page with charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also write the analyses themselves here: one self-contained HTML page with a card per
    /// restaurant (sentiment mix, summary and aspects, strengths with their quotes marked in the
    /// cited reviews, failed analyses with their reasons).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Restaurants on the results page, the first in id order. Each card carries the full text
    /// of the reviews it cites, so a page of the whole catalogue can run to tens of megabytes.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Two runs side by side with their deltas (B − A, and whether B is better), e.g. before
    /// and after a server flag; with `--html`, the comparison as a page.
    #[arg(long, num_args = 2, value_names = ["RUN_A", "RUN_B"])]
    pub compare: Option<Vec<i64>>,
    /// Goodput and SLA compliance per day instead (the `daily_metrics` view).
    #[arg(long)]
    pub daily: bool,
    /// Days the daily view goes back.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Restaurants evaluated, the first in id order (0 = all).
    #[arg(long, default_value_t = 0)]
    pub restaurants: usize,
    /// Restaurants labelled `--repeats` times to measure consistency.
    #[arg(long, default_value_t = 4)]
    pub consistency: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Sampling caps to measure the aggregate's error and tokens at.
    #[arg(long, value_delimiter = ',', default_value = "8,16,24,32,48")]
    pub caps: Vec<usize>,
    /// Random draws per cap and restaurant.
    #[arg(long, default_value_t = 50)]
    pub draws: usize,
    /// Also write every figure, per restaurant too, as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// CSV (header row) or JSONL files with restaurant_id, review_id, text and optional rating,
    /// created_at, lang.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Analyse every restaurant again, even those whose input and prompts did not change.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The restaurant_id as it appears in the input files.
    pub restaurant_id: String,
    #[command(flatten)]
    pub job: JobArgs,
    /// Print the results as one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Analyse again even if current results exist.
    #[arg(long)]
    pub force: bool,
}

/// Where the configuration comes from: a job file, then these overrides.
#[derive(Debug, Args, Default)]
pub struct JobArgs {
    /// Job file (`jobs/*.toml`) describing data, models, endpoints, K, budgets and SLAs.
    #[arg(long, env = "PALATE_JOB")]
    pub job: Option<PathBuf>,
    /// SQLite database path.
    #[arg(long, env = "PALATE_DATABASE")]
    pub database: Option<PathBuf>,
    /// Folder for `<input>.<hash of its path>.rejects.jsonl` files.
    #[arg(long, env = "PALATE_REJECTS_DIR")]
    pub rejects_dir: Option<PathBuf>,
    /// Input files (replace the job's list).
    #[arg(long = "input", env = "PALATE_INPUT", value_delimiter = ',')]
    pub input: Vec<PathBuf>,
    /// OpenAI-compatible base URL(s), e.g. http://vllm:8000/v1 (replace the job's list).
    #[arg(long = "endpoint", env = "PALATE_ENDPOINT", value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// Model name sent to the server.
    #[arg(long, env = "PALATE_MODEL")]
    pub model: Option<String>,
    /// Representative reviews per restaurant. Larger K: better coverage, longer prompts.
    #[arg(long, env = "PALATE_K")]
    pub k: Option<usize>,
    /// Diverse reviews added by MMR after the K representative ones.
    #[arg(long, env = "PALATE_DIVERSE")]
    pub diverse: Option<usize>,
    /// Requests in flight at once. vLLM batches them; too many only lengthens its queue.
    #[arg(long, env = "PALATE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Restaurants analysed at the same time.
    #[arg(long, env = "PALATE_RESTAURANT_CONCURRENCY")]
    pub restaurant_concurrency: Option<usize>,
    /// Embedding model folder (see scripts/setup.sh).
    #[arg(long, env = "PALATE_EMBED_MODEL_DIR")]
    pub embed_model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// Bearer token for the LLM endpoints.
    #[arg(long, env = "PALATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Bearer token of the embeddings server (`[embed] backend = "openai"`).
    #[arg(long, env = "PALATE_EMBED_API_KEY", hide_env_values = true)]
    pub embed_api_key: Option<String>,
    /// API key of the Qdrant server (`[index] backend = "qdrant"`).
    #[arg(long, env = "PALATE_QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// The app database's URL (`[sink] kind = "mariadb"|"postgres"`); it holds a password.
    #[arg(long, env = "PALATE_SINK_URL", hide_env_values = true)]
    pub sink_url: Option<String>,
    /// This worker's share of the catalogue, `i/n` (0-based): it ingests and analyses only the
    /// restaurants whose id hashes to shard i. Each worker has its own work database.
    #[arg(long, env = "PALATE_SHARD")]
    pub shard: Option<crate::domain::Shard>,
}
