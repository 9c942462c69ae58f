//! The app-database sink (`[sink] kind = "mariadb"|"postgres"`) against real servers: a MariaDB
//! and a PostgreSQL of the test's own (`common::appdb`). One behavioural suite runs against each:
//! what the app's tables hold after a delivery, re-delivery, newer and older results, a failed
//! analysis, a database that is stopped or holds a lock, and errors that must not show the
//! password. An end-to-end test stops MariaDB in the middle of `palate run` and delivers the rest
//! with `palate sync`.
#![cfg(feature = "appdb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use common::appdb::app::{App, AppRow, AppSummary, Current};
use common::appdb::{AppServer, MariaDb, Postgres, MARIADB_PASSWORD};
use palate::domain::{ErrorClass, Failure, Kind, ResultKey, Secret};
use palate::metrics::{AnalysisMetrics, RequestMetrics, Sla};
use palate::sink::{SinkConfig, SinkKind};
use palate::store::{DeliveryReport, RestaurantResults, ResultRow, ResultSink, RunStart, Store};

/// The sink's timeout in the suite: what a stopped database may cost.
const TIMEOUT_S: u64 = 2;

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// SQLite's `current_results` for a restaurant, ordered by kind.
fn sqlite_current(db: &Path, restaurant_id: &str) -> Vec<Current> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare(
            "SELECT kind, result_json, model, prompt_version, input_hash, run_id, created_at
             FROM current_results WHERE restaurant_id = ?1 ORDER BY kind",
        )
        .unwrap();
    q.query_map([restaurant_id], |r| {
        Ok(Current {
            kind: r.get(0)?,
            result: serde_json::from_str(&r.get::<_, String>(1)?).unwrap(),
            model: r.get(2)?,
            prompt_version: r.get(3)?,
            input_hash: r.get(4)?,
            run_id: r.get(5)?,
            created_at: instant(&r.get::<_, String>(6)?),
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The outbox: (restaurant, attempts, last_error), by restaurant.
fn sqlite_deliveries(db: &Path) -> Vec<(String, i64, Option<String>)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare(
            "SELECT restaurant_id, attempts, last_error FROM deliveries ORDER BY restaurant_id",
        )
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The app's results for `restaurant_id` are exactly SQLite's current ones.
async fn assert_app_matches(app: &App, db: &Path, restaurant_id: &str) {
    let in_app: Vec<Current> = (app.results(restaurant_id).await)
        .into_iter()
        .map(|r| r.current)
        .collect();
    let current = sqlite_current(db, restaurant_id);
    assert!(!current.is_empty(), "{restaurant_id}: no current result");
    assert_eq!(in_app, current, "{restaurant_id}: app ≠ current_results");
}

// ---------------------------------------------------------------------------------------------
// Results built by hand, as the pipeline builds them (`pipeline::analysis::restaurant_results`)

/// A valid result of `kind`; `variant` tells one delivery's text from another's. Korean and a
/// four-byte character check the app's tables keep UTF-8 whole.
fn valid(kind: Kind, variant: &str) -> Value {
    match kind {
        Kind::Sentiment => json!({
            "reviews": [
                {"review_id": "r1", "label": "positive", "in_sample": true},
                {"review_id": "r2", "label": if variant == "v1" { "mixed" } else { "negative" },
                 "in_sample": true}
            ],
            "aggregate": {"sample_size": 2, "reviews_total": 2, "positive": 0.5, "negative": 0.0,
                "mixed": 0.5, "neutral": 0.0, "positive_ci95": [0.5, 0.5],
                "negative_ci95": [0.0, 0.0], "mean_score": 0.5, "mean_score_ci95": [0.5, 0.5]}
        }),
        Kind::Summary => json!({
            "summary": format!("{variant}: 국물이 진하고 면이 쫄깃해요 🍜, the staff are quick."),
            "aspects": {
                "food": {"sentiment": "positive", "summary": "Rich broth, chewy noodles."},
                "wait": {"sentiment": "mixed", "summary": "A queue at lunch."}
            }
        }),
        Kind::Strengths => json!({
            "strengths": [{
                "title": format!("Broth ({variant})"),
                "detail": "Reviewers praise the deep, rich broth.",
                "evidence": [{"review_id": "r1", "quote": "국물이 진하고"}]
            }]
        }),
    }
}

/// A restaurant's results under `input_hash`: every kind valid (`variant`) except `failed`, one
/// request per kind with TTFT 100, 200, 300 ms.
fn results(
    restaurant_id: &str,
    input_hash: &str,
    variant: &str,
    failed: &[Kind],
) -> Arc<RestaurantResults> {
    let key = ResultKey {
        restaurant_id: restaurant_id.into(),
        input_hash: input_hash.into(),
        prompt_version: "pv-test".into(),
        model: "sim".into(),
    };
    let mut out = RestaurantResults {
        key,
        rows: Vec::new(),
        analyses: Vec::new(),
        requests: Vec::new(),
        sla: Sla::default(),
    };
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let outcome = if failed.contains(&kind) {
            Err(Failure {
                class: ErrorClass::InvalidOutput,
                group: "invalid output: quote not in the cited review".into(),
                message: "invalid output: quote not in the cited review (test)".into(),
            })
        } else {
            Ok(valid(kind, variant))
        };
        out.analyses.push(AnalysisMetrics {
            restaurant_id: restaurant_id.into(),
            kind,
            failure: outcome.as_ref().err().cloned(),
            attempts: 1,
            processing_ms: 1000.0,
            prompt_tokens: 400,
            completion_tokens: 50,
            reviews_total: 5,
            reviews_selected: 3,
            est_tokens_all_reviews: 700,
            est_tokens_selected: 400,
            output_chars: outcome
                .as_ref()
                .map_or(0, |v| v.to_string().chars().count()),
            empty: false,
        });
        out.requests.push(RequestMetrics {
            restaurant_id: restaurant_id.into(),
            kind,
            attempt: 1,
            retry: 0,
            priority: None,
            est_prefill_tokens: Some(400),
            request_id: Some(format!("req-{restaurant_id}-{i}")),
            endpoint: "http://127.0.0.1:9/v1".into(),
            model: "sim".into(),
            ok: outcome.is_ok(),
            error_class: outcome.as_ref().err().map(|f| f.class),
            error: outcome.as_ref().err().map(|f| f.message.clone()),
            finish_reason: Some("stop".into()),
            queue_ms: 1.0,
            ttft_ms: Some(100.0 * (i + 1) as f64),
            e2e_ms: 1000.0,
            itl_mean_ms: Some(10.0),
            itl_p95_ms: Some(12.0),
            prompt_tokens: Some(400),
            completion_tokens: Some(50),
            cached_tokens: Some(0),
            server_queue_ms: None,
            server_prompt_ms: None,
            server_decode_ms: None,
            started_at: palate::domain::now(),
        });
        out.rows.push(ResultRow {
            kind,
            outcome,
            attempts: 1,
            answered_by: Some("sim".into()),
        });
    }
    Arc::new(out)
}

/// A work database with a run recorded in it.
struct Work {
    db: PathBuf,
    store: Store,
}

impl Work {
    fn open(dir: &Path, name: &str) -> Self {
        let db = dir.join(name);
        Self {
            store: Store::open(&db).unwrap(),
            db,
        }
    }

    async fn run(&self) -> i64 {
        (self.store)
            .start_run(RunStart {
                job_name: "sink-test".into(),
                command: "run",
                model: "sim".into(),
                config_json: "{}".into(),
            })
            .await
            .unwrap()
    }
}

fn sink_config(kind: SinkKind, url: &str) -> SinkConfig {
    SinkConfig {
        kind,
        url: Some(Secret::new(url)),
        timeout_s: Some(TIMEOUT_S),
    }
}

async fn open(kind: SinkKind, url: &str, store: &Store) -> Arc<dyn ResultSink> {
    palate::sink::open(&sink_config(kind, url), store.clone())
        .await
        .unwrap()
}

/// A moment later than the last stored result (timestamps have milliseconds).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn suite(mut server: AppServer) {
    let t = Instant::now();
    let kind = server.kind();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let work = Work::open(dir.path(), "work.db");
    let sink = open(kind, &url, &work.store).await;

    first_delivery(&work, &*sink, kind, &url).await;
    let app = App::connect(kind, &url).await;
    redelivery_changes_nothing(&work, &*sink, &app).await;
    newer_replaces_older_and_a_failure_keeps_the_valid_one(&work, &*sink, &app).await;
    an_older_delivery_arriving_later_does_not_overwrite(&work, &*sink, &app, kind, &url, &dir)
        .await;
    an_outage_costs_one_timeout_and_loses_nothing(&mut server, &work, &*sink, &app).await;
    a_held_lock_costs_one_timeout(&work, &*sink, &app).await;
    errors_never_show_the_password(&server, &dir).await;

    // Every restaurant the work database delivered, exactly as current_results has it; the
    // migrations ran once, whichever worker ran them.
    for id in ["r-1", "r-3", "r-4", "r-5"] {
        assert_app_matches(&app, &work.db, id).await;
    }
    assert_eq!(app.migrations().await, vec![(1, true)]);
    assert_eq!(work.store.pending_delivery_count().await.unwrap(), 0);
    println!("{kind:?} suite: {:.1} s", t.elapsed().as_secs_f64());
}

async fn first_delivery(work: &Work, sink: &dyn ResultSink, kind: SinkKind, url: &str) {
    let run = work.run().await;
    sink.put_restaurant(run, results("r-1", "h1", "v1", &[]))
        .await
        .unwrap();
    assert_eq!(work.store.pending_delivery_count().await.unwrap(), 0);
    let app = App::connect(kind, url).await;
    assert_eq!(app.migrations().await, vec![(1, true)]);
    assert_app_matches(&app, &work.db, "r-1").await;
    let rows = app.results("r-1").await;
    let sent: Vec<Value> = ["sentiment", "strengths", "summary"]
        .iter()
        .map(|k| valid(Kind::parse(k).unwrap(), "v1"))
        .collect();
    let got: Vec<Value> = rows.iter().map(|r| r.current.result.clone()).collect();
    assert_eq!(got, sent, "the JSON the app reads is the JSON validated");
    assert!(rows.iter().all(|r| r.current.run_id == run));
    let s = app.summary("r-1").await.expect("a summary row");
    assert_eq!((s.run_id, s.analyses_ok, s.analyses_failed), (run, 3, 0));
    assert_eq!((s.reviews_total, s.reviews_selected), (5, 3));
    assert_eq!((s.requests, s.requests_failed), (3, 0));
    assert_eq!((s.prompt_tokens, s.completion_tokens), (1200, 150));
    assert_eq!((s.ttft_p50_ms, s.ttft_p95_ms), (Some(200.0), Some(300.0)));
    assert_eq!(s.goodput, Some(1.0));
    let newest = rows.iter().map(|r| r.current.created_at).max().unwrap();
    assert_eq!(s.analysed_at, newest);
    assert_eq!(app.restaurants().await, vec!["r-1".to_string()]);
}

/// The same restaurant queued again (as after a crash between the app's commit and the
/// outbox's delete) is delivered again and changes nothing but `delivered_at`.
async fn redelivery_changes_nothing(work: &Work, sink: &dyn ResultSink, app: &App) {
    let before = app.results("r-1").await;
    let summary_before = app.summary("r-1").await.unwrap();
    let run: i64 = before[0].current.run_id;
    tick().await;
    let c = rusqlite::Connection::open(&work.db).unwrap();
    c.execute(
        "INSERT INTO deliveries (restaurant_id, run_id, queued_at) VALUES ('r-1', ?1, ?2)",
        rusqlite::params![run, palate::domain::now()],
    )
    .unwrap();
    let r = sink.deliver_pending().await.unwrap();
    assert_eq!(
        r,
        Some(DeliveryReport {
            delivered: 1,
            queued: 0
        })
    );
    let after = app.results("r-1").await;
    let strip = |rows: &[AppRow]| rows.iter().map(|r| r.current.clone()).collect::<Vec<_>>();
    assert_eq!(strip(&after), strip(&before));
    assert!(after
        .iter()
        .zip(&before)
        .all(|(a, b)| a.delivered_at > b.delivered_at));
    let summary_after = app.summary("r-1").await.unwrap();
    assert_eq!(
        AppSummary {
            delivered_at: summary_before.delivered_at,
            ..summary_after
        },
        summary_before
    );
    assert_eq!(app.restaurants().await.len(), 1);
}

async fn newer_replaces_older_and_a_failure_keeps_the_valid_one(
    work: &Work,
    sink: &dyn ResultSink,
    app: &App,
) {
    // A later run on changed reviews: every result is replaced.
    tick().await;
    let run2 = work.run().await;
    sink.put_restaurant(run2, results("r-1", "h2", "v2", &[]))
        .await
        .unwrap();
    assert_app_matches(app, &work.db, "r-1").await;
    let rows = app.results("r-1").await;
    assert!(rows
        .iter()
        .all(|r| r.current.run_id == run2 && r.current.input_hash == "h2"));
    assert_eq!(app.summary("r-1").await.unwrap().run_id, run2);

    // Another, whose summary fails: the app keeps the valid summary of run 2, takes the rest.
    tick().await;
    let run3 = work.run().await;
    sink.put_restaurant(run3, results("r-1", "h3", "v3", &[Kind::Summary]))
        .await
        .unwrap();
    assert_eq!(work.store.pending_delivery_count().await.unwrap(), 0);
    assert_app_matches(app, &work.db, "r-1").await;
    for r in app.results("r-1").await {
        let (hash, variant, run) = match r.current.kind.as_str() {
            "summary" => ("h2", "v2", run2),
            _ => ("h3", "v3", run3),
        };
        let kind = Kind::parse(&r.current.kind).unwrap();
        assert_eq!(
            (
                r.current.input_hash.as_str(),
                &r.current.result,
                r.current.run_id
            ),
            (hash, &valid(kind, variant), run),
            "{kind:?}"
        );
    }
    let s = app.summary("r-1").await.unwrap();
    assert_eq!(
        (
            s.run_id,
            s.analyses_ok,
            s.analyses_failed,
            s.requests_failed
        ),
        (run3, 2, 1, 1)
    );
    assert!((s.goodput.unwrap() - 2.0 / 3.0).abs() < 1e-9);
}

/// Two workers deliver the same restaurant: the one analysed earlier arrives last and is kept
/// out; the app holds the newer results and summary.
async fn an_older_delivery_arriving_later_does_not_overwrite(
    work: &Work,
    sink: &dyn ResultSink,
    app: &App,
    kind: SinkKind,
    url: &str,
    dir: &tempfile::TempDir,
) {
    let other = Work::open(dir.path(), "other-worker.db");
    let old_run = other.run().await;
    (other.store)
        .put_restaurant_for_delivery(old_run, results("r-2", "h-old", "old", &[]))
        .await
        .unwrap();
    tick().await;
    let run = work.run().await;
    sink.put_restaurant(run, results("r-2", "h-new", "new", &[]))
        .await
        .unwrap();
    let newer = app.results("r-2").await;
    let newer_summary = app.summary("r-2").await.unwrap();
    assert_app_matches(app, &work.db, "r-2").await;

    let late = open(kind, url, &other.store).await;
    let r = late.deliver_pending().await.unwrap();
    assert_eq!(
        r,
        Some(DeliveryReport {
            delivered: 1,
            queued: 0
        }),
        "the app's database took the late delivery (and kept what is newer)"
    );
    let strip = |rows: &[AppRow]| rows.iter().map(|r| r.current.clone()).collect::<Vec<_>>();
    assert_eq!(strip(&app.results("r-2").await), strip(&newer));
    assert_app_matches(app, &work.db, "r-2").await;
    let s = app.summary("r-2").await.unwrap();
    assert_eq!(
        AppSummary {
            delivered_at: newer_summary.delivered_at,
            ..s
        },
        newer_summary
    );
}

/// The database stopped: each restaurant is stored and queued, `put_restaurant` succeeds, and
/// only the first costs a timeout; started again, everything queued is delivered.
async fn an_outage_costs_one_timeout_and_loses_nothing(
    server: &mut AppServer,
    work: &Work,
    sink: &dyn ResultSink,
    app: &App,
) {
    server.stop();
    tick().await;
    let run = work.run().await;
    let ids = ["r-3", "r-4", "r-5"];
    let t = Instant::now();
    for id in ids {
        sink.put_restaurant(run, results(id, "h1", "v1", &[]))
            .await
            .unwrap();
    }
    let took = t.elapsed();
    println!(
        "{:?}: 3 restaurants with the database stopped: {took:.1?}",
        server.kind()
    );
    let bound = Duration::from_secs(2 * TIMEOUT_S + 3);
    assert!(
        took < bound,
        "3 restaurants with the database down took {took:?}: more than one timeout each"
    );
    let queued = sqlite_deliveries(&work.db);
    let queued_ids: Vec<&str> = queued.iter().map(|q| q.0.as_str()).collect();
    assert_eq!(queued_ids, ids, "every restaurant stays queued");
    // The first was tried and keeps why it failed; after it the sink pauses, so the next two
    // were queued without a try (attempts 0, no error): one timeout in all.
    let (_, attempts, error) = &queued[0];
    assert_eq!(*attempts, 1);
    let error = error.as_deref().expect("the failed delivery's reason");
    assert!(
        error.contains("app database") && error.contains(&format!(":{}", server.port())),
        "{error}"
    );
    assert!(!error.contains(MARIADB_PASSWORD), "{error}");
    for (id, attempts, error) in &queued[1..] {
        assert_eq!((*attempts, error.as_deref()), (0, None), "{id}");
    }
    for id in ids {
        assert_eq!(sqlite_current(&work.db, id).len(), 3, "{id} is stored");
    }

    server.start_again();
    let r = sink.deliver_pending().await.unwrap();
    assert_eq!(
        r,
        Some(DeliveryReport {
            delivered: 3,
            queued: 0
        })
    );
    assert!(sqlite_deliveries(&work.db).is_empty());
    for id in ids {
        assert_app_matches(app, &work.db, id).await;
        assert_eq!(app.summary(id).await.unwrap().run_id, run);
    }
}

/// The app holds a lock on the restaurant's rows (a long transaction of its own): the delivery
/// gives up after the timeout, the restaurant stays queued, and goes once the lock is released.
async fn a_held_lock_costs_one_timeout(work: &Work, sink: &dyn ResultSink, app: &App) {
    let lock = app.lock_results("r-1").await;
    tick().await;
    let run = work.run().await;
    let t = Instant::now();
    let put = sink.put_restaurant(run, results("r-1", "h4", "v4", &[]));
    tokio::time::timeout(Duration::from_secs(30), put)
        .await
        .expect("a delivery waiting on a lock gives up at the sink's timeout")
        .unwrap();
    let took = t.elapsed();
    println!("a delivery waiting on a lock: {took:.1?}");
    assert!(
        took < Duration::from_secs(TIMEOUT_S + 3),
        "a locked row held the run for {took:?}"
    );
    let queued = sqlite_deliveries(&work.db);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0, "r-1");
    assert!(queued[0].2.is_some());
    lock.release().await;
    let r = sink.deliver_pending().await.unwrap();
    assert_eq!(
        r,
        Some(DeliveryReport {
            delivered: 1,
            queued: 0
        })
    );
    assert_app_matches(app, &work.db, "r-1").await;
    assert!(app
        .results("r-1")
        .await
        .iter()
        .all(|r| r.current.input_hash == "h4"));
}

/// A refused login and a URL that does not parse: neither error shows the password, in the
/// error itself or in the outbox row that keeps it.
async fn errors_never_show_the_password(server: &AppServer, dir: &tempfile::TempDir) {
    const WRONG: &str = "Wr0ng-p4ssw0rd";
    let kind = server.kind();
    let port = server.port();
    let (scheme, path) = match kind {
        SinkKind::Mariadb => ("mysql", "palate"),
        _ => ("postgres", "postgres"),
    };
    // PostgreSQL trusts local connections whatever the password: a user it does not know.
    let user = if kind == SinkKind::Mariadb {
        "palate"
    } else {
        "nobody"
    };
    let refused = format!("{scheme}://{user}:{WRONG}@127.0.0.1:{port}/{path}");
    let work = Work::open(dir.path(), "refused.db");
    let sink = open(kind, &refused, &work.store).await;
    let run = work.run().await;
    let t = Instant::now();
    sink.put_restaurant(run, results("r-9", "h1", "v1", &[]))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(TIMEOUT_S + 3));
    let queued = sqlite_deliveries(&work.db);
    assert_eq!(queued.len(), 1);
    let error = queued[0].2.clone().expect("the refusal's reason");
    let denied = match kind {
        SinkKind::Mariadb => "Access denied",
        _ => "nobody",
    };
    assert!(error.contains(denied), "{error}");
    assert!(
        error.contains(&format!("{scheme}://***@127.0.0.1:{port}/{path}")),
        "{error}"
    );
    assert!(!error.contains(WRONG), "{error}");

    let unparsable = format!("{scheme}://{user}:{WRONG}@127.0.0.1:no-port/{path}");
    let cfg = sink_config(kind, &unparsable);
    assert!(!format!("{cfg:?}").contains(WRONG));
    let Err(e) = palate::sink::open(&cfg, work.store.clone()).await else {
        panic!("a URL without a port number opened");
    };
    let shown = format!("{e} / {e:?}");
    assert!(shown.contains("***@127.0.0.1"), "{shown}");
    assert!(!shown.contains(WRONG), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_holds_the_current_results_through_redelivery_late_and_failed_results_and_an_outage(
) {
    let Some(db) = MariaDb::start() else { return };
    suite(AppServer::My(db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_the_current_results_through_redelivery_late_and_failed_results_and_an_outage(
) {
    let Some(db) = Postgres::start() else { return };
    suite(AppServer::Pg(db)).await;
}

// ---------------------------------------------------------------------------------------------
// End to end: the palate binary, the simulated LLM server, the real embedding model, MariaDB

/// Simulated engine step: a restaurant's analysis takes seconds, far longer than stopping
/// MariaDB takes, so the database goes down between the first delivery and the second.
const STEP_MS: f64 = 20.0;

const LLM: &str = "read_timeout_s = 2
request_timeout_s = 30
attempts = 2
backoff_base_s = 0.05
backoff_max_s = 0.2
eject_s = 0.5";

/// A job over the demo data (3 restaurants), one restaurant at a time, delivering to MariaDB;
/// the URL comes from `PALATE_SINK_URL`.
fn e2e_job(dir: &Path, endpoint: &str) -> String {
    let data = common::root().join("data/demo.jsonl");
    let p = common::job_with(dir, &[endpoint], &[data], "sim", LLM);
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "restaurant_concurrency = 3\n",
        "restaurant_concurrency = 1\n",
    ) + "\n[plan]\nlanguage = \"english\"\n"
        + &format!("\n[sink]\nkind = \"mariadb\"\ntimeout_s = {TIMEOUT_S}\n");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn palate_cmd(args: &[&str], sink_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_palate"));
    c.args(args)
        .current_dir(common::root())
        .env("RUST_LOG", "palate=info")
        .env("PALATE_SINK_URL", sink_url)
        .stdin(Stdio::null());
    c
}

/// Runs palate to the end; (exit code, stdout, stderr).
async fn palate_out(args: &[&str], sink_url: &str) -> (i32, String, String) {
    let mut c = palate_cmd(args, sink_url);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restaurant_ids(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare("SELECT restaurant_id FROM restaurants ORDER BY restaurant_id")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_stopped_mid_run_exits_3_with_the_rest_queued_and_palate_sync_delivers_it() {
    let Some(mut db) = MariaDb::start() else {
        return;
    };
    let sim = common::sim(STEP_MS, palate::sim::FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = e2e_job(dir.path(), &sim.url);
    let work = dir.path().join("t.db");
    let url = db.url();
    let (out_path, err_path) = (dir.path().join("run.out"), dir.path().join("run.err"));
    let mut child = palate_cmd(&["run", "--job", &job], &url)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    };

    // The first restaurant delivered: stop the database while the second is being analysed.
    let t = Instant::now();
    let count = "SELECT count(*) FROM palate.palate_restaurants";
    loop {
        let n = tokio::task::block_in_place(|| db.try_sql(count));
        if n.is_some_and(|n| n.trim() != "0") {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a delivery:\n{}",
            logs()
        );
        assert!(t.elapsed() < Duration::from_secs(300), "no delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = t.elapsed();
    tokio::task::block_in_place(|| db.stop());
    let stopped = t.elapsed();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the run did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ended = t.elapsed();
    let run_logs = logs();
    println!(
        "e2e: first delivery at {first:.1?}, MariaDB stopped at {stopped:.1?}, run ended at {ended:.1?}"
    );
    assert_eq!(code, Some(3), "{run_logs}");
    assert!(run_logs.contains("still queued"), "{run_logs}");

    // Every analysis is in SQLite; the two restaurants after the stop are queued, with why.
    let ids = restaurant_ids(&work);
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert_eq!(sqlite_current(&work, id).len(), 3, "{id}\n{run_logs}");
    }
    let queued = sqlite_deliveries(&work);
    assert_eq!(
        queued.len(),
        2,
        "one restaurant delivered before the stop, two after it: {queued:?}\n{run_logs}"
    );
    assert!(queued.iter().any(|q| q.2.is_some()), "{queued:?}");
    for (_, _, e) in &queued {
        assert!(!e.as_deref().unwrap_or("").contains(MARIADB_PASSWORD));
    }

    // Started again: what the run delivered is there, the rest is not yet.
    tokio::task::block_in_place(|| db.start_again());
    let app = App::connect(SinkKind::Mariadb, &url).await;
    let delivered = app.restaurants().await;
    assert_eq!(delivered.len(), 1);
    assert!(!queued.iter().any(|q| q.0 == delivered[0]));

    let (code, out, err) = palate_out(&["sync", "--job", &job], &url).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("app database: 2 restaurants delivered, 0 still queued"),
        "{out}"
    );
    assert!(sqlite_deliveries(&work).is_empty());
    assert_eq!(app.restaurants().await, ids);
    let run_id: i64 = rusqlite::Connection::open(&work)
        .unwrap()
        .query_row("SELECT max(run_id) FROM runs", [], |r| r.get(0))
        .unwrap();
    let mut before = Vec::new();
    for id in &ids {
        assert_app_matches(&app, &work, id).await;
        let s = app.summary(id).await.unwrap();
        assert_eq!((s.run_id, s.analyses_ok + s.analyses_failed), (run_id, 3));
        before.push((app.results(id).await, s));
    }

    // A second run has nothing to analyse and nothing to deliver.
    let (code, out2, err2) = palate_out(&["run", "--job", &job], &url).await;
    assert_eq!(code, 0, "{out2}\n{err2}");
    assert!(!out2.contains("app database:"), "{out2}");
    assert!(sqlite_deliveries(&work).is_empty());
    for (id, b) in ids.iter().zip(&before) {
        let after = (app.results(id).await, app.summary(id).await.unwrap());
        assert_eq!(&after, b, "{id} was written again");
    }

    // The password is in no output and not in the work database.
    let config: String = rusqlite::Connection::open(&work)
        .unwrap()
        .query_row("SELECT group_concat(config_json) FROM runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    for text in [&run_logs, &out, &err, &out2, &err2, &config] {
        assert!(!text.contains(MARIADB_PASSWORD), "{text}");
    }
}
