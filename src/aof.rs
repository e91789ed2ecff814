//! AOF rewrite: both native types rebuild a key with `<TYPE>._LOAD key payload` commands.

use std::ffi::CString;

use redis_module::raw;

/// Emits `command key payload` into the AOF being rewritten.
///
/// # Safety
/// `aof` and `key` are the handles the server passed to an `aof_rewrite` callback.
pub unsafe fn emit_load(
    aof: *mut raw::RedisModuleIO,
    command: &str,
    key: *mut raw::RedisModuleString,
    payload: &[u8],
) {
    let command = CString::new(command).expect("command names have no NUL");
    raw::RedisModule_EmitAOF.expect("EmitAOF")(
        aof,
        command.as_ptr(),
        c"sb".as_ptr(),
        key,
        payload.as_ptr(),
        payload.len(),
    );
}
