//! The step loop of a continuous-batching engine, after vLLM's scheduler: each step admits waiting
//! sequences while `max_num_seqs` and the step's token budget (`max_num_batched_tokens`) allow,
//! prefills them in chunks, decodes one token for every running sequence, and takes
//! `step_ms + prefill_token_ms · prefill tokens + seq_ms · running sequences` of (tokio) time.
//! A prefix cache keyed on chained block hashes lets a prompt skip the blocks an earlier prompt
//! already computed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

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

/// Counters and gauges, read by `/metrics` and by benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub steps: u64,
    /// Time spent in steps (the engine had work).
    pub busy_ms: f64,
    /// Sum over steps of the sequences running in it (mean batch = seq_steps / steps).
    pub seq_steps: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens actually computed (prompt tokens minus prefix-cache hits).
    pub prefill_tokens: u64,
    pub cached_tokens: u64,
    pub generation_tokens: u64,
    pub finished: u64,
    pub aborted: u64,
    pub running: usize,
    pub waiting: usize,
    pub cache_blocks_used: usize,
    pub cache_blocks: usize,
    pub queue_s: Histogram,
    pub ttft_s: Histogram,
    pub prefill_s: Histogram,
    pub decode_s: Histogram,
    pub e2e_s: Histogram,
}

/// A Prometheus histogram with vLLM's latency buckets.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub buckets: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        let buckets = vec![
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
        ];
        let counts = vec![0; buckets.len()];
        Self {
            buckets,
            counts,
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.buckets.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
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

/// Hash of every full block, each chained to the one before it (a block matches only if all the
/// tokens before it match too).
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut prev = 0u64;
    tokens
        .chunks_exact(block_size.max(1))
        .map(|b| {
            let mut h = DefaultHasher::new();
            prev.hash(&mut h);
            b.hash(&mut h);
            prev = h.finish();
            prev
        })
        .collect()
}

/// Least-recently-used set of block hashes.
struct PrefixCache {
    capacity: usize,
    tick: u64,
    used: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl PrefixCache {
    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.used.insert(h, self.tick) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.tick, h);
    }

    /// Leading blocks already cached.
    fn hits(&mut self, blocks: &[u64]) -> usize {
        let n = blocks
            .iter()
            .take_while(|h| self.used.contains_key(h))
            .count();
        blocks[..n].iter().for_each(|&h| self.touch(h));
        n
    }

    fn insert(&mut self, blocks: &[u64]) {
        if self.capacity == 0 {
            return;
        }
        blocks.iter().for_each(|&h| self.touch(h));
        while self.used.len() > self.capacity {
            let Some((_, h)) = self.by_age.pop_first() else {
                break;
            };
            self.used.remove(&h);
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
    let mut cache = PrefixCache {
        capacity: cfg.cache_blocks,
        tick: 0,
        used: HashMap::new(),
        by_age: BTreeMap::new(),
    };
    let mut waiting: VecDeque<Seq> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut arrivals = 0u64;
    let scale = if cfg.time_scale.is_finite() && cfg.time_scale > 0.0 {
        cfg.time_scale
    } else {
        1.0
    };
    // Steps end at absolute deadlines, so timer rounding (1 ms) averages out over many steps.
    let mut deadline = Instant::now();
    let mut admit = |s: NewSeq, waiting: &mut VecDeque<Seq>| {
        arrivals += 1;
        waiting.push_back(Seq {
            blocks: block_hashes(&s.prompt, cfg.block_size),
            prompt_len: s.prompt.len().max(1),
            output: s.output,
            max_tokens: s.max_tokens,
            priority: s.priority,
            arrival: arrivals,
            tx: s.tx,
            arrived_at: Instant::now(),
            admitted_at: None,
            first_token_at: None,
            cached: 0,
            computed: 0,
            emitted: 0,
        });
    };
    loop {
        if waiting.is_empty() && running.is_empty() {
            // Idle: wait for work, but tick every millisecond. On tokio's paused clock (benchmarks,
            // tests) time jumps to the next timer whenever no task is ready, even while request
            // bytes are still in the loopback socket; the tick keeps such a jump to 1 ms instead
            // of letting it run to a client's read timeout.
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => admit(s, &mut waiting),
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(1)) => continue,
            }
        }
        while let Ok(s) = rx.try_recv() {
            admit(s, &mut waiting);
        }
        // Requests whose client went away free their place.
        waiting.retain(|s| !s.tx.is_closed());
        if cfg.priority_scheduling {
            waiting
                .make_contiguous()
                .sort_by_key(|s| (s.priority, s.arrival));
        }
        let mut budget = cfg
            .max_num_batched_tokens
            .saturating_sub(running.iter().filter(|s| s.prefilled()).count());
        let mut prefill = 0usize;
        let mut prompt_new = 0u64;
        let mut cached_new = 0u64;
        for s in running.iter_mut().filter(|s| !s.prefilled()) {
            let t = (s.prompt_len - s.computed).min(budget);
            s.computed += t;
            prefill += t;
            budget -= t;
        }
        while running.len() < cfg.max_num_seqs && budget > 0 {
            let Some(mut s) = waiting.pop_front() else {
                break;
            };
            s.admitted_at = Some(Instant::now());
            // At least one token is always computed, as in vLLM.
            s.cached = (cache.hits(&s.blocks) * cfg.block_size).min(s.prompt_len - 1);
            s.computed = s.cached;
            prompt_new += s.prompt_len as u64;
            cached_new += s.cached as u64;
            let t = (s.prompt_len - s.computed).min(budget);
            s.computed += t;
            prefill += t;
            budget -= t;
            running.push(s);
        }
        let lat = cfg.latency;
        let step_ms =
            lat.step_ms + lat.prefill_token_ms * prefill as f64 + lat.seq_ms * running.len() as f64;
        let now = Instant::now();
        deadline = deadline.max(now.checked_sub(Duration::from_millis(2)).unwrap_or(now))
            + Duration::from_secs_f64(step_ms * scale / 1000.0);
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        let mut st = match stats.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.steps += 1;
        st.busy_ms += step_ms;
        st.seq_steps += running.len() as u64;
        st.prompt_tokens += prompt_new;
        st.cached_tokens += cached_new;
        st.prefill_tokens += prefill as u64;
        for s in running.iter_mut().filter(|s| s.prefilled()) {
            if s.first_token_at.is_none() {
                s.first_token_at = Some(now);
                cache.insert(&s.blocks);
            }
            let piece = s.output.get(s.emitted).cloned().unwrap_or_default();
            s.emitted += 1;
            st.generation_tokens += 1;
            if s.tx.send(Event::Token(piece)).is_err() {
                s.emitted = usize::MAX;
            }
        }
        running.retain(|s| {
            if s.emitted == usize::MAX {
                st.aborted += 1;
                return false;
            }
            if s.emitted < s.target() {
                return true;
            }
            let admitted = s.admitted_at.unwrap_or(s.arrived_at);
            let first = s.first_token_at.unwrap_or(now);
            let done = Done {
                finish_reason: if s.output.len() > s.max_tokens {
                    "length"
                } else {
                    "stop"
                },
                prompt_tokens: s.prompt_len,
                cached_tokens: s.cached,
                completion_tokens: s.emitted,
                queue_ms: ms(admitted - s.arrived_at, scale),
                prefill_ms: ms(first - admitted, scale),
                decode_ms: ms(now - first, scale),
            };
            st.queue_s.observe(done.queue_ms / 1000.0);
            st.ttft_s.observe(ms(first - s.arrived_at, scale) / 1000.0);
            st.prefill_s.observe(done.prefill_ms / 1000.0);
            st.decode_s.observe(done.decode_ms / 1000.0);
            st.e2e_s.observe(ms(now - s.arrived_at, scale) / 1000.0);
            st.finished += 1;
            let _ = s.tx.send(Event::Done(done));
            false
        });
        st.running = running.len();
        st.waiting = waiting.len();
        st.cache_blocks_used = cache.used.len();
        st.cache_blocks = cache.capacity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hashes_chain_on_everything_before() {
        let a = block_hashes(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 4);
        let b = block_hashes(&[1, 2, 3, 4, 5, 6, 7, 0], 4);
        let c = block_hashes(&[0, 2, 3, 4, 5, 6, 7, 8], 4);
        assert_eq!(a.len(), 2, "the partial block is not hashed");
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_ne!(
            a[1], c[1],
            "same block after a different one is a different block"
        );
    }

    #[test]
    fn prefix_cache_evicts_least_recently_used() {
        let mut c = PrefixCache {
            capacity: 2,
            tick: 0,
            used: HashMap::new(),
            by_age: BTreeMap::new(),
        };
        c.insert(&[1, 2]);
        assert_eq!(c.hits(&[1, 2, 3]), 2);
        c.insert(&[3]);
        assert_eq!(c.hits(&[1]), 0, "block 1 was the least recently used");
        assert_eq!(c.hits(&[2]), 1);
    }
}
