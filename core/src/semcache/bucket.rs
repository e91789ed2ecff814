//! One semantic-cache bucket: the entries stored under one cache key, without
//! any server call. Everything is deterministic given explicit inputs: the
//! current time (`now_ms`) is always passed in, never read here.
//!
//! # Layout
//!
//! Entries live in fixed-size chunks of `chunk_rows` entries (~[`CHUNK_BYTES`]
//! of vectors each): a chunk holds a contiguous row-major block of
//! *normalised* f32 rows with the ids and expiries (0 = never) of those rows.
//! Every chunk but the last is full. Each chunk is its own `Arc`: a
//! [`BucketSnapshot`] shares all of them with a background scan, and a
//! mutation while a snapshot is alive copies only the chunks it touches (an
//! insert the last chunk; a removal the removed row's chunk and the last one),
//! so copy-on-write costs at most two chunks, whatever the bucket size.
//! `responses` (binary safe) and `metas` are bucket-wide columns, indexed by
//! physical row.
//!
//! **Physical order is not insertion order.** Ids are issued in increasing
//! order and never reused, so insertion order *is* id order; removals use
//! `swap_remove` and eviction overwrites the oldest slot, which keeps every
//! mutation O(dim) instead of shifting the whole (possibly hundreds of MB)
//! block. [`Bucket::entries`] yields entries in id (= insertion) order, which
//! is what serialisation and replay need. A [`Hit::index`] is the physical
//! row index at the time of the search.
//!
//! # Memory
//!
//! Per entry: `4 * dim` vector bytes, the response, meta and tag bytes, and 84
//! bytes of columns (id 8, expiry 8, boxed response 16, boxed meta 16, boxed tags 16,
//! renewal 8, hit count 4, last use 8), plus
//! ~120 bytes per chunk. Capacity: when `max_items * dim * 4 <=
//! EXACT_RESERVE_BYTES` every column and chunk is reserved at its final size
//! when first needed (no slack ever); otherwise the columns and the last chunk
//! grow by 1.5x, capped at what `max_items` (and the chunk size) allows, so a
//! full bucket has no slack either, and a bucket that shrank to less than half
//! of its capacity gives memory back. Responses and metas are stored as
//! exact-size boxes.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::ann::{Algo, AnnIndex, Candidate, Effort, Want};
use super::lru::UseOrder;
use super::tags::{self, Pair};
use crate::vector::{self, VectorError};

/// Tolerance of the similarity threshold: an entry hits when
/// `clamp(score, -1, 1) >= min_sim - SCORE_EPSILON`. Float32 dot products of
/// normalised vectors are within ~1e-7 of the exact value for embedding
/// dimensions, so an entry whose stored vector equals the query (exact
/// similarity 1) hits at `min_sim = 1.0`, while a similarity 1e-5 below the
/// threshold misses.
pub const SCORE_EPSILON: f32 = 1e-6;

/// Buckets whose full vector block (`max_items * dim * 4`) is at most this
/// many bytes reserve each column and chunk at its final size when first
/// needed (all `max_items` rows once the first chunks fill).
pub const EXACT_RESERVE_BYTES: usize = 4 << 20;

/// Smallest growth step, in rows, of a bucket that grows amortised.
const MIN_GROW_ROWS: usize = 16;

/// One search result. `index` is the physical row at the time of the search
/// (for a snapshot: in the snapshot); `id` is stable and is what a caller
/// re-resolves after a background scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub id: u64,
    pub score: f32,
}

/// Which entry a full bucket drops for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictPolicy {
    /// The oldest (smallest id).
    #[default]
    Fifo,
    /// The least recently used (answered a lookup, or was inserted).
    Lru,
    /// The fewest hits; ties: the least recently used.
    Lfu,
}

impl EvictPolicy {
    pub fn name(self) -> &'static str {
        match self {
            EvictPolicy::Fifo => "fifo",
            EvictPolicy::Lru => "lru",
            EvictPolicy::Lfu => "lfu",
        }
    }

    pub fn parse(text: &[u8]) -> Option<EvictPolicy> {
        match text.to_ascii_lowercase().as_slice() {
            b"fifo" => Some(EvictPolicy::Fifo),
            b"lru" => Some(EvictPolicy::Lru),
            b"lfu" => Some(EvictPolicy::Lfu),
            _ => None,
        }
    }

    /// The persisted code (codec header).
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<EvictPolicy> {
        [EvictPolicy::Fifo, EvictPolicy::Lru, EvictPolicy::Lfu]
            .get(code as usize)
            .copied()
    }
}

/// How a bucket stores its vectors, chosen by the first SET (`QUANT`) and fixed from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quant {
    /// Normalised float32 rows (`4 * dim` bytes).
    #[default]
    Float32,
    /// Per-vector symmetric int8 codes (the largest |element| maps to 127) and `1 / |code|`
    /// (`dim + 4` bytes): `code * inv_norm` is the unit vector the entry stands for, and
    /// every score is the exact cosine of the query with it.
    Int8,
}

impl Quant {
    pub fn name(self) -> &'static str {
        match self {
            Quant::Float32 => "float32",
            Quant::Int8 => "int8",
        }
    }

    pub fn parse(text: &[u8]) -> Option<Quant> {
        match text.to_ascii_lowercase().as_slice() {
            b"float32" => Some(Quant::Float32),
            b"int8" => Some(Quant::Int8),
            _ => None,
        }
    }

    /// The persisted code (codec header and entry payloads).
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Quant> {
        [Quant::Float32, Quant::Int8].get(code as usize).copied()
    }

    /// Bytes one row of dimension `dim` takes.
    pub fn row_bytes(self, dim: usize) -> usize {
        match self {
            Quant::Float32 => dim * std::mem::size_of::<f32>(),
            Quant::Int8 => dim + std::mem::size_of::<f32>(),
        }
    }
}

/// A stored row: a normalised float32 vector, or an int8 code with `1 / |code|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowRef<'a> {
    F32(&'a [f32]),
    I8(&'a [i8], f32),
}

impl RowRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            RowRef::F32(v) => v.len(),
            RowRef::I8(c, _) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn quant(&self) -> Quant {
        match self {
            RowRef::F32(_) => Quant::Float32,
            RowRef::I8(..) => Quant::Int8,
        }
    }

    /// The unit vector the row stands for.
    pub fn to_f32(&self) -> Vec<f32> {
        match *self {
            RowRef::F32(v) => v.to_vec(),
            RowRef::I8(c, inv) => c.iter().map(|&x| f32::from(x) * inv).collect(),
        }
    }

    /// The exact similarity of a normalised query with the row, clamped to [-1, 1].
    #[inline]
    pub fn score(&self, query: &[f32]) -> f32 {
        match *self {
            RowRef::F32(v) => vector::dot(query, v),
            RowRef::I8(c, inv) => vector::dot_f32_i8(query, c) * inv,
        }
        .clamp(-1.0, 1.0)
    }
}

/// An owned stored row, as decoded from a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

impl Row {
    pub fn len(&self) -> usize {
        match self {
            Row::F32(v) => v.len(),
            Row::I8(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The borrowed row (an int8 code's `1 / |code|` computed here).
    pub fn as_row(&self) -> RowRef<'_> {
        match self {
            Row::F32(v) => RowRef::F32(v),
            Row::I8(c) => RowRef::I8(c, vector::code_inv_norm(c)),
        }
    }
}

/// The int8 row of a unit vector: its code (written to `code`) and `1 / |code|`.
pub fn quantize_row(unit: &[f32], code: &mut [i8]) -> f32 {
    vector::quantize_i8(unit, code);
    vector::code_inv_norm(code)
}

/// What an entry holds besides its id and vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryData {
    pub response: Vec<u8>,
    /// A JSON object's compact text.
    pub meta: Option<String>,
    /// The tag blob ([`tags::encode`]).
    pub tags: Option<Box<[u8]>>,
    /// 0 = never.
    pub expire_at_ms: i64,
    /// What GET ... TOUCH renews the expiry by (0 = nothing).
    pub renew_ms: i64,
}

/// Result of [`Bucket::insert`]: the new entry's id and the ids evicted to
/// make room (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    pub id: u64,
    pub evicted: Vec<u64>,
}

/// `(id, normalised row, response, meta, expire_at_ms)`.
pub type EntryView<'a> = (u64, RowRef<'a>, &'a [u8], Option<&'a str>, i64);

/// An entry with its tag blob, prompt and renewal duration, for serialisation.
pub type FullView<'a> = (EntryView<'a>, Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Errors of bucket operations; `Display` gives the user-facing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketError {
    /// The vector's dimension differs from the bucket's.
    DimMismatch { expected: usize, got: usize },
    /// An explicit id not greater than every id already issued.
    IdNotIncreasing { id: u64, last: u64 },
    /// No id is left (an explicit id of `u64::MAX`, or 2^64 - 1 inserts).
    IdExhausted,
    /// The vector cannot be normalised (empty, NaN/Inf, zero norm).
    Vector(VectorError),
    /// `push_loaded` beyond `max_items`.
    Full { max_items: usize },
    /// A loaded row of another kind than the bucket's.
    QuantMismatch { bucket: Quant, row: Quant },
    /// A loaded int8 row that is all zeros (no direction).
    ZeroCode,
}

impl fmt::Display for BucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketError::DimMismatch { expected, got } => write!(
                f,
                "vector dimension {got} does not match the cache dimension {expected}"
            ),
            BucketError::IdNotIncreasing { id, last } => write!(
                f,
                "entry id {id} is not greater than the last issued id {last}"
            ),
            BucketError::IdExhausted => write!(f, "entry ids exhausted"),
            BucketError::Vector(e) => e.fmt(f),
            BucketError::Full { max_items } => {
                write!(f, "cache bucket is full ({max_items} items)")
            }
            BucketError::QuantMismatch { bucket, row } => write!(
                f,
                "vector kind {} does not match the cache's vector kind {}",
                row.name(),
                bucket.name()
            ),
            BucketError::ZeroCode => write!(f, "int8 vector is all zeros"),
        }
    }
}

impl std::error::Error for BucketError {}

impl From<VectorError> for BucketError {
    fn from(e: VectorError) -> Self {
        BucketError::Vector(e)
    }
}

/// Target vector bytes of one chunk: the most a copy-on-write copies per
/// touched chunk (~0.1-0.3 ms of memcpy).
pub const CHUNK_BYTES: usize = 2 << 20;

/// Rows per chunk for a row size: ~[`CHUNK_BYTES`] of vectors, a multiple of
/// 4 and at least 4. (The AVX2 scan scores rows by fours from the start of
/// each slice it is given, so chunks that start at multiples of 4 score every
/// row exactly as one contiguous block did.)
fn chunk_rows_for(row_bytes: usize) -> usize {
    (CHUNK_BYTES / row_bytes.max(1) / 4 * 4).max(4)
}

#[inline]
fn is_expired(expire_at_ms: i64, now_ms: i64) -> bool {
    expire_at_ms != 0 && expire_at_ms <= now_ms
}

/// Up to `chunk_rows` consecutive entries: their rows, ids and expiries.
/// Shared with snapshots; copied on write only while shared.
#[derive(Debug, Default)]
struct Chunk {
    quant: Quant,
    /// Float32 rows (a [`Quant::Float32`] chunk).
    rows: Vec<f32>,
    /// Int8 codes and their `1 / |code|` (a [`Quant::Int8`] chunk).
    codes: Vec<i8>,
    inv_norms: Vec<f32>,
    ids: Vec<u64>,
    expire_at_ms: Vec<i64>,
    /// Each row's tag blob (see `tags.rs`): here rather than bucket-wide, so that a
    /// background scan of a snapshot can apply a FILTER.
    tags: Vec<Option<Box<[u8]>>>,
    /// The smallest id in `ids` (`u64::MAX` when empty): the oldest entry of a bucket is
    /// found from one value per chunk, not from every id.
    min_id: u64,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Rows the chunk holds without reallocating.
    fn cap_rows(&self) -> usize {
        self.ids.capacity()
    }

    fn new(quant: Quant) -> Chunk {
        Chunk {
            quant,
            min_id: u64::MAX,
            ..Chunk::default()
        }
    }

    /// Keeps `min_id` right when the id `old` leaves the chunk (and `new`, if any, comes):
    /// a pass over the ids only when the minimum itself left.
    fn replaced_id(&mut self, old: u64, new: Option<u64>) {
        if old == self.min_id {
            self.min_id = self.ids.iter().copied().min().unwrap_or(u64::MAX);
        } else if let Some(n) = new {
            self.min_id = self.min_id.min(n);
        }
    }

    fn reserve_exact(&mut self, rows: usize, dim: usize) {
        match self.quant {
            Quant::Float32 => self.rows.reserve_exact(rows * dim),
            Quant::Int8 => {
                self.codes.reserve_exact(rows * dim);
                self.inv_norms.reserve_exact(rows);
            }
        }
        self.ids.reserve_exact(rows);
        self.expire_at_ms.reserve_exact(rows);
        self.tags.reserve_exact(rows);
    }

    /// A copy with the same capacity, so that the copy is not regrown.
    fn copy(&self, dim: usize) -> Chunk {
        let mut c = Chunk::new(self.quant);
        c.reserve_exact(self.cap_rows(), dim);
        c.rows.extend_from_slice(&self.rows);
        c.codes.extend_from_slice(&self.codes);
        c.inv_norms.extend_from_slice(&self.inv_norms);
        c.min_id = self.min_id;
        c.ids.extend_from_slice(&self.ids);
        c.expire_at_ms.extend_from_slice(&self.expire_at_ms);
        c.tags.extend(self.tags.iter().cloned());
        c
    }

    fn push(&mut self, id: u64, row: RowRef, expire_at_ms: i64, tags: Option<Box<[u8]>>) {
        match row {
            RowRef::F32(v) => self.rows.extend_from_slice(v),
            RowRef::I8(c, inv) => {
                self.codes.extend_from_slice(c);
                self.inv_norms.push(inv);
            }
        }
        self.ids.push(id);
        self.expire_at_ms.push(expire_at_ms);
        self.tags.push(tags);
        self.min_id = self.min_id.min(id);
    }

    #[inline]
    fn row(&self, o: usize, dim: usize) -> RowRef<'_> {
        match self.quant {
            Quant::Float32 => RowRef::F32(&self.rows[o * dim..(o + 1) * dim]),
            Quant::Int8 => RowRef::I8(&self.codes[o * dim..(o + 1) * dim], self.inv_norms[o]),
        }
    }

    /// Overwrites row `o` with row `from` of `src` (which may be this chunk's
    /// own row when called through [`Chunk::move_row`]).
    fn set_row(&mut self, o: usize, src: &Chunk, from: usize, dim: usize) {
        match src.row(from, dim) {
            RowRef::F32(v) => self.rows[o * dim..(o + 1) * dim].copy_from_slice(v),
            RowRef::I8(c, inv) => {
                self.codes[o * dim..(o + 1) * dim].copy_from_slice(c);
                self.inv_norms[o] = inv;
            }
        }
        let old = std::mem::replace(&mut self.ids[o], src.ids[from]);
        self.replaced_id(old, Some(src.ids[from]));
        self.expire_at_ms[o] = src.expire_at_ms[from];
        self.tags[o] = src.tags[from].clone();
    }

    fn move_row(&mut self, from: usize, to: usize, dim: usize) {
        match self.quant {
            Quant::Float32 => self
                .rows
                .copy_within(from * dim..(from + 1) * dim, to * dim),
            Quant::Int8 => {
                self.codes
                    .copy_within(from * dim..(from + 1) * dim, to * dim);
                self.inv_norms[to] = self.inv_norms[from];
            }
        }
        let moved = self.ids[from];
        let old = std::mem::replace(&mut self.ids[to], moved);
        self.replaced_id(old, Some(moved));
        self.expire_at_ms[to] = self.expire_at_ms[from];
        self.tags[to] = self.tags[from].take();
    }

    fn truncate(&mut self, rows: usize, dim: usize) {
        if self.ids[rows.min(self.ids.len())..].contains(&self.min_id) {
            self.ids.truncate(rows);
            self.replaced_id(self.min_id, None);
        }
        self.rows.truncate(rows * dim);
        self.codes.truncate(rows * dim);
        self.inv_norms.truncate(rows);
        self.ids.truncate(rows);
        self.expire_at_ms.truncate(rows);
        self.tags.truncate(rows);
    }

    fn shrink_to(&mut self, rows: usize, dim: usize) {
        self.rows.shrink_to(rows * dim);
        self.codes.shrink_to(rows * dim);
        self.inv_norms.shrink_to(rows);
        self.ids.shrink_to(rows);
        self.expire_at_ms.shrink_to(rows);
        self.tags.shrink_to(rows);
    }

    /// Heap bytes including the `Arc` allocation that holds the chunk.
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        2 * size_of::<usize>()
            + size_of::<Chunk>()
            + self.rows.capacity() * size_of::<f32>()
            + self.codes.capacity()
            + self.inv_norms.capacity() * size_of::<f32>()
            + self.ids.capacity() * size_of::<u64>()
            + self.expire_at_ms.capacity() * size_of::<i64>()
            + self.tags.capacity() * size_of::<Option<Box<[u8]>>>()
            + self.tags.iter().flatten().map(|t| t.len()).sum::<usize>()
    }
}

/// The chunk, made unique first (copy-on-write, the `Arc::make_mut`
/// semantics, but keeping the capacity).
fn unique(chunk: &mut Arc<Chunk>, dim: usize) -> &mut Chunk {
    if Arc::get_mut(chunk).is_none() {
        *chunk = Arc::new(chunk.copy(dim));
    }
    Arc::get_mut(chunk).expect("unique after copy")
}

/// The chunked rows a search reads (a bucket's or a snapshot's).
struct Rows<'a> {
    chunks: &'a [Arc<Chunk>],
    chunk_rows: usize,
    dim: usize,
    quant: Quant,
}

/// The search shared by [`Bucket::search`] and [`BucketSnapshot::search`]:
/// one scan per chunk.
fn search_rows(
    rows: Rows<'_>,
    query: &[f32],
    min_sim: f32,
    k: usize,
    now_ms: i64,
    filter: &[Pair],
) -> Vec<Hit> {
    let Rows {
        chunks,
        chunk_rows,
        dim,
        quant,
    } = rows;
    if k == 0 || chunks.is_empty() || dim == 0 || query.len() != dim {
        return Vec::new();
    }
    if quant == Quant::Int8 {
        return search_codes(rows, query, min_sim, k, now_ms, filter);
    }
    let threshold = min_sim - SCORE_EPSILON;
    let mut scores = Vec::with_capacity(chunks[0].len());
    let mut hits: Vec<Hit> = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        vector::scan_dots(&chunk.rows, dim, query, &mut scores);
        let base = c * chunk_rows;
        hits.extend(scores.iter().enumerate().filter_map(|(o, &s)| {
            let score = s.clamp(-1.0, 1.0);
            if score.is_nan() || score < threshold || is_expired(chunk.expire_at_ms[o], now_ms) {
                return None;
            }
            if !tags::matches(chunk.tags[o].as_deref(), filter) {
                return None;
            }
            Some(Hit {
                index: base + o,
                id: chunk.ids[o],
                score,
            })
        }));
    }
    best_k(hits, k)
}

/// Best score first; equal scores: newer (greater id) first.
fn hit_order(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(b.id.cmp(&a.id))
}

fn best_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, hit_order);
        hits.truncate(k);
    }
    hits.sort_unstable_by(hit_order);
    hits
}

/// The scan of an int8 bucket: integer dot products with the query's own int8 code, then
/// the exact score of every row that can be among the answers. The int8 score is the exact
/// one of the quantized query, so it is off by at most `|query - quantized query|` (the
/// rows are unit vectors): a row whose int8 score is below the threshold, or below the
/// k-th best int8 score, by more than that (twice that for the k-th) cannot answer. The
/// answer is thus exactly that of an exact scan of the stored (dequantized) vectors.
fn search_codes(
    rows: Rows<'_>,
    query: &[f32],
    min_sim: f32,
    k: usize,
    now_ms: i64,
    filter: &[Pair],
) -> Vec<Hit> {
    let Rows {
        chunks,
        chunk_rows,
        dim,
        ..
    } = rows;
    let threshold = min_sim - SCORE_EPSILON;
    let mut qcode = vec![0i8; dim];
    let qscale = vector::quantize_i8(query, &mut qcode);
    // |query - its code|, in 4 independent float64 sums (a bound with 1e-5 of slack: the
    // summation order does not matter, a serial chain of 1536 adds did, ~2.5 µs).
    let mut sums = [0.0f64; 4];
    let (xs, cs) = (query.chunks_exact(4), qcode.chunks_exact(4));
    let tail: f64 = xs
        .remainder()
        .iter()
        .zip(cs.remainder())
        .map(|(&x, &c)| (f64::from(x) - f64::from(c) * f64::from(qscale)).powi(2))
        .sum();
    for (x, c) in xs.zip(cs) {
        for k in 0..4 {
            let d = f64::from(x[k]) - f64::from(c[k]) * f64::from(qscale);
            sums[k] += d * d;
        }
    }
    let err = (sums.iter().sum::<f64>() + tail).sqrt() as f32 + 1e-5;
    let mut cands: Vec<Hit> = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        let base = c * chunk_rows;
        for (o, (code, &inv)) in chunk
            .codes
            .chunks_exact(dim)
            .zip(&chunk.inv_norms)
            .enumerate()
        {
            let approx = vector::dot_i8(&qcode, code) as f32 * qscale * inv;
            if approx < threshold - err || is_expired(chunk.expire_at_ms[o], now_ms) {
                continue;
            }
            if !tags::matches(chunk.tags[o].as_deref(), filter) {
                continue;
            }
            cands.push(Hit {
                index: base + o,
                id: chunk.ids[o],
                score: approx,
            });
        }
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, hit_order);
        let kth = cands[k - 1].score;
        cands.retain(|h| h.score >= kth - 2.0 * err);
    }
    let hits: Vec<Hit> = cands
        .into_iter()
        .filter_map(|h| {
            let chunk = &chunks[h.index / chunk_rows];
            let score = chunk.row(h.index % chunk_rows, dim).score(query);
            (!score.is_nan() && score >= threshold).then_some(Hit { score, ..h })
        })
        .collect();
    best_k(hits, k)
}

/// A row or node number that is none.
const NONE: u32 = u32::MAX;

/// Candidates an index lookup keeps beyond `k`, so that a few expired or below-threshold
/// nodes do not shorten the answer.
const INDEX_SPARE: usize = 8;

/// Index candidates (best by int8 similarity) re-scored with their stored rows, at least:
/// int8 similarities are within ~0.01 of the exact ones, far less than what separates
/// the 16th candidate from the first. (Each re-score reads a row from memory: 24 cache
/// lines of a 384-dim float row, the cost of ~4 graph steps.)
const RESCORE_MIN: usize = 16;

/// The approximate nearest-neighbour index of a big bucket (HNSW graph or inverted lists)
/// whose nodes are stable slots, and the maps between them and the (moving) physical rows.
#[derive(Debug, Clone)]
struct BucketIndex {
    graph: AnnIndex,
    /// By node slot: its physical row (`NONE` for a free slot).
    node_row: Vec<u32>,
    /// By physical row: its node (`NONE` while not yet indexed).
    row_node: Vec<u32>,
    /// Rows not yet in the graph; index lookups wait until this is 0.
    unindexed: usize,
}

impl BucketIndex {
    fn heap_bytes(&self) -> usize {
        self.graph.heap_bytes() + (self.node_row.capacity() + self.row_node.capacity()) * 4
    }
}

/// The entries of one semantic-cache key. See the module docs for layout and
/// memory policy.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// 0 until the first entry fixes it; fixed from then on, even when empty.
    dim: usize,
    /// Entries per chunk; set with `dim`.
    chunk_rows: usize,
    /// How rows are stored: set before the first entry, fixed from then on.
    quant: Quant,
    max_items: usize,
    next_id: u64,
    /// Every chunk but the last holds `chunk_rows` entries; the last at least
    /// one; none when the bucket is empty.
    chunks: Vec<Arc<Chunk>>,
    responses: Vec<Box<[u8]>>,
    metas: Vec<Option<Box<str>>>,
    /// By row: the duration a TOUCH renews the entry's expiry by (0 = none).
    renew_ms: Vec<i64>,
    /// By row: lookups the entry answered, and the use clock at its last one (or its
    /// insert). Changed by reads (hence `Cell`); neither persisted nor replicated: the
    /// primary's evictions reach replicas as SEMCACHE.DEL.
    hit_counts: Vec<Cell<u32>>,
    last_use: Vec<Cell<u64>>,
    /// Rows in the order of `last_use`: LRU's victim is the first. (`last_use` stays: LFU
    /// breaks its ties with it in one pass over a contiguous column.)
    use_order: UseOrder,
    use_clock: Cell<u64>,
    policy: EvictPolicy,
    /// A lower bound of the entries' expiry times (0 = no entry expires), so the expiry sweep
    /// that every SET runs costs nothing until something can have expired.
    earliest_expiry_ms: i64,
    /// Lookup counters, maintained by the caller.
    pub hits: u64,
    pub misses: u64,
    index: Option<BucketIndex>,
    /// The algorithm of the index (when the bucket gets one): set before the first entry.
    algo: Algo,
    /// Exact prompts (`PROMPT text`): text -> id, and id -> text for removals. Empty (and
    /// free) for buckets whose entries have none.
    prompt_ids: HashMap<Box<[u8]>, u64>,
    id_prompts: HashMap<u64, Box<[u8]>>,
}

impl Bucket {
    /// An empty bucket holding at most `max_items` entries (0 is taken as 1).
    pub fn new(max_items: usize) -> Bucket {
        Bucket {
            dim: 0,
            chunk_rows: 0,
            quant: Quant::Float32,
            max_items: max_items.max(1),
            next_id: 1,
            chunks: Vec::new(),
            responses: Vec::new(),
            metas: Vec::new(),
            renew_ms: Vec::new(),
            hit_counts: Vec::new(),
            last_use: Vec::new(),
            use_order: UseOrder::default(),
            use_clock: Cell::new(0),
            policy: EvictPolicy::Fifo,
            earliest_expiry_ms: 0,
            hits: 0,
            misses: 0,
            index: None,
            algo: Algo::Hnsw,
            prompt_ids: HashMap::new(),
            id_prompts: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// The vector dimension, 0 while no entry ever fixed it.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The id the next `insert(None, ..)` will issue (serialised with the
    /// bucket so that ids are never reused across a restart).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// After an RDB load: raises `next_id` to the saved value (never lowers
    /// it below the ids already present).
    pub fn restore_next_id(&mut self, next_id: u64) {
        self.next_id = self.next_id.max(next_id);
    }

    fn check_dim(&self, got: usize) -> Result<(), BucketError> {
        if got == 0 {
            return Err(BucketError::Vector(VectorError::Empty));
        }
        if self.dim != 0 && got != self.dim {
            return Err(BucketError::DimMismatch {
                expected: self.dim,
                got,
            });
        }
        Ok(())
    }

    /// Fixes the dimension (and with it the chunk size).
    fn set_dim(&mut self, dim: usize) {
        self.dim = dim;
        self.chunk_rows = chunk_rows_for(self.quant.row_bytes(dim));
    }

    /// How the bucket stores its vectors.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    pub fn algo(&self) -> Algo {
        self.algo
    }

    /// Chooses the index algorithm: only before the first entry (false then, unless `algo`
    /// is already the bucket's).
    pub fn set_algo(&mut self, algo: Algo) -> bool {
        if self.dim != 0 {
            return algo == self.algo;
        }
        self.algo = algo;
        true
    }

    /// Chooses how vectors are stored: only before the first entry fixed the dimension
    /// (false then, unless `quant` is already the bucket's).
    pub fn set_quant(&mut self, quant: Quant) -> bool {
        if self.dim != 0 {
            return quant == self.quant;
        }
        self.quant = quant;
        true
    }

    /// Validates an explicit id (or issues the next one) without mutating.
    fn choose_id(&self, id: Option<u64>) -> Result<u64, BucketError> {
        let id = match id {
            None => self.next_id,
            Some(x) if x < self.next_id => {
                return Err(BucketError::IdNotIncreasing {
                    id: x,
                    last: self.next_id - 1,
                })
            }
            Some(x) => x,
        };
        if id == u64::MAX {
            return Err(BucketError::IdExhausted);
        }
        Ok(id)
    }

    /// Inserts an entry. `vector` is validated (finite) but not normalised;
    /// it is normalised once here. The first entry fixes the dimension.
    ///
    /// `id`: `None` issues the next id; `Some(x)` (replicas, AOF replay)
    /// applies the primary's decision and must be greater than every id ever
    /// issued; `next_id` moves past it.
    ///
    /// When the bucket holds `max_items` entries the oldest (smallest id)
    /// are evicted first; their ids are returned. On error nothing changed.
    pub fn insert(
        &mut self,
        id: Option<u64>,
        vector: &[f32],
        response: Vec<u8>,
        meta: Option<String>,
        expire_at_ms: i64,
    ) -> Result<InsertOutcome, BucketError> {
        let data = EntryData {
            response,
            meta,
            expire_at_ms,
            ..EntryData::default()
        };
        self.insert_entry(id, vector, data)
    }

    /// [`Bucket::insert`] with every field of an entry (tags, renewal duration).
    pub fn insert_entry(
        &mut self,
        id: Option<u64>,
        vector: &[f32],
        data: EntryData,
    ) -> Result<InsertOutcome, BucketError> {
        self.check_dim(vector.len())?;
        let id = self.choose_id(id)?;
        let unit = vector::normalized(vector)?;
        self.set_dim(vector.len());
        self.next_id = id + 1;
        let mut evicted = Vec::new();
        while self.len() >= self.max_items {
            let oldest = self.victim_index().expect("non-empty");
            evicted.push(self.id_at(oldest));
            self.remove_at(oldest);
        }
        match self.quant {
            Quant::Float32 => self.push_row(id, RowRef::F32(&unit), data),
            Quant::Int8 => {
                let mut code = vec![0i8; unit.len()];
                let inv = quantize_row(&unit, &mut code);
                self.push_row(id, RowRef::I8(&code, inv), data);
            }
        }
        Ok(InsertOutcome { id, evicted })
    }

    /// Appends an already-normalised row read back from an RDB file. Entries
    /// must come in increasing id order (as [`Bucket::entries`] yields them);
    /// call [`Bucket::restore_next_id`] afterwards. The row is checked for
    /// dimension and finiteness but not re-normalised.
    pub fn push_loaded(
        &mut self,
        id: u64,
        row: RowRef,
        response: Vec<u8>,
        meta: Option<String>,
        expire_at_ms: i64,
    ) -> Result<(), BucketError> {
        let data = EntryData {
            response,
            meta,
            expire_at_ms,
            ..EntryData::default()
        };
        self.push_loaded_entry(id, row, data)
    }

    /// [`Bucket::push_loaded`] with every field of an entry.
    pub fn push_loaded_entry(
        &mut self,
        id: u64,
        row: RowRef,
        data: EntryData,
    ) -> Result<(), BucketError> {
        self.check_dim(row.len())?;
        let id = self.choose_id(Some(id))?;
        if row.quant() != self.quant {
            return Err(BucketError::QuantMismatch {
                bucket: self.quant,
                row: row.quant(),
            });
        }
        match row {
            RowRef::F32(v) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(BucketError::Vector(VectorError::NonFinite(i)));
                }
            }
            RowRef::I8(_, inv) => {
                if !(inv.is_finite() && inv > 0.0) {
                    return Err(BucketError::ZeroCode);
                }
            }
        }
        if self.len() >= self.max_items {
            return Err(BucketError::Full {
                max_items: self.max_items,
            });
        }
        self.set_dim(row.len());
        self.next_id = id + 1;
        self.push_row(id, row, data);
        Ok(())
    }

    /// Changes the capacity (0 is taken as 1), evicting the oldest entries
    /// that no longer fit; returns their ids, oldest first.
    pub fn set_max_items(&mut self, max_items: usize) -> Vec<u64> {
        let max_items = max_items.max(1);
        let mut evicted = Vec::new();
        while self.len() > max_items {
            let oldest = self.victim_index().expect("non-empty");
            evicted.push(self.id_at(oldest));
            self.remove_at(oldest);
        }
        self.max_items = max_items;
        if !evicted.is_empty() {
            self.maybe_shrink();
        }
        evicted
    }

    /// Entries not expired at `now_ms` (the others still count in [`Bucket::len`] until
    /// [`Bucket::remove_expired`] reclaims them).
    pub fn live_len(&self, now_ms: i64) -> usize {
        self.chunks
            .iter()
            .flat_map(|c| c.expire_at_ms.iter())
            .filter(|&&e| !is_expired(e, now_ms))
            .count()
    }

    /// Bytes of vector data held by live entries (`len * dim * 4` for float32 rows,
    /// `len * (dim + 4)` for int8 rows).
    pub fn vector_bytes(&self) -> usize {
        self.len() * self.quant.row_bytes(self.dim)
    }

    /// After a load: fixes the dimension of a bucket whose entries are all
    /// gone (the dimension stays fixed once set).
    pub fn restore_dim(&mut self, dim: usize) -> Result<(), BucketError> {
        if dim == 0 {
            return Ok(());
        }
        self.check_dim(dim)?;
        self.set_dim(dim);
        Ok(())
    }

    /// Removes the entry with this id; false when absent.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.index_of(id) {
            Some(i) => {
                self.remove_at(i);
                self.maybe_shrink();
                true
            }
            None => false,
        }
    }

    /// Removes every entry with `expire_at_ms != 0 && expire_at_ms <= now_ms`
    /// and returns their ids in increasing order.
    pub fn remove_expired(&mut self, now_ms: i64) -> Vec<u64> {
        let mut removed = Vec::new();
        // Every SET calls this: until the earliest expiry is due there is nothing to look at.
        if !is_expired(self.earliest_expiry_ms, now_ms) {
            return removed;
        }
        self.earliest_expiry_ms = self
            .chunks
            .iter()
            .flat_map(|c| c.expire_at_ms.iter().copied())
            .filter(|&e| e != 0 && !is_expired(e, now_ms))
            .min()
            .unwrap_or(0);
        if self.index.is_some() {
            // The graph changes with the order of removals: take expired nodes out in id
            // order, as a replica applies the replicated SEMCACHE.DEL.
            let mut expired: Vec<(u64, usize)> = (0..self.len())
                .filter(|&i| {
                    let (c, o) = self.locate(i);
                    is_expired(self.chunks[c].expire_at_ms[o], now_ms)
                })
                .map(|i| (self.id_at(i), i))
                .collect();
            expired.sort_unstable();
            for (_, row) in expired {
                self.unindex_row(row);
            }
        }
        let mut i = 0;
        while i < self.len() {
            let (c, o) = self.locate(i);
            if is_expired(self.chunks[c].expire_at_ms[o], now_ms) {
                removed.push(self.chunks[c].ids[o]);
                self.remove_at(i); // moves the last row into i: re-check i
            } else {
                i += 1;
            }
        }
        if !removed.is_empty() {
            removed.sort_unstable();
            self.maybe_shrink();
        }
        removed
    }

    /// Changes an entry's expiry (0 = never); false when the id is absent.
    pub fn set_expire(&mut self, id: u64, expire_at_ms: i64) -> bool {
        match self.index_of(id) {
            Some(i) => {
                self.set_expire_at_index(i, expire_at_ms);
                true
            }
            None => false,
        }
    }

    /// Changes the expiry of the entry at a physical index (as in [`Hit::index`]).
    pub fn set_expire_at_index(&mut self, index: usize, expire_at_ms: i64) {
        let (c, o) = self.locate(index);
        unique(&mut self.chunks[c], self.dim).expire_at_ms[o] = expire_at_ms;
        self.note_expiry(expire_at_ms);
    }

    /// The renewal duration of the entry at a physical index (0 = TOUCH leaves it).
    pub fn renew_at(&self, index: usize) -> i64 {
        self.renew_ms[index]
    }

    /// Physical index of an id (linear scan of the id columns).
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.chunks
            .iter()
            .flat_map(|c| c.ids.iter())
            .position(|&x| x == id)
    }

    /// The entry at a physical index (as in [`Hit::index`]). Panics when out
    /// of range.
    pub fn entry_at(&self, index: usize) -> EntryView<'_> {
        let (c, o) = self.locate(index);
        let chunk = &self.chunks[c];
        (
            chunk.ids[o],
            chunk.row(o, self.dim),
            &self.responses[index],
            self.metas[index].as_deref(),
            chunk.expire_at_ms[o],
        )
    }

    /// The entry with this id, if present.
    pub fn get(&self, id: u64) -> Option<EntryView<'_>> {
        self.index_of(id).map(|i| self.entry_at(i))
    }

    /// All entries in increasing id (= insertion) order, for serialisation.
    pub fn entries(&self) -> impl Iterator<Item = EntryView<'_>> + '_ {
        let mut order: Vec<(u64, usize)> = self
            .chunks
            .iter()
            .flat_map(|c| c.ids.iter().copied())
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        order.sort_unstable();
        order.into_iter().map(move |(_, i)| self.entry_at(i))
    }

    /// The best `k` entries with similarity `>= min_sim` (see
    /// [`SCORE_EPSILON`]), best first; equal scores: newer entry (greater id)
    /// first. Expired entries (`expire_at_ms != 0 && <= now_ms`) are skipped.
    /// Scores are clamped to [-1, 1]. `query` must be normalised and of the
    /// bucket's dimension (callers check [`Bucket::dim`]); a query of another
    /// dimension, or `k == 0`, matches nothing.
    pub fn search(&self, query: &[f32], min_sim: f32, k: usize, now_ms: i64) -> Vec<Hit> {
        search_rows(self.rows(), query, min_sim, k, now_ms, &[])
    }

    /// [`Bucket::search`] among the entries that have every pair of `filter`.
    pub fn search_where(
        &self,
        query: &[f32],
        min_sim: f32,
        k: usize,
        now_ms: i64,
        filter: &[Pair],
    ) -> Vec<Hit> {
        search_rows(self.rows(), query, min_sim, k, now_ms, filter)
    }

    /// The tag blob of the entry at a physical index.
    pub fn tags_at(&self, index: usize) -> Option<&[u8]> {
        let (c, o) = self.locate(index);
        self.chunks[c].tags[o].as_deref()
    }

    /// Every entry as [`Bucket::entries`] yields them, with its tag blob and prompt.
    pub fn entries_with_tags(&self) -> impl Iterator<Item = FullView<'_>> + '_ {
        let mut order: Vec<(u64, usize)> = self
            .chunks
            .iter()
            .flat_map(|c| c.ids.iter().copied())
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        order.sort_unstable();
        order.into_iter().map(move |(id, i)| {
            (
                self.entry_at(i),
                self.tags_at(i),
                self.prompt_of(id),
                self.renew_ms[i],
            )
        })
    }

    /// Ids of the entries having every pair of `filter` (expired or not), increasing.
    pub fn ids_where(&self, filter: &[Pair]) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .chunks
            .iter()
            .flat_map(|c| c.ids.iter().zip(&c.tags))
            .filter(|(_, t)| tags::matches(t.as_deref(), filter))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// An immutable view for a background scan: shares every chunk (rows, ids
    /// and expiries; one `Arc` per ~[`CHUNK_BYTES`] of vectors, nothing
    /// copied). While the snapshot is alive a mutation copies the chunks it
    /// touches (at most two per removed or inserted entry), never the rest.
    pub fn snapshot(&self) -> BucketSnapshot {
        BucketSnapshot {
            dim: self.dim,
            quant: self.quant,
            chunk_rows: self.chunk_rows,
            len: self.len(),
            chunks: self.chunks.clone(),
        }
    }

    /// Heap bytes owned by the bucket, from capacities (shared chunks are
    /// counted in full even while a snapshot shares them).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.index_bytes()
            + self.prompt_bytes()
            + self.chunks.capacity() * size_of::<Arc<Chunk>>()
            + self.chunks.iter().map(|c| c.heap_bytes()).sum::<usize>()
            + self.responses.capacity() * size_of::<Box<[u8]>>()
            + self.responses.iter().map(|r| r.len()).sum::<usize>()
            + self.metas.capacity() * size_of::<Option<Box<str>>>()
            + self.renew_ms.capacity() * size_of::<i64>()
            + self.hit_counts.capacity() * size_of::<Cell<u32>>()
            + self.last_use.capacity() * size_of::<Cell<u64>>()
            + self.use_order.heap_bytes()
            + self
                .metas
                .iter()
                .map(|m| m.as_ref().map_or(0, |s| s.len()))
                .sum::<usize>()
    }

    // ---- usage and eviction ----

    pub fn policy(&self) -> EvictPolicy {
        self.policy
    }

    pub fn set_policy(&mut self, policy: EvictPolicy) {
        self.policy = policy;
    }

    /// Counts a lookup answered by the entry at a physical index.
    pub fn record_hit(&self, index: usize) {
        let c = &self.hit_counts[index];
        c.set(c.get().saturating_add(1));
        self.last_use[index].set(self.tick());
        self.use_order.touch(index);
    }

    /// Lookups the entry at a physical index answered (since it was loaded).
    pub fn hits_at(&self, index: usize) -> u32 {
        self.hit_counts[index].get()
    }

    // ---- exact prompts ----

    /// Gives entry `id` its prompt text (one entry per prompt: the caller removes the
    /// entry that had it before). False when the id is absent or the text taken.
    pub fn set_prompt(&mut self, id: u64, text: &[u8]) -> bool {
        if self.prompt_ids.contains_key(text) || self.index_of(id).is_none() {
            return false;
        }
        if let Some(old) = self.id_prompts.insert(id, text.into()) {
            self.prompt_ids.remove(&old);
        }
        self.prompt_ids.insert(text.into(), id);
        true
    }

    /// The entry holding exactly this prompt.
    pub fn id_of_prompt(&self, text: &[u8]) -> Option<u64> {
        self.prompt_ids.get(text).copied()
    }

    pub fn prompt_of(&self, id: u64) -> Option<&[u8]> {
        self.id_prompts.get(&id).map(|p| &p[..])
    }

    fn prompt_bytes(&self) -> usize {
        // Two maps: ~48 bytes of table per side, the text twice.
        self.id_prompts.values().map(|p| 2 * p.len() + 96).sum()
    }

    // ---- the index ----

    /// True when the bucket keeps an index (complete or not).
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// Entries not yet in the index (0 without an index).
    pub fn unindexed(&self) -> usize {
        self.index.as_ref().map_or(0, |ix| ix.unindexed)
    }

    /// Heap bytes of the index and its maps.
    pub fn index_bytes(&self) -> usize {
        self.index.as_ref().map_or(0, BucketIndex::heap_bytes)
    }

    /// Starts an index (no-op when there is one): every entry is pending until
    /// [`Bucket::index_pending`] adds it.
    pub fn create_index(&mut self) {
        if self.index.is_none() {
            self.index = Some(BucketIndex {
                graph: AnnIndex::new(self.algo),
                node_row: Vec::new(),
                row_node: vec![NONE; self.len()],
                unindexed: self.len(),
            });
        }
    }

    /// Adds up to `max` pending entries to the index, smallest id first (deterministic:
    /// a replica applying the same commands indexes the same entries). Returns how many.
    pub fn index_pending(&mut self, max: usize) -> usize {
        let Some(ix) = &self.index else { return 0 };
        if ix.unindexed == 0 || max == 0 {
            return 0;
        }
        let mut rows: Vec<(u64, usize)> =
            if ix.unindexed == 1 && ix.row_node[self.len() - 1] == NONE {
                vec![(self.id_at(self.len() - 1), self.len() - 1)] // the usual case: the new entry
            } else {
                (0..self.len())
                    .filter(|&r| ix.row_node[r] == NONE)
                    .map(|r| (self.id_at(r), r))
                    .collect()
            };
        let n = max.min(rows.len());
        if rows.len() > n {
            rows.select_nth_unstable(n - 1);
            rows.truncate(n);
        }
        rows.sort_unstable();
        for (id, row) in rows {
            self.index_row(id, row);
        }
        n
    }

    fn index_row(&mut self, id: u64, row: usize) {
        let (c, o) = self.locate(row);
        let stored = self.chunks[c].row(o, self.dim);
        let Some(ix) = &mut self.index else { return };
        // An int8 row's code is the graph's code as is (scale 1 / |code|: the graph's int8
        // similarity is then the cosine with the dequantized row).
        let node = match stored {
            RowRef::F32(v) => ix.graph.insert_vector(id, v),
            RowRef::I8(code, inv) => ix.graph.insert_code(id, code, inv),
        };
        if ix.node_row.len() <= node as usize {
            ix.node_row.resize(node as usize + 1, NONE);
        }
        ix.node_row[node as usize] = row as u32;
        ix.row_node[row] = node;
        ix.unindexed -= 1;
    }

    /// Takes a row's node out of the graph (the row stays, pending).
    fn unindex_row(&mut self, row: usize) {
        let Some(ix) = &mut self.index else { return };
        let node = ix.row_node[row];
        if node == NONE {
            return;
        }
        ix.graph.remove(node);
        ix.node_row[node as usize] = NONE;
        ix.row_node[row] = NONE;
        ix.unindexed += 1;
    }

    /// The index, for persistence.
    pub fn index_graph(&self) -> Option<&AnnIndex> {
        self.index.as_ref().map(|ix| &ix.graph)
    }

    /// Attaches a loaded graph: every node must be an entry of the bucket, each entry at
    /// most once. Entries without a node are pending. On error nothing changed.
    pub fn attach_index(&mut self, mut graph: AnnIndex) -> Result<(), String> {
        if graph.algo() != self.algo {
            return Err(format!(
                "an {} index for a bucket of algorithm {}",
                graph.algo().name(),
                self.algo.name()
            ));
        }
        if let Some(d) = graph.declared_dim().filter(|&d| d != self.dim) {
            return Err(format!(
                "an index of dimension {d} for a bucket of dimension {}",
                self.dim
            ));
        }
        let rows: std::collections::HashMap<u64, usize> =
            (0..self.len()).map(|r| (self.id_at(r), r)).collect();
        let mut node_row = vec![NONE; graph.slots()];
        let mut row_node = vec![NONE; self.len()];
        for (node, id) in graph.nodes() {
            let node = node as usize;
            let Some(&row) = rows.get(&id) else {
                return Err(format!(
                    "index node {node} names entry {id}, which is not in the bucket"
                ));
            };
            if row_node[row] != NONE {
                return Err(format!("entry {id} is in the index twice"));
            }
            row_node[row] = node as u32;
            node_row[node] = row as u32;
        }
        let unindexed = row_node.iter().filter(|&&n| n == NONE).count();
        let row_of = |node: u32| {
            let (c, o) = self.locate(node_row[node as usize] as usize);
            self.chunks[c].row(o, self.dim)
        };
        match self.quant {
            Quant::Float32 => graph.load_vectors(self.dim, |node| match row_of(node) {
                RowRef::F32(v) => v,
                RowRef::I8(..) => &[],
            }),
            Quant::Int8 => graph.load_codes(self.dim, |node| match row_of(node) {
                RowRef::I8(code, inv) => (code, inv),
                RowRef::F32(_) => (&[], 0.0),
            }),
        }
        self.index = Some(BucketIndex {
            graph,
            node_row,
            row_node,
            unindexed,
        });
        Ok(())
    }

    /// The index's answer to [`Bucket::search`] (same contract, approximate: the graph
    /// returns its best `ef` candidates by int8 similarity, each re-scored exactly), or
    /// `None` when there is no complete index.
    pub fn search_index(
        &self,
        query: &[f32],
        min_sim: f32,
        k: usize,
        now_ms: i64,
        effort: Effort,
    ) -> Option<Vec<Hit>> {
        self.search_index_where(query, min_sim, k, now_ms, effort, &[])
    }

    /// [`Bucket::search_index`] among the entries that have every pair of `filter`. The
    /// graph is walked as without a filter (4x the candidates) and only matching entries
    /// are kept, so an answer never holds another entry; when fewer than `k` match (a
    /// selective filter) inverted lists are searched again keeping only matching entries,
    /// and if still fewer than `k` match (or the index is a graph) this gives up with
    /// `None` and the caller scans exactly.
    pub fn search_index_where(
        &self,
        query: &[f32],
        min_sim: f32,
        k: usize,
        now_ms: i64,
        effort: Effort,
        filter: &[Pair],
    ) -> Option<Vec<Hit>> {
        let ix = self.index.as_ref().filter(|ix| ix.unindexed == 0)?;
        if k == 0 || query.len() != self.dim || ix.graph.is_empty() {
            return Some(Vec::new());
        }
        let threshold = min_sim - SCORE_EPSILON;
        let want = k.saturating_add(INDEX_SPARE);
        let ef = if filter.is_empty() {
            effort.ef
        } else {
            effort.ef.saturating_mul(4)
        };
        // The index ranks by int8 similarity; the best candidates are re-scored with their
        // stored rows.
        // A filter drops candidates: explore 4x as much (IVF: 4x the lists) to keep enough.
        let nprobe = if filter.is_empty() {
            effort.nprobe
        } else {
            effort.nprobe.saturating_mul(4)
        };
        let effort = Effort {
            ef: ef.max(want),
            nprobe,
        };
        // Without a filter only the best RESCORE_MIN (or `want`) are ever re-scored: IVF keeps
        // no more (a graph needs its `ef` candidates to walk anyway).
        let keep = if filter.is_empty() {
            RESCORE_MIN.max(want)
        } else {
            effort.ef
        };
        // What the answer needs: `k` live entries (matching the filter) at `threshold` or
        // above. With a filter, lists are not skipped by the threshold: an index that finds
        // fewer than `k` matching candidates (after a second look, for lists) sends the
        // lookup to a scan (below).
        let entry = |node: u32| self.locate(ix.node_row[node as usize] as usize);
        let matches = |(c, o): (usize, usize)| {
            filter.is_empty() || tags::matches(self.chunks[c].tags[o].as_deref(), filter)
        };
        let answers = |node: u32| {
            let (c, o) = entry(node);
            !is_expired(self.chunks[c].expire_at_ms[o], now_ms) && matches((c, o))
        };
        let needed = Want {
            k,
            min_sim: if filter.is_empty() { threshold } else { -1.0 },
            answers: &answers,
            only_answers: false,
        };
        #[cfg(test)]
        let needed = if tests::SKIP_NO_LIST.get() {
            Want::ALL
        } else {
            needed
        };
        // `Err(matching candidates)` when a filter leaves fewer than `k`.
        let lookup = |want: &Want, rescore: usize| {
            let mut found = ix.graph.search(query, effort, keep, want);
            if !filter.is_empty() {
                found.retain(|c| matches(entry(c.node)));
                if found.len() < k {
                    return Err(found.len());
                }
            }
            found.truncate(rescore);
            Ok(self.answers_of(ix, query, found, k, threshold, now_ms))
        };
        let first = lookup(&needed, RESCORE_MIN.max(want));
        #[cfg(test)]
        if tests::NO_SECOND_LOOK.get() {
            return first.ok().map(|(hits, _)| hits);
        }
        match first {
            Ok((hits, expired)) if hits.len() == k || !expired => return Some(hits),
            // Too few candidates match the filter. Lists can look again keeping only
            // matching entries, reading each probed member's tags (~0.35 ms at 100,000
            // entries, where the probed lists hold ~7x the `keep` candidates): worth it
            // when the first look found a fair share of `k` (1% of 100,000 entries match,
            // COUNT 5: 0.6 ms instead of a 13 ms scan). With fewer (0.1% match: mostly
            // only the query's own near-duplicate) a second look rarely finds `k`: scan
            // now. A graph cannot look again.
            Err(matching) if matching * 4 < k || ix.graph.algo() != Algo::Ivf => return None,
            _ => {}
        }
        // Or expired entries not yet reclaimed were among the nearest and crowded live ones
        // out of the candidates. Look again keeping only entries that can answer, every
        // candidate re-scored (a graph does not filter its `ef`).
        let only = Want {
            only_answers: true,
            ..needed
        };
        lookup(&only, usize::MAX).ok().map(|(hits, _)| hits)
    }

    /// The best `k` live candidates at `threshold` or above, re-scored exactly (`found`:
    /// an index lookup's), and whether an expired one was passed over.
    ///
    /// An int8 row is scored from the index's copy of it and its `1 / |code|` when the
    /// index keeps them (the same bytes: the index was given the row), which the lookup has
    /// just read. Only then is the entry itself read, best candidate first, until `k`
    /// answer: each entry read is a cache miss (its row position, expiry, id), ~16 of them
    /// per lookup when every candidate was checked.
    fn answers_of<'a>(
        &'a self,
        ix: &'a BucketIndex,
        query: &[f32],
        mut found: Vec<Candidate<'a>>,
        k: usize,
        threshold: f32,
        now_ms: i64,
    ) -> (Vec<Hit>, bool) {
        let row_of = |c: &Candidate<'a>| -> RowRef<'a> {
            match c.copy {
                Some((code, inv)) if self.quant == Quant::Int8 => {
                    let row = RowRef::I8(code, inv);
                    debug_assert!(self.row_at(ix.node_row[c.node as usize] as usize) == row);
                    row
                }
                _ => self.row_at(ix.node_row[c.node as usize] as usize),
            }
        };
        for c in &found {
            match row_of(c) {
                RowRef::F32(v) => vector::prefetch_lines(v, usize::MAX),
                RowRef::I8(code, _) => vector::prefetch_lines(code, usize::MAX),
            }
        }
        for c in found.iter_mut() {
            c.sim = row_of(c).score(query);
        }
        // Best first, the newer entry first among equals (ids are read only for ties).
        let id_of = |node: u32| self.id_at(ix.node_row[node as usize] as usize);
        found.sort_unstable_by(|a, b| {
            b.sim
                .total_cmp(&a.sim)
                .then_with(|| id_of(b.node).cmp(&id_of(a.node)))
        });
        let (mut hits, mut expired) = (Vec::with_capacity(k.min(found.len())), false);
        for c in &found {
            if hits.len() == k || c.sim < threshold {
                break;
            }
            let row = ix.node_row[c.node as usize] as usize;
            let (ch, o) = self.locate(row);
            let chunk = &self.chunks[ch];
            if is_expired(chunk.expire_at_ms[o], now_ms) {
                expired = true;
                continue;
            }
            if c.sim.is_nan() {
                continue;
            }
            hits.push(Hit {
                index: row,
                id: chunk.ids[o],
                score: c.sim,
            });
        }
        (hits, expired)
    }

    // ---- internals ----

    fn rows(&self) -> Rows<'_> {
        Rows {
            chunks: &self.chunks,
            chunk_rows: self.chunk_rows,
            dim: self.dim,
            quant: self.quant,
        }
    }

    /// (chunk, row in chunk) of a physical index.
    #[inline]
    fn locate(&self, index: usize) -> (usize, usize) {
        (index / self.chunk_rows, index % self.chunk_rows)
    }

    /// The stored row at a physical index.
    fn row_at(&self, index: usize) -> RowRef<'_> {
        let (c, o) = self.locate(index);
        self.chunks[c].row(o, self.dim)
    }

    fn id_at(&self, index: usize) -> u64 {
        let (c, o) = self.locate(index);
        self.chunks[c].ids[o]
    }

    fn note_expiry(&mut self, expire_at_ms: i64) {
        if expire_at_ms != 0
            && (self.earliest_expiry_ms == 0 || expire_at_ms < self.earliest_expiry_ms)
        {
            self.earliest_expiry_ms = expire_at_ms;
        }
    }

    fn tick(&self) -> u64 {
        let t = self.use_clock.get() + 1;
        self.use_clock.set(t);
        t
    }

    /// The entry the eviction policy drops first: FIFO the oldest; LRU the least recently
    /// used (inserts count as a use); LFU the fewest hits, then the least recently used.
    fn victim_index(&self) -> Option<usize> {
        match self.policy {
            EvictPolicy::Fifo => self.oldest_index(),
            EvictPolicy::Lru => self.use_order.first(),
            EvictPolicy::Lfu => self.least_used(|i| self.hit_counts[i].get()),
        }
    }

    /// The index with the smallest (`rank`, last use, id): LFU's victim. Passes over the
    /// contiguous rank and use columns first; ids (a lookup into their chunk each) only break
    /// exact ties, which the use clock (one tick per insert or hit) does not produce.
    fn least_used(&self, rank: impl Fn(usize) -> u32) -> Option<usize> {
        let key = |i: usize| (rank(i), self.last_use[i].get());
        let best = (0..self.len()).map(key).min()?;
        (0..self.len())
            .filter(|&i| key(i) == best)
            .min_by_key(|&i| self.id_at(i))
    }

    fn oldest_index(&self) -> Option<usize> {
        // The chunk with the smallest id (one value per chunk), then one position lookup.
        let (c, min) = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, chunk)| !chunk.ids.is_empty())
            .map(|(c, chunk)| (c, chunk.min_id))
            .min_by_key(|&(_, m)| m)?;
        let o = self.chunks[c].ids.iter().position(|&id| id == min)?;
        Some(c * self.chunk_rows + o)
    }

    fn exact_mode(&self) -> bool {
        self.max_items
            .saturating_mul(self.quant.row_bytes(self.dim))
            <= EXACT_RESERVE_BYTES
    }

    /// Capacity, in rows, to grow a column (or chunk) of `cap` rows to so
    /// that it holds `needed` rows, when it never needs more than `limit`.
    fn grow_target(&self, cap: usize, needed: usize, limit: usize) -> usize {
        if self.exact_mode() {
            return limit.max(needed);
        }
        needed
            .max(cap + cap / 2)
            .max(MIN_GROW_ROWS)
            .min(limit)
            .max(needed)
    }

    fn reserve_col<T>(&self, v: &mut Vec<T>, needed: usize) {
        v.reserve_exact(self.col_growth(v.capacity(), v.len(), needed));
    }

    /// Rows to reserve in a column of `len` rows and capacity `cap` so that it holds `needed`.
    fn col_growth(&self, cap: usize, len: usize, needed: usize) -> usize {
        if cap < needed {
            self.grow_target(cap, needed, self.max_items) - len
        } else {
            0
        }
    }

    fn push_row(&mut self, id: u64, row: RowRef, data: EntryData) {
        let EntryData {
            response,
            meta,
            tags,
            expire_at_ms,
            renew_ms,
        } = data;
        self.note_expiry(expire_at_ms);
        let needed = self.len() + 1;
        let dim = self.dim;
        debug_assert_eq!(row.len(), dim);

        let mut responses = std::mem::take(&mut self.responses);
        self.reserve_col(&mut responses, needed);
        responses.push(response.into_boxed_slice());
        self.responses = responses;

        let mut metas = std::mem::take(&mut self.metas);
        self.reserve_col(&mut metas, needed);
        metas.push(meta.map(String::into_boxed_str));
        self.metas = metas;

        let mut renews = std::mem::take(&mut self.renew_ms);
        self.reserve_col(&mut renews, needed);
        renews.push(renew_ms);
        self.renew_ms = renews;

        let mut counts = std::mem::take(&mut self.hit_counts);
        self.reserve_col(&mut counts, needed);
        counts.push(Cell::new(0));
        self.hit_counts = counts;
        let mut uses = std::mem::take(&mut self.last_use);
        self.reserve_col(&mut uses, needed);
        uses.push(Cell::new(self.tick()));
        self.last_use = uses;
        let (cap, len) = (self.use_order.capacity(), self.use_order.len());
        self.use_order
            .reserve_exact(self.col_growth(cap, len, needed));
        self.use_order.push();

        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() == self.chunk_rows)
        {
            self.chunks.push(Arc::new(Chunk::new(self.quant)));
        }
        let last = self.chunks.len() - 1;
        // Rows this chunk will ever hold: the chunk size, or what max_items leaves.
        let limit = self
            .chunk_rows
            .min(self.max_items.max(needed) - last * self.chunk_rows);
        let (len, cap) = (self.chunks[last].len(), self.chunks[last].cap_rows());
        let target = (cap <= len).then(|| self.grow_target(cap, len + 1, limit));
        let chunk = unique(&mut self.chunks[last], dim);
        if let Some(target) = target {
            chunk.reserve_exact(target - len, dim);
        }
        chunk.push(id, row, expire_at_ms, tags);
        if let Some(ix) = &mut self.index {
            ix.row_node.push(NONE);
            ix.unindexed += 1;
        }
    }

    /// `swap_remove` of row `i` in every column: O(dim); copies (on write) at
    /// most the chunk of row `i` and the last chunk.
    fn remove_at(&mut self, i: usize) {
        let dim = self.dim;
        let last = self.len() - 1;
        self.unindex_row(i);
        if !self.id_prompts.is_empty() {
            if let Some(p) = self.id_prompts.remove(&self.id_at(i)) {
                self.prompt_ids.remove(&p);
            }
        }
        if let Some(ix) = &mut self.index {
            ix.unindexed -= 1;
            ix.row_node.swap_remove(i);
            if i != last {
                let moved = ix.row_node[i];
                if moved != NONE {
                    ix.node_row[moved as usize] = i as u32;
                }
            }
        }
        self.responses.swap_remove(i);
        self.hit_counts.swap_remove(i);
        self.last_use.swap_remove(i);
        self.use_order.swap_remove(i);
        self.metas.swap_remove(i);
        self.renew_ms.swap_remove(i);
        let (c, o) = self.locate(i);
        let (lc, lo) = self.locate(last);
        if i != last {
            if c == lc {
                unique(&mut self.chunks[c], dim).move_row(lo, o, dim);
            } else {
                let (head, tail) = self.chunks.split_at_mut(lc);
                unique(&mut head[c], dim).set_row(o, &tail[0], lo, dim);
            }
        }
        if lo == 0 {
            self.chunks.pop(); // dropped without a copy, even if shared
        } else {
            unique(&mut self.chunks[lc], dim).truncate(lo, dim);
        }
    }

    /// Gives memory back when an amortised-growth bucket fell below half of
    /// its capacity (keeps 1.5x the live rows). Only the columns and the last
    /// chunk can have slack: emptied chunks are freed as they empty.
    fn maybe_shrink(&mut self) {
        if self.exact_mode() || self.dim == 0 {
            return;
        }
        let len = self.len();
        if self.responses.capacity() > 2 * len + MIN_GROW_ROWS {
            let keep = len + len / 2;
            self.responses.shrink_to(keep);
            self.metas.shrink_to(keep);
            self.renew_ms.shrink_to(keep);
            self.hit_counts.shrink_to(keep);
            self.last_use.shrink_to(keep);
            self.use_order.shrink_to(keep);
        }
        if self.chunks.capacity() > 2 * self.chunks.len() + MIN_GROW_ROWS {
            self.chunks.shrink_to_fit();
        }
        let dim = self.dim;
        if let Some(last) = self.chunks.last_mut() {
            let n = last.len();
            if last.cap_rows() > 2 * n + MIN_GROW_ROWS {
                unique(last, dim).shrink_to(n + n / 2, dim);
            }
        }
    }
}

/// An immutable view of a bucket's rows for a scan outside the bucket's
/// lock. Its hits carry ids: re-resolve them with [`Bucket::get`] and skip
/// ids deleted meanwhile.
#[derive(Debug, Clone)]
pub struct BucketSnapshot {
    dim: usize,
    quant: Quant,
    chunk_rows: usize,
    len: usize,
    chunks: Vec<Arc<Chunk>>,
}

impl BucketSnapshot {
    /// Same contract as [`Bucket::search`]; `Hit::index` refers to the
    /// snapshot, not to the bucket.
    pub fn search(&self, query: &[f32], min_sim: f32, k: usize, now_ms: i64) -> Vec<Hit> {
        self.search_where(query, min_sim, k, now_ms, &[])
    }

    /// [`BucketSnapshot::search`] among the entries that have every pair of `filter`.
    pub fn search_where(
        &self,
        query: &[f32],
        min_sim: f32,
        k: usize,
        now_ms: i64,
        filter: &[Pair],
    ) -> Vec<Hit> {
        let rows = Rows {
            chunks: &self.chunks,
            chunk_rows: self.chunk_rows,
            dim: self.dim,
            quant: self.quant,
        };
        search_rows(rows, query, min_sim, k, now_ms, filter)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::normalized;
    use crate::vector::tests::Rng;

    fn ins(b: &mut Bucket, v: &[f32], resp: &str) -> InsertOutcome {
        b.insert(None, v, resp.as_bytes().to_vec(), None, 0)
            .unwrap()
    }

    fn ids(hits: &[Hit]) -> Vec<u64> {
        hits.iter().map(|h| h.id).collect()
    }

    #[test]
    fn threshold_edges() {
        let mut b = Bucket::new(10);
        ins(&mut b, &[1.0, 0.0], "x");
        // normalized([3,4]) == [0.6f32, 0.8f32]; dot with [1,0] is 0.6f32.
        let q = normalized(&[3.0, 4.0]).unwrap();
        let hits = b.search(&q, 0.6, 5, 0);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].score, 0.6);
        // Within SCORE_EPSILON above the similarity: still a hit.
        assert_eq!(b.search(&q, 0.6 + 5e-7, 5, 0).len(), 1);
        // Similarity just below the threshold: miss.
        assert!(b.search(&q, 0.6 + 1e-5, 5, 0).is_empty());
        assert!(b.search(&q, 0.61, 5, 0).is_empty());
        // Opposite vector hits only at -1.
        let neg = normalized(&[-1.0, 0.0]).unwrap();
        assert_eq!(b.search(&neg, -1.0, 5, 0).len(), 1);
        assert!(b.search(&neg, -0.99, 5, 0).is_empty());
        // k == 0 and a wrong-dimension query match nothing.
        assert!(b.search(&q, 0.0, 0, 0).is_empty());
        assert!(b.search(&[1.0, 0.0, 0.0], 0.0, 5, 0).is_empty());
    }

    #[test]
    fn identical_vector_hits_at_minsim_one() {
        let mut rng = Rng::new(7);
        for &dim in &[1usize, 3, 8, 17, 384, 768, 1536, 3072, 4096] {
            let mut b = Bucket::new(64);
            let mut raws = Vec::new();
            for _ in 0..40 {
                let v: Vec<f32> = rng.vec(dim).iter().map(|x| x * 3.0 + 0.1).collect();
                ins(&mut b, &v, "r");
                raws.push(v);
            }
            for (i, v) in raws.iter().enumerate() {
                let q = normalized(v).unwrap();
                // (In dims 1 and 3 other entries may share the direction.)
                let hits = b.search(&q, 1.0, usize::MAX, 0);
                assert!(ids(&hits).contains(&(i as u64 + 1)), "dim {dim} entry {i}");
                assert!(hits.iter().all(|h| h.score <= 1.0));
                let snap_hits = b.snapshot().search(&q, 1.0, usize::MAX, 0);
                assert_eq!(snap_hits, hits);
            }
        }
    }

    #[test]
    fn ordering_with_k_and_ties() {
        let mut b = Bucket::new(10);
        ins(&mut b, &[1.0, 0.0], "a"); // 1: score 1
        ins(&mut b, &[0.0, 1.0], "b"); // 2: score 0
        ins(&mut b, &[1.0, 1.0], "c"); // 3: score 0.707
        ins(&mut b, &[2.0, 0.0], "d"); // 4: score 1 (tie with 1, newer)
        ins(&mut b, &[-1.0, 0.0], "e"); // 5: score -1
        let q = [1.0, 0.0];
        assert_eq!(ids(&b.search(&q, -1.0, 10, 0)), vec![4, 1, 3, 2, 5]);
        assert_eq!(ids(&b.search(&q, -1.0, 2, 0)), vec![4, 1]);
        assert_eq!(ids(&b.search(&q, -1.0, 3, 0)), vec![4, 1, 3]);
        assert_eq!(ids(&b.search(&q, 0.5, 10, 0)), vec![4, 1, 3]);
        assert_eq!(ids(&b.search(&q, 0.5, 1, 0)), vec![4]);
        let hits = b.search(&q, 0.5, 10, 0);
        for h in &hits {
            assert_eq!(b.entry_at(h.index).0, h.id);
        }
        assert_eq!(b.get(3).unwrap().2, b"c");
    }

    #[test]
    fn eviction_oldest_first() {
        let mut b = Bucket::new(3);
        for (i, r) in ["a", "b", "c"].iter().enumerate() {
            let out = ins(&mut b, &[1.0, i as f32], r);
            assert_eq!(out.id, i as u64 + 1);
            assert!(out.evicted.is_empty());
        }
        let out = ins(&mut b, &[1.0, 5.0], "d");
        assert_eq!(
            out,
            InsertOutcome {
                id: 4,
                evicted: vec![1]
            }
        );
        let out = ins(&mut b, &[1.0, 6.0], "e");
        assert_eq!(out.evicted, vec![2]);
        // Removing a middle entry then inserting evicts nothing.
        assert!(b.remove(4));
        assert!(!b.remove(4));
        let out = ins(&mut b, &[1.0, 7.0], "f");
        assert!(out.evicted.is_empty());
        let out = ins(&mut b, &[1.0, 8.0], "g");
        assert_eq!(out.evicted, vec![3]);
        let order: Vec<(u64, Vec<u8>)> = b.entries().map(|e| (e.0, e.2.to_vec())).collect();
        assert_eq!(
            order,
            vec![(5, b"e".to_vec()), (6, b"f".to_vec()), (7, b"g".to_vec())]
        );
        assert_eq!(b.len(), 3);
        // max_items 0 behaves as 1.
        let mut one = Bucket::new(0);
        ins(&mut one, &[1.0], "x");
        assert_eq!(ins(&mut one, &[1.0], "y").evicted, vec![1]);
    }

    #[test]
    fn expiry_skip_and_remove_expired() {
        let mut b = Bucket::new(10);
        b.insert(None, &[1.0, 0.0], b"a".to_vec(), None, 100)
            .unwrap();
        b.insert(None, &[1.0, 0.1], b"b".to_vec(), None, 0).unwrap();
        b.insert(None, &[1.0, 0.2], b"c".to_vec(), None, 200)
            .unwrap();
        b.insert(None, &[1.0, 0.3], b"d".to_vec(), None, 100)
            .unwrap();
        let q = [1.0, 0.0];
        assert_eq!(ids(&b.search(&q, 0.0, 10, 99)), vec![1, 2, 3, 4]);
        // Expired at exactly expire_at_ms.
        assert_eq!(ids(&b.search(&q, 0.0, 10, 100)), vec![2, 3]);
        assert_eq!(ids(&b.search(&q, 0.0, 10, 1_000)), vec![2]);
        assert_eq!(ids(&b.snapshot().search(&q, 0.0, 10, 150)), vec![2, 3]);
        assert!(b.remove_expired(99).is_empty());
        assert_eq!(b.remove_expired(150), vec![1, 4]);
        assert_eq!(b.len(), 2);
        assert_eq!(ids(&b.search(&q, 0.0, 10, 150)), vec![2, 3]);
        assert!(b.set_expire(2, 120));
        assert!(!b.set_expire(99, 120));
        // The sweep wakes up for the earliest expiry, including one set after insert.
        assert!(b.remove_expired(119).is_empty());
        assert_eq!(b.remove_expired(120), vec![2]);
        assert!(b.remove_expired(199).is_empty());
        assert_eq!(b.remove_expired(300), vec![3]);
        assert!(b.is_empty());
        assert_eq!(b.dim(), 2); // stays fixed
        assert_eq!(ins(&mut b, &[0.0, 1.0], "e").id, 5);
    }

    #[test]
    fn dimension_mismatch_and_bad_vectors() {
        let mut b = Bucket::new(10);
        assert_eq!(b.dim(), 0);
        ins(&mut b, &[1.0, 2.0, 3.0], "a");
        assert_eq!(b.dim(), 3);
        let e = b.insert(None, &[1.0, 2.0], vec![], None, 0).unwrap_err();
        assert_eq!(
            e,
            BucketError::DimMismatch {
                expected: 3,
                got: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "vector dimension 2 does not match the cache dimension 3"
        );
        let e = b
            .insert(None, &[0.0, 0.0, 0.0], vec![], None, 0)
            .unwrap_err();
        assert_eq!(e.to_string(), "vector has zero norm");
        let e = b.insert(None, &[], vec![], None, 0).unwrap_err();
        assert_eq!(e, BucketError::Vector(VectorError::Empty));
        // Failed inserts consumed no id and changed nothing.
        assert_eq!(b.len(), 1);
        assert_eq!(b.next_id(), 2);
        assert_eq!(ins(&mut b, &[0.0, 1.0, 0.0], "b").id, 2);
    }

    #[test]
    fn explicit_ids() {
        let mut b = Bucket::new(10);
        assert_eq!(b.insert(Some(5), &[1.0], vec![], None, 0).unwrap().id, 5);
        assert_eq!(b.next_id(), 6);
        assert_eq!(ins(&mut b, &[1.0], "x").id, 6);
        let e = b.insert(Some(6), &[1.0], vec![], None, 0).unwrap_err();
        assert_eq!(e, BucketError::IdNotIncreasing { id: 6, last: 6 });
        assert_eq!(
            e.to_string(),
            "entry id 6 is not greater than the last issued id 6"
        );
        assert!(b.insert(Some(3), &[1.0], vec![], None, 0).is_err());
        assert!(b.insert(Some(0), &[1.0], vec![], None, 0).is_err());
        assert_eq!(
            b.insert(Some(100), &[1.0], vec![], None, 0).unwrap().id,
            100
        );
        assert_eq!(ins(&mut b, &[1.0], "y").id, 101);
        // Removed ids are never reissued.
        assert!(b.remove(101));
        assert_eq!(ins(&mut b, &[1.0], "z").id, 102);
        assert_eq!(
            b.insert(Some(u64::MAX), &[1.0], vec![], None, 0),
            Err(BucketError::IdExhausted)
        );
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn snapshot_isolation() {
        let mut b = Bucket::new(2);
        ins(&mut b, &[1.0, 0.0], "a");
        ins(&mut b, &[0.0, 1.0], "b");
        let snap = b.snapshot();
        let bytes_before = b.heap_bytes();
        // Insert (evicting id 1) and remove id 2 while the snapshot lives.
        let out = ins(&mut b, &[1.0, 1.0], "c");
        assert_eq!(out.evicted, vec![1]);
        assert!(b.remove(2));
        let q = [1.0, 0.0];
        assert_eq!(ids(&snap.search(&q, -1.0, 10, 0)), vec![1, 2]);
        assert_eq!(snap.len(), 2);
        assert_eq!(ids(&b.search(&q, -1.0, 10, 0)), vec![3]);
        // The caller re-resolves snapshot ids; deleted ones are gone.
        assert!(b.get(1).is_none() && b.get(2).is_none());
        assert_eq!(b.get(3).unwrap().2, b"c");
        // Copy-on-write kept the capacity.
        assert!(b.heap_bytes() <= bytes_before);
        drop(snap);
        // Without a snapshot the rows are mutated in place.
        let p = b.chunks[0].rows.as_ptr();
        ins(&mut b, &[1.0, 2.0], "d");
        assert_eq!(b.chunks[0].rows.as_ptr(), p);
    }

    #[test]
    fn matches_f64_reference() {
        let mut rng = Rng::new(11);
        for &dim in &[1usize, 3, 7, 8, 15, 16, 17, 384, 1536] {
            let mut b = Bucket::new(50);
            let mut rows: Vec<Vec<f64>> = Vec::new();
            for _ in 0..37 {
                let v = rng.vec(dim);
                if normalized(&v).is_err() {
                    continue;
                }
                ins(&mut b, &v, "r");
                let n: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                rows.push(v.iter().map(|&x| f64::from(x) / n).collect());
            }
            let qraw = rng.vec(dim);
            let q = normalized(&qraw).unwrap();
            let hits = b.search(&q, -1.0, usize::MAX, 0);
            assert_eq!(hits.len(), rows.len());
            let qn: f64 = qraw
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                .sqrt();
            for h in &hits {
                let row = &rows[(h.id - 1) as usize];
                let want: f64 = row
                    .iter()
                    .zip(&qraw)
                    .map(|(r, &x)| r * f64::from(x) / qn)
                    .sum();
                assert!(
                    (f64::from(h.score) - want).abs() <= 1e-5,
                    "dim {dim}: {} vs {want}",
                    h.score
                );
            }
            // Sorted best first.
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn load_roundtrip() {
        let mut a = Bucket::new(5);
        for i in 0..8 {
            let meta = (i % 2 == 0).then(|| format!("m{i}"));
            a.insert(
                None,
                &[1.0, i as f32, 2.0],
                vec![i as u8, 0, 255],
                meta,
                i * 10,
            )
            .unwrap();
        }
        a.remove(6);
        a.hits = 3;
        a.misses = 4;
        let mut b = Bucket::new(a.max_items());
        for (id, row, resp, meta, exp) in a.entries() {
            b.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
                .unwrap();
        }
        b.restore_next_id(a.next_id());
        b.hits = a.hits;
        b.misses = a.misses;
        let ea: Vec<_> = a.entries().collect();
        let eb: Vec<_> = b.entries().collect();
        assert_eq!(ea, eb);
        assert_eq!(ea.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5, 7, 8]);
        assert_eq!(b.next_id(), 9);
        assert_eq!(b.get(4).unwrap().3, None);
        assert_eq!(b.get(5).unwrap().3, Some("m4"));
        assert_eq!(b.get(5).unwrap().2, &[4u8, 0, 255][..]);
        // Out-of-order or duplicate loads are refused.
        assert!(b
            .push_loaded(8, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0)
            .is_err());
        assert!(b
            .push_loaded(20, RowRef::F32(&[1.0, 0.0]), vec![], None, 0)
            .is_err());
        assert!(b
            .push_loaded(20, RowRef::F32(&[1.0, f32::NAN, 0.0]), vec![], None, 0)
            .is_err());
        assert_eq!(
            b.push_loaded(20, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0),
            Ok(())
        );
        assert_eq!(
            b.push_loaded(21, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0),
            Err(BucketError::Full { max_items: 5 })
        );
    }

    fn bound(dim: usize, n: usize, resp_bytes: usize) -> usize {
        n * (4 * dim + 96) + resp_bytes
    }

    fn fill(b: &mut Bucket, n: usize, dim: usize, rng: &mut Rng) -> usize {
        let mut resp_bytes = 0;
        for i in 0..n {
            let mut resp = Vec::with_capacity(4096); // slack must not count
            resp.extend_from_slice(format!("response number {i}").as_bytes());
            resp_bytes += resp.len();
            b.insert(None, &rng.vec(dim), resp, None, 0).unwrap();
        }
        resp_bytes
    }

    #[test]
    fn heap_bytes_per_entry_bound() {
        let mut rng = Rng::new(13);
        let dim = 384;
        // 1,000 x 384 with max_items 1,000: exact reservation.
        let mut b = Bucket::new(1_000);
        let resp = fill(&mut b, 1_000, dim, &mut rng);
        assert!(b.exact_mode());
        let hb = b.heap_bytes();
        assert!(
            hb <= bound(dim, 1_000, resp),
            "{hb} > {}",
            bound(dim, 1_000, resp)
        );
        assert!(hb >= 1_000 * 4 * dim + resp);
        // Churn (2,000 evictions) keeps the bound: eviction reuses the rows.
        let mut c = Bucket::new(1_000);
        let r2 = fill(&mut c, 3_000, dim, &mut rng);
        let live_resp: usize = c.entries().map(|e| e.2.len()).sum();
        assert!(r2 > live_resp);
        assert!(c.heap_bytes() <= bound(dim, 1_000, live_resp));

        // Amortised growth (block over EXACT_RESERVE_BYTES): growth is capped
        // at max_items, so a full bucket meets the bound too.
        let mut d = Bucket::new(3_000);
        let r3 = fill(&mut d, 3_000, dim, &mut rng);
        assert!(!d.exact_mode());
        assert!(d.heap_bytes() <= bound(dim, 3_000, r3));
        // While growing, slack is at most half of the live rows.
        let mut e = Bucket::new(100_000);
        let r4 = fill(&mut e, 1_000, dim, &mut rng);
        assert!(e.heap_bytes() <= bound(dim, 1_000, r4) + 1_000 * (4 * dim + 84) / 2);
        // Shrinks after mass removal.
        let before = e.heap_bytes();
        for id in 1..=900 {
            assert!(e.remove(id));
        }
        assert!(e.heap_bytes() < before / 4);
        assert_eq!(e.len(), 100);
    }

    #[test]
    fn set_max_items_evicts_oldest() {
        let mut b = Bucket::new(5);
        for i in 0..5 {
            ins(&mut b, &[1.0, i as f32], "r");
        }
        assert!(b.set_max_items(10).is_empty());
        assert_eq!(b.max_items(), 10);
        assert_eq!(b.set_max_items(2), vec![1, 2, 3]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.vector_bytes(), 2 * 2 * 4);
        assert_eq!(ins(&mut b, &[1.0, 9.0], "r").evicted, vec![4]);
        assert_eq!(b.set_max_items(0), vec![5]);
        assert_eq!(b.max_items(), 1);
    }

    #[test]
    fn large_bucket_eviction_is_in_place() {
        // Eviction must not shift the rows: no chunk moves.
        let mut rng = Rng::new(17);
        let mut b = Bucket::new(2_000);
        fill(&mut b, 2_000, 64, &mut rng);
        let p = chunk_ptrs(&b);
        let out = b.insert(None, &rng.vec(64), vec![], None, 0).unwrap();
        assert_eq!(out.evicted, vec![1]);
        assert_eq!(chunk_ptrs(&b), p);
        assert_eq!(b.len(), 2_000);
        assert_eq!(b.entries().next().unwrap().0, 2);
    }

    /// Where each chunk's rows live (a copy moves them).
    fn chunk_ptrs(b: &Bucket) -> Vec<*const f32> {
        b.chunks.iter().map(|c| c.rows.as_ptr()).collect()
    }

    fn snap_ptrs(s: &BucketSnapshot) -> Vec<*const f32> {
        s.chunks.iter().map(|c| c.rows.as_ptr()).collect()
    }

    #[test]
    fn chunk_shape() {
        let f32_rows = |dim| chunk_rows_for(Quant::Float32.row_bytes(dim));
        assert_eq!(f32_rows(1536), 340); // 2 MiB / 6 KiB = 341, down to a multiple of 4
        assert_eq!(f32_rows(384), 1364);
        assert_eq!(f32_rows(1), CHUNK_BYTES / 4);
        assert_eq!(f32_rows(1 << 20), 4);
        assert_eq!(chunk_rows_for(Quant::Int8.row_bytes(384)), 5404); // 2 MiB / 388
        let mut rng = Rng::new(19);
        let mut b = Bucket::new(1_000);
        fill(&mut b, 1_000, 1536, &mut rng);
        // Every chunk but the last is full; none is over ~CHUNK_BYTES.
        let lens: Vec<usize> = b.chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![340, 340, 320]);
        assert!(b
            .chunks
            .iter()
            .all(|c| c.rows.capacity() * 4 <= CHUNK_BYTES));
        // Removing rows empties and frees the last chunk.
        for id in 1..=320 {
            assert!(b.remove(id));
        }
        assert_eq!(b.chunks.len(), 2);
        assert_eq!(b.len(), 680);
        assert_eq!(b.entries().next().unwrap().0, 321);
    }

    #[test]
    fn chunked_scan_scores_like_one_block() {
        // The scores of a chunked search are bit for bit those of one scan over a
        // contiguous block of the same rows (what the bucket did before chunking).
        let mut rng = Rng::new(23);
        for &(n, dim) in &[(3_001usize, 384usize), (1_000, 1536), (700, 1000), (9, 3)] {
            let mut b = Bucket::new(n);
            fill(&mut b, n + 37, dim, &mut rng); // with evictions: rows swapped around
            for id in (40..n as u64).step_by(7) {
                b.remove(id);
            }
            let block: Vec<f32> = (0..b.len())
                .flat_map(|i| b.entry_at(i).1.to_f32())
                .collect();
            let q = normalized(&rng.vec(dim)).unwrap();
            let mut want = Vec::new();
            vector::scan_dots(&block, dim, &q, &mut want);
            let hits = b.search(&q, -1.0, usize::MAX, 0);
            assert_eq!(hits.len(), b.len());
            for h in &hits {
                assert_eq!(h.score, want[h.index].clamp(-1.0, 1.0), "{n} x {dim}");
                assert_eq!(b.entry_at(h.index).0, h.id);
            }
            assert_eq!(b.snapshot().search(&q, -1.0, usize::MAX, 0), hits);
        }
    }

    #[test]
    fn copy_on_write_copies_only_touched_chunks() {
        let mut rng = Rng::new(29);
        let dim = 2048; // 256 rows per chunk
        let mut b = Bucket::new(1_000);
        let mut raws = Vec::new();
        for i in 0..1_000 {
            let v = rng.vec(dim);
            b.insert(None, &v, format!("r{i}").into_bytes(), None, 0)
                .unwrap();
            raws.push(v);
        }
        assert_eq!(b.chunks.len(), 4);
        let q = normalized(&rng.vec(dim)).unwrap();
        let before = b.search(&q, -1.0, usize::MAX, 0);
        let snap = b.snapshot();
        let old = snap_ptrs(&snap);
        assert_eq!(chunk_ptrs(&b), old); // taking it copied nothing

        // Insert at capacity: evicts id 1 (row 0, chunk 0), moves the last row
        // (chunk 3) into row 0 and appends to chunk 3. Chunks 1 and 2 stay shared.
        let out = b
            .insert(None, &rng.vec(dim), b"new".to_vec(), None, 0)
            .unwrap();
        assert_eq!(out.evicted, vec![1]);
        let now = chunk_ptrs(&b);
        assert_ne!(now[0], old[0]);
        assert_eq!(now[1..3], old[1..3]);
        assert_ne!(now[3], old[3]);
        // Remove id 300 (chunk 1) and change the expiry of id 600 (chunk 2):
        // each copies its own chunk once; chunk 0 and 3 are already the bucket's.
        let (c0, c3) = (now[0], now[3]);
        assert!(b.remove(300));
        assert!(b.set_expire(600, 5));
        let now = chunk_ptrs(&b);
        assert_eq!((now[0], now[3]), (c0, c3));
        assert_ne!(now[1], old[1]);
        assert_ne!(now[2], old[2]);
        assert_eq!(Arc::strong_count(&b.chunks[0]), 1);

        // The snapshot still sees every old row, and scores them as before.
        assert_eq!(snap_ptrs(&snap), old);
        assert_eq!(snap.len(), 1_000);
        assert_eq!(snap.search(&q, -1.0, usize::MAX, 0), before);
        for id in [1u64, 300, 600, 1_000] {
            let mine = normalized(&raws[id as usize - 1]).unwrap();
            let hit = snap.search(&mine, 1.0, 1, 10)[0];
            assert_eq!((hit.id, hit.index), (id, id as usize - 1));
        }
        // The bucket sees its own rows.
        assert!(b.get(1).is_none() && b.get(300).is_none());
        assert_eq!(b.get(1_001).unwrap().2, b"new");
        assert_eq!(b.get(600).unwrap().4, 5);
        assert_eq!(b.len(), 999);
        // Copy-on-write kept the capacity: no chunk was regrown (the last holds
        // what max_items leaves: 1,000 - 3 x 256).
        let caps: Vec<usize> = b.chunks.iter().map(|c| c.cap_rows()).collect();
        assert_eq!(caps, vec![256, 256, 256, 232]);
        drop(snap);
        // Without a snapshot nothing is copied.
        let p = chunk_ptrs(&b);
        b.insert(None, &rng.vec(dim), vec![], None, 0).unwrap();
        b.remove(2);
        b.set_expire(700, 0);
        assert_eq!(chunk_ptrs(&b), p);
    }

    /// Clustered unit-ish vectors: `clusters` centres plus noise.
    fn clustered(n: usize, dim: usize, clusters: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.vec(dim)).collect();
        (0..n)
            .map(|i| {
                let noise = rng.vec(dim);
                centres[i % clusters]
                    .iter()
                    .zip(noise)
                    .map(|(c, e)| c + 0.4 * e)
                    .collect()
            })
            .collect()
    }

    fn near(v: &[f32], rng: &mut Rng) -> Vec<f32> {
        let n = normalized(v).unwrap();
        normalized(&n.iter().map(|x| x + 0.01 * rng.f32()).collect::<Vec<_>>()).unwrap()
    }

    /// Index lookups against exact scans: top-1 agreement, live entries only, exact scores,
    /// through inserts, evictions, removals and expiry.
    #[test]
    fn index_matches_exact_scan_through_churn() {
        index_churn(Algo::Hnsw);
    }

    #[test]
    fn ivf_index_matches_exact_scan_through_churn() {
        index_churn(Algo::Ivf);
    }

    /// Int8 rows are re-scored from the index's copy of them: the scores must be those of
    /// the bucket's rows (checked by `index_churn`), after churn and after a reload.
    #[test]
    fn ivf_int8_index_matches_exact_scan_through_churn() {
        index_churn_quant(Algo::Ivf, Quant::Int8);
    }

    fn index_churn(algo: Algo) {
        index_churn_quant(algo, Quant::Float32)
    }

    fn index_churn_quant(algo: Algo, quant: Quant) {
        let mut rng = Rng::new(31);
        let dim = 48;
        let data = clustered(4_000, dim, 100, &mut rng);
        let mut b = Bucket::new(2_500);
        assert!(b.set_algo(algo));
        b.set_quant(quant);
        for (i, v) in data.iter().enumerate() {
            let exp = if i % 10 == 0 { 5_000 } else { 0 };
            b.insert(None, v, vec![], None, exp).unwrap();
            if i == 600 {
                b.create_index();
                assert!(b.has_index() && b.unindexed() == b.len());
                assert!(b
                    .search_index(&data[0], 0.0, 1, 0, Effort::ef(64))
                    .is_none()); // not complete
            }
            b.index_pending(8);
            if i % 7 == 0 && i > 10 {
                b.remove(i as u64 - 5);
            }
        }
        assert_eq!(b.unindexed(), 0);
        let expired = b.remove_expired(6_000);
        assert!(!expired.is_empty());
        assert_eq!(b.unindexed(), 0);
        let mut agree = 0;
        let live: Vec<u64> = b.entries().map(|e| e.0).collect();
        for k in 0..300 {
            let id = live[(k * 7) % live.len()];
            let q = near(&data[id as usize - 1], &mut rng);
            let exact = b.search(&q, -1.0, 3, 0);
            let got = b.search_index(&q, -1.0, 3, 0, Effort::ef(64)).unwrap();
            assert_eq!(got.len(), 3);
            for h in &got {
                assert_eq!(b.entry_at(h.index).0, h.id, "hit resolves to its row");
                let want = b.entry_at(h.index).1.score(&q);
                assert_eq!(h.score, want, "scores are exact");
            }
            agree += usize::from(got[0].id == exact[0].id);
        }
        assert!(agree >= 297, "{algo:?}: top-1 agreement {agree}/300");
        assert_eq!(b.index_graph().map(|g| g.algo()), Some(algo));
        // Expired entries (by the caller's clock) never answer, even before reclaiming.
        let mut c = b.clone();
        let victim = live[live.len() / 2];
        assert!(c.set_expire(victim, 10));
        let q = near(&data[victim as usize - 1], &mut rng);
        assert_eq!(
            c.search_index(&q, -1.0, 1, 0, Effort::ef(64)).unwrap()[0].id,
            victim
        );
        assert!(c
            .search_index(&q, -1.0, 5, 10, Effort::ef(64))
            .unwrap()
            .iter()
            .all(|h| h.id != victim));
        // A threshold above every score: nothing.
        assert!(c
            .search_index(&q, 1.0, 5, 0, Effort::ef(64))
            .unwrap()
            .iter()
            .all(|h| h.score >= 1.0 - 1e-6));
        if algo == Algo::Ivf {
            ivf_reload(&b, &data, &mut rng);
        }
    }

    /// Equal scores through the index: the newer entry first, an expired one skipped, as
    /// the exact scan orders them (the index path reads entries only as it takes answers).
    #[test]
    fn index_orders_equal_scores_newer_first() {
        each_indexed_bucket(47, |algo, quant, mut b, data, rng| {
            let twin = near(&data[5], rng);
            let ids: Vec<u64> = (0..4)
                .map(|_| b.insert(None, &twin, vec![], None, 0).unwrap().id)
                .collect();
            b.index_pending(usize::MAX);
            assert!(b.set_expire(ids[2], 10));
            let q = normalized(&twin).unwrap();
            for (k, now) in [(1, 0), (3, 0), (4, 0), (3, 10), (4, 10)] {
                let got = b.search_index(&q, -1.0, k, now, Effort::ef(64)).unwrap();
                let want = b.search(&q, -1.0, k, now);
                assert_eq!(got, want, "{algo:?} {quant:?} k {k} now {now}");
            }
            let got = b.search_index(&q, 0.99, 3, 10, Effort::ef(64)).unwrap();
            assert_eq!(
                got.iter().map(|h| h.id).collect::<Vec<_>>(),
                vec![ids[3], ids[1], ids[0]],
                "{algo:?} {quant:?}"
            );
        });
    }

    /// Runs `test` on an indexed 800 x 32 bucket (10 clusters) of every index algorithm and
    /// vector kind, with its rows and the generator that made them.
    fn each_indexed_bucket(
        seed: u64,
        mut test: impl FnMut(Algo, Quant, Bucket, &[Vec<f32>], &mut Rng),
    ) {
        for (algo, quant) in [
            (Algo::Ivf, Quant::Int8),
            (Algo::Ivf, Quant::Float32),
            (Algo::Hnsw, Quant::Int8),
            (Algo::Hnsw, Quant::Float32),
        ] {
            let mut rng = Rng::new(seed);
            let data = clustered(800, 32, 10, &mut rng);
            let mut b = Bucket::new(1_000);
            assert!(b.set_algo(algo));
            b.set_quant(quant);
            for v in &data {
                b.insert(None, v, vec![], None, 0).unwrap();
            }
            b.create_index();
            test(algo, quant, b, &data, &mut rng);
        }
    }

    /// More expired (not yet reclaimed) entries than an index lookup keeps candidates, all
    /// nearer than any live one: the lookup still answers with the live ones, as a scan does.
    #[test]
    fn index_answers_past_expired_nearest_entries() {
        each_indexed_bucket(53, |algo, quant, mut b, data, rng| {
            let twin = near(&data[5], rng);
            for _ in 0..RESCORE_MIN + 4 {
                b.insert(None, &twin, vec![], None, 10).unwrap();
            }
            b.index_pending(usize::MAX);
            let q = normalized(&twin).unwrap();
            for (k, min_sim) in [(1, -1.0), (3, -1.0), (1, 0.5)] {
                let got = b.search_index(&q, min_sim, k, 10, Effort::ef(64)).unwrap();
                let want = b.search(&q, min_sim, k, 10);
                let case = format!("{algo:?} {quant:?} k {k} min {min_sim}");
                assert_eq!(got.len(), k, "{case}: {got:?}");
                assert_eq!(got[0], want[0], "{case}");
                assert!(got.iter().all(|h| h.id <= data.len() as u64), "{case}");
                assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "{case}");
            }
            // Before they expire, the twins answer.
            let got = b.search_index(&q, 0.99, 3, 0, Effort::ef(64)).unwrap();
            assert!(
                got.iter().all(|h| h.id > data.len() as u64),
                "{algo:?} {quant:?}"
            );
        });
    }

    thread_local! {
        /// Index lookups skip no list (as before lists were skipped): what skipping is
        /// compared against.
        pub(super) static SKIP_NO_LIST: Cell<bool> = const { Cell::new(false) };
        /// Index lookups take their first candidates as they are (as before a second look).
        pub(super) static NO_SECOND_LOOK: Cell<bool> = const { Cell::new(false) };
    }

    /// An IVF lookup skips lists that cannot hold the answer, counting only live entries as
    /// found: with a query's 8 nearest entries expired (clusters of 300 span lists of at
    /// most 256), its answers are as good as without skipping, never an expired entry.
    #[test]
    fn ivf_lookup_counts_only_live_entries_when_skipping_lists() {
        let mut rng = Rng::new(43);
        let data = clustered(6_000, 128, 20, &mut rng);
        let mut b = Bucket::new(10_000);
        assert!(b.set_algo(Algo::Ivf));
        for v in &data {
            b.insert(None, v, vec![], None, 0).unwrap();
        }
        b.create_index();
        b.index_pending(usize::MAX);
        assert_eq!(b.unindexed(), 0);
        let every_list = Effort {
            ef: 64,
            nprobe: 10_000,
        };
        let lists = match b.index_graph() {
            Some(AnnIndex::Ivf(x)) => x.lists(),
            _ => 0,
        };
        assert!(lists > 25, "{lists} lists");
        let (mut agree, mut asked) = (0, 0);
        for i in (0..6_000).step_by(97) {
            let q = near(&data[i], &mut rng);
            let mut c = b.clone();
            let nearest: Vec<u64> = c.search(&q, -1.0, 8, 0).iter().map(|h| h.id).collect();
            for &id in &nearest {
                assert!(c.set_expire(id, 10));
            }
            for (k, min_sim) in [(1, -1.0), (3, -1.0), (1, 0.5)] {
                let lookup = |skip_no_list: bool| {
                    SKIP_NO_LIST.set(skip_no_list);
                    let hits = c.search_index(&q, min_sim, k, 10, every_list).unwrap();
                    SKIP_NO_LIST.set(false);
                    hits.iter().map(|h| (h.score, h.id)).collect::<Vec<_>>()
                };
                let (all, skipping) = (lookup(true), lookup(false));
                assert!(
                    skipping.iter().all(|h| !nearest.contains(&h.1)),
                    "{i}: {skipping:?}"
                );
                assert!(skipping.len() >= all.len(), "{i}: {skipping:?} {all:?}");
                for (a, s) in all.iter().zip(&skipping) {
                    assert!(s.0 >= a.0, "{i}: {skipping:?} below {all:?}");
                }
                agree += usize::from(all == skipping);
                asked += 1;
            }
        }
        assert!(agree * 100 >= asked * 98, "{agree} of {asked} the same");
    }

    /// A saved IVF index (with the references of its sign bits, taken from past centroids)
    /// loads as the same index and gives the same answers; one of another dimension is refused.
    fn ivf_reload(b: &Bucket, data: &[Vec<f32>], rng: &mut Rng) {
        let payload = index_payload(b);
        let decode =
            || AnnIndex::decode(Algo::Ivf, &mut crate::wire::Reader::new(&payload), true).unwrap();
        let mut d = Bucket::new(b.max_items());
        assert!(d.set_algo(Algo::Ivf));
        d.set_quant(b.quant());
        for (id, row, resp, meta, exp) in b.entries() {
            d.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
                .unwrap();
        }
        d.attach_index(decode()).unwrap();
        assert_eq!(index_payload(&d), payload);
        let live: Vec<u64> = b.entries().map(|e| e.0).collect();
        for k in 0..100 {
            let q = near(&data[live[(k * 13) % live.len()] as usize - 1], rng);
            let key = |x: &Bucket| {
                let hits = x.search_index(&q, -1.0, 3, 0, Effort::ef(64)).unwrap();
                hits.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>()
            };
            assert_eq!(key(b), key(&d)); // rows differ: the copy's are in id order
        }
        let mut other = Bucket::new(10);
        assert!(other.set_algo(Algo::Ivf));
        other.insert(None, &data[0][1..], vec![], None, 0).unwrap();
        let e = other.attach_index(decode()).unwrap_err();
        assert!(e.contains("dimension 48"), "{e}");
        assert!(!other.has_index());
    }

    fn index_payload(b: &Bucket) -> Vec<u8> {
        let mut out = Vec::new();
        b.index_graph().unwrap().encode(&mut out);
        out
    }

    /// The graph depends only on the order of inserts and removals by id, never on physical
    /// rows: expiry on a primary (rows in physical order) and the replica's SEMCACHE.DEL of
    /// the same ids (in id order) build the same graph.
    #[test]
    fn index_is_deterministic_across_removal_paths() {
        let mut rng = Rng::new(37);
        let data = clustered(1_500, 16, 20, &mut rng);
        let mut primary = Bucket::new(1_000);
        let mut replica = Bucket::new(1_000);
        for (i, v) in data.iter().enumerate() {
            let exp = if i % 3 == 0 { 100 + (i as i64 % 50) } else { 0 };
            for b in [&mut primary, &mut replica] {
                if i == 200 {
                    b.create_index();
                }
                b.index_pending(8);
            }
            if i % 100 == 99 {
                let dropped = primary.remove_expired(120);
                for id in &dropped {
                    assert!(replica.remove(*id));
                }
            }
            let p = primary.insert(None, v, vec![], None, exp).unwrap();
            for id in &p.evicted {
                assert!(replica.remove(*id));
            }
            replica.insert(Some(p.id), v, vec![], None, exp).unwrap();
        }
        for b in [&mut primary, &mut replica] {
            b.index_pending(usize::MAX);
        }
        assert_eq!(index_payload(&primary), index_payload(&replica));
        assert_eq!(
            primary.entries().collect::<Vec<_>>(),
            replica.entries().collect::<Vec<_>>()
        );
    }

    #[test]
    fn attached_index_answers_like_the_original() {
        let mut rng = Rng::new(41);
        let data = clustered(1_200, 24, 30, &mut rng);
        let mut a = Bucket::new(1_000);
        a.create_index();
        for v in &data {
            a.insert(None, v, vec![], None, 0).unwrap();
            a.index_pending(8);
        }
        let mut b = Bucket::new(a.max_items());
        for (id, row, resp, meta, exp) in a.entries() {
            b.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
                .unwrap();
        }
        let payload = index_payload(&a);
        let g =
            AnnIndex::decode(Algo::Hnsw, &mut crate::wire::Reader::new(&payload), false).unwrap();
        b.attach_index(g).unwrap();
        assert_eq!(index_payload(&a), index_payload(&b));
        for v in data.iter().step_by(13) {
            let q = near(v, &mut rng);
            let key = |h: Vec<Hit>| h.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>();
            let (x, y) = (
                a.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
                b.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
            );
            assert_eq!(key(x.unwrap()), key(y.unwrap()));
        }
        // A graph naming an entry the bucket lacks is refused, and changes nothing.
        let mut c = Bucket::new(1_000);
        for (id, row, resp, meta, exp) in a.entries().skip(1) {
            c.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
                .unwrap();
        }
        let g = AnnIndex::decode(
            Algo::Hnsw,
            &mut crate::wire::Reader::new(&index_payload(&a)),
            false,
        )
        .unwrap();
        assert!(c.attach_index(g).unwrap_err().contains("not in the bucket"));
        assert!(!c.has_index());
    }

    fn tag(user: &str) -> Option<Box<[u8]>> {
        tags::encode(&[(b"user".to_vec(), user.as_bytes().to_vec())])
    }

    fn tagged(user: &str) -> EntryData {
        EntryData {
            tags: tag(user),
            ..EntryData::default()
        }
    }

    fn filter(user: &str) -> Vec<Pair> {
        vec![(b"user".to_vec(), user.as_bytes().to_vec())]
    }

    /// A FILTER never lets another entry answer: exact scans (bucket and snapshot, through
    /// row moves), the index (with a fallback for selective filters), and DEL FILTER's ids.
    #[test]
    fn filters_hold_everywhere() {
        let mut rng = Rng::new(43);
        let data = clustered(1_200, 16, 10, &mut rng);
        let mut b = Bucket::new(1_000);
        b.create_index();
        for (i, v) in data.iter().enumerate() {
            // u0..u9 own 10% each; "rare" owns 3 entries.
            let user = if i % 400 == 7 {
                "rare".to_string()
            } else {
                format!("u{}", i % 10)
            };
            b.insert_entry(None, v, tagged(&user)).unwrap();
            b.index_pending(8);
        }
        b.remove(500);
        let snap = b.snapshot();
        b.insert_entry(None, &data[0], tagged("u3")).unwrap(); // moves rows
        b.index_pending(8);
        let user_of = |b: &Bucket, h: &Hit| b.tags_at(h.index).map(<[u8]>::to_vec);
        for (k, v) in data.iter().enumerate().step_by(37) {
            let q = near(v, &mut rng);
            let u = format!("u{}", k % 10);
            for hits in [
                b.search_where(&q, -1.0, 5, 0, &filter(&u)),
                b.search_index_where(&q, -1.0, 5, 0, Effort::ef(64), &filter(&u))
                    .unwrap(),
            ] {
                assert_eq!(hits.len(), 5);
                assert!(hits
                    .iter()
                    .all(|h| user_of(&b, h) == tag(&u).map(|t| t.to_vec())));
            }
            let exact = b.search_where(&q, -1.0, 1, 0, &filter(&u));
            let ixd = b
                .search_index_where(&q, -1.0, 1, 0, Effort::ef(64), &filter(&u))
                .unwrap();
            assert_eq!(exact[0].id, ixd[0].id);
            for h in snap.search_where(&q, -1.0, 5, 0, &filter(&u)) {
                assert_eq!(
                    b.get(h.id).map(|_| ()),
                    Some(()),
                    "snapshot ids are live here"
                );
            }
        }
        // A selective filter: the index gives up (None) unless its walk found enough.
        let q = near(&data[7], &mut rng);
        // (id 8, the first "rare" entry, was evicted.)
        let rare = b.search_where(&q, -1.0, 3, 0, &filter("rare"));
        assert_eq!(rare.iter().map(|h| h.id).collect::<Vec<_>>().len(), 2);
        assert_eq!(
            b.search_index_where(&q, -1.0, 3, 0, Effort::ef(64), &filter("rare")),
            None
        );
        assert!(b.search_where(&q, -1.0, 3, 0, &filter("nobody")).is_empty());
        assert_eq!(b.ids_where(&filter("rare")), vec![408, 808]);
        assert_eq!(b.ids_where(&filter("u3")).len(), 101); // 120 - 20 evicted + 1
        assert!(b.ids_where(&[]).len() == b.len());
    }

    /// A selective filter on inverted lists: too few of the candidates match, so the lists
    /// are looked at again keeping only matching entries, and the index answers (a graph
    /// gives up and the caller scans). Never an entry outside the filter.
    #[test]
    fn ivf_selective_filter_answers_from_the_lists() {
        let mut rng = Rng::new(59);
        let data = clustered(8_000, 32, 40, &mut rng);
        // 100 users, each with entries in every cluster (entry i is in cluster i % 40).
        let user = |i: usize| format!("u{}", (i / 40) % 100);
        let mut b = Bucket::new(10_000);
        assert!(b.set_algo(Algo::Ivf));
        b.create_index();
        for (i, v) in data.iter().enumerate() {
            b.insert_entry(None, v, tagged(&user(i))).unwrap();
            b.index_pending(8);
        }
        let (mut answered, mut gave_up, mut same, mut n) = (0, 0, 0, 0);
        for i in (0..data.len()).step_by(97) {
            n += 1;
            let q = near(&data[i], &mut rng);
            let only = filter(&user(i));
            let exact = b.search_where(&q, -1.0, 5, 0, &only);
            assert_eq!(exact.len(), 5);
            let lookup = || b.search_index_where(&q, -1.0, 5, 0, Effort::ef(64), &only);
            tests::NO_SECOND_LOOK.set(true);
            gave_up += usize::from(lookup().is_none());
            tests::NO_SECOND_LOOK.set(false);
            if let Some(hits) = lookup() {
                answered += 1;
                assert_eq!(hits.len(), 5);
                assert!(hits
                    .iter()
                    .all(|h| b.tags_at(h.index) == tag(&user(i)).as_deref()));
                same += usize::from(hits[0].id == exact[0].id);
            }
        }
        assert!(gave_up * 2 >= n, "the filter is selective: {gave_up} / {n}");
        assert!(answered * 10 >= n * 9, "lists answered {answered} / {n}");
        assert!(same * 100 >= answered * 95, "top-1 {same} / {answered}");
    }

    /// The exact answer over a bucket's stored rows (each scored with its own `score`).
    fn reference(b: &Bucket, q: &[f32], min_sim: f32, k: usize, now: i64) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = b
            .entries()
            .filter(|e| !is_expired(e.4, now))
            .map(|e| (e.0, e.1.score(q)))
            .filter(|&(_, s)| s >= min_sim - SCORE_EPSILON)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        all.truncate(k);
        all
    }

    /// An int8 bucket's scan prunes with integer scores but answers exactly what an exact scan
    /// of its stored (dequantized) vectors answers, through removals, expiry and snapshots.
    #[test]
    fn int8_scan_answers_exactly() {
        let mut rng = Rng::new(53);
        let dim = 40;
        let data = clustered(3_000, dim, 60, &mut rng);
        let mut b = Bucket::new(2_500);
        assert!(b.set_quant(Quant::Int8));
        for (i, v) in data.iter().enumerate() {
            let exp = if i % 9 == 0 { 50 } else { 0 };
            b.insert(None, v, vec![], None, exp).unwrap();
            if i % 5 == 0 && i > 10 {
                b.remove(i as u64 - 3);
            }
        }
        assert!(!b.set_quant(Quant::Float32), "fixed by the first entry");
        assert!(b.set_quant(Quant::Int8));
        assert_eq!(b.vector_bytes(), b.len() * (dim + 4));
        assert!(b.entries().all(|e| matches!(e.1, RowRef::I8(..))));
        let snap = b.snapshot();
        for (n, v) in data.iter().enumerate().step_by(29) {
            let q = near(v, &mut rng);
            for (min_sim, k, now) in [(-1.0, 1, 0), (0.5, 5, 60), (0.9, 50, 60), (0.99, 3, 0)] {
                let want = reference(&b, &q, min_sim, k, now);
                let got: Vec<(u64, f32)> = b
                    .search(&q, min_sim, k, now)
                    .iter()
                    .map(|h| (h.id, h.score))
                    .collect();
                assert_eq!(got, want, "query {n}, min_sim {min_sim}, k {k}");
                let from_snap: Vec<(u64, f32)> = snap
                    .search(&q, min_sim, k, now)
                    .iter()
                    .map(|h| (h.id, h.score))
                    .collect();
                assert_eq!(from_snap, want);
            }
        }
    }

    /// Recall@1 of an int8 bucket (scan and index) against an exact float32 scan of the
    /// original vectors, on clustered data with near-duplicate queries.
    #[test]
    fn int8_recall_against_float_originals() {
        let mut rng = Rng::new(59);
        let dim = 64;
        let data = clustered(4_000, dim, 80, &mut rng);
        let mut exact = Bucket::new(4_000);
        let mut b = Bucket::new(4_000);
        b.set_quant(Quant::Int8);
        b.create_index();
        for v in &data {
            exact.insert(None, v, vec![], None, 0).unwrap();
            b.insert(None, v, vec![], None, 0).unwrap();
            b.index_pending(8);
        }
        assert_eq!(b.unindexed(), 0);
        assert!(b.vector_bytes() * 10 <= exact.vector_bytes() * 3, "<= 0.3x");
        let (mut scan_ok, mut index_ok, n) = (0, 0, 400);
        for k in 0..n {
            let q = near(&data[(k * 37) % data.len()], &mut rng);
            let truth = exact.search(&q, -1.0, 1, 0)[0].id;
            scan_ok += usize::from(b.search(&q, -1.0, 1, 0)[0].id == truth);
            let ixd = b.search_index(&q, -1.0, 1, 0, Effort::ef(64)).unwrap();
            index_ok += usize::from(ixd[0].id == truth);
            // Index scores are the exact ones of the stored rows.
            let h = ixd[0];
            assert_eq!(h.score, b.entry_at(h.index).1.score(&q));
        }
        assert!(scan_ok * 100 >= n * 98, "scan recall {scan_ok}/{n}");
        assert!(index_ok * 100 >= n * 98, "index recall {index_ok}/{n}");
        // A loaded graph over int8 rows gives the same answers.
        let mut c = Bucket::new(4_000);
        c.set_quant(Quant::Int8);
        for (id, row, resp, meta, exp) in b.entries() {
            c.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
                .unwrap();
        }
        let g = AnnIndex::decode(
            Algo::Hnsw,
            &mut crate::wire::Reader::new(&index_payload(&b)),
            false,
        )
        .unwrap();
        c.attach_index(g).unwrap();
        for v in data.iter().step_by(97) {
            let q = near(v, &mut rng);
            assert_eq!(
                b.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
                c.search_index(&q, -1.0, 5, 0, Effort::ef(32))
            );
        }
        // Rows of the other kind are refused.
        let mut d = Bucket::new(10);
        d.set_quant(Quant::Int8);
        assert_eq!(
            d.push_loaded(1, RowRef::F32(&[1.0, 0.0]), vec![], None, 0),
            Err(BucketError::QuantMismatch {
                bucket: Quant::Int8,
                row: Quant::Float32
            })
        );
        assert_eq!(
            d.push_loaded(1, RowRef::I8(&[0, 0], 0.0), vec![], None, 0),
            Err(BucketError::ZeroCode)
        );
        assert!(d.is_empty());
    }

    /// The per-chunk minimum ids stay right through inserts, evictions, removals (row moves
    /// across chunks) and expiry, so the oldest entry is found without reading every id.
    #[test]
    fn chunk_min_ids_track_the_oldest_entry() {
        let mut rng = Rng::new(61);
        let mut b = Bucket::new(3_000);
        let dim = 300; // 1,744 rows per chunk: two chunks
        for i in 0..6_000u64 {
            let exp = if i % 11 == 0 { 5_000 + i as i64 } else { 0 };
            b.insert(None, &rng.vec(dim), vec![], None, exp).unwrap();
            if i % 3 == 0 {
                let victim = ((rng.f32() + 1.0) * 0.5 * b.next_id() as f32) as u64;
                b.remove(victim);
            }
            if i % 500 == 0 {
                b.remove_expired(5_000 + i as i64 / 2);
            }
            for chunk in &b.chunks {
                assert_eq!(
                    chunk.min_id,
                    chunk.ids.iter().copied().min().unwrap(),
                    "at {i}"
                );
            }
            let brute = b.entries().next().map(|e| e.0);
            assert_eq!(b.oldest_index().map(|x| b.id_at(x)), brute, "at {i}");
        }
    }

    #[test]
    fn prompts_follow_their_entries() {
        let mut b = Bucket::new(3);
        for i in 0..3 {
            ins(&mut b, &[1.0, i as f32], "r");
        }
        assert!(b.set_prompt(1, b"hello"));
        assert!(!b.set_prompt(2, b"hello"), "one entry per prompt");
        assert!(!b.set_prompt(99, b"other"), "absent id");
        assert!(b.set_prompt(2, b"bye"));
        assert_eq!(b.id_of_prompt(b"hello"), Some(1));
        assert_eq!(b.prompt_of(2), Some(&b"bye"[..]));
        // Eviction (id 1), removal and expiry take the prompt along.
        ins(&mut b, &[1.0, 5.0], "r");
        assert_eq!(b.id_of_prompt(b"hello"), None);
        assert!(b.remove(2));
        assert_eq!(b.id_of_prompt(b"bye"), None);
        assert!(b.set_prompt(3, b"bye"));
        let full: Vec<_> = b.entries_with_tags().map(|e| (e.0 .0, e.2)).collect();
        assert_eq!(full, vec![(3, Some(&b"bye"[..])), (4, None)]);
        assert!(b.set_expire(3, 10));
        assert_eq!(b.remove_expired(10), vec![3]);
        assert_eq!(b.id_of_prompt(b"bye"), None);
        assert!(b.id_prompts.is_empty() && b.prompt_ids.is_empty());
    }

    #[test]
    fn eviction_victims_are_the_smallest_rank_use_id() {
        // Against the definition, with many ties (hits and uses drawn from few values).
        let mut rng = Rng::new(7);
        let mut next = |m: u64| rng.next_u64() % m;
        for policy in [EvictPolicy::Lru, EvictPolicy::Lfu] {
            for _ in 0..50 {
                let mut b = Bucket::new(40);
                b.set_policy(policy);
                let n = 1 + next(40) as usize;
                for i in 0..n {
                    ins(&mut b, &[1.0, i as f32], "r");
                }
                if policy == EvictPolicy::Lfu {
                    for i in 0..b.len() {
                        b.last_use[i].set(next(4));
                        b.hit_counts[i].set(next(3) as u32);
                    }
                } else {
                    // LRU keeps its order as rows are read, removed (renumbered) and added.
                    for _ in 0..next(80) {
                        match next(4) {
                            0 => b.remove(b.id_at(next(b.len() as u64) as usize)),
                            1 => ins(&mut b, &[2.0, next(9) as f32], "r").evicted.is_empty(),
                            _ => {
                                b.record_hit(next(b.len() as u64) as usize);
                                true
                            }
                        };
                        if b.is_empty() {
                            ins(&mut b, &[1.0, 1.0], "r");
                        }
                    }
                    let mut by_use: Vec<usize> = (0..b.len()).collect();
                    by_use.sort_by_key(|&i| b.last_use[i].get());
                    assert_eq!(b.use_order.order(), by_use);
                }
                let rank = |i: usize| match policy {
                    EvictPolicy::Lfu => b.hit_counts[i].get(),
                    _ => 0,
                };
                let want = (0..b.len()).min_by_key(|&i| (rank(i), b.last_use[i].get(), b.id_at(i)));
                assert_eq!(b.victim_index(), want);
            }
        }
    }

    #[test]
    fn eviction_policies() {
        let fill = |policy| {
            let mut b = Bucket::new(3);
            b.set_policy(policy);
            for i in 0..3 {
                ins(&mut b, &[1.0, i as f32], "r");
            }
            b
        };
        let hit = |b: &Bucket, id: u64| b.record_hit(b.index_of(id).unwrap());
        // FIFO: the oldest, whatever was read.
        let mut b = fill(EvictPolicy::Fifo);
        hit(&b, 1);
        assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![1]);
        // LRU: 1 was read after 2 and 3 were inserted: 2 goes, then 3.
        let mut b = fill(EvictPolicy::Lru);
        hit(&b, 1);
        assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![2]);
        assert_eq!(ins(&mut b, &[2.0, 2.0], "n").evicted, vec![3]);
        assert_eq!(ins(&mut b, &[2.0, 3.0], "n").evicted, vec![1]);
        // LFU: fewest hits (1 twice, 3 once); the new entry (0 hits) goes next.
        let mut b = fill(EvictPolicy::Lfu);
        hit(&b, 1);
        hit(&b, 1);
        hit(&b, 3);
        assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![2]);
        assert_eq!(ins(&mut b, &[2.0, 2.0], "n").evicted, vec![4]);
        assert_eq!(b.hits_at(b.index_of(1).unwrap()), 2);
        // set_max_items follows the policy too.
        assert_eq!(b.set_max_items(1), vec![5, 3]);
        assert_eq!(EvictPolicy::parse(b"LRU"), Some(EvictPolicy::Lru));
        assert_eq!(EvictPolicy::parse(b"random"), None);
        for p in [EvictPolicy::Fifo, EvictPolicy::Lru, EvictPolicy::Lfu] {
            assert_eq!(EvictPolicy::from_code(p.code()), Some(p));
            assert_eq!(EvictPolicy::parse(p.name().as_bytes()), Some(p));
        }
        assert_eq!(EvictPolicy::from_code(3), None);
    }
}

/// The floor of a lookup: a 10-entry bucket scanned in-process (what a `SEMCACHE.GET` pays
/// whatever the bucket, besides parsing): `cargo test --release --lib small_bucket_lookup_ns
/// -- --ignored --nocapture`.
#[cfg(test)]
mod floor_probe {
    use super::*;
    use crate::semcache::hnsw::tests_support::{clustered, Rng};

    #[test]
    #[ignore]
    fn small_bucket_lookup_ns() {
        let mut rng = Rng::new(1);
        for (quant, dim) in [
            (Quant::Int8, 384),
            (Quant::Float32, 384),
            (Quant::Int8, 1536),
        ] {
            let data = clustered(20, dim, 4, &mut rng);
            let mut b = Bucket::new(100);
            b.set_quant(quant);
            for v in &data[..10] {
                b.insert(None, v, vec![0; 512], None, 0).unwrap();
            }
            let t = std::time::Instant::now();
            let n = 200_000;
            for i in 0..n {
                std::hint::black_box(b.search_where(&data[10 + i % 10], -1.0, 1, 0, &[]));
            }
            println!(
                "{quant:?} {dim}: {:.0} ns",
                t.elapsed().as_nanos() as f64 / n as f64
            );
        }
    }
}
