//! CONV.*: the server side of conversation memory. `commands` holds the handlers, `type` the
//! session type's callbacks, `keyspace` the key events, `timer` the periodic archiver, and
//! `cold` the cold tier's main-thread glue (it hands work to the core's I/O workers and
//! applies their completions). The session window itself lives in the core crate's `conv`.
pub use convcache_core::conv::*;

pub mod backpressure;
pub mod cold;
pub mod commands;
pub mod evicted;
pub mod keyspace;
pub mod timer;
pub mod r#type;
