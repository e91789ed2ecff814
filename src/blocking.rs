//! Blocked clients whose reply is built on the main thread: a background thread hands back a
//! closure, and the server runs it in the reply callback with a real context (keys can be
//! opened and commands replicated there).

use std::os::raw::{c_int, c_void};

use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult};

pub type Finish = Box<dyn FnOnce(&Context) -> RedisResult + Send>;

pub struct Blocked(*mut raw::RedisModuleBlockedClient);

// SAFETY: a blocked-client handle may be unblocked from any thread (the module API's contract).
unsafe impl Send for Blocked {}

/// Blocks the calling client; refuses where the server cannot block (MULTI, scripts).
pub fn block(ctx: &Context, what: &str) -> Result<Blocked, RedisError> {
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        return Err(RedisError::String(format!(
            "ERR {what} needs the archive on disk and cannot wait inside MULTI or a script"
        )));
    }
    // SAFETY: plain call of the module API with callbacks defined below.
    let bc = unsafe {
        raw::RedisModule_BlockClient.expect("BlockClient")(
            ctx.ctx,
            Some(reply_cb),
            None,
            Some(free_cb),
            0,
        )
    };
    Ok(Blocked(bc))
}

impl Blocked {
    /// Wakes the client; `finish` runs on the main thread and its result is the reply.
    pub fn finish(self, finish: Finish) {
        let data = Box::into_raw(Box::new(Some(finish)));
        // SAFETY: the handle came from BlockClient and is unblocked exactly once (self moves).
        unsafe { raw::RedisModule_UnblockClient.expect("UnblockClient")(self.0, data.cast()) };
    }
}

extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: private data is the box made in `finish`; freed later by `free_cb`.
    let slot = unsafe {
        &mut *(raw::RedisModule_GetBlockedClientPrivateData.expect("private data")(ctx)
            as *mut Option<Finish>)
    };
    let ctx = Context::new(ctx);
    if let Some(f) = slot.take() {
        let result = f(&ctx);
        ctx.reply(result);
    }
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_cb(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: made by Box::into_raw in `finish`.
        drop(unsafe { Box::from_raw(data as *mut Option<Finish>) });
    }
}
