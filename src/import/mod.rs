//! CONV.IMPORT: lix-open-cache archives read into sessions. The readers live in the core
//! crate's `import`.
pub use convcache_core::import::*;
