//! `palate bench` subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::JobArgs;

#[derive(Debug, Subcommand)]
pub enum BenchSuite {
    /// One scheduling mode of palate's client (sequential, FIFO, SJF, server priority, or the
    /// offline ceiling), once, closed or open loop, against a server in another process
    /// (`scripts/bench_scheduling.sh` runs them all).
    Scheduling(Box<SchedulingArgs>),
    /// Sweeps a real server (decode at 1…N parallel sequences, prefill over prompt lengths, a
    /// grammar's cost, token counts) and fits the simulator's cost model to it; writes the
    /// profile for `palate bench serve --profile` and reports the fit's error.
    Calibrate(Box<CalibrateArgs>),
    /// Every step in llama-server debug logs (`scripts/serve_llm.py --debug-log`) against a
    /// profile's step cost, by kind of step (`scripts/bench_calibrate.sh` runs it on its check).
    Steps(StepsArgs),
    /// TOP-K + MMR for one restaurant of many reviews, through each vector index backend
    /// (Qdrant with `--qdrant URL`), repeated with the rounds' spread.
    Selection(SelectionArgs),
    /// The simulated vLLM server in its own process, until SIGINT/SIGTERM: a named profile's
    /// engine, or a zero-cost one for measuring palate's own CPU and memory per request.
    Serve(ServeArgs),
    /// A synthetic catalogue in the job's database: restaurants of sample review texts, ingested
    /// as files are, and seeded random unit vectors under the job's embedding model id (so a run
    /// needs no embedding model). For `scripts/bench_cost.sh`; never for real data.
    Catalogue(Box<CatalogueArgs>),
    /// Reviews embedded per second by the job's embedder (`[embed]`), over the texts of a JSONL
    /// file, in rounds (`scripts/bench_embed.sh` compares it with Python fastembed).
    Embedding(Box<EmbeddingArgs>),
}

#[derive(Debug, Args)]
pub struct EmbeddingArgs {
    #[arg(long, default_value = "data/reviews.jsonl")]
    pub texts: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// The simulator's profile (engine, token counts, answers); the built-in
    /// `data/profiles/qwen2.5-7b-h100.toml` if not given.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// No step time at all: the server costs nothing but its HTTP and JSON (for measuring
    /// palate's own CPU and memory).
    #[arg(long)]
    pub zero_cost: bool,
    /// vLLM's `--scheduling-policy priority`.
    #[arg(long)]
    pub priority: bool,
    /// Real seconds per simulated second (0.25: four times faster than the modelled server).
    #[arg(long)]
    pub time_scale: Option<f64>,
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Answers this many times the profile's lengths (the output length sweep).
    #[arg(long, default_value_t = 1.0)]
    pub output_scale: f64,
    /// Answer lengths in the order the profile lists them (a real run's, as `bench calibrate
    /// --outputs-from` writes them), each kind's in turn, rather than drawn at random: a
    /// calibration check then compares the cost model on the same answers as the real run's.
    #[arg(long)]
    pub replay_outputs: bool,
    /// Answer lengths and refusals from this work database's last run instead of the
    /// profile's (each repeat of a calibration check replays its own real run).
    #[arg(long)]
    pub outputs_from: Option<PathBuf>,
    /// That run's reviews per sentiment request (to turn its lengths into lengths per review).
    #[arg(long, default_value_t = 1)]
    pub reviews_per_sentiment: u32,
    /// Model names served.
    #[arg(long = "model", default_value = "sim")]
    pub models: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CatalogueArgs {
    #[arg(long, default_value_t = 1000)]
    pub restaurants: usize,
    /// Reviews per restaurant.
    #[arg(long, default_value_t = 40)]
    pub reviews: usize,
    /// Review texts are drawn from this JSONL file (a `text` field per line).
    #[arg(long, default_value = "data/reviews.jsonl")]
    pub texts: PathBuf,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Reviews of the restaurant.
    #[arg(long, default_value_t = 1000)]
    pub reviews: usize,
    /// Vector dimension (multilingual-e5-small: 384).
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    #[arg(long, default_value_t = 8)]
    pub k: usize,
    #[arg(long, default_value_t = 4)]
    pub diverse: usize,
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f32,
    /// Rounds (at least 3: the spread is across rounds).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Selections per round.
    #[arg(long, default_value_t = 50)]
    pub per_round: usize,
    /// A Qdrant server's gRPC URL, to time that backend too (needs `--features qdrant`).
    #[arg(long, env = "QDRANT_URL")]
    pub qdrant: Option<String>,
    /// Also write the figures here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SchedulingArgs {
    /// The server's OpenAI-compatible base URL (`palate bench serve`, llama-server, vLLM).
    #[arg(long, default_value = "http://127.0.0.1:8090/v1")]
    pub endpoint: String,
    #[arg(long, default_value = "sim")]
    pub model: String,
    /// sequential, fifo, sjf, priority (the server orders: needs `--scheduling-policy
    /// priority`) or ceiling (every first request at t = 0, no client limit).
    #[arg(long, value_parser = ["sequential", "fifo", "sjf", "priority", "ceiling"])]
    pub mode: String,
    /// Restaurants in progress at once (closed loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: restaurants arrive as a Poisson process of this many per second.
    #[arg(long)]
    pub arrival_rate: Option<f64>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// palate's in-flight limit; more ready requests wait in its queue.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// The server's `max_num_seqs` (the simulator's `/metrics` says it itself).
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    #[arg(long, default_value_t = 200)]
    pub restaurants: usize,
    /// Reviews per restaurant, all in its prompts.
    #[arg(long, default_value_t = 40)]
    pub reviews: usize,
    /// Reviews per sentiment request.
    #[arg(long, default_value_t = 16)]
    pub sentiment_batch: usize,
    /// Each review at this multiple of its length (the prompt length sweep).
    #[arg(long, default_value_t = 1.0)]
    pub review_scale: f64,
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Review texts to build restaurants from (JSONL with a `text` field).
    #[arg(long, default_value = "data/reviews.jsonl")]
    pub reviews_file: PathBuf,
    #[arg(long, default_value = "prompts")]
    pub prompts_dir: PathBuf,
    /// Write the workload's first requests here as JSONL (for `scripts/bench_naive.py`) and
    /// stop.
    #[arg(long)]
    pub export_workload: Option<PathBuf>,
    /// Also append the report as one JSON line here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StepsArgs {
    /// llama-server debug logs, pooled.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The fitted profile whose step cost prices them.
    #[arg(long, default_value = "out/bench/profile-fitted.toml")]
    pub profile: PathBuf,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The server's OpenAI-compatible base URL.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub model: String,
    /// Parallel sequences of the decode sweep: every count the job runs at (llama.cpp's CPU
    /// kernels are not monotonic: 3 sequences can cost more than 4).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    pub parallel: Vec<usize>,
    /// Prompt lengths (words) of the decode sweep.
    #[arg(long, value_delimiter = ',', default_value = "16,1000")]
    pub decode_contexts: Vec<usize>,
    /// Prompt lengths of the prefill sweep (words; the server's count is used).
    #[arg(long, value_delimiter = ',', default_value = "32,128,512,1024,2048")]
    pub prompts: Vec<usize>,
    /// Prompt lengths (words) each sent while other requests decode: what a step of several
    /// sequences costs (the flag with no value: none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "100,400")]
    pub mixed_prompts: Vec<usize>,
    /// How many requests decode beside each mixed prompt (those above `--max-num-seqs` − 1
    /// are left out).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub mixed_decoding: Vec<usize>,
    /// Prompt lengths (words) of the requests decoding beside a mixed prompt: a job's prompts
    /// are prefilled beside answers to long prompts as well as to short ones.
    #[arg(long, value_delimiter = ',', default_value = "16,1000")]
    pub mixed_contexts: Vec<usize>,
    /// Output tokens of each decode request.
    #[arg(long, default_value_t = 64)]
    pub output_tokens: usize,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The server's sequence limit (llama.cpp `--parallel`, vLLM `--max-num-seqs`).
    #[arg(long, default_value_t = 4)]
    pub max_num_seqs: usize,
    /// Tokens per step (llama.cpp `n_batch`, vLLM `--max-num-batched-tokens`).
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// KV cache tokens (llama.cpp `--ctx`).
    #[arg(long, default_value_t = 32768)]
    pub kv_tokens: usize,
    #[arg(long, default_value = "data/reviews.jsonl")]
    pub reviews_file: PathBuf,
    /// A work database whose last run's `vllm_metrics` give the answers' lengths and refusals.
    #[arg(long)]
    pub outputs_from: Option<PathBuf>,
    /// That run's reviews per sentiment request (to turn its lengths into lengths per review).
    #[arg(long, default_value_t = 1)]
    pub reviews_per_sentiment: u32,
    /// Where the fitted profile goes.
    #[arg(long, default_value = "out/bench/profile-fitted.toml")]
    pub out: PathBuf,
    /// Also write every point and the fit as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
