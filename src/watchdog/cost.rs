//! The watchdog's arithmetic: the cold-start cost model, the adaptive idle threshold, and the
//! next planned run.
//!
//! Stopping pays when the GPU time idled until the next need costs more than a restart:
//!
//! ```text
//! idle_usd    = expected_idle_s × usd_per_s
//! restart_usd = cold_start_s × usd_per_s + latency_penalty_usd   (no penalty when the next
//!               need is a planned run: the watchdog starts the server before it)
//! ```
//!
//! The expected idle time is the sooner of the next planned run and what history says: the mean
//! remaining length of past idle spells longer than the current one (a spell already longer
//! than every past one expects `default_idle_s` more).

use std::str::FromStr as _;

use chrono::{TimeZone, Utc};
use serde::Serialize;

use super::WatchdogConfig;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Costs {
    pub expected_idle_s: f64,
    /// Whether the next need is the planned run (then a restart carries no latency penalty).
    pub planned: bool,
    pub idle_usd: f64,
    pub restart_usd: f64,
}

impl Costs {
    pub fn of(
        cfg: &WatchdogConfig,
        usd_per_s: f64,
        idle_for_s: f64,
        gaps: &[f64],
        next_run_in_s: Option<f64>,
    ) -> Self {
        let history = expected_remaining(gaps, idle_for_s).unwrap_or(cfg.default_idle_s);
        let (expected_idle_s, planned) = match next_run_in_s {
            Some(n) if n <= history => (n, true),
            _ => (history, false),
        };
        let penalty = if planned {
            0.0
        } else {
            cfg.latency_penalty_usd
        };
        Self {
            expected_idle_s,
            planned,
            idle_usd: expected_idle_s * usd_per_s,
            restart_usd: cfg.cold_start_s * usd_per_s + penalty,
        }
    }
}

/// Mean of `g − idle_for` over past spells `g` longer than `idle_for`; `None` when there is none.
pub fn expected_remaining(gaps: &[f64], idle_for: f64) -> Option<f64> {
    let longer: Vec<f64> = gaps
        .iter()
        .filter(|&&g| g > idle_for)
        .map(|g| g - idle_for)
        .collect();
    (!longer.is_empty()).then(|| longer.iter().sum::<f64>() / longer.len() as f64)
}

/// The idle threshold: `base`, raised to 2 points above the 90th percentile of the GPU's own
/// idle readings (a GPU whose monitor or display keeps it at 7 % is still idle), at most 4×
/// `base`.
pub fn threshold(base: f64, idle_utils: &[f64]) -> f64 {
    match crate::metrics::percentile(idle_utils, 90.0) {
        Some(p) if idle_utils.len() >= 5 => (p + 2.0).clamp(base, 4.0 * base),
        _ => base,
    }
}

pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(s).map_err(|e| e.to_string())
}

/// Seconds from unix time `t` to the schedule's next occurrence.
pub fn next_in(c: &croner::Cron, t: f64) -> Option<f64> {
    let now = Utc.timestamp_millis_opt((t * 1000.0) as i64).single()?;
    let next = c.find_next_occurrence(&now, true).ok()?;
    Some(next.timestamp_millis() as f64 / 1000.0 - t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_idle_time_comes_from_longer_past_spells() {
        let gaps = [300.0, 600.0, 3600.0, 7200.0];
        assert_eq!(expected_remaining(&gaps, 0.0), Some(2925.0));
        assert_eq!(
            expected_remaining(&gaps, 1000.0),
            Some(4400.0),
            "(2600 + 6200) / 2"
        );
        assert_eq!(expected_remaining(&gaps, 8000.0), None);
    }

    #[test]
    fn a_restart_is_weighed_against_idling_until_the_next_need() {
        let cfg = WatchdogConfig {
            cold_start_s: 180.0,
            latency_penalty_usd: 0.5,
            default_idle_s: 3600.0,
            ..Default::default()
        };
        let usd_per_s = 3.6 / 3600.0; // $3.60 an hour
        let c = Costs::of(&cfg, usd_per_s, 300.0, &[], None);
        assert_eq!((c.expected_idle_s, c.planned), (3600.0, false));
        assert!((c.idle_usd - 3.6).abs() < 1e-9);
        assert!((c.restart_usd - (0.18 + 0.5)).abs() < 1e-9);
        // The planned run in 10 minutes is sooner than history expects: no penalty.
        let c = Costs::of(&cfg, usd_per_s, 300.0, &[], Some(600.0));
        assert_eq!((c.expected_idle_s, c.planned), (600.0, true));
        assert!((c.idle_usd - 0.6).abs() < 1e-9 && (c.restart_usd - 0.18).abs() < 1e-9);
        // Short spells in history: little idling expected, a restart does not pay.
        let c = Costs::of(&cfg, usd_per_s, 300.0, &[400.0, 500.0, 600.0], None);
        assert_eq!(c.expected_idle_s, 200.0);
        assert!(c.idle_usd < c.restart_usd);
    }

    #[test]
    fn the_threshold_adapts_to_the_gpus_idle_reading_within_bounds() {
        assert_eq!(threshold(5.0, &[]), 5.0);
        assert_eq!(threshold(5.0, &[0.0, 1.0, 0.0, 1.0, 2.0]), 5.0);
        assert_eq!(threshold(5.0, &[7.0, 8.0, 7.0, 8.0, 8.0]), 10.0);
        assert_eq!(threshold(5.0, &[30.0; 10]), 20.0);
    }

    #[test]
    fn the_next_planned_run_follows_the_cron_schedule() {
        let c = parse_schedule("0 2 * * *").unwrap();
        let t = Utc
            .with_ymd_and_hms(2026, 12, 1, 1, 30, 0)
            .unwrap()
            .timestamp() as f64;
        assert_eq!(next_in(&c, t), Some(1800.0));
        assert_eq!(
            next_in(&c, t + 1800.0),
            Some(0.0),
            "inclusive at the minute"
        );
        assert_eq!(next_in(&c, t + 1860.0), Some(86_340.0));
        assert!(parse_schedule("every night").is_err());
    }
}
