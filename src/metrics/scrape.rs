//! Server-side samples taken while a run goes on: every endpoint's Prometheus `/metrics`
//! (vLLM's `vllm:` names and llama.cpp's `llamacpp:` names; histogram buckets left out, their
//! `_sum` and `_count` kept) and, where the NVIDIA driver's NVML library is present, each GPU's
//! utilisation and memory. Stored in `server_metrics`, one row per sample.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::domain::now;

/// Where samples are kept (the store implements it).
#[async_trait]
pub trait SampleSink: Send + Sync {
    async fn put_samples(&self, run_id: i64, samples: Vec<Sample>) -> Result<(), String>;
}

/// One sampled value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Endpoint base URL, or `nvml`.
    pub source: String,
    pub at: String,
    pub name: String,
    /// Prometheus labels as written (`model_name="x"`), '' if none.
    pub labels: String,
    pub value: f64,
}

/// Parses Prometheus text exposition format: `name{labels} value [timestamp]` per line. A
/// sample that is not a finite number (`NaN`, `+Inf`) is left out, not the whole scrape.
pub fn parse(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, rest) = match l.rfind('}') {
                Some(close) => (&l[..=close], &l[close + 1..]),
                None => l.split_once(char::is_whitespace)?,
            };
            let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
            if !value.is_finite() {
                return None;
            }
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name.to_string(), labels.to_string(), value))
        })
        .collect()
}

/// The series worth keeping: the servers' own, without histogram buckets.
fn keep(name: &str) -> bool {
    (name.starts_with("vllm:") || name.starts_with("llamacpp:")) && !name.ends_with("_bucket")
}

/// `http://host:8000/v1` → `http://host:8000/metrics`.
pub fn metrics_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/metrics")
}

/// GPU samples, if NVML loads.
struct Gpu(nvml_wrapper::Nvml);

impl Gpu {
    fn open() -> Option<Self> {
        match nvml_wrapper::Nvml::init() {
            Ok(n) => Some(Self(n)),
            Err(e) => {
                tracing::debug!(error = %e, "NVML not available; no GPU samples");
                None
            }
        }
    }

    fn sample(&self, at: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        let n = self.0.device_count().unwrap_or(0);
        for i in 0..n {
            let Ok(d) = self.0.device_by_index(i) else {
                continue;
            };
            let labels = format!("gpu=\"{i}\"");
            let mut push = |name: &str, value: f64| {
                out.push(Sample {
                    source: "nvml".into(),
                    at: at.to_string(),
                    name: name.into(),
                    labels: labels.clone(),
                    value,
                })
            };
            if let Ok(u) = d.utilization_rates() {
                push("gpu_utilization_percent", u.gpu as f64);
            }
            if let Ok(m) = d.memory_info() {
                push("gpu_memory_used_bytes", m.used as f64);
                push("gpu_memory_total_bytes", m.total as f64);
            }
            if let Ok(t) =
                d.temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
            {
                push("gpu_temperature_celsius", f64::from(t));
            }
        }
        out
    }
}

/// Samples every `interval` until `stop`, storing as it goes; returns the samples stored. A
/// server without `/metrics` (or down) is skipped for that round, never an error.
pub async fn run(
    sink: Arc<dyn SampleSink>,
    run_id: i64,
    endpoints: Vec<String>,
    interval: Duration,
    nvml: bool,
    stop: CancellationToken,
) -> usize {
    let http = match reqwest::Client::builder()
        .timeout(interval.min(Duration::from_secs(10)))
        .build()
    {
        Ok(c) => c,
        Err(_) => return 0,
    };
    let gpu = if nvml { Gpu::open() } else { None };
    let mut stored = 0;
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return stored,
            _ = tick.tick() => {}
        }
        let at = now();
        let mut samples = gpu.as_ref().map(|g| g.sample(&at)).unwrap_or_default();
        for ep in &endpoints {
            let Ok(resp) = http.get(metrics_url(ep)).send().await else {
                continue;
            };
            let Ok(text) = resp.error_for_status().map(|r| r.text()) else {
                continue;
            };
            let Ok(text) = text.await else { continue };
            samples.extend(
                parse(&text)
                    .into_iter()
                    .filter(|(name, _, _)| keep(name))
                    .map(|(name, labels, value)| Sample {
                        source: crate::domain::redact_url(ep),
                        at: at.clone(),
                        name,
                        labels,
                        value,
                    }),
            );
        }
        if samples.is_empty() {
            continue;
        }
        let n = samples.len();
        match sink.put_samples(run_id, samples).await {
            Ok(()) => stored += n,
            Err(e) => tracing::warn!(error = %e, "cannot store server metrics samples"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_sample_is_left_out_and_the_rest_of_the_scrape_kept() {
        let text =
            "vllm:a NaN\nvllm:b{le=\"+Inf\"} +Inf\nvllm:c{x=\"}\"} 2\nvllm:d -Inf\nvllm:e 1\n";
        let all = parse(text);
        let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["vllm:c", "vllm:e"]);
        assert_eq!(all[0].1, "x=\"}\"");
    }

    proptest::proptest! {
        /// Any text: no panic, and only finite values come out.
        #[test]
        fn prometheus_parse_never_panics(text in "(\\PC{0,30}( |\\{|\\}|\n|NaN|1e309|-0)?){0,12}") {
            for (_, _, v) in parse(&text) {
                proptest::prop_assert!(v.is_finite());
            }
        }
    }

    #[test]
    fn parses_prometheus_text_and_keeps_server_series() {
        let text = r#"# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
vllm:e2e_request_latency_seconds_bucket{model_name="m",le="0.5"} 7
vllm:e2e_request_latency_seconds_sum{model_name="m"} 12.5
llamacpp:requests_processing 2
process_cpu_seconds_total 1.5e3 1700000000
"#;
        let all = parse(text);
        assert_eq!(all.len(), 5);
        assert_eq!(
            all[0],
            (
                "vllm:num_requests_running".into(),
                "model_name=\"m\"".into(),
                3.0
            )
        );
        assert_eq!(all[4].2, 1500.0);
        let kept: Vec<&str> = all
            .iter()
            .map(|(n, _, _)| n.as_str())
            .filter(|n| keep(n))
            .collect();
        assert_eq!(
            kept,
            [
                "vllm:num_requests_running",
                "vllm:e2e_request_latency_seconds_sum",
                "llamacpp:requests_processing"
            ]
        );
        assert_eq!(
            metrics_url("http://h:8000/v1/"),
            "http://h:8000/metrics".to_string()
        );
    }
}
