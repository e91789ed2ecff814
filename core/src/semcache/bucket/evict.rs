//! Which entry makes room when a bucket is full: the eviction policy's victim and the clock
//! it ranks by.

use super::*;

impl Bucket {
    pub(super) fn note_expiry(&mut self, expire_at_ms: i64) {
        if expire_at_ms != 0
            && (self.earliest_expiry_ms == 0 || expire_at_ms < self.earliest_expiry_ms)
        {
            self.earliest_expiry_ms = expire_at_ms;
        }
    }

    pub(super) fn tick(&self) -> u64 {
        let t = self.use_clock.get() + 1;
        self.use_clock.set(t);
        t
    }

    /// The entry the eviction policy drops first: FIFO the oldest; LRU the least recently
    /// used (inserts count as a use); LFU the fewest hits, then the least recently used.
    pub(super) fn victim_index(&self) -> Option<usize> {
        match self.policy {
            EvictPolicy::Fifo => self.oldest_index(),
            EvictPolicy::Lru => self.use_order.first(),
            EvictPolicy::Lfu => self.least_used(|i| self.hit_counts[i].get()),
        }
    }

    /// The index with the smallest (`rank`, last use, id): LFU's victim. Passes over the
    /// contiguous rank and use columns first; ids (a lookup into their chunk each) only break
    /// exact ties, which the use clock (one tick per insert or hit) does not produce.
    pub(super) fn least_used(&self, rank: impl Fn(usize) -> u32) -> Option<usize> {
        let key = |i: usize| (rank(i), self.last_use[i].get());
        let best = (0..self.len()).map(key).min()?;
        (0..self.len())
            .filter(|&i| key(i) == best)
            .min_by_key(|&i| self.id_at(i))
    }

    pub(super) fn oldest_index(&self) -> Option<usize> {
        // The chunk with the smallest id (one value per chunk), then one position lookup.
        let (c, min) = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, chunk)| !chunk.ids.is_empty())
            .map(|(c, chunk)| (c, chunk.min_id))
            .min_by_key(|&(_, m)| m)?;
        let o = self.chunks[c].ids.iter().position(|&id| id == min)?;
        Some(c * self.chunk_rows + o)
    }
}
