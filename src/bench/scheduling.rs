//! `palate bench scheduling`: one scheduling mode of palate's client, once, against a server in
//! another process: the simulator (`palate bench serve --profile …`) or a real one. The requests
//! are palate's own ([`super::workload`]), analysed by [`crate::pipeline::analyse_plan`] through
//! [`crate::infer::OpenAiClient`] and validated as in a run (repairs included).
//!
//! Modes: `sequential` (one request at a time), `fifo` and `sjf` (palate's queue in that order),
//! `priority` (palate sends vLLM's `priority` and leaves the queue to the server, which needs
//! `--scheduling-policy priority`), and `ceiling`: every first request queued at t = 0 with no
//! client limit, as `vllm bench throughput` does, the server's offline ceiling.
//! Closed loop: `concurrency` restaurants in progress at once. Open loop: restaurants arrive as a
//! Poisson process. Times are the server's (divided by the simulator's time scale, read from its
//! `/metrics`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::probe::{self, Sampler};
use super::workload::{self, WorkloadSpec};
use crate::config::JobFile;
use crate::infer::schedule::Order;
use crate::infer::{ChatRequest, FollowUps, LlmClient, OpenAiClient};
use crate::metrics::{percentile, RequestMetrics};
use crate::pipeline::{analyse_plan, Conduct};
use crate::plan::RestaurantPlan;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sequential,
    Fifo,
    Sjf,
    Priority,
    Ceiling,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeSpec {
    pub endpoint: String,
    pub model: String,
    pub mode: Mode,
    /// Restaurants in progress at once (closed loop).
    pub concurrency: usize,
    /// Restaurants arriving per second (open loop) instead.
    pub arrival_rate: Option<f64>,
    pub seed: u64,
    pub max_in_flight: usize,
    /// The server's `max_num_seqs`, when its `/metrics` does not say.
    pub max_num_seqs: Option<usize>,
    pub workload: WorkloadSpec,
}

/// One mode's figures, in the server's time.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub spec: ModeSpec,
    pub time_scale: f64,
    pub requests: usize,
    pub requests_failed: usize,
    pub analyses: usize,
    pub analyses_valid: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    /// From ready (palate's queue included) to first token, by cohort: prompts at most the
    /// workload's median are small.
    pub small_ttft_p50_ms: f64,
    pub small_ttft_p95_ms: f64,
    pub large_ttft_p50_ms: f64,
    pub large_ttft_p95_ms: f64,
    pub large_e2e_p95_ms: f64,
    /// From a restaurant's start (closed loop) or arrival (open loop) to its last answer.
    pub restaurant_p50_s: f64,
    pub restaurant_p95_s: f64,
    /// Time-weighted mean running sequences (sampled from `/metrics`), and ÷ `max_num_seqs`.
    pub mean_running: Option<f64>,
    pub max_num_seqs: Option<usize>,
    pub running_share: Option<f64>,
    pub preemptions: Option<f64>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
}

/// Runs `spec` once.
pub async fn run(spec: ModeSpec) -> anyhow::Result<ModeReport> {
    let plans = workload::plans(&spec.workload)?;
    let llm = client(&spec)?;
    llm.warm_up().await?;
    let http = reqwest::Client::new();
    let before = probe::metrics(&http, &spec.endpoint).await;
    let scale = (before.as_deref())
        .and_then(|t| probe::gauge(t, "palate_sim_time_scale"))
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    let max_num_seqs = spec.max_num_seqs.or_else(|| {
        (before.as_deref())
            .and_then(|t| probe::gauge(t, "palate_sim_max_num_seqs"))
            .map(|n| n as usize)
    });
    let sampler = Sampler::start(
        http.clone(),
        spec.endpoint.clone(),
        Duration::from_millis(100),
    );
    let t0 = Instant::now();
    let done = match spec.mode {
        Mode::Ceiling => ceiling(&llm, &plans).await,
        _ => restaurants(&llm, &plans, &spec, scale).await,
    };
    let wall = t0.elapsed().as_secs_f64() / scale;
    let (mean_running, _) = sampler.finish();
    let after = probe::metrics(&http, &spec.endpoint).await;
    let preempted = |t: Option<&str>| t.and_then(|t| probe::gauge(t, "vllm:num_preemptions_total"));
    let preemptions =
        preempted(after.as_deref()).map(|a| a - preempted(before.as_deref()).unwrap_or(0.0));
    let cut = workload::small_cutoff(&plans);
    Ok(report(
        spec,
        &done,
        Figures {
            wall,
            scale,
            cut,
            mean_running,
            max_num_seqs,
            preemptions,
        },
    ))
}

fn client(spec: &ModeSpec) -> anyhow::Result<OpenAiClient> {
    let mut job = JobFile::default();
    job.llm.endpoints = vec![spec.endpoint.clone()];
    job.llm.model = spec.model.clone();
    (job.llm.max_in_flight, job.llm.scheduling) = match spec.mode {
        Mode::Sequential => (1, Order::Fifo),
        Mode::Fifo => (spec.max_in_flight, Order::Fifo),
        Mode::Sjf | Mode::Priority => (spec.max_in_flight, Order::Sjf),
        Mode::Ceiling => (1 << 20, Order::Fifo),
    };
    job.llm.send_priority = spec.mode == Mode::Priority;
    job.llm.attempts = 1;
    job.llm.request_timeout_s = 3600.0;
    job.llm.read_timeout_s = 3600.0;
    let cfg = crate::config::Config::validate(job)?;
    Ok(OpenAiClient::new(&cfg.llm)?)
}

/// What each restaurant's analysis sent, and how long it took (real seconds).
struct Done {
    requests: Vec<RequestMetrics>,
    analyses: usize,
    valid: usize,
    restaurant_s: Vec<f64>,
}

/// palate's path: each restaurant analysed as in a run, closed or open loop. The arrival rate
/// is per second of the server's time, which passes `1 / scale` times as fast as the wall's.
async fn restaurants<'a>(
    llm: &'a OpenAiClient,
    plans: &'a [RestaurantPlan],
    spec: &ModeSpec,
    scale: f64,
) -> Done {
    let conduct = Conduct {
        follow_ups: FollowUps::Concurrent,
        repairs: 1,
    };
    let reviews = spec.workload.reviews_per_restaurant;
    let t0 = tokio::time::Instant::now();
    let arrivals = arrivals(plans.len(), spec.arrival_rate.map(|r| r / scale), spec.seed);
    let one = |p: &'a RestaurantPlan, at: Option<Duration>| async move {
        if let Some(at) = at {
            tokio::time::sleep_until(t0 + at).await;
        }
        let start = tokio::time::Instant::now();
        let out = analyse_plan(llm, p, conduct, reviews).await;
        let since = at.map_or(start, |a| t0 + a);
        (out, since.elapsed().as_secs_f64())
    };
    let limit = match (spec.mode, spec.arrival_rate) {
        (Mode::Sequential, _) => 1,
        (_, Some(_)) => plans.len().max(1),
        _ => spec.concurrency.max(1),
    };
    let results: Vec<_> = futures::stream::iter(plans.iter().zip(arrivals))
        .map(|(p, at)| one(p, at))
        .buffer_unordered(limit)
        .collect()
        .await;
    let mut d = Done {
        requests: Vec::new(),
        analyses: 0,
        valid: 0,
        restaurant_s: Vec::new(),
    };
    for (outcomes, secs) in results {
        d.restaurant_s.push(secs);
        for o in outcomes {
            d.analyses += 1;
            d.valid += usize::from(o.outcome.is_ok());
            d.requests.extend(o.requests);
        }
    }
    d
}

/// Arrival offsets of a Poisson process of `rate` per second (seeded), or none (closed loop).
fn arrivals(n: usize, rate: Option<f64>, seed: u64) -> Vec<Option<Duration>> {
    let Some(rate) = rate.filter(|r| *r > 0.0) else {
        return vec![None; n];
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -(1.0 - rng.f64()).ln() / rate;
            Some(Duration::from_secs_f64(t))
        })
        .collect()
}

/// Every first request at once, unlimited, unvalidated: the server's offline ceiling.
async fn ceiling(llm: &OpenAiClient, plans: &[RestaurantPlan]) -> Done {
    let reqs: Vec<ChatRequest> = (plans.iter())
        .flat_map(|p| {
            p.requests.iter().map(|r| ChatRequest {
                restaurant_id: p.restaurant_id.clone(),
                kind: r.kind,
                attempt: 1,
                messages: r.messages.clone(),
                schema: r.schema.clone(),
                max_tokens: r.max_tokens,
                prefill_tokens: r.prompt_tokens,
            })
        })
        .collect();
    let outcomes = futures::future::join_all(reqs.iter().map(|r| llm.chat(r))).await;
    let analyses = outcomes.len();
    let valid = outcomes.iter().filter(|o| o.result.is_ok()).count();
    Done {
        requests: outcomes.into_iter().flat_map(|o| o.metrics).collect(),
        analyses,
        valid,
        restaurant_s: Vec::new(),
    }
}

struct Figures {
    wall: f64,
    scale: f64,
    cut: f64,
    mean_running: Option<f64>,
    max_num_seqs: Option<usize>,
    preemptions: Option<f64>,
}

fn report(spec: ModeSpec, d: &Done, f: Figures) -> ModeReport {
    let s = f.scale;
    let ok: Vec<&RequestMetrics> = d.requests.iter().filter(|m| m.ok).collect();
    let ttft: Vec<f64> = ok.iter().filter_map(|m| m.ttft_ms).map(|t| t / s).collect();
    let ready = |small: bool| -> Vec<f64> {
        (ok.iter())
            .filter(|m| {
                m.est_prefill_tokens
                    .is_some_and(|t| (t as f64 <= f.cut) == small)
            })
            .filter_map(|m| m.ttft_ms.map(|t| (t + m.queue_ms) / s))
            .collect()
    };
    let (small, large) = (ready(true), ready(false));
    let large_e2e: Vec<f64> = (ok.iter())
        .filter(|m| m.est_prefill_tokens.is_some_and(|t| t as f64 > f.cut))
        .map(|m| (m.e2e_ms + m.queue_ms) / s)
        .collect();
    let rest: Vec<f64> = d.restaurant_s.iter().map(|t| t / s).collect();
    let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or(0.0);
    let wall = f.wall.max(1e-9);
    let out_tokens: u64 = ok.iter().filter_map(|m| m.completion_tokens).sum();
    ModeReport {
        time_scale: s,
        requests: d.requests.len(),
        requests_failed: d.requests.len() - ok.len(),
        analyses: d.analyses,
        analyses_valid: d.valid,
        wall_s: f.wall,
        requests_per_s: ok.len() as f64 / wall,
        output_tokens_per_s: out_tokens as f64 / wall,
        ttft_p50_ms: p(&ttft, 50.0),
        ttft_p95_ms: p(&ttft, 95.0),
        small_ttft_p50_ms: p(&small, 50.0),
        small_ttft_p95_ms: p(&small, 95.0),
        large_ttft_p50_ms: p(&large, 50.0),
        large_ttft_p95_ms: p(&large, 95.0),
        large_e2e_p95_ms: p(&large_e2e, 95.0),
        restaurant_p50_s: p(&rest, 50.0),
        restaurant_p95_s: p(&rest, 95.0),
        mean_running: f.mean_running,
        max_num_seqs: f.max_num_seqs,
        running_share: f
            .mean_running
            .zip(f.max_num_seqs)
            .map(|(m, n)| m / n.max(1) as f64),
        preemptions: f.preemptions,
        prompt_tokens: ok.iter().filter_map(|m| m.prompt_tokens).sum(),
        cached_tokens: ok.iter().filter_map(|m| m.cached_tokens).sum(),
        spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_have_the_asked_rate_and_are_seeded() {
        let a = arrivals(2000, Some(4.0), 7);
        let last = a.last().unwrap().unwrap().as_secs_f64();
        assert!((last - 500.0).abs() < 40.0, "2000 arrivals at 4/s: {last}");
        assert_eq!(a, arrivals(2000, Some(4.0), 7));
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(arrivals(3, None, 7), vec![None; 3]);
    }
}
