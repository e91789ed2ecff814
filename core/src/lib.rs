//! convcache's pure core: everything that decides, encodes and stores, with no server calls.
//! The module crate (`src/`) is the shell that parses commands, calls into this crate, applies
//! the result to keys and replies. This crate does not depend on `redis-module`, so the
//! compiler keeps it that way. Map: docs/architecture.md.
pub mod clock;
pub mod cold;
pub mod conv;
pub mod import;
pub mod metrics;
pub mod pool;
pub mod semcache;
pub mod varint;
pub mod vector;
pub mod wire;
