//! The bucket's approximate nearest-neighbour index (HNSW graph or inverted lists): its
//! slots, building it, and lookups through it.

use super::*;

/// A row or node number that is none.
pub(super) const NONE: u32 = u32::MAX;

/// Candidates an index lookup keeps beyond `k`, so that a few expired or below-threshold
/// nodes do not shorten the answer.
pub(super) const INDEX_SPARE: usize = 8;

/// Index candidates (best by int8 similarity) re-scored with their stored rows, at least:
/// int8 similarities are within ~0.01 of the exact ones, far less than what separates
/// the 16th candidate from the first. (Each re-score reads a row from memory: 24 cache
/// lines of a 384-dim float row, the cost of ~4 graph steps.)
pub(super) const RESCORE_MIN: usize = 16;

/// The approximate nearest-neighbour index of a big bucket (HNSW graph or inverted lists)
/// whose nodes are stable slots, and the maps between them and the (moving) physical rows.
#[derive(Debug, Clone)]
pub(super) struct BucketIndex {
    pub(super) graph: AnnIndex,
    /// By node slot: its physical row (`NONE` for a free slot).
    pub(super) node_row: Vec<u32>,
    /// By physical row: its node (`NONE` while not yet indexed).
    pub(super) row_node: Vec<u32>,
    /// Rows not yet in the graph; index lookups wait until this is 0.
    pub(super) unindexed: usize,
}

impl BucketIndex {
    pub(super) fn heap_bytes(&self) -> usize {
        self.graph.heap_bytes() + (self.node_row.capacity() + self.row_node.capacity()) * 4
    }
}

impl Bucket {
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

    pub(super) fn index_row(&mut self, id: u64, row: usize) {
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
    pub(super) fn unindex_row(&mut self, row: usize) {
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
    pub(super) fn answers_of<'a>(
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
}
