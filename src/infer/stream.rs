//! Reads one streamed chat completion: content, finish reason, usage, and the timings measured on
//! the way (TTFT, inter-token gaps) or reported by the server (llama.cpp `timings`, vLLM
//! per-request `metrics`).

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use tokio::time::Instant;

use super::retry::{self, status_class};
use super::sse::Decoder;
use super::{InferError, Reply};
use crate::domain::{cap_text, millis};
use crate::metrics::percentile;

/// One streamed event. Strings borrow from the event's bytes where they hold no escapes: one
/// event arrives per token.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    /// The first of `choices` (palate asks for one).
    #[serde(default, borrow, rename = "choices", deserialize_with = "first_choice")]
    choice: Option<ChunkChoice<'a>>,
    usage: Option<Usage>,
    /// llama.cpp's server timings.
    timings: Option<Timings>,
    /// vLLM's per-request metrics (`--enable-per-request-metrics`).
    metrics: Option<ServerMetrics>,
    /// An error reported mid-stream (vLLM, llama.cpp): `{"error": {"message", "code"}}`.
    error: Option<StreamError>,
}

/// The first element of `choices`, the rest skipped, without a `Vec` per event.
fn first_choice<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ChunkChoice<'de>>, D::Error> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<ChunkChoice<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of choices")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(First)
}

#[derive(Debug, Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Delta<'a>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct StreamError {
    #[serde(default)]
    message: String,
    code: Option<serde_json::Value>,
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
            self.request_id = chunk.id.as_deref().map(str::to_string);
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

/// Reads one streamed completion from a response whose status was a success; returns the reply
/// (or why there is none). What was measured on the way lands in `m`, which a failed attempt keeps
/// too.
pub(super) async fn read(
    mut resp: reqwest::Response,
    t0: Instant,
    m: &mut Measured,
) -> Result<Reply, InferError> {
    let mut r = Reader {
        t0,
        content: String::new(),
        last_token: None,
        gaps: Vec::new(),
        done: false,
    };
    let mut events = Decoder::default();
    while !r.done {
        let bytes = resp.chunk().await.map_err(retry::classify)?;
        match &bytes {
            Some(b) => events.push(b),
            None => events.finish(),
        }
        while let Some(data) = events.next_event() {
            r.event(data, m)?;
            if r.done {
                break;
            }
        }
        if bytes.is_none() {
            break;
        }
    }
    if m.finish_reason.is_none() {
        return Err(InferError::Transient(
            "stream ended without a finish_reason".into(),
        ));
    }
    m.itl_mean_ms = (!r.gaps.is_empty()).then(|| r.gaps.iter().sum::<f64>() / r.gaps.len() as f64);
    m.itl_p95_ms = percentile(&r.gaps, 95.0);
    Ok(Reply {
        content: r.content,
        finish_reason: m.finish_reason.clone(),
        model: String::new(),
    })
}

/// The state of one stream being read.
struct Reader {
    t0: Instant,
    content: String,
    last_token: Option<Instant>,
    gaps: Vec<f64>,
    /// `[DONE]` arrived.
    done: bool,
}

impl Reader {
    /// One event's data: a chunk, `[DONE]`, or an error the server reported mid-stream.
    fn event(&mut self, data: &[u8], m: &mut Measured) -> Result<(), InferError> {
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_slice(data).map_err(|e| {
            let shown = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
            InferError::Transient(format!("malformed stream event ({e}): {shown}"))
        })?;
        if let Some(e) = &chunk.error {
            let status = e
                .code
                .as_ref()
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(500);
            let status = u16::try_from(status).unwrap_or(500);
            let class = status_class(status, &e.message);
            return Err(InferError::new(
                class,
                cap_text(&format!("error in stream: {}", e.message)),
            ));
        }
        if let Some(c) = &chunk.choice {
            if let Some(text) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let now = Instant::now();
                match self.last_token {
                    None => m.ttft_ms = Some(millis(now.duration_since(self.t0))),
                    Some(prev) => self.gaps.push(millis(now.duration_since(prev))),
                }
                self.last_token = Some(now);
                self.content.push_str(text);
            }
            if let Some(f) = &c.finish_reason {
                m.finish_reason = Some(f.to_string());
            }
        }
        m.add(&chunk);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader {
        Reader {
            t0: Instant::now(),
            content: String::new(),
            last_token: None,
            gaps: Vec::new(),
            done: false,
        }
    }

    #[test]
    fn vllms_ttft_metric_is_the_prefill_not_minus_the_queue() {
        // The usage chunk vLLM sends with --enable-per-request-metrics.
        let data = serde_json::json!({
            "id": "cmpl-1", "choices": [],
            "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
            "metrics": {"time_to_first_token_ms": 180.0, "generation_time_ms": 820.0,
                        "queue_time_ms": 60.0, "mean_itl_ms": 21.0, "tokens_per_second": 40.0}
        })
        .to_string();
        let mut m = Measured::default();
        reader().event(data.as_bytes(), &mut m).unwrap();
        assert_eq!(m.request_id.as_deref(), Some("cmpl-1"));
        assert_eq!(m.prompt_tokens, Some(900));
        assert_eq!(m.server_queue_ms, Some(60.0));
        assert_eq!(m.server_prompt_ms, Some(180.0));
        assert_eq!(m.server_decode_ms, Some(820.0));
    }

    #[test]
    fn escaped_content_the_first_choice_and_done_are_read() {
        let (mut r, mut m) = (reader(), Measured::default());
        for data in [
            r#"{"id":"a","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"a","choices":[{"index":0,"delta":{"content":"{\"summary\": \"국물"}}]}"#,
            r#"{"id":"a","choices":[{"index":0,"delta":{"content":"\u0021\"}"},"finish_reason":"stop"},{"index":1,"delta":{"content":"x"}}]}"#,
            r#"{"id":"a","choices":null,"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            " [DONE] ",
        ] {
            r.event(data.as_bytes(), &mut m).unwrap();
        }
        assert!(r.done);
        assert_eq!(r.content, r#"{"summary": "국물!"}"#);
        assert_eq!(r.gaps.len(), 1);
        assert_eq!(m.finish_reason.as_deref(), Some("stop"));
        assert_eq!(m.completion_tokens, Some(3));
        assert!(m.ttft_ms.is_some());
    }

    #[test]
    fn errors_in_the_stream_and_malformed_events_are_classified() {
        let mut m = Measured::default();
        let e = reader()
            .event(
                br#"{"error": {"message": "engine died", "code": 500}}"#,
                &mut m,
            )
            .unwrap_err();
        assert_eq!(
            e,
            InferError::Transient("error in stream: engine died".into())
        );
        let e = (reader().event(
            br#"{"error": {"message": "bad grammar", "code": 400}}"#,
            &mut m,
        ))
        .unwrap_err();
        assert_eq!(e.class(), crate::domain::ErrorClass::Permanent);
        let e = reader().event(b"{\"choices\": [", &mut m).unwrap_err();
        assert_eq!(e.class(), crate::domain::ErrorClass::Transient);
        assert!(e.to_string().starts_with("malformed stream event"), "{e}");
    }
}
