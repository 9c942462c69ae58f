//! What the benchmarks read from the server's `/metrics` while a mode runs: the running
//! sequences (vLLM's `vllm:num_requests_running`, llama.cpp's `llamacpp:requests_processing`),
//! sampled at a fixed interval so their mean is time-weighted, the preemptions, and the
//! simulator's own gauges (its time scale and `max_num_seqs`); and one streamed request's
//! client-side timings, which calibration measures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use tokio_util::sync::CancellationToken;

use crate::domain::lock;

/// The value of the first sample of `name` (any labels) in Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The server's `/metrics` text (the endpoint's base URL ends in `/v1`); `None` if it has none.
pub async fn metrics(http: &reqwest::Client, endpoint: &str) -> Option<String> {
    let base = endpoint.trim_end_matches('/').trim_end_matches("/v1");
    let r = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    r.error_for_status().ok()?.text().await.ok()
}

/// Running sequences in a metrics text.
pub fn running(text: &str) -> Option<f64> {
    gauge(text, "vllm:num_requests_running").or_else(|| gauge(text, "llamacpp:requests_processing"))
}

/// Samples the running sequences every `every` until stopped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<f64>>>,
    stop: CancellationToken,
}

impl Sampler {
    pub fn start(http: reqwest::Client, endpoint: String, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (s, st) = (Arc::clone(&samples), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = st.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(v) = metrics(&http, &endpoint).await.as_deref().and_then(running) {
                    lock(&s).push(v);
                }
            }
        });
        Self { samples, stop }
    }

    /// The mean of the samples, and how many.
    pub fn finish(self) -> (Option<f64>, usize) {
        self.stop.cancel();
        let s = lock(&self.samples);
        let mean = (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64);
        (mean, s.len())
    }
}

/// One streamed request's client-side timings and usage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub ttft_ms: f64,
    pub e2e_ms: f64,
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, those the server's prefix cache already held.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

impl Sample {
    pub fn tpot_ms(&self) -> Option<f64> {
        (self.completion_tokens > 1)
            .then(|| (self.e2e_ms - self.ttft_ms) / (self.completion_tokens - 1) as f64)
    }
}

/// A real server the calibration measures, one streamed request at a time.
pub struct Server {
    pub http: reqwest::Client,
    pub url: String,
    pub model: String,
}

impl Server {
    /// Streams one chat completion; `schema` constrains it.
    pub async fn chat(
        &self,
        prompt: &str,
        max_tokens: usize,
        ignore_eos: bool,
        schema: Option<&Value>,
    ) -> anyhow::Result<Sample> {
        let messages = json!([{"role": "user", "content": prompt}]);
        self.messages(messages, max_tokens, ignore_eos, schema)
            .await
    }

    pub async fn messages(
        &self,
        messages: Value,
        max_tokens: usize,
        ignore_eos: bool,
        schema: Option<&Value>,
    ) -> anyhow::Result<Sample> {
        self.streamed(messages, max_tokens, ignore_eos, schema, None)
            .await
    }

    /// As [`Server::messages`], telling `first` when the first token arrives.
    pub async fn streamed(
        &self,
        messages: Value,
        max_tokens: usize,
        ignore_eos: bool,
        schema: Option<&Value>,
        mut first: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> anyhow::Result<Sample> {
        let mut body = json!({"model": self.model, "stream": true,
            "stream_options": {"include_usage": true}, "max_tokens": max_tokens,
            "temperature": 0.0, "messages": messages});
        if ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        if let Some(s) = schema {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "calibrate", "schema": s}});
        }
        let t0 = Instant::now();
        let mut resp = (self.http.post(format!("{}/chat/completions", self.url)))
            .json(&body)
            .timeout(Duration::from_secs(600))
            .send()
            .await?
            .error_for_status()?;
        let (mut s, mut events) = (Sample::default(), crate::infer::sse::Decoder::default());
        while let Some(chunk) = resp.chunk().await? {
            events.push(&chunk);
            while let Some(data) = events.next_event() {
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    continue; // [DONE]
                };
                let content = v["choices"][0]["delta"]["content"].as_str();
                if s.ttft_ms == 0.0 && content.is_some_and(|c| !c.is_empty()) {
                    s.ttft_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    first.take().map(|tx| tx.send(()));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    s.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                    s.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
                    s.cached_tokens = (u["prompt_tokens_details"]["cached_tokens"].as_u64())
                        .unwrap_or(0) as usize;
                }
            }
        }
        s.e2e_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if s.ttft_ms == 0.0 {
            s.ttft_ms = s.e2e_ms;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_by_exact_name_with_or_without_labels() {
        let t = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 12\n\
vllm:num_requests_running_total 99\npalate_sim_time_scale 0.25\n";
        assert_eq!(gauge(t, "vllm:num_requests_running"), Some(12.0));
        assert_eq!(gauge(t, "palate_sim_time_scale"), Some(0.25));
        assert_eq!(gauge(t, "vllm:num_requests"), None);
        assert_eq!(running("llamacpp:requests_processing 3\n"), Some(3.0));
    }
}
