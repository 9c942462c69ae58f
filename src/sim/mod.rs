//! sim: a vLLM-like OpenAI-compatible server for benchmarks and fault-injection tests (never the
//! product path; end-to-end tests use the real llama.cpp server). It streams chat completions with
//! usage (`cached_tokens` included) from a simulated continuous-batching engine ([`engine`]),
//! answers `/v1/models` and `/metrics` with vLLM's metric names, and injects faults at a rate or
//! on a schedule.

pub mod content;
mod cost;
pub mod engine;
mod faults;
mod http;
mod kv;
mod prefix_cache;
pub mod profile;
mod prometheus;
mod seq;
mod slots;
mod sse;
mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::lock;
use engine::NewSeq;
pub use engine::{pairs, EngineConfig, EngineStats, LatencyModel, PrefixCacheKind, StepLoad, Work};
pub use faults::{Fault, FaultPlan};
pub use profile::{OutputModel, Profile, TokenRates};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub engine: EngineConfig,
    /// Model names served; a request for another gets 404.
    pub models: Vec<String>,
    pub faults: FaultPlan,
    /// How prompts are counted in tokens.
    pub tokens: TokenRates,
    /// Answer lengths and refusals by kind; a kind without one answers the schema's instance,
    /// always valid.
    pub outputs: BTreeMap<String, OutputModel>,
    /// Each kind's lengths in the order listed, in turn, rather than drawn: each restaurant's
    /// own where the request names one the list has (palate's `X-Request-Id`).
    pub replay_outputs: bool,
}

impl Default for SimConfig {
    /// The built-in profile's engine, palate's token estimate, answers always valid.
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            models: vec!["sim".into()],
            faults: FaultPlan::default(),
            tokens: TokenRates::default(),
            outputs: BTreeMap::new(),
            replay_outputs: false,
        }
    }
}

impl SimConfig {
    /// Everything the profile models: engine, token counts, answers.
    pub fn from_profile(p: Profile) -> Self {
        Self {
            engine: p.engine,
            tokens: p.tokens,
            outputs: p.outputs,
            ..Self::default()
        }
    }
}

struct State {
    cfg: SimConfig,
    engine: mpsc::UnboundedSender<NewSeq>,
    stats: Arc<Mutex<EngineStats>>,
    requests: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    /// Connection faults draw from their own generator, so their sequence does not depend on how
    /// accepts and requests interleave.
    conn_rng: Mutex<fastrand::Rng>,
    injected: Mutex<BTreeMap<Fault, u64>>,
    /// Under `replay_outputs`: answers given so far, by kind and restaurant.
    replayed: Mutex<BTreeMap<(String, Option<String>), usize>>,
    close_connections: bool,
}

/// A running simulated server; stops when dropped.
pub struct SimServer {
    /// Base URL, `http://127.0.0.1:PORT/v1`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SimServer {
    /// Binds a free port on 127.0.0.1 and serves until dropped.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Self> {
        Self::start_at(cfg, "127.0.0.1:0").await
    }

    /// Serves on `addr` (`host:port`) until dropped.
    pub async fn start_at(cfg: SimConfig, addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        tokio::spawn(engine::run(cfg.engine.clone(), rx, Arc::clone(&stats)));
        let state = Arc::new(State {
            close_connections: cfg
                .faults
                .rates
                .iter()
                .any(|(f, r)| *f == Fault::Refused && *r > 0.0),
            rng: Mutex::new(fastrand::Rng::with_seed(cfg.faults.seed)),
            conn_rng: Mutex::new(fastrand::Rng::with_seed(cfg.faults.seed ^ 0x5eed)),
            cfg,
            engine: tx,
            stats,
            requests: AtomicU64::new(0),
            injected: Mutex::new(BTreeMap::new()),
            replayed: Mutex::new(BTreeMap::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(http::accept(listener, Arc::clone(&state), stop.clone()));
        Ok(Self { url, state, stop })
    }

    pub fn stats(&self) -> EngineStats {
        lock(&self.state.stats).clone()
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<Fault, u64> {
        lock(&self.state.injected).clone()
    }

    /// Chat requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl State {
    fn draw(&self, n: Option<u64>, refused: bool) -> Option<Fault> {
        let f = &self.cfg.faults;
        let fault = match n.and_then(|n| f.schedule.get(&n)) {
            Some(&fault) => Some(fault),
            None => {
                let mut rng = lock(if refused { &self.conn_rng } else { &self.rng });
                f.rates
                    .iter()
                    .filter(|(k, _)| (*k == Fault::Refused) == refused)
                    .find(|(_, rate)| rng.f64() < *rate)
                    .map(|(k, _)| *k)
            }
        };
        if let Some(k) = fault {
            *lock(&self.injected).entry(k).or_default() += 1;
        }
        fault
    }

    /// Under `replay_outputs`: the next answer length of `kind` in the listed order, counting
    /// only `restaurant`'s when the list names that restaurant, so each restaurant gets its own
    /// answers whatever order its requests arrive in.
    fn replayed(&self, kind: &str, restaurant: Option<&str>, m: &OutputModel) -> usize {
        let restaurant = restaurant.filter(|r| m.restaurants.iter().any(|x| x == r));
        let mut given = lock(&self.replayed);
        let i = given
            .entry((kind.to_string(), restaurant.map(str::to_string)))
            .or_insert(0);
        let n = *i;
        *i += 1;
        let theirs = || {
            (m.tokens.iter().enumerate())
                .filter(move |(j, _)| {
                    restaurant.is_none_or(|r| m.restaurants.get(*j).is_some_and(|x| x == r))
                })
                .map(|(_, t)| *t as usize)
        };
        // `restaurant` is one the list names, so `theirs` is never empty.
        theirs().nth(n % theirs().count()).unwrap_or_default()
    }
}
