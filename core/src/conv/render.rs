//! How messages are shown to clients: a JSON array ready for a chat API, the same with
//! sequence/time/metadata, plain `role: content` lines, or RESP arrays (binary-safe).

use super::turn::Turn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[{"role",["tool_call_id"],["name"],"content",["tool_calls"]}]`: the chat-API shape
    Messages,
    /// `[{"seq","ts","role",[tool fields],"content",["tool_calls"],"meta","tokens"}]`
    Full,
    /// `role: content` lines
    Text,
    /// One RESP array per message: seq, ts, role, content, meta, tokens, name, tool_call_id,
    /// tool_calls (binary-safe; absent fields are nil)
    Resp,
}

impl Format {
    pub fn parse(word: &[u8]) -> Option<Format> {
        match word.to_ascii_lowercase().as_slice() {
            b"messages" => Some(Format::Messages),
            b"full" => Some(Format::Full),
            b"text" => Some(Format::Text),
            b"resp" => Some(Format::Resp),
            _ => None,
        }
    }
}

/// Index of the first byte JSON cannot take as it is (`"`, `\\`, a control character) or that
/// needs a UTF-8 check (>= 0x80), if any. This runs over every message of every CTX reply, so
/// it tests 16 bytes at a time with SSE2 (always there on x86-64), else 8 at a time (SWAR).
fn first_special(bytes: &[u8], ascii_only: bool) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; loads are unaligned and stay inside `bytes`.
        unsafe {
            let (quote, backslash) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
            let space = _mm_set1_epi8(0x20);
            while i + 16 <= bytes.len() {
                let v = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
                // Signed compare: bytes >= 0x80 are negative, so below 0x20 too.
                let low = if ascii_only {
                    _mm_cmplt_epi8(v, space)
                } else {
                    _mm_andnot_si128(
                        _mm_cmplt_epi8(v, _mm_setzero_si128()),
                        _mm_cmplt_epi8(v, space),
                    )
                };
                let hit = _mm_or_si128(
                    low,
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                );
                let mask = _mm_movemask_epi8(hit);
                if mask != 0 {
                    return Some(i + mask.trailing_zeros() as usize);
                }
                i += 16;
            }
        }
    }
    bytes[i..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\' || (ascii_only && b >= 0x80))
        .map(|p| p + i)
}

/// True if the bytes are printable ASCII without `"` or `\\`: JSON takes them as they are.
pub fn json_plain(bytes: &[u8]) -> bool {
    first_special(bytes, true).is_none()
}

/// JSON string of possibly non-UTF-8 bytes: invalid sequences become U+FFFD (JSON can only
/// carry Unicode; FORMAT resp returns the exact bytes). Escapes as serde_json does; runs
/// without escapes are copied whole.
fn push_json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Most chat text needs no escaping at all: copy it straight between quotes.
    let Some(first) = first_special(bytes, true) else {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let mut rest = text.as_bytes();
    // The bytes before `first` are plain either way (lossy decoding keeps a valid prefix).
    let mut at = Some(first.min(rest.len()));
    while let Some(i) = at.or_else(|| first_special(rest, false)) {
        at = None;
        if i >= rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // Non-ASCII UTF-8 (the first special byte of the ASCII-only scan): as it is.
            _ => out.push(b),
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// A message in the `full` form plus its relevance score (CONV.SEARCH).
pub fn push_json_message_scored(out: &mut Vec<u8>, m: &Turn, score: Option<f32>) {
    push_json_message(out, m, true);
    if let Some(score) = score {
        out.pop();
        out.extend_from_slice(b",\"score\":");
        out.extend_from_slice(format!("{score:.6}").as_bytes());
        out.push(b'}');
    }
}

pub fn push_json_message(out: &mut Vec<u8>, m: &Turn, full: bool) {
    if full {
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(m.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(m.ts_ms.to_string().as_bytes());
        out.extend_from_slice(b",\"role\":");
    } else {
        out.extend_from_slice(b"{\"role\":");
    }
    push_json_str(out, m.role.as_bytes());
    // The chat-API fields, only when present, so the array goes to the API unchanged.
    if let Some(id) = &m.tool_call_id {
        out.extend_from_slice(b",\"tool_call_id\":");
        push_json_str(out, id.as_bytes());
    }
    if let Some(name) = &m.name {
        out.extend_from_slice(b",\"name\":");
        push_json_str(out, name.as_bytes());
    }
    out.extend_from_slice(b",\"content\":");
    if m.plain {
        out.push(b'"');
        out.extend_from_slice(m.content);
        out.push(b'"');
    } else {
        push_json_str(out, m.content);
    }
    if let Some(calls) = m.tool_calls {
        // Validated as a compact JSON array when stored.
        out.extend_from_slice(b",\"tool_calls\":");
        out.extend_from_slice(calls.as_bytes());
    }
    if full {
        out.extend_from_slice(b",\"meta\":");
        match m.meta {
            Some(meta) => out.extend_from_slice(meta.as_bytes()),
            None => out.extend_from_slice(b"{}"),
        }
        out.extend_from_slice(b",\"tokens\":");
        out.extend_from_slice(m.tokens.to_string().as_bytes());
    }
    out.push(b'}');
}

/// An upper bound of what a reply will hold, known without decoding the turns: their stored
/// bytes (content, meta and the like) and how many there are. The reply is built in one
/// buffer of that size: no pass over the turns to measure them, no regrowth for plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeHint {
    pub bytes: usize,
    pub turns: usize,
}

impl SizeHint {
    pub fn of_messages(messages: &[super::message::Message]) -> SizeHint {
        SizeHint {
            bytes: messages
                .iter()
                .map(|m| m.role.len() + m.content.len() + m.meta.as_ref().map_or(0, String::len))
                .sum(),
            turns: messages.len(),
        }
    }

    /// Bytes for a reply in `format`: the turns' bytes plus each one's framing (quotes, keys,
    /// numbers, a built-in role's name).
    fn capacity(&self, format: Format) -> usize {
        let framing = match format {
            Format::Messages => 40,
            Format::Full => 100,
            Format::Text | Format::Resp => 12,
        };
        self.bytes + self.turns * framing + 2
    }
}

/// Renders messages (oldest first) as one string in a text-like format.
pub fn render<'a>(
    format: Format,
    messages: impl Iterator<Item = Turn<'a>>,
    size: SizeHint,
) -> Vec<u8> {
    let mut out = Vec::new();
    render_into(&mut out, format, messages, size);
    out
}

/// [`render`] appending to `out` (a buffer reused between replies).
pub fn render_into<'a>(
    out: &mut Vec<u8>,
    format: Format,
    messages: impl Iterator<Item = Turn<'a>>,
    size: SizeHint,
) {
    out.reserve(size.capacity(format));
    match format {
        Format::Messages | Format::Full => {
            out.push(b'[');
            for (i, m) in messages.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_message(out, &m, format == Format::Full);
            }
            out.push(b']');
        }
        Format::Text => {
            for (i, m) in messages.enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(m.role.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(m.content);
            }
        }
        Format::Resp => unreachable!("RESP is built by the command layer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::message::Message;

    fn m(seq: u64, role: &str, content: &[u8], meta: Option<&str>) -> Message {
        Message {
            seq,
            ts_ms: 7,
            role: role.into(),
            content: content.to_vec(),
            meta: meta.map(str::to_string),
            emb: None,
            ..Default::default()
        }
    }

    #[test]
    fn messages_format_is_valid_json_for_chat_apis() {
        let msgs = [
            m(1, "user", "hé \"q\"\n".as_bytes(), None),
            m(2, "assistant", b"ok", None),
        ];
        let out = render(
            Format::Messages,
            msgs.iter().map(Message::as_turn),
            SizeHint::default(),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["role"], "user");
        assert_eq!(v[0]["content"], "hé \"q\"\n");
        assert_eq!(v[1]["content"], "ok");
        assert!(v[0].get("seq").is_none());
    }

    #[test]
    fn full_format_carries_seq_ts_meta() {
        let msgs = [m(3, "user", b"x", Some("{\"a\":[1]}"))];
        let v: serde_json::Value = serde_json::from_slice(&render(
            Format::Full,
            msgs.iter().map(Message::as_turn),
            SizeHint::default(),
        ))
        .unwrap();
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[0]["ts"], 7);
        assert_eq!(v[0]["meta"]["a"][0], 1);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_char_in_json() {
        let msgs = [m(1, "user", &[0xff, b'a'], None)];
        let v: serde_json::Value = serde_json::from_slice(&render(
            Format::Messages,
            msgs.iter().map(Message::as_turn),
            SizeHint::default(),
        ))
        .unwrap();
        assert_eq!(v[0]["content"], "\u{fffd}a");
    }

    #[test]
    fn plain_text_detection() {
        let long = "a".repeat(100);
        assert!(json_plain(long.as_bytes()));
        for bad in [b'"', b'\\', b'\n', 0x00, 0x7f + 1, 0xff] {
            for pos in [0, 31, 32, 63, 99] {
                let mut v = long.clone().into_bytes();
                v[pos] = bad;
                assert!(!json_plain(&v), "byte {bad:#x} at {pos}");
            }
        }
        assert!(json_plain(b""));
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_does() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            "h\u{e9} \"q\"\n\\ \u{1}\u{1f}\u{7f} \u{8}\u{c}\r\t \u{1f600}".into(),
            vec![0xff, b'"', 0xc3, 0xa9, 0xe2, 0x82],
        ];
        for n in [15, 16, 17, 31, 32, 33, 100] {
            for special in [b'"', b'\\', b'\n', 0x80, 0xc3] {
                let mut v = vec![b'a'; n];
                v[n - 1] = special;
                cases.push(v.clone());
                v[0] = special;
                cases.push(v);
            }
        }
        for c in cases {
            let mut got = Vec::new();
            push_json_str(&mut got, &c);
            let want = serde_json::to_vec(String::from_utf8_lossy(&c).as_ref()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{c:?}"
            );
        }
    }

    #[test]
    fn text_format() {
        let msgs = [m(1, "user", b"hi", None), m(2, "assistant", b"hello", None)];
        assert_eq!(
            render(
                Format::Text,
                msgs.iter().map(Message::as_turn),
                SizeHint::default()
            ),
            b"user: hi\nassistant: hello".to_vec()
        );
        assert_eq!(
            render(Format::Messages, std::iter::empty(), SizeHint::default()),
            b"[]".to_vec()
        );
    }
}
