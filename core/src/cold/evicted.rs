//! The record an evicted session leaves beside its archive file (`<archive>.evicted`): the
//! key, its database and the session's header (the session codec's encoding of its cold
//! stub), so that the session comes back, with its turns and sequence numbers, when the key
//! is used again, also after a restart. Decoded as hostile input: a damaged record is an
//! error, never a panic.
//!
//! Layout (little-endian): `CCEV`, version 1, db i32, key length u32, key, payload length
//! u32, payload, CRC32 of everything before it.

use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 4] = b"CCEV";
pub const VERSION: u8 = 1;
/// The file name suffix of a record, after the archive file's own name.
pub const SUFFIX: &str = ".evicted";
/// Longest key or payload a record holds (a session header is ~60 bytes; keys are at most
/// 512 MB in the server, but a record of a bigger key than this is refused as damaged).
const MAX_PART: usize = 64 << 20;

/// An evicted session: where it lived and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictedRecord {
    pub db: i32,
    pub key: Vec<u8>,
    /// `conv::codec::encode_session` of the session's cold stub.
    pub session: Vec<u8>,
}

/// The record's path for a session's archive file.
pub fn record_path(archive: &Path) -> PathBuf {
    let mut p = archive.as_os_str().to_owned();
    p.push(SUFFIX);
    PathBuf::from(p)
}

pub fn encode(r: &EvictedRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + r.key.len() + r.session.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&r.db.to_le_bytes());
    out.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.key);
    out.extend_from_slice(&(r.session.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.session);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<EvictedRecord, String> {
    if bytes.len() < 4 + 1 + 4 + 4 + 4 + 4 || &bytes[..4] != MAGIC {
        return Err("not an evicted-session record".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("evicted-session record: checksum mismatch".into());
    }
    if body[4] != VERSION {
        return Err(format!(
            "evicted-session record: unsupported version {}",
            body[4]
        ));
    }
    let mut c = Cursor { body, at: 5 };
    let db = i32::from_le_bytes(c.take(4)?.try_into().expect("4 bytes"));
    let key = c.part()?;
    let session = c.part()?;
    let at = c.at;
    if at != body.len() {
        return Err("evicted-session record: trailing bytes".into());
    }
    if db < 0 {
        return Err(format!("evicted-session record: database {db}"));
    }
    Ok(EvictedRecord { db, key, session })
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or_else(|| "evicted-session record: truncated".to_string())?;
        let part = &self.body[self.at..end];
        self.at = end;
        Ok(part)
    }

    /// A u32 length, then that many bytes.
    fn part(&mut self) -> Result<Vec<u8>, String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        if n > MAX_PART {
            return Err("evicted-session record: part too long".into());
        }
        self.take(n).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EvictedRecord {
        EvictedRecord {
            db: 3,
            key: b"chat:\x00:42".to_vec(),
            session: vec![1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn round_trip() {
        let r = record();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        assert_eq!(
            record_path(Path::new("a/0/k-00.huff")),
            PathBuf::from("a/0/k-00.huff.evicted")
        );
    }

    #[test]
    fn every_truncation_and_flip_is_an_error() {
        let bytes = encode(&record());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flipped byte {i}");
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_hostile_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&b);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&b);
            let _ = decode(&framed);
        }
    }
}
