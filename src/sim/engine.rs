//! The step loop of a continuous-batching engine, after vLLM's V1 scheduler. Each step decodes
//! one token for every prefilled sequence, continues the running prefills in chunks, and admits
//! waiting sequences while `max_num_seqs`, the step's token budget (`max_num_batched_tokens`)
//! and the KV block pool ([`super::kv`]) allow. A step that needs more blocks than are free
//! preempts running sequences (the last admitted, or under priority scheduling the lowest
//! priority), which go back to the front of the queue and recompute. A step takes the time of
//! [`LatencyModel::step`]. A prefix cache keyed on chained block hashes ([`block_hashes`]) lets a
//! prompt skip the blocks an earlier prompt already computed; or, as in llama.cpp's server, each
//! of `max_num_seqs` slots keeps the last prompt it ran ([`Slots`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

pub use super::cost::{pairs, LatencyModel, StepLoad, Work};
use super::kv::{Held, KvPool};
pub use super::prefix_cache::block_hashes;
use super::prefix_cache::PrefixCache;
pub use super::profile::{EngineConfig, PrefixCacheKind};
use super::seq::{ms, Seq};
pub use super::seq::{Done, Event, NewSeq};
use super::slots::Slots;
pub use super::stats::{EngineStats, Histogram};

/// Runs until every sender of `rx` is gone.
pub async fn run(
    cfg: EngineConfig,
    mut rx: mpsc::UnboundedReceiver<NewSeq>,
    stats: Arc<Mutex<EngineStats>>,
) {
    let mut engine = Engine::new(cfg);
    {
        let mut st = crate::domain::lock(&stats);
        st.max_num_seqs = engine.cfg.max_num_seqs;
        st.time_scale = engine.scale;
    }
    loop {
        if !engine.has_work() {
            // Idle (or every waiting request still compiling its grammar): wait for work, but
            // tick every millisecond. On tokio's paused clock (benchmarks, tests) time jumps to
            // the next timer whenever no task is ready, even while request bytes are still in the
            // loopback socket; the tick keeps such a jump to 1 ms instead of letting it run to a
            // client's read timeout.
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
    /// llama.cpp's slots, in place of `cache`.
    slots: Option<Slots>,
    kv: KvPool,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    arrivals: u64,
    /// `cfg.time_scale`, or 1 where that is not a positive number.
    scale: f64,
    /// When the last step ended. Steps end at absolute deadlines, so timer rounding (1 ms)
    /// averages out over many steps.
    deadline: Instant,
}

/// What one step schedules.
#[derive(Default)]
struct Batch {
    /// Token budget still free.
    budget: usize,
    /// Each sequence's part of the step.
    work: Vec<Work>,
    /// The decoding sequences' grammar masks, ms in all.
    mask_ms: f64,
    prompt_tokens: u64,
    cached_tokens: u64,
    preempted: u64,
}

impl Engine {
    fn new(cfg: EngineConfig) -> Self {
        let scale = if cfg.time_scale.is_finite() && cfg.time_scale > 0.0 {
            cfg.time_scale
        } else {
            1.0
        };
        let slots = (cfg.prefix_cache == PrefixCacheKind::Slots)
            .then(|| Slots::new(cfg.max_num_seqs, cfg.cache_blocks * cfg.block_size));
        Self {
            cache: PrefixCache::new(if slots.is_some() { 0 } else { cfg.cache_blocks }),
            slots,
            kv: KvPool::new(cfg.kv_blocks),
            waiting: VecDeque::new(),
            running: Vec::new(),
            arrivals: 0,
            scale,
            deadline: Instant::now(),
            cfg,
        }
    }

    /// Something runs, or a waiting request may be scheduled now.
    fn has_work(&self) -> bool {
        let now = Instant::now();
        !self.running.is_empty() || self.waiting.iter().any(|s| s.ready_at <= now)
    }

    /// Puts a new request at the back of the waiting queue.
    fn admit(&mut self, s: NewSeq) {
        self.arrivals += 1;
        let blocks = block_hashes(&s.prompt, self.cfg.block_size);
        let grammar = Duration::from_secs_f64(self.cfg.latency.grammar_ms * self.scale / 1000.0);
        let mut seq = Seq::new(s, blocks, self.arrivals, grammar, self.cfg.latency.mask_ms);
        if self.slots.is_none() {
            seq.prompt = Vec::new(); // only slots compare tokens; the shared cache has the hashes
        }
        self.waiting.push_back(seq);
    }

    /// One step: schedule, take the step's time, then emit a token for every prefilled sequence
    /// and finish those that are done.
    async fn step(&mut self, stats: &Mutex<EngineStats>) {
        self.order_waiting();
        let batch = self.schedule();
        let step_ms = (self.cfg.latency).step_of(&batch.work, self.running.len(), batch.mask_ms);
        self.sleep(step_ms).await;
        let now = Instant::now();
        let mut st = crate::domain::lock(stats);
        st.steps += 1;
        st.busy_ms += step_ms;
        st.running_ms += step_ms * self.running.len() as f64;
        st.seq_steps += self.running.len() as u64;
        st.prompt_tokens += batch.prompt_tokens;
        st.cached_tokens += batch.cached_tokens;
        st.prefill_tokens += (batch.work.iter())
            .filter(|w| !w.decoding)
            .map(|w| w.tokens as u64)
            .sum::<u64>();
        st.preemptions += batch.preempted;
        self.decode(now, &mut st);
        self.finish(now, &mut st);
        st.running = self.running.len();
        st.waiting = self.waiting.len();
        (st.kv_blocks_used, st.kv_blocks) = (self.kv.used(), self.kv.capacity());
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

    /// Spends the step's token budget: one token per decoding sequence (preempting while their
    /// blocks do not fit), then the running prefills, then sequences admitted from the waiting
    /// queue while places, budget and blocks are free.
    fn schedule(&mut self) -> Batch {
        let mut batch = Batch::default();
        self.make_room_to_decode(&mut batch);
        let decoding: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].prefilled())
            .collect();
        for &i in &decoding {
            let s = &mut self.running[i];
            let to = Held::of(s.context() + 1, s.blocks.len(), self.cfg.block_size);
            self.kv.grow(&s.blocks, s.held, to);
            s.held = to;
            batch.mask_ms += s.mask_ms;
            batch.work.push(Work {
                context: s.context(),
                tokens: 1,
                decoding: true,
            });
        }
        batch.budget = self
            .cfg
            .max_num_batched_tokens
            .saturating_sub(decoding.len());
        for i in 0..self.running.len() {
            if !self.running[i].prefilled() {
                self.prefill(i, &mut batch);
            }
        }
        // As in vLLM, a step that preempts admits nothing new.
        if batch.preempted == 0 {
            self.admit_waiting(&mut batch);
        }
        batch
    }

    /// Preempts running sequences until every decoding one has the block its next token needs.
    fn make_room_to_decode(&mut self, batch: &mut Batch) {
        loop {
            let bs = self.cfg.block_size;
            let need: usize = (self.running.iter().filter(|s| s.prefilled()))
                .map(|s| {
                    let to = Held::of(s.context() + 1, s.blocks.len(), bs);
                    self.kv.cost(&s.blocks, s.held, to)
                })
                .sum();
            if need <= self.kv.free() || self.running.is_empty() {
                return;
            }
            let victim = if self.cfg.priority_scheduling {
                (0..self.running.len())
                    .max_by_key(|&i| (self.running[i].priority, self.running[i].arrival))
                    .unwrap_or(0)
            } else {
                self.running.len() - 1
            };
            let mut s = self.running.remove(victim);
            self.kv.release(&s.blocks, s.held);
            release_slot(&mut self.slots, &mut s);
            s.preempt();
            batch.preempted += 1;
            self.waiting.push_front(s);
        }
    }

    /// Prefills as much of running sequence `i`'s prompt as the budget and the free blocks allow.
    fn prefill(&mut self, i: usize, batch: &mut Batch) -> bool {
        let bs = self.cfg.block_size;
        let s = &mut self.running[i];
        let mut t = (s.prefill_target() - s.computed).min(batch.budget);
        let mut to = Held::of(s.context() + t, s.blocks.len(), bs);
        while t > 0 && self.kv.cost(&s.blocks, s.held, to) > self.kv.free() {
            // Fewer tokens: up to the block boundary before the last one (none at the start).
            let boundary = (s.context() + t - 1) / bs * bs;
            t = boundary.saturating_sub(s.context());
            to = Held::of(s.context() + t, s.blocks.len(), bs);
        }
        if t == 0 {
            return false;
        }
        self.kv.grow(&s.blocks, s.held, to);
        s.held = to;
        batch.work.push(Work {
            context: s.context(),
            tokens: t,
            decoding: false,
        });
        s.computed += t;
        batch.budget -= t;
        true
    }

    /// Moves ready waiting sequences into the running set while there is room.
    fn admit_waiting(&mut self, batch: &mut Batch) {
        let now = Instant::now();
        let mut i = 0;
        while self.running.len() < self.cfg.max_num_seqs && batch.budget > 0 {
            let Some(s) = self.waiting.get(i) else {
                break;
            };
            if s.ready_at > now {
                i += 1; // still compiling its grammar: the next one may go first
                continue;
            }
            let Some(mut s) = self.waiting.remove(i) else {
                break;
            };
            let slot = self.slots.as_ref().and_then(|sl| sl.choose(&s.prompt));
            let cached = match slot {
                Some(c) => c.cached,
                None => self.cache.hits(&s.blocks) * self.cfg.block_size,
            };
            // At least one token is always computed, as in vLLM and llama.cpp.
            s.cached = cached.min(s.prompt_len - 1);
            let start = Held::of(s.cached, s.blocks.len(), self.cfg.block_size);
            if self.kv.cost(&s.blocks, Held::default(), start) > self.kv.free() {
                self.waiting.insert(i, s);
                break;
            }
            self.kv.grow(&s.blocks, Held::default(), start);
            s.held = start;
            s.computed = s.cached;
            if s.resumed_from == 0 {
                s.admitted_at = Some(now);
                batch.prompt_tokens += s.prompt_len as u64;
                batch.cached_tokens += s.cached as u64;
            }
            self.running.push(s);
            let last = self.running.len() - 1;
            if !self.prefill(last, batch) {
                let mut s = self.running.remove(last);
                self.kv.release(&s.blocks, s.held);
                s.held = Held::default();
                self.waiting.insert(i, s);
                break;
            }
            if let (Some(slots), Some(c)) = (&mut self.slots, slot) {
                let s = &mut self.running[last];
                slots.take(&c, &s.prompt);
                s.slot = Some(c.slot);
            }
        }
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

    /// Sends the next token of every sequence prefilled before this step (one that has just
    /// finished its prefill samples its first token too); a sequence's first token also caches
    /// its prompt's blocks. A sequence whose client went away is marked aborted.
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

    /// Drops aborted sequences and finishes those that sent their whole answer; both give back
    /// their blocks.
    fn finish(&mut self, now: Instant, st: &mut EngineStats) {
        let scale = self.scale;
        let kv = &mut self.kv;
        let slots = &mut self.slots;
        self.running.retain_mut(|s| {
            if s.emitted < s.target() {
                return true;
            }
            release_slot(slots, s);
            if s.emitted == usize::MAX {
                kv.release(&s.blocks, s.held);
                st.aborted += 1;
                return false;
            }
            kv.release(&s.blocks, s.held);
            let done = s.done(now, scale);
            observe_done(st, s, &done, now, scale);
            let _ = s.tx.send(Event::Done(done));
            false
        });
    }
}

/// Gives back the llama.cpp slot `s` ran in, if it had one, holding its prompt and answer.
fn release_slot(slots: &mut Option<Slots>, s: &mut Seq) {
    if let (Some(slots), Some(i)) = (slots, s.slot.take()) {
        slots.release(i, s.emitted.min(s.target()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(kv_blocks: usize, priority: bool) -> Engine {
        Engine::new(EngineConfig {
            latency: LatencyModel::constant(1.0),
            max_num_seqs: 8,
            max_num_batched_tokens: 64,
            block_size: 16,
            kv_blocks,
            cache_blocks: 0,
            prefix_cache: PrefixCacheKind::Shared,
            priority_scheduling: priority,
            time_scale: 1.0,
        })
    }

    /// A request of `prompt` distinct tokens answering `output` tokens.
    fn seq(
        e: &mut Engine,
        first: u32,
        prompt: u32,
        output: usize,
        priority: i64,
    ) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        e.admit(NewSeq {
            prompt: (first..first + prompt).collect(),
            output: vec!["x".into(); output],
            max_tokens: output,
            priority,
            constrained: false,
            mask_ms: None,
            tx,
        });
        rx
    }

    async fn drain(e: &mut Engine, stats: &Mutex<EngineStats>) {
        for _ in 0..10_000 {
            if e.running.is_empty() && e.waiting.is_empty() {
                return;
            }
            e.step(stats).await;
        }
        panic!("the engine did not finish");
    }

    fn tokens(rx: &mut mpsc::UnboundedReceiver<Event>) -> (usize, Option<Done>) {
        let (mut n, mut done) = (0, None);
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Token(_) => n += 1,
                Event::Done(d) => done = Some(d),
            }
        }
        (n, done)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_preempts_the_last_admitted_and_every_answer_completes() {
        // 10 blocks of 16: three 40-token prompts answering 60 tokens each need 7 blocks apiece.
        let mut e = engine(10, false);
        let stats = Mutex::new(EngineStats::default());
        let mut rx: Vec<_> = (0..3).map(|i| seq(&mut e, i * 1000, 40, 60, 0)).collect();
        drain(&mut e, &stats).await;
        let st = crate::domain::lock(&stats).clone();
        assert!(st.preemptions > 0, "no preemption with a pool this small");
        assert_eq!(st.finished, 3);
        assert_eq!(e.kv.used(), 0, "every block given back");
        for r in &mut rx {
            let (n, done) = tokens(r);
            assert_eq!(n, 60, "a preempted sequence resumes where it was");
            assert_eq!(done.unwrap().completion_tokens, 60);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_is_preempted() {
        let mut e = engine(0, false);
        let stats = Mutex::new(EngineStats::default());
        let _rx: Vec<_> = (0..3).map(|i| seq(&mut e, i * 1000, 40, 60, 0)).collect();
        drain(&mut e, &stats).await;
        assert_eq!(crate::domain::lock(&stats).preemptions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn under_priority_scheduling_the_lowest_priority_is_preempted_and_finishes_last() {
        let mut e = engine(10, true);
        let stats = Mutex::new(EngineStats::default());
        // Admitted in this order; the first is the least urgent.
        let mut low = seq(&mut e, 0, 40, 60, 9);
        let mut high = seq(&mut e, 1000, 40, 60, 1);
        drain(&mut e, &stats).await;
        let (_, low) = tokens(&mut low);
        let (_, high) = tokens(&mut high);
        let (low, high) = (low.unwrap(), high.unwrap());
        assert!(crate::domain::lock(&stats).preemptions > 0);
        assert!(
            high.queue_ms + high.prefill_ms + high.decode_ms
                < low.queue_ms + low.prefill_ms + low.decode_ms,
            "the urgent one finishes first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_split_equal_a_step_of_unequal_prompts_runs_as_two_micro_batches() {
        async fn busy(split_equal: bool) -> f64 {
            let latency = LatencyModel {
                token_ms: 1.0,
                split_equal,
                ..LatencyModel::constant(1.0)
            };
            let mut e = Engine::new(EngineConfig {
                latency,
                ..engine(100, false).cfg
            });
            let stats = Mutex::new(EngineStats::default());
            let (_a, _b) = (seq(&mut e, 0, 16, 4, 0), seq(&mut e, 1000, 48, 4, 0));
            drain(&mut e, &stats).await;
            let busy = crate::domain::lock(&stats).busy_ms;
            busy
        }
        // The first step computes 16 tokens of each, then the other 32 of the second prompt:
        // one micro-batch, so one step_ms, more.
        assert_eq!(busy(true).await - busy(false).await, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_decode_step_costs_more_with_more_context() {
        let m = LatencyModel {
            weights_ms: 5.0,
            kv_token_us: 1.0,
            ..LatencyModel::constant(1.0)
        };
        let mut e = Engine::new(EngineConfig {
            latency: m,
            ..engine(0, false).cfg
        });
        let stats = Mutex::new(EngineStats::default());
        let mut short = seq(&mut e, 0, 16, 20, 0);
        drain(&mut e, &stats).await;
        let mut e2 = Engine::new(e.cfg.clone());
        let mut long = seq(&mut e2, 0, 4000, 20, 0);
        drain(&mut e2, &stats).await;
        let (short, long) = (tokens(&mut short).1.unwrap(), tokens(&mut long).1.unwrap());
        // 19 decode steps of 1 + 5 + ~0.02-0.04 ms vs 1 + 5 + ~4 ms.
        assert!(short.decode_ms < 130.0, "{}", short.decode_ms);
        assert!(long.decode_ms > 180.0, "{}", long.decode_ms);
    }

    /// A prompt of a 40-token shared instruction and 10 tokens of its own, one after another.
    fn sentiment(e: &mut Engine, own: u32) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        e.admit(NewSeq {
            prompt: (0..40).chain(own..own + 10).collect(),
            output: vec!["x".into(); 2],
            max_tokens: 2,
            priority: 0,
            constrained: false,
            mask_ms: None,
            tx,
        });
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn llama_cpp_slots_reuse_what_the_slot_or_the_prompt_cache_holds() {
        let stats = Mutex::new(EngineStats::default());
        let slots = |max_num_seqs, cache_blocks| {
            Engine::new(EngineConfig {
                max_num_seqs,
                cache_blocks,
                prefix_cache: PrefixCacheKind::Slots,
                ..engine(0, false).cfg
            })
        };
        let mut e = slots(2, 0);
        let mut cached = Vec::new();
        for own in [100, 200] {
            let mut rx = sentiment(&mut e, own);
            drain(&mut e, &stats).await;
            cached.push(tokens(&mut rx).1.unwrap().cached_tokens);
        }
        // The second finds the instructions in the slot the first left, to the token (no blocks).
        assert_eq!(cached, [0, 40]);
        // One slot, and another prompt ran in it between: without a prompt cache nothing is
        // left to reuse; with one, the instructions come back from it.
        for (cache_blocks, want) in [(0, 0), (1000, 40)] {
            let mut e = slots(1, cache_blocks);
            let _first = sentiment(&mut e, 100);
            drain(&mut e, &stats).await;
            let _other = seq(&mut e, 5000, 60, 2, 0);
            drain(&mut e, &stats).await;
            let mut again = sentiment(&mut e, 200);
            drain(&mut e, &stats).await;
            assert_eq!(tokens(&mut again).1.unwrap().cached_tokens, want);
        }
    }
}
