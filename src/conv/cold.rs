//! The cold tier's server side: the timer that decides what to archive (primary only), the
//! hand-off of file work to the I/O threads, and the application of their results on the
//! main thread. Turns leave memory only after their write is durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis_module::{
    raw, Context, ContextFlags, NotifyEvent, RedisError, RedisResult, RedisString, RedisValue,
};

use super::message::Message;
use super::r#type::SESSION_TYPE;
use super::session::Session;
use crate::archive::dict::{self, DictStore};
use crate::archive::store::{session_path, AppendOutcome, StoreError};
use crate::archive::worker::{Outcome, Task, Workers};
use crate::blocking::{self, Blocked};
use crate::{config, keys, metrics};

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
/// Sessions with archive files that the server just unlinked from the keyspace; the
/// keyspace event that follows says whether the file goes (del/expired) or moves (rename).
static UNLINKED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// The source of a RENAME/MOVE in progress: (db, key).
static MOVING: Mutex<Option<(i32, Vec<u8>)>> = Mutex::new(None);
/// Archived turns received by CONV._LOAD that this node failed to write: they go back into
/// their session's memory (the timer applies them), and are written again from there.
static UNWRITTEN_RESTORES: Mutex<Vec<UnwrittenRestore>> = Mutex::new(Vec::new());
/// Sessions whose overflow reached a batch at CONV.ADD time: (db, key). The timer serves
/// them first, so overflow archiving does not wait for a keyspace pass.
static DIRTY: Mutex<Vec<(i32, Vec<u8>)>> = Mutex::new(Vec::new());
/// After a failed write, a session waits this long before the timer retries it.
const RETRY_AFTER_MS: i64 = 5_000;
/// Writes queued beyond this wait: each queued job holds a copy of its turns.
const MAX_QUEUED_WRITES: i64 = 4096;

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
fn maybe_train_dictionary() {
    use crate::archive::segcodec;
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

fn is_primary(ctx: &Context) -> bool {
    !ctx.get_flags().contains(ContextFlags::SLAVE)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the I/O threads and the repeating timer.
pub fn init(ctx: &Context) {
    workers();
    arm_timer(ctx, TimerState::new());
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
    let turns = s.turns_upto(upto);
    let (key, session_id) = (key.to_vec(), s.sid as i64);
    let task = Task::Append {
        path: path_for(db, &key),
        key: key.clone(),
        session_id,
        durable_through: s.archived.last_seq,
        turns,
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
                    let at = crate::conv::commands::now_ms()
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
            s.set_retry_at_ms(crate::conv::commands::now_ms() + RETRY_AFTER_MS);
            ctx.log_warning(&format!(
                "convcache: archiving '{}' failed, turns stay in memory and will be retried: {e}",
                String::from_utf8_lossy(&c.key)
            ));
            Err(RedisError::String(format!("ERR {e}")))
        }
    }
}

/// Latest PXAT a client may give CONV._ARCHIVED: the longest archive-ttl (100 years) ahead.
const MAX_PXAT_AHEAD_MS: i64 = 100 * 365 * 86_400_000 + 86_400_000;

/// Commands applied from the primary's stream or the AOF: decisions taken elsewhere.
fn applying_decisions(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

/// CONV._ARCHIVED key upto [PXAT ms]: the primary made turns up to `upto` durable; this node
/// archives the same turns into its own archive (in the background) and drops them once durable.
///
/// Every argument is checked before anything changes: `upto` between 1 and the session's last
/// sequence number, the literal keyword PXAT, and a PXAT in the future (at most 100 years
/// ahead) unless the command comes from the primary or the AOF, whose decision is applied.
pub fn archived_cmd(ctx: &Context, argv: Vec<RedisString>) -> RedisResult {
    if argv.len() != 3 && argv.len() != 5 {
        return Err(RedisError::WrongArity);
    }
    let upto = crate::args::int_in("upto", argv[2].as_slice(), 1, i64::MAX)? as u64;
    let pxat = if argv.len() == 5 {
        if !argv[3].as_slice().eq_ignore_ascii_case(b"PXAT") {
            return crate::args::unknown_option(&String::from_utf8_lossy(argv[3].as_slice()));
        }
        let now = crate::conv::commands::now_ms();
        let (min, max) = if applying_decisions(ctx) {
            (1, i64::MAX)
        } else {
            (now + 1, now + MAX_PXAT_AHEAD_MS)
        };
        Some(crate::args::int_in("PXAT", argv[4].as_slice(), min, max)?)
    } else {
        None
    };
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let last = s.next_seq - 1;
    if upto > last {
        return Err(RedisError::String(format!(
            "ERR upto {upto} is past the session's last sequence number {last}"
        )));
    }
    s.archive_upto = s.archive_upto.max(upto);
    if let Some(at) = pxat {
        s.auto_expire_ms = at;
    }
    if s.pending().is_none() {
        if let Some(upto) = s.undurable_upto() {
            submit_append(
                keys::selected_db(ctx),
                argv[1].as_slice(),
                s,
                upto,
                false,
                None,
            );
        }
    }
    drop(key);
    if let Some(at) = pxat {
        keys::set_expire_at(ctx, &argv[1], Some(at));
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::Integer(1))
}

/// CONV.FLUSH key: archives every in-memory turn now; replies (the number of turns that left
/// memory) once they are durable on disk.
pub fn flush_cmd(ctx: &Context, argv: Vec<RedisString>) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    if argv.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let upto = match (s.archive_candidates(true), s.pending()) {
        (Some(u), _) => u,
        (None, Some((_, u))) => u,
        (None, None) => return Ok(RedisValue::Integer(0)),
    };
    let bc = blocking::block(ctx, "CONV.FLUSH")?;
    submit_append(
        keys::selected_db(ctx),
        argv[1].as_slice(),
        s,
        upto,
        false,
        Some(bc),
    );
    Ok(RedisValue::NoReply)
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
                    Err(RedisError::String(format!("ERR session '{key_text}': {e}")))
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

/// CONV._REHYDRATED key payload: the primary brought these archived turns back into memory.
pub fn rehydrated_cmd(ctx: &Context, argv: Vec<RedisString>) -> RedisResult {
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let super::codec::Decoded::More(turns) = super::codec::decode(argv[2].as_slice())
        .map_err(|e| RedisError::String(format!("ERR {e}")))?
    else {
        return Err(RedisError::Str(
            "ERR payload must hold turns brought back into memory, not a session or archived turns",
        ));
    };
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    s.check_rehydrated(&turns)
        .map_err(|e| RedisError::String(format!("ERR {e}")))?;
    let n = metrics::tracked(s, |s| s.rehydrate(turns));
    ctx.replicate_verbatim();
    Ok(RedisValue::Integer(n as i64))
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
    match crate::archive::format::without_dicts(&bytes, &d.lookup()) {
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
    let (turns, _) = crate::archive::store::read_turns_with(
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
    s.set_retry_at_ms(crate::conv::commands::now_ms() + RETRY_AFTER_MS);
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

/// The `unlink` type callback: remember sessions that own archive files.
pub fn on_unlink(key: &[u8], s: &Session) {
    if s.archived.count > 0 || s.archive_upto > 0 || s.pending().is_some() {
        lock(&UNLINKED).push(key.to_vec());
    }
}

fn take_unlinked(key: &[u8]) -> bool {
    let mut u = lock(&UNLINKED);
    match u.iter().position(|k| k == key) {
        Some(i) => {
            u.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Keyspace events that decide the fate of an unlinked session's file.
pub fn on_keyspace_event(ctx: &Context, _ty: NotifyEvent, event: &str, key: &[u8]) {
    let db = keys::selected_db(ctx);
    match event {
        "del" | "expired" | "evicted" if take_unlinked(key) => delete_archive(db, key),
        "rename_from" | "move_from" if take_unlinked(key) => {
            *lock(&MOVING) = Some((db, key.to_vec()));
        }
        "rename_to" | "move_to" => {
            if let Some((from_db, from)) = lock(&MOVING).take() {
                // A write in flight finishes under the old name; let the timer redo it (appends
                // are idempotent) under the new one.
                let name = RedisString::create_from_slice(ctx.ctx, key);
                if let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) {
                    s.set_pending(None);
                }
                workers().submit(
                    Task::Rename {
                        from: path_for(from_db, &from),
                        to: path_for(db, key),
                    },
                    Box::new(|_| {}),
                );
            }
        }
        _ => {}
    }
}

/// COPY of a session with archived turns copies its file too.
pub fn on_copy(from_db: i32, from: &[u8], to_db: i32, to: &[u8], s: &Session) {
    if s.archived.count > 0 {
        workers().submit(
            Task::Copy {
                from: path_for(from_db, from),
                to: path_for(to_db, to),
            },
            Box::new(|_| {}),
        );
    }
}

/// CONV.ADD on the primary: the session's overflow reached a batch; archive it soon.
pub fn overflow_ready(db: i32, key: &[u8], s: &mut Session) {
    if !s.queued() && s.pending().is_none() {
        s.set_queued(true);
        lock(&DIRTY).push((db, key.to_vec()));
    }
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

fn arm_timer(ctx: &Context, state: TimerState) {
    let every = Duration::from_millis(config::get(&config::TIMER_INTERVAL_MS).max(1) as u64);
    ctx.create_timer(every, tick, state);
}

/// What one scan step needs to decide per session.
struct Visit {
    db: i32,
    now: i64,
    primary: bool,
    idle_ms: i64,
    batch: usize,
    started: Instant,
    budget: Duration,
}

impl Visit {
    fn over_budget(&self) -> bool {
        self.started.elapsed() >= self.budget || queue_depth() >= MAX_QUEUED_WRITES
    }
}

/// One timer tick: apply finished writes, then walk the keyspace for a bounded time and
/// hand sessions that should move to disk to the I/O threads.
fn tick(ctx: &Context, mut state: TimerState) {
    let started = Instant::now();
    maybe_train_dictionary();
    let budget = Duration::from_micros(config::get(&config::TIMER_BUDGET_US).max(1) as u64);
    // Finished writes first, within the budget; the rest wait for the next tick.
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
    lock(&UNLINKED).clear();
    let mut visit = Visit {
        db: state.db,
        now: crate::conv::commands::now_ms(),
        primary: is_primary(ctx),
        idle_ms: config::get(&config::IDLE_ARCHIVE_SECS) * 1000,
        batch: config::get(&config::ARCHIVE_BATCH).max(1) as usize,
        started,
        budget,
    };
    // Sessions that reached an overflow batch since the last tick.
    let dirty: Vec<(i32, Vec<u8>)> = std::mem::take(&mut *lock(&DIRTY));
    let mut dirty = dirty.into_iter();
    for (db, key) in dirty.by_ref() {
        visit.db = db;
        visit_by_name(ctx, &visit, db, &key);
        if visit.over_budget() {
            break;
        }
    }
    let rest: Vec<(i32, Vec<u8>)> = dirty.collect();
    if !rest.is_empty() {
        lock(&DIRTY).extend(rest);
    }
    // Then a slice of the keyspace pass that finds idle sessions (and work a replica or a
    // restart left undone).
    let pause_ms = (visit.idle_ms / 10).clamp(100, 10_000);
    let start_db = state.db;
    let mut wrapped = false;
    while !visit.over_budget() && visit.now - state.pass_done_ms >= pause_ms {
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
    let us = started.elapsed().as_micros() as i64;
    metrics::TIMER_TICKS.incr();
    metrics::TIMER_TICK_US_TOTAL.add(us);
    metrics::TIMER_TICK_US_MAX.max(us);
    arm_timer(ctx, state);
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
        visit_session(v, keys::string_bytes(keyname), s);
    }
}

fn visit_by_name(ctx: &Context, v: &Visit, db: i32, key: &[u8]) {
    keys::select_db(ctx, db);
    let name = RedisString::create_from_slice(ctx.ctx, key);
    if let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) {
        s.set_queued(false);
        visit_session(v, key, s);
    }
}

fn visit_session(v: &Visit, key: &[u8], s: &mut Session) {
    // Past the budget the rest of this scan step is skipped; the next pass sees it again.
    if s.pending().is_some() || v.now < s.retry_at_ms() || v.over_budget() {
        return;
    }
    // Work already decided by the primary (replica catching up, after a restart): any node.
    if let Some(upto) = s.undurable_upto() {
        submit_append(v.db, key, s, upto, false, None);
        return;
    }
    if !v.primary {
        return;
    }
    let idle = v.now - s.last_access_ms.get() >= v.idle_ms;
    if idle {
        if let Some(upto) = s.archive_candidates(true) {
            submit_append(v.db, key, s, upto, true, None);
        }
    } else if s.overflow_len() >= v.batch {
        if let Some(upto) = s.archive_candidates(false) {
            submit_append(v.db, key, s, upto, false, None);
        }
    }
}

/// CONV.IMPORT key name: imports `<import-dir>/<name>.huff`, a lix_open_cache `CAv1`
/// archive, into a new session `key`. Replies the number of turns imported.
pub fn import_cmd(ctx: &Context, argv: Vec<RedisString>) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let name = argv[2].as_slice();
    if !crate::archive::filename::is_safe_import_name(name) {
        return Err(RedisError::String(format!(
            "ERR import name '{}' must be a plain file name (no path separators, at most 200 bytes)",
            String::from_utf8_lossy(name)
        )));
    }
    let key = ctx.open_key(&argv[1]);
    if !key.is_null() {
        return Err(RedisError::Str("ERR target key already exists"));
    }
    drop(key);
    let mut file = name.to_vec();
    file.extend_from_slice(b".huff");
    let path = PathBuf::from(config::get_string(&config::IMPORT_DIR))
        .join(String::from_utf8_lossy(&file).as_ref());
    let bc = blocking::block(ctx, "CONV.IMPORT")?;
    let key_name = argv[1].as_slice().to_vec();
    let shown = String::from_utf8_lossy(&file).into_owned();
    workers().submit(
        Task::ReadFile { path },
        Box::new(move |outcome| {
            let Outcome::File(bytes) = outcome else {
                unreachable!("read-file tasks answer File")
            };
            // Parse off the main thread; the main thread only installs the session.
            let parsed = bytes
                .map_err(|e| format!("ERR cannot read import file '{shown}': {e}"))
                .and_then(|b| {
                    crate::archive::lix::read_cav1(&b)
                        .map_err(|e| format!("ERR import file '{shown}': {e}"))
                });
            let session = parsed.and_then(|lix| {
                let mut s = Session::new(config::get(&config::WINDOW) as u32, lix.created_ms);
                s.sid = crate::conv::commands::new_sid();
                for (i, t) in lix.turns.into_iter().enumerate() {
                    let m = Message {
                        seq: 0,
                        ts_ms: t.ts_ms,
                        role: t.role,
                        content: t.content.into_bytes(),
                        meta: t.meta,
                        emb: t.emb,
                    };
                    // The rules of CONV.ADD: what is imported must load again from RDB/AOF.
                    m.validate()
                        .map_err(|e| format!("ERR import file '{shown}': turn {i}: {e}"))?;
                    s.add(m, None).expect("fresh session numbers ascend");
                }
                Ok(s)
            });
            bc.finish(Box::new(move |ctx| {
                install_import(ctx, &key_name, session.map_err(RedisError::String)?)
            }));
        }),
    );
    Ok(RedisValue::NoReply)
}

fn install_import(ctx: &Context, key_name: &[u8], s: Session) -> RedisResult {
    let name = RedisString::create_from_slice(ctx.ctx, key_name);
    let key = ctx.open_key_writable(&name);
    if !key.is_empty() {
        return Err(RedisError::Str("ERR target key already exists"));
    }
    // Imported history is not idle history: the clock starts now.
    s.touch(crate::conv::commands::now_ms());
    let n = s.total_len();
    let all: Vec<_> = s.turns().collect();
    let payload = super::codec::encode_session(&s, &all);
    metrics::session_created(&s);
    key.set_value(&SESSION_TYPE, s)?;
    // Replicas and the AOF get the imported session itself, not the file name.
    let payload = RedisString::create_from_slice(ctx.ctx, &payload);
    ctx.replicate(super::commands::LOAD_COMMAND, &[&name, &payload][..]);
    ctx.notify_keyspace_event(NotifyEvent::MODULE, "conv.import", &name);
    Ok(RedisValue::Integer(n as i64))
}
