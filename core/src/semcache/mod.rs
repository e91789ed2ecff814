//! Semantic cache: per-key buckets of (normalised vector, response) entries, looked up by
//! cosine similarity inside the server.
//!
//! The pure core: `bucket` (rows, chunk storage, exact search, index glue, eviction), `ann`
//! (which index a bucket has), `ivf` and `hnsw` (the indexes), `codec` (persistence
//! encoding), `lru` (eviction order), `tags` (FILTER/TAG pairs). The module's
//! `semcache/` holds the SEMCACHE.* handlers, lookups, background scans and type callbacks.
pub mod ann;
pub mod bucket;
pub mod codec;
pub mod hnsw;
pub mod ivf;
pub mod lru;
pub mod tags;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use bucket::Bucket;

use crate::metrics;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// The value stored under a SEMCACHE key.
#[derive(Debug)]
pub struct SemCache {
    pub bucket: Bucket,
    /// Identity of this value in this process (never persisted or replicated): a background
    /// scan's ids are only meaningful for the value it snapshotted, so the reply checks it.
    pub instance: u64,
    /// Lookup counters: changed by reads (hence `Cell`), shown by SEMCACHE.INFO, persisted,
    /// but not part of the digest (a replica serves its own reads).
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
}

impl SemCache {
    pub fn new(bucket: Bucket, hits: u64, misses: u64) -> SemCache {
        SemCache {
            bucket,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            hits: Cell::new(hits),
            misses: Cell::new(misses),
        }
    }

    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<SemCache>() + self.bucket.heap_bytes()
    }

    pub fn count_lookup(&self, hit: bool) {
        metrics::SEMCACHE_LOOKUPS.incr();
        if hit {
            self.hits.set(self.hits.get() + 1);
            metrics::SEMCACHE_HITS.incr();
        } else {
            self.misses.set(self.misses.get() + 1);
            metrics::SEMCACHE_MISSES.incr();
        }
    }
}

impl Clone for SemCache {
    /// A copy is a new value with a new identity.
    fn clone(&self) -> Self {
        SemCache::new(self.bucket.clone(), self.hits.get(), self.misses.get())
    }
}

/// Counts a value handed to the server in INFO; `freed` uncounts it.
pub fn created(c: &SemCache) {
    metrics::SEMCACHE_BUCKETS.incr();
    metrics::SEMCACHE_ENTRIES.add(c.bucket.len() as i64);
    metrics::SEMCACHE_VECTOR_BYTES.add(c.bucket.vector_bytes() as i64);
}

pub fn freed(c: &SemCache) {
    metrics::SEMCACHE_BUCKETS.add(-1);
    metrics::SEMCACHE_ENTRIES.add(-(c.bucket.len() as i64));
    metrics::SEMCACHE_VECTOR_BYTES.add(-(c.bucket.vector_bytes() as i64));
}

/// Runs a mutation of a live bucket and moves the global gauges by what it changed.
pub fn tracked<R>(b: &mut Bucket, f: impl FnOnce(&mut Bucket) -> R) -> R {
    let (n, bytes) = (b.len() as i64, b.vector_bytes() as i64);
    let r = f(b);
    metrics::SEMCACHE_ENTRIES.add(b.len() as i64 - n);
    metrics::SEMCACHE_VECTOR_BYTES.add(b.vector_bytes() as i64 - bytes);
    r
}
