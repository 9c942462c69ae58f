//! The `palate` binary: parse flags, set up logging, run one command, map the outcome to an exit
//! code (see `palate run --help`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use palate::cli::{BenchSuite, Cli, Command, LogFormat};
use palate::commands;
use palate::config::Config;
use palate::domain::exit;
use palate::telemetry::TelemetryConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = init_logging(
        cli.log_format,
        matches!(cli.command, Command::Run(_) | Command::Analyze(_)),
        &telemetry_config(&cli.command),
    );
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = palate::domain::error_chain(e.as_ref());
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Ingest(a) => commands::ingest(a),
        Command::Run(a) => runtime()?.block_on(with_signals(|c| commands::run(a, c))),
        Command::Analyze(a) => runtime()?.block_on(with_signals(|c| commands::analyze(a, c))),
        Command::Eval(a) => runtime()?.block_on(commands::eval(a)),
        Command::Sync(a) => runtime()?.block_on(commands::sync(a)),
        Command::Bench(BenchSuite::Scheduling(a)) => {
            runtime()?.block_on(commands::bench_scheduling(a))
        }
        Command::Bench(BenchSuite::Calibrate(a)) => {
            runtime()?.block_on(commands::bench_calibrate(a))
        }
        Command::Bench(BenchSuite::Steps(a)) => commands::bench_steps(a),
        Command::Bench(BenchSuite::Selection(a)) => {
            runtime()?.block_on(commands::bench_selection(a))
        }
        Command::Bench(BenchSuite::Serve(a)) => runtime()?.block_on(commands::bench_serve(a)),
        Command::Bench(BenchSuite::Embedding(a)) => {
            runtime()?.block_on(commands::bench_embedding(a))
        }
        Command::Bench(BenchSuite::Catalogue(a)) => {
            runtime()?.block_on(commands::bench_catalogue(a))
        }
        Command::Report(a) => commands::report(a),
        Command::Doctor(a) => runtime()?.block_on(commands::doctor(a)),
        Command::Watchdog(a) => runtime()?.block_on(with_signals(|c| commands::watchdog(a, c))),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// SIGINT or SIGTERM: stop starting restaurants (or stop ingesting, embedding, warming up),
/// let those in flight finish and be stored. A second one exits at once with 130: what is
/// stored stays stored, and the next run marks this one failed and resumes.
async fn with_signals<F, Fut>(f: F) -> anyhow::Result<u8>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        for n in 0.. {
            tokio::select! {
                _ = next(&mut int) => {}
                _ = next(&mut term) => {}
            }
            if n == 0 {
                tracing::warn!("signal received: finishing restaurants in flight, then stopping (again to stop now)");
                c.cancel();
            } else {
                tracing::error!("second signal: stopping now");
                eprintln!("palate: stopped by a second signal; the next run resumes");
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
    f(cancel).await
}

/// The job's `[telemetry]` for the commands that analyse (their spans are what is exported);
/// a job file that does not load is reported by the command itself.
fn telemetry_config(command: &Command) -> TelemetryConfig {
    let job = match command {
        Command::Run(a) => &a.job,
        Command::Analyze(a) => &a.job,
        _ => return TelemetryConfig::default(),
    };
    Config::from_args(job)
        .map(|c| c.telemetry.clone())
        .unwrap_or_default()
}

/// Logs go to stderr: pretty on a terminal, JSON lines otherwise (cron). With a progress bar on a
/// terminal, per-restaurant lines are left to `RUST_LOG=palate=info`. Spans also go to an OTLP
/// collector when the job asks (`[telemetry]`); the guard flushes them at exit.
fn init_logging(
    format: LogFormat,
    pipeline_command: bool,
    telemetry: &TelemetryConfig,
) -> palate::telemetry::Guard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let terminal = std::io::stderr().is_terminal();
    let default = if terminal && pipeline_command {
        "palate=warn"
    } else {
        "palate=info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_current_span(true).boxed()
    } else {
        fmt.compact().boxed()
    };
    let (otel, guard) = palate::telemetry::layer(telemetry);
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .init();
    guard
}
