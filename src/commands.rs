//! commands: what each CLI subcommand does, wiring the stages together. Printing is left to
//! [`crate::output`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{AnalyzeArgs, EvalArgs, IngestArgs, ReportArgs, RunArgs, SchedulingArgs};
use crate::config::Config;
use crate::domain::{exit, millis, ResultStatus, RunStatus};
use crate::embed::{embed_missing, Embedder, FastEmbedder};
use crate::eval::EvalOptions;
use crate::index::EmbeddedIndex;
use crate::infer::OpenAiClient;
use crate::ingest::{ingest_file, IngestError, IngestReport};
use crate::metrics::RunSummary;
use crate::output::{self, Progress};
use crate::pipeline::{restaurants, Pipeline};
use crate::plan::{Planner, Prompts, TokenCounter};
use crate::store::{Db, RestaurantRow, RunStart, Store, StoreError};

/// Texts embedded per round trip to the embedding thread and the store.
const EMBED_CHUNK: usize = 256;

pub fn ingest(args: &IngestArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let mut db = Db::open(&cfg.job.database)?;
    let opts = cfg.ingest_options();
    let mut code = exit::OK;
    for f in &args.files {
        match ingest_file(&mut db, f, &opts) {
            Ok(r) => output::ingest_report(&r),
            Err(e) => {
                output::error(&e);
                code = exit::ERROR;
            }
        }
    }
    Ok(code)
}

/// Holds `<database>.lock` for the life of a run so two runs never overlap.
fn run_lock(db: &Path) -> anyhow::Result<Option<File>> {
    let path = PathBuf::from(format!("{}.lock", db.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f =
        File::create(&path).with_context(|| format!("creating lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

async fn ingest_inputs(store: &Store, cfg: &Config) -> (Vec<IngestReport>, Vec<IngestError>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for f in cfg.job.inputs.clone() {
        let o = cfg.ingest_options();
        match store.with_db(move |db| ingest_file(db, &f, &o)).await {
            Ok(Ok(r)) => ok.push(r),
            Ok(Err(e)) => bad.push(e),
            Err(e) => bad.push(e.into()),
        }
    }
    (ok, bad)
}

/// Loads everything a pipeline needs: prompts, embedder (and embeds what is missing), LLM client.
pub async fn pipeline(
    cfg: Config,
    store: Store,
    only: Option<&str>,
) -> anyhow::Result<Arc<Pipeline>> {
    let planner = Planner {
        prompts: Prompts::load(&cfg.llm.prompts_dir)?,
        counter: TokenCounter::load(cfg.plan.tokenizer.as_deref())?,
        limits: cfg.plan.limits(),
        max: cfg.llm.max_tokens(),
        language: cfg.plan.language,
    };
    let embedder = FastEmbedder::load(&cfg.embed).await?;
    let t = Instant::now();
    let n = embed_missing(&store, &embedder, only, EMBED_CHUNK).await?;
    if n > 0 {
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(
            embedded = n,
            secs,
            per_s = n as f64 / secs,
            "embedded new reviews"
        );
    }
    let llm = OpenAiClient::new(&cfg.llm)?;
    llm.warm_up().await?;
    let embed_model_id = embedder.model_id().to_string();
    let index = Arc::new(EmbeddedIndex::new(store.clone(), &embed_model_id));
    Ok(Arc::new(Pipeline {
        cfg,
        sink: Arc::new(store.clone()),
        store,
        index,
        llm: Arc::new(llm),
        planner,
        embed_model_id,
    }))
}

pub async fn run(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let Some(_lock) = run_lock(&cfg.job.database)? else {
        output::line(&format!(
            "another palate run holds {}.lock; not starting",
            cfg.job.database.display()
        ));
        return Ok(exit::LOCKED);
    };
    let wall = Instant::now();
    let store = Store::open(&cfg.job.database)?;
    let (reports, input_errors) = ingest_inputs(&store, &cfg).await;
    reports.iter().for_each(output::ingest_report);
    input_errors.iter().for_each(|e| output::error(e));
    let p = pipeline(cfg, store.clone(), None).await?;
    let total = store.restaurant_count().await?;
    let list = restaurants(store.clone());
    let (status, summary) = record_run(&p, "run", list, total, args.force, &cancel, wall).await?;
    output::summary(&summary);
    // A file that could not be read is a failure the run status (about analyses) does not show.
    Ok(match status {
        RunStatus::Completed if !input_errors.is_empty() => exit::PARTIAL,
        s => s.exit_code(),
    })
}

/// Records a run of `command` over `list`, analyses it, and records how it ended.
async fn record_run(
    p: &Arc<Pipeline>,
    command: &'static str,
    list: impl futures::Stream<Item = Result<RestaurantRow, StoreError>>,
    total: u64,
    force: bool,
    cancel: &CancellationToken,
    wall: Instant,
) -> anyhow::Result<(RunStatus, RunSummary)> {
    let start = RunStart {
        job_name: p.cfg.job.name.clone(),
        command,
        model: p.cfg.llm.model.clone(),
        config_json: p.cfg.record(),
    };
    let run_id = p.store.start_run(start).await?;
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
        .analyse_all(run_id, list, force, cancel.clone(), |id, outcome| {
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
    let status = RunStatus::of(cancel.is_cancelled(), summary.restaurants_failed > 0);
    p.store.finish_run(run_id, status, summary.clone()).await?;
    Ok((status, summary))
}

pub async fn analyze(args: &AnalyzeArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let wall = Instant::now();
    let store = Store::open(&cfg.job.database)?;
    let Some(row) = store.restaurant(args.restaurant_id.clone()).await? else {
        anyhow::bail!(
            "restaurant {:?} is not in {}: ingest its reviews first (palate ingest FILE)",
            args.restaurant_id,
            cfg.job.database.display()
        );
    };
    let p = pipeline(cfg, store.clone(), Some(&args.restaurant_id)).await?;
    let key = p.result_key(&row);
    let list = futures::stream::iter([Ok(row)]);
    let (status, summary) = record_run(&p, "analyze", list, 1, args.force, &cancel, wall).await?;
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

pub async fn eval(args: &EvalArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let store = Store::open(&cfg.job.database)?;
    let (reports, input_errors) = ingest_inputs(&store, &cfg).await;
    reports.iter().for_each(output::ingest_report);
    input_errors.iter().for_each(|e| output::error(e));
    let concurrency = cfg.job.restaurant_concurrency;
    let p = pipeline(cfg, store.clone(), None).await?;
    let restaurants = store
        .restaurants_after(String::new(), usize::MAX >> 1)
        .await?;
    let opts = EvalOptions {
        restaurants: args.restaurants,
        consistency_restaurants: args.consistency,
        repeats: args.repeats,
        caps: args.caps.clone(),
        draws: args.draws,
        concurrency,
    };
    let report = crate::eval::evaluate(&p, restaurants, &opts).await?;
    output::line(&report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

pub fn bench_scheduling(a: &SchedulingArgs) -> anyhow::Result<u8> {
    let engine = crate::sim::EngineConfig {
        latency: crate::sim::LatencyModel {
            step_ms: a.step_ms,
            prefill_token_ms: a.prefill_token_ms,
            seq_ms: a.seq_ms,
        },
        max_num_seqs: a.max_num_seqs,
        max_num_batched_tokens: a.max_num_batched_tokens,
        time_scale: a.time_scale,
        ..crate::sim::EngineConfig::default()
    };
    let w = crate::bench::Workload {
        restaurants: a.restaurants,
        reviews_per_restaurant: a.reviews,
        concurrency: a.concurrency,
        max_in_flight: a.max_in_flight,
        engine,
        reviews_file: a.reviews_file.clone(),
        prompts_dir: a.prompts_dir.clone(),
    };
    let t = Instant::now();
    let report = crate::bench::scheduling(w)?;
    output::scheduling_report(&report, t.elapsed().as_secs_f64());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

pub fn report(a: &ReportArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&a.job)?;
    let database = &cfg.job.database;
    anyhow::ensure!(
        database.exists(),
        "no database at {}: run palate first (or give --database)",
        database.display()
    );
    let db = Db::open(database)?;
    if let Some(path) = &a.results {
        use std::io::Write as _;
        let cannot = || format!("cannot write {}", path.display());
        let mut w = std::io::BufWriter::new(File::create(path).with_context(cannot)?);
        let (shown, total) =
            crate::report::results::write_page(&db, a.limit, &mut w).with_context(cannot)?;
        w.flush().with_context(cannot)?;
        output::line(&format!(
            "wrote {} ({shown} of {total} restaurants with results)",
            path.display()
        ));
    }
    if a.daily {
        output::line(&crate::report::daily_table(&db.daily(a.days)?));
        output::line(&crate::report::quality_table(&db.daily_quality(a.days)?));
        return Ok(exit::OK);
    }
    let Some(r) = crate::report::load(&db, a.run)? else {
        if a.results.is_some() && a.html.is_none() {
            return Ok(exit::OK);
        }
        anyhow::bail!(
            "{} has no run{}",
            database.display(),
            a.run.map(|r| format!(" {r}")).unwrap_or_default()
        );
    };
    output::line(&crate::report::table(&r));
    if let Some(path) = &a.html {
        std::fs::write(path, crate::report::html::page(&r))
            .with_context(|| format!("cannot write {}", path.display()))?;
        output::line(&format!("wrote {}", path.display()));
    }
    Ok(exit::OK)
}
