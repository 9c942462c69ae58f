//! The real llama.cpp server dies in the middle of a run and comes back on the same port: the
//! run completes, the requests in flight are recorded as failed attempts and retried, and every
//! analysis is stored, valid or failed with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

#[test]
fn the_llm_server_dies_mid_run_and_comes_back_and_the_run_completes() {
    let server = common::LlamaServer::start();
    let port = server.port();
    let dir = tempfile::tempdir().unwrap();
    // One restaurant of the slice: three analyses, so the test stays short on two cores.
    let slice = dir.path().join("one.jsonl");
    let rows = std::fs::read_to_string(common::root().join("tests/data/slice.jsonl")).unwrap();
    let one: Vec<&str> = rows
        .lines()
        .filter(|l| l.contains("busan-ssiat-hotteok"))
        .collect();
    std::fs::write(&slice, one.join("\n")).unwrap();
    // Retries that outlast a restart (the model loads in a few seconds).
    let llm = "read_timeout_s = 600\nrequest_timeout_s = 1200\nattempts = 8\nbackoff_base_s = 1\nbackoff_max_s = 8\neject_s = 2";
    let job = common::job_with(dir.path(), &[&server.base_url], &[slice], "smollm2", llm);
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text.replace("restaurant_concurrency = 3", "restaurant_concurrency = 1")
        + "\n[plan]\nlanguage = \"english\"\n";
    std::fs::write(&job, text).unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut run = Command::new(env!("CARGO_BIN_EXE_palate"))
        .args(["run", "--job", job.to_str().unwrap()])
        .current_dir(common::root())
        .env("RUST_LOG", "palate=info")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    // Kill the server once it is decoding palate's requests.
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let t = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", &metrics])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let decoded = text
            .lines()
            .find(|l| l.starts_with("llamacpp:tokens_predicted_total"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if decoded > 0.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "palate never reached the server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    let again = common::LlamaServer::start_on(port);
    let code = run.wait().unwrap().code();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        matches!(code, Some(0 | 3)),
        "exit {code:?}\n{stdout}\n{stderr}"
    );
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM results"), 3, "{stdout}");
    assert_eq!(
        count("SELECT count(*) FROM results WHERE status = 'failed' AND (error IS NULL OR error_class IS NULL)"),
        0,
        "a failure without its reason"
    );
    let lost = count("SELECT count(*) FROM vllm_metrics WHERE error_class = 'transient'");
    assert!(
        lost >= 1,
        "the requests in flight when the server died are recorded"
    );
    let retried = count("SELECT count(*) FROM results WHERE status = 'ok'");
    assert!(
        retried >= 1,
        "the run went on against the restarted server\n{stdout}"
    );
    assert_eq!(
        count("SELECT count(*) FROM runs WHERE status IN ('completed', 'completed_with_failures')"),
        1
    );
    drop(again);
}
