//! `palate doctor` against a healthy llama.cpp server (the real one, SmolLM2), a dead port, and
//! a server that lacks a feature the job relies on (the simulated vLLM without
//! `--scheduling-policy priority`, asked for `send_priority`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use serde_json::Value;

/// `palate doctor --json`: its exit code and checks by name.
fn doctor(job: &std::path::Path) -> (i32, Vec<Value>, String) {
    let (code, out, err) = common::palate(&["doctor", "--job", job.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(v["ok"], code == 0, "{out}");
    (code, v["checks"].as_array().unwrap().clone(), out)
}

fn check<'a>(checks: &'a [Value], name_ends: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"].as_str().unwrap().ends_with(name_ends))
        .unwrap_or_else(|| panic!("no check {name_ends:?} in {checks:#?}"))
}

#[test]
fn a_healthy_llama_cpp_server_and_local_parts_pass() {
    let server = common::LlamaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let job = common::job(dir.path(), &server.base_url, &[]);
    // The work database exists and is current once something was ingested.
    let (code, _, err) = common::palate(&[
        "ingest",
        common::root().join("data/demo.jsonl").to_str().unwrap(),
        "--job",
        job.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, checks, out) = doctor(&job);
    assert_eq!(code, 0, "{out}");
    for name in [": models", ": completion", ": usage", ": /metrics"] {
        assert_eq!(check(&checks, name)["status"], "ok", "{name}: {out}");
    }
    assert!(check(&checks, ": completion")["ms"].as_f64().unwrap() > 0.0);
    for name in [
        "embedding model",
        "database schema",
        "database integrity",
        "database lock",
        "runs left running",
        "vector index",
    ] {
        assert_eq!(check(&checks, name)["status"], "ok", "{name}: {out}");
    }
    assert_eq!(check(&checks, "app database")["status"], "skip");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{out}");
    // The terminal form says the same, one line per check.
    let (code, text, _) = common::palate(&["doctor", "--job", job.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.contains("ok   endpoint http://127.0.0.1:"), "{text}");
    assert!(
        text.trim_end().ends_with("0 failed, 1 skipped") || text.contains(" 0 failed,"),
        "{text}"
    );
}

#[test]
fn a_dead_port_fails_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}/v1", common::free_port());
    let job = common::job(dir.path(), &dead, &[]);
    let (code, checks, out) = doctor(&job);
    assert_eq!(code, 1, "{out}");
    let models = check(&checks, ": models");
    assert_eq!(models["status"], "fail");
    assert!(
        models["detail"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{out}"
    );
    assert!(
        models["fix"].as_str().unwrap().contains("start the server"),
        "{out}"
    );
    assert!(
        !checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().ends_with(": completion")),
        "nothing else is asked of a server that does not answer"
    );
    // The database not created yet is a warning, not a failure.
    assert_eq!(check(&checks, "database")["status"], "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_priority_scheduling_fails_the_priority_check() {
    let sim = common::sim(1.0, palate::sim::FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = common::job_with(dir.path(), &[&sim.url], &[], "sim", "send_priority = true");
    let (code, checks, out) = tokio::task::spawn_blocking(move || doctor(&job))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(check(&checks, ": models")["status"], "ok");
    assert_eq!(check(&checks, ": completion")["status"], "ok");
    let p = check(&checks, ": priority");
    assert_eq!(p["status"], "fail", "{out}");
    assert!(p["detail"].as_str().unwrap().contains("refused"), "{out}");
    assert!(
        p["fix"]
            .as_str()
            .unwrap()
            .contains("--scheduling-policy priority"),
        "{out}"
    );
    assert_eq!(
        check(&checks, ": /metrics")["status"],
        "ok",
        "the simulator serves vLLM's names"
    );
    // A model the server does not serve is a failure naming both.
    let job = common::job_with(dir.path(), &[&sim.url], &[], "qwen-72b", "");
    let (code, checks, out) = tokio::task::spawn_blocking(move || doctor(&job))
        .await
        .unwrap();
    assert_eq!(code, 1);
    let m = check(&checks, ": models");
    assert_eq!(
        m["detail"], "does not serve qwen-72b (it serves: sim)",
        "{out}"
    );
}
