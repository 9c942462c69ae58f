//! What the benchmarks read from the server's `/metrics` while a mode runs: the running
//! sequences (vLLM's `vllm:num_requests_running`, llama.cpp's `llamacpp:requests_processing`),
//! sampled at a fixed interval so their mean is time-weighted, the preemptions, and the
//! simulator's own gauges (its time scale and `max_num_seqs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
