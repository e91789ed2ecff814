//! Binary encoding of a semantic-cache bucket for RDB and the AOF-rewrite command.
//!
//! A bucket is written as one header payload followed by entry payloads ("chunks") of at
//! most [`CHUNK_BYTES`] each, so a 600 MB bucket never builds one 600 MB buffer or one
//! argument over the server's bulk limit.
//!
//! Layout (version 1): `u8 version`, `u8 kind`.
//! - kind 0, header: varints `dim, max_items, next_id, hits, misses, count` (`count` entries
//!   follow in chunks).
//! - kind 1, entries: `varint next_id` (the bucket's, in the last chunk only; 0 in the
//!   others, as ids must keep loading in increasing order), `varint n`, then per entry `varint id`, `i64 LE expire_at_ms`,
//!   `bytes response`, `u8 has_meta` [`bytes meta`], `bytes row` (normalised f32 LE).
//!
//!
//! Version 2 adds, additively: per entry, after the meta, `bytes tags` (the entry's tag
//! blob, see `tags.rs`; empty = none), `bytes prompt` (empty = none) and `varint renew_ms`
//! (what TOUCH renews the expiry by); in the header, after `has_index`, `u8 policy`
//! (eviction: 0 fifo, 1 lru, 2 lfu); in the header, after `count`, `u8 has_index`; kind 2,
//! index: the bucket's HNSW graph (see `hnsw.rs`: parameters, slots, entry point, then per
//! slot its entry id and neighbour lists), one payload after the entries when `has_index`.
//! Version-1 payloads still load (no index: a big bucket builds one again as it is written).
//!
//! Version 3 adds the vector kind (`QUANT`): in the header, after `policy`, `u8 quant`
//! (0 float32, 1 int8); in an entries payload, after `next_id`, `u8 quant`, and for int8 each
//! entry's `bytes row` holds its `dim` int8 codes (the scale is `1 / |code|`, recomputed).
//! Version-1 and -2 payloads load as float32.
//!
//! Version 4 adds the index algorithm (`ALGO`): in the header, after `quant`, `u8 algo`
//! (0 hnsw, 1 ivf); kind 3, IVF index: its lists (see `ivf.rs`: slots, then per list its
//! members' slots and entry ids), one payload after the entries when `has_index` and the
//! algorithm is ivf (an HNSW index stays kind 2). Earlier payloads load as hnsw.
//!
//! Version 5 adds to the IVF index, after the lists, the references of its sign bits: `bytes
//! global` (the centroids', empty until the first split) and per list `bytes base` (`dim`
//! int8 each). A version-4 IVF index loads with its centroids as references.
//!
//! Integers are LEB128 varints, `bytes` is a varint length and the bytes.

use super::ann::{Algo, AnnIndex};
pub use super::bucket::Row;
use super::bucket::{Bucket, EntryData, EvictPolicy, FullView, Quant, RowRef};
use super::tags;
use crate::varint::put as put_varint;
use crate::wire::{put_bytes, Reader, WireError};

pub const CODEC_VERSION: u8 = 5;
/// Largest `max_items` a bucket can have (SEMCACHE.SET MAXITEMS, the config, every decoder).
pub const MAX_ITEMS_LIMIT: usize = 1_000_000;
/// Largest vector dimension a payload may declare: a vector of the default 512 MB bulk limit.
pub const MAX_DIM: usize = 1 << 27;
/// A stored row is normalised: its norm is 1 to float32 precision; this much off is damage.
const UNIT_NORM_TOLERANCE: f64 = 1e-3;
const KIND_HEADER: u8 = 0;
const KIND_ENTRIES: u8 = 1;
const KIND_INDEX: u8 = 2;
const KIND_IVF_INDEX: u8 = 3;
/// Upper bound of one entry payload (one entry bigger than this gets a chunk of its own).
pub const CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt semcache payload: {}", self.0)
    }
}

fn corrupt<T>(what: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(what.into()))
}

impl From<WireError> for CodecError {
    fn from(e: WireError) -> Self {
        CodecError(e.0.to_string())
    }
}

/// The bucket-wide fields of a header payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dim: usize,
    pub max_items: usize,
    pub next_id: u64,
    pub hits: u64,
    pub misses: u64,
    pub count: u64,
    /// An index payload follows the entries (version 2).
    pub has_index: bool,
    /// The eviction policy (version 2; FIFO before).
    pub policy: EvictPolicy,
    /// The vector kind (version 3; float32 before).
    pub quant: Quant,
    /// The index algorithm (version 4; hnsw before).
    pub algo: Algo,
}

/// One entry read back: `(id, row, response, meta, expire_at_ms, tags, prompt, renew_ms)`.
pub type LoadedEntry = (
    u64,
    Row,
    Vec<u8>,
    Option<String>,
    i64,
    Option<Box<[u8]>>,
    Option<Vec<u8>>,
    i64,
);

/// An entry to write, with its tag blob and prompt.
pub type TaggedView<'a> = FullView<'a>;

#[derive(Debug, PartialEq)]
pub enum Decoded {
    Header(Header),
    /// The bucket's `next_id` (restored after the entries; 0 before the last chunk) and the
    /// entries.
    Entries(u64, Vec<LoadedEntry>),
    /// The bucket's index (checked in itself; against the entries when attached).
    Index(AnnIndex),
}

pub fn encode_header(b: &Bucket, hits: u64, misses: u64) -> Vec<u8> {
    let mut out = vec![CODEC_VERSION, KIND_HEADER];
    for v in [
        b.dim() as u64,
        b.max_items() as u64,
        b.next_id(),
        hits,
        misses,
        b.len() as u64,
    ] {
        put_varint(&mut out, v);
    }
    out.push(u8::from(b.has_index()));
    out.push(b.policy().code());
    out.push(b.quant().code());
    out.push(b.algo().code());
    out
}

/// The index payload of a bucket that has an index.
pub fn encode_index(b: &Bucket) -> Option<Vec<u8>> {
    let g = b.index_graph()?;
    let mut out = Vec::with_capacity(g.slots() * 48 + 16);
    let kind = match g.algo() {
        Algo::Hnsw => KIND_INDEX,
        Algo::Ivf => KIND_IVF_INDEX,
    };
    out.extend_from_slice(&[CODEC_VERSION, kind]);
    g.encode(&mut out);
    Some(out)
}

fn entry_bytes((e, t, p, _): &TaggedView) -> usize {
    e.1.quant().row_bytes(e.1.len())
        + e.2.len()
        + e.3.map_or(0, str::len)
        + t.map_or(0, <[u8]>::len)
        + p.map_or(0, <[u8]>::len)
        + 48
}

/// Entries of a bucket of this `quant` (every row of that kind).
pub fn encode_entries(next_id: u64, quant: Quant, entries: &[TaggedView]) -> Vec<u8> {
    let size: usize = entries.iter().map(entry_bytes).sum();
    let mut out = Vec::with_capacity(size + 24);
    out.extend_from_slice(&[CODEC_VERSION, KIND_ENTRIES]);
    put_varint(&mut out, next_id);
    out.push(quant.code());
    put_varint(&mut out, entries.len() as u64);
    for &((id, row, resp, meta, exp), tags, prompt, renew) in entries {
        put_varint(&mut out, id);
        out.extend_from_slice(&exp.to_le_bytes());
        put_bytes(&mut out, resp);
        match meta {
            Some(m) => {
                out.push(1);
                put_bytes(&mut out, m.as_bytes());
            }
            None => out.push(0),
        }
        put_bytes(&mut out, tags.unwrap_or_default());
        put_bytes(&mut out, prompt.unwrap_or_default());
        put_varint(&mut out, renew.max(0) as u64);
        match row {
            RowRef::F32(v) => {
                put_varint(&mut out, (v.len() * 4) as u64);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            RowRef::I8(code, _) => {
                put_varint(&mut out, code.len() as u64);
                out.extend(code.iter().map(|&c| c as u8));
            }
        }
    }
    out
}

/// The entry payloads of a bucket, in id order, each at most [`CHUNK_BYTES`] (or one entry).
/// Built lazily, so only one chunk is in memory at a time.
pub fn entry_chunks(b: &Bucket) -> impl Iterator<Item = Vec<u8>> + '_ {
    let all: Vec<TaggedView> = b.entries_with_tags().collect();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= all.len() {
            return None;
        }
        let mut end = start;
        let mut size = 0;
        while end < all.len() && (end == start || size + entry_bytes(&all[end]) <= CHUNK_BYTES) {
            size += entry_bytes(&all[end]);
            end += 1;
        }
        let next_id = if end == all.len() { b.next_id() } else { 0 };
        let chunk = encode_entries(next_id, b.quant(), &all[start..end]);
        start = end;
        Some(chunk)
    })
}

fn usize_of(v: u64, what: &str) -> Result<usize, CodecError> {
    usize::try_from(v).or_else(|_| corrupt(format!("{what} too large")))
}

impl Header {
    /// The ranges and relations every header obeys (what SEMCACHE.SET can produce).
    pub fn check(&self) -> Result<(), CodecError> {
        if self.dim > MAX_DIM {
            return corrupt(format!("dimension {} is over {MAX_DIM}", self.dim));
        }
        if self.max_items == 0 || self.max_items > MAX_ITEMS_LIMIT {
            return corrupt(format!(
                "max_items {} is not between 1 and {MAX_ITEMS_LIMIT}",
                self.max_items
            ));
        }
        if self.count > self.max_items as u64 {
            return corrupt(format!(
                "{} entries are more than max_items {}",
                self.count, self.max_items
            ));
        }
        if self.count > 0 && self.dim == 0 {
            return corrupt("entries without a dimension");
        }
        if self.next_id == 0 || self.next_id == u64::MAX || self.count >= self.next_id {
            return corrupt(format!(
                "next_id {} cannot follow {} entries",
                self.next_id, self.count
            ));
        }
        Ok(())
    }
}

/// Checks one entry read from a payload: an id that can have been issued, a JSON-object
/// meta, and a normalised finite row.
fn check_entry(e: &LoadedEntry) -> Result<(), CodecError> {
    let (id, row, _, meta, ..) = e;
    if *id == 0 || *id == u64::MAX {
        return corrupt(format!("entry id {id} is never issued"));
    }
    if let Some(m) = meta {
        crate::conv::message::check_meta(m).or_else(|e| corrupt(format!("entry {id}: {e}")))?;
    }
    if row.is_empty() {
        return corrupt(format!("entry {id}: empty vector"));
    }
    let row = match row {
        Row::F32(v) => v,
        Row::I8(code) if code.iter().all(|&c| c == 0) => {
            return corrupt(format!("entry {id}: int8 vector is all zeros"))
        }
        Row::I8(_) => return Ok(()),
    };
    if let Some(i) = row.iter().position(|x| !x.is_finite()) {
        return corrupt(format!("entry {id}: vector holds NaN or Inf at index {i}"));
    }
    let norm = row
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
        return corrupt(format!("entry {id}: stored vector has norm {norm}, not 1"));
    }
    Ok(())
}

pub fn decode(buf: &[u8]) -> Result<Decoded, CodecError> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if version == 0 || version > CODEC_VERSION {
        return corrupt(crate::wire::unknown_version(
            "semcache",
            version,
            CODEC_VERSION,
        ));
    }
    let decoded = match r.u8()? {
        KIND_HEADER => {
            let dim = usize_of(r.varint()?, "dim")?;
            let max_items = usize_of(r.varint()?, "max_items")?;
            let next_id = r.varint()?;
            let hits = r.varint()?;
            let misses = r.varint()?;
            let count = r.varint()?;
            let has_index = match version {
                1 => false,
                _ => match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return corrupt("bad index flag"),
                },
            };
            let policy = match version {
                1 => EvictPolicy::Fifo,
                _ => match EvictPolicy::from_code(r.u8()?) {
                    Some(p) => p,
                    None => return corrupt("unknown eviction policy"),
                },
            };
            let quant = match version {
                1 | 2 => Quant::Float32,
                _ => match Quant::from_code(r.u8()?) {
                    Some(q) => q,
                    None => return corrupt("unknown vector kind"),
                },
            };
            let algo = match version {
                1..=3 => Algo::Hnsw,
                _ => match Algo::from_code(r.u8()?) {
                    Some(a) => a,
                    None => return corrupt("unknown index algorithm"),
                },
            };
            let h = Header {
                dim,
                max_items,
                next_id,
                hits,
                misses,
                count,
                has_index,
                policy,
                quant,
                algo,
            };
            h.check()?;
            Decoded::Header(h)
        }
        KIND_ENTRIES => {
            let next_id = r.varint()?;
            let quant = match version {
                1 | 2 => Quant::Float32,
                _ => match Quant::from_code(r.u8()?) {
                    Some(q) => q,
                    None => return corrupt("unknown vector kind"),
                },
            };
            let n = r.varint()?;
            let mut out: Vec<LoadedEntry> = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                let id = r.varint()?;
                let exp = r.i64()?;
                let resp = r.bytes()?.to_vec();
                let meta = match r.u8()? {
                    0 => None,
                    1 => match std::str::from_utf8(r.bytes()?) {
                        Ok(s) => Some(s.to_string()),
                        Err(_) => return corrupt("meta is not UTF-8"),
                    },
                    _ => return corrupt("bad meta flag"),
                };
                let tags = match version {
                    1 => None,
                    _ => match r.bytes()? {
                        [] => None,
                        t if tags::decode(t).is_some() => Some(t.to_vec().into_boxed_slice()),
                        _ => return corrupt("bad tags"),
                    },
                };
                let prompt = match version {
                    1 => None,
                    _ => match r.bytes()? {
                        [] => None,
                        p => Some(p.to_vec()),
                    },
                };
                let renew = match version {
                    1 => 0,
                    _ => match i64::try_from(r.varint()?) {
                        Ok(v) => v,
                        Err(_) => return corrupt("renewal out of range"),
                    },
                };
                let raw = r.bytes()?;
                let row = match quant {
                    Quant::Float32 => {
                        if !raw.len().is_multiple_of(4) {
                            return corrupt("row length is not a multiple of 4");
                        }
                        Row::F32(
                            raw.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect(),
                        )
                    }
                    Quant::Int8 => Row::I8(raw.iter().map(|&b| b as i8).collect()),
                };
                if let Some((prev, prev_row, ..)) = out.last() {
                    if id <= *prev {
                        return corrupt(format!("entry {id} does not come after entry {prev}"));
                    }
                    if row.len() != prev_row.len() {
                        return corrupt(format!(
                            "entry {id} has dimension {}, entry {prev} {}",
                            row.len(),
                            prev_row.len()
                        ));
                    }
                }
                let e = (id, row, resp, meta, exp, tags, prompt, renew);
                check_entry(&e)?;
                out.push(e);
            }
            if let Some((last, ..)) = out.last() {
                if next_id != 0 && next_id <= *last {
                    return corrupt(format!("next_id {next_id} is not past entry {last}"));
                }
            }
            Decoded::Entries(next_id, out)
        }
        KIND_INDEX if version >= 2 => Decoded::Index(
            AnnIndex::decode(Algo::Hnsw, &mut r, false)
                .or_else(|e| corrupt(format!("index: {}", e.0)))?,
        ),
        KIND_IVF_INDEX if version >= 4 => Decoded::Index(
            AnnIndex::decode(Algo::Ivf, &mut r, version >= 5)
                .or_else(|e| corrupt(format!("index: {}", e.0)))?,
        ),
        k => return corrupt(format!("unknown payload kind {k}")),
    };
    if !r.at_end() {
        return corrupt("trailing bytes");
    }
    Ok(decoded)
}

/// An empty bucket as described by a header (entries are pushed with [`push_entries`]).
pub fn bucket_from_header(h: &Header) -> Result<Bucket, CodecError> {
    let mut b = Bucket::new(h.max_items);
    b.set_policy(h.policy);
    b.set_quant(h.quant);
    b.set_algo(h.algo);
    b.restore_dim(h.dim)
        .or_else(|e| corrupt(format!("header: {e}")))?;
    // With entries to come, next_id is restored after them (ids must load in increasing order).
    if h.count == 0 {
        b.restore_next_id(h.next_id);
    }
    Ok(b)
}

/// Attaches a loaded index to the bucket rebuilt from the same value.
pub fn attach_index(b: &mut Bucket, g: AnnIndex) -> Result<(), CodecError> {
    b.attach_index(g)
        .or_else(|e| corrupt(format!("index: {e}")))
}

/// Appends loaded entries (in id order) to a bucket being rebuilt.
pub fn push_entries(
    b: &mut Bucket,
    next_id: u64,
    entries: Vec<LoadedEntry>,
) -> Result<(), CodecError> {
    for (id, row, resp, meta, exp, tags, prompt, renew) in entries {
        let data = EntryData {
            response: resp,
            meta,
            tags,
            expire_at_ms: exp,
            renew_ms: renew,
        };
        b.push_loaded_entry(id, row.as_row(), data)
            .or_else(|e| corrupt(format!("entry {id}: {e}")))?;
        if let Some(p) = prompt {
            if !b.set_prompt(id, &p) {
                return corrupt(format!("entry {id}: prompt held by another entry"));
            }
        }
    }
    b.restore_next_id(next_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bucket {
        let mut b = Bucket::new(4);
        for i in 0..6u8 {
            let meta = (i % 2 == 0).then(|| format!("{{\"i\":{i}}}"));
            let tags = tags::encode(&[(b"user".to_vec(), vec![b'0' + i % 3])]);
            b.insert_entry(
                None,
                &[1.0, f32::from(i), -2.0],
                EntryData {
                    response: vec![i, 0, 255],
                    meta,
                    tags: (i % 2 == 1).then_some(tags).flatten(),
                    expire_at_ms: i64::from(i) * 1000,
                    renew_ms: i64::from(i) * 7,
                },
            )
            .unwrap();
        }
        b.remove(4);
        assert!(b.set_prompt(5, b"what is rust?"));
        b
    }

    fn rebuild(header: &[u8], chunks: &[Vec<u8>]) -> Result<(Header, Bucket), CodecError> {
        let Decoded::Header(h) = decode(header)? else {
            return corrupt("no header");
        };
        let mut b = bucket_from_header(&h)?;
        for c in chunks {
            let Decoded::Entries(next, e) = decode(c)? else {
                return corrupt("not entries");
            };
            push_entries(&mut b, next, e)?;
        }
        Ok((h, b))
    }

    #[test]
    fn roundtrip() {
        let a = sample();
        let header = encode_header(&a, 7, 9);
        let chunks: Vec<Vec<u8>> = entry_chunks(&a).collect();
        assert_eq!(chunks.len(), 1);
        let (h, b) = rebuild(&header, &chunks).unwrap();
        assert_eq!((h.hits, h.misses, h.count), (7, 9, 3));
        assert_eq!(
            a.entries_with_tags().collect::<Vec<_>>(),
            b.entries_with_tags().collect::<Vec<_>>()
        );
        assert_eq!(b.entries_with_tags().filter(|e| e.1.is_some()).count(), 1);
        assert_eq!(b.id_of_prompt(b"what is rust?"), Some(5));
        assert_eq!(b.next_id(), 7);
        assert_eq!(b.max_items(), 4);
        assert_eq!(b.dim(), 3);
    }

    #[test]
    fn empty_bucket_keeps_dim_and_next_id() {
        let mut a = Bucket::new(10);
        a.insert(None, &[1.0, 2.0], vec![], None, 0).unwrap();
        a.remove(1);
        let (_, b) = rebuild(&encode_header(&a, 0, 0), &[]).unwrap();
        assert_eq!((b.dim(), b.next_id(), b.len()), (2, 2, 0));
        let mut b = b;
        assert!(b.insert(None, &[1.0], vec![], None, 0).is_err());
    }

    #[test]
    fn chunks_are_bounded() {
        let mut a = Bucket::new(100);
        let dim = 100_000; // 400 KB per row: 20 rows per 8 MB chunk
        for i in 0..45 {
            let mut v = vec![0.5f32; dim];
            v[i] = 1.0;
            a.insert(None, &v, vec![1; 10], None, 0).unwrap();
        }
        let chunks: Vec<Vec<u8>> = entry_chunks(&a).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        let (_, b) = rebuild(&encode_header(&a, 0, 0), &chunks).unwrap();
        assert_eq!(
            a.entries().collect::<Vec<_>>(),
            b.entries().collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        let a = sample();
        let header = encode_header(&a, 0, 0);
        let chunk = entry_chunks(&a).next().unwrap();
        for cut in 0..chunk.len() {
            assert!(decode(&chunk[..cut]).is_err(), "cut {cut}");
        }
        let mut newer = header.clone();
        newer[0] = CODEC_VERSION + 1;
        assert!(decode(&newer)
            .unwrap_err()
            .0
            .contains("newer than this module"));
        let mut trailing = header.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        // Entries out of id order, or of another dimension, are refused on rebuild.
        let (_, mut b) = rebuild(&header, std::slice::from_ref(&chunk)).unwrap();
        let Decoded::Entries(next, e) = decode(&chunk).unwrap() else {
            panic!()
        };
        assert!(push_entries(&mut b, next, e).is_err());
    }

    fn err_of(buf: &[u8]) -> String {
        decode(buf).unwrap_err().to_string()
    }

    #[test]
    fn garbage_is_not_called_a_newer_version() {
        assert!(err_of(b"garbage").contains("not a semcache payload (first byte 103"));
        assert!(err_of(&[CODEC_VERSION + 1, 0])
            .contains(&format!("encoding version {} is newer", CODEC_VERSION + 1)));
    }

    #[test]
    fn headers_out_of_range_are_refused() {
        let h = |dim: u64, max: u64, next: u64, count: u64| {
            let mut out = vec![CODEC_VERSION, KIND_HEADER];
            for v in [dim, max, next, 0, 0, count] {
                put_varint(&mut out, v);
            }
            out.extend_from_slice(&[0, 0, 0, 0]); // no index, FIFO (2), float32 (3), hnsw (4)
            decode(&out)
        };
        assert!(h(3, 10, 5, 4).is_ok());
        assert!(h(0, 10, 1, 0).is_ok());
        assert!(err_of_r(h(1 << 28, 10, 1, 0)).contains("dimension 268435456 is over"));
        assert!(err_of_r(h(3, 0, 1, 0)).contains("max_items 0 is not between 1 and 1000000"));
        assert!(err_of_r(h(3, 2_000_000, 1, 0)).contains("max_items 2000000"));
        assert!(err_of_r(h(3, 10, 20, 11)).contains("11 entries are more than max_items 10"));
        assert!(err_of_r(h(0, 10, 5, 1)).contains("entries without a dimension"));
        assert!(err_of_r(h(3, 10, 0, 0)).contains("next_id 0 cannot follow"));
        assert!(err_of_r(h(3, 10, 4, 4)).contains("next_id 4 cannot follow 4 entries"));
    }

    fn err_of_r(r: Result<Decoded, CodecError>) -> String {
        r.unwrap_err().to_string()
    }

    fn one_entry(id: u64, row: &[f32], meta: Option<&str>) -> Vec<u8> {
        encode_entries(
            0,
            Quant::Float32,
            &[((id, RowRef::F32(row), b"r", meta, 0), None, None, 0)],
        )
    }

    #[test]
    fn entries_that_set_could_not_make_are_refused() {
        assert!(decode(&one_entry(1, &[0.6, 0.8], Some("{}"))).is_ok());
        let cases: [(Vec<u8>, &str); 7] = [
            (one_entry(0, &[1.0], None), "entry id 0 is never issued"),
            (one_entry(u64::MAX, &[1.0], None), "is never issued"),
            (
                one_entry(1, &[1.0], Some("[1]")),
                "META must be a JSON object",
            ),
            (one_entry(1, &[], None), "empty vector"),
            (
                one_entry(1, &[f32::NAN, 1.0], None),
                "NaN or Inf at index 0",
            ),
            (one_entry(1, &[0.0, 0.0], None), "has norm 0, not 1"),
            (one_entry(1, &[3.0, 4.0], None), "has norm 5, not 1"),
        ];
        for (buf, want) in cases {
            let e = err_of(&buf);
            assert!(e.contains(want), "{e} / {want}");
        }
        let two = |a: (u64, &[f32]), b: (u64, &[f32]), next| {
            encode_entries(
                next,
                Quant::Float32,
                &[
                    ((a.0, RowRef::F32(a.1), b"", None, 0), None, None, 0),
                    ((b.0, RowRef::F32(b.1), b"", None, 0), None, None, 0),
                ],
            )
        };
        assert!(err_of(&two((2, &[1.0]), (2, &[1.0]), 0))
            .contains("entry 2 does not come after entry 2"));
        assert!(err_of(&two((1, &[1.0]), (2, &[0.0, 1.0]), 0)).contains("dimension 2, entry 1 1"));
        assert!(err_of(&two((1, &[1.0]), (2, &[1.0]), 2)).contains("next_id 2 is not past entry 2"));
        assert!(decode(&two((1, &[1.0]), (2, &[1.0]), 3)).is_ok());
    }

    use proptest::prelude::*;

    fn bucket_strategy() -> impl Strategy<Value = Bucket> {
        (
            1usize..20,
            1usize..6,
            proptest::collection::vec(
                (
                    proptest::collection::vec(-10f32..10.0, 6),
                    proptest::collection::vec(any::<u8>(), 0..20),
                    proptest::option::of("[a-z]{1,5}"),
                    0i64..1 << 50,
                ),
                0..25,
            ),
            proptest::collection::vec(any::<u64>(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(max, dim, rows, removals, int8)| {
                let mut b = Bucket::new(max);
                b.set_quant(if int8 { Quant::Int8 } else { Quant::Float32 });
                for (row, resp, meta, exp) in rows {
                    let mut v = row[..dim].to_vec();
                    v[0] += 20.0; // never a zero vector
                    let meta = meta.map(|k| format!("{{\"{k}\":1}}"));
                    b.insert(None, &v, resp, meta, exp).unwrap();
                }
                for r in removals {
                    let n = b.next_id();
                    b.remove(r % n);
                }
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(200)))]

        #[test]
        fn prop_buckets_round_trip(b in bucket_strategy(), hits in any::<u64>()) {
            let chunks: Vec<Vec<u8>> = entry_chunks(&b).collect();
            let (h, back) = rebuild(&encode_header(&b, hits, 3), &chunks).unwrap();
            prop_assert_eq!((h.hits, h.misses), (hits, 3));
            prop_assert_eq!(b.entries().collect::<Vec<_>>(), back.entries().collect::<Vec<_>>());
            prop_assert_eq!((back.dim(), back.max_items()), (b.dim(), b.max_items()));
            prop_assert_eq!(back.quant(), b.quant());
            prop_assert_eq!(back.next_id(), b.next_id());
        }

        #[test]
        fn prop_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
            let mut v = data;
            if v.len() >= 2 {
                v[0] = CODEC_VERSION;
                v[1] %= 2;
                let _ = decode(&v);
                // An entries payload of int8 rows.
                if v.len() >= 4 {
                    v[1] = KIND_ENTRIES;
                    v[3] = Quant::Int8.code();
                    let _ = decode(&v);
                }
            }
        }

        /// Byte edits and truncations of valid payloads never panic; what is accepted
        /// rebuilds a bucket (or is refused by the rebuild) without a panic either.
        #[test]
        fn prop_mutations_never_panic(
            b in bucket_strategy(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
            cut in any::<usize>(),
        ) {
            let header = encode_header(&b, 1, 2);
            let mut chunks: Vec<Vec<u8>> = entry_chunks(&b).collect();
            let mut all = vec![header.clone()];
            all.append(&mut chunks);
            let which = cut % all.len();
            let buf = &mut all[which];
            crate::conv::message::strategies::apply_edits(buf, &edits);
            let n = buf.len();
            buf.truncate(n - (cut / 7) % 2 * (cut % n));
            if let Ok(Decoded::Entries(_, entries)) = decode(&all[which]) {
                for e in &entries {
                    prop_assert!(check_entry(e).is_ok());
                }
            }
            let _ = rebuild(&all[0], &all[1..]);
        }
    }

    #[test]
    fn index_roundtrip() {
        let mut a = Bucket::new(300);
        a.create_index();
        for i in 0..400u32 {
            let v: Vec<f32> = (0..8)
                .map(|j| ((i * 7 + j * 13) % 17) as f32 - 8.0)
                .collect();
            if a.insert(None, &v, vec![1], None, 0).is_ok() {
                a.index_pending(8);
            }
        }
        let header = encode_header(&a, 0, 0);
        let chunks: Vec<Vec<u8>> = entry_chunks(&a).collect();
        let index = encode_index(&a).unwrap();
        let (h, mut b) = rebuild(&header, &chunks).unwrap();
        assert!(h.has_index);
        let Decoded::Index(g) = decode(&index).unwrap() else {
            panic!("index payload expected")
        };
        attach_index(&mut b, g).unwrap();
        assert_eq!(encode_index(&b).unwrap(), index);
        assert!(encode_index(&Bucket::new(3)).is_none());
        for cut in 0..index.len() {
            assert!(decode(&index[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn int8_buckets_round_trip_and_bad_rows_are_refused() {
        let mut a = Bucket::new(10);
        a.set_quant(Quant::Int8);
        for i in 0..4u8 {
            a.insert(None, &[1.0, f32::from(i), -0.5], vec![i], None, 0)
                .unwrap();
        }
        let header = encode_header(&a, 1, 2);
        let chunks: Vec<Vec<u8>> = entry_chunks(&a).collect();
        let (h, b) = rebuild(&header, &chunks).unwrap();
        assert_eq!(h.quant, Quant::Int8);
        assert_eq!(b.quant(), Quant::Int8);
        assert_eq!(
            a.entries().collect::<Vec<_>>(),
            b.entries().collect::<Vec<_>>()
        );
        // Rows are dim bytes each: 4 entries of 3 codes, where float32 takes 12 bytes each.
        let mut f = Bucket::new(10);
        for i in 0..4u8 {
            f.insert(None, &[1.0, f32::from(i), -0.5], vec![i], None, 0)
                .unwrap();
        }
        let f_len: usize = entry_chunks(&f).map(|c| c.len()).sum();
        assert_eq!(f_len - chunks[0].len(), 4 * (12 - 3));
        // Int8 entries into a float32 bucket (and back) are refused by the rebuild.
        assert!(rebuild(&encode_header(&f, 0, 0), &chunks)
            .unwrap_err()
            .0
            .contains("vector kind int8 does not match the cache's vector kind float32"));
        // An all-zero code has no direction.
        let zero = encode_entries(
            0,
            Quant::Int8,
            &[((1, RowRef::I8(&[0, 0], 0.0), b"", None, 0), None, None, 0)],
        );
        assert!(err_of(&zero).contains("entry 1: int8 vector is all zeros"));
        // An unknown kind, in a header or an entries payload.
        let mut bad = header.clone();
        let at = bad.len() - 2; // quant, then algo (version 4)
        bad[at] = 2;
        assert!(err_of(&bad).contains("unknown vector kind"));
        let mut bad = header.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(err_of(&bad).contains("unknown index algorithm"));
        let mut bad = chunks[0].clone();
        bad[3] = 9;
        assert!(err_of(&bad).contains("unknown vector kind"));
    }

    /// A version-2 payload (before QUANT) loads as float32.
    #[test]
    fn loads_version_2_payloads_as_float32() {
        // Header: dim 2, max 10, next_id 3, hits 4, misses 5, count 1, no index, LRU.
        let header = [2u8, 0, 2, 10, 3, 4, 5, 1, 0, 1];
        // Entries: next_id 3, one entry id 2, expiry 0, "ok", no meta, no tags, no prompt,
        // renew 0, row [0.6, 0.8].
        let mut entries = vec![2u8, 1, 3, 1, 2];
        entries.extend_from_slice(&0i64.to_le_bytes());
        entries.extend_from_slice(&[2, b'o', b'k', 0, 0, 0, 0, 8]);
        for x in [0.6f32, 0.8] {
            entries.extend_from_slice(&x.to_le_bytes());
        }
        let (h, b) = rebuild(&header, &[entries]).unwrap();
        assert_eq!((h.quant, h.policy), (Quant::Float32, EvictPolicy::Lru));
        assert_eq!(b.get(2).unwrap().1, RowRef::F32(&[0.6, 0.8]));
        assert_eq!(b.quant(), Quant::Float32);
    }

    /// A payload written by version 1 of the codec (before the index): the header has no
    /// index flag. It still loads, as a bucket without an index.
    #[test]
    fn loads_version_1_payloads() {
        // Header: dim 2, max 10, next_id 3, hits 4, misses 5, count 1.
        let header = [1u8, 0, 2, 10, 3, 4, 5, 1];
        // Entries: next_id 3, one entry id 2, expiry 0, response "ok", no meta, row [0.6, 0.8].
        let mut entries = vec![1u8, 1, 3, 1, 2];
        entries.extend_from_slice(&0i64.to_le_bytes());
        entries.extend_from_slice(&[2, b'o', b'k', 0, 8]);
        for x in [0.6f32, 0.8] {
            entries.extend_from_slice(&x.to_le_bytes());
        }
        let (h, b) = rebuild(&header, &[entries.clone()]).unwrap();
        assert_eq!(
            h,
            Header {
                dim: 2,
                max_items: 10,
                next_id: 3,
                hits: 4,
                misses: 5,
                count: 1,
                has_index: false,
                policy: EvictPolicy::Fifo,
                quant: Quant::Float32,
                algo: Algo::Hnsw,
            }
        );
        assert_eq!(b.get(2).unwrap().2, b"ok");
        assert_eq!(b.next_id(), 3);
        assert!(!b.has_index());
        // Version 1 knows no index payload kind.
        let mut v1_index = encode_index(&{
            let mut x = Bucket::new(4);
            x.create_index();
            x.insert(None, &[1.0, 0.0], vec![], None, 0).unwrap();
            x.index_pending(1);
            x
        })
        .unwrap();
        v1_index[0] = 1;
        assert!(decode(&v1_index)
            .unwrap_err()
            .0
            .contains("unknown payload kind 2"));
    }
}
