//! metrics: what every request and analysis measured, and the run summary built from them.
//! Definitions follow `vllm bench serve`: TTFT is measured on the client from sending the request
//! to the first content token; TPOT = (E2E − TTFT) / (output tokens − 1); ITL is the gap between
//! successive streamed chunks; tokens/s = output tokens / E2E.

use serde::Serialize;

/// Error classes: only `Transient` is retried at the HTTP level; `InvalidOutput` gets the one
/// repair retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Permanent,
    ContextLength,
    InvalidOutput,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::ContextLength => "context_length",
            Self::InvalidOutput => "invalid_output",
        }
    }
}

/// One HTTP request to an LLM endpoint (a row of `vllm_metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMetrics {
    pub restaurant_id: String,
    pub kind: String,
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
}

/// One analysis of one restaurant (a row of `analysis_metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalysisMetrics {
    pub restaurant_id: String,
    pub kind: String,
    pub ok: bool,
    pub failure_reason: Option<String>,
    pub attempts: u32,
    pub processing_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reviews_total: usize,
    pub reviews_selected: usize,
    /// Estimated prompt tokens of all the restaurant's reviews vs the selected ones.
    pub est_tokens_all_reviews: u64,
    pub est_tokens_selected: u64,
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

/// Totals of a run, printed at the end and stored in `runs`.
#[derive(Debug, Clone, Default, Serialize)]
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
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    /// Requests meeting both SLA thresholds, per second of wall time.
    pub goodput_rps: f64,
    pub wall_ms: f64,
    /// Failure reasons with their counts, most frequent first.
    pub failure_reasons: Vec<(String, usize)>,
}

/// The part of a failure reason that names its kind: the text before the first quoted value (the
/// quoted text differs per item), so that equal failures count together.
pub fn reason_group(reason: &str) -> String {
    reason
        .split('"')
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

/// Accumulates request and analysis metrics while a run goes on.
#[derive(Debug, Default)]
pub struct RunTally {
    ttfts: Vec<f64>,
    good: usize,
    pub summary: RunSummary,
    reasons: std::collections::BTreeMap<String, usize>,
}

impl RunTally {
    pub fn add_request(&mut self, m: &RequestMetrics, sla_ttft_ms: f64, sla_tpot_ms: f64) {
        self.summary.requests += 1;
        if !m.ok {
            self.summary.requests_failed += 1;
        }
        self.summary.prompt_tokens += m.prompt_tokens.unwrap_or(0);
        self.summary.completion_tokens += m.completion_tokens.unwrap_or(0);
        if let Some(t) = m.ttft_ms {
            self.ttfts.push(t);
        }
        let meets = m.ok
            && m.ttft_ms.is_some_and(|t| t <= sla_ttft_ms)
            && m.tpot_ms().is_none_or(|t| t <= sla_tpot_ms);
        if meets {
            self.good += 1;
        }
    }

    pub fn add_analysis(&mut self, a: &AnalysisMetrics) {
        if a.ok {
            self.summary.analyses_ok += 1;
        } else {
            self.summary.analyses_failed += 1;
            let reason = a.failure_reason.as_deref().unwrap_or("unknown");
            *self.reasons.entry(reason_group(reason)).or_default() += 1;
        }
    }

    pub fn finish(mut self, wall_ms: f64) -> RunSummary {
        self.summary.wall_ms = wall_ms;
        self.summary.ttft_p50_ms = percentile(&self.ttfts, 50.0);
        self.summary.ttft_p95_ms = percentile(&self.ttfts, 95.0);
        self.summary.goodput_rps = if wall_ms > 0.0 {
            self.good as f64 * 1000.0 / wall_ms
        } else {
            0.0
        };
        let mut reasons: Vec<_> = self.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.summary.failure_reasons = reasons;
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
    }

    #[test]
    fn failure_reasons_group_without_their_quoted_values() {
        assert_eq!(
            reason_group(r#"content: strength title "R1" has no words"#),
            "content: strength title"
        );
        let cut = "output cut at max_tokens (finish_reason=length) (after one repair retry)";
        assert_eq!(reason_group(cut), cut);
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
        for m in [&fast, &fast, &slow_first, &failed] {
            t.add_request(m, 2000.0, 200.0);
        }
        let s = t.finish(2000.0);
        assert_eq!(s.requests, 4);
        assert_eq!(s.requests_failed, 1);
        assert!((s.goodput_rps - 1.0).abs() < 1e-9, "{}", s.goodput_rps);
    }
}
