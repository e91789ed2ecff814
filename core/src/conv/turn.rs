//! `Turn`: a borrowed view of one conversation turn, what readers get from a session's arena
//! (or from an owned [`Message`]) without copying. `Message` stays the owned interchange type
//! (codec, archive, import, `_LOAD`); the two conversions live here, one place each, so adding
//! a field to a turn is a few lines in this file and in `arena.rs`.

use std::borrow::Cow;

use super::message::{self, InvalidMessage, Message};

/// A turn's embedding as stored: float32 values, either a slice of an owned message or
/// little-endian bytes inside an arena (at any alignment).
#[derive(Debug, Clone, Copy)]
pub enum Emb<'a> {
    F32(&'a [f32]),
    /// `4 * dim` bytes, f32 little-endian, not necessarily 4-byte aligned.
    Le(&'a [u8]),
}

impl<'a> Emb<'a> {
    pub fn dim(&self) -> usize {
        match self {
            Emb::F32(v) => v.len(),
            Emb::Le(b) => b.len() / 4,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        let (f, b): (&'a [f32], &'a [u8]) = match *self {
            Emb::F32(v) => (v, &[]),
            Emb::Le(b) => (&[], b),
        };
        f.iter().copied().chain(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
        )
    }

    /// The values as a slice: borrowed when the bytes happen to be aligned, copied otherwise.
    pub fn as_f32s(&self) -> Cow<'a, [f32]> {
        match *self {
            Emb::F32(v) => Cow::Borrowed(v),
            Emb::Le(b) => {
                #[cfg(target_endian = "little")]
                {
                    // SAFETY: every bit pattern is a valid f32, and `align_to` only hands out
                    // the correctly aligned middle part.
                    let (head, mid, tail) = unsafe { b.align_to::<f32>() };
                    if head.is_empty() && tail.is_empty() {
                        return Cow::Borrowed(mid);
                    }
                }
                Cow::Owned(self.iter().collect())
            }
        }
    }

    pub fn to_vec(self) -> Vec<f32> {
        self.iter().collect()
    }
}

impl PartialEq for Emb<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.dim() == other.dim() && self.iter().eq(other.iter())
    }
}

/// One turn, borrowed. Field meanings are [`Message`]'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turn<'a> {
    pub seq: u64,
    pub ts_ms: i64,
    pub role: &'a str,
    pub content: &'a [u8],
    pub meta: Option<&'a str>,
    pub emb: Option<Emb<'a>>,
    pub tokens: u32,
    pub name: Option<&'a str>,
    pub tool_call_id: Option<&'a str>,
    pub tool_calls: Option<&'a str>,
    /// The content is known to go into JSON as it is (printable ASCII, no quote or
    /// backslash): the arena checks once, at add, so a read copies it without a scan. False
    /// means not known (a reply scans it).
    pub plain: bool,
}

impl Turn<'_> {
    /// The owned copy (archive writes, replies built off the main thread).
    pub fn to_message(self) -> Message {
        Message {
            seq: self.seq,
            ts_ms: self.ts_ms,
            role: self.role.to_string(),
            content: self.content.to_vec(),
            meta: self.meta.map(str::to_string),
            emb: self.emb.map(|e| e.to_vec()),
            tokens: self.tokens,
            name: self.name.map(str::to_string),
            tool_call_id: self.tool_call_id.map(str::to_string),
            tool_calls: self.tool_calls.map(str::to_string),
        }
    }

    /// Whether the turn carries any of the chat API's tool fields.
    pub fn has_tool_fields(&self) -> bool {
        self.name.is_some() || self.tool_call_id.is_some() || self.tool_calls.is_some()
    }

    /// The rules of every stored turn (see message.rs).
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        message::check_role(self.role.as_bytes())?;
        message::check_ts(self.ts_ms)?;
        if let Some(meta) = self.meta {
            message::check_meta(meta)?;
        }
        if let Some(emb) = self.emb {
            message::check_emb(&emb.as_f32s())?;
        }
        if let Some(name) = self.name {
            message::check_name(name.as_bytes())?;
        }
        if let Some(id) = self.tool_call_id {
            message::check_tool_call_id(id.as_bytes())?;
        }
        if let Some(calls) = self.tool_calls {
            message::check_tool_calls(calls)?;
        }
        Ok(())
    }
}

impl Message {
    /// The borrowed view of an owned message.
    pub fn as_turn(&self) -> Turn<'_> {
        Turn {
            seq: self.seq,
            ts_ms: self.ts_ms,
            role: &self.role,
            content: &self.content,
            meta: self.meta.as_deref(),
            emb: self.emb.as_deref().map(Emb::F32),
            tokens: self.tokens,
            name: self.name.as_deref(),
            tool_call_id: self.tool_call_id.as_deref(),
            tool_calls: self.tool_calls.as_deref(),
            plain: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_read_the_same_at_every_alignment() {
        let values = [1.5f32, -2.25, 3.0e-7, f32::MAX];
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for pad in 0..8 {
            let mut buf = vec![0xAAu8; pad];
            buf.extend_from_slice(&le);
            let e = Emb::Le(&buf[pad..]);
            assert_eq!(e.dim(), 4);
            assert_eq!(e.to_vec(), values);
            assert_eq!(&*e.as_f32s(), &values[..], "offset {pad}");
            assert_eq!(e, Emb::F32(&values));
        }
        assert_ne!(Emb::F32(&values[..3]), Emb::F32(&values));
    }

    #[test]
    fn message_and_turn_convert_both_ways() {
        let m = Message {
            seq: 9,
            ts_ms: 3,
            role: "tool".into(),
            content: vec![0, 0xff],
            meta: Some("{\"a\":1}".into()),
            emb: Some(vec![0.5, 1.0]),
            tokens: 2,
            name: Some("lookup".into()),
            tool_call_id: Some("call_1".into()),
            tool_calls: None,
        };
        assert_eq!(m.as_turn().to_message(), m);
        assert_eq!(m.as_turn().validate(), Ok(()));
        let bad = Message {
            emb: Some(vec![f32::NAN]),
            ..m.clone()
        };
        assert!(bad.as_turn().validate().is_err());
    }
}
