//! What a run's table breaks down: latency and throughput by analysis kind (sentiment, summary,
//! strengths), and the GPU's utilisation, memory and temperature from the NVML samples the run
//! took (`[metrics] nvml`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{RequestPoint, SamplePoint};
use crate::metrics::{fmt_ms, Percentiles, IDLE_UTILISATION_PCT};

/// One analysis kind's requests. Rates are over the run's analysis time, so the kinds' rates
/// add up to the run's.
#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    pub kind: String,
    pub requests: usize,
    pub failed: usize,
    pub ttft_ms: Percentiles,
    pub tpot_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    pub goodput_rps: f64,
    /// Output tokens of requests within the SLA, per second.
    pub goodput_tokens_per_s: f64,
    pub sla_compliance_pct: f64,
}

/// Per kind, in kind order.
pub fn by_kind(requests: &[RequestPoint], analysis_ms: f64) -> Vec<KindStats> {
    let mut groups: BTreeMap<&str, Vec<&RequestPoint>> = BTreeMap::new();
    for r in requests {
        groups.entry(r.kind.as_str()).or_default().push(r);
    }
    let per_s = |n: f64| {
        if analysis_ms > 0.0 {
            n * 1000.0 / analysis_ms
        } else {
            0.0
        }
    };
    groups
        .into_iter()
        .map(|(kind, rs)| {
            let good: Vec<_> = rs.iter().filter(|r| r.meets_sla).collect();
            let ok: Vec<_> = rs.iter().filter(|r| r.ok).collect();
            let output_tokens = rs.iter().map(|r| r.completion_tokens).sum::<u64>();
            let good_tokens = good.iter().map(|r| r.completion_tokens).sum::<u64>();
            KindStats {
                kind: kind.to_string(),
                requests: rs.len(),
                failed: rs.len() - ok.len(),
                ttft_ms: Percentiles::of(&rs.iter().filter_map(|r| r.ttft_ms).collect::<Vec<_>>()),
                tpot_ms: Percentiles::of(&rs.iter().filter_map(|r| r.tpot_ms).collect::<Vec<_>>()),
                e2e_ms: Percentiles::of(&ok.iter().map(|r| r.e2e_ms).collect::<Vec<_>>()),
                output_tokens,
                output_tokens_per_s: per_s(output_tokens as f64),
                goodput_rps: per_s(good.len() as f64),
                goodput_tokens_per_s: per_s(good_tokens as f64),
                sla_compliance_pct: 100.0 * good.len() as f64 / rs.len().max(1) as f64,
            }
        })
        .collect()
}

/// The GPUs over the run, from NVML samples (every GPU's samples pooled).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct GpuStats {
    pub samples: usize,
    pub utilization_mean_pct: f64,
    pub utilization_max_pct: f64,
    /// Share of samples under [`IDLE_UTILISATION_PCT`].
    pub idle_share_pct: f64,
    pub memory_peak_bytes: f64,
    /// Peak used ÷ total memory of the same GPU, in percent.
    pub memory_peak_pct: f64,
    pub temperature_max_c: Option<f64>,
}

/// `None` when the run took no GPU samples.
pub fn gpu(samples: &[SamplePoint]) -> Option<GpuStats> {
    let values = |name: &str| -> Vec<f64> {
        (samples.iter())
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect()
    };
    let util = values("gpu_utilization_percent");
    if util.is_empty() {
        return None;
    }
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let used = values("gpu_memory_used_bytes");
    let total = max(&values("gpu_memory_total_bytes"));
    let temps = values("gpu_temperature_celsius");
    let peak = if used.is_empty() { 0.0 } else { max(&used) };
    Some(GpuStats {
        samples: util.len(),
        utilization_mean_pct: util.iter().sum::<f64>() / util.len() as f64,
        utilization_max_pct: max(&util),
        idle_share_pct: 100.0 * util.iter().filter(|&&u| u < IDLE_UTILISATION_PCT).count() as f64
            / util.len() as f64,
        memory_peak_bytes: peak,
        memory_peak_pct: if total > 0.0 {
            100.0 * peak / total
        } else {
            0.0
        },
        temperature_max_c: (!temps.is_empty()).then(|| max(&temps)),
    })
}

/// The by-kind lines of the table.
pub fn kinds_table(kinds: &[KindStats]) -> String {
    let mut out = format!(
        "{:<12} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}\n",
        "by kind",
        "requests",
        "failed",
        "TTFT p50",
        "TTFT p95",
        "TPOT p50",
        "E2E p95",
        "out tok/s",
        "good tok/s",
        "SLA %"
    );
    for k in kinds {
        out.push_str(&format!(
            "  {:<10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10.1} {:>10.1} {:>8.1}\n",
            k.kind,
            k.requests,
            k.failed,
            fmt_ms(k.ttft_ms.p50, ""),
            fmt_ms(k.ttft_ms.p95, ""),
            fmt_ms(k.tpot_ms.p50, ""),
            fmt_ms(k.e2e_ms.p95, ""),
            k.output_tokens_per_s,
            k.goodput_tokens_per_s,
            k.sla_compliance_pct
        ));
    }
    out
}

/// The GPU line of the table.
pub fn gpu_line(g: Option<&GpuStats>) -> String {
    match g {
        None => "no GPU samples (NVML absent, or [metrics] nvml = false)".into(),
        Some(g) => format!(
            "utilisation mean {:.1} % · max {:.0} % · idle {:.1} % of {} samples · memory peak {:.2} GiB ({:.1} %) · {}",
            g.utilization_mean_pct,
            g.utilization_max_pct,
            g.idle_share_pct,
            g.samples,
            g.memory_peak_bytes / f64::from(1u32 << 30),
            g.memory_peak_pct,
            g.temperature_max_c
                .map_or("temperature -".into(), |t| format!("temperature max {t:.0} °C"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str, ok: bool, meets: bool, ttft: f64, tokens: u64) -> RequestPoint {
        RequestPoint {
            t_s: 0.0,
            kind: kind.into(),
            ok,
            meets_sla: meets,
            queue_ms: 0.0,
            ttft_ms: Some(ttft),
            tpot_ms: Some(10.0),
            e2e_ms: ttft + 10.0 * tokens as f64,
            completion_tokens: tokens,
        }
    }

    #[test]
    fn kinds_split_the_run_and_count_goodput_in_tokens() {
        let rs = [
            req("summary", true, true, 100.0, 200),
            req("summary", true, false, 3000.0, 100),
            req("sentiment", true, true, 50.0, 40),
            req("sentiment", false, false, 60.0, 0),
        ];
        let k = by_kind(&rs, 2000.0);
        assert_eq!(k.len(), 2);
        let (sent, summ) = (&k[0], &k[1]);
        assert_eq!(
            (sent.kind.as_str(), sent.requests, sent.failed),
            ("sentiment", 2, 1)
        );
        assert_eq!(summ.output_tokens, 300);
        assert!((summ.output_tokens_per_s - 150.0).abs() < 1e-9);
        assert!(
            (summ.goodput_tokens_per_s - 100.0).abs() < 1e-9,
            "only the request within SLA"
        );
        assert!((summ.goodput_rps - 0.5).abs() < 1e-9);
        assert_eq!(summ.sla_compliance_pct, 50.0);
        assert_eq!(summ.ttft_ms.p95, Some(3000.0));
        assert_eq!(sent.e2e_ms.p50, Some(450.0), "failed requests have no E2E");
    }

    #[test]
    fn gpu_stats_pool_samples_and_count_idle_ones() {
        let s = |name: &str, value: f64| SamplePoint {
            t_s: 0.0,
            name: name.into(),
            value,
        };
        assert_eq!(gpu(&[s("vllm:num_requests_running", 3.0)]), None);
        let g = gpu(&[
            s("gpu_utilization_percent", 0.0),
            s("gpu_utilization_percent", 90.0),
            s("gpu_utilization_percent", 60.0),
            s("gpu_utilization_percent", 2.0),
            s("gpu_memory_used_bytes", 40e9),
            s("gpu_memory_used_bytes", 70e9),
            s("gpu_memory_total_bytes", 80e9),
            s("gpu_temperature_celsius", 71.0),
        ])
        .unwrap();
        assert_eq!(g.samples, 4);
        assert_eq!(g.utilization_mean_pct, 38.0);
        assert_eq!(g.utilization_max_pct, 90.0);
        assert_eq!(g.idle_share_pct, 50.0);
        assert_eq!(g.memory_peak_pct, 87.5);
        assert_eq!(g.temperature_max_c, Some(71.0));
    }
}
