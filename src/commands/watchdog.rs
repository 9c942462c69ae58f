//! `palate watchdog`: the GPU idle watchdog's loop (observe, decide, act), or `--replay` of a
//! trace with a fake clock.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::WatchdogArgs;
use crate::config::Config;
use crate::domain::exit;
use crate::output;
use crate::watchdog::observe::Observer;
use crate::watchdog::{replay, Action, Decision, Watchdog};

pub async fn watchdog(a: &WatchdogArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&a.job)?;
    let usd_per_hour = cfg.cost.gpu_usd_per_hour * cfg.cost.gpus.max(1.0);
    let mut w = Watchdog::new(cfg.watchdog.clone(), usd_per_hour).map_err(anyhow::Error::msg)?;
    if let Some(trace) = &a.replay {
        return replay_trace(w, usd_per_hour, trace, a.json.as_deref());
    }
    let wd = cfg.watchdog.clone();
    let endpoint = (wd.endpoint.clone())
        .or_else(|| cfg.llm.endpoints.first().cloned())
        .context("no endpoint to watch: set [watchdog] endpoint or [llm] endpoints")?;
    let observer = Observer::new(&endpoint, cfg.job.database.clone())?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(wd.interval_s));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(exit::OK),
            _ = tick.tick() => {}
        }
        let t = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let d = w.decide(observer.observe(t).await);
        log(&d);
        let command = match d.action {
            Action::Stay => None,
            Action::Stop => Some(&wd.stop_command),
            Action::Start => Some(&wd.start_command),
        };
        if let Some(cmd) = command {
            act(cmd.as_deref(), a.dry_run).await;
            if d.action == Action::Start && !a.dry_run {
                tokio::spawn(warm_up(
                    endpoint.clone(),
                    cfg.llm.model.clone(),
                    wd.cold_start_s,
                ));
            }
        }
        if a.once {
            return Ok(exit::OK);
        }
    }
}

/// Every decision with its inputs: a line for people, a JSON log event for machines.
fn log(d: &Decision) {
    output::line(&replay::line(d));
    let inputs = serde_json::to_string(d).unwrap_or_default();
    tracing::info!(action = ?d.action, reason = %d.reason, decision = %inputs, "watchdog decision");
}

fn replay_trace(
    w: Watchdog,
    usd_per_hour: f64,
    trace: &Path,
    json: Option<&Path>,
) -> anyhow::Result<u8> {
    let obs = replay::read_trace(trace)?;
    let r = replay::replay(w, usd_per_hour, &obs, log);
    output::line(&replay::summary(&r));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

/// Runs a stop or start command (`sh -c`), or only says what it would run.
async fn act(cmd: Option<&str>, dry_run: bool) {
    let Some(cmd) = cmd else {
        tracing::warn!("no command configured for this action ([watchdog] stop_command / start_command): logged only");
        return;
    };
    if dry_run {
        output::line(&format!("      dry run: would run `{cmd}`"));
        return;
    }
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status();
    match tokio::time::timeout(Duration::from_secs(300), run).await {
        Ok(Ok(s)) if s.success() => tracing::info!(command = cmd, "watchdog command done"),
        Ok(Ok(s)) => tracing::error!(command = cmd, status = %s, "watchdog command failed"),
        Ok(Err(e)) => tracing::error!(command = cmd, error = %e, "watchdog command did not run"),
        Err(_) => tracing::error!(command = cmd, "watchdog command still running after 300 s"),
    }
}

/// After a start: waits for the server to list its models, then sends one short request so the
/// first real one does not pay for the warm-up (CUDA graphs, caches).
async fn warm_up(endpoint: String, model: String, cold_start_s: f64) {
    let base = endpoint.trim_end_matches('/').to_string();
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(3.0 * cold_start_s);
    while tokio::time::Instant::now() < deadline {
        let up = http.get(format!("{base}/models")).send().await;
        if up.is_ok_and(|r| r.status().is_success()) {
            let body = serde_json::json!({"model": model, "max_tokens": 1,
                "messages": [{"role": "user", "content": "Hello"}]});
            let r = http
                .post(format!("{base}/chat/completions"))
                .json(&body)
                .send()
                .await;
            tracing::info!(
                ok = r.is_ok_and(|r| r.status().is_success()),
                "watchdog warm-up request"
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::error!(endpoint = %crate::domain::redact_url(&endpoint), "server not up within 3× cold_start_s after the start command");
}
