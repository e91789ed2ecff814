//! Counters shown in `INFO convcache`. Atomics, because type callbacks (free on a lazy-free
//! thread) and I/O workers update them off the main thread.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::conv::session::Session;

#[derive(Default)]
pub struct Counter(AtomicI64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicI64::new(0))
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn incr(&self) {
        self.add(1);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

pub static SESSIONS: Counter = Counter::new();
pub static HOT_MESSAGES: Counter = Counter::new();
pub static SESSION_BYTES: Counter = Counter::new();
pub static CONV_COMMANDS: Counter = Counter::new();
pub static CONV_ADDS: Counter = Counter::new();
pub static CONV_READS: Counter = Counter::new();

pub fn session_created(s: &Session) {
    SESSIONS.incr();
    HOT_MESSAGES.add(s.hot_len() as i64);
    SESSION_BYTES.add(s.mem_bytes() as i64);
}

pub fn session_freed(s: &Session) {
    SESSIONS.add(-1);
    HOT_MESSAGES.add(-(s.hot_len() as i64));
    SESSION_BYTES.add(-(s.mem_bytes() as i64));
}

/// Runs a mutation of a live session and moves the global counters by what it changed.
pub fn tracked<R>(s: &mut Session, f: impl FnOnce(&mut Session) -> R) -> R {
    let (msgs, bytes) = (s.hot_len() as i64, s.mem_bytes() as i64);
    let r = f(s);
    HOT_MESSAGES.add(s.hot_len() as i64 - msgs);
    SESSION_BYTES.add(s.mem_bytes() as i64 - bytes);
    r
}

// Semantic cache (SEMCACHE.*) and embedding cache (URLEMB.*).
pub static SEMCACHE_BUCKETS: Counter = Counter::new();
pub static SEMCACHE_ENTRIES: Counter = Counter::new();
pub static SEMCACHE_VECTOR_BYTES: Counter = Counter::new();
pub static SEMCACHE_LOOKUPS: Counter = Counter::new();
pub static SEMCACHE_HITS: Counter = Counter::new();
pub static SEMCACHE_MISSES: Counter = Counter::new();
pub static SEMCACHE_BACKGROUND_SCANS: Counter = Counter::new();
pub static URLEMB_HITS: Counter = Counter::new();
pub static URLEMB_MISSES: Counter = Counter::new();
