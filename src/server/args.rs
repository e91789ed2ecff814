//! One argument reader for every command: positional values, keywords, numbers and blobs,
//! each failure a clear `ERR ...` naming the argument at fault.

use redis_module::{RedisError, RedisResult, RedisString};

/// Reads a command's argv in place (borrowed: no copy of the arguments).
pub struct Args<'a> {
    argv: &'a [RedisString],
    pos: usize,
}

pub fn err<T>(msg: impl Into<String>) -> Result<T, RedisError> {
    Err(reply_err(msg.into()))
}

/// A core error as the client sees it: `ERR ` and the error's own text (the one place a
/// `Display` error becomes a reply).
pub fn reply_err(e: impl std::fmt::Display) -> RedisError {
    RedisError::String(format!("ERR {e}"))
}

impl<'a> Args<'a> {
    /// Skips the command name; refuses fewer than `min` arguments after it.
    pub fn new(argv: &'a [RedisString], min: usize) -> Result<Args<'a>, RedisError> {
        if argv.len() < min + 1 {
            return Err(RedisError::WrongArity);
        }
        Ok(Args { argv, pos: 1 })
    }

    /// Reads options starting at position `pos` of the full argv.
    pub fn from(argv: &'a [RedisString], pos: usize) -> Args<'a> {
        Args { argv, pos }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.argv.len()
    }

    /// The next argument, or an arity error.
    pub fn next_arg(&mut self) -> Result<&'a RedisString, RedisError> {
        let a = self.argv.get(self.pos).ok_or(RedisError::WrongArity)?;
        self.pos += 1;
        Ok(a)
    }

    pub fn next_bytes(&mut self) -> Result<&'a [u8], RedisError> {
        Ok(self.next_arg()?.as_slice())
    }

    /// The value that must follow keyword `name`.
    pub fn value_of(&mut self, name: &str) -> Result<&'a [u8], RedisError> {
        match self.argv.get(self.pos) {
            Some(a) => {
                self.pos += 1;
                Ok(a.as_slice())
            }
            None => err(format!("{name} needs a value")),
        }
    }

    /// The next argument as an upper-case keyword.
    pub fn next_keyword(&mut self) -> Result<String, RedisError> {
        Ok(String::from_utf8_lossy(self.next_bytes()?).to_ascii_uppercase())
    }

    /// The value of keyword `name`, an integer between `min` and `max`.
    pub fn int_in(&mut self, name: &str, min: i64, max: i64) -> Result<i64, RedisError> {
        let v = self.value_of(name)?;
        int_in(name, v, min, max)
    }

    pub fn f64_of(&mut self, name: &str) -> Result<f64, RedisError> {
        let v = self.value_of(name)?;
        parse_f64(name, v)
    }
}

/// The key of a command that takes exactly one argument.
pub fn single_key(argv: &[RedisString]) -> Result<&RedisString, RedisError> {
    match argv {
        [_, key] => Ok(key),
        _ => Err(RedisError::WrongArity),
    }
}

pub fn parse_i64(name: &str, v: &[u8]) -> Result<i64, RedisError> {
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(n) => Ok(n),
        None => err(format!(
            "value for {name} is not an integer: '{}'",
            String::from_utf8_lossy(v)
        )),
    }
}

/// An integer argument between `min` and `max`.
pub fn int_in(name: &str, v: &[u8], min: i64, max: i64) -> Result<i64, RedisError> {
    let v = parse_i64(name, v)?;
    if v < min || v > max {
        return err(format!("{name} must be between {min} and {max}, got {v}"));
    }
    Ok(v)
}

pub fn parse_f64(name: &str, v: &[u8]) -> Result<f64, RedisError> {
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        Some(n) if n.is_finite() => Ok(n),
        _ => err(format!(
            "value for {name} is not a number: '{}'",
            String::from_utf8_lossy(v)
        )),
    }
}

/// Validates a JSON object argument and returns its compact text.
pub fn json_object(name: &str, v: &[u8]) -> Result<String, RedisError> {
    match serde_json::from_slice::<serde_json::Value>(v) {
        Ok(serde_json::Value::Object(map)) => Ok(serde_json::Value::Object(map).to_string()),
        Ok(_) => err(format!("{name} must be a JSON object")),
        Err(e) => err(format!("{name} is not valid JSON: {e}")),
    }
}

pub fn unknown_option<T>(opt: &str) -> RedisResult<T> {
    err(format!("unknown option '{opt}'"))
}
