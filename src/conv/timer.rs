//! The archiving timer (primary decides, every node carries out): each tick applies finished
//! background writes (and the work of blocked commands whose client left), serves sessions
//! whose overflow reached a batch, then walks a
//! budget-bounded slice of the keyspace (a raw scan) for idle sessions and work a replica or a
//! restart left undone, handing them to the I/O threads through `cold`.

use std::time::{Duration, Instant};

use redis_module::{raw, Context, RedisString};

use super::r#type::SESSION_TYPE;
use super::session::Session;
use super::{cold, keyspace};
use crate::metrics;
use crate::server::{config, keys};

/// Writes queued beyond this wait: each queued job holds a copy of its turns.
const MAX_QUEUED_WRITES: i64 = 4096;

/// Starts the repeating timer (the I/O threads start with it).
pub fn start(ctx: &Context) {
    cold::start_workers();
    arm_timer(ctx, TimerState::new(), false);
}

struct TimerState {
    cursor: *mut raw::RedisModuleScanCursor,
    db: i32,
    /// When the last full keyspace pass ended; idle sessions need no faster passes than
    /// a tenth of the idle time.
    pass_done_ms: i64,
}

impl TimerState {
    fn new() -> TimerState {
        // SAFETY: plain module API call; the cursor lives as long as the module.
        let cursor = unsafe { raw::RedisModule_ScanCursorCreate.expect("ScanCursorCreate")() };
        TimerState {
            cursor,
            db: 0,
            pass_done_ms: 0,
        }
    }
}

/// Under memory pressure the next tick comes sooner (at most 10 ms later): memory is freed
/// as fast as writes finish, before the server has to evict.
fn arm_timer(ctx: &Context, state: TimerState, pressure: bool) {
    let mut ms = config::get(&config::TIMER_INTERVAL_MS).max(1) as u64;
    if pressure {
        ms = ms.min(10);
    }
    ctx.create_timer(Duration::from_millis(ms), tick, state);
}

/// A session seen under pressure: (db, key, last access).
type Seen = (i32, Vec<u8>, i64);

/// What one scan step needs to decide per session.
struct Visit {
    db: i32,
    now: i64,
    primary: bool,
    idle_ms: i64,
    batch: usize,
    started: Instant,
    budget: Duration,
    /// Under memory pressure: sessions with turns in memory seen by this tick's scan, with
    /// their last access, to send the least recently used to disk.
    pressure: Option<std::cell::RefCell<Vec<Seen>>>,
}

/// Sessions looked at per tick under pressure, of which the older half goes to disk.
const PRESSURE_SAMPLE: usize = 512;

/// Memory pressure, with hysteresis between the two marks.
fn under_pressure(ratio: f64) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ON: AtomicBool = AtomicBool::new(false);
    let high = config::get(&config::PRESSURE_HIGH) as f64 / 100.0;
    let low = (config::get(&config::PRESSURE_LOW) as f64 / 100.0).min(high);
    let on = if ratio >= high {
        true
    } else if ratio < low {
        false
    } else {
        ON.load(Ordering::Relaxed)
    };
    ON.store(on, Ordering::Relaxed);
    on
}

impl Visit {
    fn over_budget(&self) -> bool {
        self.started.elapsed() >= self.budget || cold::queue_depth() >= MAX_QUEUED_WRITES
    }

    fn sampled(&self) -> usize {
        self.pressure.as_ref().map_or(0, |p| p.borrow().len())
    }
}

/// Sends the least recently used half of the sessions seen (all of their turns) to disk:
/// a sampled LRU, as the server's own eviction is. Their memory is freed once each write
/// is durable; the next ticks go on while used memory stays above the low-water mark.
fn relieve_pressure(ctx: &Context, v: &Visit, mut seen: Vec<Seen>) {
    seen.sort_by_key(|(_, _, last)| *last);
    let take = seen.len().div_ceil(2);
    for (db, key, _) in seen.into_iter().take(take) {
        if cold::queue_depth() >= MAX_QUEUED_WRITES {
            break;
        }
        keys::select_db(ctx, db);
        let name = RedisString::create_from_slice(ctx.ctx, &key);
        let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) else {
            continue;
        };
        if s.pending().is_some() {
            continue;
        }
        if let Some(upto) = s.archive_candidates(true) {
            metrics::PRESSURE_SESSIONS.incr();
            metrics::PRESSURE_TURNS.add(s.hot_len() as i64);
            cold::submit_append(db, &key, s, upto, false, None);
        }
    }
    keys::select_db(ctx, v.db);
}

/// One timer tick: apply finished writes, then walk the keyspace for a bounded time and
/// hand sessions that should move to disk to the I/O threads.
fn tick(ctx: &Context, mut state: TimerState) {
    let started = Instant::now();
    cold::maybe_train_dictionary();
    let now = crate::clock::now_ms();
    super::evicted::resolve(now);
    let primary = cold::is_primary(ctx);
    let pressure = primary && under_pressure(super::backpressure::used_memory_ratio());
    // Sessions that reached an overflow batch since the last tick.
    let mut dirty = cold::take_dirty().into_iter();
    // Waiting work gets a bigger share of the main thread, so ingest never outgrows the
    // archiver; a calm tick keeps to the small budget.
    let backlog = pressure || dirty.len() > 0 || cold::completions_waiting();
    let budget_us = if backlog {
        config::get(&config::TIMER_BACKLOG_BUDGET_US).max(config::get(&config::TIMER_BUDGET_US))
    } else {
        config::get(&config::TIMER_BUDGET_US)
    };
    let budget = Duration::from_micros(budget_us.max(1) as u64);
    if pressure {
        metrics::PRESSURE_TICKS.incr();
    }
    // Finished writes first, within the budget; the rest wait for the next tick.
    cold::apply_finished(ctx, started, budget);
    crate::server::blocking::finish_orphans(ctx);
    keyspace::forget_unlinked();
    let mut visit = Visit {
        db: state.db,
        now,
        primary,
        idle_ms: config::get(&config::IDLE_ARCHIVE_SECS) * 1000,
        batch: config::get(&config::ARCHIVE_BATCH).max(1) as usize,
        started,
        budget,
        pressure: pressure.then(|| std::cell::RefCell::new(Vec::new())),
    };
    for (db, key) in dirty.by_ref() {
        visit.db = db;
        visit_by_name(ctx, &visit, db, &key);
        if visit.over_budget() {
            break;
        }
    }
    cold::requeue_dirty(dirty.collect());
    // Then a slice of the keyspace pass that finds idle sessions (and work a replica or a
    // restart left undone).
    let pause_ms = (visit.idle_ms / 10).clamp(100, 10_000);
    let start_db = state.db;
    let mut wrapped = false;
    while !visit.over_budget()
        && (visit.pressure.is_some() || visit.now - state.pass_done_ms >= pause_ms)
        && visit.sampled() < PRESSURE_SAMPLE
    {
        // SAFETY: plain module API calls on the timer's context.
        if !keys::select_db(ctx, state.db) {
            state.db = 0;
            state.pass_done_ms = visit.now;
            wrapped = true;
            if start_db == 0 {
                break;
            }
            continue;
        }
        visit.db = state.db;
        let more = unsafe {
            raw::RedisModule_Scan.expect("Scan")(
                ctx.ctx,
                state.cursor,
                Some(scan_cb),
                &mut visit as *mut Visit as *mut std::os::raw::c_void,
            )
        };
        if more == 0 {
            unsafe { raw::RedisModule_ScanCursorRestart.expect("ScanCursorRestart")(state.cursor) };
            state.db += 1;
            if wrapped && state.db > start_db {
                break; // one full pass per tick at most
            }
        }
    }
    if let Some(seen) = visit.pressure.take() {
        relieve_pressure(ctx, &visit, seen.into_inner());
    }
    // Parked ADDs go on once the writes just applied brought memory under the limit.
    super::backpressure::release(crate::clock::now_ms());
    let us = started.elapsed().as_micros() as i64;
    metrics::TIMER_TICKS.incr();
    metrics::TIMER_TICK_US_TOTAL.add(us);
    metrics::TIMER_TICK_US_MAX.max(us);
    arm_timer(ctx, state, pressure || super::backpressure::waiting());
}

extern "C" fn scan_cb(
    _ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    data: *mut std::os::raw::c_void,
) {
    if key.is_null() {
        return;
    }
    // SAFETY: the scan hands us live handles for the duration of the callback; `data` is the
    // Visit passed to RedisModule_Scan; the session value belongs to this module.
    unsafe {
        if raw::RedisModule_ModuleTypeGetType.expect("GetType")(key)
            != *SESSION_TYPE.raw_type.borrow()
        {
            return;
        }
        let v = &*(data as *const Visit);
        let s = &mut *(raw::RedisModule_ModuleTypeGetValue.expect("GetValue")(key) as *mut Session);
        visit_session(v, keys::string_bytes(keyname), s, true);
    }
}

fn visit_by_name(ctx: &Context, v: &Visit, db: i32, key: &[u8]) {
    keys::select_db(ctx, db);
    let name = RedisString::create_from_slice(ctx.ctx, key);
    if let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) {
        s.set_queued(false);
        visit_session(v, key, s, false);
    }
}

fn visit_session(v: &Visit, key: &[u8], s: &mut Session, sample: bool) {
    // Past the budget the rest of this scan step is skipped; the next pass sees it again.
    if s.pending().is_some() || v.now < s.retry_at_ms() || v.over_budget() {
        return;
    }
    // Work already decided by the primary (replica catching up, after a restart): any node.
    if let Some(upto) = s.undurable_upto() {
        cold::submit_append(v.db, key, s, upto, false, None);
        return;
    }
    if !v.primary {
        return;
    }
    if let Some(seen) = v.pressure.as_ref().filter(|_| sample) {
        if s.hot_len() > 0 {
            seen.borrow_mut()
                .push((v.db, key.to_vec(), s.last_access_ms.get()));
            return;
        }
    }
    let idle = v.now - s.last_access_ms.get() >= v.idle_ms;
    if idle {
        if let Some(upto) = s.archive_candidates(true) {
            cold::submit_append(v.db, key, s, upto, true, None);
        }
    } else if s.overflow_len() >= v.batch {
        if let Some(upto) = s.archive_candidates(false) {
            cold::submit_append(v.db, key, s, upto, false, None);
        }
    }
}
