//! Conversation memory: a per-session rolling window of messages in a native data type.
pub mod arena;
pub mod codec;
pub mod cold;
pub mod commands;
pub mod keyspace;
pub mod message;
pub mod render;
pub mod search;
pub mod session;
pub mod timer;
pub mod tokens;
pub mod turn;
pub mod r#type;
