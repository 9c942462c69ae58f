//! End to end on real parts: the real embedding model and the real llama.cpp server with
//! SmolLM2-135M, `palate run` on a small slice of the sample data, then a re-run that makes no
//! LLM request, then `palate analyze --json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use rusqlite::Connection;
use serde_json::Value;

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn run_stores_results_and_metrics_and_a_rerun_makes_no_llm_requests() {
    let server = common::LlamaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let job = common::job(
        dir.path(),
        &server.base_url,
        &[common::root().join("tests/data/slice.jsonl")],
    );
    let job = job.to_str().unwrap();

    let (code, out, err) = common::palate(&["run", "--job", job, "--log-format", "json"]);
    // 0: all valid; 3: some analyses failed validation (SmolLM2 is tiny), stored as failed.
    assert!(code == 0 || code == 3, "exit {code}\n{out}\n{err}");
    assert!(out.contains("ingested") && out.contains("18 new"), "{out}");

    let db = Connection::open(dir.path().join("t.db")).unwrap();
    // Every restaurant has all three analyses stored, valid or failed with a reason: none missing.
    assert_eq!(count(&db, "SELECT count(*) FROM results"), 9);
    assert_eq!(count(&db, "SELECT count(*) FROM results WHERE status = 'failed' AND (error IS NULL OR error_class IS NULL)"), 0);
    let ok = count(&db, "SELECT count(*) FROM results WHERE status = 'ok'");
    assert!(
        ok >= 3,
        "at least the sentiment analyses are valid, got {ok} valid results"
    );
    // Valid results name real, selected reviews.
    let mut q = db
        .prepare("SELECT kind, result_json FROM results WHERE status = 'ok'")
        .unwrap();
    let rows: Vec<(String, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, json) in &rows {
        let v: Value = serde_json::from_str(json).unwrap();
        let ids: Vec<&str> = match kind.as_str() {
            "sentiment" => v["reviews"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["review_id"].as_str().unwrap())
                .collect(),
            "strengths" => v["strengths"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    s["evidence"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["review_id"].as_str().unwrap())
                })
                .collect(),
            _ => Vec::new(),
        };
        for id in ids {
            assert_eq!(
                count(
                    &db,
                    &format!("SELECT count(*) FROM reviews WHERE review_id = '{id}'")
                ),
                1,
                "{kind} cites {id}"
            );
        }
    }
    // Metrics: one analysis row per analysis; every request has its timings and tokens.
    assert_eq!(count(&db, "SELECT count(*) FROM analysis_metrics"), 9);
    let requests = count(&db, "SELECT count(*) FROM vllm_metrics");
    assert!(requests >= 9, "{requests}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM vllm_metrics WHERE status = 'ok' AND (ttft_ms IS NULL OR prompt_tokens IS NULL OR completion_tokens IS NULL OR e2e_ms < ttft_ms)"),
        0
    );
    assert_eq!(count(&db, "SELECT sum(requests) FROM runs"), requests);
    // The summary prints what the run did.
    assert!(out.contains(&format!("requests: {requests} ")), "{out}");

    // A second run: nothing changed, so nothing is asked of the LLM.
    let (code2, out2, err2) = common::palate(&["run", "--job", job]);
    assert!(code2 == 0 || code2 == 3, "exit {code2}\n{out2}\n{err2}");
    assert!(
        out2.contains("3 skipped") && out2.contains("requests: 0 "),
        "{out2}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM vllm_metrics"), requests);

    // analyze prints the stored results of one restaurant without asking again.
    let (code3, out3, err3) =
        common::palate(&["analyze", "insadong-mandu", "--job", job, "--json"]);
    assert!(code3 == 0 || code3 == 3, "exit {code3}\n{out3}\n{err3}");
    let json_start = out3.find('{').unwrap();
    let json_end = out3.rfind('}').unwrap();
    let doc: Value = serde_json::from_str(&out3[json_start..=json_end]).unwrap();
    assert_eq!(doc["restaurant_id"], "insadong-mandu");
    assert_eq!(doc["results"].as_array().unwrap().len(), 3);
    assert_eq!(count(&db, "SELECT count(*) FROM vllm_metrics"), requests);
}

#[test]
fn an_unreachable_endpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::job(
        dir.path(),
        "http://127.0.0.1:9/v1",
        &[common::root().join("tests/data/slice.jsonl")],
    );
    let (code, out, err) = common::palate(&[
        "run",
        "--job",
        job.to_str().unwrap(),
        "--log-format",
        "pretty",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no LLM endpoint answered GET /models") && err.contains("127.0.0.1:9"),
        "{err}"
    );
}
