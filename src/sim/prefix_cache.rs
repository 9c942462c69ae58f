//! The engine's prefix cache: prompts hashed in whole blocks, each block's hash chained to the
//! blocks before it, kept in a least-recently-used set.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

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
pub(super) struct PrefixCache {
    capacity: usize,
    tick: u64,
    used: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl PrefixCache {
    /// An empty cache of `capacity` blocks; 0 caches nothing.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            used: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Blocks cached now.
    pub(super) fn len(&self) -> usize {
        self.used.len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.used.insert(h, self.tick) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.tick, h);
    }

    /// Leading blocks already cached.
    pub(super) fn hits(&mut self, blocks: &[u64]) -> usize {
        let n = blocks
            .iter()
            .take_while(|h| self.used.contains_key(h))
            .count();
        blocks[..n].iter().for_each(|&h| self.touch(h));
        n
    }

    pub(super) fn insert(&mut self, blocks: &[u64]) {
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
        let mut c = PrefixCache::new(2);
        c.insert(&[1, 2]);
        assert_eq!(c.hits(&[1, 2, 3]), 2);
        c.insert(&[3]);
        assert_eq!(c.hits(&[1]), 0, "block 1 was the least recently used");
        assert_eq!(c.hits(&[2]), 1);
    }
}
