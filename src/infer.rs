//! infer: sends chat completions to OpenAI-compatible endpoints (vLLM in production, llama.cpp's
//! server in tests) through async-openai, streaming with `stream_options.include_usage` so TTFT
//! and inter-token gaps are measured on the client. A semaphore bounds requests in flight; the
//! endpoint with the fewest outstanding requests gets the next one; connect, read and whole-request
//! timeouts are explicit; transient errors are retried with jittered exponential backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::LlmConfig;
use crate::metrics::{ErrorClass, RequestMetrics};
use crate::plan::{Kind, Message};

/// Attempts per request for transient errors (5xx, 429, connect errors, timeouts, cut streams).
const TRANSIENT_ATTEMPTS: u32 = 3;
const BACKOFF_BASE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct InferError {
    pub class: ErrorClass,
    pub message: String,
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
}

/// The model's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub content: String,
    pub finish_reason: Option<String>,
}

/// What a request produced, with one metrics row per HTTP attempt.
#[derive(Debug)]
pub struct ChatOutcome {
    pub result: Result<Reply, InferError>,
    pub metrics: Vec<RequestMetrics>,
}

#[async_trait]
pub trait LlmClient: Send + Sync {
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome;
}

struct Endpoint {
    url: String,
    client: Client<OpenAIConfig>,
    outstanding: AtomicUsize,
}

/// async-openai against one or more OpenAI-compatible base URLs.
pub struct OpenAiClient {
    http: reqwest::Client,
    api_key: Option<String>,
    endpoints: Vec<Endpoint>,
    model: String,
    temperature: f32,
    request_timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl OpenAiClient {
    pub fn new(cfg: &LlmConfig) -> Result<Self, InferError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_max_idle_per_host(cfg.max_in_flight)
            // Servers close idle keep-alive connections after ~5 s (uvicorn, llama.cpp); reusing one
            // they just closed fails the request. Drop ours first.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| InferError {
                class: ErrorClass::Permanent,
                message: format!("HTTP client: {e}"),
            })?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|url| {
                let mut c = OpenAIConfig::new().with_api_base(url.clone());
                if let Some(k) = &cfg.api_key {
                    c = c.with_api_key(k.clone());
                }
                Endpoint {
                    url: url.clone(),
                    client: Client::build(http.clone(), c),
                    outstanding: AtomicUsize::new(0),
                }
            })
            .collect();
        Ok(Self {
            http,
            api_key: cfg.api_key.clone(),
            endpoints,
            model: cfg.model.clone(),
            temperature: cfg.temperature,
            request_timeout: cfg.request_timeout,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
        })
    }

    /// `GET /models` on every endpoint: checks it is up (and warms its connection) before a run.
    /// Returns the endpoints that answered; an error only if none did.
    pub async fn warm_up(&self) -> Result<Vec<String>, InferError> {
        let mut up = Vec::new();
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            let mut rq = self
                .http
                .get(format!("{}/models", ep.url))
                .timeout(Duration::from_secs(30));
            if let Some(k) = &self.api_key {
                rq = rq.bearer_auth(k);
            }
            match rq.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => up.push(ep.url.clone()),
                Err(e) => errors.push(format!("{}: {e}", ep.url)),
            }
        }
        if up.is_empty() {
            return Err(InferError {
                class: ErrorClass::Transient,
                message: format!(
                    "no LLM endpoint answered GET /models: {}",
                    errors.join("; ")
                ),
            });
        }
        for e in &errors {
            tracing::warn!(error = %e, "LLM endpoint is down; using the others");
        }
        Ok(up)
    }

    fn pick(&self) -> &Endpoint {
        let mut best = &self.endpoints[0];
        for e in &self.endpoints[1..] {
            if e.outstanding.load(Ordering::Relaxed) < best.outstanding.load(Ordering::Relaxed) {
                best = e;
            }
        }
        best
    }

    fn body(&self, req: &ChatRequest) -> Value {
        json!({
            "model": self.model,
            "messages": req.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": req.max_tokens,
            "temperature": self.temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": req.kind.as_str(), "schema": req.schema, "strict": true}
            }
        })
    }

    async fn once(
        &self,
        req: &ChatRequest,
        body: &Value,
        queue_ms: f64,
    ) -> (Result<Reply, InferError>, RequestMetrics) {
        let ep = self.pick();
        ep.outstanding.fetch_add(1, Ordering::Relaxed);
        let mut m = RequestMetrics {
            restaurant_id: req.restaurant_id.clone(),
            kind: req.kind.as_str().to_string(),
            attempt: req.attempt,
            endpoint: ep.url.clone(),
            model: self.model.clone(),
            queue_ms,
            started_at: crate::store::now(),
            ..Default::default()
        };
        let t0 = Instant::now();
        let result =
            match tokio::time::timeout(self.request_timeout, stream(ep, body, t0, &mut m)).await {
                Ok(r) => r,
                Err(_) => Err(InferError {
                    class: ErrorClass::Transient,
                    message: format!("request took longer than {:?}", self.request_timeout),
                }),
            };
        ep.outstanding.fetch_sub(1, Ordering::Relaxed);
        m.e2e_ms = t0.elapsed().as_secs_f64() * 1000.0;
        m.ok = result.is_ok();
        if let Err(e) = &result {
            m.error_class = Some(e.class);
            m.error = Some(e.message.clone());
        }
        (result, m)
    }
}

#[async_trait]
impl LlmClient for OpenAiClient {
    #[tracing::instrument(skip_all, fields(restaurant_id = %req.restaurant_id, kind = req.kind.as_str(), attempt = req.attempt))]
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome {
        let body = self.body(req);
        let mut metrics = Vec::new();
        let mut try_no = 0;
        loop {
            try_no += 1;
            let waited = Instant::now();
            let Ok(_permit) = self.in_flight.acquire().await else {
                let e = InferError {
                    class: ErrorClass::Permanent,
                    message: "client is shut down".into(),
                };
                return ChatOutcome {
                    result: Err(e),
                    metrics,
                };
            };
            let queue_ms = waited.elapsed().as_secs_f64() * 1000.0;
            let (result, m) = self.once(req, &body, queue_ms).await;
            drop(_permit);
            metrics.push(m);
            match result {
                Err(e) if e.class == ErrorClass::Transient && try_no < TRANSIENT_ATTEMPTS => {
                    let backoff = backoff(try_no);
                    tracing::warn!(error = %e.message, ?backoff, "transient error, retrying");
                    tokio::time::sleep(backoff).await;
                }
                result => return ChatOutcome { result, metrics },
            }
        }
    }
}

/// Full jitter: uniform in [0, base·2^(n−1)].
fn backoff(n: u32) -> Duration {
    let cap = BACKOFF_BASE * 2u32.saturating_pow(n.saturating_sub(1));
    cap.mul_f64(fastrand::f64())
}

#[derive(Debug, Deserialize)]
struct Chunk {
    id: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    /// llama.cpp's server timings.
    timings: Option<Timings>,
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

async fn stream(
    ep: &Endpoint,
    body: &Value,
    t0: Instant,
    m: &mut RequestMetrics,
) -> Result<Reply, InferError> {
    let mut s = ep
        .client
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
    }
    if finish_reason.is_none() {
        return Err(InferError {
            class: ErrorClass::Transient,
            message: "stream ended without a finish_reason".into(),
        });
    }
    m.itl_mean_ms = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    m.finish_reason = finish_reason.clone();
    Ok(Reply {
        content,
        finish_reason,
    })
}

/// Sorts an async-openai error into the classes the retry logic acts on.
pub fn classify(e: OpenAIError) -> InferError {
    let (class, message) = match &e {
        OpenAIError::ApiError(r) => {
            let s = r.status_code.as_u16();
            let msg = r.api_error.message.to_ascii_lowercase();
            let class = if s == 429 || s == 408 || s >= 500 {
                ErrorClass::Transient
            } else if msg.contains("context length")
                || msg.contains("maximum context")
                || msg.contains("context size")
                || msg.contains("too long")
                || msg.contains("exceeds")
            {
                ErrorClass::ContextLength
            } else {
                ErrorClass::Permanent
            };
            (class, format!("HTTP {s}: {}", r.api_error.message))
        }
        OpenAIError::Reqwest(r) if r.is_builder() => (ErrorClass::Permanent, e.to_string()),
        OpenAIError::Reqwest(r) => match r.status().map(|s| s.as_u16()) {
            Some(s) if (400..500).contains(&s) && s != 429 && s != 408 => {
                (ErrorClass::Permanent, e.to_string())
            }
            _ => (ErrorClass::Transient, e.to_string()),
        },
        OpenAIError::StreamError(_) | OpenAIError::JSONDeserialize(..) => {
            (ErrorClass::Transient, e.to_string())
        }
        _ => (ErrorClass::Permanent, e.to_string()),
    };
    InferError { class, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap() {
        for n in 1..5 {
            let b = backoff(n);
            assert!(b <= BACKOFF_BASE * 2u32.pow(n - 1), "{n}: {b:?}");
        }
    }

    #[test]
    fn api_errors_are_classified() {
        let api = |status: u16, msg: &str| {
            OpenAIError::ApiError(async_openai::error::ApiErrorResponse {
                status_code: reqwest::StatusCode::from_u16(status).unwrap(),
                api_error: async_openai::error::ApiError {
                    message: msg.into(),
                    r#type: None,
                    param: None,
                    code: None,
                    misalignment: None,
                },
            })
        };
        assert_eq!(classify(api(503, "busy")).class, ErrorClass::Transient);
        assert_eq!(classify(api(429, "slow down")).class, ErrorClass::Transient);
        assert_eq!(
            classify(api(400, "This model's maximum context length is 2048")).class,
            ErrorClass::ContextLength
        );
        assert_eq!(
            classify(api(404, "no such model")).class,
            ErrorClass::Permanent
        );
    }
}
