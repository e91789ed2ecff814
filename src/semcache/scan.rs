//! Background scan of big buckets, so the main thread stays short whatever the bucket size.
//!
//! The command handler takes a [`BucketSnapshot`] (shares the bucket's chunks of rows, ids
//! and expiries: nothing copied), blocks the client and queues a job. A worker scans the
//! snapshot without any lock, then takes the server lock briefly to re-resolve the ids it
//! found in the key's *current* value: an entry deleted or evicted meanwhile is skipped, and
//! a key deleted or replaced meanwhile (another value identity) answers a miss. The answer
//! is thus made of entries that existed both when the lookup started and when it replied.

use redis_module::{Context, RedisString, RedisValue, ThreadSafeContext};

use super::bucket::{BucketSnapshot, Hit};
use super::lookup::{reply_hits, Lookup};
use super::r#type::SEMCACHE_TYPE;
use super::SemCache;
use crate::metrics;
use crate::pool::{Job, Pool};
use crate::server::keys;
use crate::server::keys::{select_db, selected_db};

/// Extra candidates a background scan keeps beyond `COUNT`, so that a few entries removed
/// while it ran do not shorten the answer.
const SPARE_HITS: usize = 8;

/// Scans of big buckets; a lookup waits for a free thread behind earlier ones.
static SCANS: Pool = Pool::new("semcache-scan");

/// Answers `lookup` on `snapshot` from a worker; the client is blocked until then.
pub fn submit(
    ctx: &Context,
    key: &RedisString,
    instance: u64,
    snapshot: BucketSnapshot,
    lookup: Lookup,
) {
    metrics::SEMCACHE_BACKGROUND_SCANS.incr();
    let db = selected_db(ctx);
    let key_name = key.as_slice().to_vec();
    let blocked = ctx.block_client();
    let job: Job = Box::new(move || {
        let want = lookup.count.saturating_add(SPARE_HITS);
        let hits = snapshot.search_where(
            &lookup.query,
            lookup.min_sim,
            want,
            lookup.now_ms,
            &lookup.filter,
        );
        let tsc = ThreadSafeContext::with_blocked_client(blocked);
        let reply = {
            let guard = tsc.lock();
            select_db(&guard, db);
            let name = RedisString::create_from_slice(std::ptr::null_mut(), &key_name);
            let key = guard.open_key(&name);
            match keys::read::<SemCache>(&key, &SEMCACHE_TYPE) {
                Ok(Some(c)) if c.instance == instance => resolve(c, &hits, &lookup),
                // Deleted, replaced or retyped while the scan ran.
                _ => reply_hits(None, &[], &lookup),
            }
        };
        tsc.reply(Ok(reply));
    });
    SCANS.submit(job);
}

/// Maps snapshot hits to the entries still present, best first, at most `COUNT`.
fn resolve(c: &SemCache, hits: &[Hit], lookup: &Lookup) -> RedisValue {
    let b = &c.bucket;
    let live: Vec<Hit> = hits
        .iter()
        .filter_map(|h| {
            let index = if h.index < b.len() && b.entry_at(h.index).0 == h.id {
                h.index
            } else {
                b.index_of(h.id)?
            };
            Some(Hit { index, ..*h })
        })
        .take(lookup.count)
        .collect();
    reply_hits(Some(c), &live, lookup)
}
