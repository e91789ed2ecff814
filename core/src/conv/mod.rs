//! Conversation memory's pure core: the turn rules (message, tokens, turn), the session
//! window (session, arena), its persistence encoding (codec), rendering and search.
pub mod arena;
pub mod codec;
pub mod message;
pub mod render;
pub mod search;
pub mod session;
pub mod tokens;
pub mod turn;
