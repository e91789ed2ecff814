//! Conversation memory: a per-session rolling window of messages in a native data type.
pub mod codec;
pub mod commands;
pub mod message;
pub mod render;
pub mod session;
pub mod r#type;
