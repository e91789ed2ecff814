//! Binary encoding of a session for RDB, DUMP/RESTORE and the AOF-rewrite command.
//!
//! Layout (version 1): `u8 version`, `u8 kind` (0 = whole session, 1 = more messages for a
//! session being rebuilt, 2 = archived turns of a session being rebuilt), for kind 0 the
//! session fields, then `varint n` messages. Integers are LEB128 varints, timestamps i64 LE,
//! embeddings f32 LE. One encoding for every persistence path keeps them from drifting apart;
//! the version byte lets later releases read what older ones wrote, and each payload carries
//! the lowest version that can express it, so an older module still reads what it can.

use super::message::Message;
use super::session::{ArchivedRange, Session};

/// 1: first release. 2: adds `archive_upto`, `auto_expire_ms` and `sid` after the archived range.
/// 3: adds kind 2, the archived turns (an AOF rewrite or slot-migration snapshot carries them,
/// as the RDB carries the archive file).
pub const CODEC_VERSION: u8 = 3;
/// What sessions and their in-memory turns are written with (kinds 0 and 1 need nothing newer).
const SESSION_CODEC_VERSION: u8 = 2;
const KIND_SESSION: u8 = 0;
const KIND_MORE: u8 = 1;
const KIND_ARCHIVED: u8 = 2;
const HAS_META: u8 = 1;
const HAS_EMB: u8 = 2;

#[derive(Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt session payload: {}", self.0)
    }
}

fn corrupt<T>(what: &str) -> Result<T, CodecError> {
    Err(CodecError(what.to_string()))
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over an encoded payload; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(CodecError("truncated".into()))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        corrupt("varint too long")
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() - self.pos < n {
            return corrupt("truncated");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| CodecError("length".into()))?)
    }
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

pub fn put_message(out: &mut Vec<u8>, m: &Message) {
    put_varint(out, m.seq);
    out.extend_from_slice(&m.ts_ms.to_le_bytes());
    put_bytes(out, m.role.as_bytes());
    put_bytes(out, &m.content);
    let flags =
        if m.meta.is_some() { HAS_META } else { 0 } | if m.emb.is_some() { HAS_EMB } else { 0 };
    out.push(flags);
    if let Some(meta) = &m.meta {
        put_bytes(out, meta.as_bytes());
    }
    if let Some(emb) = &m.emb {
        put_varint(out, emb.len() as u64);
        for f in emb {
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

pub fn read_message(r: &mut Reader) -> Result<Message, CodecError> {
    let seq = r.varint()?;
    let ts_ms = r.i64()?;
    let role = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError("role".into()))?;
    let content = r.bytes()?.to_vec();
    let flags = r.u8()?;
    let meta = if flags & HAS_META != 0 {
        Some(String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError("meta".into()))?)
    } else {
        None
    };
    let emb = if flags & HAS_EMB != 0 {
        let n = usize::try_from(r.varint()?).map_err(|_| CodecError("emb".into()))?;
        let raw = r.take(n.checked_mul(4).ok_or(CodecError("emb".into()))?)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    } else {
        None
    };
    Ok(Message {
        seq,
        ts_ms,
        role,
        content,
        meta,
        emb,
    })
}

fn put_header(out: &mut Vec<u8>, s: &Session) {
    put_varint(out, u64::from(s.window));
    put_varint(out, s.next_seq);
    out.extend_from_slice(&s.created_ms.to_le_bytes());
    out.extend_from_slice(&s.last_access_ms.get().to_le_bytes());
    put_varint(out, s.archived.count);
    put_varint(out, s.archived.first_seq);
    put_varint(out, s.archived.last_seq);
    put_varint(out, s.archive_upto);
    out.extend_from_slice(&s.auto_expire_ms.to_le_bytes());
    out.extend_from_slice(&s.sid.to_le_bytes());
}

/// The whole session, or (for AOF rewrite of big sessions) its header and first messages.
pub fn encode_session(s: &Session, messages: &[&Message]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + messages.iter().map(|m| m.content.len() + 32).sum::<usize>());
    out.push(SESSION_CODEC_VERSION);
    out.push(KIND_SESSION);
    put_header(&mut out, s);
    put_messages(&mut out, messages);
    out
}

/// More messages for a session already started by `encode_session`.
pub fn encode_more(messages: &[&Message]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(SESSION_CODEC_VERSION);
    out.push(KIND_MORE);
    put_messages(&mut out, messages);
    out
}

/// Turns the session keeps in its archive, for a node that has no copy of the file: the
/// receiver writes them to its own archive (ascending, within the header's archived range).
pub fn encode_archived(messages: &[&Message]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + messages.iter().map(|m| m.content.len() + 32).sum::<usize>());
    out.push(CODEC_VERSION);
    out.push(KIND_ARCHIVED);
    put_messages(&mut out, messages);
    out
}

fn put_messages(out: &mut Vec<u8>, messages: &[&Message]) {
    put_varint(out, messages.len() as u64);
    for m in messages {
        put_message(out, m);
    }
}

pub enum Decoded {
    Session(Session),
    More(Vec<Message>),
    Archived(Vec<Message>),
}

pub fn decode(buf: &[u8]) -> Result<Decoded, CodecError> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if version == 0 || version > CODEC_VERSION {
        return Err(CodecError(format!(
            "encoding version {version} is newer than this module understands ({CODEC_VERSION})"
        )));
    }
    let kind = r.u8()?;
    if kind == KIND_ARCHIVED && version < 3 {
        return corrupt("archived turns in a version 1 or 2 payload");
    }
    let mut session = match kind {
        KIND_SESSION => {
            let window = u32::try_from(r.varint()?).map_err(|_| CodecError("window".into()))?;
            let next_seq = r.varint()?;
            let created_ms = r.i64()?;
            let last_access_ms = r.i64()?;
            let archived = ArchivedRange {
                count: r.varint()?,
                first_seq: r.varint()?,
                last_seq: r.varint()?,
            };
            let (archive_upto, auto_expire_ms, sid) = if version >= 2 {
                (r.varint()?, r.i64()?, r.i64()? as u64)
            } else {
                (archived.last_seq, 0, 0)
            };
            let mut s = Session::new(window, created_ms);
            s.archive_upto = archive_upto;
            s.auto_expire_ms = auto_expire_ms;
            s.sid = sid;
            s.last_access_ms.set(last_access_ms);
            s.archived = archived;
            s.next_seq = next_seq;
            Some(s)
        }
        KIND_MORE | KIND_ARCHIVED => None,
        _ => return corrupt("unknown kind"),
    };
    let n = r.varint()?;
    let mut more = Vec::new();
    for _ in 0..n {
        let m = read_message(&mut r)?;
        match session.as_mut() {
            Some(s) => s.push_loaded(m).map_err(|e| CodecError(e.to_string()))?,
            None => more.push(m),
        }
    }
    if !r.at_end() {
        return corrupt("trailing bytes");
    }
    Ok(match session {
        Some(s) => Decoded::Session(s),
        None if kind == KIND_ARCHIVED => Decoded::Archived(more),
        None => Decoded::More(more),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        let mut s = Session::new(4, 1000);
        s.sid = u64::MAX - 7;
        s.auto_expire_ms = 123;
        for i in 0..6u8 {
            s.add(
                Message {
                    seq: 0,
                    ts_ms: 1000 + i64::from(i),
                    role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
                    content: vec![i, 0, 255, b'\n'],
                    meta: (i % 3 == 0).then(|| "{\"k\":1}".to_string()),
                    emb: (i % 2 == 1).then(|| vec![0.5, -1.25, f32::from(i)]),
                },
                None,
            )
            .unwrap();
        }
        s.drop_oldest(1);
        s
    }

    #[test]
    fn round_trip_whole_session() {
        let s = sample();
        let all: Vec<&Message> = s.hot().iter().collect();
        let buf = encode_session(&s, &all);
        match decode(&buf).unwrap() {
            Decoded::Session(d) => assert_eq!(d, s),
            Decoded::More(_) | Decoded::Archived(_) => panic!("wrong kind"),
        }
    }

    #[test]
    fn round_trip_in_parts() {
        let s = sample();
        let all: Vec<&Message> = s.hot().iter().collect();
        let Decoded::Session(mut d) = decode(&encode_session(&s, &all[..2])).unwrap() else {
            panic!()
        };
        let Decoded::More(rest) = decode(&encode_more(&all[2..])).unwrap() else {
            panic!()
        };
        for m in rest {
            d.push_loaded(m).unwrap();
        }
        assert_eq!(d, s);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let s = sample();
        let all: Vec<&Message> = s.hot().iter().collect();
        let buf = encode_session(&s, &all);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn reads_version_1_payloads() {
        // A v1 session payload as the first release wrote it: window 4, next_seq 3,
        // created 5, last access 6, archived (1 turn, seq 1..1), one message (seq 2).
        let mut v1 = vec![1u8, KIND_SESSION, 4, 3];
        v1.extend_from_slice(&5i64.to_le_bytes());
        v1.extend_from_slice(&6i64.to_le_bytes());
        v1.extend_from_slice(&[1, 1, 1, 1]);
        put_message(
            &mut v1,
            &Message {
                seq: 2,
                ts_ms: 9,
                role: "user".into(),
                content: b"hi".to_vec(),
                meta: None,
                emb: None,
            },
        );
        let Decoded::Session(s) = decode(&v1).unwrap() else {
            panic!()
        };
        assert_eq!((s.window, s.next_seq, s.created_ms), (4, 3, 5));
        assert_eq!(s.archived.count, 1);
        assert_eq!(s.archive_upto, 1);
        assert_eq!((s.auto_expire_ms, s.sid), (0, 0));
        assert_eq!(s.hot()[0].content, b"hi");
    }

    #[test]
    fn archived_turns_round_trip_with_their_own_version() {
        let s = sample();
        let all: Vec<&Message> = s.hot().iter().collect();
        let buf = encode_archived(&all);
        assert_eq!(buf[0], 3, "archived turns need version 3");
        assert_eq!(
            encode_session(&s, &all)[0],
            2,
            "sessions stay readable by version 2"
        );
        assert_eq!(encode_more(&all)[0], 2);
        let Decoded::Archived(got) = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(got, s.hot().iter().cloned().collect::<Vec<_>>());
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // Kind 2 did not exist before version 3: such a payload is damaged, not archived turns.
        let mut old = buf.clone();
        old[0] = 2;
        assert!(decode(&old).is_err());
    }

    #[test]
    fn newer_version_is_refused() {
        let mut buf = encode_more(&[]);
        buf[0] = CODEC_VERSION + 1;
        let err = decode(&buf).err().unwrap();
        assert!(err.0.contains("newer"));
    }
}
