//! cli: command-line definitions only (clap derive). Flags override the job file; every flag can
//! also come from a `PALATE_*` environment variable, which is how cron jobs usually set secrets.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// successful analysis. Exit codes: 0 all done, 1 error, 3 some analyses failed validation,
    /// 4 another run holds the database lock, 130 interrupted.
    Run(RunArgs),
    /// Analyse one restaurant (already ingested) and print its three results.
    Analyze(AnalyzeArgs),
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
    /// Folder for `<input>.rejects.jsonl` files.
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
}
