//! Replies that the crate's `RedisValue` cannot express.

use std::os::raw::{c_char, c_long};

use redis_module::{raw, Context, RedisResult, RedisValue};

/// A map (RESP3) / flat array (RESP2) of integer fields in the given order: clients that
/// read the RESP2 array by position get the documented order (`RedisValue::OrderedMap`
/// would sort the names).
pub fn ordered_fields(ctx: &Context, fields: &[(&str, i64)]) -> RedisResult {
    raw::reply_with_map(ctx.ctx, fields.len() as c_long);
    for (name, value) in fields {
        raw::reply_with_string_buffer(ctx.ctx, name.as_ptr().cast::<c_char>(), name.len());
        raw::reply_with_long_long(ctx.ctx, *value);
    }
    Ok(RedisValue::NoReply)
}
