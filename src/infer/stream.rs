//! Reads one streamed chat completion: content, finish reason, usage, and the timings measured on
//! the way (TTFT, inter-token gaps) or reported by the server (llama.cpp `timings`, vLLM
//! per-request `metrics`).

use async_openai::config::OpenAIConfig;
use async_openai::Client;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::retry::classify;
use super::{InferError, Reply};
use crate::domain::millis;
use crate::metrics::percentile;

#[derive(Debug, Deserialize)]
struct Chunk {
    id: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    /// llama.cpp's server timings.
    timings: Option<Timings>,
    /// vLLM's per-request metrics (`--enable-per-request-metrics`).
    metrics: Option<ServerMetrics>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Timings {
    prompt_ms: Option<f64>,
    predicted_ms: Option<f64>,
    cache_n: Option<u64>,
}

/// vLLM's per-request `metrics` (`--enable-per-request-metrics`; its
/// `docs/features/per_request_metrics.md`). `time_to_first_token_ms` counts from when the
/// request was scheduled, after `queue_time_ms`: it is the prefill.
#[derive(Debug, Deserialize)]
struct ServerMetrics {
    queue_time_ms: Option<f64>,
    time_to_first_token_ms: Option<f64>,
    generation_time_ms: Option<f64>,
}

/// What the client measured, or the server reported, while one response streamed.
#[derive(Debug, Clone, Default)]
pub(super) struct Measured {
    pub request_id: Option<String>,
    pub finish_reason: Option<String>,
    pub ttft_ms: Option<f64>,
    pub itl_mean_ms: Option<f64>,
    pub itl_p95_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub server_queue_ms: Option<f64>,
    pub server_prompt_ms: Option<f64>,
    pub server_decode_ms: Option<f64>,
}

impl Measured {
    /// Takes what a chunk carries besides content: usage, llama.cpp timings, vLLM metrics.
    fn add(&mut self, chunk: &Chunk) {
        if self.request_id.is_none() {
            self.request_id = chunk.id.clone();
        }
        if let Some(u) = &chunk.usage {
            self.prompt_tokens = u.prompt_tokens;
            self.completion_tokens = u.completion_tokens;
            self.cached_tokens = (u.prompt_tokens_details.as_ref())
                .and_then(|d| d.cached_tokens)
                .or(self.cached_tokens);
        }
        if let Some(t) = &chunk.timings {
            self.server_prompt_ms = t.prompt_ms;
            self.server_decode_ms = t.predicted_ms;
            self.cached_tokens = self.cached_tokens.or(t.cache_n);
        }
        if let Some(sm) = &chunk.metrics {
            self.server_queue_ms = sm.queue_time_ms;
            self.server_prompt_ms = sm.time_to_first_token_ms;
            self.server_decode_ms = sm.generation_time_ms;
        }
    }
}

/// Reads one streamed completion; returns the reply (or why there is none) and what was measured
/// on the way, which a failed attempt keeps too.
pub(super) async fn stream(
    client: &Client<OpenAIConfig>,
    body: &Value,
    t0: Instant,
) -> (Result<Reply, InferError>, Measured) {
    let mut m = Measured::default();
    let result = read(client, body, t0, &mut m).await;
    (result, m)
}

async fn read(
    client: &Client<OpenAIConfig>,
    body: &Value,
    t0: Instant,
    m: &mut Measured,
) -> Result<Reply, InferError> {
    let mut s = client
        .chat()
        .create_stream_byot::<&Value, Chunk>(body)
        .await
        .map_err(classify)?;
    let mut content = String::new();
    let mut last_token: Option<Instant> = None;
    let mut gaps = Vec::new();
    while let Some(item) = s.next().await {
        let chunk = item.map_err(classify)?;
        for c in &chunk.choices {
            if let Some(text) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let now = Instant::now();
                match last_token {
                    None => m.ttft_ms = Some(millis(now.duration_since(t0))),
                    Some(prev) => gaps.push(millis(now.duration_since(prev))),
                }
                last_token = Some(now);
                content.push_str(text);
            }
            if c.finish_reason.is_some() {
                m.finish_reason = c.finish_reason.clone();
            }
        }
        m.add(&chunk);
    }
    if m.finish_reason.is_none() {
        return Err(InferError::Transient(
            "stream ended without a finish_reason".into(),
        ));
    }
    m.itl_mean_ms = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    m.itl_p95_ms = percentile(&gaps, 95.0);
    Ok(Reply {
        content,
        finish_reason: m.finish_reason.clone(),
        model: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllms_ttft_metric_is_the_prefill_not_minus_the_queue() {
        // The usage chunk vLLM sends with --enable-per-request-metrics.
        let chunk: Chunk = serde_json::from_value(serde_json::json!({
            "id": "cmpl-1", "choices": [],
            "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
            "metrics": {"time_to_first_token_ms": 180.0, "generation_time_ms": 820.0,
                        "queue_time_ms": 60.0, "mean_itl_ms": 21.0, "tokens_per_second": 40.0}
        }))
        .unwrap();
        let mut m = Measured::default();
        m.add(&chunk);
        assert_eq!(m.server_queue_ms, Some(60.0));
        assert_eq!(m.server_prompt_ms, Some(180.0));
        assert_eq!(m.server_decode_ms, Some(820.0));
    }
}
