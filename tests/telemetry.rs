//! OTLP export (`[telemetry]`): a real `palate run` against the simulated server sends its spans
//! to an in-process OTLP/HTTP collector, which checks the trace: one `run` root, a `restaurant`
//! span per restaurant under it, and a `chat` span per request under those, carrying the model,
//! tokens, TTFT and outcome. Needs the `otlp` feature (in `full`).
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt as _;
use serde_json::Value;

/// Accepts `POST /v1/traces` (OTLP/HTTP JSON) and keeps every span received.
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&spans);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let keep = Arc::clone(&keep);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let keep = Arc::clone(&keep);
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            if path == "/v1/traces" {
                                let v: Value = serde_json::from_slice(&body).unwrap();
                                let mut k = keep.lock().unwrap();
                                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                                    // Each span carries its resource's service.name along.
                                    let service = attrs(&rs["resource"]).remove("service.name");
                                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                                        for span in ss["spans"].as_array().into_iter().flatten() {
                                            let mut span = span.clone();
                                            span["service"] =
                                                service.clone().unwrap_or(Value::Null);
                                            k.push(span);
                                        }
                                    }
                                }
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"{}"),
                            )))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (url, spans)
}

/// A span's attributes as key → JSON value (`stringValue`, `intValue`, `doubleValue`…).
fn attrs(span: &Value) -> HashMap<String, Value> {
    (span["attributes"].as_array().into_iter().flatten())
        .map(|a| {
            let v = a["value"]
                .as_object()
                .and_then(|o| o.values().next().cloned());
            (
                a["key"].as_str().unwrap().to_string(),
                v.unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_spans_reach_the_collector_as_one_trace() {
    let (url, spans) = collector().await;
    let sim = common::sim(1.0, palate::sim::FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = common::job_with(
        dir.path(),
        &[&sim.url],
        &[common::root().join("data/demo.jsonl")],
        "sim",
        "",
    );
    let text = std::fs::read_to_string(&job).unwrap()
        + &format!("\n[plan]\nlanguage = \"english\"\n\n[telemetry]\notlp_endpoint = {url:?}\notlp_protocol = \"http/json\"\n");
    std::fs::write(&job, text).unwrap();
    let j = job.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || common::palate(&["run", "--job", &j]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    // The exporter flushed at exit: everything is here once the process has ended.
    let spans = spans.lock().unwrap().clone();
    let named = |n: &str| spans.iter().filter(|s| s["name"] == n).collect::<Vec<_>>();
    let (runs, restaurants, chats) = (named("run"), named("restaurant"), named("chat"));
    assert_eq!(runs.len(), 1, "{spans:#?}");
    assert_eq!(restaurants.len(), 3);
    assert!(
        chats.len() >= 9,
        "three requests or more per restaurant: {}",
        chats.len()
    );
    let run = runs[0];
    assert_eq!(attrs(run)["model"], "sim");
    assert_eq!(
        attrs(run)["run_id"],
        "1",
        "intValue is a string in OTLP JSON"
    );
    let trace = run["traceId"].as_str().unwrap();
    let others: Vec<&Value> = spans.iter().filter(|s| s["traceId"] != trace).collect();
    assert!(
        others.is_empty(),
        "one trace: {:?}",
        others.iter().map(|s| &s["name"]).collect::<Vec<_>>()
    );
    let restaurant_ids: Vec<&str> = restaurants
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    for r in &restaurants {
        assert_eq!(r["parentSpanId"], run["spanId"]);
    }
    for c in &chats {
        assert!(
            restaurant_ids.contains(&c["parentSpanId"].as_str().unwrap()),
            "{c}"
        );
        let a = attrs(c);
        assert_eq!(a["model"], "sim");
        assert_eq!(a["outcome"], "ok", "{c}");
        for k in [
            "prompt_tokens",
            "completion_tokens",
            "ttft_ms",
            "kind",
            "restaurant_id",
        ] {
            assert!(a.contains_key(k), "{k} missing: {c}");
        }
    }
    assert!(
        spans.iter().all(|s| s["service"] == "palate"),
        "service.name of the resource"
    );
}
