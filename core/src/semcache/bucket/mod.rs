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

//!
//! # Files
//!
//! `rows` (row kinds, entry data, hits, errors), `chunks` (copy-on-write chunk storage),
//! `exact` (the exact scans of f32 rows and int8 codes), `index` (the ANN index glue),
//! `evict` (which entry makes room), this file (the bucket and its column storage),
//! `tests`.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::ann::{Algo, AnnIndex, Candidate, Effort, Want};
use super::lru::UseOrder;
use super::tags::{self, Pair};
use crate::vector::{self, VectorError};

mod chunks;
mod evict;
mod exact;
mod index;
mod rows;
#[cfg(test)]
mod tests;

use chunks::*;
use exact::*;
use index::*;
pub use rows::*;

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
