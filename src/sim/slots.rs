//! llama.cpp's server keeps no shared block cache: each of its `--parallel` slots keeps the
//! tokens of the last prompt it ran, and a new request reuses the longest common prefix with the
//! slot it is given. It is given the idle slot whose tokens cover the largest share of its prompt
//! (`f_sim`, above the server's `slot_prompt_similarity`, 0.1 in the build palate installs),
//! else the least recently used one (its log: "selected slot by LCP similarity, f_sim_best =
//! 0.292 (> 0.100 thold)", "selected slot by LRU"). Before a slot takes a new prompt, the one it
//! held is saved to the server's host-memory prompt cache (`--cache-ram`), and the new request
//! starts from whichever saved prompt shares more of it than the slot does. In palate's demo job
//! a strengths request whose slot shared 11 % of its prompt prefilled 115 of its 1,058 tokens:
//! it found its restaurant's summary prompt, saved when a sentiment request took that slot.
//!
//! So what a request finds differs from vLLM's shared cache: a prompt still running in another
//! slot is not there to share (vLLM shares it at once), and the slot a request lands in may hold
//! another restaurant's prompt, sharing only the instructions' first tokens.

use std::collections::VecDeque;

/// Share of a prompt a slot must already hold to be chosen for it over the least recently used.
pub const SIMILARITY: f64 = 0.1;

#[derive(Default)]
struct Slot {
    tokens: Vec<u32>,
    busy: bool,
    /// When it was last released; 0 never used.
    last_used: u64,
}

pub(super) struct Slots {
    slots: Vec<Slot>,
    tick: u64,
    /// The host-memory prompt cache: prompts saved from slots, the oldest first.
    saved: VecDeque<Vec<u32>>,
    saved_tokens: usize,
    /// Most tokens it keeps (the oldest prompts go first).
    capacity: usize,
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
        }
    }

    /// The idle slot `prompt` would be given, and how many of its first tokens are already
    /// computed there (from the slot itself or a prompt restored from the cache); `None` while
    /// every slot is busy. Nothing changes until [`Slots::take`].
    pub(super) fn choose(&self, prompt: &[u32]) -> Option<(usize, usize)> {
        let idle = || (self.slots.iter().enumerate()).filter(|(_, s)| !s.busy);
        let best = idle()
            .map(|(i, s)| (i, lcp(&s.tokens, prompt)))
            .filter(|&(_, n)| n as f64 > SIMILARITY * prompt.len() as f64)
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
        let (i, own) = best.or_else(|| {
            idle()
                .min_by_key(|(i, s)| (s.last_used, std::cmp::Reverse(*i)))
                .map(|(i, s)| (i, lcp(&s.tokens, prompt)))
        })?;
        let saved = self.saved.iter().map(|t| lcp(t, prompt)).max();
        Some((i, own.max(saved.unwrap_or(0))))
    }

    /// Slot `i` runs `prompt` now; the prompt it held goes to the cache first.
    pub(super) fn take(&mut self, i: usize, prompt: &[u32]) {
        let old = std::mem::replace(&mut self.slots[i].tokens, prompt.to_vec());
        self.slots[i].busy = true;
        if !old.is_empty() && !self.saved.contains(&old) {
            self.saved_tokens += old.len();
            self.saved.push_back(old);
        }
        while self.saved_tokens > self.capacity {
            let Some(t) = self.saved.pop_front() else {
                break;
            };
            self.saved_tokens -= t.len();
        }
    }

    /// Slot `i` is idle again, keeping its tokens.
    pub(super) fn release(&mut self, i: usize) {
        self.tick += 1;
        let s = &mut self.slots[i];
        s.busy = false;
        s.last_used = self.tick;
    }
}

/// Length of the common prefix.
fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_goes_to_the_slot_holding_most_of_it_else_the_least_recently_used() {
        let mut s = Slots::new(3, 0);
        let summary: Vec<u32> = (100..200).collect();
        let sentiment = |review: u32| -> Vec<u32> { (0..40).chain([review; 10]).collect() };
        // Never used: the last slot first, as llama.cpp's log shows (id 3, 2, 1 of 4).
        assert_eq!(s.choose(&summary), Some((2, 0)));
        s.take(2, &summary);
        assert_eq!(s.choose(&sentiment(1)), Some((1, 0)));
        s.take(1, &sentiment(1));
        s.release(2);
        s.release(1);
        // Slot 1 holds the instructions (40 of 50 tokens); slot 0 is older but holds nothing.
        assert_eq!(s.choose(&sentiment(2)), Some((1, 40)));
        s.take(1, &sentiment(2));
        // Slot 1 is busy: slot 2 holds nothing of it (0 ≤ 10 %), slot 0 was never used (LRU).
        assert_eq!(s.choose(&sentiment(3)), Some((0, 0)));
        s.take(0, &sentiment(3));
        assert_eq!(s.choose(&sentiment(4)), Some((2, 0)));
        s.take(2, &sentiment(4));
        assert_eq!(s.choose(&sentiment(5)), None, "every slot busy");
    }

    #[test]
    fn a_prompt_a_slot_gave_up_is_restored_from_the_cache() {
        let mut s = Slots::new(1, 1000);
        let summary: Vec<u32> = (0..100).collect();
        let strengths: Vec<u32> = (0..90).chain(500..520).collect();
        let sentiment: Vec<u32> = (1000..1050).collect();
        s.take(0, &summary);
        s.release(0);
        s.take(0, &sentiment);
        s.release(0);
        // The one slot holds the sentiment prompt; the summary's 90 shared tokens come back.
        assert_eq!(s.choose(&strengths), Some((0, 90)));
        // A cache of 60 tokens kept only the newest prompt that fits: nothing of the summary.
        let mut small = Slots::new(1, 60);
        for p in [&summary, &sentiment] {
            small.take(0, p);
            small.release(0);
        }
        small.take(0, &strengths);
        assert_eq!(
            small.saved.len(),
            1,
            "the summary went, the sentiment prompt stays"
        );
        small.release(0);
        assert_eq!(
            small.choose(&summary).map(|c| c.1),
            Some(90),
            "from the slot itself"
        );
    }
}
