//! Evicted sessions come back: when the server evicts a session key (maxmemory), its
//! in-memory turns go to its archive file and a record beside the file keeps the session's
//! header (sequence counter, id, archived range). The next command on the key finds the
//! record in memory (never a disk read on the main thread): reads serve the session from its
//! archive, and a CONV.ADD puts it back in the keyspace first.
//!
//! Who decides: the primary. Its `evicted` event keeps the file and replicates
//! `CONV._EVICTED key`; DEL, UNLINK, CONV.DEL, expiry and FLUSHALL delete as before. A node
//! that does not decide (a replica, or any node replaying its AOF) receives an eviction as a
//! plain DEL, so there a deleted session's file waits one grace period for the primary's
//! `CONV._EVICTED` (which Valkey sends just before the DEL and Redis 7.0 just after it)
//! before it is deleted.

use std::collections::HashMap;
use std::sync::Mutex;

use redis_module::key::RedisKeyWritable;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::codec::{self, Decoded};
use super::session::Session;
use crate::cold::evicted::{self, EvictedRecord};
use crate::cold::store::Store;
use crate::cold::uncounted::UncountedBytes;
use crate::cold::worker::Task;
use crate::metrics;
use crate::server::keys;

pub const EVICTED_COMMAND: &str = "CONV._EVICTED";
/// How long a non-deciding node waits for `CONV._EVICTED` after a DEL of a session.
const GRACE_MS: i64 = 2_000;

/// What a session was when the server unlinked it: enough to keep it if it was evicted.
pub struct Unlinked {
    pub db: i32,
    pub key: Vec<u8>,
    /// Had an archive file (or a write to one under way).
    pub has_file: bool,
    /// The session with every turn archived (its header is what comes back).
    pub stub: Session,
    /// Its in-memory turns (an `encode_more` payload outside the server's memory
    /// accounting), appended to the archive if it was evicted.
    pub hot: Option<UncountedBytes>,
    pub hot_len: usize,
    /// The archive already held the turns up to here.
    pub durable_through: u64,
}

struct Doomed {
    unlinked: Unlinked,
    at_ms: i64,
}

/// Evicted sessions by (db, key): the session codec's encoding of their cold stub.
type Records = HashMap<(i32, Vec<u8>), Vec<u8>>;
static EVICTED: Mutex<Option<Records>> = Mutex::new(None);
/// Sessions deleted on a non-deciding node, waiting for the grace period.
static DOOMED: Mutex<Vec<Doomed>> = Mutex::new(Vec::new());
/// `CONV._EVICTED` received before the DEL it names (Valkey's order).
static RESCUED: Mutex<Vec<(i32, Vec<u8>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The snapshot the `unlink` callback takes of every session.
pub fn snapshot(db: i32, key: &[u8], s: &Session) -> Unlinked {
    Unlinked {
        db,
        key: key.to_vec(),
        has_file: s.archived.count > 0 || s.archive_upto > 0 || s.pending().is_some(),
        hot: (s.hot_len() > 0)
            .then(|| UncountedBytes::copy_of(&codec::encode_more(&s.turns().collect::<Vec<_>>()))),
        hot_len: s.hot_len(),
        durable_through: s.archived.last_seq,
        stub: s.cold_stub(),
    }
}

/// Reads every record under the archive directory, at module load (like the RDB, before the
/// server serves); a damaged record is logged and skipped.
pub fn load(ctx: &Context) {
    let (found, bad) = Store::evicted_records(&super::cold::archive_root());
    for e in bad {
        ctx.log_warning(&format!("convcache: evicted-session record skipped: {e}"));
    }
    let mut map = HashMap::new();
    for r in found {
        if matches!(codec::decode(&r.session), Ok(Decoded::Session(_))) {
            map.insert((r.db, r.key), r.session);
        }
    }
    metrics::EVICTED_SESSIONS.add(map.len() as i64);
    *lock(&EVICTED) = Some(map);
}

/// The session an evicted key left, if any: all of its turns are in its archive.
pub fn stub(db: i32, key: &[u8]) -> Option<Session> {
    let map = lock(&EVICTED);
    // Every new session's first ADD asks: no key copy while nothing is evicted.
    let payload = map
        .as_ref()
        .filter(|m| !m.is_empty())?
        .get(&(db, key.to_vec()))?;
    match codec::decode(payload) {
        Ok(Decoded::Session(s)) => Some(s),
        _ => None,
    }
}

/// The server evicted this session (or, on a non-deciding node, the primary said it did):
/// its turns go to its archive and the record keeps the session.
pub fn keep(u: Unlinked) {
    let path = super::cold::path_for(u.db, &u.key);
    let payload = codec::encode_session(&u.stub, &[]);
    let record = evicted::encode(&EvictedRecord {
        db: u.db,
        key: u.key.clone(),
        session: payload.clone(),
    });
    metrics::EVICTED_KEPT.incr();
    metrics::EVICTED_TURNS_WRITTEN.add(u.hot_len as i64);
    if let Some(payload) = u.hot {
        let shown = String::from_utf8_lossy(&u.key).into_owned();
        super::cold::submit_task(
            Task::AppendUncounted {
                path: path.clone(),
                key: u.key.clone(),
                session_id: u.stub.sid as i64,
                durable_through: u.durable_through,
                payload,
            },
            Box::new(move |outcome| {
                if let crate::cold::worker::Outcome::Appended(Err(e)) = outcome {
                    metrics::IO_ERRORS.incr();
                    redis_module::logging::log_warning(format!(
                        "convcache: evicted session '{shown}': its turns could not be archived: {e}"
                    ));
                }
            }),
        );
    }
    super::cold::submit_task(
        Task::WriteEvicted {
            path,
            bytes: record,
        },
        Box::new(|outcome| {
            if let crate::cold::worker::Outcome::Done(Err(e)) = outcome {
                metrics::IO_ERRORS.incr();
                redis_module::logging::log_warning(format!(
                    "convcache: evicted-session record not written: {e}"
                ));
            }
        }),
    );
    let mut map = lock(&EVICTED);
    if map
        .get_or_insert_with(HashMap::new)
        .insert((u.db, u.key), payload)
        .is_none()
    {
        metrics::EVICTED_SESSIONS.incr();
    }
}

/// The key holds a session again, or was deleted: its record goes.
pub fn forget(db: i32, key: &[u8]) {
    // Asked on every DEL of any key: no key copy while nothing is evicted.
    let gone = lock(&EVICTED)
        .as_mut()
        .filter(|m| !m.is_empty())
        .and_then(|m| m.remove(&(db, key.to_vec())))
        .is_some();
    if gone {
        metrics::EVICTED_SESSIONS.add(-1);
        super::cold::submit_task(
            Task::DeleteEvicted {
                path: super::cold::path_for(db, key),
            },
            Box::new(|_| {}),
        );
    }
}

/// FLUSHDB / FLUSHALL (`db` -1): the records of that database go with its keys.
pub fn forget_db(db: i32) {
    let keys: Vec<(i32, Vec<u8>)> = lock(&EVICTED)
        .as_ref()
        .map(|m| {
            m.keys()
                .filter(|(d, _)| db < 0 || *d == db)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for (d, k) in keys {
        forget(d, &k);
        super::cold::delete_archive(d, &k);
    }
}

/// A DEL of a session on a node that does not decide: kept if the primary says it evicted
/// it, deleted after the grace period otherwise.
pub fn doom(u: Unlinked, now_ms: i64) {
    let mut rescued = lock(&RESCUED);
    if let Some(i) = rescued.iter().position(|(d, k)| *d == u.db && *k == u.key) {
        rescued.swap_remove(i);
        drop(rescued);
        keep(u);
        return;
    }
    lock(&DOOMED).push(Doomed {
        unlinked: u,
        at_ms: now_ms,
    });
}

/// The timer's share: doomed sessions past the grace period lose their file.
pub fn resolve(now_ms: i64) {
    let due: Vec<Doomed> = {
        let mut d = lock(&DOOMED);
        let (due, wait) = std::mem::take(&mut *d)
            .into_iter()
            .partition(|x| now_ms - x.at_ms >= GRACE_MS);
        *d = wait;
        due
    };
    for x in due {
        forget(x.unlinked.db, &x.unlinked.key);
        if x.unlinked.has_file {
            super::cold::delete_archive(x.unlinked.db, &x.unlinked.key);
        }
    }
    let mut r = lock(&RESCUED);
    if r.len() > 10_000 {
        r.clear(); // rescues for keys that never came: bounded
    }
}

/// Puts an evicted session back under its key before a write (primary): the replicas and
/// the AOF get the session itself (`CONV._LOAD`), never a re-run of this decision.
pub fn restore(
    ctx: &Context,
    key: &RedisKeyWritable,
    name: &RedisString,
) -> Result<(), RedisError> {
    let db = keys::selected_db(ctx);
    let Some(s) = stub(db, name.as_slice()) else {
        return Ok(());
    };
    let payload = codec::encode_session(&s, &[]);
    super::r#type::store_new(key, s)?;
    forget(db, name.as_slice());
    metrics::EVICTED_RESTORED.incr();
    let payload = RedisString::create_from_slice(ctx.ctx, &payload);
    ctx.replicate(super::r#type::LOAD_COMMAND, &[name, &payload][..]);
    Ok(())
}

/// CONV._EVICTED key: the primary evicted this session; keep its file (internal).
pub fn evicted_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let db = keys::selected_db(ctx);
    let key = argv[1].as_slice().to_vec();
    let mut doomed = lock(&DOOMED);
    if let Some(i) = doomed
        .iter()
        .position(|x| x.unlinked.db == db && x.unlinked.key == key)
    {
        let x = doomed.swap_remove(i);
        drop(doomed);
        keep(x.unlinked);
    } else {
        drop(doomed);
        lock(&RESCUED).push((db, key));
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}
