//! infer: sends chat completions to OpenAI-compatible endpoints (vLLM in production, llama.cpp's
//! server in tests) over reqwest, streaming with `stream_options.include_usage` so TTFT and
//! inter-token gaps are measured on the client; [`sse`] decodes the stream.
//!
//! Every request waits its turn in the [`schedule`] (shortest prefill first, a place per endpoint,
//! governor quotas), goes to the least busy endpoint in rotation, and is retried by [`retry`]
//! while its errors are transient. A model that still fails hands the request to the next model
//! of the job's fallback chain. Every HTTP attempt becomes one metrics row.

mod body;
mod client;
mod config;
pub mod request_id;
pub mod retry;
pub mod schedule;
pub mod sse;
mod stream;

use std::fmt;

use async_trait::async_trait;
use serde_json::Value;

pub use client::OpenAiClient;
pub use config::{FollowUps, LlmConfig};

use crate::domain::{ErrorClass, Failure, Kind};
use crate::metrics::RequestMetrics;
use crate::plan::Message;

/// Whether a `/v1/models` answer is llama.cpp's server's (`owned_by: llamacpp`), which answers
/// any model name with the one it loaded and reuses prompts per slot rather than sharing a cache.
pub fn served_by_llama_cpp(models: &Value) -> bool {
    (models["data"].as_array().into_iter().flatten()).any(|m| m["owned_by"] == "llamacpp")
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// Worth another attempt: 5xx, 429, 408, connect errors, timeouts, cut or malformed streams.
    #[error("{0}")]
    Transient(String),
    /// Another attempt would fail the same way: 4xx, unknown model, refused parameters.
    #[error("{0}")]
    Permanent(String),
    /// The prompt does not fit the model's context.
    #[error("{0}")]
    ContextLength(String),
    /// Every model of the fallback chain failed; each model's own error, in the order tried.
    #[error("every model failed: {}", ModelErrors(.0))]
    AllModelsFailed(Vec<ModelError>),
}

/// One model's failure in a fallback chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelError {
    pub model: String,
    pub error: InferError,
}

struct ModelErrors<'a>(&'a [ModelError]);

impl fmt::Display for ModelErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            let sep = if i > 0 { "; " } else { "" };
            write!(f, "{sep}{}: {}", e.model, e.error)?;
        }
        Ok(())
    }
}

impl InferError {
    /// An error of `class`; `InvalidOutput` is validation's class and is taken as permanent here.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        let m = message.into();
        match class {
            ErrorClass::Transient => Self::Transient(m),
            ErrorClass::ContextLength => Self::ContextLength(m),
            ErrorClass::Permanent | ErrorClass::InvalidOutput => Self::Permanent(m),
        }
    }

    /// The class the retry logic acts on; a whole chain's failure takes its last model's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transient(_) => ErrorClass::Transient,
            Self::Permanent(_) => ErrorClass::Permanent,
            Self::ContextLength(_) => ErrorClass::ContextLength,
            Self::AllModelsFailed(v) => v.last().map_or(ErrorClass::Permanent, |e| e.error.class()),
        }
    }

    /// The analysis failure this error makes, grouped by class in the run summary.
    pub fn failure(&self) -> Failure {
        let class = self.class();
        let group = match self {
            Self::AllModelsFailed(_) => format!("request failed ({class}, every model)"),
            _ => format!("request failed ({class})"),
        };
        Failure {
            class,
            message: format!("{group}: {self}"),
            group,
        }
    }
}

/// One chat request of an analysis.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub restaurant_id: String,
    pub kind: Kind,
    /// 1 for the first request of an analysis, 2 for its repair retry.
    pub attempt: u32,
    pub messages: Vec<Message>,
    pub schema: Value,
    pub max_tokens: u32,
    /// Estimated prompt tokens the server must compute (the part not in its prefix cache): the
    /// scheduling key, and vLLM's `priority` when the job sends it.
    pub prefill_tokens: u64,
}

/// The model's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub content: String,
    pub finish_reason: Option<String>,
    /// The model that answered (the first of the chain unless it failed).
    pub model: String,
}

/// What a request produced, with one metrics row per HTTP attempt.
#[derive(Debug)]
pub struct ChatOutcome {
    pub result: Result<Reply, InferError>,
    pub metrics: Vec<RequestMetrics>,
}

impl ChatOutcome {
    /// Records the answer on the request's span: the model of the last attempt, its tokens
    /// and TTFT, and `ok` or the error class.
    pub fn record(&self, span: &tracing::Span) {
        if let Some(m) = self.metrics.last() {
            span.record("model", m.model.as_str());
            if let Some(t) = m.prompt_tokens {
                span.record("prompt_tokens", t);
            }
            if let Some(t) = m.completion_tokens {
                span.record("completion_tokens", t);
            }
            if let Some(t) = m.ttft_ms {
                span.record("ttft_ms", t);
            }
        }
        match &self.result {
            Ok(_) => span.record("outcome", "ok"),
            Err(e) => span.record("outcome", e.class().as_str()),
        };
    }
}

/// The seam between the pipeline and the LLM servers: [`OpenAiClient`] in production, a scripted
/// client in the pipeline's unit tests.
#[async_trait]
pub trait LlmClient: Send + Sync {
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome;

    /// Checks that the server answers before the first request of a run; a run with nothing
    /// to analyse never calls it, so it needs no server.
    async fn ready(&self) -> Result<(), InferError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_chain_keeps_each_models_error_and_the_last_class() {
        let e = InferError::AllModelsFailed(vec![
            ModelError {
                model: "general".into(),
                error: InferError::Permanent("HTTP 404: no such model".into()),
            },
            ModelError {
                model: "fast".into(),
                error: InferError::Transient("HTTP 503: busy".into()),
            },
        ]);
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(
            e.to_string(),
            "every model failed: general: HTTP 404: no such model; fast: HTTP 503: busy"
        );
        assert_eq!(e.failure().group, "request failed (transient, every model)");
    }
}
