//! Typed access to module values with the server's standard WRONGTYPE error
//! (the crate's own check answers with a non-standard message).

use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::native_types::RedisType;
use redis_module::RedisError;

pub fn read<'a, T>(key: &'a RedisKey, ty: &RedisType) -> Result<Option<&'a T>, RedisError> {
    key.get_value::<T>(ty).map_err(|_| RedisError::WrongType)
}

pub fn write<'a, T>(
    key: &'a RedisKeyWritable,
    ty: &RedisType,
) -> Result<Option<&'a mut T>, RedisError> {
    key.get_value::<T>(ty).map_err(|_| RedisError::WrongType)
}

use redis_module::{raw, Context, RedisString};

fn with_raw_key<R>(
    ctx: &Context,
    name: &RedisString,
    f: impl FnOnce(*mut raw::RedisModuleKey) -> R,
) -> R {
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as i32;
    // SAFETY: plain module API calls; the handle is closed before returning.
    unsafe {
        let k = raw::RedisModule_OpenKey.expect("OpenKey")(ctx.ctx, name.inner, mode);
        let r = f(k);
        raw::RedisModule_CloseKey.expect("CloseKey")(k);
        r
    }
}

/// Milliseconds the key has left, or -1 without a TTL.
pub fn ttl_ms(ctx: &Context, name: &RedisString) -> i64 {
    // SAFETY: `k` is an open key handle.
    with_raw_key(ctx, name, |k| unsafe {
        raw::RedisModule_GetExpire.expect("GetExpire")(k)
    })
}

/// The key's absolute expiry in unix ms, or -1 without a TTL.
pub fn abs_expire_ms(ctx: &Context, name: &RedisString) -> i64 {
    // SAFETY: `k` is an open key handle.
    with_raw_key(ctx, name, |k| unsafe {
        raw::RedisModule_GetAbsExpire.expect("GetAbsExpire")(k)
    })
}

/// Sets an absolute expiry (unix ms), or removes it with `None`.
pub fn set_expire_at(ctx: &Context, name: &RedisString, at_ms: Option<i64>) {
    with_raw_key(ctx, name, |k| unsafe {
        // SAFETY: `k` is an open key handle.
        match at_ms {
            Some(at) => raw::RedisModule_SetAbsExpire.expect("SetAbsExpire")(k, at),
            None => {
                raw::RedisModule_SetExpire.expect("SetExpire")(k, raw::REDISMODULE_NO_EXPIRE as i64)
            }
        }
    });
}

/// The module value at `name` for the module's own bookkeeping (archiving moves turns between
/// memory and disk without changing what clients see), opened read-only so it neither
/// signals a modification (WATCH, client tracking) nor counts as an access.
pub fn internal_value<'a, T>(
    ctx: &Context,
    name: &RedisString,
    ty: &RedisType,
) -> Option<&'a mut T> {
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as i32;
    // SAFETY: plain module API calls; the value belongs to this module and stays alive on the
    // main thread until the key is deleted, which cannot happen while the caller runs.
    unsafe {
        let k = raw::RedisModule_OpenKey.expect("OpenKey")(ctx.ctx, name.inner, mode);
        let value = if raw::RedisModule_KeyType.expect("KeyType")(k)
            == raw::REDISMODULE_KEYTYPE_MODULE as i32
            && raw::RedisModule_ModuleTypeGetType.expect("GetType")(k) == *ty.raw_type.borrow()
        {
            (raw::RedisModule_ModuleTypeGetValue.expect("GetValue")(k) as *mut T).as_mut()
        } else {
            None
        };
        raw::RedisModule_CloseKey.expect("CloseKey")(k);
        value
    }
}

/// The database the context has selected.
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: plain module API call on a live context.
    unsafe { raw::RedisModule_GetSelectedDb.expect("GetSelectedDb")(ctx.ctx) }
}

/// Selects `db` before opening keys (timer, blocked-client and thread-safe contexts);
/// false when the index is out of range.
pub fn select_db(ctx: &Context, db: i32) -> bool {
    // SAFETY: plain module API call on a live context; the server checks the index.
    unsafe {
        raw::RedisModule_SelectDb.expect("SelectDb")(ctx.ctx, db) == raw::REDISMODULE_OK as i32
    }
}

/// The bytes of a server string handed to a callback.
///
/// # Safety
/// `s` is a live string; the slice must not outlive it.
pub unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    let p = raw::RedisModule_StringPtrLen.expect("StringPtrLen")(s, &mut len);
    std::slice::from_raw_parts(p as *const u8, len)
}
