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

/// The gauges one session contributes: (hot messages, bytes, archived turns, cold).
fn gauges(s: &Session) -> [i64; 4] {
    [
        s.hot_len() as i64,
        s.mem_bytes() as i64,
        s.archived.count as i64,
        i64::from(s.is_cold()),
    ]
}

fn apply(d: [i64; 4], sign: i64) {
    // An add moves two of the four: the others are not touched (each is a locked
    // instruction, on every command).
    for (gauge, d) in [
        &HOT_MESSAGES,
        &SESSION_BYTES,
        &ARCHIVED_TURNS,
        &COLD_SESSIONS,
    ]
    .into_iter()
    .zip(d)
    {
        if d != 0 {
            gauge.add(sign * d);
        }
    }
}

pub fn session_created(s: &Session) {
    SESSIONS.incr();
    apply(gauges(s), 1);
}

pub fn session_freed(s: &Session) {
    SESSIONS.add(-1);
    apply(gauges(s), -1);
}

/// Runs a mutation of a live session and moves the global gauges by what it changed.
pub fn tracked<R>(s: &mut Session, f: impl FnOnce(&mut Session) -> R) -> R {
    let before = gauges(s);
    let r = f(s);
    let after = gauges(s);
    apply([0, 1, 2, 3].map(|i| after[i] - before[i]), 1);
    r
}

// Cold tier.
pub static ARCHIVE_WRITES: Counter = Counter::new();
pub static ARCHIVE_READS: Counter = Counter::new();
pub static ARCHIVE_BYTES_WRITTEN: Counter = Counter::new();
pub static ARCHIVE_RAW_BYTES_WRITTEN: Counter = Counter::new();
pub static ARCHIVE_BYTES_READ: Counter = Counter::new();
pub static ARCHIVED_TURNS: Counter = Counter::new();
pub static REHYDRATIONS: Counter = Counter::new();
pub static DICT_TRAININGS: Counter = Counter::new();
pub static IO_ERRORS: Counter = Counter::new();
pub static COLD_SESSIONS: Counter = Counter::new();
/// Evicted sessions whose turns went to their archive (kept), held now, and put back.
pub static EVICTED_KEPT: Counter = Counter::new();
pub static EVICTED_SESSIONS: Counter = Counter::new();
pub static EVICTED_TURNS_WRITTEN: Counter = Counter::new();
pub static EVICTED_RESTORED: Counter = Counter::new();
/// Sessions and turns that memory pressure sent to disk, and the ticks spent under it.
pub static PRESSURE_SESSIONS: Counter = Counter::new();
pub static PRESSURE_TURNS: Counter = Counter::new();
pub static PRESSURE_TICKS: Counter = Counter::new();
/// CONV.ADDs that waited for memory instead of failing with OOM.
pub static ADDS_PARKED: Counter = Counter::new();
pub static TIMER_TICKS: Counter = Counter::new();
pub static TIMER_TICK_US_TOTAL: Counter = Counter::new();
pub static TIMER_TICK_US_MAX: Counter = Counter::new();

impl Counter {
    pub fn max(&self, v: i64) {
        self.0.fetch_max(v, Relaxed);
    }
}

// Semantic cache (SEMCACHE.*) and embedding cache (URLEMB.*).
pub static SEMCACHE_BUCKETS: Counter = Counter::new();
pub static SEMCACHE_ENTRIES: Counter = Counter::new();
pub static SEMCACHE_VECTOR_BYTES: Counter = Counter::new();
pub static SEMCACHE_LOOKUPS: Counter = Counter::new();
pub static SEMCACHE_HITS: Counter = Counter::new();
pub static SEMCACHE_MISSES: Counter = Counter::new();
pub static SEMCACHE_BACKGROUND_SCANS: Counter = Counter::new();
pub static SEMCACHE_INDEX_LOOKUPS: Counter = Counter::new();
pub static SEMCACHE_PROMPT_HITS: Counter = Counter::new();
/// Nanoseconds from a SEMCACHE.GET's arrival to its reply, summed over hits / misses.
pub static SEMCACHE_HIT_NSEC: Counter = Counter::new();
pub static SEMCACHE_MISS_NSEC: Counter = Counter::new();
pub static URLEMB_HITS: Counter = Counter::new();
pub static URLEMB_MISSES: Counter = Counter::new();
