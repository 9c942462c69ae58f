//! watchdog: `palate watchdog` stops an idle LLM server and starts it again before it is needed.
//!
//! Every `interval_s` it observes the server ([`observe`]: vLLM's or llama.cpp's `/metrics` —
//! running and waiting requests, token counters — NVML utilisation where present, and whether a
//! palate run holds the job's database lock) and decides ([`Watchdog::decide`], a pure function
//! of the observations, so tests drive it with a fake clock):
//!
//! - **Stop** only when the server has been idle for `idle_checks` checks in a row, has been up
//!   at least `min_uptime_s`, no planned run is due within a cold start, and the expected cost of
//!   idling until the next need exceeds the cost of a restart ([`cost`]).
//! - **Start** when a planned run (the job's cron `schedule`) is due within a cold start plus a
//!   check, or when a palate run is waiting for a stopped server; then warm it up with one request.
//!
//! Idle means no request running or waiting, no token processed since the last check, and GPU
//! utilisation under a threshold that adapts to the GPU's own idle reading ([`cost::threshold`]).
//! Every decision is logged with its inputs. The actions are configured commands (`docker stop
//! vllm`, `systemctl start vllm`, a scale-to-zero call); `--dry-run` only logs them.

pub mod cost;
pub mod observe;
pub mod replay;

use serde::{Deserialize, Serialize};

pub use cost::Costs;

/// The job file's `[watchdog]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// The server watched; default the job's first `llm.endpoints`.
    pub endpoint: Option<String>,
    /// Seconds between checks.
    pub interval_s: f64,
    /// Idle checks in a row before a stop is considered.
    pub idle_checks: u32,
    /// Never stop a server up for less than this (it may still be warming up or loading).
    pub min_uptime_s: f64,
    /// GPU utilisation under this is idle; it rises with the GPU's own idle reading, up to 4×.
    pub idle_utilization_pct: f64,
    /// Seconds from a start command to a warm server (model load, CUDA graphs, first request).
    pub cold_start_s: f64,
    /// What a request arriving at a stopped server costs beyond the GPU time: its wait for a
    /// cold start, priced in USD.
    pub latency_penalty_usd: f64,
    /// Expected idle seconds before the next need when history has no gap this long yet.
    pub default_idle_s: f64,
    /// The planned runs, 5-field cron (`0 2 * * *`), in UTC: start the server before them.
    pub schedule: Option<String>,
    /// Shell commands that stop and start the server; unset, the watchdog only logs.
    pub stop_command: Option<String>,
    pub start_command: Option<String>,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            interval_s: 60.0,
            idle_checks: 5,
            min_uptime_s: 600.0,
            idle_utilization_pct: crate::metrics::IDLE_UTILISATION_PCT,
            cold_start_s: 180.0,
            latency_penalty_usd: 0.5,
            default_idle_s: 3600.0,
            schedule: None,
            stop_command: None,
            start_command: None,
        }
    }
}

impl WatchdogConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("interval_s", self.interval_s),
            ("cold_start_s", self.cold_start_s),
            ("default_idle_s", self.default_idle_s),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| v.is_nan() || *v <= 0.0) {
            return Err(format!("[watchdog] {k} must be > 0"));
        }
        if !(self.min_uptime_s >= 0.0 && self.latency_penalty_usd >= 0.0) {
            return Err("[watchdog] min_uptime_s and latency_penalty_usd must be >= 0".into());
        }
        if !(0.0..=100.0).contains(&self.idle_utilization_pct) {
            return Err("[watchdog] idle_utilization_pct must be within 0..=100".into());
        }
        if self.idle_checks == 0 {
            return Err("[watchdog] idle_checks must be at least 1".into());
        }
        if let Some(s) = &self.schedule {
            cost::parse_schedule(s).map_err(|e| format!("[watchdog] schedule {s:?}: {e}"))?;
        }
        Ok(())
    }
}

/// One check of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observation {
    /// Unix seconds.
    pub t: f64,
    /// The server answered `/metrics`.
    pub up: bool,
    pub running: f64,
    pub waiting: f64,
    /// Prompt + generated tokens since the server started (its counters).
    pub tokens_total: f64,
    pub gpu_util_pct: Option<f64>,
    /// The server process's start (`process_start_time_seconds`), when it reports it.
    pub started_at: Option<f64>,
    /// A palate run or analyze holds the job database's lock.
    pub palate_running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Stay,
    Stop,
    Start,
}

/// A decision and everything it was made from (logged as one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    pub observation: Observation,
    pub idle_checks: u32,
    pub threshold_pct: f64,
    pub uptime_s: Option<f64>,
    pub idle_for_s: f64,
    pub next_run_in_s: Option<f64>,
    /// The cost model's terms, when it was consulted.
    pub costs: Option<Costs>,
}

/// What the watchdog remembers between checks.
pub struct Watchdog {
    cfg: WatchdogConfig,
    usd_per_s: f64,
    schedule: Option<croner::Cron>,
    up_since: Option<f64>,
    last_tokens: Option<f64>,
    idle_checks: u32,
    idle_since: Option<f64>,
    /// Lengths of past idle spells that ended in work: what the next one may be.
    gaps: Vec<f64>,
    /// Utilisation read while no request ran: the GPU's idle baseline.
    idle_utils: Vec<f64>,
    /// When the last start or stop command went out, until the server is seen up or down.
    start_sent: Option<f64>,
    stop_sent: Option<f64>,
}

/// Past spells and idle readings kept.
const HISTORY: usize = 200;

impl Watchdog {
    /// `gpu_usd_per_hour` for all the server's GPUs (`[cost]`).
    pub fn new(cfg: WatchdogConfig, gpu_usd_per_hour: f64) -> Result<Self, String> {
        cfg.validate()?;
        if gpu_usd_per_hour.is_nan() || gpu_usd_per_hour <= 0.0 {
            return Err("the watchdog weighs idling against a restart in money: set [cost] gpu_usd_per_hour".into());
        }
        let schedule = cfg
            .schedule
            .as_deref()
            .map(cost::parse_schedule)
            .transpose()?;
        Ok(Self {
            cfg,
            usd_per_s: gpu_usd_per_hour / 3600.0,
            schedule,
            up_since: None,
            last_tokens: None,
            idle_checks: 0,
            idle_since: None,
            gaps: Vec::new(),
            idle_utils: Vec::new(),
            start_sent: None,
            stop_sent: None,
        })
    }

    pub fn config(&self) -> &WatchdogConfig {
        &self.cfg
    }

    /// Whether the server did anything since the last check; updates the idle spell.
    fn busy(&mut self, o: &Observation, threshold: f64) -> bool {
        // Counters are compared between two checks of a server that was up for both.
        let tokens_moved = o.up && self.last_tokens.is_some_and(|t| o.tokens_total != t);
        self.last_tokens = o.up.then_some(o.tokens_total);
        let requests = o.running > 0.0 || o.waiting > 0.0;
        if !requests {
            if let Some(u) = o.gpu_util_pct {
                push_bounded(&mut self.idle_utils, u);
            }
        }
        let gpu_busy = o.gpu_util_pct.is_some_and(|u| u >= threshold);
        let busy = o.palate_running || (o.up && (requests || tokens_moved || gpu_busy));
        if busy {
            if let Some(since) = self.idle_since.take() {
                push_bounded(&mut self.gaps, o.t - since);
            }
            self.idle_checks = 0;
        } else if o.up {
            self.idle_checks += 1;
            self.idle_since.get_or_insert(o.t - self.cfg.interval_s);
        }
        busy
    }

    /// The decision for observation `o` (observations in time order).
    pub fn decide(&mut self, o: Observation) -> Decision {
        let threshold = cost::threshold(self.cfg.idle_utilization_pct, &self.idle_utils);
        if !o.up {
            self.up_since = None;
        } else if self.up_since.is_none() {
            self.up_since = Some(o.started_at.unwrap_or(o.t));
        }
        let busy = self.busy(&o, threshold);
        let next_run_in_s = (self.schedule.as_ref()).and_then(|c| cost::next_in(c, o.t));
        let mut d = Decision {
            action: Action::Stay,
            reason: String::new(),
            observation: o,
            idle_checks: self.idle_checks,
            threshold_pct: threshold,
            uptime_s: self.up_since.map(|s| o.t - s),
            idle_for_s: self.idle_since.map_or(0.0, |s| o.t - s),
            next_run_in_s,
            costs: None,
        };
        let lead = self.cfg.cold_start_s + self.cfg.interval_s;
        (d.action, d.reason) = self.choose(&mut d, busy, lead);
        match d.action {
            Action::Start => self.start_sent = Some(o.t),
            Action::Stop => self.stop_sent = Some(o.t),
            Action::Stay => {}
        }
        d
    }

    /// The action for decision `d` in the making: a command just sent is waited for, a
    /// stopped server starts for a waiting run or a planned one, an idle one may stop.
    fn choose(&mut self, d: &mut Decision, busy: bool, lead: f64) -> (Action, String) {
        let o = d.observation;
        if o.up {
            self.start_sent = None;
        } else {
            self.stop_sent = None;
        }
        let pending = |sent: Option<f64>| {
            sent.map(|s| o.t - s)
                .filter(|&a| a < 2.0 * self.cfg.cold_start_s)
        };
        if let Some(a) = pending(self.start_sent) {
            return (Action::Stay, format!("starting: start sent {a:.0} s ago"));
        }
        if let Some(a) = pending(self.stop_sent) {
            return (Action::Stay, format!("stopping: stop sent {a:.0} s ago"));
        }
        match (o.up, busy, d.next_run_in_s.filter(|&n| n <= lead)) {
            (false, true, _) => (
                Action::Start,
                "a palate run is waiting for the stopped server".into(),
            ),
            (false, false, Some(n)) => (
                Action::Start,
                format!("planned run in {n:.0} s: starting now to be warm for it"),
            ),
            (false, false, None) => (Action::Stay, "server stopped; nothing due".into()),
            (true, true, _) => (Action::Stay, busy_reason(&o)),
            (true, false, _) => self.idle_decision(d, lead),
        }
    }

    /// An up, idle server: stop only past the guards and when the cost model says so.
    fn idle_decision(&self, d: &mut Decision, lead: f64) -> (Action, String) {
        let uptime = d.uptime_s.unwrap_or(0.0);
        if uptime < self.cfg.min_uptime_s {
            return (
                Action::Stay,
                format!(
                    "idle, but up only {uptime:.0} s (min_uptime_s {:.0})",
                    self.cfg.min_uptime_s
                ),
            );
        }
        if self.idle_checks < self.cfg.idle_checks {
            return (
                Action::Stay,
                format!(
                    "idle {} of {} checks",
                    self.idle_checks, self.cfg.idle_checks
                ),
            );
        }
        if let Some(n) = d.next_run_in_s.filter(|&n| n <= lead) {
            return (
                Action::Stay,
                format!("idle, but a planned run is due in {n:.0} s"),
            );
        }
        let c = Costs::of(
            &self.cfg,
            self.usd_per_s,
            d.idle_for_s,
            &self.gaps,
            d.next_run_in_s,
        );
        d.costs = Some(c);
        if c.idle_usd > c.restart_usd {
            (Action::Stop, format!(
                "idle {:.0} s; idling ~{:.0} s until the next need costs ${:.3} > a restart's ${:.3}",
                d.idle_for_s, c.expected_idle_s, c.idle_usd, c.restart_usd
            ))
        } else {
            (
                Action::Stay,
                format!(
                    "idle {:.0} s, but idling ~{:.0} s costs ${:.3} <= a restart's ${:.3}",
                    d.idle_for_s, c.expected_idle_s, c.idle_usd, c.restart_usd
                ),
            )
        }
    }
}

fn busy_reason(o: &Observation) -> String {
    if o.palate_running {
        return "a palate run holds the database lock".into();
    }
    format!(
        "busy: {} running, {} waiting, GPU {}",
        o.running,
        o.waiting,
        o.gpu_util_pct.map_or("-".into(), |u| format!("{u:.0} %"))
    )
}

fn push_bounded(v: &mut Vec<f64>, x: f64) {
    if v.len() == HISTORY {
        v.remove(0);
    }
    v.push(x);
}

#[cfg(test)]
mod tests;
