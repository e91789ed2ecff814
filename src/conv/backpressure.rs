//! Backpressure instead of OOM errors: a CONV.ADD that arrives while used memory is past
//! `maxmemory` waits (its client is blocked, as for a slow disk) while memory pressure sends
//! sessions to disk, and is applied once memory is back under the limit. It fails with the
//! server's own OOM error only when nothing can be freed (no turn in memory, no write under
//! way), after `MAX_WAIT_MS`, or where a client cannot wait (MULTI, scripts).
//! Each client's commands keep their order: a blocked client's next command is read after
//! its reply. Parked ADDs are applied in arrival order.

use std::sync::Mutex;

use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::metrics;
use crate::server::blocking::{self, Blocked};

/// The server's own words, so clients see the error they already handle.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// A parked ADD waits at most this long.
const MAX_WAIT_MS: i64 = 10_000;

struct Parked {
    bc: Blocked,
    args: Vec<Vec<u8>>,
    since_ms: i64,
}

static PARKED: Mutex<Vec<Parked>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Used memory over `maxmemory` (0 without a maxmemory).
pub fn used_memory_ratio() -> f64 {
    // SAFETY: plain module API call on the main thread.
    unsafe { raw::RedisModule_GetUsedMemoryRatio.map_or(0.0, |f| f() as f64) }
}

fn over_limit() -> bool {
    used_memory_ratio() > 1.0
}

/// Archiving can still free memory: turns are in memory or writes are under way.
fn can_free() -> bool {
    metrics::HOT_MESSAGES.get() > 0 || super::cold::queue_depth() > 0
}

/// What a fresh CONV.ADD does about memory: `None` to go on now, `Some(reply)` when it was
/// parked (no reply yet) or must fail.
pub fn admit(ctx: &Context, argv: &[RedisString]) -> Option<RedisResult> {
    if !over_limit() {
        return None;
    }
    if !can_free() {
        return Some(Err(RedisError::Str(OOM)));
    }
    let Ok(bc) = blocking::block(ctx, "CONV.ADD") else {
        return Some(Err(RedisError::Str(OOM)));
    };
    metrics::ADDS_PARKED.incr();
    lock(&PARKED).push(Parked {
        bc,
        args: argv.iter().map(|a| a.as_slice().to_vec()).collect(),
        since_ms: crate::clock::now_ms(),
    });
    Some(Ok(RedisValue::NoReply))
}

/// The timer's share: once memory is under the limit, the parked ADDs are applied in order;
/// those that waited too long, or that nothing can free memory for, get the OOM error.
pub fn release(now_ms: i64) {
    let mut parked = lock(&PARKED);
    if parked.is_empty() {
        return;
    }
    let fail = over_limit() && !can_free();
    let go = !over_limit();
    let all = std::mem::take(&mut *parked);
    drop(parked);
    let mut keep = Vec::new();
    for p in all {
        if go {
            let args = p.args;
            p.bc.finish(Box::new(move |ctx| {
                let argv: Vec<RedisString> = args
                    .iter()
                    .map(|a| RedisString::create_from_slice(ctx.ctx, a))
                    .collect();
                super::commands::add_admitted(ctx, &argv)
            }));
        } else if fail || now_ms - p.since_ms >= MAX_WAIT_MS {
            p.bc.finish(Box::new(|_| Err(RedisError::Str(OOM))));
        } else {
            keep.push(p);
        }
    }
    if !keep.is_empty() {
        let mut parked = lock(&PARKED);
        keep.append(&mut parked);
        *parked = keep;
    }
}

/// ADDs waiting for memory (pressure acts on the next tick, not in 100 ms).
pub fn waiting() -> bool {
    !lock(&PARKED).is_empty()
}
