//! One conversation turn, as held in memory, in RDB and in archive segments.

/// A message of a session. `seq` is assigned by the primary and never reused;
/// `ts_ms` is unix milliseconds (server clock unless the client gave one).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub seq: u64,
    pub ts_ms: i64,
    pub role: String,
    /// Binary-safe: usually UTF-8 text, but any bytes are kept as given.
    pub content: Vec<u8>,
    /// A JSON object, validated and stored in its compact text form.
    pub meta: Option<String>,
    /// Optional embedding, float32 values.
    pub emb: Option<Vec<f32>>,
}

impl Message {
    /// Heap bytes owned by this message (not counting the struct itself).
    pub fn heap_bytes(&self) -> usize {
        self.role.capacity()
            + self.content.capacity()
            + self.meta.as_ref().map_or(0, |m| m.capacity())
            + self.emb.as_ref().map_or(0, |e| e.capacity() * 4)
    }
}
