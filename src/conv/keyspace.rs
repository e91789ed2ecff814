//! Keyspace hooks of sessions: the `unlink` type callback takes a snapshot of each, and the
//! keyspace event that follows decides its fate: kept in its archive (eviction, see
//! `evicted.rs`), deleted with its file (DEL, expiry), moved (RENAME, MOVE) or copied (COPY).

use std::sync::Mutex;

use redis_module::{Context, NotifyEvent, RedisString};

use super::cold;
use super::evicted::{self, Unlinked};
use super::r#type::SESSION_TYPE;
use super::session::Session;
use crate::server::keys;

/// Sessions the server just unlinked from the keyspace; the keyspace event that follows says
/// whether they are kept (evicted), go (del/expired) or move (rename).
static UNLINKED: Mutex<Vec<Unlinked>> = Mutex::new(Vec::new());
/// The source of a RENAME/MOVE in progress: (db, key).
static MOVING: Mutex<Option<(i32, Vec<u8>)>> = Mutex::new(None);

/// The `unlink` type callback: a snapshot of the session, for the event that follows.
/// (The callback knows no database: the event that follows names it.)
pub fn on_unlink(key: &[u8], s: &Session) {
    lock(&UNLINKED).push(evicted::snapshot(-1, key, s));
}

fn take_unlinked(db: i32, key: &[u8]) -> Option<Unlinked> {
    let mut u = lock(&UNLINKED);
    let i = u.iter().position(|x| x.key == key)?;
    let mut x = u.swap_remove(i);
    x.db = db;
    Some(x)
}

/// Keyspace events that decide the fate of an unlinked session and its file.
pub fn on_keyspace_event(ctx: &Context, _ty: NotifyEvent, event: &str, key: &[u8]) {
    let db = keys::selected_db(ctx);
    match event {
        // Only a primary evicts; its replicas and AOF learn it from CONV._EVICTED.
        "evicted" => {
            if let Some(u) = take_unlinked(db, key) {
                evicted::keep(u);
                let name = RedisString::create_from_slice(ctx.ctx, key);
                ctx.replicate(evicted::EVICTED_COMMAND, &[&name][..]);
            }
        }
        "del" | "expired" => {
            let Some(u) = take_unlinked(db, key) else {
                // A key that held no session now: an evicted session's record goes with it.
                evicted::forget(db, key);
                return;
            };
            if deciding(ctx) {
                evicted::forget(db, key);
                if u.has_file {
                    cold::delete_archive(db, key);
                }
            } else {
                evicted::doom(u, crate::clock::now_ms());
            }
        }
        "rename_from" | "move_from" if take_unlinked(db, key).is_some_and(|u| u.has_file) => {
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

/// This node decides deletions itself: a primary serving clients, not a replica and not an
/// AOF or RDB being loaded (whose DELs may stand for evictions).
fn deciding(ctx: &Context) -> bool {
    use redis_module::ContextFlags;
    let f = ctx.get_flags();
    !f.contains(ContextFlags::SLAVE) && !f.contains(ContextFlags::LOADING)
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
