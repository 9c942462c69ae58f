//! The engine's counters, gauges and latency histograms, read by `/metrics` and by benchmarks.

use serde::Serialize;

/// Counters and gauges, read by `/metrics` and by benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub steps: u64,
    /// Time spent in steps (the engine had work).
    pub busy_ms: f64,
    /// Σ running sequences × step time: ÷ wall time, the time-weighted mean running.
    pub running_ms: f64,
    pub preemptions: u64,
    pub max_num_seqs: usize,
    /// The engine's real seconds per simulated second.
    pub time_scale: f64,
    pub kv_blocks_used: usize,
    /// 0: no limit.
    pub kv_blocks: usize,
    /// Sum over steps of the sequences running in it (mean batch = seq_steps / steps).
    pub seq_steps: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens actually computed (prompt tokens minus prefix-cache hits).
    pub prefill_tokens: u64,
    pub cached_tokens: u64,
    pub generation_tokens: u64,
    pub finished: u64,
    pub aborted: u64,
    pub running: usize,
    pub waiting: usize,
    pub cache_blocks_used: usize,
    pub cache_blocks: usize,
    pub queue_s: Histogram,
    pub ttft_s: Histogram,
    pub prefill_s: Histogram,
    pub decode_s: Histogram,
    pub e2e_s: Histogram,
}

/// A Prometheus histogram with vLLM's latency buckets.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub buckets: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        let buckets = vec![
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
        ];
        let counts = vec![0; buckets.len()];
        Self {
            buckets,
            counts,
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.buckets.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}
