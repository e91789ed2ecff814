//! A hierarchical navigable small-world graph (HNSW, Malkov & Yashunin 2016) over unit
//! vectors that live elsewhere, without any server call.
//!
//! The graph stores per node slot its entry id, level, neighbour lists and an int8 code of
//! its unit vector (`dim` bytes + a scale): the graph is walked with int8 dot products over
//! codes that sit together in slot order (a quarter of the memory traffic of the float
//! rows, which are scattered), and the caller re-scores the candidates it gets back exactly
//! with the float vectors. Codes are derived from the vectors, so they are not persisted:
//! a loaded graph recomputes them ([`Hnsw::load_vectors`]).
//!
//! **Deterministic.** A node's level is a hash of its entry id (not a random draw), free
//! slots are reused smallest first, and every operation depends only on the graph, the
//! vectors and the order of calls. Two servers applying the same inserts and removals in
//! the same order (a primary and its replica, or an AOF replay) build the same graph.
//!
//! **Removal** repairs the removed node's out-neighbours (each drops the link and re-picks
//! its neighbours among its own and the removed node's, by the same heuristic as insertion)
//! and frees the slot. Other links to it dangle: searches skip free slots, and a reused
//! slot's stale in-links are just extra edges (results are always scored exactly).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};

use crate::varint::put as put_varint;
use crate::vector::{self, prefetch_lines};
use crate::wire::Reader;

/// Candidates explored on each upper level, and kept as entry points of the level below.
/// (8: at 100,000 x 384 clustered, 37% fewer similarities per lookup than 16 at ef 32 for
/// the same recall. 4 loses recall: `bench_semindex.py` measured recall@1 0.927 against
/// 0.970 at 1,000,000 x 384 int8, ef 64, and 0.973 against 0.991 at 100,000 x 384, ef 16.)
const UPPER_EF: usize = 8;
const UPPER_KEEP: usize = 4;
#[cfg(test)]
thread_local! {
    static UEF: std::cell::Cell<usize> = const { std::cell::Cell::new(UPPER_EF) };
}

/// Candidates explored on an upper level (tests vary it).
fn upper_ef() -> usize {
    #[cfg(test)]
    return UEF.with(|c| c.get());
    #[cfg(not(test))]
    UPPER_EF
}

/// Level of a free slot.
const FREE: u8 = u8::MAX;
/// Highest level a node can get (a hash of 64 bits gives at most ~16 with M = 16).
pub const MAX_LEVEL: u8 = 20;
/// Most slots a loaded graph may declare: a bucket holds at most 1,000,000 entries, and a
/// bound keeps a hostile payload from making the loader allocate without limit.
pub const MAX_SLOTS: u64 = 1 << 20;

/// Build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Neighbours per node on upper levels (level 0 keeps twice as many).
    pub m: usize,
    /// Candidates kept while inserting. 128: at 1,000,000 x 384 clustered, recall@1 0.990
    /// -> 0.997 at ef 64 against 64 here, for 34% more build time (`hnsw_recall_file`);
    /// hnswlib, Redis vector sets and valkey-search default to 200.
    pub ef_construction: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            m: 16,
            ef_construction: 128,
        }
    }
}

/// A similarity and a node, ordered by similarity (total order), then smaller node first
/// (the IVF lists use it too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scored(pub(super) f32, pub(super) u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
    }
}

/// An int8 code and its scale: `v ~= code * scale`.
struct Code {
    code: Vec<i8>,
    scale: f32,
}

/// Epoch-tagged visited marks, reused across searches of one thread. One byte per slot (a
/// quarter of the cache footprint of u32 marks); cleared once every 255 searches.
struct Visited {
    marks: Vec<u8>,
    epoch: u8,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        if let Some(m) = self.marks.get(n as usize..=n as usize) {
            prefetch_lines(m, 1);
        }
    }

    /// Marks `n`; true when it was not marked yet.
    fn first(&mut self, n: u32) -> bool {
        let m = &mut self.marks[n as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

#[cfg(test)]
thread_local! {
    static SIMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A search's working memory, kept per thread: no allocation per search.
struct Scratch {
    visited: Visited,
    cand: BinaryHeap<Scored>,
    best: BinaryHeap<Reverse<Scored>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { marks: Vec::new(), epoch: 0 },
            cand: BinaryHeap::new(),
            best: BinaryHeap::new(),
        })
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hnsw {
    params: Params,
    /// Per slot: level (`FREE` for a free slot).
    levels: Vec<u8>,
    /// Per slot: the entry id (0 for a free slot).
    ids: Vec<u64>,
    /// Level-0 lists: slot * (2m + 1) = count, then up to 2m neighbours.
    links0: Vec<u32>,
    /// Levels 1..=level: (level - 1) * (m + 1) = count, then up to m neighbours.
    upper: Vec<Box<[u32]>>,
    free: BTreeSet<u32>,
    entry: Option<u32>,
    len: usize,
    /// Dimension of the codes (0 until the first node).
    dim: usize,
    /// Per slot: `dim` int8 (zeros for a free slot).
    codes: Vec<i8>,
    /// Per slot: the code's scale.
    scales: Vec<f32>,
}

/// Errors of [`Hnsw::decode_nodes`] and [`Hnsw::check`]: a corrupt or hostile payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError(pub String);

fn bad<T>(what: impl Into<String>) -> Result<T, GraphError> {
    Err(GraphError(what.into()))
}

/// splitmix64: the level hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Hnsw {
    pub fn new(params: Params) -> Hnsw {
        Hnsw {
            params: Params {
                m: params.m.clamp(2, 64),
                ef_construction: params.ef_construction.clamp(8, 1024),
            },
            levels: Vec::new(),
            ids: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            free: BTreeSet::new(),
            entry: None,
            len: 0,
            dim: 0,
            codes: Vec::new(),
            scales: Vec::new(),
        }
    }

    pub fn params(&self) -> Params {
        self.params
    }

    /// Nodes in the graph.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots (nodes and free slots): the bound of every node number.
    pub fn slots(&self) -> usize {
        self.levels.len()
    }

    /// The entry id of a node slot (0 for a free slot).
    pub fn id_of(&self, node: u32) -> u64 {
        self.ids[node as usize]
    }

    pub fn is_free(&self, node: u32) -> bool {
        self.levels[node as usize] == FREE
    }

    fn m0(&self) -> usize {
        2 * self.params.m
    }

    /// The level of an entry id: `floor(-ln(u) / ln(m))` with `u` a hash of the id in (0, 1].
    pub fn level_for(&self, id: u64) -> u8 {
        let u = ((mix(id) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let l = (-u.ln() / (self.params.m as f64).ln()).floor();
        (l as u64).min(u64::from(MAX_LEVEL)) as u8
    }

    /// Heap bytes of the structure.
    pub fn heap_bytes(&self) -> usize {
        self.levels.capacity()
            + self.ids.capacity() * 8
            + self.links0.capacity() * 4
            + self.upper.capacity() * std::mem::size_of::<Box<[u32]>>()
            + self.upper.iter().map(|u| u.len() * 4).sum::<usize>()
            + self.free.len() * 16
            + self.codes.capacity()
            + self.scales.capacity() * 4
    }

    fn code(&self, node: u32) -> &[i8] {
        let n = node as usize;
        &self.codes[n * self.dim..(n + 1) * self.dim]
    }

    fn code_of(&self, node: u32) -> Code {
        Code {
            code: self.code(node).to_vec(),
            scale: self.scales[node as usize],
        }
    }

    fn query_code(&self, q: &[f32]) -> Code {
        let mut code = vec![0i8; q.len()];
        let scale = vector::quantize_i8(q, &mut code);
        Code { code, scale }
    }

    /// Approximate similarity of a code and a node.
    #[inline]
    fn sim(&self, q: &Code, node: u32) -> f32 {
        #[cfg(test)]
        SIMS.with(|c| c.set(c.get() + 1)); // counted for hnsw_timing
        vector::dot_i8(&q.code, self.code(node)) as f32 * q.scale * self.scales[node as usize]
    }

    /// Approximate similarity of two nodes.
    #[inline]
    fn sim_nodes(&self, a: u32, b: u32) -> f32 {
        vector::dot_i8(self.code(a), self.code(b)) as f32
            * self.scales[a as usize]
            * self.scales[b as usize]
    }

    fn set_code(&mut self, node: u32, v: &[f32]) {
        let n = node as usize;
        let d = self.dim;
        self.scales[n] =
            vector::quantize_i8(&v[..d.min(v.len())], &mut self.codes[n * d..(n + 1) * d]);
    }

    fn links(&self, node: u32, level: u8) -> &[u32] {
        let (list, _) = self.list(node, level);
        &list[1..1 + list[0] as usize]
    }

    /// The count-prefixed list of `node` at `level` and its capacity.
    fn list(&self, node: u32, level: u8) -> (&[u32], usize) {
        if level == 0 {
            let s = self.m0() + 1;
            let n = node as usize;
            (&self.links0[n * s..(n + 1) * s], self.m0())
        } else {
            let s = self.params.m + 1;
            let l = level as usize - 1;
            (
                &self.upper[node as usize][l * s..(l + 1) * s],
                self.params.m,
            )
        }
    }

    fn set_links(&mut self, node: u32, level: u8, to: &[u32]) {
        let list = if level == 0 {
            let s = self.m0() + 1;
            let n = node as usize;
            &mut self.links0[n * s..(n + 1) * s]
        } else {
            let s = self.params.m + 1;
            let l = level as usize - 1;
            &mut self.upper[node as usize][l * s..(l + 1) * s]
        };
        debug_assert!(to.len() < list.len());
        list[0] = to.len() as u32;
        list[1..1 + to.len()].copy_from_slice(to);
        list[1 + to.len()..].fill(0);
    }

    /// Takes a slot for entry `id` and its unit vector `v` (the smallest free slot, else a
    /// new one), then the caller calls [`Hnsw::connect`]. The first node fixes the dimension;
    /// `v` must have it.
    pub fn alloc(&mut self, id: u64, v: &[f32]) -> u32 {
        let node = self.take_slot(id, v.len());
        self.set_code(node, v);
        node
    }

    /// [`Hnsw::alloc`] for a vector already stored as an int8 code: `v ~= code * scale`.
    pub fn alloc_code(&mut self, id: u64, code: &[i8], scale: f32) -> u32 {
        let node = self.take_slot(id, code.len());
        self.put_code(node, code, scale);
        node
    }

    fn put_code(&mut self, node: u32, code: &[i8], scale: f32) {
        let (n, d) = (node as usize, self.dim);
        if code.len() == d {
            self.codes[n * d..(n + 1) * d].copy_from_slice(code);
            self.scales[n] = scale;
        }
    }

    fn take_slot(&mut self, id: u64, dim: usize) -> u32 {
        if self.dim == 0 {
            self.dim = dim;
        }
        let level = self.level_for(id);
        let node = match self.free.pop_first() {
            Some(n) => n,
            None => self.push_slot(),
        };
        let n = node as usize;
        self.levels[n] = level;
        self.ids[n] = id;
        self.set_links(node, 0, &[]);
        self.upper[n] = vec![0u32; level as usize * (self.params.m + 1)].into_boxed_slice();
        self.len += 1;
        node
    }

    /// A new free slot at the end.
    fn push_slot(&mut self) -> u32 {
        self.levels.push(FREE);
        self.ids.push(0);
        self.links0.extend(std::iter::repeat_n(0, self.m0() + 1));
        self.upper.push(Box::new([]));
        self.codes.extend(std::iter::repeat_n(0, self.dim));
        self.scales.push(0.0);
        (self.levels.len() - 1) as u32
    }

    /// Links an allocated node into the graph (HNSW insertion).
    pub fn connect(&mut self, node: u32) {
        let level = self.levels[node as usize];
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return;
        };
        let q = self.code_of(node);
        let top = self.levels[entry as usize];
        let ep = Scored(self.sim(&q, entry), entry);
        let mut eps = self.descend(&q, ep, level.saturating_add(1));
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(&q, &eps, self.params.ef_construction, l, Some(node));
            let cap = if l == 0 { self.m0() } else { self.params.m };
            let chosen = self.select(&found, self.params.m.min(cap));
            let ids: Vec<u32> = chosen.iter().map(|s| s.1).collect();
            self.set_links(node, l, &ids);
            for &nb in &ids {
                self.add_link(nb, node, l);
            }
            eps = found;
        }
        if level > top {
            self.entry = Some(node);
        }
    }

    /// Adds `to` to `node`'s list at `level`, re-selecting by the heuristic when full.
    fn add_link(&mut self, node: u32, to: u32, level: u8) {
        if self.levels[node as usize] == FREE || self.levels[node as usize] < level {
            return;
        }
        let (list, cap) = self.list(node, level);
        let cur = &list[1..1 + list[0] as usize];
        if cur.contains(&to) {
            return;
        }
        if cur.len() < cap {
            let mut v = cur.to_vec();
            v.push(to);
            self.set_links(node, level, &v);
            return;
        }
        let mut cands: Vec<u32> = cur.to_vec();
        cands.push(to);
        self.relink(node, level, cands, cap);
    }

    /// Sets `node`'s list at `level` to the heuristic's choice among `cands`.
    fn relink(&mut self, node: u32, level: u8, cands: Vec<u32>, cap: usize) {
        let mut scored: Vec<Scored> = cands
            .into_iter()
            .filter(|&c| c != node && !self.is_free(c))
            .map(|c| Scored(self.sim_nodes(node, c), c))
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.dedup_by_key(|s| s.1);
        let chosen = self.select(&scored, cap);
        let ids: Vec<u32> = chosen.iter().map(|s| s.1).collect();
        self.set_links(node, level, &ids);
    }

    /// The neighbour-selection heuristic: keeps a candidate (best first) when it is closer to
    /// the base than to every candidate kept so far, at most `m`; then fills the list up to
    /// `m` with the best candidates it passed over (hnswlib's "keep pruned connections").
    /// Why fill: the members of a tight cluster of embeddings are almost equidistant, the
    /// heuristic alone kept 17 of 32 level-0 links on average, and a walk inside a cluster
    /// then missed its target. Filled, at 1,000,000 x 384 (`hnsw_recall_file`): recall@1
    /// 0.977 -> 0.990 at ef 64, for 6% more similarities per lookup and 35% more build time.
    fn select(&self, cands: &[Scored], m: usize) -> Vec<Scored> {
        let mut out: Vec<Scored> = Vec::with_capacity(m);
        let mut pruned = Vec::new();
        for &c in cands {
            if out.len() >= m {
                break;
            }
            if out.iter().all(|r| self.sim_nodes(c.1, r.1) < c.0) {
                out.push(c);
            } else {
                pruned.push(c);
            }
        }
        let room = m.saturating_sub(out.len());
        out.extend(pruned.into_iter().take(room));
        out
    }

    /// From the entry point down to level `to` (inclusive): the best few nodes there.
    /// Each upper level is searched with [`UPPER_EF`] candidates rather than greedily: on
    /// clustered data (many tight clusters, as embeddings of distinct topics) the upper
    /// levels barely link clusters, and a greedy walk stuck in the wrong cluster there
    /// never reaches the right one below.
    fn descend(&self, q: &Code, ep: Scored, to: u8) -> Vec<Scored> {
        let top = self.levels[ep.1 as usize];
        let mut eps = vec![ep];
        for l in (to..=top).rev() {
            eps = self.search_layer(q, &eps, upper_ef(), l, None);
            eps.truncate(UPPER_KEEP);
        }
        eps
    }

    #[allow(dead_code)]
    fn greedy(&self, q: &Code, mut ep: Scored, level: u8) -> Scored {
        loop {
            let mut moved = false;
            for &n in self.links(ep.1, level) {
                // A reused slot's stale in-link may point below this level.
                let lv = self.levels[n as usize];
                if lv == FREE || lv < level {
                    continue;
                }
                let s = Scored(self.sim(q, n), n);
                if s > ep {
                    ep = s;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Best-first search of one level from `eps`; up to `ef` results, best first.
    /// `skip`: a node never returned (the one being inserted).
    fn search_layer(
        &self,
        q: &Code,
        eps: &[Scored],
        ef: usize,
        level: u8,
        skip: Option<u32>,
    ) -> Vec<Scored> {
        SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let Scratch {
                visited,
                cand,
                best,
            } = &mut *sc;
            visited.start(self.slots());
            if let Some(s) = skip {
                visited.first(s);
            }
            cand.clear();
            best.clear();
            for &e in eps {
                if visited.first(e.1) {
                    cand.push(e);
                    best.push(Reverse(e));
                }
            }
            while best.len() > ef {
                best.pop();
            }
            while let Some(c) = cand.pop() {
                if best.len() >= ef && best.peek().is_some_and(|w| c < w.0) {
                    break;
                }
                // The links of the next candidate load while this one is expanded (the whole
                // list: reading its count here would wait for the very miss being hidden).
                if let Some(next) = cand.peek() {
                    let lv = self.levels[next.1 as usize];
                    if lv != FREE && lv >= level {
                        prefetch_lines(self.list(next.1, level).0, 3);
                    }
                }
                let lvl = self.levels[c.1 as usize];
                if lvl == FREE || lvl < level {
                    continue;
                }
                let links = self.links(c.1, level);
                // The marks and levels of every neighbour first (independent misses overlap).
                for &n in links {
                    visited.prefetch(n);
                    prefetch_lines(&self.levels[n as usize..=n as usize], 1);
                }
                let mut fresh = [0u32; 128];
                let mut k = 0;
                for &n in links {
                    if visited.first(n) && !self.is_free(n) && k < fresh.len() {
                        fresh[k] = n;
                        k += 1;
                    }
                }
                // Every fresh vector at once: the misses overlap (prefetching a few ahead of
                // the one being scored measured no better).
                for &n in &fresh[..k] {
                    prefetch_lines(self.code(n), usize::MAX);
                    prefetch_lines(&self.scales[n as usize..=n as usize], 1);
                }
                for &n in &fresh[..k] {
                    let s = Scored(self.sim(q, n), n);
                    if best.len() < ef || best.peek().is_some_and(|w| s > w.0) {
                        cand.push(s);
                        best.push(Reverse(s));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
            let mut out: Vec<Scored> = best.drain().map(|r| r.0).collect();
            out.sort_unstable_by(|a, b| b.cmp(a));
            out
        })
    }

    /// The (about) `ef` nodes most similar to the unit vector `q`, best first by their
    /// approximate (int8) similarity, as `(node, approximate similarity)`. Re-score them.
    pub fn search(&self, q: &[f32], ef: usize) -> Vec<(u32, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if q.len() != self.dim {
            return Vec::new();
        }
        let q = self.query_code(q);
        let ep = Scored(self.sim(&q, entry), entry);
        let eps = self.descend(&q, ep, 1);
        self.search_layer(&q, &eps, ef.max(1), 0, None)
            .into_iter()
            .map(|s| (s.1, s.0))
            .collect()
    }

    /// Removes a node: repairs its out-neighbours, frees the slot.
    pub fn remove(&mut self, node: u32) {
        let level = self.levels[node as usize];
        if level == FREE {
            return;
        }
        for l in 0..=level {
            let mine: Vec<u32> = self.links(node, l).to_vec();
            for &nb in &mine {
                let lv = self.levels[nb as usize];
                if lv == FREE || lv < l || !self.links(nb, l).contains(&node) {
                    continue;
                }
                // Replace the link by the removed node's neighbour closest to `nb` (one not
                // linked yet): paths through the removed node now go through it. Cheap (one
                // dot per candidate) where a full re-selection costs ~100x more.
                let kept: Vec<u32> = self
                    .links(nb, l)
                    .iter()
                    .copied()
                    .filter(|&x| x != node)
                    .collect();
                let best = mine
                    .iter()
                    .copied()
                    .filter(|&x| x != nb && !kept.contains(&x) && !self.is_free(x))
                    .map(|x| Scored(self.sim_nodes(nb, x), x))
                    .max();
                let mut next = kept;
                next.extend(best.map(|b| b.1));
                self.set_links(nb, l, &next);
            }
        }
        let n = node as usize;
        self.levels[n] = FREE;
        self.ids[n] = 0;
        self.set_links(node, 0, &[]);
        self.upper[n] = Box::new([]);
        self.codes[n * self.dim..(n + 1) * self.dim].fill(0);
        self.scales[n] = 0.0;
        self.free.insert(node);
        self.len -= 1;
        if self.entry == Some(node) {
            // The highest remaining node (smallest slot among equals): deterministic.
            self.entry = self
                .levels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l != FREE)
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i as u32);
        }
    }

    // ---- persistence ----

    /// Header fields: `m, ef_construction, slots, entry + 1 (0 = none)`.
    fn encode_header(&self, out: &mut Vec<u8>) {
        for v in [
            self.params.m as u64,
            self.params.ef_construction as u64,
            self.slots() as u64,
            self.entry.map_or(0, |e| u64::from(e) + 1),
        ] {
            put_varint(out, v);
        }
    }

    /// An empty graph from header fields, the entry point and the slot count (nodes come
    /// with [`Hnsw::decode_nodes`]; call [`Hnsw::finish_load`] after the last).
    fn decode_header(r: &mut Reader) -> Result<(Hnsw, Option<u32>, u64), GraphError> {
        let v = |r: &mut Reader| r.varint().map_err(|e| GraphError(e.0.to_string()));
        let m = v(r)?;
        let ef = v(r)?;
        let slots = v(r)?;
        let entry = v(r)?;
        if !(2..=64).contains(&m) || !(8..=1024).contains(&ef) {
            return bad("index parameters out of range");
        }
        if slots > MAX_SLOTS {
            return bad(format!("index of {slots} slots (at most {MAX_SLOTS})"));
        }
        if entry > slots {
            return bad("index entry point out of range");
        }
        let g = Hnsw::new(Params {
            m: m as usize,
            ef_construction: ef as usize,
        });
        Ok((g, (entry > 0).then(|| (entry - 1) as u32), slots))
    }

    /// The whole graph: header, then every slot's record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_header(out);
        self.encode_nodes(0, self.slots(), out);
    }

    /// Reads a graph written by [`Hnsw::encode`], checking it (hostile input: never a panic,
    /// at most [`MAX_SLOTS`] slots).
    pub fn decode(r: &mut Reader) -> Result<Hnsw, GraphError> {
        let (mut g, entry, slots) = Hnsw::decode_header(r)?;
        g.decode_nodes(r, slots)?;
        g.finish_load(entry)?;
        Ok(g)
    }

    /// Node records `[first, end)`: per slot `varint id` (0 = free), and for a node `u8
    /// level` and per level `varint count` + links.
    fn encode_nodes(&self, first: usize, end: usize, out: &mut Vec<u8>) {
        for n in first..end {
            let id = self.ids[n];
            put_varint(out, id);
            if self.levels[n] == FREE {
                continue;
            }
            let level = self.levels[n];
            out.push(level);
            for l in 0..=level {
                let links = self.links(n as u32, l);
                put_varint(out, links.len() as u64);
                for &x in links {
                    put_varint(out, u64::from(x));
                }
            }
        }
    }

    /// Appends `count` node records (as written by [`Hnsw::encode_nodes`]) to a graph being
    /// loaded. Links are checked against the slot bound by [`Hnsw::finish_load`].
    fn decode_nodes(&mut self, r: &mut Reader, count: u64) -> Result<(), GraphError> {
        let v = |r: &mut Reader| r.varint().map_err(|e| GraphError(e.0.to_string()));
        for _ in 0..count {
            let id = v(r)?;
            let node = self.levels.len() as u32;
            self.levels.push(FREE);
            self.ids.push(0);
            self.links0.extend(std::iter::repeat_n(0, self.m0() + 1));
            self.upper.push(Box::new([]));
            if id == 0 {
                continue;
            }
            let level = r.u8().map_err(|e| GraphError(e.0.to_string()))?;
            if level > MAX_LEVEL || level != self.level_for(id) {
                return bad(format!("node {node}: level {level} does not match its id"));
            }
            self.levels[node as usize] = level;
            self.ids[node as usize] = id;
            self.upper[node as usize] =
                vec![0u32; level as usize * (self.params.m + 1)].into_boxed_slice();
            self.len += 1;
            for l in 0..=level {
                let cap = if l == 0 { self.m0() } else { self.params.m };
                let k = v(r)?;
                if k > cap as u64 {
                    return bad(format!("node {node}: {k} links at level {l}"));
                }
                let mut links = Vec::with_capacity(k as usize);
                for _ in 0..k {
                    let x = v(r)?;
                    if x > u64::from(u32::MAX) {
                        return bad("link out of range");
                    }
                    links.push(x as u32);
                }
                self.set_links(node, l, &links);
            }
        }
        Ok(())
    }

    /// Checks a loaded graph (links within the slots, entry point a node of the top level)
    /// and rebuilds the free list.
    fn finish_load(&mut self, entry: Option<u32>) -> Result<(), GraphError> {
        let slots = self.slots() as u64;
        for n in 0..self.slots() {
            let level = self.levels[n];
            if level == FREE {
                self.free.insert(n as u32);
                continue;
            }
            for l in 0..=level {
                if self
                    .links(n as u32, l)
                    .iter()
                    .any(|&x| u64::from(x) >= slots)
                {
                    return bad(format!("node {n}: link out of range"));
                }
            }
        }
        match entry {
            None if self.len > 0 => return bad("index has nodes but no entry point"),
            Some(e) if u64::from(e) >= slots || self.is_free(e) => {
                return bad("index entry point is not a node")
            }
            Some(e)
                if self
                    .levels
                    .iter()
                    .any(|&l| l != FREE && l > self.levels[e as usize]) =>
            {
                return bad("index entry point is not on the top level")
            }
            _ => {}
        }
        self.entry = if self.len == 0 { None } else { entry };
        Ok(())
    }

    /// After [`Hnsw::decode`]: computes every node's code from its vector (`vector_of`, of
    /// dimension `dim`).
    /// [`Hnsw::load_vectors`] for vectors stored as int8 codes (`v ~= code * scale`).
    pub fn load_codes<'a>(&mut self, dim: usize, code_of: impl Fn(u32) -> (&'a [i8], f32)) {
        self.dim = dim;
        self.codes = vec![0; self.slots() * dim];
        self.scales = vec![0.0; self.slots()];
        for n in 0..self.slots() as u32 {
            if !self.is_free(n) {
                let (code, scale) = code_of(n);
                self.put_code(n, code, scale);
            }
        }
    }

    pub fn load_vectors<'a>(&mut self, dim: usize, vector_of: impl Fn(u32) -> &'a [f32]) {
        self.dim = dim;
        self.codes = vec![0; self.slots() * dim];
        self.scales = vec![0.0; self.slots()];
        for n in 0..self.slots() as u32 {
            if !self.is_free(n) {
                let v = vector_of(n);
                self.set_code(n, v);
            }
        }
    }

    /// Node slots in slot order with their ids (free slots skipped).
    pub fn nodes(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(n, _)| self.levels[*n] != FREE)
            .map(|(n, &id)| (n as u32, id))
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::vector::normalized;

    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub(crate) fn f32(&mut self) -> f32 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        pub(crate) fn normal(&mut self) -> f32 {
            // Sum of uniforms: close enough to a Gaussian for test data.
            (0..4).map(|_| self.f32()).sum::<f32>() * 0.866
        }
    }

    /// Vectors by slot (a test stand-in for the bucket).
    pub(crate) struct Store(pub(crate) Vec<Vec<f32>>);
    impl Store {
        pub(crate) fn vector(&self, node: u32) -> &[f32] {
            &self.0[node as usize]
        }
        pub(crate) fn put(&mut self, node: u32, v: Vec<f32>) {
            let n = node as usize;
            if self.0.len() <= n {
                self.0.resize(n + 1, Vec::new());
            }
            self.0[n] = v;
        }
    }

    /// A file of little-endian 4-byte values (the bench's `--dump` files).
    pub(crate) fn read_le<T>(path: &str, f: fn([u8; 4]) -> T) -> Vec<T> {
        let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        b.chunks_exact(4)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    }

    /// Clustered unit vectors: `clusters` centres, points = centre + noise.
    pub(crate) fn clustered(n: usize, dim: usize, clusters: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| rng.normal()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % clusters];
                let v: Vec<f32> = c.iter().map(|&x| x + 0.6 * rng.normal()).collect();
                normalized(&v).unwrap()
            })
            .collect()
    }

    pub(crate) fn near(v: &[f32], rng: &mut Rng, eps: f32) -> Vec<f32> {
        normalized(
            &v.iter()
                .map(|&x| x + eps * rng.normal())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn exact_best(store: &Store, g: &Hnsw, q: &[f32]) -> u32 {
        g.nodes()
            .map(|(n, _)| (vector::dot(q, store.vector(n)), n))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
            .1
    }

    fn build(data: &[Vec<f32>], params: Params) -> (Hnsw, Store) {
        let mut g = Hnsw::new(params);
        let mut s = Store(Vec::new());
        for (i, v) in data.iter().enumerate() {
            let node = g.alloc(i as u64 + 1, v);
            s.put(node, v.clone());
            g.connect(node);
        }
        (g, s)
    }

    fn recall(g: &Hnsw, s: &Store, queries: &[Vec<f32>], ef: usize) -> f64 {
        let ok = queries
            .iter()
            .filter(|q| g.search(q, ef).first().map(|r| r.0) == Some(exact_best(s, g, q)))
            .count();
        ok as f64 / queries.len() as f64
    }

    #[test]
    fn recall_on_clustered_data() {
        let mut rng = Rng::new(1);
        let dim = 64;
        let data = clustered(5_000, dim, 50, &mut rng);
        let (g, s) = build(&data, Params::default());
        assert_eq!(g.len(), 5_000);
        // Near-duplicate queries and fresh random queries.
        let near_q: Vec<Vec<f32>> = (0..300)
            .map(|i| near(&data[i * 13], &mut rng, 0.05))
            .collect();
        let rand_q = clustered(300, dim, 50, &mut rng);
        let r1 = recall(&g, &s, &near_q, 64);
        let r2 = recall(&g, &s, &rand_q, 64);
        assert!(r1 >= 0.99, "near-duplicate recall@1 {r1}");
        assert!(r2 >= 0.9, "random-query recall@1 {r2}");
        // Scores are the exact dot products, best first.
        let res = g.search(&rand_q[0], 10);
        assert_eq!(res.len(), 10);
        assert!(res.windows(2).all(|w| w[0].1 >= w[1].1));
        // Approximate (int8) similarities: within 0.01 of the float ones.
        for (n, sim) in res {
            assert!((sim - vector::dot(&rand_q[0], s.vector(n))).abs() < 0.01);
        }
    }

    #[test]
    fn level0_lists_are_filled_past_the_pruning() {
        // Near-equidistant points (one tight cluster): the pruning heuristic alone keeps a
        // fraction of the candidates; the lists are filled up to their size anyway, so no
        // node is left with few links (or without in-links) to be reached by.
        let mut rng = Rng::new(5);
        let data = clustered(3_000, 64, 1, &mut rng);
        let (g, _) = build(&data, Params::default());
        let m = g.params().m;
        let mut indeg = vec![0usize; g.slots()];
        for node in 0..g.slots() as u32 {
            let links = g.links(node, 0);
            assert!(links.len() >= m, "node {node}: {} links", links.len());
            links.iter().for_each(|&x| indeg[x as usize] += 1);
        }
        let mean = indeg.iter().sum::<usize>() as f64 / g.slots() as f64;
        assert!(mean > 1.25 * m as f64, "mean level-0 degree {mean}");
        assert!(indeg.iter().all(|&d| d > 0), "a node without in-link");
        // The heuristic alone does prune here: the fill is what keeps the lists long.
        let cands: Vec<Scored> = {
            let mut v: Vec<Scored> = (1..=2 * m as u32)
                .map(|c| Scored(g.sim_nodes(0, c), c))
                .collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v
        };
        let mut kept: Vec<Scored> = Vec::new();
        for &c in &cands {
            if kept.len() < m && kept.iter().all(|r| g.sim_nodes(c.1, r.1) < c.0) {
                kept.push(c);
            }
        }
        assert!(
            kept.len() < m,
            "the heuristic kept {} of {}",
            kept.len(),
            cands.len()
        );
        let chosen = g.select(&cands, m);
        assert_eq!(chosen.len(), m);
        assert_eq!(
            chosen[..kept.len()],
            kept[..],
            "the heuristic's choice comes first"
        );
    }

    #[test]
    fn removal_keeps_recall_and_reuses_slots() {
        let mut rng = Rng::new(2);
        let dim = 32;
        let data = clustered(3_000, dim, 30, &mut rng);
        let (mut g, mut s) = build(&data, Params::default());
        // Remove two thirds (FIFO churn), then insert as many new ones.
        for node in 0..2_000u32 {
            g.remove(node);
        }
        assert_eq!(g.len(), 1_000);
        assert!((0..2_000u32).all(|n| g.is_free(n)));
        let fresh = clustered(2_000, dim, 30, &mut rng);
        for (i, v) in fresh.iter().enumerate() {
            let node = g.alloc(10_000 + i as u64, v);
            assert!(node < 3_000, "free slots are reused");
            s.put(node, v.clone());
            g.connect(node);
        }
        assert_eq!(g.slots(), 3_000);
        let qs: Vec<Vec<f32>> = (0..300)
            .map(|i| near(&fresh[i * 5], &mut rng, 0.05))
            .collect();
        let r = recall(&g, &s, &qs, 64);
        assert!(r >= 0.98, "recall after churn {r}");
        // Removing everything leaves an empty, searchable graph.
        let nodes: Vec<u32> = g.nodes().map(|n| n.0).collect();
        for n in nodes {
            g.remove(n);
        }
        assert!(g.is_empty());
        assert!(g.search(&qs[0], 10).is_empty());
    }

    #[test]
    fn deterministic_and_levels_from_ids() {
        let mut rng = Rng::new(3);
        let data = clustered(1_000, 16, 10, &mut rng);
        let (mut a, _) = build(&data, Params::default());
        let (mut b, _) = build(&data, Params::default());
        assert_eq!(a, b);
        for n in [5u32, 17, 400, 999] {
            a.remove(n);
            b.remove(n);
        }
        assert_eq!(a, b);
        let g = Hnsw::new(Params::default());
        assert_eq!(g.level_for(42), g.level_for(42));
        // About 1/16 of the nodes are above level 0.
        let upper = (1..=16_000u64).filter(|&id| g.level_for(id) > 0).count();
        assert!((800..1_200).contains(&upper), "{upper}");
    }

    #[test]
    fn persistence_roundtrip_and_hostile_payloads() {
        let mut rng = Rng::new(4);
        let data = clustered(500, 8, 5, &mut rng);
        let (mut g, s) = build(&data, Params::default());
        for n in [3u32, 100, 250] {
            g.remove(n);
        }
        let mut buf = Vec::new();
        g.encode_header(&mut buf);
        g.encode_nodes(0, 200, &mut buf);
        g.encode_nodes(200, g.slots(), &mut buf);
        let mut r = Reader::new(&buf);
        let (mut h, entry, slots) = Hnsw::decode_header(&mut r).unwrap();
        assert_eq!(slots, g.slots() as u64);
        h.decode_nodes(&mut r, 200).unwrap();
        h.decode_nodes(&mut r, (g.slots() - 200) as u64).unwrap();
        h.finish_load(entry).unwrap();
        assert!(r.at_end());
        h.load_vectors(8, |n| s.vector(n));
        assert_eq!(h, g);
        let mut whole = Vec::new();
        g.encode(&mut whole);
        assert_eq!(whole, buf);
        let mut h = Hnsw::decode(&mut Reader::new(&whole)).unwrap();
        h.load_vectors(8, |n| s.vector(n));
        assert_eq!(h, g);
        // Every truncation is refused, never a panic.
        for cut in 0..whole.len() {
            assert!(
                Hnsw::decode(&mut Reader::new(&whole[..cut])).is_err(),
                "cut {cut}"
            );
        }
        // Too many slots is refused before any allocation.
        let mut huge = Vec::new();
        for v in [16u64, 100, MAX_SLOTS + 1, 0] {
            put_varint(&mut huge, v);
        }
        assert!(Hnsw::decode(&mut Reader::new(&huge))
            .unwrap_err()
            .0
            .contains("slots"));
        // A link beyond the slots, or an entry point on a free slot, is refused.
        let mut h2 = g.clone();
        h2.links0[1] = 10_000;
        h2.links0[0] = h2.links0[0].max(1);
        let mut buf = Vec::new();
        h2.encode_header(&mut buf);
        h2.encode_nodes(0, h2.slots(), &mut buf);
        assert!(Hnsw::decode(&mut Reader::new(&buf))
            .unwrap_err()
            .0
            .contains("out of range"));
        let (mut h4, _, _) = Hnsw::decode_header(&mut Reader::new(&{
            let mut b = Vec::new();
            g.encode_header(&mut b);
            b
        }))
        .unwrap();
        let mut nb = Vec::new();
        g.encode_nodes(0, g.slots(), &mut nb);
        h4.decode_nodes(&mut Reader::new(&nb), g.slots() as u64)
            .unwrap();
        assert!(h4.finish_load(Some(3)).is_err()); // slot 3 is free
    }
}

#[cfg(test)]
mod timing {
    use super::tests_support::*;
    use super::*;

    /// `cargo test --release --lib hnsw_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn hnsw_timing() {
        use std::time::Instant;
        let mut rng = Rng::new(9);
        // HNSW_SHAPE=n,dim,clusters (default 20000,384,1000).
        let shape: Vec<usize> = std::env::var("HNSW_SHAPE")
            .unwrap_or_else(|_| "20000,384,1000".into())
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let (n, dim) = (shape[0], shape[1]);
        let data = clustered(n, dim, shape[2], &mut rng);
        let mut g = Hnsw::new(Params::default());
        let mut s = Store(Vec::new());
        let t = Instant::now();
        for (i, v) in data.iter().enumerate() {
            let node = g.alloc(i as u64 + 1, v);
            s.put(node, v.clone());
            g.connect(node);
        }
        let ins = t.elapsed().as_secs_f64() / n as f64;
        let step = n / 500;
        let qs: Vec<Vec<f32>> = (0..500)
            .map(|i| near(&data[i * step], &mut rng, 0.02))
            .collect();
        // FLUSH=1 evicts the caches before each query (as a server's lookups find them):
        // memory latency, not arithmetic, is then what a lookup costs.
        let flush = std::env::var("FLUSH").is_ok();
        let mut junk = vec![0u8; if flush { 64 << 20 } else { 0 }];
        for uef in [16usize, 8, 4] {
            UEF.with(|c| c.set(uef));
            SIMS.with(|c| c.set(0));
            for ef in [16usize, 32, 64] {
                let (mut el, mut ok) = (0.0, 0);
                for (i, q) in qs.iter().enumerate() {
                    if flush {
                        junk.iter_mut()
                            .step_by(64)
                            .for_each(|b| *b = b.wrapping_add(1));
                        std::hint::black_box(&junk);
                    }
                    let t = Instant::now();
                    ok += usize::from(g.search(q, ef)[0].0 == (i * step) as u32);
                    el += t.elapsed().as_secs_f64();
                }
                println!(
                    "upper ef {uef}, ef {ef}: search {:.0} us, recall@1 {}, similarities {}",
                    el / qs.len() as f64 * 1e6,
                    ok as f64 / qs.len() as f64,
                    SIMS.with(|c| c.replace(0)) / qs.len()
                );
            }
        }
        UEF.with(|c| c.set(UPPER_EF));
        for ef in [16usize, 32, 64] {
            let t = Instant::now();
            let mut ok = 0;
            for (i, q) in qs.iter().enumerate() {
                if g.search(q, ef)[0].0 == (i * step) as u32 {
                    ok += 1;
                }
            }
            let us = t.elapsed().as_secs_f64() / qs.len() as f64 * 1e6;
            println!(
                "ef {ef}: search {us:.0} us, recall@1 {}",
                ok as f64 / qs.len() as f64
            );
        }
        let t = Instant::now();
        for node in 0..1_000u32 {
            g.remove(node);
        }
        let rem = t.elapsed().as_secs_f64() / 1_000.0;
        println!("insert {:.0} us, remove {:.0} us", ins * 1e6, rem * 1e6);
    }
}

#[cfg(test)]
mod recall_file {
    use super::tests_support::read_le;
    use super::*;

    /// Graph quality on the bench's own data: `python benches/bench_semindex.py
    /// --shapes=1000000x384 --quick --dump=/tmp/b1m` writes the vectors, queries and exact
    /// answers, then `HNSW_FILE=/tmp/b1m HNSW_DIM=384 [HNSW_M=16] [HNSW_EFC=128] cargo test
    /// --release --lib hnsw_recall_file -- --ignored --nocapture` builds the graph as a bucket
    /// does and prints recall@1 (candidates re-scored with the float rows) per ef, the
    /// similarities per lookup and, for each miss, the target's level-0 in-degree and the
    /// similarities (x100) query-found, query-target and found-target.
    #[test]
    #[ignore]
    fn hnsw_recall_file() {
        use std::time::Instant;
        let env = |k: &str| std::env::var(k).ok();
        let base = env("HNSW_FILE").expect("HNSW_FILE");
        let dim: usize = env("HNSW_DIM").expect("HNSW_DIM").parse().unwrap();
        let mut params = Params::default();
        params.m = env("HNSW_M").map_or(params.m, |s| s.parse().unwrap());
        params.ef_construction =
            env("HNSW_EFC").map_or(params.ef_construction, |s| s.parse().unwrap());
        let data = read_le(&format!("{base}.data"), f32::from_le_bytes);
        let qs = read_le(&format!("{base}.q"), f32::from_le_bytes);
        let truth = read_le(&format!("{base}.truth"), u32::from_le_bytes);
        let row = |nd: u32| &data[nd as usize * dim..(nd as usize + 1) * dim];
        let n = data.len() / dim;
        let mut g = Hnsw::new(params);
        let t = Instant::now();
        for i in 0..n as u32 {
            let node = g.alloc(u64::from(i) + 1, row(i));
            g.connect(node);
        }
        println!(
            "{params:?}: built {n} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut indeg = vec![0u32; n];
        let mut out = 0usize;
        for i in 0..n as u32 {
            out += g.links(i, 0).len();
            g.links(i, 0).iter().for_each(|&x| indeg[x as usize] += 1);
        }
        println!(
            "level 0: mean out-degree {:.1}, in-degree 0: {} nodes, <= 2: {}",
            out as f64 / n as f64,
            indeg.iter().filter(|&&d| d == 0).count(),
            indeg.iter().filter(|&&d| d <= 2).count()
        );
        let pct = |x: f32| (x * 100.0) as i32;
        for ef in [16usize, 32, 64, 128, 256] {
            let mut misses = Vec::new();
            SIMS.with(|c| c.set(0));
            let tq = Instant::now();
            for (i, &t) in truth.iter().enumerate() {
                let q = &qs[i * dim..(i + 1) * dim];
                let best = g
                    .search(q, ef)
                    .iter()
                    .map(|&(nd, _)| (vector::dot(q, row(nd)), nd))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .expect("a graph search finds something");
                if best.1 != t {
                    let (qt, ft) = (vector::dot(q, row(t)), vector::dot(row(best.1), row(t)));
                    misses.push((indeg[t as usize], pct(best.0), pct(qt), pct(ft)));
                }
            }
            println!(
                "ef {ef}: {:.1} us/query, recall@1 {:.3}, similarities {}, misses {:?}",
                tq.elapsed().as_secs_f64() * 1e6 / truth.len() as f64,
                1.0 - misses.len() as f64 / truth.len() as f64,
                SIMS.with(|c| c.get()) / truth.len(),
                &misses[..misses.len().min(12)]
            );
        }
    }
}
