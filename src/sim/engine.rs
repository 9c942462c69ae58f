//! The step loop of a continuous-batching engine, after vLLM's scheduler: each step admits waiting
//! sequences while `max_num_seqs` and the step's token budget (`max_num_batched_tokens`) allow,
//! prefills them in chunks, decodes one token for every running sequence, and takes
//! `step_ms + prefill_token_ms · prefill tokens + seq_ms · running sequences` of (tokio) time.
//! A prefix cache keyed on chained block hashes ([`block_hashes`]) lets a prompt skip the blocks an
//! earlier prompt already computed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

pub use super::prefix_cache::block_hashes;
use super::prefix_cache::PrefixCache;
pub use super::stats::{EngineStats, Histogram};

/// Roofline-style step cost: a fixed part (weights read once per step), a part per prefill token
/// (compute) and a part per running sequence (its KV cache read).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyModel {
    pub step_ms: f64,
    pub prefill_token_ms: f64,
    pub seq_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineConfig {
    pub latency: LatencyModel,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens (prefill + one per decoding sequence) computed in one step.
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block; the prefix cache works in whole blocks.
    pub block_size: usize,
    /// Blocks the prefix cache keeps (least recently used go first); 0 turns caching off.
    pub cache_blocks: usize,
    /// Waiting queue ordered by the request's `priority` (lower first), else first come first served.
    pub priority_scheduling: bool,
    /// Real seconds per simulated second: 0.1 runs the model ten times faster than real time.
    /// Every timing the server reports is in simulated time.
    pub time_scale: f64,
}

impl Default for EngineConfig {
    /// Figures of the order of a 7B model on one H100 under vLLM.
    fn default() -> Self {
        Self {
            latency: LatencyModel {
                step_ms: 8.0,
                prefill_token_ms: 0.03,
                seq_ms: 0.15,
            },
            max_num_seqs: 64,
            max_num_batched_tokens: 8192,
            block_size: 16,
            cache_blocks: 100_000,
            priority_scheduling: false,
            time_scale: 1.0,
        }
    }
}

/// What a sequence sends back while it runs.
#[derive(Debug)]
pub enum Event {
    Token(String),
    Done(Done),
}

/// A finished sequence's usage and server-side timings.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub queue_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// A request handed to the engine.
pub struct NewSeq {
    pub prompt: Vec<u32>,
    /// The whole answer, one token per piece; cut at `max_tokens`.
    pub output: Vec<String>,
    pub max_tokens: usize,
    pub priority: i64,
    pub tx: mpsc::UnboundedSender<Event>,
}

struct Seq {
    blocks: Vec<u64>,
    prompt_len: usize,
    output: Vec<String>,
    max_tokens: usize,
    priority: i64,
    arrival: u64,
    tx: mpsc::UnboundedSender<Event>,
    arrived_at: Instant,
    admitted_at: Option<Instant>,
    first_token_at: Option<Instant>,
    cached: usize,
    computed: usize,
    emitted: usize,
}

impl Seq {
    fn prefilled(&self) -> bool {
        self.computed >= self.prompt_len
    }
    fn target(&self) -> usize {
        self.output.len().min(self.max_tokens).max(1)
    }
}

impl Seq {
    /// Usage and timings of a sequence finishing `now`.
    fn done(&self, now: Instant, scale: f64) -> Done {
        let admitted = self.admitted_at.unwrap_or(self.arrived_at);
        let first = self.first_token_at.unwrap_or(now);
        Done {
            finish_reason: if self.output.len() > self.max_tokens {
                "length"
            } else {
                "stop"
            },
            prompt_tokens: self.prompt_len,
            cached_tokens: self.cached,
            completion_tokens: self.emitted,
            queue_ms: ms(admitted - self.arrived_at, scale),
            prefill_ms: ms(first - admitted, scale),
            decode_ms: ms(now - first, scale),
        }
    }
}

/// Simulated milliseconds of a real duration.
fn ms(d: Duration, scale: f64) -> f64 {
    d.as_secs_f64() * 1000.0 / scale
}

/// Runs until every sender of `rx` is gone.
pub async fn run(
    cfg: EngineConfig,
    mut rx: mpsc::UnboundedReceiver<NewSeq>,
    stats: Arc<Mutex<EngineStats>>,
) {
    let mut engine = Engine::new(cfg);
    loop {
        if engine.idle() {
            // Idle: wait for work, but tick every millisecond. On tokio's paused clock (benchmarks,
            // tests) time jumps to the next timer whenever no task is ready, even while request
            // bytes are still in the loopback socket; the tick keeps such a jump to 1 ms instead
            // of letting it run to a client's read timeout.
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => engine.admit(s),
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(1)) => continue,
            }
        }
        while let Ok(s) = rx.try_recv() {
            engine.admit(s);
        }
        engine.step(&stats).await;
    }
}

/// The engine's state between steps.
struct Engine {
    cfg: EngineConfig,
    cache: PrefixCache,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    arrivals: u64,
    /// `cfg.time_scale`, or 1 where that is not a positive number.
    scale: f64,
    /// When the last step ended. Steps end at absolute deadlines, so timer rounding (1 ms)
    /// averages out over many steps.
    deadline: Instant,
}

/// What one step schedules: the token budget still free and the prompt tokens taken so far.
struct Batch {
    budget: usize,
    prefill: usize,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Batch {
    /// Prefills as much of `s`'s prompt as the budget allows.
    fn prefill(&mut self, s: &mut Seq) {
        let t = (s.prompt_len - s.computed).min(self.budget);
        s.computed += t;
        self.prefill += t;
        self.budget -= t;
    }
}

impl Engine {
    fn new(cfg: EngineConfig) -> Self {
        let scale = if cfg.time_scale.is_finite() && cfg.time_scale > 0.0 {
            cfg.time_scale
        } else {
            1.0
        };
        Self {
            cache: PrefixCache::new(cfg.cache_blocks),
            waiting: VecDeque::new(),
            running: Vec::new(),
            arrivals: 0,
            scale,
            deadline: Instant::now(),
            cfg,
        }
    }

    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Puts a new request at the back of the waiting queue.
    fn admit(&mut self, s: NewSeq) {
        self.arrivals += 1;
        self.waiting.push_back(Seq {
            blocks: block_hashes(&s.prompt, self.cfg.block_size),
            prompt_len: s.prompt.len().max(1),
            output: s.output,
            max_tokens: s.max_tokens,
            priority: s.priority,
            arrival: self.arrivals,
            tx: s.tx,
            arrived_at: Instant::now(),
            admitted_at: None,
            first_token_at: None,
            cached: 0,
            computed: 0,
            emitted: 0,
        });
    }

    /// One step: schedule, take the step's time, then emit a token for every prefilled sequence
    /// and finish those that are done.
    async fn step(&mut self, stats: &Mutex<EngineStats>) {
        self.order_waiting();
        let batch = self.schedule();
        let step_ms = self.step_ms(batch.prefill);
        self.sleep(step_ms).await;
        let now = Instant::now();
        let mut st = crate::domain::lock(stats);
        st.steps += 1;
        st.busy_ms += step_ms;
        st.seq_steps += self.running.len() as u64;
        st.prompt_tokens += batch.prompt_tokens;
        st.cached_tokens += batch.cached_tokens;
        st.prefill_tokens += batch.prefill as u64;
        self.decode(now, &mut st);
        self.finish(now, &mut st);
        st.running = self.running.len();
        st.waiting = self.waiting.len();
        st.cache_blocks_used = self.cache.len();
        st.cache_blocks = self.cache.capacity();
    }

    /// Drops requests whose client went away (they free their place) and, under priority
    /// scheduling, orders the rest by priority, then arrival.
    fn order_waiting(&mut self) {
        self.waiting.retain(|s| !s.tx.is_closed());
        if self.cfg.priority_scheduling {
            self.waiting
                .make_contiguous()
                .sort_by_key(|s| (s.priority, s.arrival));
        }
    }

    /// Spends the step's token budget: one token per decoding sequence, then the running
    /// prefills, then sequences admitted from the waiting queue while places are free.
    fn schedule(&mut self) -> Batch {
        let decoding = self.running.iter().filter(|s| s.prefilled()).count();
        let mut batch = Batch {
            budget: self.cfg.max_num_batched_tokens.saturating_sub(decoding),
            prefill: 0,
            prompt_tokens: 0,
            cached_tokens: 0,
        };
        for s in self.running.iter_mut().filter(|s| !s.prefilled()) {
            batch.prefill(s);
        }
        while self.running.len() < self.cfg.max_num_seqs && batch.budget > 0 {
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            s.admitted_at = Some(Instant::now());
            // At least one token is always computed, as in vLLM.
            s.cached = (self.cache.hits(&s.blocks) * self.cfg.block_size).min(s.prompt_len - 1);
            s.computed = s.cached;
            batch.prompt_tokens += s.prompt_len as u64;
            batch.cached_tokens += s.cached as u64;
            batch.prefill(&mut s);
            self.running.push(s);
        }
        batch
    }

    /// Simulated time of a step computing `prefill` prompt tokens.
    fn step_ms(&self, prefill: usize) -> f64 {
        let lat = self.cfg.latency;
        lat.step_ms + lat.prefill_token_ms * prefill as f64 + lat.seq_ms * self.running.len() as f64
    }

    /// Sleeps until this step's deadline: `step_ms` after the last one, or after 2 ms ago if
    /// the engine has fallen further behind (or was idle).
    async fn sleep(&mut self, step_ms: f64) {
        let now = Instant::now();
        self.deadline = self
            .deadline
            .max(now.checked_sub(Duration::from_millis(2)).unwrap_or(now))
            + Duration::from_secs_f64(step_ms * self.scale / 1000.0);
        tokio::time::sleep_until(self.deadline).await;
    }

    /// Sends the next token of every prefilled sequence; a sequence's first token also caches its
    /// prompt's blocks. A sequence whose client went away is marked aborted.
    fn decode(&mut self, now: Instant, st: &mut EngineStats) {
        for s in self.running.iter_mut().filter(|s| s.prefilled()) {
            if s.first_token_at.is_none() {
                s.first_token_at = Some(now);
                self.cache.insert(&s.blocks);
            }
            let piece = s.output.get(s.emitted).cloned().unwrap_or_default();
            s.emitted += 1;
            st.generation_tokens += 1;
            if s.tx.send(Event::Token(piece)).is_err() {
                s.emitted = usize::MAX;
            }
        }
    }

    /// Drops aborted sequences and finishes those that sent their whole answer.
    fn finish(&mut self, now: Instant, st: &mut EngineStats) {
        let scale = self.scale;
        self.running.retain(|s| {
            if s.emitted == usize::MAX {
                st.aborted += 1;
                return false;
            }
            if s.emitted < s.target() {
                return true;
            }
            let done = s.done(now, scale);
            observe_done(st, s, &done, now, scale);
            let _ = s.tx.send(Event::Done(done));
            false
        });
    }
}

/// Records a finished sequence in the latency histograms.
fn observe_done(st: &mut EngineStats, s: &Seq, done: &Done, now: Instant, scale: f64) {
    let first = s.first_token_at.unwrap_or(now);
    st.queue_s.observe(done.queue_ms / 1000.0);
    st.ttft_s.observe(ms(first - s.arrived_at, scale) / 1000.0);
    st.prefill_s.observe(done.prefill_ms / 1000.0);
    st.decode_s.observe(done.decode_ms / 1000.0);
    st.e2e_s.observe(ms(now - s.arrived_at, scale) / 1000.0);
    st.finished += 1;
}
