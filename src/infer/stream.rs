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
use crate::metrics::{percentile, ErrorClass, RequestMetrics};

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

#[derive(Debug, Deserialize)]
struct ServerMetrics {
    queue_time_ms: Option<f64>,
    prefill_time_ms: Option<f64>,
    time_to_first_token_ms: Option<f64>,
    generation_time_ms: Option<f64>,
}

pub(super) async fn stream(
    client: &Client<OpenAIConfig>,
    body: &Value,
    t0: Instant,
    m: &mut RequestMetrics,
) -> Result<Reply, InferError> {
    let mut s = client
        .chat()
        .create_stream_byot::<&Value, Chunk>(body)
        .await
        .map_err(classify)?;
    let mut content = String::new();
    let mut finish_reason = None;
    let mut last_token: Option<Instant> = None;
    let mut gaps = Vec::new();
    while let Some(item) = s.next().await {
        let chunk = item.map_err(classify)?;
        if m.request_id.is_none() {
            m.request_id = chunk.id.clone();
        }
        for c in &chunk.choices {
            if let Some(text) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let now = Instant::now();
                match last_token {
                    None => m.ttft_ms = Some(now.duration_since(t0).as_secs_f64() * 1000.0),
                    Some(prev) => gaps.push(now.duration_since(prev).as_secs_f64() * 1000.0),
                }
                last_token = Some(now);
                content.push_str(text);
            }
            if c.finish_reason.is_some() {
                finish_reason = c.finish_reason.clone();
            }
        }
        if let Some(u) = chunk.usage {
            m.prompt_tokens = u.prompt_tokens;
            m.completion_tokens = u.completion_tokens;
            m.cached_tokens = u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .or(m.cached_tokens);
        }
        if let Some(t) = chunk.timings {
            m.server_prompt_ms = t.prompt_ms;
            m.server_decode_ms = t.predicted_ms;
            m.cached_tokens = m.cached_tokens.or(t.cache_n);
        }
        if let Some(sm) = chunk.metrics {
            m.server_queue_ms = sm.queue_time_ms;
            m.server_prompt_ms = sm
                .prefill_time_ms
                .or_else(|| Some(sm.time_to_first_token_ms? - sm.queue_time_ms.unwrap_or(0.0)));
            m.server_decode_ms = sm.generation_time_ms;
        }
    }
    if finish_reason.is_none() {
        return Err(InferError {
            class: ErrorClass::Transient,
            message: "stream ended without a finish_reason".into(),
        });
    }
    m.itl_mean_ms = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    m.itl_p95_ms = percentile(&gaps, 95.0);
    m.finish_reason = finish_reason.clone();
    Ok(Reply {
        content,
        finish_reason,
        model: String::new(),
    })
}
