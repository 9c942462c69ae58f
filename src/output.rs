//! output: everything palate prints for people. Logs go through `tracing`; this module is the
//! only place that writes results and summaries to stdout.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::Kind;
use crate::ingest::IngestReport;
use crate::metrics::{fmt_ms, RunSummary};
use crate::pipeline::RestaurantOutcome;
use crate::store::StoredResult;

/// This module's `println!`: where std's panics when the reader went away (`palate … | head`),
/// this one drops the rest of the output and the work goes on.
macro_rules! println {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// This module's `eprintln!`, which never panics either.
macro_rules! eprintln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

pub fn line(s: &str) {
    println!("{s}");
}

pub fn error(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
}

/// A crossed `[alerts]` threshold, on stderr where cron mail picks it up.
pub fn alert(a: &dyn std::fmt::Display) {
    eprintln!("{a}");
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
        "requests: {} ({} failed) | tokens: {} prompt ({} cached), {} completion | TTFT p50 {} p95 {} | {:.2} req/s, {:.1} output tokens/s",
        s.requests,
        s.requests_failed,
        s.prompt_tokens,
        s.cached_tokens,
        s.completion_tokens,
        fmt_ms(s.ttft_ms.p50, " ms"),
        fmt_ms(s.ttft_ms.p95, " ms"),
        s.requests_per_s,
        s.output_tokens_per_s
    );
    println!(
        "goodput {:.3} req/s | SLA compliance {:.1} % | wall {:.1} s (palate report shows more)",
        s.goodput_rps,
        s.sla_compliance_pct,
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

/// One restaurant's analysis for a person: the sentiment mix, the summary and its aspects, the
/// strengths with their quotes, and any analysis that failed with its reason.
pub fn results_text(restaurant_id: &str, results: &[StoredResult]) {
    println!("== {restaurant_id}");
    for r in results {
        let Some(v) = &r.result else {
            let reason = r.error.as_deref().unwrap_or("unknown");
            println!("\n{}: FAILED: {reason}", r.kind);
            continue;
        };
        let text = match r.kind {
            Kind::Sentiment => sentiment_text(v),
            Kind::Summary => summary_text(v),
            Kind::Strengths => strengths_text(v),
        };
        println!("\n{text}");
    }
}

fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("")
}

fn sentiment_text(v: &serde_json::Value) -> String {
    let a = &v["aggregate"];
    let pct = |k: &str| a[k].as_f64().map_or(0.0, |x| x * 100.0);
    let bar: String = [
        ("positive", '█'),
        ("mixed", '▒'),
        ("neutral", '·'),
        ("negative", '░'),
    ]
    .iter()
    .flat_map(|(k, c)| std::iter::repeat_n(*c, (pct(k) / 4.0).round() as usize))
    .collect();
    let ci = |k: &str| {
        let lo = a[k][0].as_f64().unwrap_or(0.0) * 100.0;
        let hi = a[k][1].as_f64().unwrap_or(0.0) * 100.0;
        format!("{lo:.0}–{hi:.0} %")
    };
    format!(
        "Sentiment  {:.0} % positive · {:.0} % mixed · {:.0} % neutral · {:.0} % negative\n           {bar}\n           {} of {} reviews labelled; positive 95 % interval {}",
        pct("positive"),
        pct("mixed"),
        pct("neutral"),
        pct("negative"),
        a["sample_size"],
        a["reviews_total"],
        ci("positive_ci95")
    )
}

fn summary_text(v: &serde_json::Value) -> String {
    let mut out = format!("Summary    {}", str_of(&v["summary"]));
    if let Some(aspects) = v["aspects"].as_object() {
        for (name, a) in aspects {
            out.push_str(&format!(
                "\n  {name:<12} {:<9} {}",
                str_of(&a["sentiment"]),
                str_of(&a["summary"])
            ));
        }
    }
    out
}

fn strengths_text(v: &serde_json::Value) -> String {
    let list = v["strengths"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if list.is_empty() {
        return format!("Strengths  {}", str_of(&v["note"]));
    }
    let mut out = String::from("Strengths");
    for (i, s) in list.iter().enumerate() {
        out.push_str(&format!(
            "\n  {}. {} — {}",
            i + 1,
            str_of(&s["title"]),
            str_of(&s["detail"])
        ));
        for e in s["evidence"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out.push_str(&format!(
                "\n       “{}” ({})",
                str_of(&e["quote"]),
                str_of(&e["review_id"])
            ));
        }
    }
    out
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

/// The scheduling benchmark's table, with the targets marked.
/// `palate bench selection`: one row per backend, in ms per selection.
pub fn selection_report(
    w: &crate::bench::selection::SelectionWorkload,
    timings: &[crate::bench::selection::SelectionTiming],
) {
    println!(
        "one restaurant of {} reviews, {}-dimensional vectors; k = {}, diverse = {}, lambda = {}; \
{} rounds of {} selections",
        w.reviews, w.dim, w.k, w.diverse, w.lambda, w.rounds, w.per_round
    );
    println!(
        "\n{:<46} {:>10} {:>10} {:>10}",
        "backend", "mean ms", "min ms", "max ms"
    );
    for t in timings {
        println!(
            "{:<46} {:>10.3} {:>10.3} {:>10.3}",
            t.backend, t.mean_ms, t.min_ms, t.max_ms
        );
    }
    if w.qdrant_url.is_none() {
        println!("\n(no Qdrant: --qdrant URL or QDRANT_URL times that backend too)");
    }
}

/// One scheduling mode's figures (server time).
pub fn mode_report(r: &crate::bench::ModeReport) {
    let w = &r.spec.workload;
    let lp = match r.spec.arrival_rate {
        Some(rate) => format!("open loop, {rate} restaurants/s"),
        None => format!("closed loop, {} restaurants at a time", r.spec.concurrency),
    };
    println!(
        "{:?}: {} restaurants x {} reviews (sentiment batch {}, reviews x{}), {lp}, {} in flight",
        r.spec.mode,
        w.restaurants,
        w.reviews_per_restaurant,
        w.sentiment_batch,
        w.review_scale,
        r.spec.max_in_flight
    );
    println!(
        "  {} requests ({} failed), {}/{} analyses valid, {:.1} s: {:.2} req/s, {:.0} output tok/s",
        r.requests,
        r.requests_failed,
        r.analyses_valid,
        r.analyses,
        r.wall_s,
        r.requests_per_s,
        r.output_tokens_per_s
    );
    println!(
        "  TTFT p50/p95 {:.0}/{:.0} ms; ready to first token: small {:.0}/{:.0} ms, large {:.0}/{:.0} ms; \
restaurant p50/p95 {:.1}/{:.1} s",
        r.ttft_p50_ms,
        r.ttft_p95_ms,
        r.small_ttft_p50_ms,
        r.small_ttft_p95_ms,
        r.large_ttft_p50_ms,
        r.large_ttft_p95_ms,
        r.restaurant_p50_s,
        r.restaurant_p95_s
    );
    if let (Some(m), Some(n)) = (r.mean_running, r.max_num_seqs) {
        println!(
            "  mean running {m:.1} of max_num_seqs {n} ({:.1} %), {} preemptions, time scale {}",
            100.0 * m / n.max(1) as f64,
            r.preemptions.unwrap_or(0.0),
            r.time_scale
        );
    }
}

/// Each calibration point against the fit, and the fitted figures.
pub fn calibration(c: &crate::bench::calibrate::Calibration) {
    use crate::bench::fit::Point;
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "point", "observed", "fitted", "error"
    );
    for (p, predicted) in &c.points {
        let name = match p {
            Point::Decode {
                parallel, context, ..
            } => format!("decode x{parallel} (context {context})"),
            Point::Prefill { tokens, cached, .. } => {
                format!("prefill {tokens} tokens, {cached} cached")
            }
            Point::Mixed {
                tokens,
                cached,
                decoding,
                context,
                ..
            } => {
                format!("prefill {tokens} tokens, {cached} cached, beside {decoding} at {context}")
            }
        };
        let o = p.observed();
        println!(
            "{name:<44} {o:>9.1} ms {predicted:>9.1} ms {:>+7.1}%",
            100.0 * (predicted - o) / o.max(1e-9)
        );
    }
    fitted(c);
    for (kind, g) in &c.grammar {
        println!(
            "grammar, {kind}: time to first token {:.0} ms without the schema, {:.0} ms with; per output token {:.2} / {:.2} ms",
            g.ttft_ms[0], g.ttft_ms[1], g.tpot_ms[0], g.tpot_ms[1]
        );
    }
    let [ascii, symbol, other] = c.tokens.per_class();
    println!(
        "tokens: {:.2} ASCII letters or spaces per token, {symbol:.2} tokens per digit or punctuation mark, {other:.2} per Hangul character",
        1.0 / ascii
    );
    println!(
        "prompt reuse: {}",
        match c.profile.engine.prefix_cache {
            crate::sim::PrefixCacheKind::Slots => "llama.cpp's slots (each keeps its last prompt)",
            crate::sim::PrefixCacheKind::Shared => "a prefix cache every request shares (vLLM)",
        }
    );
}

/// The fitted figures of a calibration.
fn fitted(c: &crate::bench::calibrate::Calibration) {
    let m = &c.profile.engine.latency;
    println!(
        "fit: mean |error| {:.1} %, max {:.1} %\nstep {:.3} ms + {:.4} ms/seq + max({:.4} ms/token + {:.5} us/attention pair, \
{:.3} ms weights + {:.5} us/context token) + {:.4} us/token per further sequence; grammar {:.1} ms per request, \
mask {:.3} ms per token",
        100.0 * c.fit.mean_abs_error,
        100.0 * c.fit.max_abs_error,
        m.step_ms,
        m.seq_ms,
        m.token_ms,
        m.attention_us,
        m.weights_ms,
        m.kv_token_us,
        m.mix_us,
        c.grammar_ms,
        c.mask_ms
    );
    if m.tile > 1 {
        println!(
            "tile {} tokens: {:.3} ms for each token outside a whole tile",
            m.tile, m.row_ms
        );
    }
    if m.split_equal {
        println!("steps run as micro-batches of as many tokens from each sequence (llama.cpp)");
    }
}
