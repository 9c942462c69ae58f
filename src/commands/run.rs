//! `palate run` and `palate analyze`: a run recorded from its start, under the database lock,
//! stopped by signals or the job's deadline, and recorded as it ended.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::lock::{db_lock, locked_out, open_exclusive, Lock};
use super::setup::{ingest_inputs, pipeline, Interrupted};
use crate::cli::{AnalyzeArgs, RunArgs};
use crate::config::Config;
use crate::domain::{exit, millis, ResultStatus, RunStatus};
use crate::metrics::RunSummary;
use crate::output::{self, Progress};
use crate::pipeline::{restaurants, Pipeline};
use crate::store::{RestaurantRow, RunStart, Store, StoreError};

fn run_start(cfg: &Config, command: &'static str) -> RunStart {
    RunStart {
        job_name: cfg.job.name.clone(),
        command,
        model: cfg.llm.model.clone(),
        config_json: cfg.record(),
    }
}

/// Records how a run that ended early ended: interrupted or at its deadline before the
/// analysis began, or failed with its error.
async fn settle(
    store: &Store,
    run_id: i64,
    stops: &Stops,
    result: anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    match result {
        Err(e) if e.is::<Interrupted>() => {
            let status = stops.status(&RunSummary::default());
            store
                .finish_run(run_id, status, RunSummary::default())
                .await?;
            output::line(&format!(
                "{status} before the analysis began; the next run resumes"
            ));
            Ok(status.exit_code())
        }
        Err(e) => {
            if let Err(db) = store
                .fail_run(run_id, crate::domain::error_chain(e.as_ref()))
                .await
            {
                tracing::error!(error = %db, run_id, "cannot mark the run failed");
            }
            Err(e)
        }
        ok => ok,
    }
}

pub async fn run(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let Some(_lock) = db_lock(&cfg.job.database, Lock::Exclusive)? else {
        return Ok(locked_out(&cfg));
    };
    let wall = Instant::now();
    let cancel = with_deadline(&cfg, cancel);
    let store = open_exclusive(&cfg).await?;
    let run_id = store.start_run(run_start(&cfg, "run")).await?;
    let result = run_recorded(args, cfg, store.clone(), run_id, &cancel, wall).await;
    settle(&store, run_id, &cancel, result).await
}

async fn run_recorded(
    args: &RunArgs,
    cfg: Config,
    store: Store,
    run_id: i64,
    cancel: &Stops,
    wall: Instant,
) -> anyhow::Result<u8> {
    let (reports, input_errors) = ingest_inputs(&store, &cfg, &cancel.any).await;
    reports.iter().for_each(output::ingest_report);
    input_errors.iter().for_each(|e| output::error(e));
    if cancel.any.is_cancelled() {
        return Err(Interrupted.into());
    }
    let p = pipeline(cfg, store.clone(), None, &cancel.any).await?;
    deliver_pending(&p).await?; // what an earlier run could not deliver goes first
    let total = store.restaurant_count().await?;
    let shard = p.cfg.job.shard;
    let list = restaurants(store.clone()).try_filter(move |r| {
        std::future::ready(shard.is_none_or(|s| s.contains(&r.restaurant_id)))
    });
    let (status, summary) = analyse(&p, run_id, list, total, args.force, cancel, wall).await?;
    output::summary(&summary);
    let undelivered = deliver_pending(&p).await?;
    let alerted = alerts(&p, run_id, &summary).await?;
    // A file that could not be read, or results the app's database has not received, are
    // failures the run status (about analyses) does not show.
    Ok(match status {
        RunStatus::Completed | RunStatus::CompletedWithFailures if alerted => exit::ALERT,
        RunStatus::Completed if !input_errors.is_empty() || undelivered > 0 => exit::PARTIAL,
        s => s.exit_code(),
    })
}

/// The `[alerts]` thresholds the run crossed, each printed and logged; whether there were any.
/// The summary is the run's own; only the GPU's peak memory is read back, from its samples.
async fn alerts(p: &Pipeline, run_id: i64, summary: &RunSummary) -> anyhow::Result<bool> {
    let alerts = p.cfg.alerts;
    if alerts == Default::default() {
        return Ok(false);
    }
    let gpu = match alerts.max_gpu_memory_pct {
        Some(_) => {
            (p.store)
                .with_db(move |db| crate::report::run_gpu(db, run_id))
                .await??
        }
        None => None,
    };
    let crossed = alerts.check(summary, gpu.map(|g| g.memory_peak_pct));
    for c in &crossed {
        tracing::warn!(
            threshold = c.threshold,
            limit = c.limit,
            value = c.value,
            "{c}"
        );
        output::alert(c);
    }
    Ok(!crossed.is_empty())
}

/// Delivers what is queued for the app's database, if the job has one; how many stay queued.
pub(super) async fn deliver_pending(p: &Pipeline) -> anyhow::Result<u64> {
    let Some(r) = p.sink.deliver_pending().await? else {
        return Ok(0);
    };
    if r.delivered > 0 || r.queued > 0 {
        output::line(&format!(
            "app database: {} restaurants delivered, {} still queued{}",
            r.delivered,
            r.queued,
            if r.queued > 0 {
                " (palate sync, or the next run, delivers them)"
            } else {
                ""
            }
        ));
    }
    Ok(r.queued)
}

/// What stops a run early: a signal (`signal`), or either a signal or the job's deadline
/// (`any`).
struct Stops {
    signal: CancellationToken,
    any: CancellationToken,
    deadline: Option<Instant>,
}

impl Stops {
    /// How a run ended, from what stopped it and what failed.
    fn status(&self, summary: &RunSummary) -> RunStatus {
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
        if summary.gave_up.is_some() {
            RunStatus::Failed
        } else if self.signal.is_cancelled() {
            RunStatus::Interrupted
        } else if past_deadline && self.any.is_cancelled() {
            RunStatus::Deadline
        } else {
            RunStatus::of(false, summary.restaurants_failed > 0)
        }
    }
}

/// `signal`, and a token also cancelled at the job's deadline.
fn with_deadline(cfg: &Config, signal: CancellationToken) -> Stops {
    let any = signal.child_token();
    let deadline = cfg.deadline().map(|d| Instant::now() + d);
    if let Some(d) = cfg.deadline() {
        let at_deadline = any.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            tracing::warn!(
                "the job's deadline passed: finishing restaurants in flight, then stopping"
            );
            at_deadline.cancel();
        });
    }
    Stops {
        signal,
        any,
        deadline,
    }
}

/// Analyses `list` under run `run_id` and records how the run ended. Its span is the root of
/// the run's trace (`[telemetry]`).
#[tracing::instrument(name = "run", skip_all, fields(run_id = run_id, job = %p.cfg.job.name, model = %p.cfg.llm.model))]
async fn analyse(
    p: &Arc<Pipeline>,
    run_id: i64,
    list: impl futures::Stream<Item = Result<RestaurantRow, StoreError>>,
    total: u64,
    force: bool,
    cancel: &Stops,
    wall: Instant,
) -> anyhow::Result<(RunStatus, RunSummary)> {
    let stop_scrape = CancellationToken::new();
    let scraper = p.cfg.metrics.interval().map(|every| {
        tokio::spawn(crate::metrics::scrape::run(
            Arc::new(p.store.clone()),
            run_id,
            p.cfg.llm.endpoints.clone(),
            every,
            p.cfg.metrics.nvml,
            stop_scrape.clone(),
        ))
    });
    let progress = Progress::new(total);
    let mut summary = p
        .analyse_all(run_id, list, force, cancel.any.clone(), |id, outcome| {
            progress.restaurant(id, outcome);
        })
        .await;
    progress.finish();
    stop_scrape.cancel();
    if let Some(s) = scraper {
        let samples = s.await.unwrap_or(0);
        tracing::info!(samples, "server metrics sampled");
    }
    summary.wall_ms = millis(wall.elapsed());
    let status = cancel.status(&summary);
    p.store.finish_run(run_id, status, summary.clone()).await?;
    if let Some(why) = &summary.gave_up {
        p.store.fail_run(run_id, why.clone()).await?;
    }
    Ok((status, summary))
}

pub async fn analyze(args: &AnalyzeArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let Some(_lock) = db_lock(&cfg.job.database, Lock::Exclusive)? else {
        return Ok(locked_out(&cfg));
    };
    let wall = Instant::now();
    let cancel = with_deadline(&cfg, cancel);
    let store = open_exclusive(&cfg).await?;
    let Some(row) = store.restaurant(args.restaurant_id.clone()).await? else {
        anyhow::bail!(
            "restaurant {:?} is not in {}: ingest its reviews first (palate ingest FILE)",
            args.restaurant_id,
            cfg.job.database.display()
        );
    };
    let run_id = store.start_run(run_start(&cfg, "analyze")).await?;
    let result = analyze_recorded(args, cfg, store.clone(), run_id, row, &cancel, wall).await;
    settle(&store, run_id, &cancel, result).await
}

async fn analyze_recorded(
    args: &AnalyzeArgs,
    cfg: Config,
    store: Store,
    run_id: i64,
    row: RestaurantRow,
    cancel: &Stops,
    wall: Instant,
) -> anyhow::Result<u8> {
    let p = pipeline(cfg, store.clone(), Some(&args.restaurant_id), &cancel.any).await?;
    let key = p.result_key(&row);
    let list = futures::stream::iter([Ok(row)]);
    let (status, summary) = analyse(&p, run_id, list, 1, args.force, cancel, wall).await?;
    let stored = store.results_for(key).await?;
    if args.json {
        output::results_json(&args.restaurant_id, &stored)?;
    } else {
        output::results_text(&args.restaurant_id, &stored);
    }
    output::summary(&summary);
    // A result left failed by an earlier run (and skipped now) still makes the answer partial.
    Ok(match status {
        RunStatus::Completed if stored.iter().any(|r| r.status != ResultStatus::Ok) => {
            exit::PARTIAL
        }
        s => s.exit_code(),
    })
}
