//! Canonical, length-limited Huffman codec over bytes (our format, `CCH1`),
//! (the legacy lix `HCv1` decoder lives in `hcv1.rs`).
//!
//! # `CCH1` blob layout (all integers little-endian)
//!
//! | bytes | field |
//! |-------|-------|
//! | 4     | magic `"CCH1"` |
//! | 1     | mode: 0 = empty, 1 = stored (raw bytes follow), 2 = Huffman, 1 stream, 3 = Huffman, 4 streams |
//! | 1..10 | original length, LEB128 varint |
//! | 4     | CRC32 (IEEE) of the original data (0 for mode 0) |
//!
//! Mode 0 ends there. Mode 1 is followed by exactly `original length` raw
//! bytes. Modes 2 and 3 continue with:
//!
//! * the code-length table: a nibble stream (low nibble of each byte first)
//!   describing the code length of symbols `0, 1, 2, ...` until all 256 are
//!   described. Nibble `1..=11` is a code length; `0` is one unused symbol;
//!   `12, n` is a run of `n + 2` unused symbols (2..=17); `13, hi, lo` is a
//!   run of `(hi << 4 | lo) + 18` unused symbols (18..=273). The stream is
//!   padded to a whole byte with a zero nibble. The lengths must form a
//!   complete prefix code (Kraft sum exactly 1) with at least two symbols.
//! * mode 3 only: the byte lengths of streams 0, 1 and 2 as varints (stream 3
//!   takes the rest of the blob).
//! * the bitstreams. The input is split in 4 quarters of `ceil(n / 4)` bytes
//!   (the last quarter gets the remainder), each quarter coded in its own
//!   stream so the decoder can interleave them. Codes are canonical (shorter
//!   first, then by symbol), stored bit-reversed and packed LSB-first, so the
//!   decoder indexes a `2^11` table with the low bits of a 64-bit buffer.
//!   Each stream ends with 0..7 zero padding bits.
//!
//! The maximum code length is [`MAX_CODE_LEN`] (11), obtained with the
//! package-merge algorithm (optimal under the limit). A one-symbol alphabet
//! gets a 1-bit code (plus an unused sibling) so every Huffman blob decodes
//! at most 8 symbols per stream byte: the declared length is checked against
//! that before anything is allocated. If coding does not shrink the data,
//! mode 1 is used.

use crate::varint;
use std::fmt;

/// Longest code our encoder emits; also the decode table's index width.
pub const MAX_CODE_LEN: u32 = 11;
const TABLE_SIZE: usize = 1 << MAX_CODE_LEN;
const MAGIC: &[u8; 4] = b"CCH1";
/// Below this size a single stream is used (the 3 stream sizes would cost more
/// than the interleaving gains).
const MULTI_STREAM_MIN: usize = 2048;

const MODE_EMPTY: u8 = 0;
const MODE_STORED: u8 = 1;
const MODE_HUFF1: u8 = 2;
const MODE_HUFF4: u8 = 3;

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HuffmanError {
    /// The blob ends before a field it needs.
    Truncated(&'static str),
    /// The blob does not start with the expected magic.
    BadMagic,
    /// Unknown mode byte.
    BadMode(u8),
    /// The code-length table is malformed or not a valid prefix code.
    BadTable(&'static str),
    /// The declared original length cannot be produced by a blob this size.
    BadLength { declared: u64, blob_len: usize },
    /// The bitstream does not decode to exactly the declared data.
    BadStream(&'static str),
    /// CRC32 of the decoded data differs from the stored one.
    ChecksumMismatch,
}

impl fmt::Display for HuffmanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HuffmanError::Truncated(what) => write!(f, "huffman blob truncated ({what})"),
            HuffmanError::BadMagic => write!(f, "huffman blob has a bad magic"),
            HuffmanError::BadMode(m) => write!(f, "huffman blob has unknown mode {m}"),
            HuffmanError::BadTable(why) => write!(f, "huffman code table invalid: {why}"),
            HuffmanError::BadLength { declared, blob_len } => write!(
                f,
                "huffman blob declares {declared} bytes, impossible for a {blob_len}-byte blob"
            ),
            HuffmanError::BadStream(why) => write!(f, "huffman bitstream invalid: {why}"),
            HuffmanError::ChecksumMismatch => write!(f, "huffman blob checksum mismatch"),
        }
    }
}

impl std::error::Error for HuffmanError {}

// ---------------------------------------------------------------------------
// small helpers

pub(crate) fn histogram(data: &[u8]) -> [u64; 256] {
    // Four sub-histograms avoid store-to-load stalls on runs of one byte.
    let mut h = [[0u32; 256]; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in chunks.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u64; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] as u64 + h[1][i] as u64 + h[2][i] as u64 + h[3][i] as u64;
    }
    out
}

/// Optimal code lengths limited to `max_len` bits (package-merge / coin
/// collector). Symbols with zero frequency get length 0. With one used
/// symbol, it and a neighbour get length 1 so the code is complete.
fn limited_lengths(freq: &[u64; 256], max_len: u32) -> [u8; 256] {
    let mut lens = [0u8; 256];
    let mut syms: Vec<usize> = (0..256).filter(|&s| freq[s] > 0).collect();
    match syms.len() {
        0 => return lens,
        1 => {
            let s = syms[0];
            lens[s] = 1;
            lens[if s == 255 { 254 } else { s + 1 }] = 1;
            return lens;
        }
        _ => {}
    }
    syms.sort_by_key(|&s| (freq[s], s));
    let n = syms.len();
    let leaves: Vec<u64> = syms.iter().map(|&s| freq[s]).collect();
    // levels[i] = merged list at step i: (weight, is_leaf).
    let mut levels: Vec<Vec<(u64, bool)>> = Vec::with_capacity(max_len as usize);
    levels.push(leaves.iter().map(|&w| (w, true)).collect());
    for _ in 1..max_len {
        let prev = levels.last().expect("non-empty");
        let packages: Vec<u64> = prev.chunks_exact(2).map(|p| p[0].0 + p[1].0).collect();
        let mut merged = Vec::with_capacity(n + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            if j >= packages.len() || (i < n && leaves[i] <= packages[j]) {
                merged.push((leaves[i], true));
                i += 1;
            } else {
                merged.push((packages[j], false));
                j += 1;
            }
        }
        levels.push(merged);
    }
    // Take the 2n-2 cheapest items of the last list; walk back down.
    let mut take = 2 * n - 2;
    for level in levels.iter().rev() {
        let take_here = take.min(level.len());
        let mut leaves_taken = 0;
        for item in &level[..take_here] {
            if item.1 {
                leaves_taken += 1;
            }
        }
        for &s in &syms[..leaves_taken] {
            lens[s] += 1;
        }
        take = 2 * (take_here - leaves_taken);
    }
    lens
}

/// Canonical codes (MSB-first value) for the given lengths; `lens` must be a
/// valid prefix code. Returns codes bit-reversed for LSB-first packing.
fn canonical_codes_reversed(lens: &[u8; 256]) -> [u32; 256] {
    let mut count = [0u32; 64];
    for &l in lens.iter() {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 64];
    let mut code = 0u32;
    for l in 1..64 {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    let mut out = [0u32; 256];
    for s in 0..256 {
        let l = lens[s] as u32;
        if l > 0 {
            let c = next[l as usize];
            next[l as usize] += 1;
            out[s] = c.reverse_bits() >> (32 - l);
        }
    }
    out
}

fn write_table(out: &mut Vec<u8>, lens: &[u8; 256]) {
    let mut nibbles: Vec<u8> = Vec::with_capacity(300);
    let mut s = 0;
    while s < 256 {
        if lens[s] != 0 {
            nibbles.push(lens[s]);
            s += 1;
            continue;
        }
        let mut run = 0;
        while s + run < 256 && lens[s + run] == 0 {
            run += 1;
        }
        s += run;
        while run > 0 {
            if run == 1 {
                nibbles.push(0);
                run = 0;
            } else if run <= 17 {
                nibbles.push(12);
                nibbles.push((run - 2) as u8);
                run = 0;
            } else {
                let r = run.min(273);
                nibbles.push(13);
                nibbles.push(((r - 18) >> 4) as u8);
                nibbles.push(((r - 18) & 15) as u8);
                run -= r;
            }
        }
    }
    for pair in nibbles.chunks(2) {
        let hi = if pair.len() == 2 { pair[1] } else { 0 };
        out.push(pair[0] | (hi << 4));
    }
}

fn read_table(blob: &[u8], pos: &mut usize) -> Result<[u8; 256], HuffmanError> {
    let mut lens = [0u8; 256];
    let mut s = 0usize;
    let mut nib_idx = 0usize; // nibble index relative to *pos
    let start = *pos;
    let next = |idx: &mut usize| -> Result<u8, HuffmanError> {
        let byte = *blob
            .get(start + *idx / 2)
            .ok_or(HuffmanError::Truncated("code table"))?;
        let v = if *idx & 1 == 0 { byte & 15 } else { byte >> 4 };
        *idx += 1;
        Ok(v)
    };
    while s < 256 {
        let n = next(&mut nib_idx)?;
        let run = match n {
            0 => 1,
            1..=11 => {
                lens[s] = n;
                s += 1;
                continue;
            }
            12 => next(&mut nib_idx)? as usize + 2,
            13 => {
                let hi = next(&mut nib_idx)? as usize;
                let lo = next(&mut nib_idx)? as usize;
                ((hi << 4) | lo) + 18
            }
            _ => return Err(HuffmanError::BadTable("bad nibble")),
        };
        if s + run > 256 {
            return Err(HuffmanError::BadTable("zero run past symbol 255"));
        }
        s += run;
    }
    *pos = start + nib_idx.div_ceil(2);
    // Validate: complete prefix code, >= 2 symbols.
    let mut kraft: u64 = 0;
    let mut used = 0;
    for &l in lens.iter() {
        if l > 0 {
            kraft += 1u64 << (MAX_CODE_LEN - l as u32);
            used += 1;
        }
    }
    if used < 2 || kraft != 1u64 << MAX_CODE_LEN {
        return Err(HuffmanError::BadTable("not a complete prefix code"));
    }
    Ok(lens)
}

// ---------------------------------------------------------------------------
// encoder

/// Encodes `data` into a self-contained `CCH1` blob (see module docs).
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 400);
    out.extend_from_slice(MAGIC);
    if data.is_empty() {
        out.push(MODE_EMPTY);
        varint::put(&mut out, 0);
        out.extend_from_slice(&0u32.to_le_bytes());
        return out;
    }
    let crc = crc32fast::hash(data);
    let streams = if data.len() >= MULTI_STREAM_MIN { 4 } else { 1 };
    let q = data.len().div_ceil(streams);
    // Per-stream histograms give the exact size of every stream up front,
    // so the streams are written straight into `out`.
    let hists: Vec<[u64; 256]> = data.chunks(q).map(histogram).collect();
    let mut freq = [0u64; 256];
    for h in &hists {
        for (f, x) in freq.iter_mut().zip(h.iter()) {
            *f += x;
        }
    }
    let lens = limited_lengths(&freq, MAX_CODE_LEN);
    let codes = canonical_codes_reversed(&lens);
    let sizes: Vec<usize> = hists
        .iter()
        .map(|h| {
            let bits: u64 = (0..256).map(|s| h[s] * lens[s] as u64).sum();
            bits.div_ceil(8) as usize
        })
        .collect();
    let total: usize = sizes.iter().sum();
    // Table <= 150 bytes, stream sizes <= 3 * 10: fall back to stored if the
    // Huffman form is not smaller.
    if total + 180 >= data.len() {
        out.push(MODE_STORED);
        varint::put(&mut out, data.len() as u64);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(data);
        return out;
    }
    out.push(if streams == 4 { MODE_HUFF4 } else { MODE_HUFF1 });
    varint::put(&mut out, data.len() as u64);
    out.extend_from_slice(&crc.to_le_bytes());
    write_table(&mut out, &lens);
    if streams == 4 {
        for &sz in &sizes[..3] {
            varint::put(&mut out, sz as u64);
        }
    }
    // Packed (code | len << 16) per symbol for one load per byte.
    let mut packed = [0u32; 256];
    for s in 0..256 {
        packed[s] = codes[s] | ((lens[s] as u32) << 16);
    }
    let base = out.len();
    // 8 bytes of slack for the last 64-bit stores, cut off below.
    out.resize(base + total + 8, 0);
    let mut starts = Vec::with_capacity(streams);
    let mut off = base;
    for &sz in &sizes {
        starts.push(off);
        off += sz;
    }
    if streams == 4 {
        encode_streams4(data, &packed, &mut out, &starts);
    } else {
        let mut w = BitWriter::new(base);
        w.put_all(data, &packed, &mut out);
        w.finish(&mut out);
        debug_assert_eq!(w.pos, base + total);
    }
    out.truncate(base + total);
    out
}

/// LSB-first bit writer into a shared, zero-initialised buffer. Stores are
/// OR-ed 64-bit words: bytes past the current position are either still
/// zero or belong to the next stream, and OR-ing zero bits keeps them.
struct BitWriter {
    pos: usize,
    bits: u64,
    n: u32,
}

impl BitWriter {
    fn new(pos: usize) -> Self {
        BitWriter { pos, bits: 0, n: 0 }
    }

    #[inline(always)]
    fn put(&mut self, e: u32) {
        self.bits |= ((e & 0xffff) as u64) << self.n;
        self.n += e >> 16;
    }

    /// Writes the pending bits; at most 56 may be pending.
    #[inline(always)]
    fn flush(&mut self, out: &mut [u8]) {
        let dst = &mut out[self.pos..self.pos + 8];
        let old = u64::from_le_bytes([
            dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7],
        ]);
        dst.copy_from_slice(&(old | self.bits).to_le_bytes());
        let nbytes = (self.n >> 3) as usize;
        self.pos += nbytes;
        self.bits = if nbytes == 8 {
            0
        } else {
            self.bits >> (nbytes * 8)
        };
        self.n &= 7;
    }

    /// Codes all of `data`, 4 symbols (<= 44 bits) per flush.
    fn put_all(&mut self, data: &[u8], packed: &[u32; 256], out: &mut [u8]) {
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            for &b in c {
                self.put(packed[b as usize]);
            }
            self.flush(out);
        }
        for &b in chunks.remainder() {
            self.put(packed[b as usize]);
        }
    }

    fn finish(&mut self, out: &mut [u8]) {
        self.flush(out);
        if self.n > 0 {
            self.pos += 1;
            self.n = 0;
        }
    }
}

/// Encodes the 4 quarters of `data` into the streams starting at `starts`,
/// interleaved so the four independent bit-buffer chains overlap in the CPU.
fn encode_streams4(data: &[u8], packed: &[u32; 256], out: &mut [u8], starts: &[usize]) {
    let q = data.len().div_ceil(4);
    let quarters: Vec<&[u8]> = data.chunks(q).collect();
    let common = quarters[3].len() / 4 * 4;
    let mut w = [
        BitWriter::new(starts[0]),
        BitWriter::new(starts[1]),
        BitWriter::new(starts[2]),
        BitWriter::new(starts[3]),
    ];
    {
        let [w0, w1, w2, w3] = &mut w;
        let (mut a, mut b, mut c, mut d) = (
            BitWriter::new(w0.pos),
            BitWriter::new(w1.pos),
            BitWriter::new(w2.pos),
            BitWriter::new(w3.pos),
        );
        for (((c0, c1), c2), c3) in quarters[0][..common]
            .chunks_exact(4)
            .zip(quarters[1][..common].chunks_exact(4))
            .zip(quarters[2][..common].chunks_exact(4))
            .zip(quarters[3][..common].chunks_exact(4))
        {
            for i in 0..4 {
                a.put(packed[c0[i] as usize]);
                b.put(packed[c1[i] as usize]);
                c.put(packed[c2[i] as usize]);
                d.put(packed[c3[i] as usize]);
            }
            a.flush(out);
            b.flush(out);
            c.flush(out);
            d.flush(out);
        }
        (*w0, *w1, *w2, *w3) = (a, b, c, d);
    }
    for (k, wr) in w.iter_mut().enumerate() {
        wr.put_all(&quarters[k][common..], packed, out);
        wr.finish(out);
        debug_assert_eq!(wr.pos, starts.get(k + 1).copied().unwrap_or(wr.pos));
    }
}

// ---------------------------------------------------------------------------
// decoder

/// Decode table: entry = symbol | (code length << 8).
type DecodeTable = [u16; TABLE_SIZE];

fn build_decode_table(lens: &[u8; 256]) -> Box<DecodeTable> {
    let codes = canonical_codes_reversed(lens);
    let mut table = Box::new([0u16; TABLE_SIZE]);
    for s in 0..256 {
        let l = lens[s] as usize;
        if l == 0 {
            continue;
        }
        let entry = (s as u16) | ((l as u16) << 8);
        let mut i = codes[s] as usize;
        while i < TABLE_SIZE {
            table[i] = entry;
            i += 1 << l;
        }
    }
    table
}

/// One LSB-first bit reader over `buf[start..end]`.
#[derive(Clone, Copy)]
struct Reader {
    pos: usize,
    start: usize,
    end: usize,
    bits: u64,
    count: u32,
}

impl Reader {
    fn new(start: usize, end: usize) -> Self {
        Reader {
            pos: start,
            start,
            end,
            bits: 0,
            count: 0,
        }
    }

    /// Refills to >= 56 bits. Returns false if the reader already ran past
    /// its stream (corrupt data). A valid reader may have loaded up to 7
    /// bytes past its end, so `pos <= end + 8`; loads past the end of `buf`
    /// read zeros.
    #[inline(always)]
    fn refill(&mut self, buf: &[u8]) -> bool {
        if self.pos > self.end + 8 {
            return false;
        }
        let w = match buf.get(self.pos..self.pos + 8) {
            Some(s) => u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            None => {
                // Within 8 bytes of the end of the data: zero-fill.
                let rest = buf.get(self.pos..).unwrap_or(&[]);
                let mut a = [0u8; 8];
                a[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(a)
            }
        };
        self.bits |= w << self.count;
        self.pos += ((63 - self.count) >> 3) as usize;
        self.count |= 56;
        true
    }

    #[inline(always)]
    fn decode(&mut self, table: &DecodeTable) -> u8 {
        let e = table[(self.bits as usize) & (TABLE_SIZE - 1)];
        let l = (e >> 8) as u32;
        self.bits >>= l;
        self.count -= l;
        e as u8
    }

    /// True if exactly the stream's bytes were consumed (last one partially)
    /// and the 0..7 padding bits are zero, as the encoder writes them.
    fn finished_exactly(&self, buf: &[u8]) -> bool {
        let consumed = (self.pos - self.start) as u64 * 8 - self.count as u64;
        let len_bits = (self.end - self.start) as u64 * 8;
        if consumed > len_bits || consumed + 8 <= len_bits {
            return false;
        }
        let pad = (len_bits - consumed) as u32;
        pad == 0 || buf[self.end - 1] >> (8 - pad) == 0
    }
}

/// Two-symbol table: entry = sym1 | sym2 << 8 | bits << 16 | nsyms << 24,
/// built from the single-symbol table: a second symbol is included when its
/// whole code fits in the 11 looked-up bits.
fn build_double_table(single: &DecodeTable) -> Box<[u32; TABLE_SIZE]> {
    let mut t = Box::new([0u32; TABLE_SIZE]);
    for (i, e) in t.iter_mut().enumerate() {
        let e1 = single[i] as u32;
        let l1 = e1 >> 8;
        let e2 = single[i >> l1] as u32;
        let l2 = e2 >> 8;
        *e = if l1 + l2 <= MAX_CODE_LEN {
            (e1 & 0xff) | ((e2 & 0xff) << 8) | ((l1 + l2) << 16) | (2 << 24)
        } else {
            (e1 & 0xff) | (l1 << 16) | (1 << 24)
        };
    }
    t
}

fn decode_streams(
    buf: &[u8],
    table: &DecodeTable,
    bounds: &[(usize, usize)],
    out: &mut [u8],
) -> Result<(), HuffmanError> {
    let n = out.len();
    let k = bounds.len();
    let q = n.div_ceil(k);
    if k == 4 {
        let double = build_double_table(table);
        let mut r = [
            Reader::new(bounds[0].0, bounds[0].1),
            Reader::new(bounds[1].0, bounds[1].1),
            Reader::new(bounds[2].0, bounds[2].1),
            Reader::new(bounds[3].0, bounds[3].1),
        ];
        let mut op = [0, q, 2 * q, 3 * q];
        let oend = [q, 2 * q, 3 * q, n];
        {
            // Register-resident state per stream: bits, count, input pos,
            // output pos. Interleaved main loop: 4 lookups (<= 44 bits,
            // <= 8 bytes out) per stream per refill, while every stream has
            // >= 8 bytes of room left in its own quarter (the 2-byte stores
            // never cross into the next quarter).
            let [r0, r1, r2, r3] = &mut r;
            let dt: &[u32; TABLE_SIZE] = &double;
            let (mut o0, mut o1, mut o2, mut o3) = (op[0], op[1], op[2], op[3]);
            macro_rules! step {
                ($r:ident, $o:ident) => {
                    let e = dt[($r.bits as usize) & (TABLE_SIZE - 1)];
                    let l = (e >> 16) & 0xff;
                    $r.bits >>= l;
                    $r.count -= l;
                    out[$o..$o + 2].copy_from_slice(&(e as u16).to_le_bytes());
                    $o += (e >> 24) as usize;
                };
            }
            let mut ok = true;
            while o0 + 8 <= oend[0] && o1 + 8 <= oend[1] && o2 + 8 <= oend[2] && o3 + 8 <= oend[3] {
                ok = r0.refill(buf) & r1.refill(buf) & r2.refill(buf) & r3.refill(buf);
                if !ok {
                    break;
                }
                let (mut a, mut b, mut c, mut d) = (*r0, *r1, *r2, *r3);
                for _ in 0..4 {
                    step!(a, o0);
                    step!(b, o1);
                    step!(c, o2);
                    step!(d, o3);
                }
                (*r0, *r1, *r2, *r3) = (a, b, c, d);
            }
            if !ok {
                return Err(HuffmanError::BadStream("stream overrun"));
            }
            op = [o0, o1, o2, o3];
        }
        for s in 0..4 {
            decode_tail(buf, table, &mut r[s], &mut out[op[s]..oend[s]])?;
            if !r[s].finished_exactly(buf) {
                return Err(HuffmanError::BadStream("stream length mismatch"));
            }
        }
        Ok(())
    } else {
        let mut reader = Reader::new(bounds[0].0, bounds[0].1);
        decode_tail(buf, table, &mut reader, out)?;
        if !reader.finished_exactly(buf) {
            return Err(HuffmanError::BadStream("stream length mismatch"));
        }
        Ok(())
    }
}

fn decode_tail(
    buf: &[u8],
    table: &DecodeTable,
    r: &mut Reader,
    out: &mut [u8],
) -> Result<(), HuffmanError> {
    let mut chunks = out.chunks_exact_mut(4);
    for c in &mut chunks {
        if !r.refill(buf) {
            return Err(HuffmanError::BadStream("stream overrun"));
        }
        for x in c.iter_mut() {
            *x = r.decode(table);
        }
    }
    for x in chunks.into_remainder() {
        if !r.refill(buf) {
            return Err(HuffmanError::BadStream("stream overrun"));
        }
        *x = r.decode(table);
    }
    Ok(())
}

/// Decodes a `CCH1` blob produced by [`encode`]. Any malformed input gives
/// an error; output size is bounded by the blob size (at most 8 bytes out
/// per coded byte, or exactly the stored bytes).
pub fn decode(blob: &[u8]) -> Result<Vec<u8>, HuffmanError> {
    if blob.len() < 4 {
        return Err(HuffmanError::Truncated("magic"));
    }
    if &blob[..4] != MAGIC {
        return Err(HuffmanError::BadMagic);
    }
    let mut pos = 4;
    let mode = *blob.get(pos).ok_or(HuffmanError::Truncated("mode"))?;
    pos += 1;
    let declared = varint::get(blob, &mut pos).ok_or(HuffmanError::Truncated("length"))?;
    let crc_bytes = blob
        .get(pos..pos + 4)
        .ok_or(HuffmanError::Truncated("checksum"))?;
    let crc = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    pos += 4;
    let bad_len = HuffmanError::BadLength {
        declared,
        blob_len: blob.len(),
    };
    let out = match mode {
        MODE_EMPTY => {
            if declared != 0 || pos != blob.len() || crc != 0 {
                return Err(HuffmanError::BadStream("empty blob with content"));
            }
            return Ok(Vec::new());
        }
        MODE_STORED => {
            if declared != (blob.len() - pos) as u64 {
                return Err(bad_len);
            }
            blob[pos..].to_vec()
        }
        MODE_HUFF1 | MODE_HUFF4 => {
            let lens = read_table(blob, &mut pos)?;
            let k = if mode == MODE_HUFF4 { 4 } else { 1 };
            let mut sizes = [0usize; 4];
            let mut sum = 0usize;
            for size in sizes.iter_mut().take(k - 1) {
                let v =
                    varint::get(blob, &mut pos).ok_or(HuffmanError::Truncated("stream sizes"))?;
                *size = usize::try_from(v).map_err(|_| HuffmanError::BadStream("stream size"))?;
                sum = sum
                    .checked_add(*size)
                    .ok_or(HuffmanError::BadStream("stream size"))?;
            }
            let payload = blob.len() - pos;
            if sum > payload {
                return Err(HuffmanError::Truncated("streams"));
            }
            sizes[k - 1] = payload - sum;
            let n = usize::try_from(declared).map_err(|_| bad_len.clone())?;
            // Every code is >= 1 bit: each quarter needs >= q/8 stream bytes.
            if n == 0 || declared > payload as u64 * 8 {
                return Err(bad_len);
            }
            let q = n.div_ceil(k);
            let quarter_lens: Vec<usize> = (0..k).map(|i| q.min(n.saturating_sub(i * q))).collect();
            for (i, &ql) in quarter_lens.iter().enumerate() {
                if ql as u64 > sizes[i] as u64 * 8 {
                    return Err(bad_len);
                }
            }
            if k == 4 && quarter_lens[3] == 0 {
                return Err(bad_len);
            }
            let buf = &blob[pos..];
            let mut bounds = Vec::with_capacity(k);
            let mut off = 0;
            for &s in sizes.iter().take(k) {
                bounds.push((off, off + s));
                off += s;
            }
            let table = build_decode_table(&lens);
            let mut out = vec![0u8; n];
            decode_streams(buf, &table, &bounds, &mut out)?;
            out
        }
        m => return Err(HuffmanError::BadMode(m)),
    };
    if crc32fast::hash(&out) != crc {
        return Err(HuffmanError::ChecksumMismatch);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn rng(seed: &mut u64) -> u64 {
        // xorshift64*
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Realistic chat-like JSON corpus, about `size` bytes.
    pub(crate) fn chat_corpus(size: usize) -> Vec<u8> {
        let words = [
            "the",
            "a",
            "to",
            "of",
            "and",
            "in",
            "is",
            "you",
            "that",
            "it",
            "for",
            "on",
            "with",
            "this",
            "can",
            "be",
            "are",
            "I",
            "your",
            "as",
            "function",
            "Redis",
            "cache",
            "please",
            "explain",
            "how",
            "does",
            "work",
            "memory",
            "session",
            "example",
            "Rust",
            "value",
            "key",
            "return",
            "error",
            "thanks!",
            "Here's",
            "code:",
            "let",
            "fn",
            "main()",
            "{",
            "}",
            "=",
            "->",
            "Sure,",
            "because",
            "would",
            "could",
            "should",
            "data",
            "we",
            "use",
            "when",
            "first",
            "then",
            "also",
            "note",
            "that's",
            "will",
            "more",
            "não",
            "café",
            "über",
            "日本語",
            "🙂",
        ];
        let roles = ["user", "assistant", "system", "tool"];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut out = String::from("[");
        let mut ts = 1_700_000_000.0f64;
        while out.len() < size {
            let role = roles[(rng(&mut seed) % 4) as usize];
            let nwords = 5 + rng(&mut seed) % 120;
            let mut content = String::new();
            for i in 0..nwords {
                if i > 0 {
                    content.push(if rng(&mut seed).is_multiple_of(17) {
                        '\n'
                    } else {
                        ' '
                    });
                }
                let r = rng(&mut seed);
                // Zipf-ish: favour low indexes.
                let idx = ((r % 1000) * (r % 1000) / 1000 * words.len() as u64 / 1000) as usize;
                content.push_str(words[idx.min(words.len() - 1)]);
                if r.is_multiple_of(13) {
                    content.push_str(&format!(" {}", r % 10_000));
                }
            }
            ts += (rng(&mut seed) % 100_000) as f64 / 1000.0;
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"role\":\"{role}\",\"content\":{},\"timestamp\":{ts},\"metadata\":{{\"model\":\"gpt-4o\",\"tokens\":{}}}}}",
                serde_json::to_string(&content).unwrap(),
                rng(&mut seed) % 4000
            ));
        }
        out.push(']');
        out.into_bytes()
    }

    fn entropy_bytes(data: &[u8]) -> f64 {
        let h = histogram(data);
        let n = data.len() as f64;
        let bits: f64 = h
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -(c as f64) * p.log2()
            })
            .sum();
        bits / 8.0
    }

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let blob = encode(data);
        let back = decode(&blob).expect("decode");
        assert_eq!(back, data);
        blob
    }

    #[test]
    fn empty() {
        let b = roundtrip(b"");
        assert_eq!(b.len(), 4 + 1 + 1 + 4);
    }

    #[test]
    fn one_symbol() {
        for n in [1usize, 2, 3, 7, 100, 5000, 100_000] {
            for sym in [0u8, b'a', 255] {
                let data = vec![sym; n];
                let b = roundtrip(&data);
                if n >= 1000 {
                    assert!(b.len() < n / 7, "n={n} len={}", b.len());
                }
            }
        }
    }

    #[test]
    fn all_256_symbols() {
        let data: Vec<u8> = (0..256 * 40).map(|i| (i % 256) as u8).collect();
        roundtrip(&data);
        let data: Vec<u8> = (0..=255u8).collect();
        roundtrip(&data);
        // Skewed over all 256 so Huffman mode is used.
        let mut seed = 7;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                let r = rng(&mut seed);
                if !r.is_multiple_of(4) {
                    (r >> 8) as u8 & 7
                } else {
                    (r >> 16) as u8
                }
            })
            .collect();
        let b = roundtrip(&data);
        assert!(b.len() < data.len());
    }

    #[test]
    fn fibonacci_skew_limited() {
        // Fibonacci frequencies: unlimited Huffman would need ~30-bit codes.
        let mut data = Vec::new();
        let (mut a, mut b) = (1usize, 1usize);
        for sym in 0..30u8 {
            data.extend(std::iter::repeat_n(sym, a));
            let c = a + b;
            a = b;
            b = c;
        }
        let mut seed = 3;
        // shuffle a bit so streams differ
        for i in (1..data.len()).rev().step_by(3) {
            let j = (rng(&mut seed) % (i as u64 + 1)) as usize;
            data.swap(i, j);
        }
        roundtrip(&data);
        let lens = limited_lengths(&histogram(&data), MAX_CODE_LEN);
        assert!(lens.iter().all(|&l| l as u32 <= MAX_CODE_LEN));
    }

    #[test]
    fn package_merge_is_optimal_when_unconstrained() {
        // Frequencies whose Huffman code is known: 1,1,2,4 -> lengths 3,3,2,1.
        let mut f = [0u64; 256];
        f[10] = 1;
        f[11] = 1;
        f[12] = 2;
        f[13] = 4;
        let l = limited_lengths(&f, 11);
        assert_eq!((l[10], l[11], l[12], l[13]), (3, 3, 2, 1));
        let l = limited_lengths(&f, 2);
        assert_eq!((l[10], l[11], l[12], l[13]), (2, 2, 2, 2));
    }

    #[test]
    fn random_and_small_sizes() {
        let mut seed = 99;
        for n in [
            1usize, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 2047, 2048, 2049, 2050, 2051, 10_001,
        ] {
            let data: Vec<u8> = (0..n).map(|_| (rng(&mut seed) % 7) as u8 + b'a').collect();
            roundtrip(&data);
            let data: Vec<u8> = (0..n).map(|_| rng(&mut seed) as u8).collect();
            roundtrip(&data);
        }
    }

    #[test]
    fn size_within_2pct_of_entropy_plus_table() {
        for size in [64 * 1024, 1 << 20] {
            let data = chat_corpus(size);
            let blob = encode(&data);
            let ent = entropy_bytes(&data);
            // Table bytes: everything before the streams (header included).
            let mut pos = 4 + 1;
            varint::get(&blob, &mut pos).unwrap();
            pos += 4;
            read_table(&blob, &mut pos).unwrap();
            let table_bytes = pos as f64;
            let ratio = blob.len() as f64 / (ent + table_bytes);
            println!(
                "size={} blob={} entropy={:.0} table+hdr={} ratio={:.4}",
                data.len(),
                blob.len(),
                ent,
                table_bytes,
                ratio
            );
            assert!(ratio < 1.02, "ratio {ratio}");
            assert_eq!(decode(&blob).unwrap(), data);
        }
    }

    #[test]
    fn corruption_detected() {
        let data = chat_corpus(50_000);
        let blob = encode(&data);
        let mut seed = 5;
        for _ in 0..2000 {
            let mut b = blob.clone();
            let i = (rng(&mut seed) % b.len() as u64) as usize;
            b[i] ^= 1 << (rng(&mut seed) % 8);
            assert!(decode(&b).is_err(), "flip at {i} not detected");
        }
        for cut in 0..blob.len().min(3000) {
            assert!(decode(&blob[..cut]).is_err());
        }
        assert!(decode(&blob[..blob.len() - 1]).is_err());
    }

    #[test]
    fn absurd_length_rejected_without_alloc() {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.push(MODE_HUFF1);
        varint::put(&mut b, u64::MAX / 2);
        b.extend_from_slice(&[0; 4]);
        let mut lens = [0u8; 256];
        lens[0] = 1;
        lens[1] = 1;
        write_table(&mut b, &lens);
        b.extend_from_slice(&[0; 10]);
        assert!(matches!(decode(&b), Err(HuffmanError::BadLength { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(300)))]
        #[test]
        fn prop_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            prop_assert_eq!(decode(&encode(&data)).unwrap(), data);
        }

        #[test]
        fn prop_roundtrip_small_alphabet(data in proptest::collection::vec(0u8..5, 0..9000)) {
            prop_assert_eq!(decode(&encode(&data)).unwrap(), data);
        }

        #[test]
        fn prop_corruption_never_panics(
            data in proptest::collection::vec(0u8..40, 1..6000),
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
            cut in any::<usize>(),
        ) {
            let mut blob = encode(&data);
            for (i, bit) in flips {
                let n = blob.len();
                blob[i % n] ^= 1 << bit;
            }
            let _ = decode(&blob);
            let _ = decode(&blob[..cut % (blob.len() + 1)]);
        }

        #[test]
        fn prop_garbage_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..400), mode in 0u8..5) {
            if data.len() >= 5 {
                data[..4].copy_from_slice(MAGIC);
                data[4] = mode;
            }
            let _ = decode(&data);
        }
    }

    #[test]
    #[ignore]
    fn bench_parts() {
        use std::time::Instant;
        let data = chat_corpus(1 << 20);
        let mb = data.len() as f64 / 1e6;
        let best = |f: &mut dyn FnMut()| {
            let mut b = f64::MAX;
            for _ in 0..100 {
                let t = Instant::now();
                f();
                b = b.min(t.elapsed().as_secs_f64());
            }
            mb / b
        };
        let h = best(&mut || {
            std::hint::black_box(histogram(std::hint::black_box(&data)));
        });
        let c = best(&mut || {
            std::hint::black_box(crc32fast::hash(std::hint::black_box(&data)));
        });
        let lens = limited_lengths(&histogram(&data), MAX_CODE_LEN);
        let codes = canonical_codes_reversed(&lens);
        let mut packed = [0u32; 256];
        for s in 0..256 {
            packed[s] = codes[s] | ((lens[s] as u32) << 16);
        }
        let e = best(&mut || {
            let mut out = vec![0u8; data.len() * 2];
            let mut w = BitWriter::new(0);
            w.put_all(std::hint::black_box(&data), &packed, &mut out);
            w.finish(&mut out);
            std::hint::black_box(out);
        });
        let z = best(&mut || {
            std::hint::black_box(vec![0u8; 1 << 20]);
        });
        println!(
            "histogram {h:.0} MB/s, crc {c:.0} MB/s, encode_stream {e:.0} MB/s, alloc {z:.0} MB/s"
        );
    }

    /// `cargo test --release -- --ignored --nocapture bench_huffman`
    /// Prints best and median per-call throughput (the machine may be shared).
    #[test]
    #[ignore]
    fn bench_huffman() {
        use std::time::Instant;
        fn stats(mb: f64, mut secs: Vec<f64>) -> (f64, f64) {
            secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (mb / secs[0], mb / secs[secs.len() / 2])
        }
        let data = chat_corpus(1 << 20);
        let mb = data.len() as f64 / 1e6;
        let iters = 300;
        let blob = encode(&data);
        let mut t_enc = Vec::new();
        let mut t_dec = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            std::hint::black_box(encode(std::hint::black_box(&data)));
            t_enc.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(decode(std::hint::black_box(&blob)).unwrap());
            t_dec.push(t.elapsed().as_secs_f64());
        }
        let legacy = crate::import::hcv1::tests::lix_encode(&data);
        let mut t_leg = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            std::hint::black_box(crate::import::hcv1::decode_lix_hcv1(&legacy).unwrap());
            t_leg.push(t.elapsed().as_secs_f64());
        }
        let ent = entropy_bytes(&data);
        println!(
            "input {} bytes, blob {} bytes ({:.2}% of input), order-0 entropy {:.0} bytes, blob/entropy = {:.4}",
            data.len(),
            blob.len(),
            100.0 * blob.len() as f64 / data.len() as f64,
            ent,
            blob.len() as f64 / ent
        );
        let (eb, em) = stats(mb, t_enc);
        let (db, dm) = stats(mb, t_dec);
        let (lb, lm) = stats(mb, t_leg);
        println!("encode best {eb:.0} MB/s median {em:.0} MB/s");
        println!("decode best {db:.0} MB/s median {dm:.0} MB/s");
        println!("legacy HCv1 decode best {lb:.0} MB/s median {lm:.0} MB/s");
    }
}
