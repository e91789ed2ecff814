//! The shell's helpers: argument parsing, replies, keys, blocked clients, AOF rewrite
//! emission, the server allocator, cluster detection, and the module's settings.
#[cfg(not(test))]
pub mod alloc;
pub mod aof;
pub mod args;
pub mod blocking;
pub mod cluster;
pub mod config;
pub mod keys;
pub mod reply;
