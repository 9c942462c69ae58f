//! `/metrics`: the engine's stats in Prometheus text format, under vLLM's metric names.

use std::fmt::Write as _;

use super::EngineStats;

/// `/metrics` in Prometheus text format with vLLM's names.
pub(super) fn prometheus(s: &EngineStats, model: &str) -> String {
    let label = format!("model_name=\"{model}\"");
    let mut out = String::new();
    let gauges = [
        ("vllm:num_requests_running", s.running as f64),
        ("vllm:num_requests_waiting", s.waiting as f64),
        (
            "vllm:kv_cache_usage_perc",
            match (s.kv_blocks, s.cache_blocks) {
                (0, 0) => 0.0,
                (0, cache) => s.cache_blocks_used as f64 / cache as f64,
                (kv, _) => s.kv_blocks_used as f64 / kv as f64,
            },
        ),
    ];
    for (name, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name}{{{label}}} {v}");
    }
    // The simulator's own, for the benchmarks: its time scale and limit.
    let _ = writeln!(
        out,
        "palate_sim_time_scale {}\npalate_sim_max_num_seqs {}",
        s.time_scale, s.max_num_seqs
    );
    let counters = [
        ("vllm:prompt_tokens_total", s.prompt_tokens),
        ("vllm:generation_tokens_total", s.generation_tokens),
        ("vllm:prefix_cache_queries_total", s.prompt_tokens),
        ("vllm:prefix_cache_hits_total", s.cached_tokens),
        ("vllm:request_success_total", s.finished),
        ("vllm:num_preemptions_total", s.preemptions),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n{name}{{{label}}} {v}");
    }
    let histograms = [
        ("vllm:request_queue_time_seconds", &s.queue_s),
        ("vllm:time_to_first_token_seconds", &s.ttft_s),
        ("vllm:request_prefill_time_seconds", &s.prefill_s),
        ("vllm:request_decode_time_seconds", &s.decode_s),
        ("vllm:e2e_request_latency_seconds", &s.e2e_s),
    ];
    for (name, h) in histograms {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in h.buckets.iter().zip(&h.counts) {
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label},le=\"+Inf\"}} {}\n{name}_sum{{{label}}} {}\n{name}_count{{{label}}} {}",
            h.count, h.sum, h.count
        );
    }
    out
}
