//! sim: a vLLM-like OpenAI-compatible server for benchmarks and fault-injection tests (never the
//! product path; end-to-end tests use the real llama.cpp server). It streams chat completions with
//! usage (`cached_tokens` included) from a simulated continuous-batching engine ([`engine`]),
//! answers `/v1/models` and `/metrics` with vLLM's metric names, and injects faults at a rate or
//! on a schedule.

pub mod content;
pub mod engine;
mod prefix_cache;
mod stats;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

pub use engine::{EngineConfig, EngineStats, LatencyModel};
use engine::{Event, NewSeq};

/// A fault the server can inject into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500.
    Http500,
    /// HTTP 503.
    Http503,
    /// HTTP 429 with a `Retry-After` header.
    RateLimited,
    /// The connection is reset as soon as it is accepted (what a client sees of a server that is
    /// down or restarting). Drawn per connection; the server then closes every connection after
    /// its response, so each request opens a new one.
    Refused,
    /// The request is read and the connection closed without an answer.
    Disconnect,
    /// The stream stops half-way for longer than any sane read timeout, then carries on.
    Stall,
    /// The stream ends half-way, without a finish reason.
    CutStream,
    /// A chunk half-way is not valid JSON.
    MalformedChunk,
    /// The answer is cut JSON with `finish_reason = stop`.
    TruncatedJson,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Http500,
        Fault::Http503,
        Fault::RateLimited,
        Fault::Refused,
        Fault::Disconnect,
        Fault::Stall,
        Fault::CutStream,
        Fault::MalformedChunk,
        Fault::TruncatedJson,
    ];
}

/// Which requests get which fault: a fixed schedule by request number (from 0) first, then
/// independent draws at each fault's rate from a seeded generator.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub rates: Vec<(Fault, f64)>,
    pub schedule: BTreeMap<u64, Fault>,
    pub seed: u64,
    pub retry_after: Duration,
    pub stall_for: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            rates: Vec::new(),
            schedule: BTreeMap::new(),
            seed: 1,
            retry_after: Duration::from_secs(2),
            stall_for: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub engine: EngineConfig,
    /// Model names served; a request for another gets 404.
    pub models: Vec<String>,
    pub faults: FaultPlan,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            models: vec!["sim".into()],
            faults: FaultPlan::default(),
        }
    }
}

struct State {
    cfg: SimConfig,
    engine: mpsc::UnboundedSender<NewSeq>,
    stats: Arc<Mutex<EngineStats>>,
    requests: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    /// Connection faults draw from their own generator, so their sequence does not depend on how
    /// accepts and requests interleave.
    conn_rng: Mutex<fastrand::Rng>,
    injected: Mutex<BTreeMap<Fault, u64>>,
    close_connections: bool,
}

/// A running simulated server; stops when dropped.
pub struct SimServer {
    /// Base URL, `http://127.0.0.1:PORT/v1`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

impl SimServer {
    /// Binds a free port on 127.0.0.1 and serves until dropped.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        tokio::spawn(engine::run(cfg.engine.clone(), rx, Arc::clone(&stats)));
        let state = Arc::new(State {
            close_connections: cfg
                .faults
                .rates
                .iter()
                .any(|(f, r)| *f == Fault::Refused && *r > 0.0),
            rng: Mutex::new(fastrand::Rng::with_seed(cfg.faults.seed)),
            conn_rng: Mutex::new(fastrand::Rng::with_seed(cfg.faults.seed ^ 0x5eed)),
            cfg,
            engine: tx,
            stats,
            requests: AtomicU64::new(0),
            injected: Mutex::new(BTreeMap::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, Arc::clone(&state), stop.clone()));
        Ok(Self { url, state, stop })
    }

    pub fn stats(&self) -> EngineStats {
        lock(&self.state.stats).clone()
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<Fault, u64> {
        lock(&self.state.injected).clone()
    }

    /// Chat requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl State {
    fn draw(&self, n: Option<u64>, refused: bool) -> Option<Fault> {
        let f = &self.cfg.faults;
        let fault = match n.and_then(|n| f.schedule.get(&n)) {
            Some(&fault) => Some(fault),
            None => {
                let mut rng = lock(if refused { &self.conn_rng } else { &self.rng });
                f.rates
                    .iter()
                    .filter(|(k, _)| (*k == Fault::Refused) == refused)
                    .find(|(_, rate)| rng.f64() < *rate)
                    .map(|(k, _)| *k)
            }
        };
        if let Some(k) = fault {
            *lock(&self.injected).entry(k).or_default() += 1;
        }
        fault
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        if state.draw(None, true) == Some(Fault::Refused) {
            // Linger 0: the close sends a reset, as a dead server's kernel would.
            let _ = tcp.set_zero_linger();
            drop(tcp);
            continue;
        }
        // Without it Nagle's algorithm holds each small SSE chunk for the peer's delayed ACK (40 ms).
        let _ = tcp.set_nodelay(true);
        let state = Arc::clone(&state);
        let stop = stop.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let k = Arc::clone(&kill);
            let svc = hyper::service::service_fn(move |req| {
                let (state, kill) = (Arc::clone(&state), Arc::clone(&k));
                async move { Ok::<_, Infallible>(route(state, req, kill).await) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({"error": {"message": message, "type": "error", "param": null, "code": status.as_u16()}});
    full(status, "application/json", body.to_string())
}

async fn route(state: Arc<State>, req: Request<Incoming>, kill: Arc<Notify>) -> Response<Body> {
    let mut resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/models") => {
            let data: Vec<Value> = state
                .cfg
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "owned_by": "sim"}))
                .collect();
            full(
                StatusCode::OK,
                "application/json",
                json!({"object": "list", "data": data}).to_string(),
            )
        }
        (&Method::GET, "/metrics") => full(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus(&lock(&state.stats), &state.cfg.models[0]),
        ),
        (&Method::POST, "/v1/chat/completions") => chat(&state, req, kill).await,
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    };
    if state.close_connections {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}

async fn chat(state: &State, req: Request<Incoming>, kill: Arc<Notify>) -> Response<Body> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let body: Value = match req.into_body().collect().await {
        Ok(b) => match serde_json::from_slice(&b.to_bytes()) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}")),
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if !state.cfg.models.contains(&model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
        );
    }
    let priority = body["priority"].as_i64().unwrap_or(0);
    if priority != 0 && !state.cfg.engine.priority_scheduling {
        return error(
            StatusCode::BAD_REQUEST,
            "priority is only supported with --scheduling-policy priority",
        );
    }
    if body["stream"] != json!(true) {
        return error(StatusCode::BAD_REQUEST, "the simulator only streams");
    }
    let fault = state.draw(Some(n), false);
    match fault {
        Some(Fault::Http500) => return error(StatusCode::INTERNAL_SERVER_ERROR, "engine error"),
        Some(Fault::Http503) => return error(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        Some(Fault::RateLimited) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            let secs = state.cfg.faults.retry_after.as_secs().max(1).to_string();
            if let Ok(v) = secs.parse() {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            return r;
        }
        Some(Fault::Disconnect) => {
            kill.notify_one();
            return std::future::pending().await;
        }
        _ => {}
    }
    let mut prompt = String::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        let _ = write!(
            prompt,
            "<|{}|>\n{}\n",
            m["role"].as_str().unwrap_or(""),
            m["content"].as_str().unwrap_or("")
        );
    }
    let schema = &body["response_format"]["json_schema"]["schema"];
    let mut answer = content::instance(schema, state.cfg.faults.seed ^ n).to_string();
    if fault == Some(Fault::TruncatedJson) {
        let cut = answer.char_indices().nth(answer.chars().count() / 2);
        answer.truncate(cut.map_or(0, |(i, _)| i));
    }
    let output = content::pieces(&answer);
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(256) as usize;
    let (tx, rx) = mpsc::unbounded_channel();
    let half = output.len().min(max_tokens) / 2;
    let seq = NewSeq {
        prompt: content::prompt_tokens(&prompt),
        output,
        max_tokens,
        priority,
        tx,
    };
    if state.engine.send(seq).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "engine stopped");
    }
    let stream = Sse {
        id: format!("chatcmpl-sim-{n}"),
        model,
        usage: body["stream_options"]["include_usage"] == json!(true),
        fault: fault
            .filter(|f| matches!(f, Fault::Stall | Fault::CutStream | Fault::MalformedChunk)),
        fault_at: half,
        stall_for: state.cfg.faults.stall_for,
    };
    let mut r = Response::new(BoxBody::new(StreamBody::new(stream.frames(rx))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// The server-sent events of one streamed completion.
struct Sse {
    id: String,
    model: String,
    usage: bool,
    fault: Option<Fault>,
    fault_at: usize,
    stall_for: Duration,
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

impl Sse {
    fn event(v: &Value) -> FrameResult {
        Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))))
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn frames(
        self,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> impl futures::Stream<Item = FrameResult> + Send + Sync + 'static {
        let first = Self::event(&self.chunk(json!({"role": "assistant", "content": ""}), None));
        let rest = futures::stream::unfold((self, rx, 0usize), |(sse, mut rx, i)| async move {
            if i == usize::MAX {
                return None;
            }
            let ev = rx.recv().await?;
            let frames: Vec<FrameResult> = match ev {
                Event::Token(piece) => {
                    if i == sse.fault_at {
                        match sse.fault {
                            Some(Fault::Stall) => tokio::time::sleep(sse.stall_for).await,
                            Some(Fault::CutStream) => {
                                return Some((
                                    vec![Err(std::io::Error::other("stream cut"))],
                                    (sse, rx, usize::MAX),
                                ))
                            }
                            Some(Fault::MalformedChunk) => {
                                let bad = Ok(Frame::data(Bytes::from_static(
                                    b"data: {\"choices\": [{\"delta\": {\"content\n\n",
                                )));
                                return Some((vec![bad], (sse, rx, i + 1)));
                            }
                            _ => {}
                        }
                    }
                    vec![Self::event(&sse.chunk(json!({"content": piece}), None))]
                }
                Event::Done(d) => {
                    let mut v = vec![Self::event(&sse.chunk(json!({}), Some(d.finish_reason)))];
                    if sse.usage {
                        let usage = json!({"id": sse.id, "object": "chat.completion.chunk",
                            "created": 0, "model": sse.model, "choices": [],
                            "usage": {"prompt_tokens": d.prompt_tokens, "completion_tokens": d.completion_tokens,
                                      "total_tokens": d.prompt_tokens + d.completion_tokens,
                                      "prompt_tokens_details": {"cached_tokens": d.cached_tokens}},
                            "metrics": {"queue_time_ms": d.queue_ms, "prefill_time_ms": d.prefill_ms,
                                        "time_to_first_token_ms": d.queue_ms + d.prefill_ms,
                                        "generation_time_ms": d.decode_ms}});
                        v.push(Self::event(&usage));
                    }
                    v.push(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
                    v
                }
            };
            Some((frames, (sse, rx, i + 1)))
        });
        futures::stream::iter([first]).chain(rest.flat_map(futures::stream::iter))
    }
}

/// `/metrics` in Prometheus text format with vLLM's names.
fn prometheus(s: &EngineStats, model: &str) -> String {
    let label = format!("model_name=\"{model}\"");
    let mut out = String::new();
    let gauges = [
        ("vllm:num_requests_running", s.running as f64),
        ("vllm:num_requests_waiting", s.waiting as f64),
        (
            "vllm:kv_cache_usage_perc",
            if s.cache_blocks == 0 {
                0.0
            } else {
                s.cache_blocks_used as f64 / s.cache_blocks as f64
            },
        ),
    ];
    for (name, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name}{{{label}}} {v}");
    }
    let counters = [
        ("vllm:prompt_tokens_total", s.prompt_tokens),
        ("vllm:generation_tokens_total", s.generation_tokens),
        ("vllm:prefix_cache_queries_total", s.prompt_tokens),
        ("vllm:prefix_cache_hits_total", s.cached_tokens),
        ("vllm:request_success_total", s.finished),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n{name}{{{label}}} {v}");
    }
    let histograms = [
        ("vllm:request_queue_time_seconds", &s.queue_s),
        ("vllm:time_to_first_token_seconds", &s.ttft_s),
        ("vllm:request_prefill_time_seconds", &s.prefill_s),
        ("vllm:request_decode_time_seconds", &s.decode_s),
        ("vllm:e2e_request_latency_seconds", &s.e2e_s),
    ];
    for (name, h) in histograms {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in h.buckets.iter().zip(&h.counts) {
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label},le=\"+Inf\"}} {}\n{name}_sum{{{label}}} {}\n{name}_count{{{label}}} {}",
            h.count, h.sum, h.count
        );
    }
    out
}
