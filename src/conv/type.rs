//! The `convcache` data type: every server callback casts its pointer and delegates to the
//! pure session code. No logic of its own lives here.

use std::os::raw::{c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::codec::{self, Decoded};
use super::cold;
use super::message::Message;
use super::session::Session;
use super::turn::Turn;
use crate::metrics;
use crate::server::keys;

/// RDB encoding version of the type. 1: one `codec` payload (which carries its own version).
/// 2: then the session's archive file as it is on disk (empty when nothing is archived), so a
/// replica after a full sync, or a RESTOREd key, gets the archived turns too.
pub const ENCODING_VERSION: i32 = 2;

/// AOF rewrite emits the session in commands of at most this many messages, so a huge
/// session never builds one argument bigger than the server's bulk limit.
const AOF_MESSAGES_PER_COMMAND: usize = 1000;

pub static SESSION_TYPE: RedisType = RedisType::new(
    "convcache",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        free: Some(free),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: Some(free_effort),
        unlink: Some(unlink),
        copy: None,
        defrag: None,
        copy2: Some(copy2),
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// Tells the arena which allocator the server runs, so MEMORY USAGE counts what it really
/// costs (see `arena::alloc_size`): jemalloc rounds 4097 bytes up to 5120, glibc does not.
pub fn detect_allocator() {
    // SAFETY: the server's allocator, on a block this function owns and frees.
    unsafe {
        let (Some(alloc), Some(usable), Some(free)) = (
            raw::RedisModule_Alloc,
            raw::RedisModule_MallocUsableSize,
            raw::RedisModule_Free,
        ) else {
            return;
        };
        let p = alloc(4097);
        super::arena::set_allocator_is_jemalloc(usable(p) >= 5120);
        free(p);
    }
}

unsafe fn session<'a>(value: *const c_void) -> &'a Session {
    &*(value as *const Session)
}

/// Hands a session to the server, counting it in INFO.
pub fn into_raw(s: Session) -> *mut c_void {
    metrics::session_created(&s);
    Box::into_raw(Box::new(s)).cast()
}

/// Loads a session (RDB at startup, RESTORE, full sync). Any short read, bad payload or
/// archive that does not hold the session's archived turns fails the load cleanly (NULL):
/// the module sets HANDLE_IO_ERRORS, so reads past the end come back as errors instead of
/// aborting the server. Nothing is written to disk unless the whole value is good.
unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    let key = io_key(rdb);
    match load_session(rdb, encver) {
        Ok((s, archive)) => {
            if !archive.is_empty() {
                if let Some((db, key)) = &key {
                    cold::restore_archive(*db, key, &s, archive);
                }
            } else if s.archived.count > 0 {
                log_warning(&format!(
                    "convcache: session {} has {} archived turns but its RDB value carries no archive file (the saving node could not read it); this node's own file is used",
                    shown_key(key.as_ref()),
                    s.archived.count
                ));
            }
            into_raw(s)
        }
        Err(e) => {
            log_warning(&format!(
                "convcache: cannot load session {}: {e}",
                shown_key(key.as_ref())
            ));
            std::ptr::null_mut()
        }
    }
}

/// True while the server loads an RDB (startup, full sync, DEBUG RELOAD); false for RESTORE.
unsafe fn server_is_loading(rdb: *mut raw::RedisModuleIO) -> bool {
    let loading = raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING;
    let ctx = raw::RedisModule_GetContextFromIO.expect("GetContextFromIO")(rdb);
    let flags = raw::RedisModule_GetContextFlags.expect("GetContextFlags")(ctx);
    flags as u32 & loading != 0
}

/// A key for a log line: `'name' (db n)`.
pub(crate) fn shown_key(key: Option<&(i32, Vec<u8>)>) -> String {
    match key {
        Some((db, k)) => format!("'{}' (db {db})", String::from_utf8_lossy(k)),
        None => "(key name unknown)".to_string(),
    }
}

/// The session and the archive file bytes of one RDB value, both checked.
unsafe fn load_session(
    rdb: *mut raw::RedisModuleIO,
    encver: c_int,
) -> Result<(Session, Vec<u8>), String> {
    if encver > ENCODING_VERSION {
        return Err(format!(
            "RDB holds session encoding {encver}, newer than this module ({ENCODING_VERSION}); upgrade the module"
        ));
    }
    let short = |what: &str| format!("short read of the {what} (truncated or corrupt value)");
    let buf = raw::load_string_buffer(rdb).map_err(|_| short("session payload"))?;
    let archive = if encver >= 2 {
        raw::load_string_buffer(rdb)
            .map_err(|_| short("archive file"))?
            .as_ref()
            .to_vec()
    } else {
        Vec::new()
    };
    let mut s = match codec::decode(buf.as_ref()).map_err(|e| e.to_string())? {
        Decoded::Session(s) => s,
        Decoded::More(_) | Decoded::Archived(_) => {
            return Err("session payload has no header".into())
        }
    };
    if !archive.is_empty() && s.archived.count == 0 {
        return Err("an archive file came with a session that has no archived turns".into());
    }
    // An RDB (restart, full sync) whose saving node could not read a file still loads, so one
    // lost file never stops a server or a replica; a RESTORE needs the whole value.
    if archive.is_empty() && s.archived.count > 0 && !server_is_loading(rdb) {
        return Err(format!(
            "the value has {} archived turns but no archive file",
            s.archived.count
        ));
    }
    if !archive.is_empty() {
        // The file's turns are the truth for their tokens (older payloads do not carry them).
        s.archived_tokens = crate::cold::format::check_session_archive(
            &archive,
            s.sid as i64,
            s.archived.first_seq,
            s.archived.last_seq,
        )
        .map_err(|e| format!("its archive file: {e}"))?;
    }
    Ok((s, archive))
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let s = session(value);
    let all: Vec<Turn> = s.turns().collect();
    raw::save_slice(rdb, &codec::encode_session(s, &all));
    // BGSAVE and replication run this in a forked child, where reading the file blocks no
    // client; DUMP, SAVE and DEBUG RELOAD read it on the main thread, like the rest of them.
    let archive = match io_key(rdb) {
        Some((db, key)) if s.archived.count > 0 => cold::archive_bytes(db, &key),
        _ => Vec::new(),
    };
    raw::save_slice(rdb, &archive);
}

/// The key and database an RDB read or write is for (absent for some server paths).
pub(crate) unsafe fn io_key(rdb: *mut raw::RedisModuleIO) -> Option<(i32, Vec<u8>)> {
    let name = raw::RedisModule_GetKeyNameFromIO.expect("GetKeyNameFromIO")(rdb);
    if name.is_null() {
        return None;
    }
    let db = raw::RedisModule_GetDbIdFromIO.map_or(0, |f| f(rdb));
    Some((db, keys::string_bytes(name).to_vec()))
}

/// The session as CONV._LOAD commands: the header with the first in-memory turns, the rest
/// of them, then the archived turns read from its file. Whoever replays them needs nothing
/// else: a Valkey slot migration ships exactly this to a node without the file, and an AOF
/// without an RDB preamble stays complete however the archive directory fares. If the file
/// cannot be read, the rewrite (or migration) fails rather than lose the turns.
unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let s = session(value);
    let emit = |payload: &[u8]| {
        crate::server::aof::emit_load(aof, super::commands::LOAD_COMMAND, key, payload)
    };
    let all: Vec<Turn> = s.turns().collect();
    let mut chunks = all.chunks(AOF_MESSAGES_PER_COMMAND);
    let first = chunks.next().unwrap_or(&[]);
    emit(&codec::encode_session(s, first));
    for chunk in chunks {
        emit(&codec::encode_more(chunk));
    }
    if s.archived.count == 0 {
        return;
    }
    let name = keys::string_bytes(key);
    let db = raw::RedisModule_GetDbIdFromIO.map_or(0, |f| f(aof));
    match cold::read_archived_turns(db, name, s) {
        Ok(turns) => {
            let refs: Vec<Turn> = turns.iter().map(Message::as_turn).collect();
            for chunk in refs.chunks(AOF_MESSAGES_PER_COMMAND) {
                emit(&codec::encode_archived(chunk));
            }
        }
        Err(e) => crate::server::aof::fail_rewrite(
            aof,
            &format!(
                "convcache: cannot rewrite session '{}': its archived turns are unreadable ({e}); the AOF rewrite or slot migration fails so that nothing is lost",
                String::from_utf8_lossy(name)
            ),
        ),
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    let s = Box::from_raw(value.cast::<Session>());
    metrics::session_freed(&s);
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    session(value).mem_bytes()
}

/// Large sessions are freed on a background thread by UNLINK/FLUSHALL ASYNC.
unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    session(value).hot_len() + 1
}

/// COPY: an independent session; its archived turns get their own copy of the file.
unsafe extern "C" fn copy2(
    octx: *mut raw::RedisModuleKeyOptCtx,
    value: *const c_void,
) -> *mut c_void {
    let s = session(value);
    let name = |k: *const raw::RedisModuleString| keys::string_bytes(k).to_vec();
    let from = name(raw::RedisModule_GetKeyNameFromOptCtx.expect("opt ctx")(
        octx,
    ));
    let to = name(raw::RedisModule_GetToKeyNameFromOptCtx.expect("opt ctx")(
        octx,
    ));
    let from_db = raw::RedisModule_GetDbIdFromOptCtx.expect("opt ctx")(octx);
    let to_db = raw::RedisModule_GetToDbIdFromOptCtx.expect("opt ctx")(octx);
    super::keyspace::on_copy(from_db, &from, to_db, &to, s);
    let mut copy = s.clone();
    copy.set_pending(None);
    copy.set_queued(false);
    into_raw(copy)
}

/// The key leaves the keyspace (DEL, UNLINK, expiry, but also RENAME/MOVE): the keyspace
/// event that follows decides what happens to the archive file.
unsafe extern "C" fn unlink(key: *mut raw::RedisModuleString, value: *const c_void) {
    super::keyspace::on_unlink(keys::string_bytes(key), session(value));
}

/// Digest of the replicated state: the conversation as the primary decided it, whatever part
/// of it this node has already moved to disk (a replica may still be writing what the primary
/// archived), and without the last-access time, which reads change.
unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let s = session(value);
    let add = |b: &[u8]| {
        raw::RedisModule_DigestAddStringBuffer.expect("digest")(md, b.as_ptr().cast(), b.len())
    };
    let mut head = Vec::new();
    crate::varint::put(&mut head, u64::from(s.window));
    crate::varint::put(&mut head, s.next_seq);
    head.extend_from_slice(&s.created_ms.to_le_bytes());
    crate::varint::put(&mut head, s.archive_upto);
    crate::varint::put(&mut head, s.total_len());
    crate::varint::put(&mut head, s.first_seq().unwrap_or(0));
    head.push(s.tokenizer.code());
    add(&head);
    raw::RedisModule_DigestEndSequence.expect("digest")(md);
    let mut buf = Vec::new();
    for m in s.turns().filter(|m| m.seq > s.archive_upto) {
        buf.clear();
        codec::put_message(&mut buf, &m);
        add(&buf);
        raw::RedisModule_DigestEndSequence.expect("digest")(md);
    }
}

fn log_warning(msg: &str) {
    redis_module::logging::log_warning(msg);
}
