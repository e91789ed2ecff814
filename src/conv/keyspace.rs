//! Keyspace hooks of sessions with archive files: the `unlink` type callback remembers them,
//! and the keyspace event that follows decides whether the file goes (DEL, expiry, eviction),
//! moves (RENAME, MOVE) or is copied (COPY).

use std::sync::Mutex;

use redis_module::{Context, NotifyEvent, RedisString};

use super::cold;
use super::r#type::SESSION_TYPE;
use super::session::Session;
use crate::server::keys;

/// Sessions with archive files that the server just unlinked from the keyspace; the
/// keyspace event that follows says whether the file goes (del/expired) or moves (rename).
static UNLINKED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// The source of a RENAME/MOVE in progress: (db, key).
static MOVING: Mutex<Option<(i32, Vec<u8>)>> = Mutex::new(None);

/// The `unlink` type callback: remember sessions that own archive files.
pub fn on_unlink(key: &[u8], s: &Session) {
    if s.archived.count > 0 || s.archive_upto > 0 || s.pending().is_some() {
        lock(&UNLINKED).push(key.to_vec());
    }
}

fn take_unlinked(key: &[u8]) -> bool {
    let mut u = lock(&UNLINKED);
    match u.iter().position(|k| k == key) {
        Some(i) => {
            u.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Keyspace events that decide the fate of an unlinked session's file.
pub fn on_keyspace_event(ctx: &Context, _ty: NotifyEvent, event: &str, key: &[u8]) {
    let db = keys::selected_db(ctx);
    match event {
        "del" | "expired" | "evicted" if take_unlinked(key) => cold::delete_archive(db, key),
        "rename_from" | "move_from" if take_unlinked(key) => {
            *lock(&MOVING) = Some((db, key.to_vec()));
        }
        "rename_to" | "move_to" => {
            if let Some((from_db, from)) = lock(&MOVING).take() {
                // A write in flight finishes under the old name; let the timer redo it (appends
                // are idempotent) under the new one.
                let name = RedisString::create_from_slice(ctx.ctx, key);
                if let Some(s) = keys::internal_value::<Session>(ctx, &name, &SESSION_TYPE) {
                    s.set_pending(None);
                }
                cold::rename_archive(from_db, &from, db, key);
            }
        }
        _ => {}
    }
}

/// COPY of a session with archived turns copies its file too.
pub fn on_copy(from_db: i32, from: &[u8], to_db: i32, to: &[u8], s: &Session) {
    if s.archived.count > 0 {
        cold::copy_archive(from_db, from, to_db, to);
    }
}

/// Sessions unlinked without a keyspace event that named them (e.g. FLUSHALL, whose files
/// go with the directory's own cleanup) are forgotten at each timer tick.
pub fn forget_unlinked() {
    lock(&UNLINKED).clear();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
