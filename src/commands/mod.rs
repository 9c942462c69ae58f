//! commands: what each CLI subcommand does, wiring the stages together. Printing is left to
//! [`crate::output`].
use std::fs::File;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{DoctorArgs, EvalArgs, IngestArgs, ReportArgs, SyncArgs};
use crate::config::Config;
use crate::domain::exit;
use crate::eval::EvalOptions;
use crate::ingest::ingest_file;
use crate::output;
use crate::store::{Db, Store};

mod bench;
mod lock;
mod run;
mod setup;
mod watchdog;

pub use bench::{
    bench_calibrate, bench_catalogue, bench_embedding, bench_scheduling, bench_selection,
    bench_serve, bench_steps,
};
pub use lock::{db_lock, Lock};
pub use run::{analyze, run};
pub use setup::pipeline;
pub use watchdog::watchdog;

use lock::locked_out;
use setup::ingest_inputs;

/// `palate sync`: delivers what is queued for the app's database, without loading any model.
pub async fn sync(args: &SyncArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let Some(_lock) = db_lock(&cfg.job.database, Lock::Exclusive)? else {
        return Ok(locked_out(&cfg));
    };
    if cfg.sink.kind == crate::sink::SinkKind::Sqlite {
        anyhow::bail!("the job has no app database: set [sink] kind and url (or PALATE_SINK_URL)");
    }
    let store = Store::open(&cfg.job.database)?;
    let sink = crate::sink::open(&cfg.sink, store).await?;
    let report = sink.deliver_pending().await?.unwrap_or_default();
    output::line(&format!(
        "app database: {} restaurants delivered, {} still queued",
        report.delivered, report.queued
    ));
    Ok(if report.queued > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

pub fn ingest(args: &IngestArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let Some(_lock) = db_lock(&cfg.job.database, Lock::Shared)? else {
        return Ok(locked_out(&cfg));
    };
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

pub async fn eval(args: &EvalArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&args.job)?;
    let store = Store::open(&cfg.job.database)?;
    let never = CancellationToken::new();
    let (reports, input_errors) = ingest_inputs(&store, &cfg, &never).await;
    reports.iter().for_each(output::ingest_report);
    input_errors.iter().for_each(|e| output::error(e));
    let concurrency = cfg.job.restaurant_concurrency;
    let p = pipeline(cfg, store.clone(), None, &never).await?;
    p.llm.ready().await?;
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
    if let Some(runs) = &a.compare {
        return compare(&db, runs, a.html.as_deref());
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

/// `palate report --compare A B`.
fn compare(db: &Db, runs: &[i64], html: Option<&std::path::Path>) -> anyhow::Result<u8> {
    let load = |id: i64| -> anyhow::Result<crate::report::RunReport> {
        crate::report::load(db, Some(id))?
            .ok_or_else(|| anyhow::anyhow!("no run {id} in the database"))
    };
    let (a, b) = match runs {
        [a, b] => (load(*a)?, load(*b)?),
        _ => anyhow::bail!("--compare takes two run ids"),
    };
    let c = crate::report::compare::compare(&a, &b);
    output::line(&crate::report::compare::table(&c));
    if let Some(path) = html {
        std::fs::write(path, crate::report::html::compare_page(&c))
            .with_context(|| format!("cannot write {}", path.display()))?;
        output::line(&format!("wrote {}", path.display()));
    }
    Ok(exit::OK)
}

/// `palate doctor`: every check, as a table or JSON; 1 when one failed.
pub async fn doctor(a: &DoctorArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&a.job)?;
    let checks = crate::doctor::run(&cfg).await;
    let code = crate::doctor::exit_code(&checks);
    if a.json {
        let v = serde_json::json!({"ok": code == exit::OK, "checks": checks});
        output::line(&serde_json::to_string_pretty(&v)?);
    } else {
        output::line(crate::doctor::text(&checks).trim_end());
    }
    Ok(code)
}
