//! config: a job file (`jobs/*.toml`) plus flags and environment variables, validated into one
//! [`Config`]. Relative paths in a job file are taken from the directory palate runs in (the
//! repository root in the README's commands).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::JobArgs;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read job file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("job file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The job file as written. Every section and field has a default except the inputs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobFile {
    pub job: JobSection,
    pub embed: EmbedSection,
    pub select: SelectSection,
    pub llm: LlmSection,
    pub plan: PlanSection,
    pub sla: SlaSection,
    pub cost: CostSection,
    pub metrics: MetricsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSection {
    /// Name recorded with each run.
    pub name: String,
    /// SQLite database holding reviews, embeddings, results and metrics.
    pub database: PathBuf,
    /// CSV or JSONL review files ingested at the start of `palate run`.
    pub inputs: Vec<PathBuf>,
    /// Folder for `<input>.rejects.jsonl` files.
    pub rejects_dir: PathBuf,
    /// Reviews longer than this (bytes of UTF-8) are rejected at ingest.
    pub max_review_bytes: usize,
    /// Restaurants analysed at the same time (their requests share `llm.max_in_flight`).
    pub restaurant_concurrency: usize,
}

impl Default for JobSection {
    fn default() -> Self {
        Self {
            name: "adhoc".into(),
            database: "out/palate.db".into(),
            inputs: Vec::new(),
            rejects_dir: "out/rejects".into(),
            max_review_bytes: 4000,
            restaurant_concurrency: 4,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedSection {
    /// Folder with model.onnx, tokenizer.json, config.json, special_tokens_map.json,
    /// tokenizer_config.json (made by `scripts/setup.sh embed`).
    pub model_dir: PathBuf,
    /// Identifies the model in the embedding cache: change it when the model changes.
    pub model_id: String,
    /// ONNX Runtime shared library (`libonnxruntime.so.*`).
    pub ort_dylib: PathBuf,
    /// Texts per ONNX call; batches are sorted by length so padding stays small.
    pub batch_size: usize,
    /// ONNX intra-op threads (0 = all cores).
    pub threads: usize,
}

impl Default for EmbedSection {
    fn default() -> Self {
        Self {
            model_dir: ".cache/models/me5".into(),
            model_id: "multilingual-e5-small-q4".into(),
            ort_dylib: ".cache/onnxruntime/libonnxruntime.so.1.24.4".into(),
            batch_size: 32,
            threads: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectSection {
    /// Representative reviews: the K nearest the restaurant's centroid.
    pub k: usize,
    /// Extra diverse reviews chosen by MMR after the K representative ones.
    pub diverse: usize,
    /// MMR trade-off: 1.0 = pure relevance to the centroid, 0.0 = pure diversity.
    pub lambda: f32,
}

impl Default for SelectSection {
    fn default() -> Self {
        Self {
            k: 8,
            diverse: 4,
            lambda: 0.5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSection {
    /// OpenAI-compatible base URLs, e.g. `http://10.0.0.5:8000/v1`.
    pub endpoints: Vec<String>,
    /// Model name sent in each request (vLLM's `--served-model-name`).
    pub model: String,
    /// Models tried in order when `model` keeps failing a request (transient errors past the
    /// retries, or a permanent error); a model may appear again, e.g. `["fast", "general"]`.
    pub fallback_models: Vec<String>,
    /// Requests in flight at once per endpoint, over all restaurants. More requests wait in
    /// palate's queue, where `scheduling` orders them.
    pub max_in_flight: usize,
    /// `sjf` (shortest estimated prefill first) or `fifo`.
    pub scheduling: crate::infer::schedule::Order,
    /// Send the same order as vLLM's `priority` field; needs `--scheduling-policy priority`.
    pub send_priority: bool,
    /// A request waiting longer than this goes before shorter ones (no starvation).
    pub starvation_s: f64,
    /// How a restaurant's requests after its first go: `concurrent` suits vLLM, whose prefix
    /// cache serves every sequence; `sequential` suits llama.cpp, which keeps a prompt's prefix
    /// in one slot, so only the next request on that slot finds it.
    pub follow_ups: FollowUps,
    /// Quotas enforced with governor; unset = unlimited.
    pub max_requests_per_s: Option<f64>,
    pub max_prompt_tokens_per_s: Option<f64>,
    /// HTTP attempts per model for transient errors, and their backoff.
    pub attempts: u32,
    pub backoff_base_s: f64,
    pub backoff_max_s: f64,
    /// An endpoint failing this many requests in a row is benched for `bench_s`.
    pub bench_after_failures: u32,
    pub bench_s: f64,
    pub connect_timeout_s: f64,
    /// Longest silence allowed while reading a response (stream chunks included).
    pub read_timeout_s: f64,
    /// Longest a whole request may take.
    pub request_timeout_s: f64,
    pub temperature: f32,
    pub max_tokens_sentiment: u32,
    pub max_tokens_summary: u32,
    pub max_tokens_strengths: u32,
    /// Folder with the prompt files.
    pub prompts_dir: PathBuf,
    /// API key sent as a bearer token (vLLM `--api-key`); usually set by `PALATE_API_KEY`.
    pub api_key: Option<String>,
}

impl Default for LlmSection {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:8080/v1".into()],
            model: "default".into(),
            fallback_models: Vec::new(),
            max_in_flight: 8,
            scheduling: crate::infer::schedule::Order::Sjf,
            send_priority: false,
            starvation_s: 60.0,
            follow_ups: FollowUps::Concurrent,
            max_requests_per_s: None,
            max_prompt_tokens_per_s: None,
            attempts: 3,
            backoff_base_s: 0.5,
            backoff_max_s: 30.0,
            bench_after_failures: 3,
            bench_s: 30.0,
            connect_timeout_s: 5.0,
            read_timeout_s: 120.0,
            request_timeout_s: 600.0,
            temperature: 0.0,
            max_tokens_sentiment: 400,
            max_tokens_summary: 400,
            max_tokens_strengths: 400,
            prompts_dir: "prompts".into(),
            api_key: None,
        }
    }
}

/// See [`LlmSection::follow_ups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUps {
    Concurrent,
    Sequential,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSection {
    /// The served model's `tokenizer.json` (Hugging Face format): exact token counts for batching
    /// and scheduling. Unset: the documented estimate of `plan::estimate_tokens`.
    pub tokenizer: Option<PathBuf>,
    /// Most reviews one sentiment request labels.
    pub sentiment_batch_reviews: usize,
    /// Most review tokens one sentiment request labels.
    pub sentiment_batch_tokens: u64,
}

impl Default for PlanSection {
    fn default() -> Self {
        Self {
            tokenizer: None,
            sentiment_batch_reviews: 16,
            sentiment_batch_tokens: 2048,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaSection {
    /// Time to first token a request must meet to count as good.
    pub ttft_ms: f64,
    /// Time per output token a request must meet to count as good.
    pub tpot_ms: f64,
    /// End-to-end time a request must meet to count as good; unset = no limit.
    pub e2e_ms: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSection {
    /// Price of one GPU hour of the serving deployment; 0 = no cost in reports.
    pub gpu_usd_per_hour: f64,
    /// GPUs the deployment uses during the run.
    pub gpus: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Seconds between scrapes of each endpoint's Prometheus `/metrics` (and NVML); 0 = off.
    pub scrape_interval_s: f64,
    /// Sample GPU utilisation and memory through NVML where the library is present.
    pub nvml: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            scrape_interval_s: 5.0,
            nvml: true,
        }
    }
}

impl Default for SlaSection {
    fn default() -> Self {
        Self {
            ttft_ms: 2000.0,
            tpot_ms: 100.0,
            e2e_ms: None,
        }
    }
}

/// Everything a command needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub database: PathBuf,
    pub inputs: Vec<PathBuf>,
    pub rejects_dir: PathBuf,
    pub max_review_bytes: usize,
    pub restaurant_concurrency: usize,
    pub embed: EmbedConfig,
    pub select: SelectConfig,
    pub llm: LlmConfig,
    pub plan: PlanConfig,
    pub sla: crate::metrics::Sla,
    pub cost: crate::metrics::Cost,
    /// Scrape interval; `None` = no scraping.
    pub scrape_interval: Option<Duration>,
    pub nvml: bool,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub tokenizer: Option<PathBuf>,
    pub sentiment_batch_reviews: usize,
    pub sentiment_batch_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct EmbedConfig {
    pub model_dir: PathBuf,
    pub model_id: String,
    pub ort_dylib: PathBuf,
    pub batch_size: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct SelectConfig {
    pub k: usize,
    pub diverse: usize,
    pub lambda: f32,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub endpoints: Vec<String>,
    pub model: String,
    pub fallback_models: Vec<String>,
    pub send_priority: bool,
    pub follow_ups: FollowUps,
    pub schedule: crate::infer::schedule::ScheduleConfig,
    pub retry: crate::infer::retry::RetryPolicy,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub request_timeout: Duration,
    pub temperature: f32,
    pub max_tokens: MaxTokens,
    pub prompts_dir: PathBuf,
    pub api_key: Option<String>,
}

/// Output budget per analysis kind; a reply cut at this budget is a failure, never a result.
#[derive(Debug, Clone, Copy)]
pub struct MaxTokens {
    pub sentiment: u32,
    pub summary: u32,
    pub strengths: u32,
}

impl JobFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })
    }
}

impl Config {
    /// Job file (if any) overridden by flags and environment variables, then validated.
    pub fn from_args(args: &JobArgs) -> Result<Self, ConfigError> {
        let mut file = match &args.job {
            Some(path) => JobFile::load(path)?,
            None => JobFile::default(),
        };
        apply_overrides(&mut file, args);
        Self::validate(file)
    }

    pub fn validate(f: JobFile) -> Result<Self, ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if f.llm.endpoints.is_empty() {
            return bad("llm.endpoints is empty: give at least one OpenAI-compatible base URL");
        }
        for e in &f.llm.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "llm endpoint {e:?} must start with http:// or https://"
                )));
            }
        }
        if f.llm.max_in_flight == 0 || f.job.restaurant_concurrency == 0 {
            return bad("llm.max_in_flight and job.restaurant_concurrency must be at least 1");
        }
        if f.llm.attempts == 0 {
            return bad("llm.attempts must be at least 1");
        }
        if f.plan.sentiment_batch_reviews == 0 || f.plan.sentiment_batch_tokens == 0 {
            return bad(
                "plan.sentiment_batch_reviews and plan.sentiment_batch_tokens must be at least 1",
            );
        }
        for (name, v) in [
            ("llm.max_requests_per_s", f.llm.max_requests_per_s),
            ("llm.max_prompt_tokens_per_s", f.llm.max_prompt_tokens_per_s),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a positive number"
                )));
            }
        }
        if f.select.k == 0 {
            return bad("select.k must be at least 1");
        }
        if !(0.0..=1.0).contains(&f.select.lambda) {
            return bad("select.lambda must be between 0 and 1");
        }
        if f.embed.batch_size == 0 {
            return bad("embed.batch_size must be at least 1");
        }
        let secs = |s: f64, name: &str| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(ConfigError::Invalid(format!(
                    "{name} must be a positive number of seconds"
                )))
            }
        };
        Ok(Self {
            name: f.job.name,
            database: f.job.database,
            inputs: f.job.inputs,
            rejects_dir: f.job.rejects_dir,
            max_review_bytes: f.job.max_review_bytes,
            restaurant_concurrency: f.job.restaurant_concurrency,
            embed: EmbedConfig {
                model_dir: f.embed.model_dir,
                model_id: f.embed.model_id,
                ort_dylib: f.embed.ort_dylib,
                batch_size: f.embed.batch_size,
                threads: f.embed.threads,
            },
            select: SelectConfig {
                k: f.select.k,
                diverse: f.select.diverse,
                lambda: f.select.lambda,
            },
            llm: LlmConfig {
                connect_timeout: secs(f.llm.connect_timeout_s, "llm.connect_timeout_s")?,
                read_timeout: secs(f.llm.read_timeout_s, "llm.read_timeout_s")?,
                request_timeout: secs(f.llm.request_timeout_s, "llm.request_timeout_s")?,
                endpoints: f
                    .llm
                    .endpoints
                    .iter()
                    .map(|e| e.trim_end_matches('/').to_string())
                    .collect(),
                model: f.llm.model,
                fallback_models: f.llm.fallback_models,
                send_priority: f.llm.send_priority,
                follow_ups: f.llm.follow_ups,
                schedule: crate::infer::schedule::ScheduleConfig {
                    order: f.llm.scheduling,
                    starvation: secs(f.llm.starvation_s, "llm.starvation_s")?,
                    max_in_flight: f.llm.max_in_flight,
                    bench_after: f.llm.bench_after_failures,
                    bench_for: secs(f.llm.bench_s, "llm.bench_s")?,
                    requests_per_s: f.llm.max_requests_per_s,
                    prompt_tokens_per_s: f.llm.max_prompt_tokens_per_s,
                },
                retry: crate::infer::retry::RetryPolicy {
                    attempts: f.llm.attempts,
                    base: secs(f.llm.backoff_base_s, "llm.backoff_base_s")?,
                    max: secs(f.llm.backoff_max_s, "llm.backoff_max_s")?,
                },
                temperature: f.llm.temperature,
                max_tokens: MaxTokens {
                    sentiment: f.llm.max_tokens_sentiment,
                    summary: f.llm.max_tokens_summary,
                    strengths: f.llm.max_tokens_strengths,
                },
                prompts_dir: f.llm.prompts_dir,
                api_key: f.llm.api_key,
            },
            plan: PlanConfig {
                tokenizer: f.plan.tokenizer,
                sentiment_batch_reviews: f.plan.sentiment_batch_reviews,
                sentiment_batch_tokens: f.plan.sentiment_batch_tokens,
            },
            sla: crate::metrics::Sla {
                ttft_ms: f.sla.ttft_ms,
                tpot_ms: f.sla.tpot_ms,
                e2e_ms: f.sla.e2e_ms,
            },
            cost: crate::metrics::Cost {
                gpu_usd_per_hour: f.cost.gpu_usd_per_hour,
                gpus: f.cost.gpus,
            },
            scrape_interval: (f.metrics.scrape_interval_s > 0.0)
                .then(|| secs(f.metrics.scrape_interval_s, "metrics.scrape_interval_s"))
                .transpose()?,
            nvml: f.metrics.nvml,
        })
    }
}

fn apply_overrides(f: &mut JobFile, a: &JobArgs) {
    if let Some(v) = &a.database {
        f.job.database = v.clone();
    }
    if let Some(v) = &a.rejects_dir {
        f.job.rejects_dir = v.clone();
    }
    if !a.input.is_empty() {
        f.job.inputs = a.input.clone();
    }
    if !a.endpoint.is_empty() {
        f.llm.endpoints = a.endpoint.clone();
    }
    if let Some(v) = &a.model {
        f.llm.model = v.clone();
    }
    if let Some(v) = a.k {
        f.select.k = v;
    }
    if let Some(v) = a.diverse {
        f.select.diverse = v;
    }
    if let Some(v) = a.max_in_flight {
        f.llm.max_in_flight = v;
    }
    if let Some(v) = a.restaurant_concurrency {
        f.job.restaurant_concurrency = v;
    }
    if let Some(v) = &a.embed_model_dir {
        f.embed.model_dir = v.clone();
    }
    if let Some(v) = &a.ort_dylib {
        f.embed.ort_dylib = v.clone();
    }
    if let Some(v) = &a.api_key {
        f.llm.api_key = Some(v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_and_nightly_jobs_parse_and_validate() {
        for job in ["jobs/demo.toml", "jobs/nightly.toml"] {
            let f = JobFile::load(Path::new(job)).unwrap();
            let c = Config::validate(f).unwrap();
            assert!(!c.inputs.is_empty(), "{job} has inputs");
        }
    }

    #[test]
    fn unknown_field_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[select]\nkk = 3\n").unwrap();
        let e = JobFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("kk"), "{e}");
    }

    #[test]
    fn lambda_out_of_range_is_rejected() {
        let mut f = JobFile::default();
        f.select.lambda = 1.5;
        assert!(Config::validate(f)
            .unwrap_err()
            .to_string()
            .contains("lambda"));
    }
}
