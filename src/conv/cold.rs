//! The cold tier's pipeline: the hand-off of archive file work (appends, reads, restores,
//! deletes, renames, the dictionary's training) to the I/O threads, and the application of
//! their results on the main thread. Turns leave memory only after their write is durable.
//! What to archive and when is the timer's decision (`timer.rs`); the commands that drive it
//! live in `commands.rs`, the keyspace hooks in `keyspace.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use super::message::Message;
use super::r#type::SESSION_TYPE;
use super::session::Session;
use crate::cold::dict::{self, DictStore};
use crate::cold::store::{session_path, AppendOutcome, StoreError};
use crate::cold::uncounted::UncountedBytes;
use crate::cold::worker::{Outcome, Task, Workers};
use crate::metrics;
use crate::server::blocking::{self, Blocked};
use crate::server::{config, keys};

static WORKERS: OnceLock<Workers> = OnceLock::new();
/// The archive directory's dictionaries (archive-dir is fixed at load).
static DICTS: OnceLock<Arc<DictStore>> = OnceLock::new();
/// A dictionary training thread is running.
static TRAINING: AtomicBool = AtomicBool::new(false);
/// Raw bytes archived when training was last tried (-1: not yet since start).
static TRAINED_AT_RAW: AtomicI64 = AtomicI64::new(-1);
/// At most this much archived text is read to train a dictionary.
const TRAIN_SAMPLE_BYTES: usize = 16 << 20;
static TICKETS: AtomicU64 = AtomicU64::new(1);
/// Finished background writes waiting for the main thread (the timer applies them).
static COMPLETIONS: Mutex<Vec<Completion>> = Mutex::new(Vec::new());
/// Archived turns received by CONV._LOAD that this node failed to write: they go back into
/// their session's memory (the timer applies them), and are written again from there.
static UNWRITTEN_RESTORES: Mutex<Vec<UnwrittenRestore>> = Mutex::new(Vec::new());
/// Sessions whose overflow reached a batch at CONV.ADD time: (db, key). The timer serves
/// them first, so overflow archiving does not wait for a keyspace pass.
static DIRTY: Mutex<Vec<(i32, Vec<u8>)>> = Mutex::new(Vec::new());
/// After a failed write, a session waits this long before the timer retries it.
const RETRY_AFTER_MS: i64 = 5_000;

pub const ARCHIVED_COMMAND: &str = "CONV._ARCHIVED";
pub const REHYDRATED_COMMAND: &str = "CONV._REHYDRATED";

struct Completion {
    db: i32,
    key: Vec<u8>,
    session_id: i64,
    ticket: u64,
    upto: u64,
    idle: bool,
    result: Result<AppendOutcome, StoreError>,
}

struct UnwrittenRestore {
    db: i32,
    key: Vec<u8>,
    session_id: i64,
    turns: Vec<Message>,
}

fn workers() -> &'static Workers {
    WORKERS.get_or_init(|| {
        Workers::start(
            config::get(&config::IO_THREADS).max(1) as usize,
            archive_root(),
            dicts().clone(),
        )
    })
}

/// The archive directory's dictionaries; the newest intact one on disk is current at start.
pub fn dicts() -> &'static Arc<DictStore> {
    DICTS.get_or_init(|| {
        let d = DictStore::new(&archive_root());
        for e in d.load_newest() {
            redis_module::logging::log_warning(format!("convcache: {e}"));
        }
        Arc::new(d)
    })
}

/// The current dictionary's id as INFO shows it ("none" before one is trained).
pub fn dict_id_text() -> String {
    DICTS
        .get()
        .and_then(|d| d.current())
        .map_or_else(|| "none".to_string(), |d| format!("{:016x}", d.id))
}

/// Trains the archive directory's dictionary on a background thread, once enough turns are
/// archived (zstd segments only; tried again after as many more raw bytes are archived).
pub fn maybe_train_dictionary() {
    use crate::cold::segcodec;
    let min = config::get(&config::ARCHIVE_DICT_MIN_BYTES);
    if min <= 0
        || segcodec::write_codec() != segcodec::Codec::Zstd
        || TRAINING.load(Ordering::Relaxed)
        || dicts().current().is_some()
    {
        return;
    }
    let raw = metrics::ARCHIVE_RAW_BYTES_WRITTEN.get();
    let last = TRAINED_AT_RAW.load(Ordering::Relaxed);
    if last >= 0 && raw - last < min {
        return;
    }
    TRAINED_AT_RAW.store(raw, Ordering::Relaxed);
    TRAINING.store(true, Ordering::Relaxed);
    let d = dicts().clone();
    let root = archive_root();
    let spawned = std::thread::Builder::new()
        .name("convcache-dict".into())
        .spawn(move || {
            let samples = dict::collect_samples(&root, &d, TRAIN_SAMPLE_BYTES);
            let total: usize = samples.iter().map(Vec::len).sum();
            if total as i64 >= min {
                match segcodec::train(&samples, segcodec::DICT_BYTES).and_then(|b| d.install(b)) {
                    Ok(dict) => {
                        metrics::DICT_TRAININGS.incr();
                        redis_module::logging::log_notice(format!(
                            "convcache: archive dictionary {:016x} trained on {} segments ({total} bytes); new segments use it",
                            dict.id,
                            samples.len()
                        ))
                    }
                    Err(e) => redis_module::logging::log_warning(format!(
                        "convcache: archive dictionary not trained: {e}"
                    )),
                }
            }
            TRAINING.store(false, Ordering::Relaxed);
        });
    if spawned.is_err() {
        TRAINING.store(false, Ordering::Relaxed);
    }
}

pub fn queue_depth() -> i64 {
    WORKERS.get().map_or(0, |w| w.depth.load(Ordering::Relaxed))
}

pub fn archive_root() -> PathBuf {
    PathBuf::from(config::get_string(&config::ARCHIVE_DIR))
}

pub fn path_for(db: i32, key: &[u8]) -> PathBuf {
    session_path(&archive_root(), db, key)
}

pub fn is_primary(ctx: &Context) -> bool {
    !ctx.get_flags().contains(ContextFlags::SLAVE)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one task on the I/O thread that owns its file; `done` runs there too.
pub fn submit_task(task: Task, done: crate::cold::worker::Callback) {
    workers().submit(task, done);
}

/// Starts the I/O threads (the timer does, at module load).
pub fn start_workers() {
    workers();
}

/// Sends the in-memory turns up to `upto` to disk. With `client`, the client is woken once
/// the write is durable and applied; otherwise the timer applies the result.
pub fn submit_append(
    db: i32,
    key: &[u8],
    s: &mut Session,
    upto: u64,
    idle: bool,
    client: Option<Blocked>,
) {
    let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
    s.set_pending(Some((ticket, upto)));
    // The turns travel encoded, outside the server's memory accounting: archiving under
    // memory pressure must not first raise used memory by a copy of what it frees.
    let turns: Vec<_> = s.turns().take_while(|m| m.seq <= upto).collect();
    let payload = UncountedBytes::copy_of(&super::codec::encode_more(&turns));
    drop(turns);
    let (key, session_id) = (key.to_vec(), s.sid as i64);
    let task = Task::AppendUncounted {
        path: path_for(db, &key),
        key: key.clone(),
        session_id,
        durable_through: s.archived.last_seq,
        payload,
    };
    workers().submit(
        task,
        Box::new(move |outcome| {
            let Outcome::Appended(result) = outcome else {
                unreachable!("append tasks answer Appended")
            };
            let c = Completion {
                db,
                key,
                session_id,
                ticket,
                upto,
                idle,
                result,
            };
            match client {
                None => lock(&COMPLETIONS).push(c),
                Some(bc) => bc.finish(Box::new(move |ctx| {
                    let n = apply_completion(ctx, c)?;
                    Ok(RedisValue::Integer(n as i64))
                })),
            }
        }),
    );
}

/// Applies a finished write on the main thread. Returns the turns that left memory.
fn apply_completion(ctx: &Context, c: Completion) -> Result<usize, RedisError> {
    keys::select_db(ctx, c.db);
    let name = RedisString::create_from_slice(ctx.ctx, &c.key);
    let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) else {
        return Ok(0); // deleted meanwhile; the delete task removes the file
    };
    if s.sid as i64 != c.session_id || s.pending().map(|p| p.0) != Some(c.ticket) {
        return Ok(0); // cleared or superseded meanwhile
    }
    s.set_pending(None);
    match c.result {
        Ok(out) => {
            metrics::ARCHIVE_WRITES.incr();
            metrics::ARCHIVE_BYTES_WRITTEN.add(out.bytes_written as i64);
            metrics::ARCHIVE_RAW_BYTES_WRITTEN.add(out.raw_bytes as i64);
            let n = metrics::tracked(s, |s| s.archived_durably(c.upto));
            if is_primary(ctx) {
                let mut args = vec![name.clone(), ctx.create_string(c.upto.to_string())];
                // Idle archival gives the key the archive retention as its TTL, unless the
                // user set a TTL of their own.
                let current = keys::abs_expire_ms(ctx, &name);
                if c.idle && (current < 0 || current == s.auto_expire_ms) {
                    let at = crate::clock::now_ms()
                        + config::get(&config::ARCHIVE_TTL_DAYS) * 86_400_000;
                    s.auto_expire_ms = at;
                    keys::set_expire_at(ctx, &name, Some(at));
                    args.push(ctx.create_string("PXAT"));
                    args.push(ctx.create_string(at.to_string()));
                }
                let refs: Vec<&RedisString> = args.iter().collect();
                ctx.replicate(ARCHIVED_COMMAND, refs.as_slice());
            }
            Ok(n)
        }
        Err(e) => {
            metrics::IO_ERRORS.incr();
            s.set_retry_at_ms(crate::clock::now_ms() + RETRY_AFTER_MS);
            ctx.log_warning(&format!(
                "convcache: archiving '{}' failed, turns stay in memory and will be retried: {e}",
                String::from_utf8_lossy(&c.key)
            ));
            Err(crate::server::args::reply_err(e))
        }
    }
}

/// Reads archived turns `from..=to` of `s` on an I/O thread, then `render` (also off the main
/// thread) builds the reply from them; the client waits meanwhile.
///
/// With `bring_back > 0` (CONV.CTX on the primary), that many of the newest turns read come
/// back into memory too, so the next reads of a resumed conversation need no disk.
#[allow(clippy::too_many_arguments)]
pub fn read_archive(
    ctx: &Context,
    what: &str,
    key: &[u8],
    s: &Session,
    from: u64,
    to: u64,
    bring_back: usize,
    render: Box<dyn FnOnce(Vec<Message>) -> RedisResult + Send>,
) -> RedisResult {
    let bc = blocking::block(ctx, what)?;
    let db = keys::selected_db(ctx);
    let (session_id, archived_last) = (s.sid as i64, s.archived.last_seq);
    let bring_back = if is_primary(ctx) && s.pending().is_none() && to == archived_last {
        bring_back
    } else {
        0
    };
    let key_bytes = key.to_vec();
    let task = Task::Read {
        path: path_for(db, key),
        session_id: s.sid as i64,
        archived_last: s.archived.last_seq,
        from,
        to,
    };
    let key_text = String::from_utf8_lossy(key).into_owned();
    workers().submit(
        task,
        Box::new(move |outcome| {
            let Outcome::Read(result) = outcome else {
                unreachable!("read tasks answer Read")
            };
            let mut back = Vec::new();
            let reply = match result {
                Ok((turns, bytes)) => {
                    metrics::ARCHIVE_READS.incr();
                    metrics::ARCHIVE_BYTES_READ.add(bytes as i64);
                    back = turns[turns.len() - bring_back.min(turns.len())..].to_vec();
                    render(turns)
                }
                Err(e) => {
                    metrics::IO_ERRORS.incr();
                    Err(crate::server::args::reply_err(format_args!(
                        "session '{key_text}': {e}"
                    )))
                }
            };
            let reply = PlainReply(reply);
            bc.finish(Box::new(move |ctx| {
                let whole = reply; // moves the Send wrapper, not just its field
                if !back.is_empty() {
                    bring_back_turns(ctx, db, &key_bytes, session_id, archived_last, back);
                }
                whole.0
            }));
        }),
    );
    Ok(RedisValue::NoReply)
}

/// Puts turns read from disk back into memory on the primary, if the session has not changed
/// since they were read, and replicates them so replicas hold the same turns in memory.
fn bring_back_turns(
    ctx: &Context,
    db: i32,
    key: &[u8],
    session_id: i64,
    archived_last: u64,
    turns: Vec<Message>,
) {
    keys::select_db(ctx, db);
    let name = RedisString::create_from_slice(ctx.ctx, key);
    let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) else {
        return;
    };
    if s.sid as i64 != session_id || s.archived.last_seq != archived_last || s.pending().is_some() {
        return;
    }
    let payload =
        super::codec::encode_more(&turns.iter().map(Message::as_turn).collect::<Vec<_>>());
    if metrics::tracked(s, |s| s.rehydrate(turns)) > 0 {
        metrics::REHYDRATIONS.incr();
        let payload = RedisString::create_from_slice(ctx.ctx, &payload);
        ctx.replicate(REHYDRATED_COMMAND, &[&name, &payload][..]);
    }
}

/// A reply built off the main thread. It holds only plain values (no server strings), so it
/// can travel to the main thread.
struct PlainReply(RedisResult);
// SAFETY: replies built by `render` functions use owned bytes/integers only, never RedisString.
unsafe impl Send for PlainReply {}

/// The session's archive file for an RDB or DUMP payload, readable on any node: segments
/// compressed with this directory's dictionary are re-encoded without it (the receiver may
/// not have it). Empty if the file cannot be read; as it is if a dictionary is unavailable
/// (the receiver then reports the same damage this node would).
pub fn archive_bytes(db: i32, key: &[u8]) -> Vec<u8> {
    let bytes = std::fs::read(path_for(db, key)).unwrap_or_default();
    if bytes.is_empty() {
        return bytes;
    }
    let d = dicts();
    match crate::cold::format::without_dicts(&bytes, &d.lookup()) {
        Ok(Some(portable)) => portable,
        Ok(None) => bytes,
        Err(e) => {
            redis_module::logging::log_warning(format!(
                "convcache: session '{}' leaves with its archive file as it is: {e}",
                String::from_utf8_lossy(key)
            ));
            bytes
        }
    }
}

/// After an RDB load: put the archive carried in the RDB on disk unless this node's own file
/// already holds every archived turn of the session.
pub fn restore_archive(db: i32, key: &[u8], s: &Session, bytes: Vec<u8>) {
    workers().submit(
        Task::Restore {
            path: path_for(db, key),
            bytes,
            session_id: s.sid as i64,
            archived_last: s.archived.last_seq,
        },
        Box::new(|outcome| {
            if let Outcome::Done(Err(e)) = outcome {
                metrics::IO_ERRORS.incr();
                redis_module::logging::log_warning(format!(
                    "convcache: restoring an archive from RDB failed: {e}"
                ));
            }
        }),
    );
}

/// The session's archived turns, read from its file, for an AOF rewrite or a slot-migration
/// snapshot; both run in a forked child, where reading blocks no client. An error means the
/// snapshot must fail: a session without its archived turns would lose them on the receiver.
pub fn read_archived_turns(db: i32, key: &[u8], s: &Session) -> Result<Vec<Message>, String> {
    let range = s.archived;
    let path = path_for(db, key);
    let (turns, _) = crate::cold::store::read_turns_with(
        &path,
        Some(dicts()),
        s.sid as i64,
        range.last_seq,
        range.first_seq,
        range.last_seq,
    )
    .map_err(|e| e.to_string())?;
    if turns.len() as u64 != range.count {
        return Err(format!(
            "archive file {} holds {} of the session's {} archived turns",
            path.display(),
            turns.len(),
            range.count
        ));
    }
    Ok(turns)
}

/// Writes archived turns that came as CONV._LOAD commands to this node's archive, in the
/// background. If that fails they come back into the session's memory, never lost.
pub fn restore_archived_turns(db: i32, key: &[u8], s: &Session, turns: Vec<Message>) {
    let (key, session_id) = (key.to_vec(), s.sid as i64);
    workers().submit(
        Task::RestoreTurns {
            path: path_for(db, &key),
            key: key.clone(),
            session_id,
            turns,
        },
        Box::new(move |outcome| {
            let Outcome::RestoredTurns(result, turns) = outcome else {
                unreachable!("restore-turns tasks answer RestoredTurns")
            };
            match result {
                Ok(n) => {
                    if n > 0 {
                        metrics::ARCHIVE_WRITES.incr();
                    }
                }
                Err(e) => {
                    metrics::IO_ERRORS.incr();
                    redis_module::logging::log_warning(format!(
                        "convcache: writing the archived turns of '{}' failed, they stay in memory and will be retried: {e}",
                        String::from_utf8_lossy(&key)
                    ));
                    lock(&UNWRITTEN_RESTORES).push(UnwrittenRestore {
                        db,
                        key,
                        session_id,
                        turns,
                    });
                }
            }
        }),
    );
}

/// Puts archived turns this node failed to write back into their session's memory, marked
/// as decided archived, so the timer writes them again (and keeps them until it succeeds).
fn apply_unwritten_restore(ctx: &Context, u: UnwrittenRestore) {
    keys::select_db(ctx, u.db);
    let name = RedisString::create_from_slice(ctx.ctx, &u.key);
    let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) else {
        return; // deleted meanwhile: its turns went with it
    };
    let last = u.turns.last().map_or(0, |m| m.seq);
    if s.sid as i64 != u.session_id {
        return;
    }
    let upto = s.archive_upto;
    let n = metrics::tracked(s, |s| s.rehydrate(u.turns));
    if n == 0 {
        ctx.log_warning(&format!(
            "convcache: the archived turns of '{}' changed before they could be kept in memory",
            String::from_utf8_lossy(&u.key)
        ));
        return;
    }
    s.archive_upto = upto.max(last);
    s.set_retry_at_ms(crate::clock::now_ms() + RETRY_AFTER_MS);
}

/// Deletes a session's archive (CONV.CLEAR, DEL, expiry), in the background.
pub fn delete_archive(db: i32, key: &[u8]) {
    workers().submit(
        Task::Delete {
            path: path_for(db, key),
        },
        Box::new(|_| {}),
    );
}

/// RENAME/MOVE of a session with an archive: its file follows the key.
pub fn rename_archive(from_db: i32, from: &[u8], to_db: i32, to: &[u8]) {
    workers().submit(
        Task::Rename {
            from: path_for(from_db, from),
            to: path_for(to_db, to),
        },
        Box::new(|_| {}),
    );
}

/// COPY of a session with archived turns copies its file too.
pub fn copy_archive(from_db: i32, from: &[u8], to_db: i32, to: &[u8]) {
    workers().submit(
        Task::Copy {
            from: path_for(from_db, from),
            to: path_for(to_db, to),
        },
        Box::new(|_| {}),
    );
}

/// Reads a whole file on an I/O thread (CONV.IMPORT), then calls `done` there with it.
pub fn read_file(path: PathBuf, done: Box<dyn FnOnce(Result<Vec<u8>, StoreError>) + Send>) {
    workers().submit(
        Task::ReadFile { path },
        Box::new(move |outcome| {
            let Outcome::File(bytes) = outcome else {
                unreachable!("read-file tasks answer File")
            };
            done(bytes)
        }),
    );
}

/// CONV.ADD on the primary: the session's overflow reached a batch; archive it soon.
pub fn overflow_ready(db: i32, key: &[u8], s: &mut Session) {
    if !s.queued() && s.pending().is_none() {
        s.set_queued(true);
        lock(&DIRTY).push((db, key.to_vec()));
    }
}

/// Finished writes wait for the main thread.
pub fn completions_waiting() -> bool {
    !lock(&COMPLETIONS).is_empty()
}

/// Sessions that reached an overflow batch since the last tick (the timer serves them first).
pub fn take_dirty() -> Vec<(i32, Vec<u8>)> {
    std::mem::take(&mut *lock(&DIRTY))
}

/// Puts back the sessions a tick had no budget left for.
pub fn requeue_dirty(rest: Vec<(i32, Vec<u8>)>) {
    if !rest.is_empty() {
        lock(&DIRTY).extend(rest);
    }
}

/// Applies finished background writes on the main thread within the tick's budget (the rest
/// wait for the next tick), then puts archived turns this node failed to write back in memory.
pub fn apply_finished(ctx: &Context, started: Instant, budget: Duration) {
    let mut done = std::mem::take(&mut *lock(&COMPLETIONS)).into_iter();
    for c in done.by_ref() {
        let _ = apply_completion(ctx, c);
        if started.elapsed() >= budget {
            break;
        }
    }
    let rest: Vec<Completion> = done.collect();
    if !rest.is_empty() {
        let mut queue = lock(&COMPLETIONS);
        let newer = std::mem::take(&mut *queue);
        queue.extend(rest);
        queue.extend(newer);
    }
    for u in std::mem::take(&mut *lock(&UNWRITTEN_RESTORES)) {
        apply_unwritten_restore(ctx, u);
    }
}
