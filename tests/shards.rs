//! Several workers: `--shard i/n` over the sample data. Three workers, each with its own work
//! database, against one (simulated) vLLM server: every restaurant is analysed by exactly one of
//! them, and together they analyse what a single run does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use palate::sim::{SimConfig, SimServer};
use rusqlite::Connection;

fn job(dir: &Path, endpoint: &str) -> String {
    let inputs = [
        common::root().join("data/reviews.jsonl"),
        common::root().join("data/reviews.csv"),
    ];
    let llm = "read_timeout_s = 10\nrequest_timeout_s = 60\nmax_in_flight = 32";
    let p = common::job_with(dir, &[endpoint], &inputs, "sim", llm);
    // The simulated server writes English.
    let text = std::fs::read_to_string(&p).unwrap() + "\n[plan]\nlanguage = \"english\"\n";
    let text = text.replace("max_in_flight = 4\n", "");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn set(db: &Path, sql: &str) -> BTreeSet<String> {
    let c = Connection::open(db).unwrap();
    let mut q = c.prepare(sql).unwrap();
    let rows = q.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

async fn palate(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::palate(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_analyse_every_restaurant_exactly_once_and_together_what_one_run_does() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let endpoint = sim.url.clone();
    let analysed = "SELECT DISTINCT restaurant_id FROM results";

    let single = tempfile::tempdir().unwrap();
    let (code, out, err) = palate(vec![
        "run".into(),
        "--job".into(),
        job(single.path(), &endpoint),
    ])
    .await;
    assert!(code == 0 || code == 3, "single run: {code}\n{out}\n{err}");
    let everything = set(&single.path().join("t.db"), analysed);
    let ingested = set(
        &single.path().join("t.db"),
        "SELECT restaurant_id FROM restaurants",
    );
    assert!(everything.len() >= 30, "{} restaurants", everything.len());
    assert_eq!(
        everything, ingested,
        "the single run analysed every restaurant"
    );

    let mut union = BTreeSet::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let shard = format!("{i}/3");
        let args = vec![
            "run".into(),
            "--job".into(),
            job(dir.path(), &endpoint),
            "--shard".into(),
            shard.clone(),
        ];
        let (code, out, err) = palate(args).await;
        assert!(
            code == 0 || code == 3,
            "shard {shard}: {code}\n{out}\n{err}"
        );
        let db = dir.path().join("t.db");
        let mine = set(&db, analysed);
        // The worker's database holds only its shard's restaurants.
        assert_eq!(
            set(&db, "SELECT restaurant_id FROM restaurants"),
            mine,
            "shard {shard}"
        );
        assert!(!mine.is_empty(), "shard {shard} got no restaurant");
        let twice: Vec<_> = mine.intersection(&union).cloned().collect();
        assert!(twice.is_empty(), "shard {shard} analysed {twice:?} again");
        println!("shard {shard}: {} restaurants", mine.len());
        union.extend(mine);
    }
    assert_eq!(
        union, everything,
        "the shards together analysed what one run does"
    );
}
