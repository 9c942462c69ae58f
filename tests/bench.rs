//! The benchmarks' own parts against the simulated server: a scheduling mode's figures, the
//! offline ceiling, and calibration recovering a cost model it did not know.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use palate::bench::calibrate::{calibrate, CalibrateSpec};
use palate::bench::fit::Point;
use palate::bench::{Mode, ModeSpec, WorkloadSpec};
use palate::domain::Kind;
use palate::sim::{EngineConfig, LatencyModel, PrefixCacheKind, Profile, SimConfig, SimServer};

mod common;

fn workload(restaurants: usize) -> WorkloadSpec {
    WorkloadSpec {
        restaurants,
        reviews_per_restaurant: 20,
        reviews_file: common::root().join("data/reviews.jsonl"),
        prompts_dir: common::root().join("prompts"),
        ..WorkloadSpec::default()
    }
}

fn spec(url: &str, mode: Mode, restaurants: usize) -> ModeSpec {
    ModeSpec {
        endpoint: url.to_string(),
        model: "sim".into(),
        mode,
        concurrency: 8,
        arrival_rate: None,
        seed: 7,
        max_in_flight: 64,
        max_num_seqs: None,
        workload: workload(restaurants),
    }
}

/// The built-in profile ten times faster than real time.
async fn sim(priority: bool) -> SimServer {
    let mut p = Profile::builtin();
    p.engine.time_scale = 0.1;
    p.engine.priority_scheduling = priority;
    SimServer::start(SimConfig::from_profile(p)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_reports_server_time_cohorts_and_the_servers_running_sequences() {
    let server = sim(true).await;
    let r = palate::bench::scheduling::run(spec(&server.url, Mode::Priority, 6))
        .await
        .unwrap();
    assert_eq!(r.time_scale, 0.1, "read from the simulator's /metrics");
    assert_eq!(r.max_num_seqs, Some(1024));
    assert_eq!(r.requests_failed, 0);
    assert!(r.requests >= 6 * 4, "{} requests", r.requests);
    assert!(
        r.analyses_valid >= 6 * 2,
        "{}/{}",
        r.analyses_valid,
        r.analyses
    );
    assert!(
        r.mean_running.is_some_and(|m| m > 0.0),
        "{:?}",
        r.mean_running
    );
    assert!(r.restaurant_p95_s >= r.restaurant_p50_s && r.restaurant_p50_s > 0.0);
    assert!(r.small_ttft_p50_ms > 0.0 && r.large_ttft_p50_ms > 0.0);
    // Server time: a 7B model on an H100 answers a restaurant in seconds, not in tenths.
    assert!(r.wall_s > 1.0 && r.requests_per_s > 0.0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_sends_every_first_request_at_once() {
    let server = sim(false).await;
    let r = palate::bench::scheduling::run(spec(&server.url, Mode::Ceiling, 6))
        .await
        .unwrap();
    let plans = palate::bench::workload::plans(&workload(6)).unwrap();
    let first: usize = plans.iter().map(|p| p.requests.len()).sum();
    assert_eq!(r.requests, first, "no follow-ups, no repairs");
    assert_eq!(r.analyses, first);
    assert_eq!(r.restaurant_p50_s, 0.0, "the ceiling has no restaurants");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_recovers_a_known_cost_model() {
    let truth = LatencyModel {
        step_ms: 3.0,
        seq_ms: 0.5,
        token_ms: 0.02,
        weights_ms: 6.0,
        kv_token_us: 2.0,
        ..LatencyModel::constant(0.0)
    };
    let server = SimServer::start(SimConfig {
        engine: EngineConfig {
            latency: truth,
            kv_blocks: 0,
            ..EngineConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = calibrate(CalibrateSpec {
        endpoint: server.url.clone(),
        model: "sim".into(),
        parallel: vec![1, 4, 16],
        decode_contexts: vec![16, 1000],
        prompt_tokens: vec![32, 512, 2048, 6000],
        mixed_prompts: vec![100, 400],
        mixed_decoding: vec![1, 3],
        mixed_contexts: vec![16, 1000],
        output_tokens: 24,
        rounds: 2,
        max_num_seqs: 64,
        max_num_batched_tokens: 8192,
        kv_tokens: 100_000,
        reviews_file: common::root().join("data/reviews.jsonl"),
        outputs_from: None,
        reviews_per_sentiment: 1,
    })
    .await
    .unwrap();
    assert!(c.fit.mean_abs_error < 0.15, "{:?}", c.fit);
    assert!(
        c.points
            .iter()
            .any(|(p, _)| matches!(p, Point::Mixed { .. })),
        "a mixed point"
    );
    // A vLLM-like server: one prefix cache every request shares, not llama.cpp's slots.
    assert_eq!(c.profile.engine.prefix_cache, PrefixCacheKind::Shared);
    let m = c.profile.engine.latency;
    // The memory-bound side: a batch-1 decode step at short context, within 15 %.
    let step1 = |m: &LatencyModel| m.step_ms + m.seq_ms + m.weights_ms;
    assert!((step1(&m) / step1(&truth) - 1.0).abs() < 0.15, "{m:?}");
    // Token counts are the simulator's own (palate's estimate: every ASCII character a quarter
    // of a token, a Hangul one 1.5).
    let [letter, symbol, hangul] = c.tokens.per_class();
    assert!(
        (letter - 0.25).abs() < 0.03 && (symbol - 0.25).abs() < 0.05 && (hangul - 1.5).abs() < 0.15,
        "{:?}",
        c.tokens
    );
}

/// `--replay-outputs`: each kind's answers take the profile's lengths in order, in turn, as the
/// real run's answers did (the calibration check's simulator run); a request whose
/// `X-Request-Id` names a restaurant of the list takes that restaurant's next answer, whatever
/// order the restaurants' requests arrive in.
#[tokio::test]
async fn replayed_answers_take_the_listed_lengths_in_order() {
    let outputs = palate::sim::OutputModel {
        tokens: vec![3, 50, 7],
        per_item: false,
        invalid_rate: 0.0,
        mask_ms: None,
        restaurants: vec!["a".into(), "b/2".into(), "a".into()],
    };
    let server = SimServer::start(SimConfig {
        engine: EngineConfig {
            latency: LatencyModel::constant(0.0),
            kv_blocks: 0,
            ..EngineConfig::default()
        },
        outputs: [("summary".to_string(), outputs)].into(),
        replay_outputs: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut lengths = Vec::new();
    for (n, restaurant) in [
        None,
        Some("b/2"),
        Some("a"),
        None,
        Some("a"),
        Some("a"),
        None,
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let body = serde_json::json!({"model": "sim", "max_tokens": 400, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "summarise"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "summary",
                "schema": {"type": "object", "properties": {"summary": {"type": "string"}},
                           "required": ["summary"]}}}});
        let mut rq = http.post(format!("{}/chat/completions", server.url));
        if let Some(r) = restaurant {
            let id = palate::infer::request_id::format(r, Kind::Summary, 1, &n.to_string());
            rq = rq.header(palate::infer::request_id::HEADER, id);
        }
        let text = rq.json(&body).send().await.unwrap().text().await.unwrap();
        let usage = palate::infer::sse::events(text.as_bytes())
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .find_map(|v| v["usage"]["completion_tokens"].as_u64());
        lengths.push(usage.unwrap());
    }
    // Unnamed requests walk the whole list; named ones their restaurant's answers only.
    assert_eq!(lengths, [3, 50, 3, 50, 7, 3, 7, 3]);
}

/// `palate bench steps`: every step of a llama-server debug log priced by a profile, by kind of
/// step; a log with no step in it (the server ran without `--debug-log`) is an error naming it.
#[test]
fn bench_steps_prices_each_step_of_a_debug_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("llama-server.log");
    std::fs::write(
        &log,
        "\
0.02.023.382 I slot   operator(): id  3 | task 1 | new prompt, n_ctx_slot = 8192, n_keep = 0, task.n_tokens = 958
0.02.023.387 I slot   operator(): id  3 | task 1 | cached n_tokens = 0, memory_seq_rm [0, end)
0.02.023.547 D srv        decode: n_batch (effective) = 2048, off = 0
0.10.099.053 D slot handle_last_: id  3 | task 1 | slot decode token, id=515, n_ctx = 8192, n_tokens = 958, truncated = 0
0.10.099.695 D srv        decode: n_batch (effective) = 2048, off = 0
0.10.130.000 D slot handle_last_: id  3 | task 1 | slot decode token, id=11, n_ctx = 8192, n_tokens = 959, truncated = 0
0.10.130.100 D srv        decode: n_batch (effective) = 2048, off = 0
",
    )
    .unwrap();
    let json = dir.path().join("steps.json");
    let profile = common::root().join("data/profiles/qwen2.5-7b-h100.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palate"))
        .args(["bench", "steps"])
        .arg(&log)
        .arg("--profile")
        .arg(&profile)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prompt beside 0 decoding") && text.contains("decode ×1"),
        "{text}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["all"]["steps"], 2, "the last step has no end: {r}");
    assert!((r["all"]["observed_s"].as_f64().unwrap() - (8.076148 + 0.030405)).abs() < 1e-6);

    let plain = dir.path().join("plain.log");
    std::fs::write(&plain, "0.02.023.382 I srv  init: model loaded\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palate"))
        .args(["bench", "steps"])
        .arg(&plain)
        .arg("--profile")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.log") && err.contains("--debug-log"),
        "{err}"
    );
}
