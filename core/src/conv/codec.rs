//! Binary encoding of a session for RDB, DUMP/RESTORE and the AOF-rewrite command.
//!
//! Layout (version 1): `u8 version`, `u8 kind` (0 = whole session, 1 = more messages for a
//! session being rebuilt, 2 = archived turns of a session being rebuilt), for kind 0 the
//! session fields, then `varint n` messages. Integers are LEB128 varints, timestamps i64 LE,
//! embeddings f32 LE. One encoding for every persistence path keeps them from drifting apart;
//! the version byte lets later releases read what older ones wrote, and each payload carries
//! the lowest version that can express it, so an older module still reads what it can.

use super::message::Message;
use super::session::{ArchivedRange, Session, MAX_WINDOW};
use super::tokens::Tokenizer;
use super::turn::Turn;
use crate::varint::put as put_varint;
use crate::wire::{put_bytes, unknown_version, Reader, WireError};

/// 1: first release. 2: adds `archive_upto`, `auto_expire_ms` and `sid` after the archived range.
/// 3: adds kind 2, the archived turns (an AOF rewrite or slot-migration snapshot carries them,
/// as the RDB carries the archive file).
/// 4: the header ends with the session's tokenizer (u8) and its archived turns' tokens
/// (varint); each turn has its token count (varint) after its content, and flags bits 2-4
/// for `name`, `tool_call_id`, `tool_calls` (each a varint length + UTF-8, after the
/// embedding). Versions 1-3 load with tokenizer `estimate` and estimated counts.
pub const CODEC_VERSION: u8 = 4;
const KIND_SESSION: u8 = 0;
const KIND_MORE: u8 = 1;
const KIND_ARCHIVED: u8 = 2;
const HAS_META: u8 = 1;
const HAS_EMB: u8 = 2;
const HAS_NAME: u8 = 4;
const HAS_TOOL_CALL_ID: u8 = 8;
const HAS_TOOL_CALLS: u8 = 16;

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

impl From<WireError> for CodecError {
    fn from(e: WireError) -> Self {
        CodecError(e.0.to_string())
    }
}

/// One turn in the current encoding (version 4).
pub fn put_message(out: &mut Vec<u8>, m: &Turn) {
    put_varint(out, m.seq);
    out.extend_from_slice(&m.ts_ms.to_le_bytes());
    put_bytes(out, m.role.as_bytes());
    put_bytes(out, m.content);
    put_varint(out, u64::from(m.tokens));
    let bit = |present: bool, b: u8| if present { b } else { 0 };
    let flags = bit(m.meta.is_some(), HAS_META)
        | bit(m.emb.is_some(), HAS_EMB)
        | bit(m.name.is_some(), HAS_NAME)
        | bit(m.tool_call_id.is_some(), HAS_TOOL_CALL_ID)
        | bit(m.tool_calls.is_some(), HAS_TOOL_CALLS);
    out.push(flags);
    if let Some(meta) = m.meta {
        put_bytes(out, meta.as_bytes());
    }
    if let Some(emb) = m.emb {
        put_varint(out, emb.dim() as u64);
        for f in emb.iter() {
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
    for text in [m.name, m.tool_call_id, m.tool_calls].into_iter().flatten() {
        put_bytes(out, text.as_bytes());
    }
}

/// Reads one message of a payload of `version` and checks it against the rules of every
/// stored turn ([`Message::validate_stored`]).
pub fn read_message(r: &mut Reader, version: u8) -> Result<Message, CodecError> {
    let seq = r.varint()?;
    let ts_ms = r.i64()?;
    let role = String::from_utf8(r.bytes()?.to_vec())
        .map_err(|_| CodecError(format!("turn {seq}: role is not UTF-8")))?;
    let content = r.bytes()?.to_vec();
    let tokens = if version >= 4 {
        u32::try_from(r.varint()?).map_err(|_| CodecError(format!("turn {seq}: tokens")))?
    } else {
        super::tokens::estimate(content.len())
    };
    let flags = r.u8()?;
    let known = if version >= 4 {
        HAS_META | HAS_EMB | HAS_NAME | HAS_TOOL_CALL_ID | HAS_TOOL_CALLS
    } else {
        HAS_META | HAS_EMB
    };
    if flags & !known != 0 {
        return Err(CodecError(format!(
            "turn {seq}: unknown flags {flags:#04x}"
        )));
    }
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
    let mut text = |bit: u8, what: &str| -> Result<Option<String>, CodecError> {
        if flags & bit == 0 {
            return Ok(None);
        }
        String::from_utf8(r.bytes()?.to_vec())
            .map(Some)
            .map_err(|_| CodecError(format!("turn {seq}: {what} is not UTF-8")))
    };
    let name = text(HAS_NAME, "name")?;
    let tool_call_id = text(HAS_TOOL_CALL_ID, "tool_call_id")?;
    let tool_calls = text(HAS_TOOL_CALLS, "tool_calls")?;
    let m = Message {
        seq,
        ts_ms,
        role,
        content,
        meta,
        emb,
        tokens,
        name,
        tool_call_id,
        tool_calls,
    };
    m.validate_stored()
        .map_err(|e| CodecError(format!("turn {seq}: {e}")))?;
    Ok(m)
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
    out.push(s.tokenizer.code());
    put_varint(out, s.archived_tokens);
}

/// The whole session, or (for AOF rewrite of big sessions) its header and first messages.
pub fn encode_session(s: &Session, messages: &[Turn]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + messages.iter().map(|m| m.content.len() + 32).sum::<usize>());
    out.push(CODEC_VERSION);
    out.push(KIND_SESSION);
    put_header(&mut out, s);
    put_messages(&mut out, messages);
    out
}

/// More messages for a session already started by `encode_session`.
pub fn encode_more(messages: &[Turn]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(CODEC_VERSION);
    out.push(KIND_MORE);
    put_messages(&mut out, messages);
    out
}

/// Turns the session keeps in its archive, for a node that has no copy of the file: the
/// receiver writes them to its own archive (ascending, within the header's archived range).
pub fn encode_archived(messages: &[Turn]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + messages.iter().map(|m| m.content.len() + 32).sum::<usize>());
    out.push(CODEC_VERSION);
    out.push(KIND_ARCHIVED);
    put_messages(&mut out, messages);
    out
}

fn put_messages(out: &mut Vec<u8>, messages: &[Turn]) {
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
        return Err(CodecError(unknown_version(
            "session",
            version,
            CODEC_VERSION,
        )));
    }
    let kind = r.u8()?;
    if kind == KIND_ARCHIVED && version < 3 {
        return corrupt("archived turns in a version 1 or 2 payload");
    }
    let mut session = match kind {
        KIND_SESSION => {
            let window = r.varint()?;
            if window == 0 || window > u64::from(MAX_WINDOW) {
                return Err(CodecError(format!(
                    "window {window} is not between 1 and {MAX_WINDOW}"
                )));
            }
            let window = window as u32;
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
            let (tokenizer, archived_tokens) = if version >= 4 {
                let code = r.u8()?;
                let t = Tokenizer::from_code(code)
                    .ok_or_else(|| CodecError(format!("unknown tokenizer {code}")))?;
                (t, r.varint()?)
            } else {
                // Older sessions counted bytes / 4; their archived turns are counted when
                // the archive arrives (RDB file, `_LOAD` archived turns).
                (Tokenizer::Estimate, 0)
            };
            let mut s = Session::new(window, created_ms);
            s.tokenizer = tokenizer;
            s.archived_tokens = archived_tokens;
            s.archive_upto = archive_upto;
            s.auto_expire_ms = auto_expire_ms;
            s.sid = sid;
            s.last_access_ms.set(last_access_ms);
            s.archived = archived;
            s.next_seq = next_seq;
            Some(s)
        }
        KIND_MORE | KIND_ARCHIVED => None,
        k => return Err(CodecError(format!("unknown payload kind {k}"))),
    };
    // The header's next_seq, before pushing turns can raise it: it must already be past them.
    let header_next = session.as_ref().map(|s| s.next_seq);
    // No allocation from `n`: every message takes at least 11 bytes of input, so a huge
    // count runs out of input (an error) long before memory.
    let n = r.varint()?;
    let mut more: Vec<Message> = Vec::new();
    for _ in 0..n {
        let m = read_message(&mut r, version)?;
        match session.as_mut() {
            Some(s) => s.push_loaded(m).map_err(|e| CodecError(e.to_string()))?,
            None => {
                if let Some(prev) = more.last() {
                    if m.seq <= prev.seq {
                        return Err(CodecError(format!(
                            "turn {} does not come after turn {}",
                            m.seq, prev.seq
                        )));
                    }
                }
                more.push(m)
            }
        }
    }
    if !r.at_end() {
        return corrupt("trailing bytes");
    }
    Ok(match session {
        Some(s) => {
            if let Some(next) = header_next {
                if s.next_seq != next {
                    return Err(CodecError(format!(
                        "next_seq {next} is not past the last turn {}",
                        s.next_seq - 1
                    )));
                }
            }
            s.check_consistent()
                .map_err(|e| CodecError(e.to_string()))?;
            Decoded::Session(s)
        }
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
                    ..Default::default()
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
        let all: Vec<Turn> = s.turns().collect();
        let buf = encode_session(&s, &all);
        match decode(&buf).unwrap() {
            Decoded::Session(d) => assert_eq!(d, s),
            Decoded::More(_) | Decoded::Archived(_) => panic!("wrong kind"),
        }
    }

    #[test]
    fn round_trip_in_parts() {
        let s = sample();
        let all: Vec<Turn> = s.turns().collect();
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
        let all: Vec<Turn> = s.turns().collect();
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
        put_message_v3(&mut v1, 2, 9, "user", b"hi", 0);
        let Decoded::Session(s) = decode(&v1).unwrap() else {
            panic!()
        };
        assert_eq!((s.window, s.next_seq, s.created_ms), (4, 3, 5));
        assert_eq!(s.archived.count, 1);
        assert_eq!(s.archive_upto, 1);
        assert_eq!((s.auto_expire_ms, s.sid), (0, 0));
        assert_eq!(s.turns().next().unwrap().content, b"hi");
        // Counts before version 4 are the estimate, with tokenizer `estimate`.
        assert_eq!(
            (s.turns().next().unwrap().tokens, s.tokenizer),
            (1, Tokenizer::Estimate)
        );
    }

    /// A turn as versions 1 to 3 wrote it: no token count, flags for meta and emb only.
    fn put_message_v3(out: &mut Vec<u8>, seq: u64, ts: i64, role: &str, content: &[u8], flags: u8) {
        put_varint(out, seq);
        out.extend_from_slice(&ts.to_le_bytes());
        put_bytes(out, role.as_bytes());
        put_bytes(out, content);
        out.push(flags);
    }

    #[test]
    fn reads_version_2_and_3_turns_with_estimated_counts() {
        for version in [2u8, 3] {
            let mut buf = vec![version, KIND_MORE, 1];
            put_message_v3(&mut buf, 7, 1, "tool", "héllo wörld!".as_bytes(), 0);
            let Decoded::More(turns) = decode(&buf).unwrap() else {
                panic!()
            };
            assert_eq!(turns[0].tokens, 4, "ceil(14 bytes / 4)");
            assert_eq!(turns[0].name, None);
            // Bits 2-4 mean nothing before version 4.
            let last = buf.len() - 1;
            buf[last] = HAS_NAME;
            assert!(err_of(&buf).contains("unknown flags 0x04"));
        }
    }

    #[test]
    fn version_4_keeps_tool_fields_tokens_and_the_tokenizer() {
        let mut s = sample();
        s.tokenizer = Tokenizer::O200kBase;
        s.archived_tokens = 77;
        let m = Message {
            seq: 0,
            ts_ms: 5,
            role: "tool".into(),
            content: b"22 C".to_vec(),
            tokens: 3,
            name: Some("get_weather".into()),
            tool_call_id: Some("call_9".into()),
            tool_calls: Some("[{\"id\":\"call_9\"}]".into()),
            ..Default::default()
        };
        s.add(m, None).unwrap();
        let all: Vec<Turn> = s.turns().collect();
        let buf = encode_session(&s, &all);
        assert_eq!(buf[0], 4);
        let Decoded::Session(d) = decode(&buf).unwrap() else {
            panic!()
        };
        assert_eq!(d, s);
        assert_eq!(d.turns().last().unwrap().tool_call_id, Some("call_9"));
        // An unknown tokenizer byte is refused: it sits right before the archived tokens.
        let mut header = Vec::new();
        put_header(&mut header, &s);
        let at = 2 + header.len() - 2; // archived_tokens 77 is one varint byte
        let mut bad = buf.clone();
        assert_eq!(bad[at], Tokenizer::O200kBase.code());
        bad[at] = 9;
        assert!(err_of(&bad).contains("unknown tokenizer 9"));
    }

    #[test]
    fn archived_turns_round_trip_with_their_own_version() {
        let s = sample();
        let all: Vec<Turn> = s.turns().collect();
        let buf = encode_archived(&all);
        assert_eq!(buf[0], 4);
        assert_eq!(encode_session(&s, &all)[0], 4);
        assert_eq!(encode_more(&all)[0], 4);
        let Decoded::Archived(got) = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(got, s.turns().map(|t| t.to_message()).collect::<Vec<_>>());
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

    fn err_of(buf: &[u8]) -> String {
        match decode(buf) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn garbage_is_not_called_a_newer_version() {
        assert_eq!(
            err_of(b"garbage"),
            "corrupt session payload: not a session payload (first byte 103 is no encoding version; this module reads 1 to 4)"
        );
        assert!(err_of(&[0, 1, 0]).contains("first byte 0 is no encoding version"));
        assert!(err_of(&[CODEC_VERSION + 3, 1, 0]).contains("encoding version 7 is newer"));
        assert_eq!(
            err_of(&[CODEC_VERSION, 7, 0]),
            "corrupt session payload: unknown payload kind 7"
        );
    }

    fn one_turn(f: impl Fn(&mut Message)) -> Vec<u8> {
        let mut m = Message {
            seq: 1,
            ts_ms: 5,
            role: "user".into(),
            content: b"hi".to_vec(),
            meta: Some("{}".into()),
            emb: Some(vec![1.0]),
            ..Default::default()
        };
        f(&mut m);
        encode_more(&[m.as_turn()])
    }

    #[test]
    fn turns_that_conv_add_would_refuse_are_refused() {
        assert!(decode(&one_turn(|_| {})).is_ok());
        type Edit<'a> = &'a dyn Fn(&mut Message);
        let cases: [(Edit, &str); 11] = [
            (
                &|m| m.name = Some(String::new()),
                "turn 1: NAME must be non-empty",
            ),
            (
                &|m| m.tool_call_id = Some("i".repeat(257)),
                "turn 1: TOOL_CALL_ID must be",
            ),
            (
                &|m| m.tool_calls = Some("{\"a\":1}".into()),
                "turn 1: TOOL_CALLS must be a JSON array",
            ),
            (&|m| m.role.clear(), "turn 1: role must be non-empty"),
            (
                &|m| m.role = "r".repeat(257),
                "turn 1: role must be non-empty",
            ),
            (
                &|m| m.meta = Some("x".into()),
                "turn 1: META is not valid JSON",
            ),
            (
                &|m| m.meta = Some("[]".into()),
                "turn 1: META must be a JSON object",
            ),
            (&|m| m.emb = Some(vec![]), "turn 1: EMB: vector is empty"),
            (
                &|m| m.emb = Some(vec![f32::INFINITY]),
                "turn 1: EMB: vector holds NaN",
            ),
            (&|m| m.ts_ms = -5, "turn 1: TS must be between 0"),
            (&|m| m.seq = 0, "turn 0: sequence number 0"),
        ];
        for (f, want) in cases {
            let e = err_of(&one_turn(f));
            assert!(e.contains(want), "{e} / {want}");
        }
        // Unknown flag bits.
        let mut b = one_turn(|m| {
            m.meta = None;
            m.emb = None
        });
        let last = b.len() - 1;
        b[last] = 0x20;
        assert!(err_of(&b).contains("unknown flags 0x20"));
        // A continuation's turns ascend.
        let m = |seq| Message {
            seq,
            ts_ms: 0,
            role: "u".into(),
            content: vec![],
            meta: None,
            emb: None,
            ..Default::default()
        };
        assert!(err_of(&encode_more(&[m(3).as_turn(), m(3).as_turn()]))
            .contains("turn 3 does not come after turn 3"));
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        let s = sample();
        let all: Vec<Turn> = s.turns().collect();
        let bad = |f: &dyn Fn(&mut Session), want: &str| {
            let mut t = s.clone();
            f(&mut t);
            let e = err_of(&encode_session(&t, &all));
            assert!(e.contains(want), "{e} / {want}");
        };
        bad(&|t| t.window = 0, "window 0 is not between 1 and 1000000");
        bad(&|t| t.window = MAX_WINDOW + 1, "window 1000001");
        bad(
            &|t| t.next_seq = 6,
            "next_seq 6 is not past the last turn 6",
        );
        bad(
            &|t| t.archive_upto = 7,
            "archive_upto 7 is not below next_seq 7",
        );
        bad(&|t| t.auto_expire_ms = -1, "auto_expire_ms -1 is negative");
        bad(
            &|t| t.archived.count = 0,
            "empty archived range has seqs 1..1",
        );
        bad(
            &|t| t.archived.count = 2,
            "archived range of 2 turns cannot span seqs 1..1",
        );
        bad(
            &|t| t.archived.last_seq = 2,
            "SEQ 2 is not past the session's last sequence (2)",
        );
        bad(
            &|t| t.archived.first_seq = 0,
            "archived range of 1 turns cannot span seqs 0..1",
        );
        // Turns out of order inside a whole session.
        let mut rev = all.clone();
        rev.swap(0, 1);
        assert!(err_of(&encode_session(&s, &rev)).contains("is not past"));
    }

    /// A consistent session built the way the commands build one: turns added, some archived.
    fn session_strategy() -> impl Strategy<Value = Session> {
        (
            1u32..=MAX_WINDOW,
            any::<i64>(),
            crate::conv::message::strategies::turns(0, 12),
            0usize..12,
            any::<u64>(),
            0i64..i64::MAX,
            any::<u64>(),
        )
            .prop_map(|(window, created, turns, archived, upto, expire, sid)| {
                let mut s = Session::new(window, created);
                let last = turns.last().map_or(0, |m| m.seq);
                for m in turns {
                    s.push_loaded(m).unwrap();
                }
                s.drop_oldest(archived);
                s.archive_upto = upto % (last + 1);
                s.auto_expire_ms = expire;
                s.sid = sid;
                s
            })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(200)))]

        #[test]
        fn prop_sessions_round_trip(s in session_strategy(), split in 0usize..12) {
            prop_assert_eq!(s.check_consistent(), Ok(()));
            let all: Vec<Turn> = s.turns().collect();
            let Decoded::Session(d) = decode(&encode_session(&s, &all)).unwrap() else {
                panic!("kind")
            };
            prop_assert_eq!(&d, &s);
            // In two parts, as AOF rewrite emits a big session.
            let split = split.min(all.len());
            let Decoded::Session(mut d) = decode(&encode_session(&s, &all[..split])).unwrap() else {
                panic!("kind")
            };
            let Decoded::More(rest) = decode(&encode_more(&all[split..])).unwrap() else {
                panic!("kind")
            };
            d.push_more(rest).unwrap();
            prop_assert_eq!(d, s);
        }

        #[test]
        fn prop_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
            let mut v = data.clone();
            if v.len() >= 2 {
                v[0] = CODEC_VERSION;
                v[1] %= 2;
                let _ = decode(&v);
            }
        }

        /// Truncations and byte edits of a valid payload never panic; whatever is accepted
        /// holds every rule and survives another round trip.
        #[test]
        fn prop_mutations_never_panic_and_accepted_payloads_hold_the_rules(
            s in session_strategy(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
            cut in any::<usize>(),
        ) {
            let all: Vec<Turn> = s.turns().collect();
            let mut buf = encode_session(&s, &all);
            crate::conv::message::strategies::apply_edits(&mut buf, &edits);
            for b in [&buf[..], &buf[..cut % (buf.len() + 1)]] {
                match decode(b) {
                    Ok(Decoded::Session(d)) => {
                        prop_assert_eq!(d.check_consistent(), Ok(()));
                        for m in d.turns() {
                            prop_assert!(m.to_message().validate_stored().is_ok());
                        }
                        let again: Vec<Turn> = d.turns().collect();
                        let Decoded::Session(e) = decode(&encode_session(&d, &again)).unwrap() else {
                            panic!("kind")
                        };
                        prop_assert_eq!(e, d);
                    }
                    Ok(Decoded::More(turns) | Decoded::Archived(turns)) => {
                        for w in turns.windows(2) {
                            prop_assert!(w[0].seq < w[1].seq);
                        }
                        for m in &turns {
                            prop_assert!(m.validate_stored().is_ok());
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
