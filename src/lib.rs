//! convcache: conversation memory and semantic caching as native Valkey/Redis commands.
//! This file only registers things; the logic lives in the capability folders.

pub mod archive;
pub mod args;
pub mod config;
pub mod conv;
pub mod info;
pub mod keys;
pub mod metrics;
pub mod vector;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{redis_module, Context, RedisString, Status};

use conv::commands as convcmd;
use conv::r#type::SESSION_TYPE;

// The server's allocator in the module (memory shows in INFO/MEMORY); the system one in unit
// tests, which run without a server.
#[cfg(not(test))]
type Alloc = redis_module::alloc::RedisAlloc;
#[cfg(not(test))]
const ALLOC: Alloc = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type Alloc = std::alloc::System;
#[cfg(test)]
const ALLOC: Alloc = std::alloc::System;

extern "C" fn info_callback(
    ctx: *mut redis_module::raw::RedisModuleInfoCtx,
    for_crash_report: i32,
) {
    info::add_info(&redis_module::InfoContext::new(ctx), for_crash_report != 0);
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // Replaces the macro's default INFO callback with ours (its `info:` form needs an extra crate).
    redis_module::raw::register_info_function(ctx.ctx, Some(info_callback));
    Status::Ok
}

redis_module! {
    name: "convcache",
    version: 1,
    allocator: (Alloc, ALLOC),
    data_types: [SESSION_TYPE],
    init: init,
    commands: [
        ["CONV.ADD", convcmd::add, "write deny-oom fast", 1, 1, 1, ""],
        ["CONV.CTX", convcmd::ctx_cmd, "readonly", 1, 1, 1, ""],
        ["CONV.HISTORY", convcmd::history, "readonly", 1, 1, 1, ""],
        ["CONV.LEN", convcmd::len, "readonly fast", 1, 1, 1, ""],
        ["CONV.INFO", convcmd::info, "readonly fast", 1, 1, 1, ""],
        ["CONV.CLEAR", convcmd::clear, "write fast", 1, 1, 1, ""],
        ["CONV.DEL", convcmd::del, "write fast", 1, 1, 1, ""],
        ["CONV._LOAD", convcmd::load, "write deny-oom", 1, 1, 1, ""],
    ],
    configurations: [
        i64: [
            ["window", &*config::WINDOW, config::WINDOW_DEFAULT, 1, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["max-content-bytes", &*config::MAX_CONTENT_BYTES, config::MAX_CONTENT_DEFAULT, 1, 512 * 1024 * 1024, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
