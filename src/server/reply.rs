//! Replies that the crate's `RedisValue` cannot express.

use std::os::raw::{c_char, c_long};

use redis_module::{raw, Context, RedisResult, RedisValue};

/// One field value of [`ordered_fields`].
#[derive(Clone, Copy)]
pub enum Field {
    Int(i64),
    Text(&'static str),
}

impl From<i64> for Field {
    fn from(v: i64) -> Self {
        Field::Int(v)
    }
}

impl From<&'static str> for Field {
    fn from(v: &'static str) -> Self {
        Field::Text(v)
    }
}

/// A map (RESP3) / flat array (RESP2) of fields in the given order: clients that
/// read the RESP2 array by position get the documented order (`RedisValue::OrderedMap`
/// would sort the names).
pub fn ordered_fields<V: Into<Field> + Copy>(ctx: &Context, fields: &[(&str, V)]) -> RedisResult {
    raw::reply_with_map(ctx.ctx, fields.len() as c_long);
    for (name, value) in fields {
        raw::reply_with_string_buffer(ctx.ctx, name.as_ptr().cast::<c_char>(), name.len());
        match (*value).into() {
            Field::Int(v) => raw::reply_with_long_long(ctx.ctx, v),
            Field::Text(t) => {
                raw::reply_with_string_buffer(ctx.ctx, t.as_ptr().cast::<c_char>(), t.len())
            }
        };
    }
    Ok(RedisValue::NoReply)
}
