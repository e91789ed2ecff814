//! SEMCACHE.*: the server side of the semantic cache. `commands` holds the handlers,
//! `lookup` the reply of a lookup, `scan` the background scan of big buckets, `type` the
//! server callbacks. The buckets themselves live in the core crate's `semcache`.
pub use convcache_core::semcache::*;

pub mod commands;
pub mod lookup;
pub mod scan;
pub mod r#type;
