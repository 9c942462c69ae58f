//! The server-sent events of a streamed chat completion, with the mid-stream faults (stall, cut
//! stream, malformed chunk).

use bytes::Bytes;
use futures::StreamExt;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Duration;

use super::engine::Event;
use super::Fault;

/// The server-sent events of one streamed completion.
pub(super) struct Sse {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) usage: bool,
    pub(super) fault: Option<Fault>,
    pub(super) fault_at: usize,
    pub(super) stall_for: Duration,
}

pub(super) type FrameResult = Result<Frame<Bytes>, std::io::Error>;

impl Sse {
    fn event(v: &Value) -> FrameResult {
        Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))))
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    pub(super) fn frames(
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
                            // vLLM's per-request metrics (`--enable-per-request-metrics`):
                            // its TTFT counts from when the request was scheduled.
                            "metrics": {"queue_time_ms": d.queue_ms,
                                        "time_to_first_token_ms": d.prefill_ms,
                                        "generation_time_ms": d.decode_ms,
                                        "mean_itl_ms": d.decode_ms / (d.completion_tokens.max(2) - 1) as f64,
                                        "tokens_per_second": d.completion_tokens as f64 * 1000.0 / (d.prefill_ms + d.decode_ms).max(1e-9)}});
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
