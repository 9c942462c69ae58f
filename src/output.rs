//! output: everything palate prints for people. Logs go through `tracing`; this module is the
//! only place that writes results and summaries to stdout.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::ingest::IngestReport;
use crate::metrics::RunSummary;
use crate::pipeline::RestaurantOutcome;
use crate::store::results::StoredResult;

pub fn line(s: &str) {
    println!("{s}");
}

pub fn error(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
}

pub fn ingest_report(r: &IngestReport) {
    println!(
        "ingested {}: {} rows, {} new, {} updated, {} unchanged, {} rejected{}",
        r.file.display(),
        r.rows,
        r.inserted,
        r.updated,
        r.unchanged,
        r.rejected,
        r.rejects_file
            .as_ref()
            .map(|p| format!(" (see {})", p.display()))
            .unwrap_or_default()
    );
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0} ms"))
}

pub fn summary(s: &RunSummary) {
    println!(
        "restaurants: {} done, {} skipped, {} failed | analyses: {} ok, {} failed",
        s.restaurants_done,
        s.restaurants_skipped,
        s.restaurants_failed,
        s.analyses_ok,
        s.analyses_failed
    );
    println!(
        "requests: {} ({} failed) | tokens: {} prompt, {} completion | TTFT p50 {} p95 {} | goodput {:.2} req/s | wall {:.1} s",
        s.requests,
        s.requests_failed,
        s.prompt_tokens,
        s.completion_tokens,
        ms(s.ttft_p50_ms),
        ms(s.ttft_p95_ms),
        s.goodput_rps,
        s.wall_ms / 1000.0
    );
    for (reason, n) in &s.failure_reasons {
        println!("  failed {n}× {reason}");
    }
}

pub fn results_json(restaurant_id: &str, results: &[StoredResult]) -> anyhow::Result<()> {
    let doc = serde_json::json!({"restaurant_id": restaurant_id, "results": results});
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

pub fn results_text(restaurant_id: &str, results: &[StoredResult]) {
    println!("== {restaurant_id}");
    for r in results {
        match (&r.result, &r.error) {
            (Some(v), _) => {
                println!("-- {} ({})", r.kind, r.model);
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            }
            (None, e) => println!(
                "-- {}: FAILED: {}",
                r.kind,
                e.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// A progress bar on a terminal; one log line per restaurant otherwise (cron).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} restaurants {msg} (eta {eta})",
            ) {
                b.set_style(style);
            }
            b
        });
        Self { bar }
    }

    pub fn restaurant(&self, id: &str, outcome: &RestaurantOutcome) {
        match outcome {
            RestaurantOutcome::Skipped => {
                tracing::debug!(restaurant_id = id, "skipped: results are current")
            }
            RestaurantOutcome::Done { failed_analyses: 0 } => {
                tracing::info!(restaurant_id = id, "done")
            }
            RestaurantOutcome::Done { failed_analyses } => {
                tracing::warn!(
                    restaurant_id = id,
                    failed_analyses,
                    "done with failed analyses"
                )
            }
            RestaurantOutcome::Error(e) => {
                tracing::error!(restaurant_id = id, error = %e, "restaurant failed")
            }
        }
        if let Some(b) = &self.bar {
            b.set_message(id.to_string());
            b.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
