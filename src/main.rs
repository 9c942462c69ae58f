//! The `palate` binary: parse flags, set up logging, run one command, map the outcome to an exit
//! code (see `palate run --help`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use palate::cli::{BenchSuite, Cli, Command, LogFormat};
use palate::commands;
use palate::domain::exit;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.log_format,
        matches!(cli.command, Command::Run(_) | Command::Analyze(_)),
    );
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
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
        Command::Bench(BenchSuite::Scheduling(a)) => commands::bench_scheduling(a),
        Command::Report(a) => commands::report(a),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// SIGINT or SIGTERM: stop starting restaurants, let those in flight finish and be stored.
async fn with_signals<F, Fut>(f: F) -> anyhow::Result<u8>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::warn!("signal received: finishing restaurants in flight, then stopping");
        c.cancel();
    });
    f(cancel).await
}

/// Logs go to stderr: pretty on a terminal, JSON lines otherwise (cron). With a progress bar on a
/// terminal, per-restaurant lines are left to `RUST_LOG=palate=info`.
fn init_logging(format: LogFormat, pipeline_command: bool) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.compact().init();
    }
}
