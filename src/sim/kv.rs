//! The KV block pool: every running sequence holds a block per `block_size` tokens of its context.
//! A full prompt block is keyed by its chained hash and shared by every running sequence with the
//! same prefix (one block however many hold it); the rest of a sequence's blocks (its partial
//! prompt block and its output) are its own. When a step needs more blocks than are free, the
//! engine preempts running sequences, as vLLM does, and they recompute later.

use std::collections::HashMap;

pub(super) struct KvPool {
    /// Blocks in the pool; 0 means no limit.
    capacity: usize,
    shared: HashMap<u64, u32>,
    private: usize,
}

/// The blocks one sequence holds: how many of its full prompt blocks (shared), and how many of
/// its own.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Held {
    pub shared: usize,
    pub private: usize,
}

impl Held {
    /// The blocks a sequence holds with `context` tokens computed, `prompt_blocks` of its prompt
    /// being full hashed blocks.
    pub fn of(context: usize, prompt_blocks: usize, block_size: usize) -> Self {
        let total = context.div_ceil(block_size.max(1));
        let shared = (context / block_size.max(1)).min(prompt_blocks);
        Self {
            shared,
            private: total - shared,
        }
    }
}

impl KvPool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            shared: HashMap::new(),
            private: 0,
        }
    }

    pub fn used(&self) -> usize {
        self.shared.len() + self.private
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks free; `usize::MAX` without a limit.
    pub fn free(&self) -> usize {
        if self.capacity == 0 {
            usize::MAX
        } else {
            self.capacity.saturating_sub(self.used())
        }
    }

    /// New blocks that growing from `from` to `to` takes, `hashes` being the sequence's full
    /// prompt blocks (those another sequence already holds cost nothing).
    pub fn cost(&self, hashes: &[u64], from: Held, to: Held) -> usize {
        let shared = hashes[from.shared..to.shared]
            .iter()
            .filter(|h| !self.shared.contains_key(h))
            .count();
        shared + to.private.saturating_sub(from.private)
    }

    /// Takes the blocks of growing from `from` to `to`.
    pub fn grow(&mut self, hashes: &[u64], from: Held, to: Held) {
        for h in &hashes[from.shared..to.shared] {
            *self.shared.entry(*h).or_default() += 1;
        }
        self.private += to.private.saturating_sub(from.private);
    }

    /// Gives back every block a sequence holds.
    pub fn release(&mut self, hashes: &[u64], held: Held) {
        for h in &hashes[..held.shared] {
            if let Some(n) = self.shared.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    self.shared.remove(h);
                }
            }
        }
        self.private -= held.private.min(self.private);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_prefix_is_held_once() {
        let mut pool = KvPool::new(10);
        let a = [1u64, 2, 3];
        let b = [1u64, 2, 9];
        // 40 tokens, block 16: 2 full prompt blocks shared + 1 partial own block.
        let held = Held::of(40, 3, 16);
        assert_eq!(
            held,
            Held {
                shared: 2,
                private: 1
            }
        );
        assert_eq!(pool.cost(&a, Held::default(), held), 3);
        pool.grow(&a, Held::default(), held);
        assert_eq!(
            pool.cost(&b, Held::default(), held),
            1,
            "blocks 1 and 2 are held already"
        );
        pool.grow(&b, Held::default(), held);
        assert_eq!(pool.used(), 4);
        assert_eq!(pool.free(), 6);
        pool.release(&a, held);
        assert_eq!(pool.used(), 3, "b still holds blocks 1 and 2");
        pool.release(&b, held);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn decoding_past_a_block_boundary_takes_an_own_block() {
        let pool = KvPool::new(0);
        let h = [7u64];
        let before = Held::of(32, 1, 16);
        let after = Held::of(33, 1, 16);
        assert_eq!(
            before,
            Held {
                shared: 1,
                private: 1
            }
        );
        assert_eq!(pool.cost(&h, before, after), 1);
        assert_eq!(pool.free(), usize::MAX, "0 means no limit");
    }
}
