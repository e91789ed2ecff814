//! Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`): the option that lets it run
//! with this module loaded, and the client flag that marks commands of a slot import.
//!
//! The migration forks a child that writes the slots as AOF commands (our types'
//! `aof_rewrite`, which carries a cold session's archived turns too) to the target, then
//! streams the commands that follow. The source deletes the keys, with `del` keyspace
//! events, only after the target owns the slots; a failed import deletes them on the target
//! the same way. Both fit the cold tier's existing rule: a session's file goes with its key.
//!
//! Valkey-only bits: Redis 7 has no atomic slot migration, and Redis 8 uses bit 25 of the
//! context flags for something else, so both are only read on Valkey.

use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::{raw, Context};

/// `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION` (valkeymodule.h, Valkey 9.0); the
/// `RedisModule_*` headers of redis-module 2.0.8 do not name it.
pub const OPTION_HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;
/// `VALKEYMODULE_CTX_FLAGS_SLOT_IMPORT_CLIENT`: the command comes from a slot import.
const CTX_FLAG_SLOT_IMPORT_CLIENT: i32 = 1 << 25;

static ON_VALKEY: AtomicBool = AtomicBool::new(false);

/// Learns the server at load time (Valkey's INFO names itself; Redis's has no such field).
pub fn detect_server(ctx: &Context) {
    let valkey = ctx
        .server_info("server")
        .field("server_name")
        .is_some_and(|name| name.as_slice().eq_ignore_ascii_case(b"valkey"));
    ON_VALKEY.store(valkey, Ordering::Relaxed);
}

pub fn on_valkey() -> bool {
    ON_VALKEY.load(Ordering::Relaxed)
}

/// The module options for slot migration: on Valkey, that the native types handle it.
pub fn slot_migration_options() -> i32 {
    if on_valkey() {
        OPTION_HANDLE_ATOMIC_SLOT_MIGRATION
    } else {
        0
    }
}

/// True while a command is applied from a slot import: this node does not own the slot
/// yet, so it decides nothing about the key (the source still does).
pub fn from_slot_import(ctx: &Context) -> bool {
    // SAFETY: plain module API call on a live context.
    on_valkey()
        && unsafe { raw::RedisModule_GetContextFlags.expect("GetContextFlags")(ctx.ctx) }
            & CTX_FLAG_SLOT_IMPORT_CLIENT
            != 0
}
