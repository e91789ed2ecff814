//! How messages are shown to clients: a JSON array ready for a chat API, the same with
//! sequence/time/metadata, plain `role: content` lines, or RESP arrays (binary-safe).

use super::turn::Turn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[{"role","content"}]`
    Messages,
    /// `[{"seq","ts","role","content","meta"}]`
    Full,
    /// `role: content` lines
    Text,
    /// One RESP array per message: seq, ts, role, content, meta (binary-safe)
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

/// JSON string of possibly non-UTF-8 bytes: invalid sequences become U+FFFD
/// (JSON can only carry Unicode; FORMAT resp returns the exact bytes).
/// True if the bytes are printable ASCII without `"` or `\\`: JSON takes them as they are.
/// This runs over every message of every CTX reply, so it tests 8 bytes at a time (SWAR).
fn json_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is below `n` (n <= 128) / is zero: the classic bit tricks, exact for "any".
    let has_less = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut bad = 0u64;
    for w in words.by_ref() {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        bad |= (x & HIGH)
            | has_less(x, 0x20)
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')));
    }
    bad == 0
        && words
            .remainder()
            .iter()
            .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

fn push_json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most chat text needs no escaping at all: copy it straight between quotes.
    if json_plain(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    serde_json::to_writer(&mut *out, text.as_ref()).expect("writing to a Vec cannot fail");
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
    out.extend_from_slice(b",\"content\":");
    push_json_str(out, m.content);
    if full {
        out.extend_from_slice(b",\"meta\":");
        match m.meta {
            Some(meta) => out.extend_from_slice(meta.as_bytes()),
            None => out.extend_from_slice(b"{}"),
        }
    }
    out.push(b'}');
}

/// Renders messages (oldest first) as one string in a text-like format.
pub fn render<'a>(format: Format, messages: impl Iterator<Item = Turn<'a>> + Clone) -> Vec<u8> {
    let size: usize = messages
        .clone()
        .map(|m| m.content.len() + m.role.len() + 32)
        .sum();
    let mut out = Vec::with_capacity(size + 2);
    match format {
        Format::Messages | Format::Full => {
            out.push(b'[');
            for (i, m) in messages.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_message(&mut out, &m, format == Format::Full);
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
    out
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
        }
    }

    #[test]
    fn messages_format_is_valid_json_for_chat_apis() {
        let msgs = [
            m(1, "user", "hé \"q\"\n".as_bytes(), None),
            m(2, "assistant", b"ok", None),
        ];
        let out = render(Format::Messages, msgs.iter().map(Message::as_turn));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["role"], "user");
        assert_eq!(v[0]["content"], "hé \"q\"\n");
        assert_eq!(v[1]["content"], "ok");
        assert!(v[0].get("seq").is_none());
    }

    #[test]
    fn full_format_carries_seq_ts_meta() {
        let msgs = [m(3, "user", b"x", Some("{\"a\":[1]}"))];
        let v: serde_json::Value =
            serde_json::from_slice(&render(Format::Full, msgs.iter().map(Message::as_turn)))
                .unwrap();
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[0]["ts"], 7);
        assert_eq!(v[0]["meta"]["a"][0], 1);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_char_in_json() {
        let msgs = [m(1, "user", &[0xff, b'a'], None)];
        let v: serde_json::Value =
            serde_json::from_slice(&render(Format::Messages, msgs.iter().map(Message::as_turn)))
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
    fn text_format() {
        let msgs = [m(1, "user", b"hi", None), m(2, "assistant", b"hello", None)];
        assert_eq!(
            render(Format::Text, msgs.iter().map(Message::as_turn)),
            b"user: hi\nassistant: hello".to_vec()
        );
        assert_eq!(render(Format::Messages, std::iter::empty()), b"[]".to_vec());
    }
}
