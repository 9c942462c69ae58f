//! Metrics end to end: a run against the simulated vLLM server (known step timings) stores a
//! metrics row for every request the server received, samples the server's `/metrics`, and
//! `palate report` shows the run as a table and as an HTML page whose charts headless Chromium
//! (Debian's `chromium`, installed by scripts/test.sh) really draws.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use palate::report::html::COLORS;
use palate::sim::{EngineConfig, FaultPlan, LatencyModel, SimConfig, SimServer};
use rusqlite::Connection;

fn q(c: &Connection, sql: &str) -> f64 {
    c.query_row(sql, [], |r| r.get::<_, Option<f64>>(0))
        .unwrap()
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_has_a_metrics_row_per_request_server_samples_and_a_drawn_report() {
    // 20 ms per step and nothing else: one token per 20 ms.
    let sim = SimServer::start(SimConfig {
        engine: EngineConfig {
            latency: LatencyModel::constant(20.0),
            ..EngineConfig::default()
        },
        models: vec!["sim".into()],
        faults: FaultPlan::default(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let slice = common::root().join("tests/data/slice.jsonl");
    let job = common::job_with(
        dir.path(),
        &[sim.url.as_str()],
        std::slice::from_ref(&slice),
        "sim",
        "read_timeout_s = 30\n\n[metrics]\nscrape_interval_s = 0.2\n\n[cost]\ngpu_usd_per_hour = 3.6\ngpus = 1",
    );
    let job = job.to_str().unwrap().to_string();
    let j = job.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || common::palate(&["run", "--job", &j]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");

    let c = Connection::open(dir.path().join("t.db")).unwrap();
    assert_eq!(
        q(&c, "SELECT count(*) FROM vllm_metrics WHERE run_id = 1") as u64,
        sim.requests(),
        "every request the server received has its row"
    );
    // Metric definitions against the known step time.
    let tpot = q(&c, "SELECT avg(tpot_ms) FROM vllm_metrics");
    assert!(
        (19.0..40.0).contains(&tpot),
        "TPOT ≈ one 20 ms step: {tpot}"
    );
    let itl = q(&c, "SELECT avg(itl_mean_ms) FROM vllm_metrics");
    assert!((19.0..40.0).contains(&itl), "ITL ≈ one step: {itl}");
    let server_prefill = q(&c, "SELECT avg(prefill_ms) FROM vllm_metrics");
    assert!(
        (19.0..25.0).contains(&server_prefill),
        "prefill is the server's own figure, one step: {server_prefill}"
    );
    let bad_split = q(
        &c,
        "SELECT count(*) FROM vllm_metrics WHERE ttft_ms < prefill_ms OR decode_ms > e2e_ms
             OR abs(tpot_ms - (e2e_ms - ttft_ms) / (completion_tokens - 1)) > 0.001",
    );
    assert_eq!(
        bad_split, 0.0,
        "TPOT = (E2E − TTFT)/(n − 1); prefill ≤ TTFT; decode ≤ E2E"
    );
    assert!(
        q(
            &c,
            "SELECT count(*) FROM server_metrics WHERE name = 'vllm:num_requests_running'"
        ) > 0.0
    );
    let summary: String = c
        .query_row("SELECT summary_json FROM runs WHERE run_id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let good = q(&c, "SELECT sum(meets_sla) FROM vllm_metrics");
    let n = q(&c, "SELECT count(*) FROM vllm_metrics");
    let pct = s["sla_compliance_pct"].as_f64().unwrap();
    assert!(
        (pct - 100.0 * good / n).abs() < 1e-9,
        "compliance {pct} vs rows {good}/{n}"
    );
    assert!(s["cost_usd"].as_f64().unwrap() > 0.0);
    let daily = q(&c, "SELECT requests FROM daily_metrics");
    assert_eq!(daily, n);

    let html = dir.path().join("report.html");
    let (code, out, err) =
        common::palate(&["report", "--job", &job, "--html", html.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "goodput",
        "SLA compliance",
        "TTFT",
        "TPOT",
        "p99",
        "saved by selection",
        "$",
    ] {
        assert!(out.contains(want), "report table shows {want}:\n{out}");
    }
    let (code, out, _) = common::palate(&["report", "--job", &job, "--daily"]);
    assert_eq!(code, 0);
    assert!(out.lines().count() >= 2, "{out}");

    // Headless Chromium renders the page; every chart's own colour must show up in the pixels.
    let png = dir.path().join("report.png");
    let profile = dir.path().join("chromium-profile");
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium is installed by scripts/test.sh (Debian package chromium)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    for (chart, hex) in COLORS {
        let want: Vec<u8> = (0..3)
            .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
            .collect();
        let n = pixels
            .chunks_exact(bytes)
            .filter(|p| p[..3] == want[..])
            .count();
        assert!(
            n >= 30,
            "chart series {chart} ({hex}) has {n} pixels: not drawn"
        );
    }
}
