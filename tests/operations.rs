//! What an operator relies on when palate runs unattended: the database lock, kill -9 at any
//! moment, signals, the deadline, a fleet that goes away, and a night with nothing to do. The
//! real binary, the real embedding model and SQLite; the LLM server is simulated
//! (`palate::sim`), because a real one cannot be made to fail or stall on cue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sim;
use palate::sim::{Fault, FaultPlan, SimServer};
use rusqlite::Connection;

const LLM: &str = "read_timeout_s = 2
request_timeout_s = 30
attempts = 2
backoff_base_s = 0.05
backoff_max_s = 0.2
eject_s = 0.5";

fn demo_data() -> PathBuf {
    common::root().join("data/demo.jsonl")
}

fn job(dir: &Path, endpoint: &str, job_extra: &str) -> String {
    let p = common::job_with(dir, &[endpoint], &[demo_data()], "sim", LLM);
    let mut text = std::fs::read_to_string(&p).unwrap();
    if job_extra.contains("restaurant_concurrency") {
        text = text.replace("restaurant_concurrency = 3\n", "");
    }
    // The simulated server writes English.
    let text = text.replacen("[job]\n", &format!("[job]\n{job_extra}\n"), 1)
        + "\n[plan]\nlanguage = \"english\"\n";
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_palate"))
        .args(args)
        .current_dir(common::root())
        .env("RUST_LOG", "palate=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

use common::palate_async as palate;

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The child's exit code, which must come within `limit`.
async fn exit_within(child: &mut Child, limit: Duration, what: &str) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(t.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_a_rerun_leaves_one_settled_result_per_analysis() {
    let sim = sim(2.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &sim.url, "");
    // How long a whole forced run takes here (after a first run that embeds): the kills land
    // uniformly within it, whatever the machine's speed.
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let t = Instant::now();
    let (code, _, _) = palate(&["run", "--job", &job, "--force"]).await;
    assert_eq!(code, 0);
    let mut whole = t.elapsed().as_millis() as u64;
    let mut rng = fastrand::Rng::with_seed(20261130);
    let mut trials = 0;
    let mut killed_after = Vec::new();
    // Other tests share the machine, so a run's length varies: a run that finished before its
    // kill shortens the window, and trials go on until 24 kills have landed mid-run.
    while killed_after.len() < 24 && trials < 60 {
        trials += 1;
        let mut child = spawn(&["run", "--job", &job, "--force"]);
        let at = Duration::from_millis(rng.u64(50..(whole * 9 / 10).max(60)));
        std::thread::sleep(at);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if finished {
            whole = at.as_millis() as u64;
        } else {
            killed_after.push(at.as_millis());
        }
    }
    eprintln!(
        "kill -9 trials: {trials} (a whole run: {whole} ms), killed mid-run: {} (at ms {killed_after:?})",
        killed_after.len()
    );
    assert_eq!(killed_after.len(), 24, "24 kills landed mid-run");
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    assert_eq!(
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap(),
        "ok"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM reviews"), 144);
    assert_eq!(count(&c, "SELECT count(*) FROM restaurants"), 3);
    // Every restaurant: its three analyses settled under its current key, once each.
    let settled = "SELECT count(*) FROM current_results";
    assert_eq!(count(&c, settled), 9, "{out}");
    let per_kind = "SELECT max(n) FROM (SELECT count(*) AS n FROM current_results GROUP BY restaurant_id, kind)";
    assert_eq!(count(&c, per_kind), 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM results"),
        9,
        "one row per restaurant and kind under the one key, all valid"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM results WHERE status = 'ok'"),
        9
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'running'"),
        0,
        "killed runs are marked failed by the next"
    );
    let abandoned = "SELECT count(*) FROM runs WHERE status = 'failed' AND error LIKE 'abandoned%'";
    assert!(count(&c, abandoned) >= 1);
}

/// Takes `<db>.lock` in this process, as another palate process would.
fn hold_lock(dir: &Path, shared: bool) -> File {
    let f = File::create(dir.join("t.db.lock")).unwrap();
    if shared {
        f.try_lock_shared().unwrap();
    } else {
        f.try_lock().unwrap();
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_analyze_and_ingest_exit_4_while_another_process_holds_the_lock() {
    let sim = sim(1.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &sim.url, "");
    let data = demo_data();
    let data = data.to_str().unwrap();
    let (code, out, err) = palate(&["ingest", "--job", &job, data]).await;
    assert_eq!(code, 0, "{out}\n{err}");

    let run = hold_lock(dir.path(), false);
    for args in [
        vec!["run", "--job", &job],
        vec!["analyze", "mapo-galbi-house", "--job", &job],
        vec!["ingest", "--job", &job, data],
    ] {
        let (code, out, _) = palate(&args).await;
        assert_eq!(code, 4, "{args:?} while a run holds the lock: {out}");
        assert!(out.contains("t.db.lock"), "{out}");
    }
    drop(run);

    // Ingests may overlap each other, but not a run.
    let ingest = hold_lock(dir.path(), true);
    let (code, out, err) = palate(&["ingest", "--job", &job, data]).await;
    assert_eq!(code, 0, "an ingest beside an ingest: {out}\n{err}");
    let (code, _, _) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 4, "a run during an ingest");
    drop(ingest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_nothing_to_analyse_needs_no_llm_server() {
    let sim = sim(1.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &sim.url, "");
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    // The fleet is down tonight, and nothing changed.
    let dead = "http://127.0.0.1:9/v1";
    let (code, out, err) = palate(&["run", "--job", &job, "--endpoint", dead]).await;
    assert_eq!(code, 0, "a no-op run: {out}\n{err}");
    assert!(out.contains("0 done, 3 skipped"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_endpoint_answering_the_run_gives_up_marks_itself_failed_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let dead = "http://127.0.0.1:9/v1";
    let job = job(
        dir.path(),
        dead,
        "max_failed_in_a_row = 2\nrestaurant_concurrency = 1",
    );
    let t = Instant::now();
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    let (status, error): (String, String) = c
        .query_row("SELECT status, error FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("no LLM endpoint answered"), "{error}");
    assert!(
        count(&c, "SELECT count(*) FROM analysis_metrics") == 0,
        "no restaurant got as far as a request"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // The lock is free for the next run.
    drop(hold_lock(dir.path(), false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once_and_the_next_run_marks_the_run_failed() {
    // Every stream stalls for ten minutes: the first SIGTERM waits for requests in flight.
    let faults = FaultPlan {
        rates: vec![(Fault::Stall, 1.0)],
        stall_for: Duration::from_secs(600),
        ..FaultPlan::default()
    };
    let sim = sim(1.0, faults).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &sim.url, "");
    let job = job.replace("read_timeout_s = 2", "read_timeout_s = 900");
    let mut child = spawn(&["run", "--job", &job]);
    let t = Instant::now();
    while sim.requests() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no request reached the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child, "-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first waits for requests in flight"
    );
    signal(&child, "-TERM");
    let code = exit_within(
        &mut child,
        Duration::from_secs(5),
        "a second SIGTERM stops at once",
    )
    .await;
    assert_eq!(code, Some(130));
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'running'"),
        1
    );
    drop(c);
    // The next run (against a sound server) marks it failed and does the work.
    let sound = sim_fast().await;
    let (code, out, err) = palate(&["run", "--job", &job, "--endpoint", &sound.url]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    let abandoned = "SELECT count(*) FROM runs WHERE status = 'failed' AND error LIKE 'abandoned%'";
    assert_eq!(count(&c, abandoned), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_embedding_stops_the_run_within_a_chunk() {
    // 4,000 reviews take minutes to embed on two cores; the signal comes a second in.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    let rows: Vec<String> = (0..4000)
        .map(|i| {
            serde_json::json!({"restaurant_id": format!("r{}", i % 40), "review_id": format!("v{i}"),
                "text": format!("Review number {i}: the noodles were fine and the staff kind.")})
            .to_string()
        })
        .collect();
    std::fs::write(&input, rows.join("\n")).unwrap();
    let p = common::job_with(dir.path(), &["http://127.0.0.1:9/v1"], &[input], "sim", LLM);
    let job = p.to_str().unwrap();
    let mut child = spawn(&["run", "--job", job]);
    let c = Connection::open(dir.path().join("t.db"));
    let t = Instant::now();
    // Wait for the embedding to begin: reviews stored.
    loop {
        let stored = c
            .as_ref()
            .ok()
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM embeddings", [], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
            })
            .unwrap_or(0);
        if stored > 0 || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "-TERM");
    let code = exit_within(
        &mut child,
        Duration::from_secs(30),
        "SIGTERM ignored during embedding",
    )
    .await;
    assert_eq!(code, Some(130));
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'interrupted'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_stops_the_run_exits_5_and_the_next_run_resumes() {
    let sim = sim(20.0, FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // About 3 s: ingest and embedding fit, the three restaurants at 20 ms a step do not.
    let job = job(
        dir.path(),
        &sim.url,
        "deadline_min = 0.05\nrestaurant_concurrency = 1",
    );
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 5, "{out}\n{err}");
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'deadline'"),
        1
    );
    let without = std::fs::read_to_string(&job)
        .unwrap()
        .replace("deadline_min = 0.05\n", "");
    std::fs::write(&job, without).unwrap();
    let (code, out, err) = palate(&["run", "--job", &job]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&c, "SELECT count(*) FROM current_results"), 9);
}

async fn sim_fast() -> SimServer {
    sim(1.0, FaultPlan::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_nightly_export_is_a_night_without_work() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("export.csv");
    std::fs::write(&empty, "").unwrap();
    let p = common::job_with(dir.path(), &["http://127.0.0.1:9/v1"], &[empty], "sim", LLM);
    let (code, out, err) = palate(&["run", "--job", p.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_ingest_stops_at_the_next_row_and_keeps_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    let total = 400_000;
    let rows: Vec<String> = (0..total)
        .map(|i| format!(r#"{{"restaurant_id":"r{}","review_id":"v{i}","text":"Review {i}: fine noodles."}}"#, i % 500))
        .collect();
    std::fs::write(&input, rows.join("\n")).unwrap();
    let p = common::job_with(dir.path(), &["http://127.0.0.1:9/v1"], &[input], "sim", LLM);
    let mut child = spawn(&["run", "--job", p.to_str().unwrap()]);
    let db = dir.path().join("t.db");
    let stored = |db: &Path| {
        Connection::open(db)
            .and_then(|c| c.query_row("SELECT count(*) FROM reviews", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    let t = Instant::now();
    while stored(&db) == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "ingest never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "-TERM");
    let code = exit_within(
        &mut child,
        Duration::from_secs(10),
        "SIGTERM ignored during ingest",
    )
    .await;
    assert_eq!(code, Some(130));
    let n = stored(&db);
    assert!(
        n > 0 && n < total,
        "stopped part-way: {n} of {total} stored"
    );
}
