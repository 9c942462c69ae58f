//! Alert thresholds (the job file's `[alerts]`): judged on a run's summary and GPU samples when
//! `palate run` ends. A crossed threshold is printed and logged with its value, and the
//! command exits with [`crate::domain::exit::ALERT`] so cron mail or a monitor reacts. Every
//! threshold is off unless set.

use serde::{Deserialize, Serialize};

use super::RunSummary;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Share of requests meeting the `[sla]`, in percent: alert below it.
    pub min_sla_compliance_pct: Option<f64>,
    /// Share of requests (HTTP attempts) that failed, in percent: alert above it.
    pub max_error_rate_pct: Option<f64>,
    /// Share of analyses that ended invalid or failed, in percent: alert above it.
    pub max_failed_analyses_pct: Option<f64>,
    /// 95th percentile time to first token: alert above it.
    pub max_ttft_p95_ms: Option<f64>,
    /// Peak GPU memory used ÷ total, in percent (needs NVML samples): alert above it.
    pub max_gpu_memory_pct: Option<f64>,
}

/// A threshold the run crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossed {
    /// The job file's key.
    pub threshold: &'static str,
    pub limit: f64,
    pub value: f64,
}

impl std::fmt::Display for Crossed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (word, sign) = if self.threshold.starts_with("min_") {
            ("below", "<")
        } else {
            ("above", ">")
        };
        write!(
            f,
            "alert: {} {word} its threshold: {:.1} {sign} {:.1} ([alerts] {})",
            self.threshold
                .trim_start_matches("min_")
                .trim_start_matches("max_"),
            self.value,
            self.limit,
            self.threshold
        )
    }
}

impl Alerts {
    /// The thresholds a run crossed, in the order above, from its summary and its GPUs' peak
    /// memory share. A figure the run does not have (no request, no GPU sample) crosses nothing.
    pub fn check(&self, s: &RunSummary, gpu_memory_peak_pct: Option<f64>) -> Vec<Crossed> {
        let pct = |n: usize, of: usize| (of > 0).then(|| 100.0 * n as f64 / of as f64);
        let analyses = s.analyses_ok + s.analyses_failed;
        let figures = [
            (
                "min_sla_compliance_pct",
                self.min_sla_compliance_pct,
                (s.requests > 0).then_some(s.sla_compliance_pct),
            ),
            (
                "max_error_rate_pct",
                self.max_error_rate_pct,
                pct(s.requests_failed, s.requests),
            ),
            (
                "max_failed_analyses_pct",
                self.max_failed_analyses_pct,
                pct(s.analyses_failed, analyses),
            ),
            ("max_ttft_p95_ms", self.max_ttft_p95_ms, s.ttft_ms.p95),
            (
                "max_gpu_memory_pct",
                self.max_gpu_memory_pct,
                gpu_memory_peak_pct,
            ),
        ];
        figures
            .into_iter()
            .filter_map(|(threshold, limit, value)| {
                let (limit, value) = (limit?, value?);
                let crossed = if threshold.starts_with("min_") {
                    value < limit
                } else {
                    value > limit
                };
                crossed.then_some(Crossed {
                    threshold,
                    limit,
                    value,
                })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.min_sla_compliance_pct,
            self.max_error_rate_pct,
            self.max_failed_analyses_pct,
            self.max_gpu_memory_pct,
        ];
        if all.iter().flatten().any(|v| !(0.0..=100.0).contains(v)) {
            return Err("[alerts]: a percentage must be within 0..=100".into());
        }
        if self.max_ttft_p95_ms.is_some_and(|v| v.is_nan() || v <= 0.0) {
            return Err("[alerts] max_ttft_p95_ms must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(requests: usize, failed: usize, compliance: f64, p95: f64) -> RunSummary {
        let mut s = RunSummary {
            requests,
            requests_failed: failed,
            sla_compliance_pct: compliance,
            analyses_ok: 9,
            analyses_failed: 1,
            ..Default::default()
        };
        s.ttft_ms.p95 = Some(p95);
        s
    }

    #[test]
    fn each_threshold_is_judged_in_its_direction() {
        let a = Alerts {
            min_sla_compliance_pct: Some(90.0),
            max_error_rate_pct: Some(5.0),
            max_failed_analyses_pct: Some(20.0),
            max_ttft_p95_ms: Some(2000.0),
            max_gpu_memory_pct: Some(95.0),
        };
        assert_eq!(
            a.check(&summary(100, 5, 90.0, 2000.0), Some(95.0)),
            vec![],
            "equal is not crossed"
        );
        let crossed = a.check(&summary(100, 6, 89.9, 2500.0), Some(97.0));
        let names: Vec<_> = crossed.iter().map(|c| c.threshold).collect();
        assert_eq!(
            names,
            [
                "min_sla_compliance_pct",
                "max_error_rate_pct",
                "max_ttft_p95_ms",
                "max_gpu_memory_pct"
            ]
        );
        assert_eq!(
            crossed[0].to_string(),
            "alert: sla_compliance_pct below its threshold: 89.9 < 90.0 ([alerts] min_sla_compliance_pct)"
        );
    }

    #[test]
    fn unset_thresholds_and_missing_figures_cross_nothing() {
        assert_eq!(
            Alerts::default().check(&summary(100, 100, 0.0, 1e9), Some(100.0)),
            vec![]
        );
        let a = Alerts {
            min_sla_compliance_pct: Some(99.0),
            max_gpu_memory_pct: Some(1.0),
            ..Default::default()
        };
        assert_eq!(
            a.check(&summary(0, 0, 0.0, 0.0), None),
            vec![],
            "no request, no GPU"
        );
        let bad = Alerts {
            max_error_rate_pct: Some(120.0),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
