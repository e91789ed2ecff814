//! Typed access to module values with the server's standard WRONGTYPE error
//! (the crate's own check answers with a non-standard message).

use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::native_types::RedisType;
use redis_module::RedisError;

pub fn read<'a, T>(key: &'a RedisKey, ty: &RedisType) -> Result<Option<&'a T>, RedisError> {
    key.get_value::<T>(ty).map_err(|_| RedisError::WrongType)
}

pub fn write<'a, T>(
    key: &'a RedisKeyWritable,
    ty: &RedisType,
) -> Result<Option<&'a mut T>, RedisError> {
    key.get_value::<T>(ty).map_err(|_| RedisError::WrongType)
}
