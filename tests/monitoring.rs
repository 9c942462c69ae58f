//! What operators watch a run by: `[alerts]` thresholds and their exit code, `palate report
//! --compare`, the watchdog reading a (simulated) vLLM server's `/metrics` with a fake clock, and
//! the OTLP export of a run's spans to an in-process collector. The real binary, the real
//! embedding model and SQLite; the LLM server is simulated (`palate::sim`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};

use palate::sim::FaultPlan;

fn job(dir: &Path, endpoint: &str, extra: &str) -> PathBuf {
    let p = common::job_with(
        dir,
        &[endpoint],
        &[common::root().join("data/demo.jsonl")],
        "sim",
        "read_timeout_s = 5\nrequest_timeout_s = 30",
    );
    let text = std::fs::read_to_string(&p).unwrap() + "\n[plan]\nlanguage = \"english\"\n" + extra;
    std::fs::write(&p, text).unwrap();
    p
}

use common::palate_async as palate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_exits_6_and_says_which_and_compare_shows_both_runs() {
    let sim = common::sim(2.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let relaxed = job(
        dir.path(),
        &sim.url,
        "[alerts]\nmin_sla_compliance_pct = 1\nmax_error_rate_pct = 50\n",
    );
    let j = relaxed.to_str().unwrap();
    let (code, out, err) = palate(&["run", "--job", j]).await;
    assert_eq!(code, 0, "thresholds not crossed: {out}\n{err}");
    assert!(!err.contains("alert:"), "{err}");
    // TTFT p95 over a microsecond: crossed by any run.
    let strict = job(
        dir.path(),
        &sim.url,
        "[alerts]\nmax_ttft_p95_ms = 0.001\nmax_error_rate_pct = 50\n",
    );
    let (code, out, err) = palate(&["run", "--job", strict.to_str().unwrap(), "--force"]).await;
    assert_eq!(code, 6, "{out}\n{err}");
    assert!(
        err.contains("alert: ttft_p95_ms above its threshold: "),
        "{err}"
    );
    assert!(err.contains("> 0.0 ([alerts] max_ttft_p95_ms)"), "{err}");
    assert!(!err.contains("error_rate_pct above"), "{err}");
    // The two runs side by side.
    let html = dir.path().join("compare.html");
    let (code, out, err) = palate(&[
        "report",
        "--job",
        j,
        "--compare",
        "1",
        "2",
        "--html",
        html.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("A: run 1 (sim, "), "{out}");
    for row in [
        "req/s",
        "goodput tokens/s",
        "TTFT p95 ms",
        "summary output tokens/s",
        "strengths TPOT p50 ms",
        "sentiment E2E p95 ms",
    ] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row}: {out}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<h1>run 1 vs run 2</h1>") && page.contains("<td>TTFT p95 ms</td>"),
        "{page}"
    );
    // A single run's table has the per-kind lines and token goodput.
    let (_, table, _) = palate(&["report", "--job", j, "--run", "2"]).await;
    assert!(
        table.contains("output tokens/s · SLA compliance"),
        "{table}"
    );
    for kind in ["sentiment", "summary", "strengths"] {
        assert!(
            table.lines().any(|l| l.trim_start().starts_with(kind)),
            "{kind}: {table}"
        );
    }
    let (code, _, err) = palate(&["report", "--job", j, "--compare", "1", "9"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no run 9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_reads_a_simulated_server_and_decides_on_a_fake_clock() {
    use palate::watchdog::{observe::Observer, Action, Watchdog, WatchdogConfig};
    let sim = common::sim(20.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let observer = Observer::new(&sim.url, dir.path().join("w.db")).unwrap();
    let mut w = Watchdog::new(WatchdogConfig::default(), 3.6).unwrap();
    let t0 = 1_764_547_200.0;
    // Busy: a long request in flight.
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": "sim", "stream": true, "max_tokens": 400, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Describe the restaurant."}]});
    let request = tokio::spawn(
        http.post(format!("{}/chat/completions", sim.url))
            .json(&body)
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let o = observer.observe(t0).await;
    assert!(o.up && o.running == 1.0, "{o:?}");
    let d = w.decide(o);
    assert_eq!(d.action, Action::Stay);
    assert!(d.reason.starts_with("busy: 1 running"), "{}", d.reason);
    request.await.unwrap().unwrap().text().await.unwrap();
    // Idle from then on: the tokens it generated count once, then nothing moves. At a minute a
    // check, the stop comes at the first check past the uptime guard (600 s from the first).
    let mut stopped_at = None;
    for m in 1..=12 {
        let d = w.decide(observer.observe(t0 + 60.0 * f64::from(m)).await);
        if d.action == Action::Stop {
            stopped_at = Some(m);
            let c = d.costs.unwrap();
            assert!(
                (c.restart_usd - (180.0 * 0.001 + 0.5)).abs() < 1e-9,
                "{c:?}"
            );
            assert!((c.idle_usd - 3.6).abs() < 1e-9, "{c:?}");
            break;
        }
    }
    assert_eq!(stopped_at, Some(10));
    // A stopped server (nothing listening) is down, and a palate run waiting starts it.
    let dead = Observer::new(
        &format!("http://127.0.0.1:{}/v1", common::free_port()),
        dir.path().join("w.db"),
    )
    .unwrap();
    let o = dead.observe(t0 + 3600.0).await;
    assert!(!o.up);
    assert_eq!(w.decide(o).action, Action::Stay, "nothing due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_long_replay_logs_every_decision_and_prices_it() {
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(
        &job_file,
        "[cost]\ngpu_usd_per_hour = 3.6\n[watchdog]\nschedule = \"0 2 * * *\"\n",
    )
    .unwrap();
    let trace = common::root().join("data/watchdog/day.jsonl");
    let json = dir.path().join("replay.json");
    let (code, out, err) = palate(&[
        "watchdog",
        "--job",
        job_file.to_str().unwrap(),
        "--replay",
        trace.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1441 + 2, "a line per check, then the summary");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["checks"], 1441);
    assert_eq!(r["planned_starts"], 1, "started ahead of the 02:00 run");
    assert!(r["stops"].as_u64().unwrap() >= 2);
    let saving = r["saving_usd"].as_f64().unwrap();
    let total = r["always_on_usd"].as_f64().unwrap();
    assert!((total - 86.4).abs() < 1e-6);
    assert!(saving > 0.0 && saving < total, "{r}");
    assert!(out.contains("START planned run in 240 s"), "{out}");
    // Without a GPU price the watchdog cannot weigh a restart, and says so.
    std::fs::write(&job_file, "[watchdog]\n").unwrap();
    let (code, _, err) = palate(&[
        "watchdog",
        "--job",
        job_file.to_str().unwrap(),
        "--replay",
        trace.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("set [cost] gpu_usd_per_hour"), "{err}");
}
