//! URLEMB.* handlers. Values are plain strings written with `SET ... PXAT`; the command
//! replicates that same `SET` with the absolute time the primary decided.

use redis_module::{raw::KeyType, Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::clock::now_ms;
use crate::server::args::{err, Args};
use crate::server::config;
use crate::{metrics, vector};

const MAX_TTL_SECS: i64 = 100 * 365 * 86_400;

/// Checks a vector argument (non-empty, whole float32s, finite, non-zero).
fn validate(name: &str, blob: &[u8]) -> Result<(), RedisError> {
    vector::parse_fp32_blob(blob)
        .and_then(|v| vector::normalized(&v).map(|_| ()))
        .map_err(|e| crate::server::args::reply_err(format_args!("{name}: {e}")))
}

/// Absolute expiry for a TTL in seconds (0 = none).
fn expire_at(ttl_secs: i64) -> Option<i64> {
    (ttl_secs > 0).then(|| now_ms() + ttl_secs * 1000)
}

/// A key that is missing or holds a string; anything else answers WRONGTYPE.
fn check_string(ctx: &Context, key: &RedisString) -> Result<bool, RedisError> {
    match ctx.open_key(key).key_type() {
        KeyType::Empty => Ok(false),
        KeyType::String => Ok(true),
        _ => Err(RedisError::WrongType),
    }
}

/// Writes one vector and replicates the same `SET key value [PXAT t]`.
fn store(ctx: &Context, key: &RedisString, value: &RedisString, at: Option<i64>) -> RedisResult {
    let at_text = at.map(|t| t.to_string());
    let mut args: Vec<&[u8]> = vec![key.as_slice(), value.as_slice()];
    if let Some(t) = &at_text {
        args.extend([b"PXAT".as_slice(), t.as_bytes()]);
    }
    ctx.call("SET", args.as_slice())?;
    ctx.replicate("SET", args.as_slice());
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// URLEMB.SET key vector [EX seconds]: 0 seconds = no expiry.
pub fn set(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    validate("vector", argv[2].as_slice())?;
    let mut ttl = config::get(&config::URLEMB_TTL_SECS);
    let mut opts = Args::from(argv, 3);
    while !opts.done() {
        match opts.next_keyword()?.as_str() {
            "EX" => ttl = opts.int_in("EX", 0, MAX_TTL_SECS)?,
            other => return crate::server::args::unknown_option(other),
        }
    }
    check_string(ctx, &argv[1])?;
    store(ctx, &argv[1], &argv[2], expire_at(ttl))
}

/// URLEMB.MSET key vector [key vector ...]: all or nothing, default TTL.
pub fn mset(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 3 || argv.len().is_multiple_of(2) {
        return Err(RedisError::WrongArity);
    }
    for (i, pair) in argv[1..].chunks_exact(2).enumerate() {
        validate(&format!("vector {}", i + 1), pair[1].as_slice())?;
        check_string(ctx, &pair[0])?;
    }
    let at = expire_at(config::get(&config::URLEMB_TTL_SECS));
    for pair in argv[1..].chunks_exact(2) {
        store(ctx, &pair[0], &pair[1], at)?;
    }
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// What one key holds, for the readers.
enum Stored {
    Missing,
    Vector(Vec<u8>),
    OtherType,
}

/// Reads one key; a string that is not a float32 vector is an error naming the key.
fn read_one(ctx: &Context, key: &RedisString) -> Result<Stored, RedisError> {
    let k = ctx.open_key(key);
    match k.key_type() {
        KeyType::Empty => Ok(Stored::Missing),
        KeyType::String => {
            let bytes = k.read()?.unwrap_or_default();
            if let Err(e) = vector::parse_fp32_blob(bytes) {
                return err(format!(
                    "value of '{}' is not a float32 vector: {e}",
                    String::from_utf8_lossy(key.as_slice())
                ));
            }
            Ok(Stored::Vector(bytes.to_vec()))
        }
        _ => Ok(Stored::OtherType),
    }
}

/// The reply for one key, counting hits and misses; a key of another type answers
/// `other_type` (and counts as a miss when that is a nil).
fn reply_one(stored: Stored, other_type: RedisResult) -> RedisResult {
    match stored {
        Stored::Vector(bytes) => {
            metrics::URLEMB_HITS.incr();
            Ok(RedisValue::StringBuffer(bytes))
        }
        Stored::Missing => {
            metrics::URLEMB_MISSES.incr();
            Ok(RedisValue::Null)
        }
        Stored::OtherType => {
            if matches!(other_type, Ok(RedisValue::Null)) {
                metrics::URLEMB_MISSES.incr();
            }
            other_type
        }
    }
}

/// URLEMB.GET key: a key of another type answers WRONGTYPE.
pub fn get(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    reply_one(read_one(ctx, &argv[1])?, Err(RedisError::WrongType))
}

/// URLEMB.MGET key [key ...]: one value or nil per key; like MGET, a key of another type
/// answers nil. A string holding bytes that are not a vector fails the whole command,
/// naming it (checked before any hit or miss is counted).
pub fn mget(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let stored = argv[1..]
        .iter()
        .map(|k| read_one(ctx, k))
        .collect::<Result<Vec<_>, _>>()?;
    let out = stored
        .into_iter()
        .map(|s| reply_one(s, Ok(RedisValue::Null)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RedisValue::Array(out))
}
