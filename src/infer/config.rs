//! The job file's `[llm]` section: endpoints, models, scheduling, retries, timeouts, output
//! budgets. Deserialised straight from the job file; [`LlmConfig::validate`] checks it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;
use super::schedule::{Order, ScheduleConfig};
use crate::domain::Secret;
use crate::plan::MaxTokens;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// OpenAI-compatible base URLs, e.g. `http://10.0.0.5:8000/v1`. Credentials in one
    /// (`https://user:pass@host/v1`) are sent, but stored and logged as `***`.
    #[serde(serialize_with = "redacted")]
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
    pub scheduling: Order,
    /// Send the same order as vLLM's `priority` field; needs `--scheduling-policy priority`.
    pub send_priority: bool,
    /// A request waiting longer than this goes before shorter ones (no starvation).
    pub starvation_s: f64,
    /// How a restaurant's requests after its first go: `concurrent` suits vLLM, whose prefix
    /// cache serves every sequence; `sequential` suits llama.cpp, which keeps a prompt's prefix
    /// in one slot, so only the next request on that slot finds it.
    pub follow_ups: FollowUps,
    /// Requests per second, enforced with governor; unset = unlimited.
    pub max_requests_per_s: Option<f64>,
    /// Prompt tokens per second, enforced with governor; unset = unlimited.
    pub max_prompt_tokens_per_s: Option<f64>,
    /// HTTP attempts per model for transient errors.
    pub attempts: u32,
    /// First backoff cap; it doubles per attempt up to `backoff_max_s` (full jitter below it).
    pub backoff_base_s: f64,
    pub backoff_max_s: f64,
    /// An endpoint failing this many requests in a row is ejected from rotation for `eject_s`.
    #[serde(alias = "bench_after_failures")]
    pub eject_after_failures: u32,
    #[serde(alias = "bench_s")]
    pub eject_s: f64,
    /// Reuse connections between requests. llama.cpp's server closes the connection after a
    /// streamed reply while announcing keep-alive, so the next request on it fails: turn this
    /// off for llama.cpp. vLLM keeps connections open.
    pub keep_alive: bool,
    pub connect_timeout_s: f64,
    /// Longest silence allowed while reading a response (stream chunks included).
    pub read_timeout_s: f64,
    /// Longest a whole request may take.
    pub request_timeout_s: f64,
    /// Sampling temperature of the sentiment labels: 0 (greedy) makes them reproducible,
    /// which the consistency measure of `palate eval` checks.
    pub temperature: f32,
    /// Sampling temperature of the summary and strengths: free text, where greedy decoding
    /// of a small model loops and copies one sentence into every aspect (docs/quality.md).
    /// Every request is seeded with its attempt number, so a rerun gives the same answers.
    pub text_temperature: f32,
    /// Fresh requests after an invalid answer (0 = none). A greedy model asked again gives the
    /// same answer, and shown its invalid answer it copies it (docs/quality.md), so a repair
    /// asks the original prompt again with the refusal's reason appended, sampled at
    /// `repair_temperature`.
    pub repairs: u32,
    pub repair_temperature: f32,
    /// Output budgets per kind; a reply cut at its budget is a failure, never a result.
    pub max_tokens_sentiment: u32,
    pub max_tokens_summary: u32,
    pub max_tokens_strengths: u32,
    /// Folder with the prompt files.
    pub prompts_dir: PathBuf,
    /// API key sent as a bearer token (vLLM `--api-key`); usually set by `PALATE_API_KEY`.
    pub api_key: Option<Secret>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:8080/v1".into()],
            model: "default".into(),
            fallback_models: Vec::new(),
            max_in_flight: 8,
            scheduling: Order::Sjf,
            send_priority: false,
            starvation_s: 60.0,
            follow_ups: FollowUps::Concurrent,
            max_requests_per_s: None,
            max_prompt_tokens_per_s: None,
            attempts: 3,
            backoff_base_s: 0.5,
            backoff_max_s: 30.0,
            eject_after_failures: 3,
            eject_s: 30.0,
            keep_alive: true,
            connect_timeout_s: 5.0,
            read_timeout_s: 120.0,
            request_timeout_s: 600.0,
            temperature: 0.0,
            text_temperature: 0.7,
            repairs: 2,
            repair_temperature: 0.7,
            max_tokens_sentiment: 400,
            max_tokens_summary: 400,
            max_tokens_strengths: 400,
            prompts_dir: "prompts".into(),
            api_key: None,
        }
    }
}

/// See [`LlmConfig::follow_ups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUps {
    Concurrent,
    Sequential,
}

/// As recorded: credentials in the endpoints redacted, the API key as `***`.
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "LlmConfig {shown}")
    }
}

fn redacted<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| crate::domain::redact_url(u)))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

impl LlmConfig {
    /// Checks every field and trims a trailing `/` from the endpoints.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err(
                "llm.endpoints is empty: give at least one OpenAI-compatible base URL".into(),
            );
        }
        for e in &mut self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "llm endpoint {e:?} must start with http:// or https://"
                ));
            }
            *e = e.trim_end_matches('/').to_string();
        }
        if self.max_in_flight == 0 {
            return Err("llm.max_in_flight must be at least 1".into());
        }
        for (name, t) in [
            ("llm.temperature", self.temperature),
            ("llm.text_temperature", self.text_temperature),
            ("llm.repair_temperature", self.repair_temperature),
        ] {
            if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
                return Err(format!("{name} must be between 0 and 2"));
            }
        }
        if self.attempts == 0 {
            return Err("llm.attempts must be at least 1".into());
        }
        for (name, v) in [
            ("llm.max_requests_per_s", self.max_requests_per_s),
            ("llm.max_prompt_tokens_per_s", self.max_prompt_tokens_per_s),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        for (name, v) in [
            ("llm.starvation_s", self.starvation_s),
            ("llm.backoff_base_s", self.backoff_base_s),
            ("llm.backoff_max_s", self.backoff_max_s),
            ("llm.eject_s", self.eject_s),
            ("llm.connect_timeout_s", self.connect_timeout_s),
            ("llm.read_timeout_s", self.read_timeout_s),
            ("llm.request_timeout_s", self.request_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        Ok(())
    }

    pub fn schedule(&self) -> ScheduleConfig {
        ScheduleConfig {
            order: self.scheduling,
            starvation: secs(self.starvation_s),
            max_in_flight: self.max_in_flight,
            eject_after: self.eject_after_failures,
            eject_for: secs(self.eject_s),
            requests_per_s: self.max_requests_per_s,
            prompt_tokens_per_s: self.max_prompt_tokens_per_s,
        }
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts,
            base: secs(self.backoff_base_s),
            max: secs(self.backoff_max_s),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout_s)
    }

    pub fn read_timeout(&self) -> Duration {
        secs(self.read_timeout_s)
    }

    pub fn request_timeout(&self) -> Duration {
        secs(self.request_timeout_s)
    }

    pub fn max_tokens(&self) -> MaxTokens {
        MaxTokens {
            sentiment: self.max_tokens_sentiment,
            summary: self.max_tokens_summary,
            strengths: self.max_tokens_strengths,
        }
    }
}
