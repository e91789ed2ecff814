//! The `CCAR` archive file: one file per conversation key, built for cheap
//! appends and crash recovery.
//!
//! # Layout
//!
//! All integers are little-endian. CRC32 is the IEEE/zlib polynomial
//! (`crc32fast`, same as `zlib.crc32`).
//!
//! ## File header (`18 + key_len + 4` bytes, readable without decoding)
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `"CCAR"` |
//! | 4      | 2    | format version, u16 = 1 |
//! | 6      | 2    | flags, u16 = 0 (reserved; readers reject unknown bits) |
//! | 8      | 8    | session id, i64: random, chosen when the session is created |
//! | 16     | 4    | key length `K`, u32 |
//! | 20     | K    | key bytes (the full Valkey key, binary) |
//! | 20+K   | 4    | CRC32 of bytes `0 .. 20+K` |
//!
//! ## Segments (zero or more, back to back until end of file)
//!
//! Each segment is a 40-byte header followed by its payload:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `"SEG1"` |
//! | 4      | 8    | first_seq, u64 |
//! | 12     | 8    | last_seq, u64 |
//! | 20     | 4    | turn count, u32 (>= 1) |
//! | 24     | 4    | raw length, u32: size of the serialized turns |
//! | 28     | 4    | compressed length `C`, u32: size of the payload |
//! | 32     | 4    | CRC32 of the payload |
//! | 36     | 4    | CRC32 of bytes 0..36 of this segment header |
//! | 40     | C    | payload = [`huffman::encode`](super::huffman::encode) of the serialized turns |
//!
//! ## `SEG2` segments (codec byte; written by default since archive codec v2)
//!
//! A 52-byte header: bytes 0..36 as in `SEG1` but with magic `"SEG2"`, then
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 36     | 1    | codec: 1 = Huffman (`CCH1`), 2 = zstd |
//! | 37     | 3    | reserved, 0 |
//! | 40     | 8    | dictionary id, u64 (0 = none; zstd only): `<archive-dir>/dict/<id as 16 hex digits>.zdict` |
//! | 48     | 4    | CRC32 of bytes 0..48 of this segment header |
//! | 52     | C    | payload: one zstd frame (with its content size) of the serialized turns |
//!
//! `SEG1` stays the Huffman segment forever (readers of every release take it);
//! a file may hold both kinds.
//!
//! Sequence numbers are strictly ascending within a segment and across
//! segments (`first_seq` of a segment > `last_seq` of the previous one), and
//! `count <= last_seq - first_seq + 1`. Every segment carries its own Huffman
//! table, so appending costs O(new turns): truncate the file to
//! [`ArchiveScan::valid_len`], then write one new segment.
//!
//! ## Serialized turns (the raw payload)
//!
//! `count` records back to back, nothing else. Varints are LEB128 (7 bits per
//! byte, low group first, at most 10 bytes), zigzag for signed values:
//!
//! | field | encoding |
//! |-------|----------|
//! | seq | varint: `seq - first_seq` for the first record, `seq - previous seq` (>= 1) after |
//! | ts_ms | zigzag varint: absolute for the first record, `ts_ms - previous ts_ms` after |
//! | flags | 1 byte: bit 0 = meta present, bit 1 = emb present, bit 2 = tokens, bit 3 = name, bit 4 = tool_call_id, bit 5 = tool_calls; other bits 0 |
//! | role | varint length + UTF-8 bytes |
//! | content | varint length + bytes (binary) |
//! | meta | if flag bit 0: varint length + UTF-8 bytes (compact JSON object text) |
//! | emb | if flag bit 1: varint element count + count * f32 little-endian |
//! | tokens | if flag bit 2: varint, the content's token count; absent: the `estimate` count, `ceil(content bytes / 4)` |
//! | name | if flag bit 3: varint length + UTF-8 bytes |
//! | tool_call_id | if flag bit 4: varint length + UTF-8 bytes |
//! | tool_calls | if flag bit 5: varint length + UTF-8 bytes (compact JSON array text) |
//!
//! Bits 2 to 5 came with tool fields and exact token counts; a turn without them (an
//! `estimate` count, no tool fields) is written exactly as before, so older files read the
//! same and older releases read such turns.
//!
//! ## Recovery
//!
//! [`scan`] validates the header (a bad header is an error for the whole
//! file), then walks the segment headers, checking each header CRC, the
//! payload CRC and the sequence ordering, without decoding payloads. The
//! first segment that is incomplete or fails a check ends the valid prefix:
//! `valid_len` is its offset and `torn_tail` is set. If a later intact
//! segment exists after the damage (a corrupt middle segment rather than a
//! torn append), its offset is reported in `resync_offset` so the writer can
//! refuse to truncate away good data.

use super::huffman;
use super::segcodec::{self, Dict, CODEC_HUFFMAN, CODEC_ZSTD};
use super::ArchiveError;
use crate::conv::message::Message;
use crate::varint::{get as get_varint, put as put_varint, unzigzag, zigzag};

/// File magic.
pub const FILE_MAGIC: &[u8; 4] = b"CCAR";
/// Segment magic.
pub const SEGMENT_MAGIC: &[u8; 4] = b"SEG1";
/// Magic of segments with a codec byte and a dictionary id.
pub const SEGMENT2_MAGIC: &[u8; 4] = b"SEG2";
/// Size of a `SEG2` segment header.
pub const SEGMENT2_HEADER_LEN: usize = 52;
/// The format version written by this code.
pub const FORMAT_VERSION: u16 = 1;
/// Size of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 40;
const FIXED_HEADER_LEN: usize = 20;

/// The decoded file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    pub version: u16,
    pub flags: u16,
    pub session_id: i64,
    pub key: Vec<u8>,
}

/// One intact segment found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Index of the segment in the file (0-based), for error messages.
    pub index: usize,
    /// Byte offset of the segment header in the file.
    pub offset: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u32,
    pub raw_len: u32,
    pub comp_len: u32,
    pub payload_crc: u32,
    /// Length of this segment's header (`SEG1` 40, `SEG2` 52).
    pub header_len: usize,
    /// Payload codec ([`segcodec::CODEC_HUFFMAN`] for every `SEG1`).
    pub codec: u8,
    /// Dictionary the payload needs, 0 if none.
    pub dict_id: u64,
}

impl SegmentInfo {
    /// Offset just past the segment's payload.
    pub fn end(&self) -> usize {
        self.offset + self.header_len + self.comp_len as usize
    }
}

/// Result of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveScan {
    pub header: ArchiveHeader,
    /// Length of the file header in bytes (offset of the first segment).
    pub header_len: usize,
    /// Intact segments, in file order.
    pub segments: Vec<SegmentInfo>,
    /// Length of the valid prefix: header plus all intact segments.
    pub valid_len: usize,
    /// True if bytes after `valid_len` exist but do not form an intact
    /// segment (torn append, garbage, or corruption).
    pub torn_tail: bool,
    /// Why the tail was rejected, when `torn_tail`.
    pub tail_reason: Option<String>,
    /// Offset of an intact segment found after the damage, if any: the
    /// damage is then not just a torn last append.
    pub resync_offset: Option<usize>,
}

impl ArchiveScan {
    /// Total number of turns in the intact segments.
    pub fn turn_count(&self) -> u64 {
        self.segments.iter().map(|s| s.count as u64).sum()
    }

    /// Last sequence number stored, if any segment.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.last().map(|s| s.last_seq)
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Encodes the file header for `key`.
pub fn encode_header(key: &[u8], session_id: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + key.len() + 4);
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads and validates the file header; returns it and its length.
pub fn read_header(bytes: &[u8]) -> Result<(ArchiveHeader, usize), ArchiveError> {
    if bytes.len() < 4 {
        return Err(ArchiveError::Truncated {
            what: "file header",
        });
    }
    if &bytes[..4] != FILE_MAGIC {
        return Err(ArchiveError::BadMagic { expected: "CCAR" });
    }
    if bytes.len() < FIXED_HEADER_LEN {
        return Err(ArchiveError::Truncated {
            what: "file header",
        });
    }
    let key_len = u32_at(bytes, 16) as usize;
    let crc_off = FIXED_HEADER_LEN
        .checked_add(key_len)
        .ok_or(ArchiveError::Truncated {
            what: "file header",
        })?;
    if bytes.len() < crc_off + 4 {
        return Err(ArchiveError::Truncated {
            what: "file header",
        });
    }
    if crc32fast::hash(&bytes[..crc_off]) != u32_at(bytes, crc_off) {
        return Err(ArchiveError::ChecksumMismatch {
            what: "file header",
            segment: None,
        });
    }
    let version = u16_at(bytes, 4);
    if version != FORMAT_VERSION {
        return Err(ArchiveError::UnsupportedVersion(version));
    }
    let flags = u16_at(bytes, 6);
    if flags != 0 {
        return Err(ArchiveError::Corrupt {
            segment: None,
            detail: format!("unknown header flags {flags:#06x}"),
        });
    }
    let header = ArchiveHeader {
        version,
        flags,
        session_id: u64_at(bytes, 8) as i64,
        key: bytes[FIXED_HEADER_LEN..crc_off].to_vec(),
    };
    Ok((header, crc_off + 4))
}

/// Serializes turns into the raw payload format (see module docs).
pub fn serialize_turns(turns: &[Message]) -> Result<Vec<u8>, ArchiveError> {
    let first = turns
        .first()
        .ok_or_else(|| ArchiveError::InvalidInput("segment with no turns".into()))?;
    let size: usize = turns
        .iter()
        .map(|m| {
            32 + m.role.len()
                + m.content.len()
                + m.meta.as_ref().map_or(0, |s| s.len() + 10)
                + m.emb.as_ref().map_or(0, |e| e.len() * 4 + 10)
                + [&m.name, &m.tool_call_id, &m.tool_calls]
                    .iter()
                    .map(|t| t.as_ref().map_or(0, |t| t.len() + 10))
                    .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    let mut prev_seq = first.seq;
    let mut prev_ts = 0i64;
    for (i, m) in turns.iter().enumerate() {
        if i > 0 && m.seq <= prev_seq {
            return Err(ArchiveError::InvalidInput(format!(
                "turn seqs not ascending: {} after {}",
                m.seq, prev_seq
            )));
        }
        put_varint(&mut out, m.seq - prev_seq);
        put_varint(&mut out, zigzag(m.ts_ms.wrapping_sub(prev_ts)));
        prev_seq = m.seq;
        prev_ts = m.ts_ms;
        let counted = m.tokens != crate::conv::tokens::estimate(m.content.len());
        let flags = (m.meta.is_some() as u8)
            | ((m.emb.is_some() as u8) << 1)
            | ((counted as u8) << 2)
            | ((m.name.is_some() as u8) << 3)
            | ((m.tool_call_id.is_some() as u8) << 4)
            | ((m.tool_calls.is_some() as u8) << 5);
        out.push(flags);
        put_varint(&mut out, m.role.len() as u64);
        out.extend_from_slice(m.role.as_bytes());
        put_varint(&mut out, m.content.len() as u64);
        out.extend_from_slice(&m.content);
        if let Some(meta) = &m.meta {
            put_varint(&mut out, meta.len() as u64);
            out.extend_from_slice(meta.as_bytes());
        }
        if let Some(emb) = &m.emb {
            put_varint(&mut out, emb.len() as u64);
            for f in emb {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        if counted {
            put_varint(&mut out, u64::from(m.tokens));
        }
        for text in [&m.name, &m.tool_call_id, &m.tool_calls]
            .into_iter()
            .flatten()
        {
            put_varint(&mut out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
    }
    Ok(out)
}

/// Parses a raw payload holding exactly `count` turns starting at
/// `first_seq`. Every length is checked against the remaining bytes.
pub fn parse_turns(
    raw: &[u8],
    first_seq: u64,
    count: u32,
    segment: Option<usize>,
) -> Result<Vec<Message>, ArchiveError> {
    let corrupt = |detail: &str| ArchiveError::Corrupt {
        segment,
        detail: format!("bad turn record: {detail}"),
    };
    // Each record is at least 5 bytes: bound the allocation by the input.
    let mut out = Vec::with_capacity((count as usize).min(raw.len() / 5 + 1));
    let mut pos = 0usize;
    let mut seq = first_seq;
    let mut ts = 0i64;
    let take = |pos: &mut usize, n: u64| -> Result<&[u8], ArchiveError> {
        let n = usize::try_from(n).map_err(|_| corrupt("length"))?;
        let end = pos.checked_add(n).ok_or_else(|| corrupt("length"))?;
        let s = raw
            .get(*pos..end)
            .ok_or_else(|| corrupt("length past end"))?;
        *pos = end;
        Ok(s)
    };
    for i in 0..count {
        let dseq = get_varint(raw, &mut pos).ok_or_else(|| corrupt("seq"))?;
        if (i == 0) != (dseq == 0) {
            return Err(corrupt("seq not ascending from first_seq"));
        }
        seq = seq
            .checked_add(dseq)
            .ok_or_else(|| corrupt("seq overflow"))?;
        let dts = get_varint(raw, &mut pos).ok_or_else(|| corrupt("timestamp"))?;
        ts = ts.wrapping_add(unzigzag(dts));
        let flags = *raw.get(pos).ok_or_else(|| corrupt("flags"))?;
        pos += 1;
        if flags & !0x3f != 0 {
            return Err(corrupt("unknown flags"));
        }
        let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt("role length"))?;
        let role = String::from_utf8(take(&mut pos, n)?.to_vec())
            .map_err(|_| corrupt("role not UTF-8"))?;
        let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt("content length"))?;
        let content = take(&mut pos, n)?.to_vec();
        let meta = if flags & 1 != 0 {
            let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt("meta length"))?;
            Some(
                String::from_utf8(take(&mut pos, n)?.to_vec())
                    .map_err(|_| corrupt("meta not UTF-8"))?,
            )
        } else {
            None
        };
        let emb = if flags & 2 != 0 {
            let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt("emb length"))?;
            let bytes = take(
                &mut pos,
                n.checked_mul(4).ok_or_else(|| corrupt("emb length"))?,
            )?;
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        } else {
            None
        };
        let tokens = if flags & 4 != 0 {
            let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt("tokens"))?;
            u32::try_from(n).map_err(|_| corrupt("tokens"))?
        } else {
            crate::conv::tokens::estimate(content.len())
        };
        let mut text = |bit: u8, what: &str| -> Result<Option<String>, ArchiveError> {
            if flags & bit == 0 {
                return Ok(None);
            }
            let n = get_varint(raw, &mut pos).ok_or_else(|| corrupt(what))?;
            String::from_utf8(take(&mut pos, n)?.to_vec())
                .map(Some)
                .map_err(|_| corrupt(what))
        };
        let name = text(8, "name")?;
        let tool_call_id = text(16, "tool_call_id")?;
        let tool_calls = text(32, "tool_calls")?;
        out.push(Message {
            seq,
            ts_ms: ts,
            role,
            content,
            meta,
            emb,
            tokens,
            name,
            tool_call_id,
            tool_calls,
        });
    }
    if pos != raw.len() {
        return Err(corrupt("trailing bytes after last turn"));
    }
    Ok(out)
}

/// Encodes one segment (header + Huffman payload). `turns` must be non-empty
/// with strictly ascending `seq`, and serialize to < 4 GiB.
pub fn try_encode_segment(turns: &[Message]) -> Result<Vec<u8>, ArchiveError> {
    let raw = serialize_turns(turns)?;
    seg1_from_raw(turns, &raw)
}

fn seg1_from_raw(turns: &[Message], raw: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let payload = huffman::encode(raw);
    let too_big = |what: &str| ArchiveError::InvalidInput(format!("segment {what} exceeds 4 GiB"));
    let raw_len = u32::try_from(raw.len()).map_err(|_| too_big("raw length"))?;
    let comp_len = u32::try_from(payload.len()).map_err(|_| too_big("compressed length"))?;
    let count = u32::try_from(turns.len()).map_err(|_| too_big("turn count"))?;
    let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN + payload.len());
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&turns[0].seq.to_le_bytes());
    out.extend_from_slice(&turns[turns.len() - 1].seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&comp_len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let hcrc = crc32fast::hash(&out);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Encodes one segment with `codec`: Huffman as a `SEG1` (what every release reads), zstd
/// as a `SEG2` naming `dict` when given. Returns the segment and the serialized size.
pub fn encode_segment_with(
    turns: &[Message],
    codec: segcodec::Codec,
    dict: Option<&Dict>,
) -> Result<(Vec<u8>, usize), ArchiveError> {
    let raw = serialize_turns(turns)?;
    let seg = match codec {
        segcodec::Codec::Huffman => seg1_from_raw(turns, &raw)?,
        segcodec::Codec::Zstd => {
            let payload = segcodec::zstd_compress(&raw, dict);
            let count = u32::try_from(turns.len()).map_err(|_| {
                ArchiveError::InvalidInput("segment turn count exceeds 4 GiB".into())
            })?;
            seg2(
                (turns[0].seq, turns[turns.len() - 1].seq, count),
                raw.len(),
                &payload,
                CODEC_ZSTD,
                dict.map_or(0, |d| d.id),
            )?
        }
    };
    Ok((seg, raw.len()))
}

/// A `SEG2` segment from its parts: (first_seq, last_seq, count), raw length, payload.
fn seg2(
    (first, last, count): (u64, u64, u32),
    raw_len: usize,
    payload: &[u8],
    codec: u8,
    dict_id: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let too_big = |what: &str| ArchiveError::InvalidInput(format!("segment {what} exceeds 4 GiB"));
    let raw_len = u32::try_from(raw_len).map_err(|_| too_big("raw length"))?;
    let comp_len = u32::try_from(payload.len()).map_err(|_| too_big("compressed length"))?;
    let mut out = Vec::with_capacity(SEGMENT2_HEADER_LEN + payload.len());
    out.extend_from_slice(SEGMENT2_MAGIC);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&comp_len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&[codec, 0, 0, 0]);
    out.extend_from_slice(&dict_id.to_le_bytes());
    let hcrc = crc32fast::hash(&out);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Encodes one segment.
///
/// # Panics
/// If `turns` is empty, not strictly ascending by `seq`, or larger than
/// 4 GiB serialized; use [`try_encode_segment`] to get an error instead.
pub fn encode_segment(turns: &[Message]) -> Vec<u8> {
    match try_encode_segment(turns) {
        Ok(v) => v,
        Err(e) => panic!("encode_segment: {e}"),
    }
}

/// Checks the segment at `off`; `min_seq` is the smallest allowed first_seq.
/// The header CRC32 stored at `at`, over the `at` bytes before it (named in the error).
fn check_header_crc(rest: &[u8], at: usize) -> Result<(), String> {
    let (stored, computed) = (u32_at(rest, at), crc32fast::hash(&rest[..at]));
    if stored != computed {
        return Err(format!(
            "segment header CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(())
}

fn check_segment(
    bytes: &[u8],
    off: usize,
    index: usize,
    min_seq: Option<u64>,
) -> Result<SegmentInfo, String> {
    let rest = &bytes[off..];
    if rest.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "partial segment header ({} of {SEGMENT_HEADER_LEN} bytes)",
            rest.len()
        ));
    }
    let (header_len, codec, dict_id) = if &rest[..4] == SEGMENT_MAGIC {
        check_header_crc(rest, 36)?;
        (SEGMENT_HEADER_LEN, CODEC_HUFFMAN, 0)
    } else if &rest[..4] == SEGMENT2_MAGIC {
        if rest.len() < SEGMENT2_HEADER_LEN {
            return Err(format!(
                "partial segment header ({} of {SEGMENT2_HEADER_LEN} bytes)",
                rest.len()
            ));
        }
        check_header_crc(rest, 48)?;
        let (codec, dict_id) = (rest[36], u64_at(rest, 40));
        if rest[37..40] != [0, 0, 0] {
            return Err("segment header has reserved bits set".into());
        }
        match codec {
            CODEC_HUFFMAN if dict_id == 0 => {}
            CODEC_ZSTD => {}
            CODEC_HUFFMAN => return Err("Huffman segment names a dictionary".into()),
            c => return Err(format!("unknown segment codec {c}")),
        }
        (SEGMENT2_HEADER_LEN, codec, dict_id)
    } else {
        return Err("bad segment magic".into());
    };
    let info = SegmentInfo {
        index,
        offset: off,
        first_seq: u64_at(rest, 4),
        last_seq: u64_at(rest, 12),
        count: u32_at(rest, 20),
        raw_len: u32_at(rest, 24),
        comp_len: u32_at(rest, 28),
        payload_crc: u32_at(rest, 32),
        header_len,
        codec,
        dict_id,
    };
    if info.count == 0
        || info.last_seq < info.first_seq
        || (info.count as u64 - 1) > info.last_seq - info.first_seq
    {
        return Err("segment header has inconsistent seq range/count".into());
    }
    if let Some(min) = min_seq {
        if info.first_seq < min {
            return Err(format!(
                "segment seqs not ascending (first_seq {} < {min})",
                info.first_seq
            ));
        }
    }
    let avail = rest.len() - header_len;
    if (info.comp_len as usize) > avail {
        return Err(format!(
            "partial segment payload ({avail} of {} bytes)",
            info.comp_len
        ));
    }
    let payload = &rest[header_len..header_len + info.comp_len as usize];
    let computed = crc32fast::hash(payload);
    if computed != info.payload_crc {
        return Err(format!(
            "segment payload CRC32 mismatch (stored {:#010x}, computed {computed:#010x})",
            info.payload_crc
        ));
    }
    Ok(info)
}

/// Validates the header and walks the segments (CRC checks only, no
/// decoding). Only a bad file header is an error; damage after it ends the
/// valid prefix (see module docs).
pub fn scan(bytes: &[u8]) -> Result<ArchiveScan, ArchiveError> {
    let (header, header_len) = read_header(bytes)?;
    let mut segments: Vec<SegmentInfo> = Vec::new();
    let mut off = header_len;
    let mut tail_reason = None;
    while off < bytes.len() {
        let min_seq = segments.last().map(|s| s.last_seq.saturating_add(1));
        if segments.last().is_some_and(|s| s.last_seq == u64::MAX) {
            tail_reason = Some("data after a segment ending at seq u64::MAX".to_string());
            break;
        }
        match check_segment(bytes, off, segments.len(), min_seq) {
            Ok(info) => {
                off = info.end();
                segments.push(info);
            }
            Err(reason) => {
                tail_reason = Some(format!(
                    "segment {} at offset {off}: {reason}",
                    segments.len()
                ));
                break;
            }
        }
    }
    let torn_tail = tail_reason.is_some();
    let resync_offset = if torn_tail {
        find_resync(bytes, off, segments.len())
    } else {
        None
    };
    Ok(ArchiveScan {
        header,
        header_len,
        segments,
        valid_len: off,
        torn_tail,
        tail_reason,
        resync_offset,
    })
}

/// Looks for an intact segment after a damaged one at `bad_off`.
fn find_resync(bytes: &[u8], bad_off: usize, index: usize) -> Option<usize> {
    let mut from = bad_off + 1;
    while from < bytes.len() {
        // "SEG1" or "SEG2".
        let hit = memchr::memmem::find(&bytes[from..], b"SEG")? + from;
        if check_segment(bytes, hit, index, None).is_ok() {
            return Some(hit);
        }
        from = hit + 1;
    }
    None
}

/// Finds the dictionary of a segment by id; `Err` says why it is unavailable.
pub type DictLookup<'a> = &'a dyn Fn(u64) -> Result<std::sync::Arc<Dict>, String>;

/// A lookup for callers without dictionaries: every dictionary-coded segment is an error.
pub fn no_dicts(id: u64) -> Result<std::sync::Arc<Dict>, String> {
    Err(format!(
        "archive dictionary {id:016x} is not available here"
    ))
}

/// Decodes one segment found by [`scan`] (payload CRC re-checked). Segments compressed with
/// a dictionary need [`decode_segment_with`].
pub fn decode_segment(bytes: &[u8], seg: &SegmentInfo) -> Result<Vec<Message>, ArchiveError> {
    decode_segment_with(bytes, seg, &no_dicts)
}

/// The serialized turns of one segment (payload CRC re-checked, length checked).
pub fn decode_segment_raw(
    bytes: &[u8],
    seg: &SegmentInfo,
    dicts: DictLookup,
) -> Result<Vec<u8>, ArchiveError> {
    let idx = Some(seg.index);
    let start = seg.offset + seg.header_len;
    let payload =
        bytes
            .get(start..start + seg.comp_len as usize)
            .ok_or(ArchiveError::Truncated {
                what: "segment payload",
            })?;
    if crc32fast::hash(payload) != seg.payload_crc {
        return Err(ArchiveError::ChecksumMismatch {
            what: "segment payload",
            segment: idx,
        });
    }
    let raw = match seg.codec {
        CODEC_ZSTD => {
            let dict = match seg.dict_id {
                0 => None,
                id => Some(dicts(id).map_err(|detail| ArchiveError::Dictionary {
                    segment: idx,
                    detail,
                })?),
            };
            segcodec::zstd_decompress(payload, dict.as_deref(), seg.raw_len as usize).map_err(
                |detail| ArchiveError::Corrupt {
                    segment: idx,
                    detail,
                },
            )?
        }
        _ => huffman::decode(payload).map_err(|source| ArchiveError::Huffman {
            segment: idx,
            source,
        })?,
    };
    if raw.len() != seg.raw_len as usize {
        return Err(ArchiveError::Corrupt {
            segment: idx,
            detail: format!("decoded {} bytes, header says {}", raw.len(), seg.raw_len),
        });
    }
    Ok(raw)
}

/// Decodes one segment, finding its dictionary (if any) with `dicts`.
pub fn decode_segment_with(
    bytes: &[u8],
    seg: &SegmentInfo,
    dicts: DictLookup,
) -> Result<Vec<Message>, ArchiveError> {
    let idx = Some(seg.index);
    let raw = decode_segment_raw(bytes, seg, dicts)?;
    let turns = parse_turns(&raw, seg.first_seq, seg.count, idx)?;
    if turns.last().map(|m| m.seq) != Some(seg.last_seq) {
        return Err(ArchiveError::Corrupt {
            segment: idx,
            detail: "last turn seq differs from segment header".into(),
        });
    }
    Ok(turns)
}

/// Checks an archive that arrived with a session (RDB, RESTORE, full sync) before it goes on
/// disk: a file of this session (same id) whose intact segments hold every archived turn up
/// to `archived_last`, and whose segments in `archived_first..=archived_last` decode to valid
/// turns. Turns past `archived_last` (written, not yet acknowledged) may be torn.
/// Returns the content tokens of the turns in that range (the session's archived tokens).
pub fn check_session_archive(
    bytes: &[u8],
    session_id: i64,
    archived_first: u64,
    archived_last: u64,
) -> Result<u64, ArchiveError> {
    let sc = scan(bytes)?;
    if sc.header.session_id != session_id {
        return Err(ArchiveError::Corrupt {
            segment: None,
            detail: format!(
                "file of session id {}, not {session_id}",
                sc.header.session_id
            ),
        });
    }
    let have = sc.last_seq().unwrap_or(0);
    if have < archived_last {
        return Err(ArchiveError::Corrupt {
            segment: None,
            detail: match &sc.tail_reason {
                Some(why) => format!("turns up to {archived_last} needed, {why}"),
                None => format!("turns up to {archived_last} needed, file ends at {have}"),
            },
        });
    }
    let mut tokens = 0u64;
    for seg in sc
        .segments
        .iter()
        .filter(|g| g.last_seq >= archived_first && g.first_seq <= archived_last)
    {
        tokens += decode_session_segment(bytes, seg)?
            .iter()
            .filter(|m| (archived_first..=archived_last).contains(&m.seq))
            .map(|m| u64::from(m.tokens))
            .sum::<u64>();
    }
    Ok(tokens)
}

/// Decodes a segment for use in a session: the layout ([`decode_segment`]) and the rules of
/// every stored turn ([`Message::validate_stored`]), since the turns are shown as JSON and
/// loaded into sessions. A file is only ever written from valid turns.
pub fn decode_session_segment(
    bytes: &[u8],
    seg: &SegmentInfo,
) -> Result<Vec<Message>, ArchiveError> {
    decode_session_segment_with(bytes, seg, &no_dicts)
}

/// [`decode_session_segment`] for files that may hold dictionary-coded segments.
pub fn decode_session_segment_with(
    bytes: &[u8],
    seg: &SegmentInfo,
    dicts: DictLookup,
) -> Result<Vec<Message>, ArchiveError> {
    let turns = decode_segment_with(bytes, seg, dicts)?;
    for m in &turns {
        m.validate_stored().map_err(|e| ArchiveError::Corrupt {
            segment: Some(seg.index),
            detail: format!("turn {}: {e}", m.seq),
        })?;
    }
    Ok(turns)
}

/// Scans and decodes every intact segment.
pub fn read_all(bytes: &[u8]) -> Result<(ArchiveHeader, Vec<Message>, ArchiveScan), ArchiveError> {
    read_all_with(bytes, &no_dicts)
}

/// [`read_all`] for files that may hold dictionary-coded segments.
pub fn read_all_with(
    bytes: &[u8],
    dicts: DictLookup,
) -> Result<(ArchiveHeader, Vec<Message>, ArchiveScan), ArchiveError> {
    let sc = scan(bytes)?;
    // Counts come from the file: bound the reservation by its size (a turn is >= 5 bytes raw,
    // and Huffman coding shrinks it at most 8 times).
    let mut turns =
        Vec::with_capacity((sc.turn_count() as usize).min(bytes.len().saturating_mul(8) / 5 + 1));
    for seg in &sc.segments {
        turns.extend(decode_segment_with(bytes, seg, dicts)?);
    }
    Ok((sc.header.clone(), turns, sc))
}

/// The file without dictionaries, for whatever leaves this node (RDB, DUMP, MIGRATE, full
/// sync): every dictionary-coded segment is re-encoded as zstd without one, the others are
/// kept byte for byte, and a torn tail is left out. `None` when no segment uses a dictionary
/// (the file can travel as it is).
pub fn without_dicts(bytes: &[u8], dicts: DictLookup) -> Result<Option<Vec<u8>>, ArchiveError> {
    let sc = scan(bytes)?;
    if sc.segments.iter().all(|s| s.dict_id == 0) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(sc.valid_len);
    out.extend_from_slice(&bytes[..sc.header_len]);
    for seg in &sc.segments {
        if seg.dict_id == 0 {
            out.extend_from_slice(&bytes[seg.offset..seg.end()]);
            continue;
        }
        let raw = decode_segment_raw(bytes, seg, dicts)?;
        let payload = segcodec::zstd_compress(&raw, None);
        out.extend(seg2(
            (seg.first_seq, seg.last_seq, seg.count),
            raw.len(),
            &payload,
            CODEC_ZSTD,
            0,
        )?);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, content: &[u8]) -> Message {
        Message {
            seq,
            ts_ms: 1_700_000_000_000 + seq as i64 * 1234,
            role: if seq.is_multiple_of(2) {
                "user"
            } else {
                "assistant"
            }
            .into(),
            content: content.to_vec(),
            meta: if seq.is_multiple_of(3) {
                Some(format!("{{\"n\":{seq},\"model\":\"gpt\"}}"))
            } else {
                None
            },
            emb: if seq.is_multiple_of(4) {
                Some(vec![0.5, -1.25, f32::MIN_POSITIVE, seq as f32])
            } else {
                None
            },
            ..Default::default()
        }
    }

    fn batch(from: u64, n: u64) -> Vec<Message> {
        (from..from + n)
            .map(|s| {
                msg(
                    s,
                    format!("turn {s}: héllo wörld 🙂 — some text to compress").as_bytes(),
                )
            })
            .collect()
    }

    fn file_of(batches: &[Vec<Message>]) -> Vec<u8> {
        let mut f = encode_header(b"conv:\x00user/../42", 1_700_000_000_123);
        for b in batches {
            f.extend(encode_segment(b));
        }
        f
    }

    #[test]
    fn header_roundtrip() {
        for key in [&b""[..], b"k", b"\xff\x00/..", &[7u8; 5000]] {
            let h = encode_header(key, -5);
            let (hdr, len) = read_header(&h).unwrap();
            assert_eq!(len, h.len());
            assert_eq!(hdr.key, key);
            assert_eq!(hdr.session_id, -5);
            assert_eq!(hdr.version, 1);
        }
        assert!(matches!(
            read_header(b"XXXX"),
            Err(ArchiveError::BadMagic { .. })
        ));
    }

    #[test]
    fn roundtrip_several_segments() {
        let batches = vec![batch(1, 5), batch(6, 1), batch(10, 40)];
        let f = file_of(&batches);
        let (hdr, turns, sc) = read_all(&f).unwrap();
        assert_eq!(hdr.key, b"conv:\x00user/../42");
        assert_eq!(hdr.session_id, 1_700_000_000_123);
        assert!(!sc.torn_tail);
        assert_eq!(sc.valid_len, f.len());
        assert_eq!(sc.segments.len(), 3);
        assert_eq!(sc.turn_count(), 46);
        assert_eq!(sc.last_seq(), Some(49));
        assert_eq!(
            (
                sc.segments[2].first_seq,
                sc.segments[2].last_seq,
                sc.segments[2].count
            ),
            (10, 49, 40)
        );
        let all: Vec<Message> = batches.concat();
        assert_eq!(turns, all);
        // Appending = concat of another segment.
        let mut f2 = f.clone();
        f2.extend(encode_segment(&batch(100, 2)));
        assert_eq!(read_all(&f2).unwrap().1.len(), 48);
        // Header only.
        let h = encode_header(b"k", 0);
        let (_, t, sc) = read_all(&h).unwrap();
        assert!(t.is_empty() && !sc.torn_tail && sc.valid_len == h.len());
    }

    #[test]
    fn unicode_binary_empty_fields_and_big_content() {
        let mut big = Vec::with_capacity(1 << 20);
        let mut x = 1u32;
        while big.len() < 1 << 20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.push(b"abcdefgh \n{}\":"[(x >> 16) as usize % 14]);
        }
        let turns = vec![
            Message {
                seq: 0,
                ts_ms: i64::MIN,
                role: String::new(),
                content: vec![],
                meta: Some(String::new()),
                emb: Some(vec![]),
                ..Default::default()
            },
            Message {
                seq: 1,
                ts_ms: i64::MAX,
                role: "ツール".into(),
                content: vec![0, 255, 0xc3, 0x28, 0],
                meta: Some("{\"ü\":\"🙂\"}".into()),
                emb: Some(vec![f32::NAN, f32::INFINITY, -0.0]),
                ..Default::default()
            },
            Message {
                seq: u64::MAX - 1,
                ts_ms: -1,
                role: "user".into(),
                content: big,
                meta: None,
                emb: None,
                ..Default::default()
            },
        ];
        let mut f = encode_header(b"", 0);
        f.extend(encode_segment(&turns));
        let (_, back, _) = read_all(&f).unwrap();
        assert_eq!(back.len(), 3);
        // NaN != NaN: compare emb bit patterns.
        let bits = |m: &Message| {
            m.emb
                .as_ref()
                .map(|e| e.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
        };
        for (a, b) in back.iter().zip(&turns) {
            assert_eq!(
                (a.seq, a.ts_ms, &a.role, &a.content, &a.meta),
                (b.seq, b.ts_ms, &b.role, &b.content, &b.meta)
            );
            assert_eq!(bits(a), bits(b));
        }
        // The 1 MiB segment compresses.
        assert!(f.len() < (1 << 20) * 6 / 10);
    }

    #[test]
    fn bad_input_to_encoder() {
        assert!(try_encode_segment(&[]).is_err());
        assert!(try_encode_segment(&[msg(5, b"a"), msg(5, b"b")]).is_err());
        assert!(try_encode_segment(&[msg(5, b"a"), msg(4, b"b")]).is_err());
    }

    #[test]
    fn truncation_at_every_offset() {
        let batches = vec![batch(1, 3), batch(4, 7), batch(20, 2)];
        let f = file_of(&batches);
        let full = scan(&f).unwrap();
        let hlen = full.header_len;
        let ends: Vec<usize> = full.segments.iter().map(|s| s.end()).collect();
        for cut in 0..=f.len() {
            let r = scan(&f[..cut]);
            if cut < hlen {
                assert!(r.is_err(), "cut {cut}");
                continue;
            }
            let sc = r.unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(sc.segments.len(), whole, "cut {cut}");
            let expect_valid = if whole == 0 { hlen } else { ends[whole - 1] };
            assert_eq!(sc.valid_len, expect_valid, "cut {cut}");
            assert_eq!(sc.torn_tail, cut != expect_valid, "cut {cut}");
            assert_eq!(sc.resync_offset, None);
            // The valid prefix decodes.
            let (_, turns, _) = read_all(&f[..cut]).unwrap();
            assert_eq!(turns.len() as u64, sc.turn_count());
        }
    }

    #[test]
    fn bit_flips_detected() {
        let batches = vec![batch(1, 3), batch(4, 7), batch(20, 2)];
        let f = file_of(&batches);
        let full = scan(&f).unwrap();
        for i in 0..f.len() {
            for bit in [0u8, 3, 7] {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                match scan(&g) {
                    Err(_) => assert!(i < full.header_len, "byte {i}"),
                    Ok(sc) => {
                        assert!(i >= full.header_len);
                        // The damaged segment and everything after is dropped.
                        let hit = full
                            .segments
                            .iter()
                            .position(|s| i >= s.offset && i < s.end())
                            .unwrap();
                        assert_eq!(sc.segments.len(), hit, "byte {i}");
                        assert!(sc.torn_tail);
                        assert_eq!(sc.valid_len, full.segments[hit].offset);
                        // Middle damage: the next intact segment is found.
                        if hit + 1 < full.segments.len() {
                            assert_eq!(
                                sc.resync_offset,
                                Some(full.segments[hit + 1].offset),
                                "byte {i}"
                            );
                        }
                        read_all(&g).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn decode_segment_rechecks() {
        let f = file_of(&[batch(1, 3)]);
        let sc = scan(&f).unwrap();
        let mut g = f.clone();
        let last = g.len() - 1;
        g[last] ^= 1;
        let e = decode_segment(&g, &sc.segments[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt archive: checksum mismatch (segment payload) in segment 0"
        );
        assert!(decode_segment(&f[..f.len() - 1], &sc.segments[0]).is_err());
    }

    #[test]
    fn garbage_after_valid_data_and_non_ascending_segments() {
        let mut f = file_of(&[batch(1, 3)]);
        let good = f.len();
        f.extend_from_slice(b"SEG1 this is garbage that is long enough to be a header.....");
        let sc = scan(&f).unwrap();
        assert_eq!(sc.valid_len, good);
        assert!(sc.torn_tail);
        assert!(sc.tail_reason.unwrap().contains("header CRC32 mismatch"));
        // A segment whose seqs go backwards is not accepted.
        let mut f = file_of(&[batch(10, 3)]);
        let good = f.len();
        f.extend(encode_segment(&batch(5, 2)));
        let sc = scan(&f).unwrap();
        assert_eq!((sc.valid_len, sc.torn_tail), (good, true));
    }

    #[test]
    fn an_archive_from_an_rdb_must_hold_the_sessions_archived_turns() {
        let f = file_of(&[batch(1, 3), batch(4, 7), batch(20, 2)]);
        let id = 1_700_000_000_123;
        // Turns are checked against the rules of stored turns; the batches hold valid ones.
        assert!(check_session_archive(&f, id, 1, 21).is_ok());
        assert!(check_session_archive(&f, id, 4, 10).is_ok());
        let e = check_session_archive(&f, id + 1, 1, 21).unwrap_err();
        assert!(e
            .to_string()
            .contains("file of session id 1700000000123, not 1700000000124"));
        let e = check_session_archive(&f, id, 1, 22).unwrap_err();
        assert!(e
            .to_string()
            .contains("turns up to 22 needed, file ends at 21"));
        // Damage before the last archived turn names the segment, its offset and the CRC.
        let sc = scan(&f).unwrap();
        let mut g = f.clone();
        g[sc.segments[1].offset + 50] ^= 1;
        let e = check_session_archive(&g, id, 1, 21)
            .unwrap_err()
            .to_string();
        let want = format!(
            "turns up to 21 needed, segment 1 at offset {}: segment payload CRC32 mismatch",
            sc.segments[1].offset
        );
        assert!(e.contains(&want), "{e}");
        // A torn tail after the archived turns is fine (written, never acknowledged).
        assert!(check_session_archive(&f[..f.len() - 3], id, 1, 10).is_ok());
        assert!(check_session_archive(b"CCAR", id, 1, 1).is_err());
    }

    #[test]
    fn session_reads_refuse_turns_that_break_the_rules() {
        let mut bad = batch(1, 2);
        bad[1].role = String::new();
        let f = {
            let mut f = encode_header(b"k", 9);
            f.extend(encode_segment(&bad));
            f
        };
        let sc = scan(&f).unwrap();
        assert_eq!(decode_segment(&f, &sc.segments[0]).unwrap().len(), 2);
        let e = decode_session_segment(&f, &sc.segments[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt archive: turn 2: role must be non-empty UTF-8 of at most 256 bytes in segment 0"
        );
        assert!(check_session_archive(&f, 9, 1, 2).is_err());
    }

    use proptest::prelude::*;

    fn file_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<Message>)> {
        (
            crate::conv::message::strategies::turns(0, 30),
            proptest::collection::vec(1usize..8, 1..6),
            proptest::collection::vec(any::<u8>(), 0..20),
            any::<i64>(),
        )
            .prop_map(|(turns, sizes, key, id)| {
                let mut f = encode_header(&key, id);
                let mut rest = &turns[..];
                for n in sizes.into_iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (seg, more) = rest.split_at(n.min(rest.len()));
                    f.extend(encode_segment(seg));
                    rest = more;
                }
                (f, turns)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(200)))]

        #[test]
        fn prop_files_round_trip((f, turns) in file_strategy()) {
            let (_, back, sc) = read_all(&f).unwrap();
            prop_assert!(!sc.torn_tail);
            prop_assert_eq!(sc.valid_len, f.len());
            prop_assert_eq!(back, turns);
        }

        #[test]
        fn prop_garbage_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..600), key_len in 0u32..40) {
            let _ = read_all(&data);
            // A well-formed header in front of garbage exercises the segment walk.
            if data.len() > 24 {
                let key = &data[..(key_len as usize).min(data.len() - 24)].to_vec();
                let mut f = encode_header(key, 1);
                f.extend_from_slice(b"SEG1");
                f.append(&mut data);
                let _ = read_all(&f);
                let _ = check_session_archive(&f, 1, 1, 5);
            }
        }

        /// Byte edits of a valid file never panic, whether the CRCs are left to catch them or
        /// recomputed so that the Huffman and turn decoders see the damage.
        #[test]
        fn prop_mutations_never_panic(
            (f, _) in file_strategy(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            fix_crcs in any::<bool>(),
            cut in any::<usize>(),
        ) {
            let sc = scan(&f).unwrap();
            let mut g = f.clone();
            for (at, byte) in edits {
                let i = at % g.len();
                g[i] = byte;
            }
            if fix_crcs {
                for seg in &sc.segments {
                    let p = seg.offset + SEGMENT_HEADER_LEN;
                    let crc = crc32fast::hash(&g[p..p + seg.comp_len as usize]);
                    g[seg.offset + 32..seg.offset + 36].copy_from_slice(&crc.to_le_bytes());
                    let hcrc = crc32fast::hash(&g[seg.offset..seg.offset + 36]);
                    g[seg.offset + 36..seg.offset + 40].copy_from_slice(&hcrc.to_le_bytes());
                }
            }
            for b in [&g[..], &g[..cut % (g.len() + 1)]] {
                let _ = read_all(b);
                let _ = check_session_archive(b, sc.header.session_id, 1, sc.last_seq().unwrap_or(0));
                if let Ok(sc2) = scan(b) {
                    for seg in &sc2.segments {
                        if let Ok(turns) = decode_session_segment(b, seg) {
                            for m in &turns {
                                prop_assert!(m.validate_stored().is_ok());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parse_turns_rejects_garbage() {
        let raw = serialize_turns(&batch(1, 4)).unwrap();
        assert_eq!(parse_turns(&raw, 1, 4, None).unwrap().len(), 4);
        assert!(parse_turns(&raw, 1, 5, None).is_err());
        assert!(parse_turns(&raw, 1, 3, None).is_err());
        let mut x = 0x9e37_79b9u32;
        for _ in 0..5000 {
            let mut r = raw.clone();
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let i = (x as usize >> 8) % r.len();
            r[i] = (x >> 3) as u8;
            let _ = parse_turns(&r, 1, 4, None);
            let _ = parse_turns(&r[..i], 1, u32::MAX, None);
        }
    }
}
