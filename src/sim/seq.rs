//! One sequence in the engine: what the HTTP side hands over ([`NewSeq`]), what the engine
//! tracks while it waits and runs ([`Seq`]), and what it sends back ([`Event`], [`Done`]).

use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::kv::Held;

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
    /// The answer, one piece per token; cut at `max_tokens`.
    pub output: Vec<String>,
    pub max_tokens: usize,
    pub priority: i64,
    /// Under a grammar (structured output): it waits for its grammar, and each step masks it.
    pub constrained: bool,
    /// Its grammar's mask per step, ms, where its kind has one.
    pub mask_ms: Option<f64>,
    pub tx: mpsc::UnboundedSender<Event>,
}

pub(super) struct Seq {
    /// Chained hashes of the prompt's full blocks.
    pub blocks: Vec<u64>,
    /// Its tokens, where the engine's slots compare them (empty otherwise).
    pub prompt: Vec<u32>,
    pub prompt_len: usize,
    /// The llama.cpp slot it runs in, where the engine has slots.
    pub slot: Option<usize>,
    pub output: Vec<String>,
    pub max_tokens: usize,
    pub priority: i64,
    /// Its grammar's mask per decode step, ms (0 without a grammar).
    pub mask_ms: f64,
    pub arrival: u64,
    pub tx: mpsc::UnboundedSender<Event>,
    pub arrived_at: Instant,
    /// When its grammar is ready and it may be scheduled.
    pub ready_at: Instant,
    pub admitted_at: Option<Instant>,
    pub first_token_at: Option<Instant>,
    pub cached: usize,
    /// Tokens computed towards [`Seq::prefill_target`].
    pub computed: usize,
    pub emitted: usize,
    /// Tokens emitted before its last preemption: they are recomputed with the prompt.
    pub resumed_from: usize,
    pub held: Held,
}

impl Seq {
    pub fn new(s: NewSeq, blocks: Vec<u64>, arrival: u64, grammar: Duration, mask_ms: f64) -> Self {
        let now = Instant::now();
        Self {
            blocks,
            prompt_len: s.prompt.len().max(1),
            prompt: s.prompt,
            slot: None,
            output: s.output,
            max_tokens: s.max_tokens,
            priority: s.priority,
            mask_ms: if s.constrained {
                s.mask_ms.unwrap_or(mask_ms)
            } else {
                0.0
            },
            arrival,
            tx: s.tx,
            arrived_at: now,
            ready_at: if s.constrained { now + grammar } else { now },
            admitted_at: None,
            first_token_at: None,
            cached: 0,
            computed: 0,
            emitted: 0,
            resumed_from: 0,
            held: Held::default(),
        }
    }

    /// Tokens to compute before the next token can be sampled.
    pub fn prefill_target(&self) -> usize {
        self.prompt_len + self.resumed_from
    }

    pub fn prefilled(&self) -> bool {
        self.computed >= self.prefill_target()
    }

    /// Tokens whose KV the sequence holds.
    pub fn context(&self) -> usize {
        self.computed + self.emitted - self.resumed_from
    }

    /// Tokens it will emit in all.
    pub fn target(&self) -> usize {
        self.output.len().min(self.max_tokens).max(1)
    }

    /// Back to waiting: it keeps what it sent and recomputes its prompt and output so far.
    pub fn preempt(&mut self) {
        self.resumed_from = self.emitted;
        self.computed = 0;
        self.held = Held::default();
    }

    /// Usage and timings of a sequence finishing `now`.
    pub fn done(&self, now: Instant, scale: f64) -> Done {
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
pub(super) fn ms(d: Duration, scale: f64) -> f64 {
    d.as_secs_f64() * 1000.0 / scale
}
