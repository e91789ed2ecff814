//! Copy-on-write chunk storage: fixed-size blocks of rows, ids and expiries, each its own
//! `Arc`, so a snapshot shares them and a mutation copies at most two.

use super::*;

/// Target vector bytes of one chunk: the most a copy-on-write copies per
/// touched chunk (~0.1-0.3 ms of memcpy).
pub const CHUNK_BYTES: usize = 2 << 20;

/// Rows per chunk for a row size: ~[`CHUNK_BYTES`] of vectors, a multiple of
/// 4 and at least 4. (The AVX2 scan scores rows by fours from the start of
/// each slice it is given, so chunks that start at multiples of 4 score every
/// row exactly as one contiguous block did.)
pub(super) fn chunk_rows_for(row_bytes: usize) -> usize {
    (CHUNK_BYTES / row_bytes.max(1) / 4 * 4).max(4)
}

#[inline]
pub(super) fn is_expired(expire_at_ms: i64, now_ms: i64) -> bool {
    expire_at_ms != 0 && expire_at_ms <= now_ms
}

/// Up to `chunk_rows` consecutive entries: their rows, ids and expiries.
/// Shared with snapshots; copied on write only while shared.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    pub(super) quant: Quant,
    /// Float32 rows (a [`Quant::Float32`] chunk).
    pub(super) rows: Vec<f32>,
    /// Int8 codes and their `1 / |code|` (a [`Quant::Int8`] chunk).
    pub(super) codes: Vec<i8>,
    pub(super) inv_norms: Vec<f32>,
    pub(super) ids: Vec<u64>,
    pub(super) expire_at_ms: Vec<i64>,
    /// Each row's tag blob (see `tags.rs`): here rather than bucket-wide, so that a
    /// background scan of a snapshot can apply a FILTER.
    pub(super) tags: Vec<Option<Box<[u8]>>>,
    /// The smallest id in `ids` (`u64::MAX` when empty): the oldest entry of a bucket is
    /// found from one value per chunk, not from every id.
    pub(super) min_id: u64,
}

impl Chunk {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Rows the chunk holds without reallocating.
    pub(super) fn cap_rows(&self) -> usize {
        self.ids.capacity()
    }

    pub(super) fn new(quant: Quant) -> Chunk {
        Chunk {
            quant,
            min_id: u64::MAX,
            ..Chunk::default()
        }
    }

    /// Keeps `min_id` right when the id `old` leaves the chunk (and `new`, if any, comes):
    /// a pass over the ids only when the minimum itself left.
    pub(super) fn replaced_id(&mut self, old: u64, new: Option<u64>) {
        if old == self.min_id {
            self.min_id = self.ids.iter().copied().min().unwrap_or(u64::MAX);
        } else if let Some(n) = new {
            self.min_id = self.min_id.min(n);
        }
    }

    pub(super) fn reserve_exact(&mut self, rows: usize, dim: usize) {
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
    pub(super) fn copy(&self, dim: usize) -> Chunk {
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

    pub(super) fn push(
        &mut self,
        id: u64,
        row: RowRef,
        expire_at_ms: i64,
        tags: Option<Box<[u8]>>,
    ) {
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
    pub(super) fn row(&self, o: usize, dim: usize) -> RowRef<'_> {
        match self.quant {
            Quant::Float32 => RowRef::F32(&self.rows[o * dim..(o + 1) * dim]),
            Quant::Int8 => RowRef::I8(&self.codes[o * dim..(o + 1) * dim], self.inv_norms[o]),
        }
    }

    /// Overwrites row `o` with row `from` of `src` (which may be this chunk's
    /// own row when called through [`Chunk::move_row`]).
    pub(super) fn set_row(&mut self, o: usize, src: &Chunk, from: usize, dim: usize) {
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

    pub(super) fn move_row(&mut self, from: usize, to: usize, dim: usize) {
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

    pub(super) fn truncate(&mut self, rows: usize, dim: usize) {
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

    pub(super) fn shrink_to(&mut self, rows: usize, dim: usize) {
        self.rows.shrink_to(rows * dim);
        self.codes.shrink_to(rows * dim);
        self.inv_norms.shrink_to(rows);
        self.ids.shrink_to(rows);
        self.expire_at_ms.shrink_to(rows);
        self.tags.shrink_to(rows);
    }

    /// Heap bytes including the `Arc` allocation that holds the chunk.
    pub(super) fn heap_bytes(&self) -> usize {
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
pub(super) fn unique(chunk: &mut Arc<Chunk>, dim: usize) -> &mut Chunk {
    if Arc::get_mut(chunk).is_none() {
        *chunk = Arc::new(chunk.copy(dim));
    }
    Arc::get_mut(chunk).expect("unique after copy")
}
