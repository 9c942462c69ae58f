//! Faults, retries, fallback and endpoint ejection against the simulated vLLM server (`palate::sim`).
//! The fault runs use the real binary, the real embedding model and SQLite; only the LLM server is
//! simulated, because a real one cannot be made to fail on cue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use palate::config::{Config, JobFile};
use palate::domain::ErrorClass;
use palate::infer::{ChatRequest, LlmClient, OpenAiClient};
use palate::plan::RestaurantPlan;
use palate::sim::{EngineConfig, Fault, FaultPlan, LatencyModel, SimConfig, SimServer};
use rusqlite::Connection;
use tokio::time::{Duration, Instant};

/// A fast engine: 1 ms steps.
fn engine() -> EngineConfig {
    EngineConfig {
        latency: LatencyModel {
            step_ms: 1.0,
            token_ms: 0.0005,
            seq_ms: 0.01,
            ..LatencyModel::constant(0.0)
        },
        ..EngineConfig::default()
    }
}

fn sim_config(models: &[&str], faults: FaultPlan) -> SimConfig {
    SimConfig {
        engine: engine(),
        models: models.iter().map(|m| m.to_string()).collect(),
        faults,
        ..SimConfig::default()
    }
}

/// Short timeouts and backoff, so faults play out in seconds.
const FAST_LLM: &str = "read_timeout_s = 1
request_timeout_s = 20
attempts = 3
backoff_base_s = 0.05
backoff_max_s = 0.2
eject_s = 0.5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_faults_at_20_percent_every_analysis_is_stored_valid_or_with_its_reason() {
    let slice = common::root().join("tests/data/slice.jsonl");
    // Each kind alone, then all nine at once (each drawn at 20 %).
    let mut runs: Vec<Vec<Fault>> = Fault::ALL.iter().map(|&f| vec![f]).collect();
    runs.push(Fault::ALL.to_vec());
    for kinds in runs {
        let fault = kinds[0];
        let label = format!("{kinds:?}");
        let faults = FaultPlan {
            rates: kinds.iter().map(|&k| (k, 0.2)).collect(),
            // Request 0 always gets the first, so every kind alone is seen at least once.
            schedule: BTreeMap::from([(0, fault)]),
            seed: 7,
            retry_after: Duration::from_secs(1),
            stall_for: Duration::from_secs(3),
        };
        let sim = SimServer::start(sim_config(&["sim"], faults))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let job = common::job_with(
            dir.path(),
            &[sim.url.as_str()],
            std::slice::from_ref(&slice),
            "sim",
            FAST_LLM,
        );
        let job = job.to_str().unwrap().to_string();
        let (code, out, err) =
            tokio::task::spawn_blocking(move || common::palate(&["run", "--job", &job]))
                .await
                .unwrap();
        assert!(code == 0 || code == 3, "{label}: exit {code}\n{out}\n{err}");
        let injected: u64 = sim.injected().values().sum();
        assert!(injected > 0, "{label} was never injected");
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        let results: i64 = c
            .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            results, 9,
            "{label}: 3 restaurants x 3 analyses\n{out}\n{err}"
        );
        let unexplained: i64 = c
            .query_row(
                "SELECT count(*) FROM results WHERE status = 'failed' AND (error IS NULL OR error_class IS NULL)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unexplained, 0, "{label}: a failure without its reason");
        let errors: i64 = c
            .query_row(
                "SELECT count(*) FROM vllm_metrics WHERE status = 'error' OR error_class IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let unclassified: i64 = c
            .query_row(
                "SELECT count(*) FROM vllm_metrics WHERE status = 'error' AND error_class IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            unclassified, 0,
            "{label}: an attempt without its error class"
        );
        if kinds != [Fault::Refused] {
            // A refused connection may fail before the request reaches the server, which then
            // retries and counts nothing; every other fault shows as an attempt with its class.
            assert!(
                errors > 0,
                "{label}: injected {injected}x but no attempt recorded an error"
            );
        }
    }
}

fn plan() -> RestaurantPlan {
    common::plan_of(&["Great broth.", "Rude staff but fast.", "가성비 좋아요"])
}

fn client(endpoints: &[&str], model: &str, extra: impl FnOnce(&mut JobFile)) -> OpenAiClient {
    let mut f = JobFile::default();
    f.llm.endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    f.llm.model = model.into();
    f.llm.read_timeout_s = 5.0;
    f.llm.backoff_base_s = 0.05;
    extra(&mut f);
    OpenAiClient::new(&Config::validate(f).unwrap().llm).unwrap()
}

fn chat_request(plan: &RestaurantPlan) -> ChatRequest {
    let r = &plan.requests[1];
    ChatRequest {
        restaurant_id: plan.restaurant_id.clone(),
        kind: r.kind,
        attempt: 1,
        messages: r.messages.clone(),
        schema: r.schema.clone(),
        max_tokens: r.max_tokens,
        prefill_tokens: r.prompt_tokens,
    }
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_retry_after_on_a_paused_clock() {
    let faults = FaultPlan {
        schedule: BTreeMap::from([(0, Fault::RateLimited), (1, Fault::RateLimited)]),
        retry_after: Duration::from_secs(7),
        ..FaultPlan::default()
    };
    let sim = SimServer::start(sim_config(&["m"], faults)).await.unwrap();
    let llm = client(&[sim.url.as_str()], "m", |_| {});
    let t0 = Instant::now();
    let o = llm.chat(&chat_request(&plan())).await;
    let waited = t0.elapsed();
    assert!(o.result.is_ok(), "{:?}", o.result);
    let classes: Vec<Option<ErrorClass>> = o.metrics.iter().map(|m| m.error_class).collect();
    assert_eq!(
        classes,
        [
            Some(ErrorClass::Transient),
            Some(ErrorClass::Transient),
            None
        ]
    );
    assert_eq!(
        o.metrics.iter().map(|m| m.retry).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(16),
        "two Retry-After waits of 7 s, not backoff: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn transient_errors_back_off_and_give_up_after_the_attempts() {
    let faults = FaultPlan {
        rates: vec![(Fault::Http503, 1.0)],
        ..FaultPlan::default()
    };
    let sim = SimServer::start(sim_config(&["m"], faults)).await.unwrap();
    let llm = client(&[sim.url.as_str()], "m", |f| {
        f.llm.attempts = 4;
        f.llm.backoff_base_s = 1.0;
        f.llm.backoff_max_s = 2.0;
        f.llm.eject_after_failures = 100;
    });
    let t0 = Instant::now();
    let o = llm.chat(&chat_request(&plan())).await;
    let waited = t0.elapsed();
    let e = o.result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("503"), "{}", e.to_string());
    assert_eq!(o.metrics.len(), 4);
    // Full jitter: waits uniform in [0, 1], [0, 2], [0, 2] seconds.
    assert!(
        waited <= Duration::from_secs(5) + Duration::from_millis(100),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_hands_over_to_the_next_in_the_chain() {
    // The server does not serve "general": 404, a permanent error, then "fast" answers.
    let sim = SimServer::start(sim_config(&["fast"], FaultPlan::default()))
        .await
        .unwrap();
    let llm = client(&[sim.url.as_str()], "general", |f| {
        f.llm.fallback_models = vec!["fast".into(), "general".into()];
    });
    let o = llm.chat(&chat_request(&plan())).await;
    let reply = o.result.unwrap();
    assert_eq!(reply.model, "fast");
    let tried: Vec<(&str, Option<ErrorClass>)> = o
        .metrics
        .iter()
        .map(|m| (m.model.as_str(), m.error_class))
        .collect();
    assert_eq!(
        tried,
        [("general", Some(ErrorClass::Permanent)), ("fast", None)]
    );

    // Nothing serves either model: one error naming every model's failure.
    let sim = SimServer::start(sim_config(&["other"], FaultPlan::default()))
        .await
        .unwrap();
    let llm = client(&[sim.url.as_str()], "general", |f| {
        f.llm.fallback_models = vec!["fast".into()];
    });
    let e = llm.chat(&chat_request(&plan())).await.result.unwrap_err();
    assert!(
        e.to_string().contains("every model failed")
            && e.to_string().contains("general:")
            && e.to_string().contains("fast:"),
        "{}",
        e.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_a_dead_one_is_ejected_at_warm_up() {
    let bad = SimServer::start(sim_config(
        &["m"],
        FaultPlan {
            rates: vec![(Fault::Http503, 1.0)],
            ..FaultPlan::default()
        },
    ))
    .await
    .unwrap();
    let good = SimServer::start(sim_config(&["m"], FaultPlan::default()))
        .await
        .unwrap();
    let llm = client(&[bad.url.as_str(), good.url.as_str()], "m", |f| {
        f.llm.eject_after_failures = 2;
        f.llm.eject_s = 600.0;
        f.llm.attempts = 5;
    });
    llm.warm_up().await.unwrap();
    let p = plan();
    for _ in 0..6 {
        let o = llm.chat(&chat_request(&p)).await;
        assert!(o.result.is_ok(), "{:?}", o.result);
    }
    assert_eq!(bad.requests(), 2, "ejected after 2 failures in a row");
    assert!(good.requests() >= 6);

    // A port nobody listens on: ejected by the warm-up, never sent a request.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let llm = client(&[dead.as_str(), good.url.as_str()], "m", |f| {
        f.llm.backoff_base_s = 0.01;
    });
    let up = llm.warm_up().await.unwrap();
    assert_eq!(up, std::slice::from_ref(&good.url));
    let o = llm.chat(&chat_request(&p)).await;
    assert!(o.metrics.iter().all(|m| m.endpoint == good.url));
}

#[test]
fn the_sim_reports_cached_prefix_tokens_on_a_repeated_prompt() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sim = SimServer::start(sim_config(&["m"], FaultPlan::default()))
            .await
            .unwrap();
        let llm = client(&[sim.url.as_str()], "m", |_| {});
        let p = plan();
        let first = llm.chat(&chat_request(&p)).await;
        let second = llm.chat(&chat_request(&p)).await;
        let cached = |o: &palate::infer::ChatOutcome| o.metrics[0].cached_tokens.unwrap();
        assert_eq!(cached(&first), 0);
        let prompt = second.metrics[0].prompt_tokens.unwrap();
        assert!(
            cached(&second) >= prompt - 16 && cached(&second) < prompt,
            "all but the last partial block is cached: {} of {prompt}",
            cached(&second)
        );
        let metrics = reqwest::get(sim.url.replace("/v1", "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("vllm:prefix_cache_hits_total"));
        assert!(metrics.contains("vllm:num_requests_running"));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_is_sent_only_to_a_server_that_schedules_by_it() {
    let mut cfg = sim_config(&["m"], FaultPlan::default());
    cfg.engine.priority_scheduling = true;
    let sim = SimServer::start(cfg).await.unwrap();
    let llm = client(&[sim.url.as_str()], "m", |f| f.llm.send_priority = true);
    let req = chat_request(&plan());
    let o = llm.chat(&req).await;
    assert!(o.result.is_ok(), "{:?}", o.result);
    assert_eq!(o.metrics[0].priority, Some(req.prefill_tokens as i64));

    // vLLM without --scheduling-policy priority refuses a non-zero priority: a permanent error.
    let fcfs = SimServer::start(sim_config(&["m"], FaultPlan::default()))
        .await
        .unwrap();
    let llm = client(&[fcfs.url.as_str()], "m", |f| f.llm.send_priority = true);
    let e = llm.chat(&req).await.result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains("priority"), "{}", e.to_string());
}

/// Every attempt names its restaurant in `X-Request-Id`: the simulator replaying a run gives it
/// that restaurant's answer (40 tokens), not the next in the run's order (5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_names_its_restaurant_in_its_request_id() {
    let req = chat_request(&plan());
    let outputs = palate::sim::OutputModel {
        tokens: vec![5, 40],
        per_item: false,
        invalid_rate: 0.0,
        mask_ms: None,
        restaurants: vec!["another".into(), req.restaurant_id.clone()],
    };
    let mut cfg = sim_config(&["m"], FaultPlan::default());
    cfg.outputs = [(req.kind.as_str().to_string(), outputs)].into();
    cfg.replay_outputs = true;
    let sim = SimServer::start(cfg).await.unwrap();
    let o = client(&[sim.url.as_str()], "m", |_| {}).chat(&req).await;
    assert_eq!(o.metrics[0].completion_tokens, Some(40), "{:?}", o.metrics);
}

/// A server that behaves like llama.cpp's: it answers with `Connection: keep-alive`, then
/// closes the connection when the next request arrives on it, without answering.
async fn closes_kept_alive_connections() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(AtomicU32::new(0));
    let counted = std::sync::Arc::clone(&connections);
    let answer = r#"{"summary":"Broth praised.","aspects":{}}"#;
    let chunk = serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": answer}, "finish_reason": "stop"}]});
    let body = format!("data: {chunk}\n\ndata: [DONE]\n\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                let mut seen = Vec::new();
                // Read the first request (headers and its Content-Length body), answer it.
                while !request_complete(&seen) {
                    let n = tcp.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                tcp.write_all(response.as_bytes()).await.unwrap();
                // The next request on this connection is met with a close.
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    (url, connections)
}

fn request_complete(seen: &[u8]) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    seen.len() >= end + 4 + length
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_the_server_closed_is_resent_and_not_a_failure() {
    let (url, connections) = closes_kept_alive_connections().await;
    let llm = client(&[url.as_str()], "m", |f| f.llm.keep_alive = true);
    for i in 0..4 {
        let o = llm.chat(&chat_request(&plan())).await;
        assert!(o.result.is_ok(), "request {i}: {:?}", o.result);
        assert_eq!(o.metrics.len(), 1, "request {i}: one attempt, no failure");
        assert!(o.metrics[0].ok);
    }
    let n = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 4, "each request ended on a new connection: {n}");
}
