//! [`OpenAiClient`]: streamed chat completions against one or more OpenAI-compatible base URLs,
//! with palate's queue, retries and fallback chain around each request.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::time::{Duration, Instant};

use super::body::Body;
use super::request_id;
use super::retry::{self, RetryPolicy};
use super::schedule::Scheduler;
use super::stream::{self, Measured};
use super::{ChatOutcome, ChatRequest, InferError, LlmClient, LlmConfig, ModelError, Reply};
use crate::domain::{millis, now, ErrorClass, Kind, Secret};
use crate::metrics::RequestMetrics;

struct Endpoint {
    url: String,
    /// `{url}/chat/completions`.
    chat_url: String,
    /// The URL as stored and logged: credentials redacted.
    shown: String,
}

/// Streamed chat completions against one or more OpenAI-compatible base URLs.
pub struct OpenAiClient {
    http: reqwest::Client,
    api_key: Option<Secret>,
    endpoints: Vec<Endpoint>,
    /// The model, then its fallbacks, in order.
    models: Vec<String>,
    temperature: f32,
    text_temperature: f32,
    repair_temperature: f32,
    request_timeout: Duration,
    send_priority: bool,
    retry: RetryPolicy,
    sched: Scheduler,
    /// A random tag and the HTTP attempts sent: the last part of each one's [`request_id`].
    tag: u32,
    sent: AtomicU64,
}

/// Who an HTTP attempt was for and where it went: the identifying half of its metrics row.
struct AttemptId {
    restaurant_id: String,
    kind: Kind,
    attempt: u32,
    retry: u32,
    endpoint: String,
    model: String,
    priority: Option<i64>,
    est_prefill_tokens: u64,
    queue_ms: f64,
    started_at: String,
}

/// What one HTTP attempt gave: the measured half of its metrics row.
struct Attempted {
    result: Result<Reply, InferError>,
    measured: Measured,
    e2e_ms: f64,
    /// The server's `Retry-After`, if it sent one.
    retry_after: Option<Duration>,
}

/// The one place a `vllm_metrics` row is built.
fn metrics_row(id: AttemptId, a: &Attempted) -> RequestMetrics {
    let m = &a.measured;
    RequestMetrics {
        restaurant_id: id.restaurant_id,
        kind: id.kind,
        attempt: id.attempt,
        retry: id.retry,
        priority: id.priority,
        est_prefill_tokens: Some(id.est_prefill_tokens),
        request_id: m.request_id.clone(),
        endpoint: id.endpoint,
        model: id.model,
        ok: a.result.is_ok(),
        error_class: a.result.as_ref().err().map(InferError::class),
        error: a.result.as_ref().err().map(ToString::to_string),
        finish_reason: m.finish_reason.clone(),
        queue_ms: id.queue_ms,
        ttft_ms: m.ttft_ms,
        e2e_ms: a.e2e_ms,
        itl_mean_ms: m.itl_mean_ms,
        itl_p95_ms: m.itl_p95_ms,
        prompt_tokens: m.prompt_tokens,
        completion_tokens: m.completion_tokens,
        cached_tokens: m.cached_tokens,
        server_queue_ms: m.server_queue_ms,
        server_prompt_ms: m.server_prompt_ms,
        server_decode_ms: m.server_decode_ms,
        started_at: id.started_at,
    }
}

impl OpenAiClient {
    /// Walks the model chain: the first model that answers wins. A context-length error is not
    /// handed on (the prompt is what is wrong); anything else that exhausts a model is.
    async fn chain(&self, req: &ChatRequest) -> ChatOutcome {
        let mut metrics = Vec::new();
        let mut failures = Vec::new();
        for (i, model) in self.models.iter().enumerate() {
            let error = match self.with_model(req, model, &mut metrics).await {
                Ok(reply) => {
                    return ChatOutcome {
                        result: Ok(reply),
                        metrics,
                    }
                }
                Err(e) if e.class() == ErrorClass::ContextLength => {
                    return ChatOutcome {
                        result: Err(e),
                        metrics,
                    }
                }
                Err(e) => e,
            };
            if let Some(next) = self.models.get(i + 1) {
                tracing::warn!(model, next, %error, "model failed; falling back");
            }
            failures.push(ModelError {
                model: model.clone(),
                error,
            });
        }
        let error = if failures.len() == 1 {
            failures.remove(0).error
        } else {
            InferError::AllModelsFailed(failures)
        };
        ChatOutcome {
            result: Err(error),
            metrics,
        }
    }

    pub fn new(cfg: &LlmConfig) -> Result<Self, InferError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout())
            .read_timeout(cfg.read_timeout())
            .pool_max_idle_per_host(if cfg.keep_alive { cfg.max_in_flight } else { 0 })
            // Servers close idle keep-alive connections after ~5 s (uvicorn, llama.cpp); reusing one
            // they just closed fails the request. Drop ours first.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| InferError::Permanent(format!("HTTP client: {e}")))?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|url| Endpoint {
                url: url.clone(),
                chat_url: format!("{}/chat/completions", url.trim_end_matches('/')),
                shown: crate::domain::redact_url(url),
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
            text_temperature: cfg.text_temperature,
            repair_temperature: cfg.repair_temperature,
            request_timeout: cfg.request_timeout(),
            send_priority: cfg.send_priority,
            retry: cfg.retry(),
            sched: Scheduler::new(cfg.schedule(), cfg.endpoints.len()),
            tag: fastrand::u32(..),
            sent: AtomicU64::new(0),
        })
    }

    /// `GET /models` on every endpoint: checks it is up (and warms its connection) before a run.
    /// An endpoint that does not answer starts the run ejected. Returns the endpoints that
    /// answered; an error only if none did.
    pub async fn warm_up(&self) -> Result<Vec<String>, InferError> {
        let mut up = Vec::new();
        let mut errors = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            match self.models_answer(ep).await {
                Ok(()) => up.push(ep.shown.clone()),
                Err(e) => {
                    self.sched.eject(i);
                    errors.push(format!(
                        "{}: {}",
                        ep.shown,
                        crate::domain::cap_text(&e.to_string())
                    ));
                }
            }
        }
        if up.is_empty() {
            return Err(InferError::Transient(format!(
                "no LLM endpoint answered GET /models: {}",
                errors.join("; ")
            )));
        }
        for e in &errors {
            tracing::warn!(error = %e, "LLM endpoint is down; ejected, using the others");
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
                rq = rq.bearer_auth(k.expose());
            }
            match rq.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => return Ok(()),
                Err(e) if n >= self.retry.attempts => return Err(e),
                Err(_) => tokio::time::sleep(self.retry.delay(n, None)).await,
            }
        }
    }

    fn temperature(&self, req: &ChatRequest) -> f32 {
        match (req.attempt, req.kind) {
            (2.., _) => self.repair_temperature,
            (_, Kind::Sentiment) => self.temperature,
            _ => self.text_temperature,
        }
    }

    /// The chat completion body sent for `req` to `model`.
    pub fn body(&self, req: &ChatRequest, model: &str) -> Value {
        serde_json::to_value(self.request_body(req, model)).unwrap_or_default()
    }

    /// The body as it is serialised.
    fn request_body<'a>(&self, req: &'a ChatRequest, model: &'a str) -> Body<'a> {
        let priority = self.send_priority.then(|| priority(req));
        Body::new(req, model, self.temperature(req), priority)
    }

    /// One model: attempts until success, a non-transient error, or the attempts run out.
    async fn with_model(
        &self,
        req: &ChatRequest,
        model: &str,
        metrics: &mut Vec<RequestMetrics>,
    ) -> Result<Reply, InferError> {
        // Serialised once for every attempt.
        let body = match serde_json::to_vec(&self.request_body(req, model)) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Err(InferError::Permanent(format!("request body: {e}"))),
        };
        let mut n = 0;
        loop {
            n += 1;
            let waited = Instant::now();
            let slot = self.sched.acquire(req.prefill_tokens).await;
            let ep = &self.endpoints[slot.endpoint];
            let id = AttemptId {
                restaurant_id: req.restaurant_id.clone(),
                kind: req.kind,
                attempt: req.attempt,
                retry: metrics.len() as u32,
                endpoint: ep.shown.clone(),
                model: model.to_string(),
                priority: self.send_priority.then(|| priority(req)),
                est_prefill_tokens: req.prefill_tokens,
                queue_ms: millis(waited.elapsed()),
                started_at: now(),
            };
            let sent = self.sent.fetch_add(1, Ordering::Relaxed);
            let tagged = format!("{:08x}-{sent}", self.tag);
            let rid = request_id::format(&req.restaurant_id, req.kind, req.attempt, &tagged);
            let a = self.once(ep, &body, &rid).await;
            let transient = matches!(&a.result, Err(e) if e.class() == ErrorClass::Transient);
            if let Some(d) = self.sched.report(slot.endpoint, !transient) {
                tracing::warn!(endpoint = %ep.shown, eject_s = d.as_secs(), "endpoint keeps failing; ejected");
            }
            drop(slot);
            metrics.push(metrics_row(id, &a));
            match a.result {
                Ok(mut reply) => {
                    reply.model = model.to_string();
                    return Ok(reply);
                }
                Err(e) if transient && n < self.retry.attempts => {
                    let wait = self.retry.delay(n, a.retry_after);
                    tracing::warn!(error = %e, ?wait, model, "transient error, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One HTTP attempt.
    async fn once(&self, ep: &Endpoint, body: &Bytes, rid: &str) -> Attempted {
        let t0 = Instant::now();
        let mut measured = Measured::default();
        let mut retry_after = None;
        let attempt = self.attempt(ep, body, rid, t0, &mut measured, &mut retry_after);
        let result = match tokio::time::timeout(self.request_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(InferError::Transient(format!(
                "request took longer than {:?}",
                self.request_timeout
            ))),
        };
        Attempted {
            result,
            measured,
            e2e_ms: millis(t0.elapsed()),
            retry_after,
        }
    }

    /// Sends the request and reads its answer: the stream, or the error the status and body
    /// stand for (keeping the server's `Retry-After`).
    async fn attempt(
        &self,
        ep: &Endpoint,
        body: &Bytes,
        rid: &str,
        t0: Instant,
        measured: &mut Measured,
        retry_after: &mut Option<Duration>,
    ) -> Result<Reply, InferError> {
        let resp = retry::send(|| {
            let rq = (self.http.post(&ep.chat_url))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(request_id::HEADER, rid)
                .body(body.clone());
            match &self.api_key {
                Some(k) => rq.bearer_auth(k.expose()),
                None => rq,
            }
        })
        .await
        .map_err(retry::classify)?;
        let status = resp.status();
        *retry_after = retry::retry_after(resp.headers());
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(retry::http_error(status.as_u16(), &text));
        }
        stream::read(resp, t0, measured).await
    }
}

/// vLLM's `priority` for a request: its estimated prefill (lower goes first).
fn priority(req: &ChatRequest) -> i64 {
    req.prefill_tokens.min(i64::MAX as u64) as i64
}

#[async_trait]
impl LlmClient for OpenAiClient {
    async fn ready(&self) -> Result<(), InferError> {
        self.warm_up().await.map(|_| ())
    }

    /// One request's span (exported with `[telemetry]`): what was asked, and once answered, by
    /// which model, its tokens, TTFT and outcome.
    #[tracing::instrument(skip_all, fields(
        restaurant_id = %req.restaurant_id, kind = req.kind.as_str(), attempt = req.attempt,
        model = tracing::field::Empty, prompt_tokens = tracing::field::Empty,
        completion_tokens = tracing::field::Empty, ttft_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    ))]
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome {
        let out = self.chain(req).await;
        out.record(&tracing::Span::current());
        out
    }
}
