//! convcache: conversation memory and semantic caching as native Valkey/Redis commands.
//! This file only registers things; the logic lives in the capability folders.

pub mod conv;
pub mod import;
pub mod registry;
pub mod semcache;
pub mod server;
pub mod urlemb;

// The core's modules under the names the shell uses for them.
pub use convcache_core::{clock, cold, metrics, pool, varint, vector, wire};

use redis_module::configuration::ConfigurationFlags;
use redis_module::{redis_module, Context, RedisString, Status};

use conv::keyspace;
use conv::r#type::SESSION_TYPE;
use semcache::r#type::SEMCACHE_TYPE;
use server::config;

// The server's allocator in the module (memory shows in INFO/MEMORY); the system one in unit
// tests, which run without a server.
#[cfg(not(test))]
type Alloc = server::alloc::ServerAlloc;
#[cfg(not(test))]
const ALLOC: Alloc = server::alloc::ServerAlloc;
#[cfg(test)]
type Alloc = std::alloc::System;
#[cfg(test)]
const ALLOC: Alloc = std::alloc::System;

extern "C" fn info_callback(
    ctx: *mut redis_module::raw::RedisModuleInfoCtx,
    for_crash_report: i32,
) {
    registry::info::add_info(&redis_module::InfoContext::new(ctx), for_crash_report != 0);
}

/// RedisModuleFlushInfo (version 1).
#[repr(C)]
struct FlushInfo {
    version: u64,
    sync: i32,
    dbnum: i32,
}

unsafe extern "C" fn on_flush(
    _ctx: *mut redis_module::raw::RedisModuleCtx,
    _eid: redis_module::raw::RedisModuleEvent,
    subevent: u64,
    data: *mut std::ffi::c_void,
) {
    if subevent == redis_module::raw::REDISMODULE_SUBEVENT_FLUSHDB_START && !data.is_null() {
        // SAFETY: the server passes a RedisModuleFlushInfo with this event.
        let info = unsafe { &*(data as *const FlushInfo) };
        conv::evicted::forget_db(info.dbnum);
    }
}

/// What the module declares it handles (`RedisModule_SetModuleOptions` takes the whole set).
/// HANDLE_IO_ERRORS: a short read while loading a value (RDB, RESTORE, full sync) comes back
/// to `rdb_load` as an error, which fails that load, instead of aborting the server.
fn module_options() -> i32 {
    redis_module::raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32
        | server::cluster::slot_migration_options()
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // Replaces the macro's default INFO callback with ours (its `info:` form needs an extra crate).
    redis_module::raw::register_info_function(ctx.ctx, Some(info_callback));
    server::cluster::detect_server(ctx);
    conv::r#type::detect_allocator();
    // SAFETY: plain module API call during load.
    unsafe {
        redis_module::raw::RedisModule_SetModuleOptions.expect("SetModuleOptions")(
            ctx.ctx,
            module_options(),
        )
    };
    // Commands come from one table with their key specs, docs and ACL categories.
    if registry::register::register_commands(ctx) == Status::Err {
        return Status::Err;
    }
    conv::timer::start(ctx);
    conv::evicted::load(ctx);
    // FLUSHDB/FLUSHALL delete evicted sessions too (they are no keys, so no event names them).
    // SAFETY: plain module API call during load; the callback lives as long as the module.
    unsafe {
        redis_module::raw::RedisModule_SubscribeToServerEvent.expect("SubscribeToServerEvent")(
            ctx.ctx,
            redis_module::raw::RedisModuleEvent {
                id: redis_module::raw::REDISMODULE_EVENT_FLUSHDB,
                dataver: 1,
            },
            Some(on_flush),
        )
    };
    Status::Ok
}

redis_module! {
    name: "convcache",
    version: 1,
    allocator: (Alloc, ALLOC),
    data_types: [SESSION_TYPE, SEMCACHE_TYPE],
    init: init,
    event_handlers: [
        [@GENERIC @EXPIRED @EVICTED: keyspace::on_keyspace_event],
    ],
    configurations: [
        i64: [
            ["window", &*config::WINDOW, config::WINDOW_SETTING.default, config::WINDOW_SETTING.min, config::WINDOW_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["max-content-bytes", &*config::MAX_CONTENT_BYTES, config::MAX_CONTENT_SETTING.default, config::MAX_CONTENT_SETTING.min, config::MAX_CONTENT_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["idle-archive", &*config::IDLE_ARCHIVE_SECS, config::IDLE_ARCHIVE_SETTING.default, config::IDLE_ARCHIVE_SETTING.min, config::IDLE_ARCHIVE_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["archive-ttl", &*config::ARCHIVE_TTL_DAYS, config::ARCHIVE_TTL_DAYS_SETTING.default, config::ARCHIVE_TTL_DAYS_SETTING.min, config::ARCHIVE_TTL_DAYS_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["archive-batch", &*config::ARCHIVE_BATCH, config::ARCHIVE_BATCH_SETTING.default, config::ARCHIVE_BATCH_SETTING.min, config::ARCHIVE_BATCH_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["archive-dict-min-bytes", &*config::ARCHIVE_DICT_MIN_BYTES, config::ARCHIVE_DICT_MIN_BYTES_SETTING.default, config::ARCHIVE_DICT_MIN_BYTES_SETTING.min, config::ARCHIVE_DICT_MIN_BYTES_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["tokenize-inline-bytes", &*config::TOKENIZE_INLINE_BYTES, config::TOKENIZE_INLINE_BYTES_SETTING.default, config::TOKENIZE_INLINE_BYTES_SETTING.min, config::TOKENIZE_INLINE_BYTES_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["io-threads", &*config::IO_THREADS, config::IO_THREADS_SETTING.default, config::IO_THREADS_SETTING.min, config::IO_THREADS_SETTING.max, ConfigurationFlags::IMMUTABLE, None],
            ["timer-interval-ms", &*config::TIMER_INTERVAL_MS, config::TIMER_INTERVAL_MS_SETTING.default, config::TIMER_INTERVAL_MS_SETTING.min, config::TIMER_INTERVAL_MS_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["timer-budget-us", &*config::TIMER_BUDGET_US, config::TIMER_BUDGET_US_SETTING.default, config::TIMER_BUDGET_US_SETTING.min, config::TIMER_BUDGET_US_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["timer-backlog-budget-us", &*config::TIMER_BACKLOG_BUDGET_US, config::TIMER_BACKLOG_BUDGET_US_SETTING.default, config::TIMER_BACKLOG_BUDGET_US_SETTING.min, config::TIMER_BACKLOG_BUDGET_US_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["pressure-high", &*config::PRESSURE_HIGH, config::PRESSURE_HIGH_SETTING.default, config::PRESSURE_HIGH_SETTING.min, config::PRESSURE_HIGH_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["pressure-low", &*config::PRESSURE_LOW, config::PRESSURE_LOW_SETTING.default, config::PRESSURE_LOW_SETTING.min, config::PRESSURE_LOW_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["max-items", &*config::SEMCACHE_MAX_ITEMS, config::SEMCACHE_MAX_ITEMS_SETTING.default, config::SEMCACHE_MAX_ITEMS_SETTING.min, config::SEMCACHE_MAX_ITEMS_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["semcache-ttl", &*config::SEMCACHE_TTL_SECS, config::SEMCACHE_TTL_SETTING.default, config::SEMCACHE_TTL_SETTING.min, config::SEMCACHE_TTL_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["semcache-index-min", &*config::SEMCACHE_INDEX_MIN, config::SEMCACHE_INDEX_MIN_SETTING.default, config::SEMCACHE_INDEX_MIN_SETTING.min, config::SEMCACHE_INDEX_MIN_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["semcache-index-ef", &*config::SEMCACHE_INDEX_EF, config::SEMCACHE_INDEX_EF_SETTING.default, config::SEMCACHE_INDEX_EF_SETTING.min, config::SEMCACHE_INDEX_EF_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["semcache-index-nprobe", &*config::SEMCACHE_INDEX_NPROBE, config::SEMCACHE_INDEX_NPROBE_SETTING.default, config::SEMCACHE_INDEX_NPROBE_SETTING.min, config::SEMCACHE_INDEX_NPROBE_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["semcache-inline-bytes", &*config::SEMCACHE_INLINE_BYTES, config::SEMCACHE_INLINE_BYTES_SETTING.default, config::SEMCACHE_INLINE_BYTES_SETTING.min, config::SEMCACHE_INLINE_BYTES_SETTING.max, ConfigurationFlags::DEFAULT, None],
            ["urlemb-ttl", &*config::URLEMB_TTL_SECS, config::URLEMB_TTL_SETTING.default, config::URLEMB_TTL_SETTING.min, config::URLEMB_TTL_SETTING.max, ConfigurationFlags::DEFAULT, None],
        ],
        string: [
            ["archive-dir", &*config::ARCHIVE_DIR, config::ARCHIVE_DIR_DEFAULT, ConfigurationFlags::IMMUTABLE, None],
            ["import-dir", &*config::IMPORT_DIR, config::IMPORT_DIR_DEFAULT, ConfigurationFlags::IMMUTABLE, None],
            ["semcache-min-sim", &*config::SEMCACHE_MIN_SIM, config::SEMCACHE_MIN_SIM_DEFAULT_TEXT, ConfigurationFlags::DEFAULT, None],
            ["archive-codec", &*config::ARCHIVE_CODEC, config::ARCHIVE_CODEC_DEFAULT, ConfigurationFlags::DEFAULT, None],
            ["tokenizer", &*config::TOKENIZER, config::TOKENIZER_DEFAULT, ConfigurationFlags::DEFAULT, None],
            ["semcache-index-algo", &*config::SEMCACHE_INDEX_ALGO, config::SEMCACHE_INDEX_ALGO_DEFAULT, ConfigurationFlags::DEFAULT, None],
        ],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
