//! The watchdog over idle, busy, bursty and scheduled-run traces with a fake clock: each
//! decision against the guards and the cost model's arithmetic.

use super::*;

/// 2026-12-01 00:00 UTC.
const DAY: f64 = 1_764_547_200.0;

fn cfg() -> WatchdogConfig {
    WatchdogConfig {
        interval_s: 60.0,
        idle_checks: 5,
        min_uptime_s: 600.0,
        cold_start_s: 180.0,
        latency_penalty_usd: 0.5,
        default_idle_s: 3600.0,
        ..Default::default()
    }
}

fn idle(t: f64) -> Observation {
    Observation {
        t,
        up: true,
        gpu_util_pct: Some(1.0),
        tokens_total: 5000.0,
        ..Default::default()
    }
}

fn busy(t: f64, tokens: f64) -> Observation {
    Observation {
        running: 8.0,
        gpu_util_pct: Some(90.0),
        tokens_total: tokens,
        ..idle(t)
    }
}

/// Decisions for observations every minute from `start` for `minutes`, made by `f(minute)`.
fn run(w: &mut Watchdog, minutes: usize, f: impl Fn(usize, f64) -> Observation) -> Vec<Decision> {
    (0..minutes)
        .map(|m| w.decide(f(m, DAY + 60.0 * m as f64)))
        .collect()
}

#[test]
fn an_idle_server_stops_after_the_guards_when_idling_costs_more() {
    // $3.60 an hour: a restart costs 180 s × $0.001 + $0.50 = $0.68; an hour of idling $3.60.
    let mut w = Watchdog::new(cfg(), 3.6).unwrap();
    let d = run(&mut w, 12, |_, t| idle(t));
    let first_stop = d.iter().position(|d| d.action == Action::Stop).unwrap();
    // Up since the first check: 600 s of uptime is reached at minute 10.
    assert_eq!(first_stop, 10);
    assert!(d[4].reason.contains("up only 240 s"), "{}", d[4].reason);
    let c = d[10].costs.unwrap();
    assert_eq!(c.expected_idle_s, 3600.0);
    assert!((c.idle_usd - 3.6).abs() < 1e-9);
    assert!((c.restart_usd - 0.68).abs() < 1e-9);
    assert_eq!(
        d[11].action,
        Action::Stay,
        "stop sent: waits for it to go down"
    );
}

#[test]
fn uptime_comes_from_the_servers_start_time_when_it_reports_it() {
    let mut w = Watchdog::new(cfg(), 3.6).unwrap();
    let d = run(&mut w, 6, |_, t| Observation {
        started_at: Some(DAY - 3600.0),
        ..idle(t)
    });
    assert_eq!(
        d[4].action,
        Action::Stop,
        "5 idle checks, up an hour: {}",
        d[4].reason
    );
    assert_eq!(d[3].reason, "idle 4 of 5 checks");
}

#[test]
fn a_busy_server_is_never_stopped() {
    let mut w = Watchdog::new(cfg(), 100.0).unwrap();
    let d = run(&mut w, 120, |m, t| busy(t, 1000.0 * m as f64));
    assert!(d.iter().all(|d| d.action == Action::Stay));
    assert!(d[60].reason.starts_with("busy: 8 running"));
    // Tokens moving with nothing running at the sample (short requests between scrapes) is
    // work too, and so is a palate run holding the lock.
    let d = run(&mut w, 30, |m, t| Observation {
        tokens_total: 100.0 * m as f64,
        ..idle(t)
    });
    assert!(d
        .iter()
        .all(|d| d.action == Action::Stay && d.idle_checks == 0));
    let d = run(&mut w, 30, |_, t| Observation {
        palate_running: true,
        ..idle(t)
    });
    assert!(d.iter().all(|d| d.action == Action::Stay));
}

#[test]
fn bursty_work_with_short_gaps_keeps_the_server_up() {
    // Ten minutes of work, then ten idle, all day. The first spell falls within the uptime
    // guard; after it, history says a spell lasts 10 minutes (the first quiet check still sees
    // the token counter move), so at the fifth idle check 5 minutes remain: idling ($0.60 an
    // hour × 300 s = $0.05) costs less than a restart ($0.03 + $0.50).
    let mut w = Watchdog::new(
        WatchdogConfig {
            min_uptime_s: 1200.0,
            ..cfg()
        },
        0.6,
    )
    .unwrap();
    let d = run(&mut w, 600, |m, t| {
        if (m / 10) % 2 == 0 {
            busy(t, 1000.0 * m as f64)
        } else {
            idle(t)
        }
    });
    assert!(d.iter().all(|d| d.action != Action::Stop), "never stops");
    let consulted: Vec<_> = d.iter().filter_map(|d| d.costs).collect();
    assert!(!consulted.is_empty());
    let first = consulted[0];
    assert!((first.expected_idle_s - 300.0).abs() < 1e-6, "{first:?}");
    assert!((first.idle_usd - 0.05).abs() < 1e-9 && (first.restart_usd - 0.53).abs() < 1e-9);
    assert!(consulted.iter().all(|c| c.idle_usd < c.restart_usd));
}

#[test]
fn a_planned_run_starts_the_server_before_it_and_blocks_a_stop_just_before() {
    let cron = WatchdogConfig {
        schedule: Some("0 2 * * *".into()),
        ..cfg()
    };
    let mut w = Watchdog::new(cron.clone(), 3.6).unwrap();
    // Stopped all night until the run at 02:00: start at the first check within a cold start
    // plus a check (240 s) of it, i.e. 01:56.
    let d: Vec<_> = (0..130)
        .map(|m| {
            w.decide(Observation {
                t: DAY + 60.0 * m as f64,
                ..Default::default()
            })
        })
        .collect();
    let starts: Vec<_> = (d.iter().enumerate())
        .filter(|(_, d)| d.action == Action::Start)
        .map(|(m, _)| m)
        .collect();
    assert_eq!(starts, [116], "01:56");
    assert!(
        d[116].reason.starts_with("planned run in 240 s"),
        "{}",
        d[116].reason
    );
    assert!(
        d[117].reason.starts_with("starting"),
        "no second start while it boots"
    );
    // Up and idle from 01:55, up for hours: at the fifth idle check (01:59) the run is due
    // within the lead, so no stop.
    let mut w = Watchdog::new(cron, 3.6).unwrap();
    let d: Vec<_> = (0..5)
        .map(|m| {
            w.decide(Observation {
                started_at: Some(DAY),
                ..idle(DAY + 6900.0 + 60.0 * m as f64)
            })
        })
        .collect();
    assert_eq!(d[4].reason, "idle, but a planned run is due in 60 s");
    assert!(d.iter().all(|d| d.action == Action::Stay));
}

#[test]
fn the_next_need_being_the_planned_run_drops_the_latency_penalty() {
    // Idle at 01:00, run at 02:00: one hour expected, no penalty: $3.60 > $0.18 → stop.
    let mut w = Watchdog::new(
        WatchdogConfig {
            schedule: Some("0 2 * * *".into()),
            ..cfg()
        },
        3.6,
    )
    .unwrap();
    let d: Vec<_> = (0..5)
        .map(|m| {
            w.decide(Observation {
                started_at: Some(DAY),
                ..idle(DAY + 3600.0 + 60.0 * m as f64)
            })
        })
        .collect();
    let c = d[4].costs.unwrap();
    assert!(
        c.planned && (c.expected_idle_s - 3360.0).abs() < 1e-6,
        "{c:?}"
    );
    assert!((c.restart_usd - 0.18).abs() < 1e-9);
    assert_eq!(d[4].action, Action::Stop);
}

#[test]
fn a_palate_run_waiting_on_a_stopped_server_starts_it() {
    let mut w = Watchdog::new(cfg(), 3.6).unwrap();
    let d = w.decide(Observation {
        t: DAY,
        palate_running: true,
        ..Default::default()
    });
    assert_eq!(d.action, Action::Start);
    assert_eq!(d.reason, "a palate run is waiting for the stopped server");
}

#[test]
fn replaying_a_day_prices_it_with_and_without_the_watchdog() {
    // A nightly run 02:00–03:00, idle otherwise; $3.60 an hour.
    let trace: Vec<Observation> = (0..=1440)
        .map(|m| {
            let t = DAY + 60.0 * m as f64;
            if (120..180).contains(&m) {
                Observation {
                    palate_running: true,
                    ..busy(t, 1000.0 * m as f64)
                }
            } else {
                Observation {
                    tokens_total: if m < 120 { 0.0 } else { 180_000.0 },
                    ..idle(t)
                }
            }
        })
        .collect();
    let w = Watchdog::new(
        WatchdogConfig {
            schedule: Some("0 2 * * *".into()),
            ..cfg()
        },
        3.6,
    )
    .unwrap();
    let mut log = Vec::new();
    let r = replay::replay(w, 3.6, &trace, |d| log.push(replay::line(d)));
    assert_eq!(log.len(), 1441);
    assert_eq!(
        (r.stops, r.starts, r.planned_starts, r.waiting_checks),
        (2, 1, 1, 0),
        "{log:#?}"
    );
    // Up 00:00–00:10 (the uptime guard), 01:56–03:05 (start ahead, run, 5 idle checks), so
    // billed 10 + 69 = 79 minutes of 24 h.
    assert!((r.billed_hours - 79.0 / 60.0).abs() < 1e-9, "{r:?}");
    assert!((r.always_on_usd - 86.4).abs() < 1e-9);
    assert!((r.saving_usd - (86.4 - 3.6 * 79.0 / 60.0)).abs() < 1e-6);
    assert!(log[10].contains("STOP"), "{}", log[10]);
}
