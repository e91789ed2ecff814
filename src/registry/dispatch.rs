//! The bridge from the server's C callback to a safe handler: every command table row's
//! entry point is this function with its handler.
use std::ffi::c_int;
use std::mem::ManuallyDrop;

use redis_module::{raw, Context, RedisResult, RedisString};

/// The C signature of a command callback.
pub type Entry =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// Runs one safe handler for the server and replies with its result.
///
/// # Safety
/// `argv` holds `argc` valid strings that outlive the call: the arguments of a command call.
#[inline(always)]
pub unsafe fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: fn(&Context, &[RedisString]) -> RedisResult,
) -> c_int {
    let context = Context::new(ctx);
    let raw: &[*mut raw::RedisModuleString] = match argc {
        // SAFETY: the caller's contract.
        1.. if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv, argc as usize) },
        _ => &[],
    };
    // Views of the server's arguments, neither retained nor released: the server keeps them
    // for the whole call, and a handler cannot keep a view longer (to keep an argument it
    // clones it, which makes its own string, or copies the bytes). The crate's
    // `decode_args` retained and released each one, two API calls per argument on every
    // command.
    let views: Vec<ManuallyDrop<RedisString>> = raw
        .iter()
        .map(|&s| ManuallyDrop::new(RedisString::from_redis_module_string(ctx, s)))
        .collect();
    // SAFETY: ManuallyDrop<T> has T's layout.
    let args: &[RedisString] =
        unsafe { std::slice::from_raw_parts(views.as_ptr().cast(), views.len()) };
    let response = handler(&context, args);
    context.reply(response) as c_int
}
