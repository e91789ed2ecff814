//! The payload codecs' byte layer (session and semcache payloads, the HNSW graph): length-
//! prefixed byte strings and a bounds-checked cursor over hostile input, on top of `varint`.

use crate::varint;

/// Why a read failed: the input ended early or held an overlong varint or length.
#[derive(Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

/// Appends `b` as a varint length, then its bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint::put(out, b.len() as u64);
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
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn varint(&mut self) -> Result<u64, WireError> {
        match varint::get(self.buf, &mut self.pos) {
            Some(v) => Ok(v),
            None if self.pos >= self.buf.len() => Err(WireError("truncated")),
            None => Err(WireError("varint too long")),
        }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() - self.pos < n {
            return Err(WireError("truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| WireError("length"))?)
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// Versions this far past ours read as "written by a newer module"; any other unknown first
/// byte means the bytes are not such a payload at all.
const PLAUSIBLE_NEWER_VERSIONS: u8 = 16;

/// The error for an unknown version byte of a `what` payload (session, semcache).
pub fn unknown_version(what: &str, version: u8, ours: u8) -> String {
    if version > ours && version - ours <= PLAUSIBLE_NEWER_VERSIONS {
        format!("encoding version {version} is newer than this module understands ({ours})")
    } else {
        format!("not a {what} payload (first byte {version} is no encoding version; this module reads 1 to {ours})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_refuses_short_input() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"abc");
        out.extend_from_slice(&(-5i64).to_le_bytes());
        let mut r = Reader::new(&out);
        assert_eq!(r.bytes(), Ok(&b"abc"[..]));
        assert_eq!(r.i64(), Ok(-5));
        assert!(r.at_end());
        assert_eq!(r.u8(), Err(WireError("truncated")));
        let mut r = Reader::new(&[5, b'a']);
        assert_eq!(r.bytes(), Err(WireError("truncated")));
    }
}
