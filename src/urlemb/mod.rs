//! Embedding cache: a validated float32 vector stored as a plain string value, so that a
//! plain `GET` returns the same bytes. `commands.rs` holds the URLEMB.* handlers.
pub mod commands;
