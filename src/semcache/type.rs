//! The `semcachev` data type: every server callback casts its pointer and delegates to the
//! pure bucket and codec code. Also the two raw calls the background scan needs (the
//! client's selected database), so that all `unsafe` of the semantic cache lives here.

use std::os::raw::{c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::codec::{self, Decoded};
use super::SemCache;

/// RDB encoding version of the type. 1: a header payload, then entry payloads until the
/// header's count is reached (the payloads carry their own codec version). 2: then one index
/// payload when the header says the bucket has an index.
pub const ENCODING_VERSION: i32 = 2;

pub static SEMCACHE_TYPE: RedisType = RedisType::new(
    "semcachev",
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
        unlink: None,
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

unsafe fn cache<'a>(value: *const c_void) -> &'a SemCache {
    &*(value as *const SemCache)
}

fn into_raw(c: SemCache) -> *mut c_void {
    super::created(&c);
    Box::into_raw(Box::new(c)).cast()
}

fn log_warning(msg: &str) {
    redis_module::logging::log_warning(msg);
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver > ENCODING_VERSION {
        log_warning(&format!(
            "convcache: RDB holds semcache encoding {encver}, newer than this module ({ENCODING_VERSION}); upgrade the module"
        ));
        return std::ptr::null_mut();
    }
    let read = || -> Result<SemCache, String> {
        let short = |_| "short read (truncated or corrupt value)".to_string();
        let buf = raw::load_string_buffer(rdb).map_err(short)?;
        let Decoded::Header(h) = codec::decode(buf.as_ref()).map_err(|e| e.to_string())? else {
            return Err("semcache payload has no header".into());
        };
        let mut b = codec::bucket_from_header(&h).map_err(|e| e.to_string())?;
        while (b.len() as u64) < h.count {
            let buf = raw::load_string_buffer(rdb).map_err(short)?;
            match codec::decode(buf.as_ref()).map_err(|e| e.to_string())? {
                Decoded::Entries(next, e) if !e.is_empty() => {
                    codec::push_entries(&mut b, next, e).map_err(|e| e.to_string())?
                }
                _ => return Err("semcache entries expected".into()),
            }
        }
        if b.len() as u64 != h.count {
            return Err("semcache entry count differs from its header".into());
        }
        b.restore_next_id(h.next_id);
        if h.has_index {
            let buf = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            match codec::decode(buf.as_ref()).map_err(|e| e.to_string())? {
                Decoded::Index(g) => codec::attach_index(&mut b, g).map_err(|e| e.to_string())?,
                _ => return Err("semcache index expected".into()),
            }
        }
        Ok(SemCache::new(b, h.hits, h.misses))
    };
    // With HANDLE_IO_ERRORS set, a short read is an error here (the load fails cleanly).
    match read() {
        Ok(c) => into_raw(c),
        Err(e) => {
            let key = crate::conv::r#type::io_key(rdb);
            log_warning(&format!(
                "convcache: cannot load semantic cache {}: {e}",
                crate::conv::r#type::shown_key(key.as_ref())
            ));
            std::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let c = cache(value);
    raw::save_slice(
        rdb,
        &codec::encode_header(&c.bucket, c.hits.get(), c.misses.get()),
    );
    for chunk in codec::entry_chunks(&c.bucket) {
        raw::save_slice(rdb, &chunk);
    }
    if let Some(index) = codec::encode_index(&c.bucket) {
        raw::save_slice(rdb, &index);
    }
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let c = cache(value);
    let header = codec::encode_header(&c.bucket, c.hits.get(), c.misses.get());
    crate::server::aof::emit_load(aof, super::commands::LOAD_COMMAND, key, &header);
    for chunk in codec::entry_chunks(&c.bucket) {
        crate::server::aof::emit_load(aof, super::commands::LOAD_COMMAND, key, &chunk);
    }
    if let Some(index) = codec::encode_index(&c.bucket) {
        crate::server::aof::emit_load(aof, super::commands::LOAD_COMMAND, key, &index);
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    let c = Box::from_raw(value.cast::<SemCache>());
    super::freed(&c);
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    cache(value).mem_bytes()
}

/// Big buckets are freed on a background thread by UNLINK/FLUSHALL ASYNC.
unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    cache(value).bucket.len() + 1
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    into_raw(cache(value).clone())
}

/// Digest of the replicated state: the bucket without its lookup counters, with its index
/// graph (a replica builds the same graph from the same commands).
unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let c = cache(value);
    let add = |b: &[u8]| {
        raw::RedisModule_DigestAddStringBuffer.expect("digest")(md, b.as_ptr().cast(), b.len())
    };
    add(&codec::encode_header(&c.bucket, 0, 0));
    raw::RedisModule_DigestEndSequence.expect("digest")(md);
    for e in c.bucket.entries_with_tags() {
        add(&codec::encode_entries(0, c.bucket.quant(), &[e]));
        raw::RedisModule_DigestEndSequence.expect("digest")(md);
    }
    if let Some(index) = codec::encode_index(&c.bucket) {
        add(&index);
        raw::RedisModule_DigestEndSequence.expect("digest")(md);
    }
}

/// Gives a new value to the server (counted in INFO until `free`).
pub fn store_new(
    key: &redis_module::key::RedisKeyWritable,
    c: SemCache,
) -> Result<(), redis_module::RedisError> {
    super::created(&c);
    key.set_value(&SEMCACHE_TYPE, c)
}
