//! A parsed SEMCACHE.GET and its reply: shared by the inline path (commands.rs) and the
//! background scan of big buckets (scan.rs), so neither imports the other.

use redis_module::RedisValue;

use super::bucket::Hit;
use super::tags::Pair;
use super::SemCache;
use crate::metrics;

/// A parsed SEMCACHE.GET: the normalised query and what to answer.
pub struct Lookup {
    pub query: Vec<f32>,
    pub min_sim: f32,
    pub count: usize,
    pub now_ms: i64,
    /// Array reply (COUNT, WITHSCORES, WITHMETA or WITHIDS given) rather than one bulk.
    pub array: bool,
    pub with_scores: bool,
    pub with_meta: bool,
    pub with_ids: bool,
    /// Each entry's hit count (this lookup included).
    pub with_hits: bool,
    /// When the command arrived: hit/miss latency in INFO.
    pub started: std::time::Instant,
    /// Only entries having every pair answer.
    pub filter: Vec<Pair>,
    /// Renew the returned entries' expiry (a write: answered inline).
    pub touch: bool,
}

/// The reply to a lookup whose `hits` index into `c`'s bucket (best first); counts it.
pub fn reply_hits(c: Option<&SemCache>, hits: &[Hit], lookup: &Lookup) -> RedisValue {
    match c {
        Some(c) => c.count_lookup(!hits.is_empty()),
        None => {
            metrics::SEMCACHE_LOOKUPS.incr();
            metrics::SEMCACHE_MISSES.incr();
        }
    }
    // Nanoseconds: an inline lookup of a small bucket takes well under a microsecond.
    let nsec = lookup.started.elapsed().as_nanos() as i64;
    if hits.is_empty() {
        metrics::SEMCACHE_MISS_NSEC.add(nsec);
    } else {
        metrics::SEMCACHE_HIT_NSEC.add(nsec);
    }
    if let Some(c) = c {
        for h in hits {
            c.bucket.record_hit(h.index);
        }
    }
    let Some(c) = c else {
        return if lookup.array {
            RedisValue::Array(vec![])
        } else {
            RedisValue::Null
        };
    };
    if !lookup.array {
        return hits.first().map_or(RedisValue::Null, |h| {
            RedisValue::StringBuffer(c.bucket.entry_at(h.index).2.to_vec())
        });
    }
    let mut out = Vec::with_capacity(hits.len() * 4);
    for h in hits {
        let (id, _, resp, meta, _) = c.bucket.entry_at(h.index);
        if lookup.with_ids {
            out.push(RedisValue::Integer(id as i64));
        }
        out.push(RedisValue::StringBuffer(resp.to_vec()));
        if lookup.with_scores {
            out.push(RedisValue::Float(f64::from(h.score)));
        }
        if lookup.with_meta {
            out.push(meta.map_or(RedisValue::Null, |m| {
                RedisValue::StringBuffer(m.as_bytes().to_vec())
            }));
        }
        if lookup.with_hits {
            out.push(RedisValue::Integer(i64::from(c.bucket.hits_at(h.index))));
        }
    }
    RedisValue::Array(out)
}
