//! infer: sends chat completions to OpenAI-compatible endpoints (vLLM in production, llama.cpp's
//! server in tests) through async-openai, streaming with `stream_options.include_usage` so TTFT
//! and inter-token gaps are measured on the client.
//!
//! Every request waits its turn in the [`schedule`] (shortest prefill first, a place per endpoint,
//! governor quotas), goes to the least busy healthy endpoint, and is retried by [`retry`] while
//! its errors are transient. A model that still fails hands the request to the next model of the
//! job's fallback chain. Every HTTP attempt becomes one metrics row.

pub mod retry;
pub mod schedule;
mod stream;

use std::sync::{Arc, Mutex};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::Client;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use crate::config::LlmConfig;
use crate::metrics::{ErrorClass, RequestMetrics};
use crate::plan::{Kind, Message};
use retry::RetryPolicy;
use schedule::Scheduler;

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

#[async_trait]
pub trait LlmClient: Send + Sync {
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome;
}

struct Endpoint {
    url: String,
    config: OpenAIConfig,
}

/// async-openai against one or more OpenAI-compatible base URLs.
pub struct OpenAiClient {
    http: reqwest::Client,
    api_key: Option<String>,
    endpoints: Vec<Endpoint>,
    /// The model, then its fallbacks, in order.
    models: Vec<String>,
    temperature: f32,
    request_timeout: Duration,
    send_priority: bool,
    retry: RetryPolicy,
    sched: Scheduler,
}

impl OpenAiClient {
    pub fn new(cfg: &LlmConfig) -> Result<Self, InferError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_max_idle_per_host(cfg.schedule.max_in_flight)
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
                    config: c,
                }
            })
            .collect();
        let mut models = vec![cfg.model.clone()];
        models.extend(cfg.fallback_models.iter().cloned());
        Ok(Self {
            http,
            api_key: cfg.api_key.clone(),
            endpoints,
            models,
            temperature: cfg.temperature,
            request_timeout: cfg.request_timeout,
            send_priority: cfg.send_priority,
            retry: cfg.retry,
            sched: Scheduler::new(cfg.schedule.clone(), cfg.endpoints.len()),
        })
    }

    /// `GET /models` on every endpoint: checks it is up (and warms its connection) before a run.
    /// An endpoint that does not answer starts the run benched. Returns the endpoints that
    /// answered; an error only if none did.
    pub async fn warm_up(&self) -> Result<Vec<String>, InferError> {
        let mut up = Vec::new();
        let mut errors = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            match self.models_answer(ep).await {
                Ok(()) => up.push(ep.url.clone()),
                Err(e) => {
                    self.sched.bench(i);
                    errors.push(format!("{}: {e}", ep.url));
                }
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
            tracing::warn!(error = %e, "LLM endpoint is down; benched, using the others");
        }
        Ok(up)
    }

    /// `GET /models`, tried as often as a request would be.
    async fn models_answer(&self, ep: &Endpoint) -> Result<(), reqwest::Error> {
        let mut n = 0;
        loop {
            n += 1;
            let mut rq = self
                .http
                .get(format!("{}/models", ep.url))
                .timeout(Duration::from_secs(30));
            if let Some(k) = &self.api_key {
                rq = rq.bearer_auth(k);
            }
            match rq.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => return Ok(()),
                Err(e) if n >= self.retry.attempts => return Err(e),
                Err(_) => tokio::time::sleep(self.retry.delay(n, None)).await,
            }
        }
    }

    /// Requests waiting for their turn in palate's queue.
    pub fn waiting(&self) -> usize {
        self.sched.waiting()
    }

    fn body(&self, req: &ChatRequest, model: &str) -> Value {
        let mut body = json!({
            "model": model,
            "messages": req.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": req.max_tokens,
            "temperature": self.temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": req.kind.as_str(), "schema": req.schema, "strict": true}
            }
        });
        if self.send_priority {
            body["priority"] = json!(self.priority(req));
        }
        body
    }

    fn priority(&self, req: &ChatRequest) -> i64 {
        req.prefill_tokens.min(i64::MAX as u64) as i64
    }

    /// One model: attempts until success, a non-transient error, or the attempts run out.
    async fn with_model(
        &self,
        req: &ChatRequest,
        model: &str,
        metrics: &mut Vec<RequestMetrics>,
    ) -> Result<Reply, InferError> {
        let body = self.body(req, model);
        let mut n = 0;
        loop {
            n += 1;
            let waited = Instant::now();
            let slot = self.sched.acquire(req.prefill_tokens).await;
            let ep = &self.endpoints[slot.endpoint];
            let mut m = RequestMetrics {
                restaurant_id: req.restaurant_id.clone(),
                kind: req.kind.as_str().to_string(),
                attempt: req.attempt,
                retry: metrics.len() as u32,
                endpoint: ep.url.clone(),
                model: model.to_string(),
                priority: self.send_priority.then(|| self.priority(req)),
                est_prefill_tokens: Some(req.prefill_tokens),
                queue_ms: waited.elapsed().as_secs_f64() * 1000.0,
                started_at: crate::store::now(),
                ..Default::default()
            };
            let (result, retry_after) = self.once(ep, &body, &mut m).await;
            let transient = matches!(&result, Err(e) if e.class == ErrorClass::Transient);
            if let Some(d) = self.sched.report(slot.endpoint, !transient) {
                tracing::warn!(endpoint = %ep.url, bench_s = d.as_secs(), "endpoint keeps failing; benched");
            }
            drop(slot);
            metrics.push(m);
            match result {
                Ok(mut reply) => {
                    reply.model = model.to_string();
                    return Ok(reply);
                }
                Err(e) if transient && n < self.retry.attempts => {
                    let wait = self.retry.delay(n, retry_after);
                    tracing::warn!(error = %e.message, ?wait, model, "transient error, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One HTTP attempt; also returns the server's `Retry-After`, if it sent one.
    async fn once(
        &self,
        ep: &Endpoint,
        body: &Value,
        m: &mut RequestMetrics,
    ) -> (Result<Reply, InferError>, Option<Duration>) {
        // A client per attempt, whose HTTP service keeps the response's status and Retry-After
        // header (async-openai's error drops headers, and cannot parse vLLM's error bodies). It
        // shares the connection pool of `self.http`.
        let http_seen: Arc<Mutex<(Option<u16>, Option<Duration>)>> = Arc::default();
        let seen = Arc::clone(&http_seen);
        let http = self.http.clone();
        let service = tower::service_fn(move |f: HttpRequestFactory| {
            let (http, seen) = (http.clone(), Arc::clone(&seen));
            async move {
                let rq = f.build().await?;
                let resp = http.execute(rq).await.map_err(OpenAIError::Reqwest)?;
                if let Ok(mut s) = seen.lock() {
                    *s = (
                        Some(resp.status().as_u16()),
                        retry::retry_after(resp.headers()),
                    );
                }
                Ok::<_, OpenAIError>(resp)
            }
        });
        let client = Client::build(self.http.clone(), ep.config.clone()).with_http_service(service);
        let t0 = Instant::now();
        let result =
            match tokio::time::timeout(self.request_timeout, stream::stream(&client, body, t0, m))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(InferError {
                    class: ErrorClass::Transient,
                    message: format!("request took longer than {:?}", self.request_timeout),
                }),
            };
        let (status, after) = http_seen.lock().map(|g| *g).unwrap_or_default();
        let result = match (result, status) {
            (Err(e), Some(s)) => Err(retry::with_status(e, s)),
            (r, _) => r,
        };
        m.e2e_ms = t0.elapsed().as_secs_f64() * 1000.0;
        m.ok = result.is_ok();
        if let Err(e) = &result {
            m.error_class = Some(e.class);
            m.error = Some(e.message.clone());
        }
        (result, after)
    }
}

#[async_trait]
impl LlmClient for OpenAiClient {
    /// Walks the model chain: the first model that answers wins. A context-length error is not
    /// handed on (the prompt is what is wrong); anything else that exhausts a model is.
    #[tracing::instrument(skip_all, fields(restaurant_id = %req.restaurant_id, kind = req.kind.as_str(), attempt = req.attempt))]
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome {
        let mut metrics = Vec::new();
        let mut failures = Vec::new();
        let mut class = ErrorClass::Permanent;
        for (i, model) in self.models.iter().enumerate() {
            match self.with_model(req, model, &mut metrics).await {
                Ok(reply) => {
                    return ChatOutcome {
                        result: Ok(reply),
                        metrics,
                    }
                }
                Err(e) if e.class == ErrorClass::ContextLength => {
                    return ChatOutcome {
                        result: Err(e),
                        metrics,
                    }
                }
                Err(e) => {
                    if let Some(next) = self.models.get(i + 1) {
                        tracing::warn!(model, next, error = %e.message, "model failed; falling back");
                    }
                    class = e.class;
                    failures.push(format!("{model}: {}", e.message));
                }
            }
        }
        let message = if failures.len() == 1 {
            failures.remove(0)
        } else {
            format!("every model failed: {}", failures.join("; "))
        };
        ChatOutcome {
            result: Err(InferError { class, message }),
            metrics,
        }
    }
}
