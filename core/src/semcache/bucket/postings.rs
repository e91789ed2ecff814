//! Posting lists: for each tag pair, the rows that carry it. A filtered lookup whose most
//! selective pair holds few rows scores exactly those rows (an exact answer for a fraction of
//! a scan's cost) instead of walking the index, which keeps only the matching candidates it
//! happens to find. Derived from the rows' tags, so nothing is persisted or replicated: every
//! node rebuilds the same lists from the same entries as it loads them.

use std::collections::{HashMap, HashSet};

use super::*;

#[derive(Debug, Clone, Default)]
pub(super) struct Postings {
    lists: HashMap<Box<[u8]>, HashSet<u32>>,
}

/// The map key of a pair: its name's length, the name, the value.
fn pair_key(name: &[u8], value: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(4 + name.len() + value.len());
    k.extend_from_slice(&(name.len() as u32).to_le_bytes());
    k.extend_from_slice(name);
    k.extend_from_slice(value);
    k.into_boxed_slice()
}

fn pairs(tags: Option<&[u8]>) -> Vec<(&[u8], &[u8])> {
    tags.and_then(tags::decode).unwrap_or_default()
}

impl Postings {
    pub(super) fn add(&mut self, row: usize, tags: Option<&[u8]>) {
        for (n, v) in pairs(tags) {
            self.lists
                .entry(pair_key(n, v))
                .or_default()
                .insert(row as u32);
        }
    }

    pub(super) fn remove(&mut self, row: usize, tags: Option<&[u8]>) {
        for (n, v) in pairs(tags) {
            let key = pair_key(n, v);
            if let Some(list) = self.lists.get_mut(&key) {
                list.remove(&(row as u32));
                if list.is_empty() {
                    self.lists.remove(&key);
                }
            }
        }
    }

    /// The row at `from` now lives at `to` (a `swap_remove`).
    pub(super) fn moved(&mut self, from: usize, to: usize, tags: Option<&[u8]>) {
        for (n, v) in pairs(tags) {
            if let Some(list) = self.lists.get_mut(&pair_key(n, v)) {
                list.remove(&(from as u32));
                list.insert(to as u32);
            }
        }
    }

    /// The rows of the filter's most selective pair: every matching row is among them. `None`
    /// for no filter.
    pub(super) fn narrowest(&self, filter: &[Pair]) -> Option<Narrowest<'_>> {
        let mut best: Option<Narrowest<'_>> = None;
        for (n, v) in filter {
            let list = self.lists.get(&pair_key(n, v));
            let len = list.map_or(0, HashSet::len);
            if best.as_ref().is_none_or(|b| len < b.len()) {
                best = Some(Narrowest(list));
            }
            if len == 0 {
                break;
            }
        }
        best
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.lists
            .iter()
            .map(|(k, v)| k.len() + 48 + v.capacity() * 8)
            .sum()
    }
}

/// The rows of one pair (none when no row carries it).
pub(super) struct Narrowest<'a>(Option<&'a HashSet<u32>>);

impl Narrowest<'_> {
    pub(super) fn len(&self) -> usize {
        self.0.map_or(0, HashSet::len)
    }

    pub(super) fn rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.into_iter().flatten().map(|&r| r as usize)
    }
}

impl Bucket {
    /// An exact filtered lookup over the rows of the filter's most selective pair, when it
    /// holds at most `max_rows` of them (`None` otherwise, or without a filter): each row's
    /// exact score (a stored f32 row, or an int8 code dequantized), best `k` first, ties by
    /// newer id, as a scan answers.
    pub fn search_posted(
        &self,
        query: &[f32],
        min_sim: f32,
        k: usize,
        now_ms: i64,
        filter: &[Pair],
        max_rows: usize,
    ) -> Option<Vec<Hit>> {
        let rows = self.postings.narrowest(filter)?;
        if rows.len() > max_rows {
            return None;
        }
        if k == 0 || query.len() != self.dim || self.dim == 0 {
            return Some(Vec::new());
        }
        let threshold = min_sim - SCORE_EPSILON;
        let hits: Vec<Hit> = rows
            .rows()
            .filter_map(|i| {
                let (c, o) = self.locate(i);
                let chunk = &self.chunks[c];
                if is_expired(chunk.expire_at_ms[o], now_ms)
                    || !tags::matches(chunk.tags[o].as_deref(), filter)
                {
                    return None;
                }
                // Scored as an exact scan scores each row kind (f32 rows clamped, int8 codes'
                // exact scores as they are), so both give the same answer.
                let score = chunk.row(o, self.dim).score(query);
                let score = match self.quant {
                    Quant::Float32 => score.clamp(-1.0, 1.0),
                    Quant::Int8 => score,
                };
                (!score.is_nan() && score >= threshold).then_some(Hit {
                    index: i,
                    id: chunk.ids[o],
                    score,
                })
            })
            .collect();
        Some(best_k(hits, k))
    }

    /// Rows that carry the filter's most selective pair (all rows without a filter).
    pub fn posted_len(&self, filter: &[Pair]) -> usize {
        self.postings
            .narrowest(filter)
            .map_or(self.len(), |r| r.len())
    }
}
