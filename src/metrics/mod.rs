//! metrics: what every request and analysis measured, and the run summary built from them.
//! Definitions follow `vllm bench serve`: TTFT is measured on the client from sending the request
//! to the first content token; TPOT = (E2E − TTFT) / (output tokens − 1); ITL is the gap between
//! successive streamed chunks; tokens/s = output tokens / E2E.

pub mod alerts;
pub mod scrape;

use serde::{Deserialize, Serialize};

use crate::domain::{ErrorClass, Failure, Kind};

/// One HTTP request to an LLM endpoint (a row of `vllm_metrics`, which holds llama.cpp's requests
/// too: the table keeps the name the app reads).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMetrics {
    pub restaurant_id: String,
    pub kind: Kind,
    /// 1 for the first request of an analysis, 2 for its repair retry, …
    pub attempt: u32,
    /// HTTP retries before this one for the same analysis attempt (over every model tried).
    pub retry: u32,
    /// vLLM `priority` sent, if the job sends it.
    pub priority: Option<i64>,
    /// Estimated prompt tokens to compute: palate's scheduling key.
    pub est_prefill_tokens: Option<u64>,
    pub request_id: Option<String>,
    pub endpoint: String,
    pub model: String,
    pub ok: bool,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub finish_reason: Option<String>,
    pub queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
    pub itl_mean_ms: Option<f64>,
    pub itl_p95_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub server_queue_ms: Option<f64>,
    pub server_prompt_ms: Option<f64>,
    pub server_decode_ms: Option<f64>,
    pub started_at: String,
}

impl RequestMetrics {
    /// (E2E − TTFT) / (output tokens − 1); undefined for fewer than two output tokens.
    pub fn tpot_ms(&self) -> Option<f64> {
        let (ttft, n) = (self.ttft_ms?, self.completion_tokens?);
        (n > 1).then(|| (self.e2e_ms - ttft) / (n - 1) as f64)
    }

    /// Output tokens per second of end-to-end time.
    pub fn tokens_per_s(&self) -> Option<f64> {
        let n = self.completion_tokens?;
        (self.e2e_ms > 0.0).then(|| n as f64 * 1000.0 / self.e2e_ms)
    }

    /// Prefill time: the server's own figure where it sends one, else TTFT (which then also holds
    /// the server's queue and the network).
    pub fn prefill_ms(&self) -> Option<f64> {
        self.server_prompt_ms.or(self.ttft_ms)
    }

    /// Decode time: the server's own figure, else E2E − TTFT.
    pub fn decode_ms(&self) -> Option<f64> {
        self.server_decode_ms
            .or_else(|| self.ttft_ms.map(|t| (self.e2e_ms - t).max(0.0)))
    }

    /// Succeeded and within every SLA threshold (TPOT only where defined).
    pub fn meets(&self, sla: &Sla) -> bool {
        self.ok
            && self.ttft_ms.is_some_and(|t| t <= sla.ttft_ms)
            && self.tpot_ms().is_none_or(|t| t <= sla.tpot_ms)
            && sla.e2e_ms.is_none_or(|e| self.e2e_ms <= e)
    }
}

/// SLA thresholds a request must meet to count toward goodput (`vllm bench serve --goodput`);
/// the job file's `[sla]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sla {
    /// Time to first token a request must meet to count as good.
    pub ttft_ms: f64,
    /// Time per output token a request must meet to count as good.
    pub tpot_ms: f64,
    /// End-to-end time a request must meet to count as good; unset = no limit.
    pub e2e_ms: Option<f64>,
}

impl Default for Sla {
    fn default() -> Self {
        Self {
            ttft_ms: 2000.0,
            tpot_ms: 100.0,
            e2e_ms: None,
        }
    }
}

/// What a run's GPU time costs; the job file's `[cost]`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cost {
    /// Price of one GPU hour of the serving deployment; 0 = unknown (no cost in reports).
    pub gpu_usd_per_hour: f64,
    /// GPUs the deployment uses during the run.
    pub gpus: f64,
}

/// Server-side sampling during a run; the job file's `[metrics]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Seconds between scrapes of each endpoint's Prometheus `/metrics` (and NVML); 0 = off.
    pub scrape_interval_s: f64,
    /// Sample GPU utilisation and memory through NVML where the library is present.
    pub nvml: bool,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            scrape_interval_s: 5.0,
            nvml: true,
        }
    }
}

impl ScrapeConfig {
    /// The scrape interval; `None` = no scraping.
    pub fn interval(&self) -> Option<std::time::Duration> {
        (self.scrape_interval_s.is_finite() && self.scrape_interval_s > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.scrape_interval_s))
    }
}

/// p50, p95 and p99 of one latency, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    pub fn of(v: &[f64]) -> Self {
        Self {
            p50: percentile(v, 50.0),
            p95: percentile(v, 95.0),
            p99: percentile(v, 99.0),
        }
    }
}

/// One analysis of one restaurant (a row of `analysis_metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalysisMetrics {
    pub restaurant_id: String,
    pub kind: Kind,
    /// Why it failed; `None` when it is valid.
    pub failure: Option<Failure>,
    pub attempts: u32,
    pub processing_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reviews_total: usize,
    pub reviews_selected: usize,
    /// Estimated prompt tokens of all the restaurant's reviews vs the selected ones.
    pub est_tokens_all_reviews: u64,
    pub est_tokens_selected: u64,
    /// Characters of the stored result (0 when it failed): a shrinking or swelling output is an
    /// early sign of a model or prompt going wrong.
    pub output_chars: usize,
    /// A valid strengths result with no strength (the honest answer for a restaurant nobody
    /// praises; a rising share is worth a look).
    pub empty: bool,
}

/// How good a run's answers were, beyond valid or not: stored with every run so that
/// `palate report --daily` shows drift from night to night.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Quality {
    /// Analyses that failed as degenerate text (label words, loops, echoes, repeats).
    pub degenerate: usize,
    /// Analyses that failed for answering in another language.
    pub wrong_language: usize,
    /// Valid strengths results with no strength.
    pub no_strengths: usize,
    /// Mean characters of valid results, per kind.
    pub mean_output_chars: std::collections::BTreeMap<String, f64>,
}

/// A latency for a table: whole milliseconds followed by `unit`, or `-` when there is none.
pub fn fmt_ms(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}{unit}"))
}

/// Nearest-rank percentile of `values` (`p` in 0..=100); `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Totals of a run, printed at the end and stored in `runs` (`summary_json`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunSummary {
    pub restaurants_done: usize,
    pub restaurants_skipped: usize,
    pub restaurants_failed: usize,
    pub analyses_ok: usize,
    pub analyses_failed: usize,
    pub requests: usize,
    pub requests_failed: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub ttft_ms: Percentiles,
    pub tpot_ms: Percentiles,
    pub itl_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub queue_ms: Percentiles,
    /// Requests (every HTTP attempt) and output tokens per second of wall time.
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    /// Requests meeting every SLA threshold, per second of wall time.
    pub goodput_rps: f64,
    /// Output tokens of the requests meeting every SLA threshold, per second of wall time.
    #[serde(default)]
    pub goodput_tokens_per_s: f64,
    /// Share of requests meeting every SLA threshold, in percent.
    pub sla_compliance_pct: f64,
    /// Prompt tokens saved by selection (estimated: all reviews vs the selected ones).
    pub tokens_saved_by_selection: u64,
    /// GPU cost of the run's wall time, and per 1,000 tokens (prompt + output); `None` without a price.
    pub cost_usd: Option<f64>,
    pub usd_per_1k_tokens: Option<f64>,
    /// The thresholds goodput was judged by.
    pub sla: Option<Sla>,
    /// Wall time of the analysis phase (the rates above are over it).
    pub analysis_ms: f64,
    /// Wall time of the whole command (ingest and embedding included).
    pub wall_ms: f64,
    /// Failure groups (see [`Failure::group`]) with their counts, most frequent first.
    pub failure_reasons: Vec<(String, usize)>,
    pub quality: Quality,
    /// Why the run stopped before its last restaurant, if it did on its own (every endpoint
    /// failing); an interrupt or the deadline show in the run's status instead.
    #[serde(default)]
    pub gave_up: Option<String>,
}

/// GPU utilisation under this share is idle: the report's idle share and the watchdog's default
/// threshold.
pub const IDLE_UTILISATION_PCT: f64 = 5.0;

/// The failure groups (see `validate::ValidationError::group`) the quality counters count.
pub const DEGENERATE: &str = "invalid output: degenerate";
pub const WRONG_LANGUAGE: &str = "invalid output: wrong language";

/// Accumulates request and analysis metrics while a run goes on.
#[derive(Debug, Default)]
pub struct RunTally {
    ttfts: Vec<f64>,
    tpots: Vec<f64>,
    itls: Vec<f64>,
    e2es: Vec<f64>,
    queues: Vec<f64>,
    good: usize,
    good_tokens: u64,
    pub summary: RunSummary,
    reasons: std::collections::BTreeMap<String, usize>,
    /// Per kind: characters and count of valid results.
    chars: std::collections::BTreeMap<String, (usize, usize)>,
}

impl RunTally {
    pub fn add_request(&mut self, m: &RequestMetrics, sla: &Sla) {
        self.summary.sla = Some(*sla);
        self.add_judged(m, m.meets(sla));
    }

    /// Adds a request already judged against the SLA (as stored in `vllm_metrics.meets_sla`).
    pub fn add_judged(&mut self, m: &RequestMetrics, meets_sla: bool) {
        self.summary.requests += 1;
        if !m.ok {
            self.summary.requests_failed += 1;
        }
        self.summary.prompt_tokens += m.prompt_tokens.unwrap_or(0);
        self.summary.completion_tokens += m.completion_tokens.unwrap_or(0);
        self.summary.cached_tokens += m.cached_tokens.unwrap_or(0);
        self.ttfts.extend(m.ttft_ms);
        self.tpots.extend(m.tpot_ms());
        self.itls.extend(m.itl_mean_ms);
        self.queues.push(m.queue_ms);
        if m.ok {
            self.e2es.push(m.e2e_ms);
        }
        if meets_sla {
            self.good += 1;
            self.good_tokens += m.completion_tokens.unwrap_or(0);
        }
    }

    pub fn add_analysis(&mut self, a: &AnalysisMetrics) {
        // The restaurant's selection saving, counted once (on its first analysis).
        if a.kind == Kind::Sentiment {
            self.summary.tokens_saved_by_selection += a
                .est_tokens_all_reviews
                .saturating_sub(a.est_tokens_selected);
        }
        let q = &mut self.summary.quality;
        match &a.failure {
            None => {
                self.summary.analyses_ok += 1;
                q.no_strengths += usize::from(a.empty);
                let c = self.chars.entry(a.kind.as_str().into()).or_default();
                *c = (c.0 + a.output_chars, c.1 + 1);
            }
            Some(f) => {
                self.summary.analyses_failed += 1;
                q.degenerate += usize::from(f.group.starts_with(DEGENERATE));
                q.wrong_language += usize::from(f.group == WRONG_LANGUAGE);
                *self.reasons.entry(f.group.clone()).or_default() += 1;
            }
        }
    }

    pub fn finish(mut self, wall_ms: f64, cost: Cost) -> RunSummary {
        let s = &mut self.summary;
        s.wall_ms = wall_ms;
        s.analysis_ms = wall_ms;
        s.ttft_ms = Percentiles::of(&self.ttfts);
        s.tpot_ms = Percentiles::of(&self.tpots);
        s.itl_ms = Percentiles::of(&self.itls);
        s.e2e_ms = Percentiles::of(&self.e2es);
        s.queue_ms = Percentiles::of(&self.queues);
        let per_s = |n: f64| {
            if wall_ms > 0.0 {
                n * 1000.0 / wall_ms
            } else {
                0.0
            }
        };
        s.requests_per_s = per_s(s.requests as f64);
        s.output_tokens_per_s = per_s(s.completion_tokens as f64);
        s.goodput_rps = per_s(self.good as f64);
        s.goodput_tokens_per_s = per_s(self.good_tokens as f64);
        s.sla_compliance_pct = if s.requests > 0 {
            100.0 * self.good as f64 / s.requests as f64
        } else {
            0.0
        };
        if cost.gpu_usd_per_hour > 0.0 {
            let usd = wall_ms / 3_600_000.0 * cost.gpu_usd_per_hour * cost.gpus.max(1.0);
            let tokens = (s.prompt_tokens + s.completion_tokens) as f64;
            s.cost_usd = Some(usd);
            s.usd_per_1k_tokens = (tokens > 0.0).then(|| usd * 1000.0 / tokens);
        }
        let mut reasons: Vec<_> = self.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.summary.failure_reasons = reasons;
        self.summary.quality.mean_output_chars = (self.chars.into_iter())
            .map(|(k, (chars, n))| (k, (chars as f64 / n.max(1) as f64).round()))
            .collect();
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpot_follows_vllm_bench_definition() {
        let m = RequestMetrics {
            ttft_ms: Some(100.0),
            e2e_ms: 1100.0,
            completion_tokens: Some(11),
            ..Default::default()
        };
        assert_eq!(m.tpot_ms(), Some(100.0));
        assert_eq!(m.tokens_per_s(), Some(10.0));
        let one = RequestMetrics {
            completion_tokens: Some(1),
            ..m.clone()
        };
        assert_eq!(one.tpot_ms(), None);
        assert_eq!(m.prefill_ms(), Some(100.0), "TTFT without server timings");
        assert_eq!(
            m.decode_ms(),
            Some(1000.0),
            "E2E - TTFT without server timings"
        );
        let served = RequestMetrics {
            server_prompt_ms: Some(40.0),
            server_decode_ms: Some(900.0),
            ..m.clone()
        };
        assert_eq!(served.prefill_ms(), Some(40.0));
        assert_eq!(served.decode_ms(), Some(900.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn goodput_counts_requests_meeting_both_slas() {
        let mut t = RunTally::default();
        let fast = RequestMetrics {
            ok: true,
            ttft_ms: Some(100.0),
            e2e_ms: 500.0,
            completion_tokens: Some(5),
            ..Default::default()
        };
        let slow_first = RequestMetrics {
            ttft_ms: Some(3000.0),
            ..fast.clone()
        };
        let failed = RequestMetrics {
            ok: false,
            ..fast.clone()
        };
        let slow_tokens = RequestMetrics {
            e2e_ms: 5000.0,
            ..fast.clone()
        };
        let sla = Sla {
            ttft_ms: 2000.0,
            tpot_ms: 200.0,
            e2e_ms: None,
        };
        for m in [&fast, &fast, &slow_first, &failed, &slow_tokens] {
            t.add_request(m, &sla);
        }
        let cost = Cost {
            gpu_usd_per_hour: 3.6,
            gpus: 1.0,
        };
        let s = t.finish(2000.0, cost);
        assert_eq!(s.requests, 5);
        assert_eq!(s.requests_failed, 1);
        // fast, fast: TTFT 100 ms, TPOT (500-100)/4 = 100 ms. slow_tokens: TPOT 1225 ms > 200.
        assert!((s.goodput_rps - 1.0).abs() < 1e-9, "{}", s.goodput_rps);
        assert!((s.sla_compliance_pct - 40.0).abs() < 1e-9);
        assert!((s.requests_per_s - 2.5).abs() < 1e-9);
        assert!(
            (s.output_tokens_per_s - 12.5).abs() < 1e-9,
            "{}",
            s.output_tokens_per_s
        );
        // 2 s of one $3.60/h GPU = $0.002, over 25 output tokens (no prompt tokens here).
        assert!((s.cost_usd.unwrap() - 0.002).abs() < 1e-12);
        assert!((s.usd_per_1k_tokens.unwrap() - 0.08).abs() < 1e-9);
        assert_eq!(s.ttft_ms.p50, Some(100.0));
        assert_eq!(s.tpot_ms.p99, Some(1225.0));
        let e2e_sla = Sla {
            e2e_ms: Some(400.0),
            ..sla
        };
        assert!(!fast.meets(&e2e_sla), "E2E 500 ms > 400 ms");
    }
}
