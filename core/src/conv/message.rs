//! One conversation turn, as held in memory, in RDB and in archive segments, and the rules
//! every turn obeys wherever it comes from (CONV.ADD, `_LOAD`, RESTORE, RDB, archive files,
//! imports): one set of checks, so no path can let in what another refuses.

use crate::vector::{self, VectorError};

/// Longest role accepted, in bytes.
pub const MAX_ROLE_BYTES: usize = 256;
/// Longest `NAME` and `TOOL_CALL_ID` accepted, in bytes (chat APIs take far less).
pub const MAX_NAME_BYTES: usize = 256;

/// A message of a session. `seq` is assigned by the primary and never reused;
/// `ts_ms` is unix milliseconds (server clock unless the client gave one).
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// Tokens of `content`, counted once when the turn was added, with the session's
    /// tokenizer (turns stored before counts existed get the `estimate` count).
    pub tokens: u32,
    /// Chat-API `name` (of a tool, or a participant).
    pub name: Option<String>,
    /// Chat-API `tool_call_id` of a `tool` turn: the call it answers.
    pub tool_call_id: Option<String>,
    /// Chat-API `tool_calls` of an assistant turn: a JSON array, stored compact.
    pub tool_calls: Option<String>,
}

/// Why a turn breaks the rules; `Display` is the user-facing text (after `ERR `).
#[derive(Debug, Clone, PartialEq)]
pub enum InvalidMessage {
    Role,
    MetaNotJson(String),
    MetaNotObject,
    Emb(VectorError),
    Ts(i64),
    Seq,
    Name,
    ToolCallId,
    ToolCallsNotJson(String),
    ToolCallsNotArray,
}

impl std::fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidMessage::Role => write!(
                f,
                "role must be non-empty UTF-8 of at most {MAX_ROLE_BYTES} bytes"
            ),
            InvalidMessage::MetaNotJson(e) => write!(f, "META is not valid JSON: {e}"),
            InvalidMessage::MetaNotObject => write!(f, "META must be a JSON object"),
            InvalidMessage::Emb(e) => write!(f, "EMB: {e}"),
            InvalidMessage::Ts(v) => write!(f, "TS must be between 0 and {}, got {v}", i64::MAX),
            InvalidMessage::Seq => write!(f, "sequence number 0 is never assigned"),
            InvalidMessage::Name => write!(
                f,
                "NAME must be non-empty UTF-8 of at most {MAX_NAME_BYTES} bytes"
            ),
            InvalidMessage::ToolCallId => write!(
                f,
                "TOOL_CALL_ID must be non-empty UTF-8 of at most {MAX_NAME_BYTES} bytes"
            ),
            InvalidMessage::ToolCallsNotJson(e) => write!(f, "TOOL_CALLS is not valid JSON: {e}"),
            InvalidMessage::ToolCallsNotArray => write!(f, "TOOL_CALLS must be a JSON array"),
        }
    }
}

/// A role: non-empty UTF-8 of at most [`MAX_ROLE_BYTES`].
pub fn check_role(role: &[u8]) -> Result<&str, InvalidMessage> {
    std::str::from_utf8(role)
        .ok()
        .filter(|r| !r.is_empty() && r.len() <= MAX_ROLE_BYTES)
        .ok_or(InvalidMessage::Role)
}

/// META as a client sends it: a JSON object, returned in its compact text form.
pub fn compact_meta(text: &[u8]) -> Result<String, InvalidMessage> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
        Ok(_) => Err(InvalidMessage::MetaNotObject),
        Err(e) => Err(InvalidMessage::MetaNotJson(e.to_string())),
    }
}

/// META as stored: must still be a JSON object, since it is emitted verbatim inside JSON
/// replies (`FORMAT full`, CONV.SEARCH).
pub fn check_meta(text: &str) -> Result<(), InvalidMessage> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(InvalidMessage::MetaNotObject),
        Err(e) => Err(InvalidMessage::MetaNotJson(e.to_string())),
    }
}

/// A `NAME` or `TOOL_CALL_ID`: non-empty UTF-8 of at most [`MAX_NAME_BYTES`].
fn check_short_text(text: &[u8], e: InvalidMessage) -> Result<&str, InvalidMessage> {
    std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_NAME_BYTES)
        .ok_or(e)
}

pub fn check_name(name: &[u8]) -> Result<&str, InvalidMessage> {
    check_short_text(name, InvalidMessage::Name)
}

pub fn check_tool_call_id(id: &[u8]) -> Result<&str, InvalidMessage> {
    check_short_text(id, InvalidMessage::ToolCallId)
}

fn tool_calls_value(text: &[u8]) -> Result<serde_json::Value, InvalidMessage> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Array(_)) => Ok(v),
        Ok(_) => Err(InvalidMessage::ToolCallsNotArray),
        Err(e) => Err(InvalidMessage::ToolCallsNotJson(e.to_string())),
    }
}

/// TOOL_CALLS as a client sends it: a JSON array, returned in its compact text form.
pub fn compact_tool_calls(text: &[u8]) -> Result<String, InvalidMessage> {
    tool_calls_value(text).map(|v| v.to_string())
}

/// TOOL_CALLS as stored: still a JSON array (it is emitted verbatim inside JSON replies).
pub fn check_tool_calls(text: &str) -> Result<(), InvalidMessage> {
    tool_calls_value(text.as_bytes()).map(|_| ())
}

/// An embedding: non-empty, every element finite (what `EMB` accepts).
pub fn check_emb(emb: &[f32]) -> Result<(), InvalidMessage> {
    if emb.is_empty() {
        return Err(InvalidMessage::Emb(VectorError::Empty));
    }
    match emb.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(InvalidMessage::Emb(VectorError::NonFinite(i))),
        None => Ok(()),
    }
}

/// EMB as a client sends it: a float32 blob that passes [`check_emb`].
pub fn parse_emb(blob: &[u8]) -> Result<Vec<f32>, InvalidMessage> {
    vector::parse_fp32_blob(blob).map_err(InvalidMessage::Emb)
}

pub fn check_ts(ts_ms: i64) -> Result<(), InvalidMessage> {
    if ts_ms < 0 {
        return Err(InvalidMessage::Ts(ts_ms));
    }
    Ok(())
}

impl Message {
    /// Heap bytes owned by this message (not counting the struct itself).
    pub fn heap_bytes(&self) -> usize {
        self.role.capacity()
            + self.content.capacity()
            + self.meta.as_ref().map_or(0, |m| m.capacity())
            + self.emb.as_ref().map_or(0, |e| e.capacity() * 4)
            + [&self.name, &self.tool_call_id, &self.tool_calls]
                .iter()
                .map(|t| t.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
    }

    /// True if the turn carries a chat-API field beyond role and content.
    pub fn has_tool_fields(&self) -> bool {
        self.as_turn().has_tool_fields()
    }

    /// The rules of every stored turn (the content's size limit is a config, checked by
    /// CONV.ADD only: lowering it must not make stored sessions unloadable).
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        // One set of rules for owned and borrowed turns: see `Turn::validate`.
        self.as_turn().validate()
    }

    /// [`Message::validate`] plus a sequence number that can have been assigned (>= 1).
    pub fn validate_stored(&self) -> Result<(), InvalidMessage> {
        if self.seq == 0 {
            return Err(InvalidMessage::Seq);
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Message {
        Message {
            seq: 1,
            ts_ms: 0,
            role: "user".into(),
            content: vec![0xff, 0],
            meta: Some("{\"a\":[1]}".into()),
            emb: Some(vec![1.0, 0.0]),
            tokens: 7,
            name: Some("get_weather".into()),
            tool_call_id: Some("call_1".into()),
            tool_calls: Some("[{\"id\":\"call_1\"}]".into()),
        }
    }

    #[test]
    fn the_rules_of_a_turn() {
        assert_eq!(ok().validate_stored(), Ok(()));
        let bad = |f: fn(&mut Message)| {
            let mut m = ok();
            f(&mut m);
            m.validate_stored().unwrap_err().to_string()
        };
        assert!(bad(|m| m.role.clear()).starts_with("role must be"));
        assert!(bad(|m| m.role = "r".repeat(257)).starts_with("role must be"));
        assert_eq!(
            bad(|m| m.meta = Some("x".into())).split(':').next(),
            Some("META is not valid JSON")
        );
        assert_eq!(
            bad(|m| m.meta = Some("[1]".into())),
            "META must be a JSON object"
        );
        assert_eq!(
            bad(|m| m.meta = Some("{\"a\":1} x".into()))
                .split(':')
                .next(),
            Some("META is not valid JSON")
        );
        assert_eq!(bad(|m| m.emb = Some(vec![])), "EMB: vector is empty");
        assert_eq!(
            bad(|m| m.emb = Some(vec![1.0, f32::NAN])),
            "EMB: vector holds NaN or Inf at index 1"
        );
        assert!(bad(|m| m.ts_ms = -1).starts_with("TS must be between 0"));
        assert_eq!(bad(|m| m.seq = 0), "sequence number 0 is never assigned");
        assert!(bad(|m| m.name = Some(String::new())).starts_with("NAME must be"));
        assert!(bad(|m| m.name = Some("n".repeat(257))).starts_with("NAME must be"));
        assert!(bad(|m| m.tool_call_id = Some(String::new())).starts_with("TOOL_CALL_ID must"));
        assert_eq!(
            bad(|m| m.tool_calls = Some("{}".into())),
            "TOOL_CALLS must be a JSON array"
        );
        assert!(bad(|m| m.tool_calls = Some("[".into())).starts_with("TOOL_CALLS is not valid"));
        let mut m = ok();
        m.role = "r".repeat(256);
        m.meta = None;
        m.emb = None;
        m.name = Some("n".repeat(256));
        m.tool_calls = Some("[]".into());
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn meta_is_compacted_for_clients_and_checked_when_stored() {
        assert_eq!(compact_meta(b"{ \"b\" : 1 }").unwrap(), "{\"b\":1}");
        assert_eq!(compact_meta(b"3"), Err(InvalidMessage::MetaNotObject));
        assert!(check_meta("{\"b\":1}").is_ok());
        assert!(check_meta("{\"b\":1").is_err());
        assert_eq!(check_role(b"\xff"), Err(InvalidMessage::Role));
        assert_eq!(check_role(b"tool"), Ok("tool"));
        assert_eq!(
            compact_tool_calls(b"[ {\"id\" : \"c\"} ]").unwrap(),
            "[{\"id\":\"c\"}]"
        );
        assert_eq!(
            compact_tool_calls(b"{}"),
            Err(InvalidMessage::ToolCallsNotArray)
        );
        assert_eq!(check_name(b"\xff"), Err(InvalidMessage::Name));
    }
}

/// Proptest strategies for valid turns, shared by the decoders' property tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::Message;
    use proptest::prelude::*;

    /// Cases per property: `default`, or PROPTEST_CASES (`make fuzz` runs many more).
    pub fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Applies proptest-chosen edits to a payload: `(position, byte, how)` flips a bit,
    /// overwrites a byte or inserts one (positions wrap around the payload's length).
    pub fn apply_edits(buf: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
        for &(at, byte, how) in edits {
            let i = at % buf.len().max(1);
            match how {
                _ if buf.is_empty() => buf.push(byte),
                0 => buf[i] ^= 1 << (byte % 8),
                1 => buf[i] = byte,
                _ => buf.insert(i, byte),
            }
        }
    }

    /// A valid turn (seq filled in by the caller).
    pub fn message() -> impl Strategy<Value = Message> {
        (
            0i64..=i64::MAX,
            "[a-z]{1,12}|ツール",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of("[a-z]{0,6}".prop_map(|k| format!("{{\"{k}\":[1,\"x\"]}}"))),
            proptest::option::of(proptest::collection::vec(-1e6f32..1e6, 1..6)),
            (
                any::<u32>(),
                proptest::option::of("[a-z_]{1,10}|関数"),
                proptest::option::of("call_[a-zA-Z0-9]{1,8}"),
                proptest::option::of(
                    "[a-z]{0,6}".prop_map(|f| format!("[{{\"id\":\"c\",\"function\":\"{f}\"}}]")),
                ),
            ),
        )
            .prop_map(|(ts_ms, mut role, mut content, mut meta, mut emb, tool)| {
                let (tokens, mut name, mut tool_call_id, mut tool_calls) = tool;
                // Exact capacities, as decoded turns have (heap_bytes counts capacity).
                role.shrink_to_fit();
                content.shrink_to_fit();
                meta.iter_mut().for_each(String::shrink_to_fit);
                emb.iter_mut().for_each(Vec::shrink_to_fit);
                for t in [&mut name, &mut tool_call_id, &mut tool_calls] {
                    t.iter_mut().for_each(String::shrink_to_fit);
                }
                Message {
                    seq: 0,
                    ts_ms,
                    role,
                    content,
                    meta,
                    emb,
                    tokens,
                    name,
                    tool_call_id,
                    tool_calls,
                }
            })
    }

    /// Valid turns with strictly ascending seqs starting past `after`.
    pub fn turns(after: u64, max: usize) -> impl Strategy<Value = Vec<Message>> {
        proptest::collection::vec((message(), 1u64..1000), 0..max).prop_map(move |v| {
            let mut seq = after;
            v.into_iter()
                .map(|(mut m, gap)| {
                    seq += gap;
                    m.seq = seq;
                    m
                })
                .collect()
        })
    }
}
