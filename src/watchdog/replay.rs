//! `palate watchdog --replay TRACE`: the watchdog's decisions over a recorded or synthetic demand
//! trace (JSON lines of [`Observation`]s, as an always-on server saw them), with a fake clock
//! and a simulated server that goes down on a stop and comes up a cold start after a start.
//! Nothing is run; the report prices the day with and without the watchdog.

use serde::Serialize;

use super::{Action, Decision, Observation, Watchdog};

/// The day's arithmetic.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReplayReport {
    pub checks: usize,
    pub hours: f64,
    /// Hours the GPU was billed: up, or starting.
    pub billed_hours: f64,
    pub stops: usize,
    pub starts: usize,
    /// Starts made ahead of a planned run.
    pub planned_starts: usize,
    /// Checks where work was waiting (requests or a palate run) and the server was down or
    /// still starting: the latency the watchdog cost.
    pub waiting_checks: usize,
    pub always_on_usd: f64,
    /// Billed GPU time plus a latency penalty per start that work had to wait for.
    pub watchdog_usd: f64,
    pub saving_usd: f64,
    pub saving_pct: f64,
}

/// The simulated server: up, down, or starting until a time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Up,
    Down,
    Starting { until: f64 },
}

/// What the watchdog sees at demand `d` when the server is in `state`.
fn seen(d: &Observation, state: Server, started_at: Option<f64>) -> Observation {
    match state {
        Server::Up => Observation {
            started_at: started_at.or(d.started_at),
            ..*d
        },
        Server::Down | Server::Starting { .. } => Observation {
            t: d.t,
            palate_running: d.palate_running,
            ..Default::default()
        },
    }
}

fn wants_work(d: &Observation) -> bool {
    d.palate_running || d.running > 0.0 || d.waiting > 0.0
}

/// Replays `trace` (time order); each decision goes to `log`.
pub fn replay(
    mut w: Watchdog,
    usd_per_hour: f64,
    trace: &[Observation],
    mut log: impl FnMut(&Decision),
) -> ReplayReport {
    let (cold, penalty) = (w.config().cold_start_s, w.config().latency_penalty_usd);
    let mut r = ReplayReport::default();
    let mut state = Server::Up;
    let mut started_at = None;
    let mut waited_for_start = false;
    let mut billed_s = 0.0;
    for (i, d) in trace.iter().enumerate() {
        if let Server::Starting { until } = state {
            if d.t >= until {
                state = Server::Up;
                started_at = Some(until);
            }
        }
        if state != Server::Up && wants_work(d) {
            r.waiting_checks += 1;
            waited_for_start = true;
        }
        let decision = w.decide(seen(d, state, started_at));
        log(&decision);
        match (decision.action, state) {
            (Action::Stop, Server::Up) => {
                state = Server::Down;
                r.stops += 1;
            }
            (Action::Start, Server::Down) => {
                state = Server::Starting { until: d.t + cold };
                r.starts += 1;
                r.planned_starts += usize::from(decision.reason.starts_with("planned run"));
            }
            _ => {}
        }
        if state == Server::Up && std::mem::take(&mut waited_for_start) {
            r.watchdog_usd += penalty;
        }
        let dt = trace.get(i + 1).map_or(0.0, |n| n.t - d.t);
        if state != Server::Down {
            billed_s += dt;
        }
    }
    let total_s = match (trace.first(), trace.last()) {
        (Some(a), Some(b)) => b.t - a.t,
        _ => 0.0,
    };
    r.checks = trace.len();
    r.priced(total_s, billed_s, usd_per_hour);
    r
}

impl ReplayReport {
    /// The day with and without the watchdog, its penalties already counted.
    fn priced(&mut self, total_s: f64, billed_s: f64, usd_per_hour: f64) {
        self.hours = total_s / 3600.0;
        self.billed_hours = billed_s / 3600.0;
        self.always_on_usd = self.hours * usd_per_hour;
        self.watchdog_usd += self.billed_hours * usd_per_hour;
        self.saving_usd = self.always_on_usd - self.watchdog_usd;
        self.saving_pct = if self.always_on_usd > 0.0 {
            100.0 * self.saving_usd / self.always_on_usd
        } else {
            0.0
        };
    }
}

/// A trace file's observations; a bad line is an error naming it.
pub fn read_trace(path: &std::path::Path) -> anyhow::Result<Vec<Observation>> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out: Vec<Observation> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let o: Observation = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an observation", path.display(), n + 1))?;
        if out.last().is_some_and(|p| o.t < p.t) {
            anyhow::bail!("{}:{}: time goes backwards", path.display(), n + 1);
        }
        out.push(o);
    }
    Ok(out)
}

/// One decision as a log line: clock time, action, reason.
pub fn line(d: &Decision) -> String {
    let at = chrono::DateTime::from_timestamp(d.observation.t as i64, 0).map_or_else(
        || format!("{:.0}", d.observation.t),
        |t| t.format("%H:%M").to_string(),
    );
    let action = match d.action {
        Action::Stay => "stay ",
        Action::Stop => "STOP ",
        Action::Start => "START",
    };
    format!("{at} {action} {}", d.reason)
}

/// The report's lines.
pub fn summary(r: &ReplayReport) -> String {
    format!(
        "{} checks over {:.1} h: {} stops, {} starts ({} ahead of a planned run), work waited {} checks\n\
         GPU billed {:.2} h of {:.2} h · always on ${:.2} · with the watchdog ${:.2} (penalties included) · saving ${:.2} ({:.1} %)",
        r.checks, r.hours, r.stops, r.starts, r.planned_starts, r.waiting_checks,
        r.billed_hours, r.hours, r.always_on_usd, r.watchdog_usd, r.saving_usd, r.saving_pct
    )
}
