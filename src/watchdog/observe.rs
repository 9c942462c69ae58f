//! One live observation: the server's `/metrics` (vLLM's or llama.cpp's names), each GPU's
//! utilisation through NVML, and the job database's lock holder.

use std::path::PathBuf;
use std::time::Duration;

use super::Observation;
use crate::metrics::scrape::{metrics_url, parse};

/// Running, waiting, token counters and process start, by the names each server uses.
const RUNNING: [&str; 2] = ["vllm:num_requests_running", "llamacpp:requests_processing"];
const WAITING: [&str; 2] = ["vllm:num_requests_waiting", "llamacpp:requests_deferred"];
const TOKENS: [&str; 4] = [
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "llamacpp:prompt_tokens_total",
    "llamacpp:tokens_predicted_total",
];

/// The server's figures from its `/metrics` text, every label summed.
pub fn from_metrics(text: &str, o: &mut Observation) {
    let series = parse(text);
    let sum = |names: &[&str]| -> f64 {
        (series.iter())
            .filter(|(n, _, _)| names.contains(&n.as_str()))
            .map(|(_, _, v)| v)
            .sum()
    };
    o.up = true;
    o.running = sum(&RUNNING);
    o.waiting = sum(&WAITING);
    o.tokens_total = sum(&TOKENS);
    o.started_at = (series.iter())
        .find(|(n, _, _)| n == "process_start_time_seconds")
        .map(|(_, _, v)| *v);
}

pub struct Observer {
    http: reqwest::Client,
    url: String,
    database: PathBuf,
    nvml: Option<nvml_wrapper::Nvml>,
}

impl Observer {
    pub fn new(endpoint: &str, database: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            url: metrics_url(endpoint),
            database,
            nvml: nvml_wrapper::Nvml::init().ok(),
        })
    }

    /// The server, the GPUs and the lock at unix time `t`. A server that does not answer is
    /// down (`up` false), never an error.
    pub async fn observe(&self, t: f64) -> Observation {
        let mut o = Observation {
            t,
            gpu_util_pct: self.gpu_util(),
            palate_running: crate::store::health::lock_holder(&self.database).is_some(),
            ..Default::default()
        };
        let text = match self.http.get(&self.url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        if let Some(text) = text {
            from_metrics(&text, &mut o);
        }
        o
    }

    /// Mean utilisation over the GPUs NVML sees.
    fn gpu_util(&self) -> Option<f64> {
        let nvml = self.nvml.as_ref()?;
        let n = nvml.device_count().ok()?;
        let utils: Vec<f64> = (0..n)
            .filter_map(|i| nvml.device_by_index(i).ok()?.utilization_rates().ok())
            .map(|u| f64::from(u.gpu))
            .collect();
        (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_and_llama_cpp_names_are_both_read() {
        let mut o = Observation::default();
        from_metrics(
            "vllm:num_requests_running{model_name=\"m\"} 3\nvllm:num_requests_waiting{model_name=\"m\"} 1\n\
             vllm:prompt_tokens_total{model_name=\"m\"} 1000\nvllm:generation_tokens_total{model_name=\"m\"} 250\n\
             process_start_time_seconds 1764550000\n",
            &mut o,
        );
        assert_eq!(
            (o.up, o.running, o.waiting, o.tokens_total),
            (true, 3.0, 1.0, 1250.0)
        );
        assert_eq!(o.started_at, Some(1_764_550_000.0));
        let mut o = Observation::default();
        from_metrics(
            "llamacpp:requests_processing 1\nllamacpp:requests_deferred 2\nllamacpp:prompt_tokens_total 10\nllamacpp:tokens_predicted_total 5\n",
            &mut o,
        );
        assert_eq!(
            (o.running, o.waiting, o.tokens_total, o.started_at),
            (1.0, 2.0, 15.0, None)
        );
    }
}
