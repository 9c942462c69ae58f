//! `palate bench scheduling` runs the seed system's experiment against the simulated vLLM
//! server ([`crate::sim`]) in one process: the same workload sent one request at a time
//! (sequential), in static batches (a batch of restaurants must finish before the next starts),
//! and with palate's continuous scheduling (shortest-prefill-first and FIFO), plus continuous
//! scheduling with the server's prefix cache off. The engine runs `time_scale` times real time
//! (0.1 by default: its 8 ms steps take 0.8 ms), and every duration is reported in simulated
//! time, the client's measurements divided by the scale.
//!
//! The requests are palate's own: plans from [`crate::plan`], analysed by
//! [`crate::pipeline::analyse_plan`] through [`crate::infer::OpenAiClient`], validated as in a run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

use crate::config::JobFile;
use crate::domain::StoredReview;
use crate::infer::schedule::Order;
use crate::infer::{FollowUps, OpenAiClient};
use crate::metrics::{percentile, RequestMetrics};
use crate::pipeline::{analyse_plan, Conduct, KindOutcome};
use crate::plan::{BatchLimits, MaxTokens, Planner, Prompts, RestaurantPlan, TokenCounter};
use crate::sim::{EngineConfig, SimConfig, SimServer};

/// What the scheduling benchmark runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub restaurants: usize,
    pub reviews_per_restaurant: usize,
    /// Restaurants in progress at once (continuous) or per batch (static).
    pub concurrency: usize,
    pub max_in_flight: usize,
    pub engine: EngineConfig,
    /// Review texts are drawn from this file (JSONL with a `text` field).
    pub reviews_file: PathBuf,
    pub prompts_dir: PathBuf,
}

/// One strategy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub name: String,
    pub requests: usize,
    pub analyses_valid: usize,
    pub analyses: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft_mean_ms: f64,
    pub ttft_p95_ms: f64,
    /// Requests with an estimated prefill at most the median: time from ready (palate's queue
    /// included) to first token, 95th percentile.
    pub small_ready_to_first_token_p95_ms: f64,
    pub throughput_vs_sequential: f64,
    /// Time the engine had work / wall time.
    pub utilisation: f64,
    /// Mean sequences per engine step.
    pub mean_batch: f64,
    pub prompt_tokens: u64,
    pub prefill_tokens: u64,
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulingReport {
    pub workload: Workload,
    pub modes: Vec<ModeReport>,
    /// Prefill computed with the prefix cache vs without, as a share saved.
    pub prefill_saved: f64,
    /// SJF vs FIFO: small-request p95 (ready to first token) lower by this share.
    pub sjf_small_p95_gain: f64,
    /// SJF throughput / FIFO throughput.
    pub sjf_throughput_ratio: f64,
}

#[derive(Debug, Clone, Copy)]
enum Strategy {
    Sequential,
    Static,
    Continuous(Order),
}

/// Runs every strategy, one after another.
pub fn scheduling(w: Workload) -> anyhow::Result<SchedulingReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(w))
}

async fn run(w: Workload) -> anyhow::Result<SchedulingReport> {
    let plans = workload_plans(&w)?;
    let cached = w.engine.clone();
    let uncached = EngineConfig {
        cache_blocks: 0,
        ..w.engine.clone()
    };
    let runs = [
        ("sequential", Strategy::Sequential, &cached),
        ("static batches", Strategy::Static, &cached),
        (
            "continuous, FIFO",
            Strategy::Continuous(Order::Fifo),
            &cached,
        ),
        ("continuous, SJF", Strategy::Continuous(Order::Sjf), &cached),
        (
            "continuous, SJF, no prefix cache",
            Strategy::Continuous(Order::Sjf),
            &uncached,
        ),
    ];
    let mut modes: Vec<ModeReport> = Vec::new();
    for (name, strategy, engine) in runs {
        let m = mode(name, &plans, strategy, engine.clone(), &w).await?;
        tracing::info!(mode = name, wall_s = m.wall_s, "benchmark mode done");
        modes.push(m);
    }
    let base = modes[0].requests_per_s;
    for m in &mut modes {
        m.throughput_vs_sequential = m.requests_per_s / base;
    }
    let (fifo, sjf, nocache) = (&modes[2], &modes[3], &modes[4]);
    Ok(SchedulingReport {
        prefill_saved: 1.0 - sjf.prefill_tokens as f64 / nocache.prefill_tokens.max(1) as f64,
        sjf_small_p95_gain: 1.0
            - sjf.small_ready_to_first_token_p95_ms / fifo.small_ready_to_first_token_p95_ms,
        sjf_throughput_ratio: sjf.requests_per_s / fifo.requests_per_s,
        modes,
        workload: w,
    })
}

/// Restaurants of `reviews_per_restaurant` reviews each, drawn in turn from the review file.
fn workload_plans(w: &Workload) -> anyhow::Result<Vec<RestaurantPlan>> {
    let texts = review_texts(&w.reviews_file)?;
    let planner = Planner {
        prompts: Prompts::load(&w.prompts_dir)?,
        counter: TokenCounter::Estimate,
        limits: BatchLimits {
            reviews: 16,
            tokens: 2048,
        },
        max: MaxTokens {
            sentiment: 512,
            summary: 512,
            strengths: 512,
        },
        language: Default::default(),
    };
    Ok((0..w.restaurants)
        .map(|i| {
            let reviews: Vec<StoredReview> = (0..w.reviews_per_restaurant)
                .map(|j| {
                    let t = &texts[(i * 131 + j * 7) % texts.len()];
                    StoredReview {
                        review_id: format!("b{i}-{j}"),
                        text: t.clone(),
                        content_hash: String::new(),
                        lang: None,
                        rating: None,
                    }
                })
                .collect();
            planner.plan(&format!("bench-{i:04}"), &reviews, &reviews)
        })
        .collect())
}

fn review_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read review texts from {}", path.display()))?;
    let texts: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(!texts.is_empty(), "{} has no review texts", path.display());
    Ok(texts)
}

async fn mode(
    name: &str,
    plans: &[RestaurantPlan],
    strategy: Strategy,
    engine: EngineConfig,
    w: &Workload,
) -> anyhow::Result<ModeReport> {
    let sim = SimServer::start(SimConfig {
        engine,
        ..SimConfig::default()
    })
    .await?;
    let (order, in_flight, concurrency) = match strategy {
        Strategy::Sequential => (Order::Fifo, 1, 1),
        Strategy::Static => (Order::Fifo, w.max_in_flight, w.concurrency),
        Strategy::Continuous(o) => (o, w.max_in_flight, w.concurrency),
    };
    let mut job = JobFile::default();
    job.llm.endpoints = vec![sim.url.clone()];
    job.llm.model = "sim".into();
    job.llm.max_in_flight = in_flight;
    job.llm.scheduling = order;
    let cfg = crate::config::Config::validate(job)?;
    let llm = OpenAiClient::new(&cfg.llm)?;
    llm.warm_up().await?;
    let conduct = Conduct {
        follow_ups: FollowUps::Concurrent,
        repairs: cfg.llm.repairs,
    };
    let t0 = Instant::now();
    let outcomes: Vec<KindOutcome> = match strategy {
        Strategy::Static => {
            let mut all = Vec::new();
            for batch in plans.chunks(concurrency) {
                let done = futures::future::join_all(
                    batch
                        .iter()
                        .map(|p| analyse_plan(&llm, p, conduct, w.reviews_per_restaurant)),
                )
                .await;
                all.extend(done.into_iter().flatten());
            }
            all
        }
        _ => {
            futures::stream::iter(plans)
                .map(|p| analyse_plan(&llm, p, conduct, w.reviews_per_restaurant))
                .buffer_unordered(concurrency)
                .flat_map(futures::stream::iter)
                .collect()
                .await
        }
    };
    let wall = t0.elapsed();
    let stats = sim.stats();
    Ok(report(name, &outcomes, wall, &stats, w.engine.time_scale))
}

fn report(
    name: &str,
    outcomes: &[KindOutcome],
    wall: Duration,
    stats: &crate::sim::EngineStats,
    scale: f64,
) -> ModeReport {
    let reqs: Vec<&RequestMetrics> = outcomes.iter().flat_map(|o| &o.requests).collect();
    let ttfts: Vec<f64> = reqs
        .iter()
        .filter_map(|m| m.ttft_ms)
        .map(|t| t / scale)
        .collect();
    let sizes: Vec<f64> = reqs
        .iter()
        .filter_map(|m| m.est_prefill_tokens.map(|t| t as f64))
        .collect();
    let median = percentile(&sizes, 50.0).unwrap_or(0.0);
    let small: Vec<f64> = reqs
        .iter()
        .filter(|m| m.est_prefill_tokens.is_some_and(|t| t as f64 <= median))
        .filter_map(|m| m.ttft_ms.map(|t| (t + m.queue_ms) / scale))
        .collect();
    let secs = wall.as_secs_f64().max(1e-9) / scale;
    let out_tokens: u64 = reqs.iter().filter_map(|m| m.completion_tokens).sum();
    ModeReport {
        name: name.to_string(),
        requests: reqs.len(),
        analyses_valid: outcomes.iter().filter(|o| o.outcome.is_ok()).count(),
        analyses: outcomes.len(),
        wall_s: secs,
        requests_per_s: reqs.len() as f64 / secs,
        output_tokens_per_s: out_tokens as f64 / secs,
        ttft_mean_ms: ttfts.iter().sum::<f64>() / ttfts.len().max(1) as f64,
        ttft_p95_ms: percentile(&ttfts, 95.0).unwrap_or(0.0),
        small_ready_to_first_token_p95_ms: percentile(&small, 95.0).unwrap_or(0.0),
        throughput_vs_sequential: 1.0,
        utilisation: stats.busy_ms / (secs * 1000.0),
        mean_batch: stats.seq_steps as f64 / stats.steps.max(1) as f64,
        prompt_tokens: stats.prompt_tokens,
        prefill_tokens: stats.prefill_tokens,
        cached_tokens: stats.cached_tokens,
    }
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            restaurants: 100,
            reviews_per_restaurant: 50,
            concurrency: 64,
            max_in_flight: 64,
            engine: EngineConfig::default(),
            reviews_file: "data/reviews.jsonl".into(),
            prompts_dir: "prompts".into(),
        }
    }
}
