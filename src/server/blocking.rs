//! Blocked clients whose reply is built on the main thread: a background thread hands back a
//! closure, and the server runs it in the reply callback with a real context (keys can be
//! opened and commands replicated there).
//!
//! A client that disconnects while blocked gets no reply callback: the server only frees the
//! private data. The closure's work (apply an archive write, an ADD counted in the
//! background, an import) must still happen, as a command whose client left after sending it
//! still runs, so it is queued and the timer runs it (`finish_orphans`), reply discarded.

use std::os::raw::{c_int, c_void};
use std::sync::Mutex;

use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult};

pub type Finish = Box<dyn FnOnce(&Context) -> RedisResult + Send>;

pub struct Blocked {
    handle: *mut raw::RedisModuleBlockedClient,
    /// The client's selected database when it blocked, for work run without its context.
    db: i32,
}

/// What the reply callback runs, with the database it runs in.
struct Pending {
    db: i32,
    finish: Option<Finish>,
}

/// Work of blocked clients that left before their reply.
static ORPHANS: Mutex<Vec<(i32, Finish)>> = Mutex::new(Vec::new());

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
    Ok(Blocked {
        handle: bc,
        db: crate::server::keys::selected_db(ctx),
    })
}

impl Blocked {
    /// Wakes the client; `finish` runs on the main thread and its result is the reply.
    pub fn finish(self, finish: Finish) {
        let data = Box::into_raw(Box::new(Pending {
            db: self.db,
            finish: Some(finish),
        }));
        // SAFETY: the handle came from BlockClient and is unblocked exactly once (self moves).
        unsafe { raw::RedisModule_UnblockClient.expect("UnblockClient")(self.handle, data.cast()) };
    }
}

extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: private data is the box made in `finish`; freed later by `free_cb`.
    let pending = unsafe {
        &mut *(raw::RedisModule_GetBlockedClientPrivateData.expect("private data")(ctx)
            as *mut Pending)
    };
    let ctx = Context::new(ctx);
    if let Some(f) = pending.finish.take() {
        let result = f(&ctx);
        ctx.reply(result);
    }
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_cb(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: made by Box::into_raw in `finish`.
        let pending = unsafe { Box::from_raw(data as *mut Pending) };
        // Not taken by `reply_cb`: the client left. The work still happens, on the timer.
        if let Some(f) = pending.finish {
            ORPHANS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((pending.db, f));
        }
    }
}

/// Runs the work of blocked clients that left before their reply (the timer calls this), each
/// in the database its client had selected; the replies go nowhere.
pub fn finish_orphans(ctx: &Context) {
    let orphans = std::mem::take(&mut *ORPHANS.lock().unwrap_or_else(|e| e.into_inner()));
    for (db, finish) in orphans {
        crate::server::keys::select_db(ctx, db);
        if let Err(e) = finish(ctx) {
            ctx.log_warning(&format!(
                "convcache: the work of a command whose client left was refused: {e}"
            ));
        }
    }
}
