//! The HTTP side of the simulated server: accepting connections (and refusing some), routing,
//! and the chat completion handler, which checks the request, injects request-level faults and
//! hands the sequence to the engine.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::engine::{Event, NewSeq};
use super::prometheus::prometheus;
use super::sse::Sse;
use super::{content, Fault, State};
use crate::domain::lock;

type Body = BoxBody<Bytes, std::io::Error>;

/// An error answer's status and message.
type Rejection = (StatusCode, String);

pub(super) async fn accept(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
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
    let restaurant = (req.headers().get(crate::infer::request_id::HEADER))
        .and_then(|v| v.to_str().ok())
        .and_then(crate::infer::request_id::restaurant);
    let body = match read_body(req).await {
        Ok(body) => body,
        Err((status, message)) => return error(status, &message),
    };
    let (model, priority) = match check(state, &body) {
        Ok(c) => c,
        Err((status, message)) => return error(status, &message),
    };
    let fault = state.draw(Some(n), false);
    if let Some(r) = fault_response(state, fault, &kill).await {
        return r;
    }
    let prompt = content::prompt_text(&body["messages"]);
    let output = answer(state, &body, restaurant.as_deref(), n, fault);
    let kind = body["response_format"]["json_schema"]["name"].as_str();
    let mask_ms = kind
        .and_then(|k| state.cfg.outputs.get(k))
        .and_then(|m| m.mask_ms);
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(256) as usize;
    let (tx, rx) = mpsc::unbounded_channel();
    let half = output.len().min(max_tokens) / 2;
    let seq = NewSeq {
        prompt: content::prompt_tokens(&prompt, &state.cfg.tokens),
        output,
        max_tokens,
        priority,
        constrained: body["response_format"]["type"] == json!("json_schema"),
        mask_ms,
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
    event_stream(stream, rx)
}

/// The request body as JSON.
async fn read_body(req: Request<Incoming>) -> Result<Value, Rejection> {
    match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes())
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"))),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))),
    }
}

/// The requested model and priority, if the server serves that model, the priority is 0 or
/// priority scheduling is on, and the request streams.
fn check(state: &State, body: &Value) -> Result<(String, i64), Rejection> {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if !state.cfg.models.contains(&model) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist."),
        ));
    }
    let priority = body["priority"].as_i64().unwrap_or(0);
    if priority != 0 && !state.cfg.engine.priority_scheduling {
        return Err((
            StatusCode::BAD_REQUEST,
            "priority is only supported with --scheduling-policy priority".into(),
        ));
    }
    if body["stream"] != json!(true) {
        return Err((StatusCode::BAD_REQUEST, "the simulator only streams".into()));
    }
    Ok((model, priority))
}

/// The answer of a fault that replaces the completion: an error status, or (a disconnect) none
/// ever, the connection being closed. `None` for the other faults.
async fn fault_response(
    state: &State,
    fault: Option<Fault>,
    kill: &Notify,
) -> Option<Response<Body>> {
    match fault {
        Some(Fault::Http500) => Some(error(StatusCode::INTERNAL_SERVER_ERROR, "engine error")),
        Some(Fault::Http503) => Some(error(StatusCode::SERVICE_UNAVAILABLE, "overloaded")),
        Some(Fault::RateLimited) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            let secs = state.cfg.faults.retry_after.as_secs().max(1).to_string();
            if let Ok(v) = secs.parse() {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            Some(r)
        }
        Some(Fault::Disconnect) => {
            kill.notify_one();
            std::future::pending().await
        }
        _ => None,
    }
}

/// The answer's tokens: an instance of the requested JSON schema, cut in half for
/// [`Fault::TruncatedJson`]. Where the profile has a length model for the schema's kind, the
/// answer takes a drawn number of tokens (under `replay_outputs`, the real run's next answer for
/// the request's restaurant), and a drawn share of answers is cut in half (invalid, as the share
/// of the real run's answers that palate refused).
fn answer(
    state: &State,
    body: &Value,
    restaurant: Option<&str>,
    n: u64,
    fault: Option<Fault>,
) -> Vec<String> {
    let format = &body["response_format"]["json_schema"];
    let schema = &format["schema"];
    let mut answer = content::instance(schema, state.cfg.faults.seed ^ n).to_string();
    let kind = format["name"].as_str().unwrap_or("");
    let (length, invalid) = match state.cfg.outputs.get(kind) {
        Some(m) => {
            let items = if m.per_item {
                schema["required"].as_array().map_or(1, Vec::len).max(1)
            } else {
                1
            };
            let mut rng = lock(&state.rng);
            let length = if state.cfg.replay_outputs {
                state.replayed(kind, restaurant, m) * items
            } else {
                (0..items)
                    .map(|_| m.tokens[rng.usize(..m.tokens.len())] as usize)
                    .sum()
            };
            (Some(length), rng.f64() < m.invalid_rate)
        }
        None => (None, false),
    };
    // vLLM's `ignore_eos`: the answer runs to max_tokens (what calibration sweeps ask for).
    let length = match body["ignore_eos"].as_bool() {
        Some(true) => body["max_tokens"].as_u64().map(|n| n as usize),
        _ => length,
    };
    if fault == Some(Fault::TruncatedJson) || invalid {
        let cut = answer.char_indices().nth(answer.chars().count() / 2);
        answer.truncate(cut.map_or(0, |(i, _)| i));
    }
    match length {
        Some(n) => content::pieces_of_length(&answer, n),
        None => content::pieces(&answer),
    }
}

/// A `text/event-stream` response carrying the sequence's events.
fn event_stream(stream: Sse, rx: mpsc::UnboundedReceiver<Event>) -> Response<Body> {
    let mut r = Response::new(BoxBody::new(StreamBody::new(stream.frames(rx))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}
