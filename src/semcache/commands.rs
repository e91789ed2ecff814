//! SEMCACHE.* command handlers: parse, call the bucket core, reply, replicate what was decided.

use redis_module::{
    Context, ContextFlags, NotifyEvent, RedisError, RedisResult, RedisString, RedisValue,
};

use super::ann::{Algo, Effort};
use super::bucket::{Bucket, EntryData, EvictPolicy, Hit, Quant};
use super::codec::{self, Decoded};
use super::lookup::{reply_hits, Lookup};
use super::r#type::{store_new, SEMCACHE_TYPE};
use super::tags::{self, Pair};
use super::{scan, tracked, SemCache};
use crate::clock::now_ms;
use crate::server::args::{self, err, Args};
use crate::server::{config, keys};
use crate::vector;

/// The command AOF rewrite emits to rebuild a bucket (also accepted from clients).
pub const LOAD_COMMAND: &str = "SEMCACHE._LOAD";
/// The command that carries a GET ... TOUCH's renewed expiries to replicas and the AOF.
pub const TOUCH_COMMAND: &str = "SEMCACHE._TOUCH";
pub const MAX_ITEMS_LIMIT: i64 = codec::MAX_ITEMS_LIMIT as i64;
/// Longest TTL accepted (100 years), so that `now + ttl` never overflows.
const MAX_TTL_SECS: i64 = 100 * 365 * 86_400;
/// Pending entries one SET adds to its bucket's index (the new one, or older ones while an
/// index created for a full bucket catches up): a count, not a time budget, so a replica
/// does exactly the same.
const INDEX_STEPS_PER_SET: usize = 8;

/// Parses and validates a vector argument, naming it in errors.
fn parse_vector(name: &str, blob: &[u8]) -> Result<(Vec<f32>, Vec<f32>), RedisError> {
    let named = |e: vector::VectorError| args::reply_err(format_args!("{name}: {e}"));
    let raw = vector::parse_fp32_blob(blob).map_err(named)?;
    let unit = vector::normalized(&raw).map_err(named)?;
    Ok((raw, unit))
}

/// A lookup's query as a unit vector (see [`vector::normalized_query`]): same errors as
/// [`parse_vector`].
fn parse_query(name: &str, blob: &[u8]) -> Result<Vec<f32>, RedisError> {
    let named = |e: vector::VectorError| args::reply_err(format_args!("{name}: {e}"));
    let raw = vector::parse_fp32_blob(blob).map_err(named)?;
    vector::normalized_query(&raw).map_err(named)
}

fn check_dim(b: &Bucket, got: usize) -> Result<(), RedisError> {
    if b.dim() != 0 && b.dim() != got {
        return err(format!(
            "vector dimension {got} does not match the cache dimension {}",
            b.dim()
        ));
    }
    Ok(())
}

/// SEMCACHE.SET key vector response [EX s | PX ms | PXAT ms] [META json] [MAXITEMS n] [ID id]
/// [INDEX] [TAG name value]... [PROMPT text] [RENEW ms] [EVICT lru|lfu|fifo]
/// [QUANT float32|int8] [ALGO hnsw|ivf]
///
/// Replicates (and appends to the AOF) what the primary decided: a `SEMCACHE.DEL` of the
/// entries it expired or evicted, then `SEMCACHE.SET ... PXAT t MAXITEMS n ID id QUANT kind
/// [ALGO ivf] [INDEX]` (`INDEX` when this SET started the bucket's index; `ALGO` unless hnsw).
pub fn set(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 4 {
        return Err(RedisError::WrongArity);
    }
    let (raw, _) = parse_vector("vector", argv[2].as_slice())?;
    let response = argv[3].as_slice().to_vec();
    let now = now_ms();
    let (mut expire_at, mut meta, mut max_items, mut id) = (None, None, None, None);
    let mut want_index = false;
    let mut tag_pairs: Vec<Pair> = Vec::new();
    let mut prompt: Option<&[u8]> = None;
    let (mut ttl_ms, mut renew) = (None, None);
    let mut policy = None;
    let mut quant = None;
    let mut algo = None;
    let mut opts = Args::from(argv, 4);
    while !opts.done() {
        match opts.next_keyword()?.as_str() {
            "EX" => {
                let s = opts.int_in("EX", 0, MAX_TTL_SECS)?;
                expire_at = Some(if s == 0 { 0 } else { now + s * 1000 });
                ttl_ms = Some(s * 1000);
            }
            "PX" => {
                let ms = opts.int_in("PX", 0, MAX_TTL_SECS * 1000)?;
                expire_at = Some(if ms == 0 { 0 } else { now + ms });
                ttl_ms = Some(ms);
            }
            "PXAT" => {
                let at = opts.int_in("PXAT", 0, i64::MAX)?;
                expire_at = Some(at);
                ttl_ms = Some(if at == 0 { 0 } else { (at - now).max(0) });
            }
            "RENEW" => renew = Some(opts.int_in("RENEW", 0, MAX_TTL_SECS * 1000)?),
            "EVICT" => {
                policy = Some(choice(
                    &mut opts,
                    "EVICT",
                    EvictPolicy::parse,
                    "lru, lfu or fifo",
                )?)
            }
            "QUANT" => quant = Some(choice(&mut opts, "QUANT", Quant::parse, "float32 or int8")?),
            "ALGO" => algo = Some(choice(&mut opts, "ALGO", Algo::parse, "hnsw or ivf")?),
            "META" => meta = Some(args::json_object("META", opts.value_of("META")?)?),
            "MAXITEMS" => max_items = Some(opts.int_in("MAXITEMS", 1, MAX_ITEMS_LIMIT)? as usize),
            "ID" => id = Some(opts.int_in("ID", 1, i64::MAX)? as u64),
            "INDEX" => want_index = true,
            "TAG" => tag_pairs.push(pair_of(&mut opts, "TAG")?),
            "PROMPT" => prompt = Some(prompt_of(&mut opts)?),
            other => return args::unknown_option(other),
        }
    }
    if tag_pairs.len() > tags::MAX_PAIRS {
        return err(format!("more than {} TAG pairs", tags::MAX_PAIRS));
    }
    let tag_blob = tags::encode(&tag_pairs);
    let replicated_meta = meta.clone();
    let default_ttl_ms = config::get(&config::SEMCACHE_TTL_SECS) * 1000;
    let expire_at = expire_at.unwrap_or(if default_ttl_ms == 0 {
        0
    } else {
        now + default_ttl_ms
    });
    // What GET ... TOUCH renews the expiry by: RENEW, else the TTL this SET gave.
    let renew = renew
        .or(ttl_ms)
        .unwrap_or(default_ttl_ms)
        .min(MAX_TTL_SECS * 1000);

    let data = EntryData {
        response,
        meta,
        tags: tag_blob,
        expire_at_ms: expire_at,
        renew_ms: renew,
    };

    let applying = ctx
        .get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING);
    let key = ctx.open_key_writable(&argv[1]);
    let existing = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)?;
    // Everything a client can get wrong is checked before the first change.
    if let Some(c) = &existing {
        check_dim(&c.bucket, raw.len())?;
        // The kind is the first SET's; a later QUANT may only repeat it.
        if let Some(q) = quant.filter(|&q| q != c.bucket.quant()) {
            return err(format!(
                "QUANT {} differs from the cache's vector kind {}",
                q.name(),
                c.bucket.quant().name()
            ));
        }
        if let Some(a) = algo.filter(|&a| a != c.bucket.algo()) {
            return err(format!(
                "ALGO {} differs from the cache's index algorithm {}",
                a.name(),
                c.bucket.algo().name()
            ));
        }
        if let Some(x) = id {
            if x < c.bucket.next_id() {
                return err(format!(
                    "ID {x} is not greater than the last issued id {}",
                    c.bucket.next_id() - 1
                ));
            }
        }
    }
    // A bucket keeps the max it was created with (MAXITEMS, else the max-items config)
    // until a later MAXITEMS changes it.
    let max_items = max_items.unwrap_or_else(|| match &existing {
        Some(c) => c.bucket.max_items(),
        None => config::get(&config::SEMCACHE_MAX_ITEMS).max(1) as usize,
    });
    // A replica or an AOF replay starts an index only when the primary did (INDEX).
    let index_min = config::get(&config::SEMCACHE_INDEX_MIN).max(0) as usize;
    let start_index = |b: &Bucket| {
        !b.has_index() && (want_index || (!applying && index_min > 0 && b.len() >= index_min))
    };
    let index_step = |b: &mut Bucket| {
        let started = start_index(b);
        if started {
            b.create_index();
        }
        b.index_pending(INDEX_STEPS_PER_SET);
        started
    };
    let (new_id, dropped, started, policy, quant, algo) = match existing {
        Some(c) => tracked(&mut c.bucket, |b| {
            // A replica or an AOF replay applies the primary's decisions only: what expired
            // was replicated as SEMCACHE.DEL before this command.
            let mut dropped = if applying {
                Vec::new()
            } else {
                b.remove_expired(now)
            };
            if let Some(p) = policy {
                b.set_policy(p);
            }
            dropped.extend(b.set_max_items(max_items));
            // One entry per prompt: the older entry with this prompt goes (upsert).
            if let Some(old) = prompt.and_then(|p| b.id_of_prompt(p)) {
                b.remove(old);
                dropped.push(old);
            }
            let out = b.insert_entry(id, &raw, data);
            out.map(|o| {
                dropped.extend(o.evicted);
                if let Some(p) = prompt {
                    b.set_prompt(o.id, p);
                }
                let started = index_step(b);
                (o.id, dropped, started, b.policy(), b.quant(), b.algo())
            })
        })
        .map_err(args::reply_err)?,
        None => {
            let mut b = Bucket::new(max_items);
            b.set_policy(policy.unwrap_or_default());
            b.set_quant(quant.unwrap_or_default());
            // A client's SET: ALGO, else the config's. Applying the primary's: its ALGO, which
            // it leaves out for hnsw (what releases before ALGO replicate and understand).
            b.set_algo(algo.unwrap_or_else(|| {
                if applying {
                    Algo::Hnsw
                } else {
                    config::SEMCACHE_INDEX_ALGO.value()
                }
            }));
            let out = b.insert_entry(id, &raw, data).map_err(args::reply_err)?;
            if let Some(p) = prompt {
                b.set_prompt(out.id, p);
            }
            let started = index_step(&mut b);
            let (policy, quant, algo) = (b.policy(), b.quant(), b.algo());
            store_new(&key, SemCache::new(b, 0, 0))?;
            (out.id, Vec::new(), started, policy, quant, algo)
        }
    };
    let decided = DecidedSet {
        meta: replicated_meta,
        tags: tag_pairs,
        prompt,
        expire_at,
        renew,
        policy,
        quant,
        algo,
        max_items,
        id: new_id,
        started_index: started,
    };
    replicate_set(ctx, argv, &dropped, &decided);
    ctx.notify_keyspace_event(NotifyEvent::MODULE, "semcache.set", &argv[1]);
    Ok(RedisValue::Integer(new_id as i64))
}

/// The value after `word`, one of `names` (case-insensitive), else an error naming them.
fn choice<T>(
    opts: &mut Args,
    word: &str,
    parse: fn(&[u8]) -> Option<T>,
    names: &str,
) -> Result<T, RedisError> {
    let v = opts.value_of(word)?;
    parse(v).ok_or_else(|| {
        RedisError::String(format!(
            "ERR {word} must be {names}, got '{}'",
            String::from_utf8_lossy(v)
        ))
    })
}

/// Longest prompt text accepted by PROMPT (the text is kept, twice: map and reverse map).
const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// The text after `PROMPT`, checked.
fn prompt_of<'a>(a: &mut Args<'a>) -> Result<&'a [u8], RedisError> {
    let text = a.value_of("PROMPT")?;
    if text.is_empty() {
        return err("PROMPT must not be empty");
    }
    if text.len() > MAX_PROMPT_BYTES {
        return err(format!("PROMPT is longer than {MAX_PROMPT_BYTES} bytes"));
    }
    Ok(text)
}

/// A name and value after `TAG` or `FILTER`, checked.
fn pair_of(a: &mut Args, option: &str) -> Result<Pair, RedisError> {
    let name = a.value_of(option)?;
    let value = match a.value_of(option) {
        Ok(v) => v,
        Err(_) => return err(format!("{option} needs a name and a value")),
    };
    tags::check_pair(option, name, value).or_else(err)?;
    Ok((name.to_vec(), value.to_vec()))
}

/// What a SEMCACHE.SET decided, replicated instead of the client's options.
struct DecidedSet<'a> {
    meta: Option<String>,
    tags: Vec<Pair>,
    prompt: Option<&'a [u8]>,
    expire_at: i64,
    renew: i64,
    policy: EvictPolicy,
    quant: Quant,
    algo: Algo,
    max_items: usize,
    id: u64,
    started_index: bool,
}

fn replicate_set(ctx: &Context, argv: &[RedisString], dropped: &[u64], d: &DecidedSet) {
    let s = |t: &[u8]| RedisString::create_from_slice(ctx.ctx, t);
    if !dropped.is_empty() {
        let ids: Vec<RedisString> = dropped
            .iter()
            .map(|x| s(x.to_string().as_bytes()))
            .collect();
        let mut del: Vec<&RedisString> = vec![&argv[1]];
        del.extend(ids.iter());
        ctx.replicate("SEMCACHE.DEL", del.as_slice());
    }
    // key, vector and response as sent; META (normalised) and TAGs; the decisions replace
    // EX/PX/...
    let mut words: Vec<RedisString> = Vec::new();
    if let Some(m) = &d.meta {
        words.extend([s(b"META"), s(m.as_bytes())]);
    }
    for (n, v) in &d.tags {
        words.extend([s(b"TAG"), s(n), s(v)]);
    }
    if let Some(p) = d.prompt {
        words.extend([s(b"PROMPT"), s(p)]);
    }
    for (k, v) in [
        ("PXAT", d.expire_at.to_string()),
        ("RENEW", d.renew.to_string()),
        ("EVICT", d.policy.name().to_string()),
        ("MAXITEMS", d.max_items.to_string()),
        ("ID", d.id.to_string()),
        ("QUANT", d.quant.name().to_string()),
    ] {
        words.extend([s(k.as_bytes()), s(v.as_bytes())]);
    }
    if d.algo != Algo::Hnsw {
        words.extend([s(b"ALGO"), s(d.algo.name().as_bytes())]);
    }
    if d.started_index {
        words.push(s(b"INDEX"));
    }
    let mut out: Vec<&RedisString> = argv[1..4].iter().collect();
    out.extend(words.iter());
    ctx.replicate("SEMCACHE.SET", out.as_slice());
}

/// SEMCACHE.GET key vector [MINSIM s | MAXDIST d] [COUNT k] [WITHSCORES] [WITHMETA] [WITHIDS]
/// [FILTER name value]... [PROMPT text] [TOUCH] [WITHHITS]
pub fn get(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    let mut a = Args::new(argv, 2)?;
    let key_name = a.next_arg()?;
    let query = parse_query("vector", a.next_bytes()?)?;
    let mut prompt = None;
    let mut lookup = Lookup {
        query,
        min_sim: config::SEMCACHE_MIN_SIM.value() as f32,
        count: 1,
        now_ms: now_ms(),
        array: false,
        with_scores: false,
        with_meta: false,
        with_ids: false,
        with_hits: false,
        started: std::time::Instant::now(),
        filter: Vec::new(),
        touch: false,
    };
    // MINSIM and MAXDIST are two spellings of one threshold: one of them, once.
    let mut threshold: Option<&str> = None;
    let mut set_threshold = |name: &'static str| match threshold.replace(name) {
        Some(first) if first != name => err(format!("{first} and {name} cannot be given together")),
        _ => Ok(()),
    };
    while !a.done() {
        match a.next_keyword()?.as_str() {
            "MINSIM" => {
                set_threshold("MINSIM")?;
                lookup.min_sim = f64_in(&mut a, "MINSIM", -1.0, 1.0)? as f32;
            }
            "MAXDIST" => {
                set_threshold("MAXDIST")?;
                lookup.min_sim = (1.0 - f64_in(&mut a, "MAXDIST", 0.0, 2.0)?) as f32;
            }
            "COUNT" => {
                lookup.count = a.int_in("COUNT", 1, MAX_ITEMS_LIMIT)? as usize;
                lookup.array = true;
            }
            "WITHSCORES" => (lookup.with_scores, lookup.array) = (true, true),
            "WITHMETA" => (lookup.with_meta, lookup.array) = (true, true),
            "WITHIDS" => (lookup.with_ids, lookup.array) = (true, true),
            "WITHHITS" => (lookup.with_hits, lookup.array) = (true, true),
            "FILTER" => lookup.filter.push(pair_of(&mut a, "FILTER")?),
            "PROMPT" => prompt = Some(prompt_of(&mut a)?),
            "TOUCH" => lookup.touch = true,
            other => return args::unknown_option(other),
        }
    }
    if lookup.filter.len() > tags::MAX_PAIRS {
        return err(format!("more than {} FILTER pairs", tags::MAX_PAIRS));
    }
    if lookup.touch {
        return get_touch(ctx, key_name, prompt, &lookup);
    }
    let key = ctx.open_key(key_name);
    let Some(c) = keys::read::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(reply_hits(None, &[], &lookup));
    };
    check_dim(&c.bucket, lookup.query.len())?;
    let cannot_block = ctx
        .get_flags()
        .intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING);
    match plan(&c.bucket, prompt, &lookup, !cannot_block) {
        Plan::Hits(hits) => Ok(reply_hits(Some(c), &hits, &lookup)),
        Plan::Scan => {
            scan::submit(ctx, key_name, c.instance, c.bucket.snapshot(), lookup);
            Ok(RedisValue::NoReply)
        }
    }
}

/// How a lookup is answered: now, or by a background scan.
enum Plan {
    Hits(Vec<Hit>),
    Scan,
}

fn plan(b: &Bucket, prompt: Option<&[u8]>, lookup: &Lookup, may_block: bool) -> Plan {
    // The exact-prompt path: that entry answers alone, score 1, without a vector search.
    if let Some(hit) = prompt.and_then(|p| exact_prompt_hit(b, p, lookup)) {
        crate::metrics::SEMCACHE_PROMPT_HITS.incr();
        return Plan::Hits(vec![hit]);
    }
    // A complete index answers inline: its cost is bounded (ef candidates), like a small scan.
    let effort = Effort {
        ef: config::get(&config::SEMCACHE_INDEX_EF).max(1) as usize,
        nprobe: config::get(&config::SEMCACHE_INDEX_NPROBE).max(1) as usize,
    };
    let (q, min_sim, k, now) = (&lookup.query, lookup.min_sim, lookup.count, lookup.now_ms);
    if let Some(hits) = b.search_index_where(q, min_sim, k, now, effort, &lookup.filter) {
        crate::metrics::SEMCACHE_INDEX_LOOKUPS.incr();
        return Plan::Hits(hits);
    }
    let inline_limit = config::get(&config::SEMCACHE_INLINE_BYTES).max(0) as usize;
    if may_block && b.vector_bytes() > inline_limit {
        return Plan::Scan;
    }
    Plan::Hits(b.search_where(q, min_sim, k, now, &lookup.filter))
}

/// GET ... TOUCH: answered inline (it writes), then each returned entry with a renewal
/// duration expires that long from now; replicated as `SEMCACHE._TOUCH key id pxat...`.
/// On a replica the lookup answers and nothing is renewed (the primary decides).
fn get_touch(
    ctx: &Context,
    key_name: &RedisString,
    prompt: Option<&[u8]>,
    lookup: &Lookup,
) -> RedisResult {
    let key = ctx.open_key_writable(key_name);
    let Some(c) = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(reply_hits(None, &[], lookup));
    };
    check_dim(&c.bucket, lookup.query.len())?;
    let Plan::Hits(hits) = plan(&c.bucket, prompt, lookup, false) else {
        unreachable!("an inline plan never scans in the background")
    };
    let on_replica = ctx.get_flags().contains(ContextFlags::SLAVE);
    let mut renewed: Vec<RedisString> = Vec::new();
    if !on_replica {
        for h in &hits {
            let renew = c.bucket.renew_at(h.index);
            if renew > 0 {
                let at = lookup.now_ms + renew;
                c.bucket.set_expire_at_index(h.index, at);
                for word in [h.id.to_string(), at.to_string()] {
                    renewed.push(RedisString::create_from_slice(ctx.ctx, word.as_bytes()));
                }
            }
        }
    }
    if !renewed.is_empty() {
        let mut out: Vec<&RedisString> = vec![key_name];
        out.extend(renewed.iter());
        ctx.replicate(TOUCH_COMMAND, out.as_slice());
    }
    Ok(reply_hits(Some(c), &hits, lookup))
}

/// SEMCACHE._TOUCH key id pxat [id pxat ...]: sets the expiry of entries (what a primary's
/// GET ... TOUCH decided). Replies how many entries existed.
pub fn touch(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 4 || !argv.len().is_multiple_of(2) {
        return Err(RedisError::WrongArity);
    }
    let pairs = argv[2..]
        .chunks_exact(2)
        .map(|p| {
            let id = args::int_in("id", p[0].as_slice(), 1, i64::MAX)? as u64;
            let at = args::int_in("pxat", p[1].as_slice(), 0, i64::MAX)?;
            Ok((id, at))
        })
        .collect::<Result<Vec<(u64, i64)>, RedisError>>()?;
    let key = ctx.open_key_writable(&argv[1]);
    let Some(c) = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let n = pairs
        .iter()
        .filter(|&&(id, at)| c.bucket.set_expire(id, at))
        .count();
    ctx.replicate_verbatim();
    Ok(RedisValue::Integer(n as i64))
}

/// The live entry holding exactly `prompt`, if it passes the lookup's filter.
fn exact_prompt_hit(b: &Bucket, prompt: &[u8], lookup: &Lookup) -> Option<Hit> {
    let id = b.id_of_prompt(prompt)?;
    let index = b.index_of(id)?;
    let expire_at = b.entry_at(index).4;
    if expire_at != 0 && expire_at <= lookup.now_ms {
        return None;
    }
    if !tags::matches(b.tags_at(index), &lookup.filter) {
        return None;
    }
    Some(Hit {
        index,
        id,
        score: 1.0,
    })
}

fn f64_in(a: &mut Args, name: &str, min: f64, max: f64) -> Result<f64, RedisError> {
    let v = a.f64_of(name)?;
    if !(min..=max).contains(&v) {
        return err(format!("{name} must be between {min} and {max}, got {v}"));
    }
    Ok(v)
}

/// SEMCACHE.DEL key id [id ...]: removes entries. Replies how many existed.
pub fn del(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    if argv[2].as_slice().eq_ignore_ascii_case(b"FILTER") {
        return del_filter(ctx, argv);
    }
    let ids = argv[2..]
        .iter()
        .map(|a| match args::parse_i64("id", a.as_slice())? {
            n if n >= 1 => Ok(n as u64),
            n => err(format!("id must be a positive integer, got {n}")),
        })
        .collect::<Result<Vec<u64>, RedisError>>()?;
    let key = ctx.open_key_writable(&argv[1]);
    let Some(c) = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let removed = tracked(&mut c.bucket, |b| {
        ids.iter().filter(|&&id| b.remove(id)).count()
    });
    if removed > 0 {
        ctx.replicate_verbatim();
        ctx.notify_keyspace_event(NotifyEvent::MODULE, "semcache.del", &argv[1]);
    }
    Ok(RedisValue::Integer(removed as i64))
}

/// SEMCACHE.DEL key FILTER name value [FILTER name value]...: removes every entry having
/// every pair (in id order); replicated as `SEMCACHE.DEL key id...` of what it removed.
fn del_filter(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    let mut a = Args::from(argv, 2);
    let mut filter = Vec::new();
    while !a.done() {
        match a.next_keyword()?.as_str() {
            "FILTER" => filter.push(pair_of(&mut a, "FILTER")?),
            other => return args::unknown_option(other),
        }
    }
    if filter.len() > tags::MAX_PAIRS {
        return err(format!("more than {} FILTER pairs", tags::MAX_PAIRS));
    }
    let key = ctx.open_key_writable(&argv[1]);
    let Some(c) = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let ids = c.bucket.ids_where(&filter);
    tracked(&mut c.bucket, |b| {
        for &id in &ids {
            b.remove(id);
        }
    });
    if !ids.is_empty() {
        let words: Vec<RedisString> = ids
            .iter()
            .map(|id| RedisString::create_from_slice(ctx.ctx, id.to_string().as_bytes()))
            .collect();
        let mut out: Vec<&RedisString> = vec![&argv[1]];
        out.extend(words.iter());
        ctx.replicate("SEMCACHE.DEL", out.as_slice());
        ctx.notify_keyspace_event(NotifyEvent::MODULE, "semcache.del", &argv[1]);
    }
    Ok(RedisValue::Integer(ids.len() as i64))
}

/// SEMCACHE.LEN key: live (unexpired) entries.
pub fn len(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    let key = ctx.open_key(args::single_key(argv)?);
    let now = now_ms();
    let n = keys::read::<SemCache>(&key, &SEMCACHE_TYPE)?.map_or(0, |c| live_len(&c.bucket, now));
    Ok(RedisValue::Integer(n as i64))
}

fn live_len(b: &Bucket, now: i64) -> usize {
    b.live_len(now)
}

/// SEMCACHE.INFO key: a map (RESP3) / flat array (RESP2); nil when the key is missing.
pub fn info(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    let key = ctx.open_key(args::single_key(argv)?);
    let Some(c) = keys::read::<SemCache>(&key, &SEMCACHE_TYPE)? else {
        return Ok(RedisValue::Null);
    };
    let b = &c.bucket;
    use crate::server::reply::Field::{Int, Text};
    crate::server::reply::ordered_fields(
        ctx,
        &[
            ("dimension", Int(b.dim() as i64)),
            ("entries", Int(live_len(b, now_ms()) as i64)),
            ("stored", Int(b.len() as i64)),
            ("max", Int(b.max_items() as i64)),
            ("hits", Int(c.hits.get() as i64)),
            ("misses", Int(c.misses.get() as i64)),
            ("bytes", Int(c.mem_bytes() as i64)),
            ("vector_bytes", Int(b.vector_bytes() as i64)),
            ("next_id", Int(b.next_id() as i64)),
            (
                "index",
                Text(if b.has_index() {
                    b.algo().name()
                } else {
                    "none"
                }),
            ),
            ("index_pending", Int(b.unindexed() as i64)),
            ("evict", Text(b.policy().name())),
            ("index_bytes", Int(b.index_bytes() as i64)),
            ("quant", Text(b.quant().name())),
            ("algo", Text(b.algo().name())),
        ],
    )
}

/// SEMCACHE._LOAD key payload: rebuilds a bucket from the AOF-rewrite encoding. A header
/// payload replaces the key; an entries payload appends to the bucket being rebuilt.
pub fn load(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let decoded = codec::decode(argv[2].as_slice()).map_err(args::reply_err)?;
    let key = ctx.open_key_writable(&argv[1]);
    let existing = keys::write::<SemCache>(&key, &SEMCACHE_TYPE)?;
    match decoded {
        Decoded::Header(h) => {
            let b = codec::bucket_from_header(&h).map_err(args::reply_err)?;
            store_new(&key, SemCache::new(b, h.hits, h.misses))?;
        }
        Decoded::Entries(next, entries) => {
            let Some(c) = existing else {
                return err("no semcache bucket to continue loading into");
            };
            // Validate on a copy-free path: push_entries stops at the first bad entry, so
            // check first that the whole payload fits.
            check_entries(&c.bucket, &entries)?;
            tracked(&mut c.bucket, |b| codec::push_entries(b, next, entries))
                .map_err(args::reply_err)?;
        }
        Decoded::Index(g) => {
            let Some(c) = existing else {
                return err("no semcache bucket to attach the index to");
            };
            codec::attach_index(&mut c.bucket, g).map_err(args::reply_err)?;
        }
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

fn check_entries(b: &Bucket, entries: &[codec::LoadedEntry]) -> Result<(), RedisError> {
    let mut last = b.next_id();
    let mut n = b.len();
    let mut prompts = std::collections::HashSet::new();
    for (id, row, _, _, _, _, prompt, _) in entries {
        if let Some(p) = prompt {
            if b.id_of_prompt(p).is_some() || !prompts.insert(p) {
                return err(format!("entry {id}: prompt held by another entry"));
            }
        }
        check_dim(b, row.len())?;
        if row.as_row().quant() != b.quant() {
            return err(format!(
                "entry {id}: vector kind {} does not match the cache's vector kind {}",
                row.as_row().quant().name(),
                b.quant().name()
            ));
        }
        let finite = match row {
            codec::Row::F32(v) => v.iter().all(|x| x.is_finite()),
            codec::Row::I8(c) => c.iter().any(|&x| x != 0),
        };
        if *id < last || !finite {
            return err(format!("entry {id} is out of order or not a finite vector"));
        }
        last = id + 1;
        n += 1;
    }
    if n > b.max_items() {
        return err("payload holds more entries than the bucket's max items");
    }
    Ok(())
}
