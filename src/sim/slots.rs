//! llama.cpp's server keeps no shared block cache: each of its `--parallel` slots keeps the
//! tokens of the last prompt it ran and the answer it wrote, and a new request reuses the longest
//! common prefix with the slot it is given. It is given the idle slot whose tokens cover the
//! largest share of its prompt (`f_sim`, above the server's `slot_prompt_similarity`, 0.1 in the
//! build palate installs), else the least recently used one (its log: "selected slot by LCP
//! similarity, f_sim_best = 0.292 (> 0.100 thold), f_keep = 0.088", "selected slot by LRU").
//!
//! The server's host-memory prompt cache (`--cache-ram`) is only consulted when the slot would
//! lose most of what it holds: given by LRU, or by similarity with `f_keep` (the share of the
//! slot's tokens the new prompt keeps) under 0.5. Then the slot's tokens are saved to the cache,
//! and the new request starts from a saved prompt instead if that one shares more of it (and at
//! least a quarter of the saved prompt: "don't trash large prompts"), which leaves the cache.
//! Apart from that, each time a request takes a slot, every idle slot is saved ("saving idle slot
//! to prompt cache"); a saved prompt that another one extends is dropped. In palate's demo job a
//! restaurant's first sentiment request reuses only the system turn (109 tokens): the other
//! restaurants' sentiment prompts sit in busy slots, and a slot whose next sentiment prompt keeps
//! 84 % of it is not saved as that prompt takes it (llama-server's debug log,
//! `out/bench/llama-server-1.log`).
//!
//! So what a request finds differs from vLLM's shared cache: a prompt still running in another
//! slot is not there to share (vLLM shares it at once), and the slot a request lands in may hold
//! another restaurant's prompt, sharing only the instructions' first tokens.

use std::collections::VecDeque;

/// Share of a prompt a slot must already hold to be chosen for it over the least recently used.
pub const SIMILARITY: f64 = 0.1;
/// Below this share of a slot's tokens kept, the slot is saved and the prompt cache searched.
const KEEP: f64 = 0.5;
/// A saved prompt is restored only when the new prompt keeps at least this share of it.
const RESTORE_KEEP: f64 = 0.25;

#[derive(Default)]
struct Slot {
    tokens: Vec<u32>,
    busy: bool,
    /// When it was last released; 0 never used.
    last_used: u64,
}

/// Where a prompt goes, and what it finds computed there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Choice {
    pub slot: usize,
    /// Its first tokens already computed (in the slot, or in the saved prompt restored).
    pub cached: usize,
    /// The slot loses most of what it held: it is saved to the prompt cache first.
    update: bool,
    /// The saved prompt restored in its place.
    restore: Option<usize>,
}

pub(super) struct Slots {
    slots: Vec<Slot>,
    tick: u64,
    /// The host-memory prompt cache: prompts saved from slots, the oldest first.
    saved: VecDeque<Vec<u32>>,
    saved_tokens: usize,
    /// Most tokens it keeps (the oldest prompts go first).
    capacity: usize,
    /// Ids for answer tokens: none equals another or a prompt's (those are hashes of text, and
    /// the sim cannot know what the model wrote).
    next_answer_token: u32,
}

impl Slots {
    /// `n` slots and a prompt cache of `capacity` tokens.
    pub(super) fn new(n: usize, capacity: usize) -> Self {
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            tick: 0,
            saved: VecDeque::new(),
            saved_tokens: 0,
            capacity,
            next_answer_token: 0,
        }
    }

    /// The idle slot `prompt` would be given and what it finds there; `None` while every slot
    /// is busy. Nothing changes until [`Slots::take`].
    pub(super) fn choose(&self, prompt: &[u32]) -> Option<Choice> {
        let idle = || (self.slots.iter().enumerate()).filter(|(_, s)| !s.busy);
        let best = idle()
            .map(|(i, s)| (i, lcp(&s.tokens, prompt)))
            .filter(|&(_, n)| n as f64 > SIMILARITY * prompt.len() as f64)
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
        let (slot, own, update) = match best {
            Some((i, n)) => (i, n, (n as f64) < KEEP * self.slots[i].tokens.len() as f64),
            None => {
                let (i, s) = idle().min_by_key(|(i, s)| (s.last_used, std::cmp::Reverse(*i)))?;
                (i, lcp(&s.tokens, prompt), true)
            }
        };
        let held = self.slots[slot].tokens.len();
        let keep = |n: usize, len: usize| {
            if len == 0 {
                -1.0
            } else {
                n as f64 / len as f64
            }
        };
        // The slot's own prefix, unless a saved prompt is restored in its place.
        let mut best = (keep(own, held), own, None);
        if update {
            for (j, t) in self.saved.iter().enumerate() {
                let n = lcp(t, prompt);
                let k = keep(n, t.len());
                if k >= RESTORE_KEEP && k > best.0 && n > best.1 {
                    best = (k, n, Some(j));
                }
            }
        }
        let (_, cached, restore) = best;
        Some(Choice {
            slot,
            cached,
            update,
            restore,
        })
    }

    /// The chosen slot runs `prompt` now: what it held is saved first where the choice says so,
    /// and every other idle slot is saved as the server does when a request starts.
    pub(super) fn take(&mut self, c: &Choice, prompt: &[u32]) {
        if let Some(j) = c.restore {
            if let Some(t) = self.saved.remove(j) {
                self.saved_tokens -= t.len();
            }
        }
        let old = std::mem::replace(&mut self.slots[c.slot].tokens, prompt.to_vec());
        self.slots[c.slot].busy = true;
        if c.update {
            self.save(old);
        }
        let idle: Vec<Vec<u32>> = (self.slots.iter())
            .filter(|s| !s.busy && !s.tokens.is_empty())
            .map(|s| s.tokens.clone())
            .collect();
        for t in idle {
            self.save(t);
        }
    }

    /// Slot `i` is idle again, keeping its prompt and the `answer` tokens it wrote.
    pub(super) fn release(&mut self, i: usize, answer: usize) {
        self.tick += 1;
        let first = self.next_answer_token;
        self.next_answer_token = first.wrapping_add(answer as u32);
        let s = &mut self.slots[i];
        s.busy = false;
        s.last_used = self.tick;
        s.tokens
            .extend((0..answer as u32).map(|k| u32::MAX - first.wrapping_add(k)));
    }

    /// Puts `tokens` in the prompt cache unless a saved prompt already holds them, dropping the
    /// saved prompts they extend and then the oldest beyond the capacity.
    fn save(&mut self, tokens: Vec<u32>) {
        if tokens.is_empty() || self.saved.iter().any(|t| lcp(t, &tokens) == tokens.len()) {
            return;
        }
        let before = self.saved.len();
        self.saved.retain(|t| lcp(t, &tokens) < t.len());
        if self.saved.len() != before {
            self.saved_tokens = self.saved.iter().map(Vec::len).sum();
        }
        self.saved_tokens += tokens.len();
        self.saved.push_back(tokens);
        while self.saved_tokens > self.capacity {
            let Some(t) = self.saved.pop_front() else {
                break;
            };
            self.saved_tokens -= t.len();
        }
    }
}

/// Length of the common prefix.
fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(s: &Slots, p: &[u32]) -> Option<(usize, usize)> {
        s.choose(p).map(|c| (c.slot, c.cached))
    }

    fn take(s: &mut Slots, p: &[u32]) -> usize {
        let c = s.choose(p).expect("an idle slot");
        s.take(&c, p);
        c.slot
    }

    fn sentiment(review: u32) -> Vec<u32> {
        (0..40).chain([review; 10]).collect()
    }

    #[test]
    fn a_prompt_goes_to_the_slot_holding_most_of_it_else_the_least_recently_used() {
        let mut s = Slots::new(3, 0);
        let summary: Vec<u32> = (100..200).collect();
        // Never used: the last slot first, as llama.cpp's log shows (id 3, 2, 1 of 4).
        assert_eq!(chosen(&s, &summary), Some((2, 0)));
        take(&mut s, &summary);
        assert_eq!(chosen(&s, &sentiment(1)), Some((1, 0)));
        take(&mut s, &sentiment(1));
        s.release(2, 30);
        s.release(1, 3);
        // Slot 1 holds the instructions (40 of 50 tokens); slot 0 is older but holds nothing.
        assert_eq!(chosen(&s, &sentiment(2)), Some((1, 40)));
        take(&mut s, &sentiment(2));
        // Slot 1 is busy: slot 2 holds nothing of it (0 ≤ 10 %), slot 0 was never used (LRU).
        assert_eq!(chosen(&s, &sentiment(3)), Some((0, 0)));
        take(&mut s, &sentiment(3));
        assert_eq!(chosen(&s, &sentiment(4)), Some((2, 0)));
        take(&mut s, &sentiment(4));
        assert_eq!(chosen(&s, &sentiment(5)), None, "every slot busy");
    }

    #[test]
    fn a_prompt_a_slot_gave_up_is_restored_from_the_cache() {
        let mut s = Slots::new(1, 1000);
        let summary: Vec<u32> = (0..100).collect();
        let strengths: Vec<u32> = (0..90).chain(500..520).collect();
        let other: Vec<u32> = (1000..1050).collect();
        take(&mut s, &summary);
        s.release(0, 0);
        take(&mut s, &other);
        s.release(0, 0);
        // The one slot holds the other prompt; the summary's 90 shared tokens come back, and
        // the saved summary leaves the cache for the slot.
        assert_eq!(chosen(&s, &strengths), Some((0, 90)));
        take(&mut s, &strengths);
        assert_eq!(s.saved, std::slice::from_ref(&other));
        // A cache of 60 tokens kept only the newest prompt that fits: nothing of the summary.
        let mut small = Slots::new(1, 60);
        for p in [&summary, &other] {
            take(&mut small, p);
            small.release(0, 0);
        }
        take(&mut small, &strengths);
        assert_eq!(
            small.saved,
            [other],
            "the summary went, the other prompt stays"
        );
        small.release(0, 0);
        assert_eq!(
            chosen(&small, &summary),
            Some((0, 90)),
            "from the slot itself"
        );
    }

    #[test]
    fn a_slot_that_keeps_most_of_its_tokens_is_not_saved_but_idle_slots_are() {
        // A restaurant's sentiment prompts, one after another in slot 1: each keeps 40 of the
        // 53 tokens the slot holds (75 %), so none is saved to the cache.
        let mut s = Slots::new(2, 10_000);
        for review in 1..=3 {
            assert_eq!(take(&mut s, &sentiment(review)), 1);
            s.release(1, 3);
        }
        assert!(s.saved.is_empty());
        // Another restaurant's summary takes slot 0 (LRU): slot 1 is idle, so it is saved.
        let summary: Vec<u32> = (100..200).collect();
        assert_eq!(take(&mut s, &summary), 0);
        assert_eq!(s.saved.len(), 1);
        assert_eq!(s.saved[0][..50], sentiment(3)[..]);
        // While slot 1 runs the next sentiment prompt, the summary's restaurant starts its own:
        // its slot shares nothing, and the saved sentiment prompt gives the instructions.
        take(&mut s, &sentiment(4));
        s.release(0, 20);
        assert_eq!(chosen(&s, &sentiment(9)), Some((0, 40)));
        // A saved prompt is dropped once a longer one that starts with it is saved.
        s.save(sentiment(4)[..45].to_vec());
        s.save(sentiment(4));
        assert!(!s.saved.iter().any(|t| t.len() == 45));
    }
}
