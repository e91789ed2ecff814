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

/// Makes the AOF rewrite (or the slot-migration snapshot) in progress fail, after logging why.
/// The module API has no call for this; `EmitAOF` with a format it rejects marks the I/O as
/// failed, which the server then reports as a failed rewrite.
///
/// # Safety
/// `aof` is the handle the server passed to an `aof_rewrite` callback.
pub unsafe fn fail_rewrite(aof: *mut raw::RedisModuleIO, why: &str) {
    redis_module::logging::log_warning(why);
    // 'z' is no format specifier of EmitAOF: the server logs it and sets the I/O error.
    raw::RedisModule_EmitAOF.expect("EmitAOF")(aof, c"CONV._LOAD".as_ptr(), c"z".as_ptr());
}
