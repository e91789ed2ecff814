//! An inverted-file index (IVF) over int8 codes, without any server call.
//!
//! Entries live in lists; each list keeps its members' codes contiguous and has a centroid
//! (the exact integer sum of its members' codes). A lookup scores every centroid, then
//! streams the codes of the `nprobe` best lists. Those are sequential reads that the memory
//! system prefetches on its own, where a graph walk waits on one random cache line after
//! another: at 100,000 x 384 an HNSW walk at ef 16 spends ~300 ns per similarity at level 0,
//! a list scan ~70 ns.
//!
//! **No training pass.** The index starts with one list; a new entry joins the list whose
//! centroid it is most similar to, and a list that outgrows [`Ivf::list_cap`] (~sqrt(n)
//! members, at least 256) splits in two by 2-means; then the members of the 16 lists nearest
//! it move to whichever of them is now most similar (an entry joined its list by the
//! centroids of its time). Lists of a growing bucket therefore grow with it and their number
//! stays ~sqrt(n): a lookup reads ~sqrt(n) centroids and `nprobe` lists of ~sqrt(n) codes.
//!
//! **Deterministic.** Every decision (the list an entry joins, a split) is integer
//! arithmetic on codes (exact on any CPU and SIMD level) and float64 products of exactly
//! computed values; ties go to the smaller index. Two servers applying the same inserts and
//! removals in the same order (a primary and its replica, an AOF replay) build the same lists.
//!
//! **Sign bits first.** Scoring every centroid and every member of a probed list by its int8
//! code reads `dim` bytes each; at 1,000,000 x 384 that was ~34 µs of centroids and ~45 µs
//! per list. So each member also keeps the signs of its code minus its list's reference (the
//! list's centroid when a split made it), and each centroid the signs of it minus a global
//! reference (the centroid at the first split): `dim / 8` bytes. Above 512 dimensions a bit
//! is the sign of a sum of [`pool`] dimensions, so there are at most 512 (48 bytes at 1536
//! dimensions). A lookup ranks centroids by Hamming distance and scores the [`SHORTLIST`]
//! nearest by int8; in each probed list it ranks the members the same way and scores only the
//! nearest: at least `keep` in the first list, then those within `bits / MARGIN_DIV` of the
//! nearest distance seen, at most `rerank` (`semcache-index-ef`). A near-duplicate stands out (16 members scored per lookup), a query
//! far from every entry gets up to `rerank` per list. The references are history (past
//! centroids), so they are saved with the lists; the bits are float32 comparisons of exact
//! products, the same on every CPU.
//!
//! **Removal** takes the member out of its list (the list's last member moves into its
//! place) and subtracts its code from the centroid; an empty list is dropped.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::hnsw::{GraphError, Scored, MAX_SLOTS};
use crate::varint::put as put_varint;
use crate::vector;
use crate::wire::{put_bytes, Reader};

/// Members a list may have before it splits, at least.
const MIN_CAP: usize = 256;
/// A list splits beyond `CAP_K * sqrt(n)` members (n = entries in the index).
/// (1.0: at 100,000 x 384, 0.6 and 2.0 gave the same or slower lookups in-process.)
const CAP_K: f64 = 1.0;
/// Lists near a split one whose centroids the members of its halves are checked against.
const REASSIGN_LISTS: usize = 16;
/// 2-means rounds of a split.
const SPLIT_ROUNDS: usize = 4;
/// Centroids a lookup scores exactly (at least; 4 x nprobe if more), the nearest by sign
/// bits: at 100,000 x 384 (474 lists) a lookup took ~22 µs in-process against ~31 µs
/// scoring every centroid, recall unchanged.
const SHORTLIST: usize = 32;
/// Members of a probed list scored by int8 beyond the `keep` nearest by sign bits: those
/// within `bits / MARGIN_DIV` of the nearest seen (up to `rerank`; `bits`: [`signs`]). A
/// near-duplicate stands out (100,000 x 384: 16 members scored per lookup at ef 64, against 128 without
/// the margin); for a query far from every entry most members are alike and up to ef are
/// scored (recall@1 of such queries 0.943 at ef 64, 0.983 at 128; d/8: 0.945 / 1.000 but
/// ~40 members per near-duplicate).
const MARGIN_DIV: usize = 16;
/// Position of a free slot.
const NOWHERE: (u32, u32) = (u32::MAX, u32::MAX);

fn bad<T>(what: impl Into<String>) -> Result<T, GraphError> {
    Err(GraphError(what.into()))
}

/// One list: its members (slots), their codes (contiguous, in member order) and
/// `1 / |code|`, and the integer sum of the codes (the centroid).
#[derive(Debug, Clone, PartialEq, Default)]
struct List {
    nodes: Vec<u32>,
    codes: Vec<i8>,
    inv: Vec<f32>,
    sum: Vec<i32>,
    /// Per member, [`words`] words: the signs of its code minus `base`.
    bits: Vec<u64>,
    /// The reference the member signs are taken against, and `1 / |base|`.
    base: Vec<i8>,
    base_inv: f32,
    /// The widest angle (radians, rounded up) of a member from `base`: of its code, plus how
    /// far the vector it codes may be ([`coding_bound`]). Every member lies in this cap
    /// around the reference, so a lookup can tell when none can be similar enough to matter
    /// ([`Want`]). Exactly the widest member's (a removal of it rescans the list): a function
    /// of the codes, so a reloaded index has the same and answers the same.
    reach: f64,
}

/// A code as the bytes a payload holds.
fn as_bytes(code: &[i8]) -> Vec<u8> {
    code.iter().map(|&x| x as u8).collect()
}

/// Most sign bits per vector: above it, bits are taken of sums of dimensions.
const MAX_SIGNS: usize = 512;

/// Dimensions summed into one sign bit: a power of two keeping at most [`MAX_SIGNS`] bits
/// (1 up to 512 dimensions, 4 at 1536). The bits are a first filter, read for every
/// centroid and every member of a probed list: at 1536 dimensions one bit per dimension
/// made them most of a lookup's time.
fn pool(dim: usize) -> usize {
    dim.div_ceil(MAX_SIGNS).next_power_of_two()
}

/// Sign bits per vector.
fn signs(dim: usize) -> usize {
    dim.div_ceil(pool(dim))
}

/// Words of sign bits per vector.
fn words(dim: usize) -> usize {
    signs(dim).div_ceil(64)
}

/// Sign bits of `code * inv - base * base_inv` (see [`vector::sign_bits_i8`]), of sums of
/// [`pool`] dimensions above [`MAX_SIGNS`] dimensions: `inv * sum(code) > base_inv *
/// sum(base)`, the sums exact integers, so the bits are the same on every CPU.
fn sign_bits(code: &[i8], inv: f32, base: &[i8], base_inv: f32, out: &mut [u64]) {
    if pool(code.len()) == 1 {
        return vector::sign_bits_i8(code, inv, base, base_inv, out);
    }
    let (mut a, mut b) = ([0f32; MAX_SIGNS], [0f32; MAX_SIGNS]);
    let n = pooled_sums(code, &mut a).min(pooled_sums(base, &mut b));
    vector::sign_bits_f32(&a[..n], inv, &b[..n], base_inv, out);
}

/// The sums of each [`pool`] consecutive values of `v` into `out`; returns how many.
fn pooled_sums(v: &[i8], out: &mut [f32; MAX_SIGNS]) -> usize {
    vector::group_sums_i8(v, pool(v.len()), out)
}

impl List {
    fn code(&self, j: usize, dim: usize) -> &[i8] {
        &self.codes[j * dim..(j + 1) * dim]
    }

    fn push(&mut self, node: u32, code: &[i8], inv: f32) {
        if self.sum.len() != code.len() {
            self.sum = vec![0; code.len()];
        }
        // Grown by an eighth at a time, not doubled: the codes are most of the index's memory.
        if self.nodes.len() == self.nodes.capacity() {
            let more = (self.nodes.len() / 8).max(16);
            self.nodes.reserve_exact(more);
            self.inv.reserve_exact(more);
            self.codes.reserve_exact(more * code.len());
            self.bits.reserve_exact(more * words(code.len()));
        }
        self.nodes.push(node);
        self.codes.extend_from_slice(code);
        self.inv.push(inv);
        for (s, &c) in self.sum.iter_mut().zip(code) {
            *s += i32::from(c);
        }
        if self.base.is_empty() {
            self.base = code.to_vec();
            self.base_inv = inv;
        }
        let reach = self.reach_of(code, inv);
        self.reach = if self.nodes.len() == 1 {
            reach
        } else {
            self.reach.max(reach)
        };
        let w = words(code.len());
        let at = self.bits.len();
        self.bits.resize(at + w, 0);
        sign_bits(code, inv, &self.base, self.base_inv, &mut self.bits[at..]);
    }

    /// The similarity of a member's code (`1 / |code|`: `inv`) to the reference.
    fn cos_to_base(&self, code: &[i8], inv: f32) -> f64 {
        score(code, &self.base, inv) * f64::from(self.base_inv)
    }

    /// A member's angle from the reference, at most: its code's, plus [`coding_bound`].
    fn reach_of(&self, code: &[i8], inv: f32) -> f64 {
        angle_at_most(self.cos_to_base(code, inv)) + coding_bound(inv, code.len())
    }

    /// The least angle from a code (`1 / |code|`: `inv`) to any member's vector, at least:
    /// from the code to the reference, less the widest member's angle from it (the
    /// triangle inequality of angles on the sphere).
    fn least_angle(&self, code: &[i8], inv: f32) -> f64 {
        angle_at_least(self.cos_to_base(code, inv)) - self.reach
    }

    /// Sets [`List::reach`] from every member.
    fn measure_reach(&mut self, dim: usize) {
        self.reach = (0..self.nodes.len())
            .map(|j| self.reach_of(self.code(j, dim), self.inv[j]))
            .fold(0.0, f64::max);
    }

    /// Takes the list's centroid as the reference of its sign bits.
    fn rebase(&mut self, dim: usize) {
        if self.nodes.is_empty() {
            return;
        }
        self.base = vec![0; dim];
        self.base_inv = code_of_sum(&self.sum, &mut self.base);
        self.measure_reach(dim);
        let w = words(dim);
        for j in 0..self.nodes.len() {
            let (code, inv) = (&self.codes[j * dim..(j + 1) * dim], self.inv[j]);
            sign_bits(
                code,
                inv,
                &self.base,
                self.base_inv,
                &mut self.bits[j * w..(j + 1) * w],
            );
        }
    }
}

/// The positions of the `n` smallest of `ham` (distances of at most `bits`; ties: the
/// earlier position), in position order, into `sel`, where `n` is the number of distances
/// within `margin` of `low` (lowered first to the smallest of `ham`), kept within
/// `min..=max`. A histogram: no sort.
fn nearest_by_hamming(
    ham: &[u32],
    (min, max): (usize, usize),
    low: &mut usize,
    margin: usize,
    bits: usize,
    hist: &mut Vec<u32>,
    sel: &mut Vec<u32>,
) {
    sel.clear();
    let lowest = ham
        .iter()
        .min()
        .map_or(bits + 1, |&h| (h as usize).min(bits + 1));
    *low = (*low).min(lowest);
    // Counts of each distance from `lowest` up: none is below it, and the scans below start
    // there instead of at 0 (at 1536 dimensions nearest distances are in the hundreds).
    hist.clear();
    hist.resize(bits + 2 - lowest, 0);
    for &h in ham {
        hist[h as usize - lowest] += 1;
    }
    let near: usize = hist[..(*low + margin + 1).saturating_sub(lowest).min(hist.len())]
        .iter()
        .map(|&c| c as usize)
        .sum();
    let n = near.clamp(min, max.max(min));
    let (mut cut, mut below) = (lowest, 0usize);
    while cut <= bits && below + (hist[cut - lowest] as usize) < n {
        below += hist[cut - lowest] as usize;
        cut += 1;
    }
    let mut at_cut = n.saturating_sub(below);
    for (j, &h) in ham.iter().enumerate() {
        let h = h as usize;
        if h < cut {
            sel.push(j as u32);
        } else if h == cut && at_cut > 0 {
            at_cut -= 1;
            sel.push(j as u32);
        }
    }
}

/// A lookup's working memory, kept per thread: no allocation per lookup.
struct Scratch {
    dots: Vec<i32>,
    lists: Vec<Scored>,
    qbits: Vec<u64>,
    ham: Vec<u32>,
    hist: Vec<u32>,
    sel: Vec<u32>,
    /// The candidates found so far with their (list, position), best first (the skip
    /// test's, when it needs them).
    found: Vec<(Scored, u32, u32)>,
    /// Lists the last lookup scanned (tests read it).
    probed: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            dots: Vec::new(),
            lists: Vec::new(),
            qbits: Vec::new(),
            ham: Vec::new(),
            hist: Vec::new(),
            sel: Vec::new(),
            found: Vec::new(),
            probed: 0,
        })
    };
}

/// The int8 code of an integer vector (round half away from zero) and its `1 / |code|`.
fn code_of_sum(sum: &[i32], out: &mut [i8]) -> f32 {
    let max = i64::from(sum.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0));
    if max == 0 {
        out.fill(0);
        return 0.0;
    }
    for (o, &s) in out.iter_mut().zip(sum) {
        let s = i64::from(s);
        *o = ((2 * 127 * s + s.signum() * max) / (2 * max)) as i8;
    }
    vector::code_inv_norm(out)
}

/// `dot(a, b) * inv` in float64: the exact integer dot and a float, so every CPU agrees.
#[inline]
fn score(a: &[i8], b: &[i8], inv: f32) -> f64 {
    f64::from(vector::dot_i8(a, b)) * f64::from(inv)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ivf {
    /// Dimension of the codes (0 until the first node).
    dim: usize,
    /// Per slot: the entry id (0 for a free slot) and its (list, position).
    ids: Vec<u64>,
    place: Vec<(u32, u32)>,
    free: BTreeSet<u32>,
    len: usize,
    lists: Vec<List>,
    /// Per list: its centroid's int8 code (contiguous: every lookup scans them) and
    /// `1 / |code|`.
    centroids: Vec<i8>,
    centroid_inv: Vec<f32>,
    /// Per list, [`words`] words: the signs of its centroid minus `gbase`, the reference
    /// taken at the first split (the mean of the first entries).
    cbits: Vec<u64>,
    gbase: Vec<i8>,
    gbase_inv: f32,
}

/// What a lookup's caller does with the candidates: it keeps the `k` most similar that
/// `answers` accepts (not expired, matching a filter), if their similarity is at least
/// `min_sim`. A list whose every member is provably below `min_sim`, or below the `k`th
/// accepted candidate already found, cannot change that answer: [`Ivf::search`] skips it.
pub struct Want<'a> {
    pub k: usize,
    pub min_sim: f32,
    pub answers: &'a dyn Fn(u32) -> bool,
    /// Keep only candidates `answers` accepts. Off, a lookup reads nothing of the caller's
    /// per candidate (each read a cache miss); on, rejected entries (expired ones not yet
    /// reclaimed) cannot crowd the live ones out of the `keep` returned.
    pub only_answers: bool,
}

impl Want<'_> {
    /// Every candidate matters: nothing is skipped.
    pub const ALL: Want<'static> = Want {
        k: usize::MAX,
        min_sim: -1.0,
        answers: &|_| true,
        only_answers: false,
    };
}

/// A lookup's candidate: its node, its approximate similarity and the int8 code with
/// `1 / |code|` the index holds for it, where it holds one (IVF: always). The code was read
/// to score the candidate, so a caller re-scoring from it reads nothing more: for a bucket
/// of int8 rows the code is the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    pub node: u32,
    pub sim: f32,
    pub copy: Option<(&'a [i8], f32)>,
}

/// (node, similarity) of each candidate.
#[cfg(test)]
fn pairs(found: Vec<Candidate>) -> Vec<(u32, f32)> {
    found.iter().map(|c| (c.node, c.sim)).collect()
}

/// Slack on every cosine the skip test takes an angle of: float32 products of exact
/// integer dots are within ~1e-7, and near a cosine of 1 an angle is very sensitive to it.
const COS_SLACK: f64 = 1e-5;

/// The angle of a cosine, taking the cosine `COS_SLACK` smaller (a larger angle): an
/// upper bound of the true angle.
fn angle_at_most(cos: f64) -> f64 {
    (cos - COS_SLACK).clamp(-1.0, 1.0).acos()
}

/// The angle of a cosine taken `COS_SLACK` larger: a lower bound.
fn angle_at_least(cos: f64) -> f64 {
    (cos + COS_SLACK).clamp(-1.0, 1.0).acos()
}

/// How far (radians) a vector may be from its int8 code ([`vector::quantize_i8`]), from
/// the code alone (`1 / |code|`: `inv`): every element is within half a step of the code's,
/// so the difference is at most `sqrt(dim) / 2` steps against a code of `|code|` steps.
/// (At 1536 dimensions ~0.016; the rows of an int8 bucket are their codes, and this only
/// makes a skip a little rarer.)
fn coding_bound(inv: f32, dim: usize) -> f64 {
    let sin = 0.5001 * (dim as f64).sqrt() * f64::from(inv);
    if inv > 0.0 && sin < 1.0 {
        sin.asin()
    } else {
        std::f64::consts::PI // no code (a zero vector): no bound
    }
}

/// The angle between a vector and its int8 code, at most.
fn angle_to_code(v: &[f32], code: &[i8]) -> f64 {
    let norm = f64::from(vector::dot(v, v)).sqrt();
    if norm == 0.0 {
        return std::f64::consts::PI;
    }
    let dot = f64::from(vector::dot_f32_i8(v, code));
    angle_at_most(dot * f64::from(vector::code_inv_norm(code)) / norm)
}

impl Ivf {
    pub fn new() -> Ivf {
        Ivf::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Node slots (free ones included).
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    /// The dimension a decoded index declares (by its sign references), if any: it must be
    /// the bucket's.
    pub fn declared_dim(&self) -> Option<usize> {
        (self.dim != 0).then_some(self.dim)
    }

    /// Number of lists.
    pub fn lists(&self) -> usize {
        self.lists.len()
    }

    pub fn id_of(&self, node: u32) -> u64 {
        self.ids[node as usize]
    }

    pub fn is_free(&self, node: u32) -> bool {
        self.ids.get(node as usize).is_none_or(|&id| id == 0)
    }

    /// Every node and its entry id, by slot.
    pub fn nodes(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id != 0)
            .map(|(n, &id)| (n as u32, id))
    }

    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 8
            + self.place.capacity() * 8
            + self.free.len() * 4
            + self.centroids.capacity()
            + self.centroid_inv.capacity() * 4
            + self.cbits.capacity() * 8
            + self.gbase.capacity()
            + self
                .lists
                .iter()
                .map(|l| {
                    l.nodes.capacity() * 4
                        + l.codes.capacity()
                        + l.inv.capacity() * 4
                        + l.sum.capacity() * 4
                        + l.bits.capacity() * 8
                        + l.base.capacity()
                        + std::mem::size_of::<List>()
                })
                .sum::<usize>()
    }

    /// Members a list may have before it splits: ~sqrt(n), so that the centroids a lookup
    /// scans and the members of a list it streams grow alike.
    pub fn list_cap(&self) -> usize {
        MIN_CAP.max((CAP_K * (self.len as f64).sqrt()) as usize)
    }

    /// Adds an entry by its unit vector (coded to int8 here). Returns its node.
    pub fn insert_vector(&mut self, id: u64, v: &[f32]) -> u32 {
        let mut code = vec![0i8; v.len()];
        vector::quantize_i8(v, &mut code);
        self.insert_code(id, &code)
    }

    /// Adds an entry by its int8 code. Returns its node.
    pub fn insert_code(&mut self, id: u64, code: &[i8]) -> u32 {
        if self.len == 0 && self.lists.is_empty() {
            self.dim = code.len();
        }
        let node = self.take_slot(id);
        let inv = vector::code_inv_norm(code);
        let mut l = self.best_list(code);
        if l == self.lists.len() {
            l = self.add_list(List::default());
        }
        let list = &mut self.lists[l];
        self.place[node as usize] = (l as u32, list.nodes.len() as u32);
        list.push(node, code, inv);
        self.len += 1;
        self.refresh_centroid(l);
        if self.lists[l].nodes.len() > self.list_cap() {
            self.split(l);
        }
        node
    }

    fn take_slot(&mut self, id: u64) -> u32 {
        let node = match self.free.pop_first() {
            Some(n) => n,
            None => {
                self.ids.push(0);
                self.place.push(NOWHERE);
                (self.ids.len() - 1) as u32
            }
        };
        self.ids[node as usize] = id;
        node
    }

    /// The list whose centroid is most similar to `code` (the smaller index on a tie), or
    /// `lists()` when there is none.
    fn best_list(&self, code: &[i8]) -> usize {
        let mut best = (f64::NEG_INFINITY, self.lists.len());
        if self.lists.is_empty() {
            return best.1;
        }
        // One scan of the contiguous centroids: the same exact dots as `score`.
        SCRATCH.with(|sc| {
            let dots = &mut sc.borrow_mut().dots;
            vector::scan_dots_i8(&self.centroids, self.dim, code, dots);
            for (l, (&x, &inv)) in dots.iter().zip(&self.centroid_inv).enumerate() {
                let s = f64::from(x) * f64::from(inv);
                if s > best.0 {
                    best = (s, l);
                }
            }
        });
        best.1
    }

    /// Appends a list and its centroid; returns its index.
    fn add_list(&mut self, list: List) -> usize {
        let l = self.lists.len();
        self.lists.push(list);
        self.centroids.extend(std::iter::repeat_n(0, self.dim));
        self.centroid_inv.push(0.0);
        self.cbits.extend(std::iter::repeat_n(0, words(self.dim)));
        self.refresh_centroid(l);
        l
    }

    fn centroid(&self, l: usize) -> &[i8] {
        &self.centroids[l * self.dim..(l + 1) * self.dim]
    }

    fn refresh_centroid(&mut self, l: usize) {
        let d = self.dim;
        self.centroid_inv[l] =
            code_of_sum(&self.lists[l].sum, &mut self.centroids[l * d..(l + 1) * d]);
        if !self.gbase.is_empty() {
            let w = words(d);
            sign_bits(
                &self.centroids[l * d..(l + 1) * d],
                self.centroid_inv[l],
                &self.gbase,
                self.gbase_inv,
                &mut self.cbits[l * w..(l + 1) * w],
            );
        }
    }

    /// Takes `base` as the reference of the centroids' sign bits.
    fn set_gbase(&mut self, base: Vec<i8>) {
        self.gbase_inv = vector::code_inv_norm(&base);
        self.gbase = base;
        for l in 0..self.lists.len() {
            self.refresh_centroid(l);
        }
    }

    /// Splits list `l` by 2-means: the member least similar to the centroid and the member
    /// least similar to that one seed the halves. Members keep their order in each half;
    /// the second half becomes the last list.
    fn split(&mut self, l: usize) {
        let d = self.dim;
        if self.gbase.is_empty() {
            self.set_gbase(self.centroid(l).to_vec());
        }
        let list = std::mem::take(&mut self.lists[l]);
        let m = list.nodes.len();
        let least_like = |target: &[i8]| {
            (0..m)
                .map(|j| (score(list.code(j, d), target, list.inv[j]), j))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map_or(0, |x| x.1)
        };
        let a = least_like(self.centroid(l));
        let b = least_like(list.code(a, d));
        let (mut ca, mut cb) = (list.code(a, d).to_vec(), list.code(b, d).to_vec());
        let (mut ia, mut ib) = (list.inv[a], list.inv[b]);
        let mut to_b = vec![false; m];
        for _ in 0..SPLIT_ROUNDS {
            for (j, side) in to_b.iter_mut().enumerate() {
                let c = list.code(j, d);
                *side = score(c, &cb, ib) > score(c, &ca, ia);
            }
            let nb = to_b.iter().filter(|&&x| x).count();
            if nb == 0 || nb == m {
                break;
            }
            let (mut sa, mut sb) = (vec![0i32; d], vec![0i32; d]);
            for (j, &side) in to_b.iter().enumerate() {
                let s = if side { &mut sb } else { &mut sa };
                for (x, &c) in s.iter_mut().zip(list.code(j, d)) {
                    *x += i32::from(c);
                }
            }
            ia = code_of_sum(&sa, &mut ca);
            ib = code_of_sum(&sb, &mut cb);
        }
        let nb = to_b.iter().filter(|&&x| x).count();
        if nb == 0 || nb == m {
            // Members alike (identical codes): any halves will do.
            to_b.iter_mut()
                .enumerate()
                .for_each(|(j, s)| *s = j >= m / 2);
        }
        let (mut la, mut lb) = (List::default(), List::default());
        for (j, &side) in to_b.iter().enumerate() {
            let into = if side { &mut lb } else { &mut la };
            into.push(list.nodes[j], list.code(j, d), list.inv[j]);
        }
        la.rebase(d);
        lb.rebase(d);
        let nl = self.lists.len();
        for (k, &node) in la.nodes.iter().enumerate() {
            self.place[node as usize] = (l as u32, k as u32);
        }
        for (k, &node) in lb.nodes.iter().enumerate() {
            self.place[node as usize] = (nl as u32, k as u32);
        }
        // The lists near the old centroid: where the members of the halves may belong now.
        let old_centroid = self.centroid(l).to_vec();
        let mut near: Vec<(f64, usize)> = (0..nl)
            .filter(|&x| x != l)
            .map(|x| {
                (
                    score(&old_centroid, self.centroid(x), self.centroid_inv[x]),
                    x,
                )
            })
            .collect();
        if near.len() > REASSIGN_LISTS {
            near.select_nth_unstable_by(REASSIGN_LISTS - 1, |a, b| {
                b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
            });
            near.truncate(REASSIGN_LISTS);
        }
        let mut near: Vec<usize> = near.into_iter().map(|x| x.1).collect();
        near.extend([l, nl]);
        near.sort_unstable();
        self.lists[l] = la;
        self.refresh_centroid(l);
        self.add_list(lb);
        // Each member of the halves joined its list by the centroids of the time; after the
        // split it moves to the nearby list it is now most similar to (in member order).
        let members: Vec<u32> = near
            .iter()
            .flat_map(|&x| self.lists[x].nodes.iter().copied())
            .collect();
        for node in members {
            let (from, p) = self.place[node as usize];
            let (from, p) = (from as usize, p as usize);
            if self.lists[from].nodes.len() == 1 {
                continue; // a list is never emptied here (list numbers stay put)
            }
            let code = self.lists[from].code(p, d).to_vec();
            let mut best = (
                score(&code, self.centroid(from), self.centroid_inv[from]),
                from,
            );
            for &x in &near {
                let sc = score(&code, self.centroid(x), self.centroid_inv[x]);
                if sc > best.0 {
                    best = (sc, x);
                }
            }
            if best.1 != from {
                let inv = self.lists[from].inv[p];
                self.take_out(from, p);
                let to = &mut self.lists[best.1];
                self.place[node as usize] = (best.1 as u32, to.nodes.len() as u32);
                to.push(node, &code, inv);
                self.refresh_centroid(from);
                self.refresh_centroid(best.1);
            }
        }
    }

    /// Takes the member at position `p` out of list `l` (the list's last member moves into its
    /// place; the caller refreshes the centroid).
    fn take_out(&mut self, l: usize, p: usize) {
        let d = self.dim;
        let list = &mut self.lists[l];
        let widest = list.reach_of(list.code(p, d), list.inv[p]) >= list.reach;
        for (s, &c) in list.sum.iter_mut().zip(&list.codes[p * d..(p + 1) * d]) {
            *s -= i32::from(c);
        }
        let last = list.nodes.len() - 1;
        let w = words(d);
        if p != last {
            list.bits.copy_within(last * w..(last + 1) * w, p * w);
            list.codes.copy_within(last * d..(last + 1) * d, p * d);
            list.inv[p] = list.inv[last];
            list.nodes[p] = list.nodes[last];
            self.place[list.nodes[p] as usize] = (l as u32, p as u32);
        }
        list.nodes.pop();
        list.inv.pop();
        list.codes.truncate(last * d);
        list.bits.truncate(last * w);
        if widest {
            list.measure_reach(d);
        }
    }

    /// Removes a node: out of its list (the list's last member takes its place), its code
    /// out of the centroid; an empty list is dropped (the last list takes its place).
    pub fn remove(&mut self, node: u32) {
        if self.is_free(node) {
            return;
        }
        let d = self.dim;
        let (l, p) = self.place[node as usize];
        let (l, p) = (l as usize, p as usize);
        self.take_out(l, p);
        if self.lists[l].nodes.is_empty() {
            let moved = self.lists.len() - 1;
            self.lists.swap_remove(l);
            self.centroid_inv.swap_remove(l);
            let w = words(d);
            if l != moved {
                self.centroids
                    .copy_within(moved * d..(moved + 1) * d, l * d);
                self.cbits.copy_within(moved * w..(moved + 1) * w, l * w);
                for (k, &n) in self.lists[l].nodes.iter().enumerate() {
                    self.place[n as usize] = (l as u32, k as u32);
                }
            }
            self.centroids.truncate(moved * d);
            self.cbits.truncate(moved * w);
        } else {
            self.refresh_centroid(l);
        }
        self.ids[node as usize] = 0;
        self.place[node as usize] = NOWHERE;
        self.free.insert(node);
        self.len -= 1;
    }

    /// The `keep` nodes most similar to the unit vector `q` among the members of the `nprobe`
    /// lists whose centroids are most similar to it, best first by their approximate (int8)
    /// similarity, as `(node, approximate similarity)`. Re-score them.
    ///
    /// Centroids and members are first ranked by sign bits (Hamming distance, ~1/8 of the
    /// bytes of their codes), then the nearest are scored by their int8 codes: the
    /// [`SHORTLIST`] nearest centroids; in the lists, best centroid first, at least `keep`
    /// members of the first (of every list when `keep` reaches `rerank`), then those within
    /// `signs(dim) / MARGIN_DIV` bits of the nearest distance seen, at most `rerank` per list (a list
    /// of no more than `rerank` members is scored whole).
    ///
    /// A list is skipped when no member can matter to the caller ([`Want`]): by the angles
    /// query to list reference, reference to widest member ([`List::reach`], which includes
    /// how far a stored vector may be from its code) and query to its code (the codes the
    /// index scores are not the rows the caller scores), every member's similarity is then
    /// below `want.min_sim` or below the
    /// `want.k`th accepted candidate found so far. A near-duplicate found in the first list
    /// rules out most others (100,000 x 1536, nprobe 4: 1.7 lists scanned instead of 4).
    pub fn search(
        &self,
        q: &[f32],
        keep: usize,
        rerank: usize,
        nprobe: usize,
        want: &Want,
    ) -> Vec<Candidate<'_>> {
        if self.len == 0 || q.len() != self.dim {
            return Vec::new();
        }
        let d = self.dim;
        let w = words(d);
        let mut qc = vec![0i8; d];
        vector::quantize_i8(q, &mut qc);
        let q_inv = vector::code_inv_norm(&qc);
        let nprobe = nprobe.clamp(1, self.lists.len());
        let keep = keep.max(1);
        let rerank = rerank.max(keep);
        // The best `keep` so far, each with its (list, position).
        type Best = BinaryHeap<Reverse<(Scored, u32, u32)>>;
        let mut best: Best = BinaryHeap::with_capacity(keep + 1);
        let offer = |best: &mut Best, s: Scored, l: u32, p: usize| {
            let full = best.len() >= keep;
            if full && best.peek().is_some_and(|w| s <= w.0 .0)
                || want.only_answers && !(want.answers)(s.1)
            {
                return;
            }
            if full {
                best.pop();
            }
            best.push(Reverse((s, l, p as u32)));
        };
        let skips = want.min_sim > -1.0 || want.k <= keep;
        // The angle between the query and its code (taken when first needed).
        let mut slack = None;
        let mut slack = || *slack.get_or_insert_with(|| angle_to_code(q, &qc));
        let below_min = angle_at_most(f64::from(want.min_sim));
        // The angle every candidate must beat: the threshold's, or the `k`th accepted
        // candidate's (plus what the codes may hide) once there are `k` of them.
        let bar =
            |best: &Best, found: &mut Vec<(Scored, u32, u32)>, slack: &mut dyn FnMut() -> f64| {
                if want.k == 0 || want.k > best.len() {
                    return below_min;
                }
                found.clear();
                found.extend(best.iter().map(|r| r.0));
                found.sort_unstable_by_key(|c| Reverse(c.0));
                let kth = found
                    .iter()
                    .filter(|c| (want.answers)(c.0 .1))
                    .nth(want.k - 1);
                kth.map_or(below_min, |&(s, l, p)| {
                    let inv = self.lists[l as usize].inv[p as usize];
                    let codes = angle_at_most(f64::from(s.0 * q_inv));
                    below_min.min(codes + slack() + coding_bound(inv, d))
                })
            };
        SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let Scratch {
                dots,
                lists,
                qbits,
                ham,
                hist,
                sel,
                found,
                probed,
            } = &mut *sc;
            *probed = 0;
            qbits.resize(w, 0);
            lists.clear();
            let short = SHORTLIST.max(4 * nprobe);
            if self.lists.len() > short && !self.gbase.is_empty() {
                sign_bits(&qc, q_inv, &self.gbase, self.gbase_inv, qbits);
                vector::scan_hamming(&self.cbits, w, qbits, ham);
                nearest_by_hamming(
                    ham,
                    (short, short),
                    &mut { usize::MAX },
                    0,
                    signs(d),
                    hist,
                    sel,
                );
                for &l in sel.iter() {
                    vector::prefetch_lines(self.centroid(l as usize), usize::MAX);
                }
                for &l in sel.iter() {
                    let x = vector::dot_i8(self.centroid(l as usize), &qc);
                    lists.push(Scored(x as f32 * self.centroid_inv[l as usize], l));
                }
            } else {
                vector::scan_dots_i8(&self.centroids, d, &qc, dots);
                lists.extend(
                    dots.iter()
                        .zip(&self.centroid_inv)
                        .enumerate()
                        .map(|(l, (&x, &inv))| Scored(x as f32 * inv, l as u32)),
                );
            }
            let nprobe = nprobe.min(lists.len());
            if nprobe < lists.len() {
                lists.select_nth_unstable_by(nprobe - 1, |a, b| b.cmp(a));
            }
            lists[..nprobe].sort_unstable_by(|a, b| b.cmp(a));
            let (mut low, mut first) = (usize::MAX, true);
            for &Scored(_, l) in &lists[..nprobe] {
                let list = &self.lists[l as usize];
                if skips {
                    let bar = bar(&best, found, &mut slack);
                    if bar < std::f64::consts::PI && list.least_angle(&qc, q_inv) - slack() > bar {
                        continue;
                    }
                }
                *probed += 1;
                if list.nodes.len() <= rerank {
                    vector::scan_dots_i8(&list.codes, d, &qc, dots);
                    let members = dots.iter().zip(&list.inv).zip(&list.nodes);
                    for (j, ((&x, &inv), &node)) in members.enumerate() {
                        offer(&mut best, Scored(x as f32 * inv, node), l, j);
                    }
                    continue;
                }
                sign_bits(&qc, q_inv, &list.base, list.base_inv, qbits);
                vector::scan_hamming(&list.bits, w, qbits, ham);
                let floor = if first || keep >= rerank { keep } else { 0 };
                first = false;
                let nbits = signs(d);
                if want.only_answers {
                    // Members that cannot answer go last: they must not take the places
                    // of the `keep` nearest that can.
                    for (h, &node) in ham.iter_mut().zip(&list.nodes) {
                        if !(want.answers)(node) {
                            *h = nbits as u32 + 1;
                        }
                    }
                }
                nearest_by_hamming(
                    ham,
                    (floor, rerank),
                    &mut low,
                    nbits / MARGIN_DIV,
                    nbits,
                    hist,
                    sel,
                );
                // The chosen rows are scattered in the list: fetch them all, then score.
                for &j in sel.iter() {
                    vector::prefetch_lines(list.code(j as usize, d), usize::MAX);
                }
                for &j in sel.iter() {
                    let j = j as usize;
                    let x = vector::dot_i8(list.code(j, d), &qc);
                    offer(
                        &mut best,
                        Scored(x as f32 * list.inv[j], list.nodes[j]),
                        l,
                        j,
                    );
                }
            }
        });
        let mut out: Vec<(Scored, u32, u32)> = best.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by_key(|c| Reverse(c.0));
        out.into_iter()
            .map(|(s, l, p)| {
                let list = &self.lists[l as usize];
                let (p, node) = (p as usize, s.1);
                let copy = Some((list.code(p, d), list.inv[p]));
                Candidate {
                    node,
                    sim: s.0 * q_inv,
                    copy,
                }
            })
            .collect()
    }

    /// [`Ivf::search`] skipping nothing.
    #[cfg(test)]
    pub fn search_all(
        &self,
        q: &[f32],
        keep: usize,
        rerank: usize,
        nprobe: usize,
    ) -> Vec<(u32, f32)> {
        pairs(self.search(q, keep, rerank, nprobe, &Want::ALL))
    }

    // ---- persistence ----

    /// `varint slots, varint lists`, then per list `varint count` and per member `varint
    /// slot, varint id`. Codes are derived from the entries, so they are not written:
    /// a loaded index recomputes them ([`Ivf::load_vectors`], [`Ivf::load_codes`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.slots() as u64);
        put_varint(out, self.lists.len() as u64);
        for list in &self.lists {
            put_varint(out, list.nodes.len() as u64);
            for &n in &list.nodes {
                put_varint(out, u64::from(n));
                put_varint(out, self.ids[n as usize]);
            }
        }
        // The references of the sign bits: they were taken from past centroids, so they
        // cannot be recomputed from the lists.
        put_bytes(out, &as_bytes(&self.gbase));
        for list in &self.lists {
            put_bytes(out, &as_bytes(&list.base));
        }
    }

    /// Reads an index written by [`Ivf::encode`] (hostile input: never a panic, at most
    /// [`MAX_SLOTS`] slots, every node in one list, no empty list). Its codes are zero until
    /// [`Ivf::load_vectors`] or [`Ivf::load_codes`].
    pub fn decode(r: &mut Reader, with_bases: bool) -> Result<Ivf, GraphError> {
        let v = |r: &mut Reader| r.varint().map_err(|e| GraphError(e.0.to_string()));
        let slots = v(r)?;
        if slots > MAX_SLOTS {
            return bad(format!("index of {slots} slots (at most {MAX_SLOTS})"));
        }
        let lists = v(r)?;
        if lists > slots {
            return bad(format!("{lists} lists for {slots} slots"));
        }
        let mut g = Ivf {
            ids: vec![0; slots as usize],
            place: vec![NOWHERE; slots as usize],
            ..Ivf::default()
        };
        for l in 0..lists as u32 {
            let count = v(r)?;
            if count == 0 || count > slots {
                return bad(format!("list {l} of {count} members"));
            }
            let mut list = List::default();
            for k in 0..count as u32 {
                let (node, id) = (v(r)?, v(r)?);
                if node >= slots || id == 0 {
                    return bad(format!("list {l}: member {k} out of range"));
                }
                if g.ids[node as usize] != 0 {
                    return bad(format!("node {node} is in the index twice"));
                }
                g.ids[node as usize] = id;
                g.place[node as usize] = (l, k);
                list.nodes.push(node as u32);
            }
            g.len += list.nodes.len();
            g.lists.push(list);
        }
        g.free = (0..slots as u32)
            .filter(|&n| g.ids[n as usize] == 0)
            .collect();
        if with_bases {
            let bytes = |r: &mut Reader| {
                r.bytes()
                    .map(|b| b.iter().map(|&x| x as i8).collect::<Vec<i8>>())
                    .map_err(|e| GraphError(e.0.to_string()))
            };
            let gbase = bytes(r)?;
            let mut dim = None;
            for l in 0..g.lists.len() {
                let base = bytes(r)?;
                if base.is_empty() || dim.is_some_and(|d| d != base.len()) {
                    return bad(format!("list {l}: a reference of {} values", base.len()));
                }
                dim = Some(base.len());
                g.lists[l].base_inv = vector::code_inv_norm(&base);
                g.lists[l].base = base;
            }
            if !gbase.is_empty() && dim != Some(gbase.len()) {
                return bad(format!("a reference of {} values", gbase.len()));
            }
            g.gbase_inv = vector::code_inv_norm(&gbase);
            g.gbase = gbase;
            g.dim = dim.unwrap_or(0);
        }
        Ok(g)
    }

    /// After [`Ivf::decode`]: every node's code from its vector (`vector_of`, of dimension
    /// `dim`), then the centroids.
    pub fn load_vectors<'a>(&mut self, dim: usize, vector_of: impl Fn(u32) -> &'a [f32]) {
        let mut code = vec![0i8; dim];
        self.load_with(dim, |n| {
            let v = vector_of(n);
            vector::quantize_i8(&v[..dim.min(v.len())], &mut code[..dim.min(v.len())]);
            code.clone()
        });
    }

    /// [`Ivf::load_vectors`] for entries stored as int8 codes.
    pub fn load_codes<'a>(&mut self, dim: usize, code_of: impl Fn(u32) -> &'a [i8]) {
        self.load_with(dim, |n| code_of(n).to_vec());
    }

    fn load_with(&mut self, dim: usize, mut code_of: impl FnMut(u32) -> Vec<i8>) {
        self.dim = dim;
        self.centroids = vec![0; self.lists.len() * dim];
        self.centroid_inv = vec![0.0; self.lists.len()];
        self.cbits = vec![0; self.lists.len() * words(dim)];
        for l in 0..self.lists.len() {
            let old = std::mem::take(&mut self.lists[l]);
            let nodes = old.nodes;
            let decoded_base = !old.base.is_empty();
            let mut list = List {
                base: old.base,
                base_inv: old.base_inv,
                ..List::default()
            };
            for &n in &nodes {
                let mut code = code_of(n);
                code.resize(dim, 0);
                list.push(n, &code, vector::code_inv_norm(&code));
            }
            if list.sum.is_empty() {
                list.sum = vec![0; dim];
            }
            if !decoded_base {
                list.rebase(dim); // a version-4 payload: the centroid
            }
            self.lists[l] = list;
            self.refresh_centroid(l);
        }
        if self.gbase.is_empty() && self.lists.len() > 1 {
            let mut total = vec![0i32; dim];
            for list in &self.lists {
                for (t, &x) in total.iter_mut().zip(&list.sum) {
                    *t += x;
                }
            }
            let mut base = vec![0i8; dim];
            code_of_sum(&total, &mut base);
            self.set_gbase(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semcache::hnsw::tests_support::{clustered, near, read_le, Rng};

    fn build(data: &[Vec<f32>]) -> Ivf {
        let mut g = Ivf::new();
        for (i, v) in data.iter().enumerate() {
            let node = g.insert_vector(i as u64 + 1, v);
            assert_eq!(node, i as u32);
        }
        g
    }

    fn exact_best(data: &[Vec<f32>], q: &[f32]) -> usize {
        (0..data.len())
            .max_by(|&a, &b| vector::dot(q, &data[a]).total_cmp(&vector::dot(q, &data[b])))
            .unwrap()
    }

    /// Recall@1 of the re-scored candidates against an exact scan.
    fn recall(
        g: &Ivf,
        data: &[Vec<f32>],
        queries: &[Vec<f32>],
        rerank: usize,
        nprobe: usize,
    ) -> f64 {
        let mut hits = 0;
        for q in queries {
            let found = g.search_all(q, 16, rerank, nprobe);
            let best = found
                .iter()
                .map(|&(n, _)| (vector::dot(q, &data[g.id_of(n) as usize - 1]), n))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if best.is_some_and(|b| g.id_of(b.1) as usize - 1 == exact_best(data, q)) {
                hits += 1;
            }
        }
        hits as f64 / queries.len() as f64
    }

    /// Every structural invariant: places, sums, centroids, list sizes.
    fn check(g: &Ivf) {
        let d = g.dim;
        let mut seen = 0;
        for (l, list) in g.lists.iter().enumerate() {
            assert!(!list.nodes.is_empty(), "list {l} is empty");
            assert!(
                list.nodes.len() <= g.list_cap().max(MIN_CAP) * 2,
                "list {l} too big"
            );
            let mut sum = vec![0i32; d];
            for (k, &n) in list.nodes.iter().enumerate() {
                assert_eq!(g.place[n as usize], (l as u32, k as u32));
                assert!(g.ids[n as usize] != 0);
                list.code(k, d)
                    .iter()
                    .zip(sum.iter_mut())
                    .for_each(|(&c, s)| *s += i32::from(c));
                seen += 1;
            }
            assert_eq!(list.sum, sum, "list {l} sum");
            let mut code = vec![0i8; d];
            assert_eq!(g.centroid_inv[l], code_of_sum(&sum, &mut code));
            assert_eq!(g.centroid(l), &code[..]);
            // The reach: exactly the widest member's angle from the reference.
            let widest = (0..list.nodes.len())
                .map(|k| score(list.code(k, d), &list.base, list.inv[k]))
                .map(|x| x * f64::from(list.base_inv))
                .zip(&list.inv)
                .map(|(cos, &inv)| angle_at_most(cos) + coding_bound(inv, d))
                .fold(0.0, f64::max);
            assert_eq!(list.reach, widest, "list {l} reach");
            // Sign bits: of each member against the list's reference, of the centroid
            // against the global one.
            let w = words(d);
            assert_eq!(list.bits.len(), list.nodes.len() * w);
            assert_eq!(list.base.len(), d);
            let mut bits = vec![0u64; w];
            for k in 0..list.nodes.len() {
                sign_bits(
                    list.code(k, d),
                    list.inv[k],
                    &list.base,
                    list.base_inv,
                    &mut bits,
                );
                assert_eq!(
                    &list.bits[k * w..(k + 1) * w],
                    &bits[..],
                    "list {l} member {k}"
                );
            }
            if !g.gbase.is_empty() {
                sign_bits(
                    g.centroid(l),
                    g.centroid_inv[l],
                    &g.gbase,
                    g.gbase_inv,
                    &mut bits,
                );
                assert_eq!(
                    &g.cbits[l * w..(l + 1) * w],
                    &bits[..],
                    "list {l} centroid bits"
                );
            }
        }
        assert_eq!(g.cbits.len(), g.lists.len() * words(d));
        assert_eq!(seen, g.len);
        assert_eq!(g.centroids.len(), g.lists.len() * d);
        for n in 0..g.slots() as u32 {
            assert_eq!(g.is_free(n), g.free.contains(&n));
        }
    }

    #[test]
    fn recall_on_clustered_data_and_lists_near_sqrt_n() {
        let mut rng = Rng::new(7);
        let data = clustered(20_000, 64, 200, &mut rng);
        let g = build(&data);
        check(&g);
        // ~sqrt(n) lists: 20,000 entries, lists split beyond max(256, sqrt(n)) members.
        assert!((40..=400).contains(&g.lists()), "{} lists", g.lists());
        let queries: Vec<Vec<f32>> = (0..200)
            .map(|i| near(&data[(i * 97) % data.len()], &mut rng, 0.05))
            .collect();
        let r1 = recall(&g, &data, &queries, 16, 1);
        let r4 = recall(&g, &data, &queries, 16, 4);
        // Members move to a closer list after each split (measured without: 0.91 / 0.965).
        assert!(r1 >= 0.97, "recall@1 {r1} at nprobe 1");
        assert!(r4 >= 0.98, "recall@1 {r4} at nprobe 4");
        assert!(r4 >= r1, "more lists probed cannot find less: {r1} -> {r4}");
        // Probing every list, every member scored by its int8 code, is an exact int8 scan.
        assert!(recall(&g, &data, &queries, data.len(), g.lists()) >= 0.99);
        // The sign bits alone pick the 16 members scored per list, and the 32 centroids
        // scored among the ~100: they must rank far better than chance.
        let short = recall(&g, &data, &queries, 16, 1);
        assert!(g.lists() > SHORTLIST && g.lists.iter().all(|l| l.nodes.len() > 16));
        assert!(short >= 0.97, "recall@1 {short} with 16 members re-ranked");
    }

    #[test]
    fn sign_bits_are_the_signs_of_the_difference() {
        let code: Vec<i8> = (0..70).map(|i| (i * 7 % 255 - 127) as i8).collect();
        let base: Vec<i8> = (0..70).map(|i| (i * 13 % 255 - 127) as i8).collect();
        let (ci, bi) = (vector::code_inv_norm(&code), vector::code_inv_norm(&base));
        let mut bits = vec![0u64; words(70)];
        sign_bits(&code, ci, &base, bi, &mut bits);
        for i in 0..70 {
            let want = f32::from(code[i]) * ci > f32::from(base[i]) * bi;
            assert_eq!(bits[i / 64] >> (i % 64) & 1 == 1, want, "dimension {i}");
        }
        assert_eq!(bits[1] >> 6, 0, "no bit past the dimension");
        let mut ham = Vec::new();
        vector::scan_hamming(&[0b1011, 0, 0b1, 0b11], 1, &[0b1], &mut ham);
        assert_eq!(ham, [2, 1, 0, 1]);
        // (positions chosen, the lowest distance after) for a `low` seen before.
        let (mut hist, mut sel) = (Vec::new(), Vec::new());
        let mut pick = |ham: &[u32], bounds, mut low: usize, margin| {
            nearest_by_hamming(ham, bounds, &mut low, margin, 64, &mut hist, &mut sel);
            (sel.clone(), low)
        };
        let none = usize::MAX;
        // The 2 nearest: the distance-0 row, then the first of the distance-1 rows.
        assert_eq!(pick(&ham, (2, 2), none, 0).0, [1, 2]);
        assert_eq!(pick(&ham, (9, 9), none, 0).0, [0, 1, 2, 3]);
        // As many as lie within the margin of the nearest, within the bounds.
        assert_eq!(pick(&ham, (1, 9), none, 1).0, [1, 2, 3]);
        assert_eq!(pick(&ham, (1, 2), none, 1).0, [1, 2]);
        assert_eq!(pick(&ham, (1, 9), none, 0).0, [2]);
        // Within the margin of a lower distance seen before (in another list): none here,
        // unless a minimum asks for some; a lower distance here lowers `low`.
        let far = [2, 1, 3];
        assert!(pick(&far, (0, 9), 0, 0).0.is_empty());
        assert_eq!(pick(&far, (1, 9), 0, 0).0, [1]);
        assert_eq!(pick(&far, (0, 9), 0, 1).0, [1]);
        assert_eq!(pick(&far, (0, 9), 2, 0), (vec![1], 1));
    }

    #[test]
    fn pooled_sign_bits_above_512_dimensions() {
        let pools: Vec<(usize, usize, usize)> = [1, 384, 512, 513, 1024, 1030, 1536, 3072]
            .iter()
            .map(|&d| (d, pool(d), signs(d)))
            .collect();
        assert_eq!(
            pools,
            [
                (1, 1, 1),
                (384, 1, 384),
                (512, 1, 512),
                (513, 2, 257),
                (1024, 2, 512),
                (1030, 4, 258),
                (1536, 4, 384),
                (3072, 8, 384)
            ]
        );
        // 1030 = 257 sums of 4 and one of 2: the bits are the signs of the scaled sums.
        let mut rng = Rng::new(5);
        let code: Vec<i8> = (0..1030)
            .map(|_| (rng.f32() * 254.0 - 127.0) as i8)
            .collect();
        let base: Vec<i8> = (0..1030)
            .map(|_| (rng.f32() * 254.0 - 127.0) as i8)
            .collect();
        let (ci, bi) = (vector::code_inv_norm(&code), vector::code_inv_norm(&base));
        let mut bits = vec![u64::MAX; words(1030)];
        sign_bits(&code, ci, &base, bi, &mut bits);
        let sum = |v: &[i8]| v.iter().map(|&x| i32::from(x)).sum::<i32>() as f32;
        for (k, (c, b)) in code.chunks(4).zip(base.chunks(4)).enumerate() {
            let want = sum(c) * ci > sum(b) * bi;
            assert_eq!(bits[k / 64] >> (k % 64) & 1 == 1, want, "sum {k}");
        }
        assert_eq!(bits[4] >> 2, 0, "no bit past the last sum");
        // An index of that dimension keeps its invariants through splits and removals and
        // still finds near-duplicates with 16 members scored per list.
        let data = clustered(2_000, 1030, 40, &mut rng);
        let mut g = build(&data);
        assert!(g.lists() > 4, "{} lists: splits happened", g.lists());
        check(&g);
        let queries: Vec<Vec<f32>> = (0..100)
            // Noise per dimension as the 64-dimension test's in total (cosine ~0.93).
            .map(|i| near(&data[(i * 37) % data.len()], &mut rng, 0.0125))
            .collect();
        let r = recall(&g, &data, &queries, 16, 2);
        assert!(r >= 0.97, "recall@1 {r}");
        for n in (0..2_000u32).step_by(3) {
            g.remove(n);
        }
        check(&g);
    }

    /// The lists [`Ivf::search`] skips for a [`Want`] never hold a better answer: for
    /// near-duplicate and fresh queries, float and int8 entries, thresholds, `k` and entries
    /// the caller rejects, the caller's answer (its re-scored `k` best accepted at `min_sim`
    /// or more) is never worse than without skipping, and lists are skipped.
    #[test]
    fn skipped_lists_never_hold_a_better_answer() {
        let mut rng = Rng::new(29);
        let all = clustered(20_200, 128, 100, &mut rng);
        let (data, fresh) = all.split_at(20_000);
        // Each query with its cluster (row i is of cluster i % 100).
        let mut queries: Vec<(Vec<f32>, usize)> = (0..200)
            .map(|i| (near(&data[i * 97], &mut rng, 0.05), i * 97 % 100))
            .collect();
        queries.extend(
            fresh
                .iter()
                .enumerate()
                .map(|(j, v)| (v.clone(), (20_000 + j) % 100)),
        );
        let floats = build(data);
        let codes: Vec<Vec<i8>> = data
            .iter()
            .map(|v| {
                let mut c = vec![0i8; v.len()];
                vector::quantize_i8(v, &mut c);
                c
            })
            .collect();
        let mut coded = Ivf::new();
        for (i, c) in codes.iter().enumerate() {
            coded.insert_code(i as u64 + 1, c);
        }
        check(&floats);
        check(&coded);
        assert!(floats.lists() > 40, "{} lists", floats.lists());
        let probed = || SCRATCH.with(|sc| sc.borrow().probed);
        // Entries the caller rejects: none, every 4th, or the query's whole cluster (then
        // the answer is in lists far from the query, and a rejected candidate must not be
        // taken as found: it would rule them out).
        #[derive(Clone, Copy, PartialEq)]
        enum Reject {
            No,
            Every4th,
            OwnCluster,
        }
        for (g, int8) in [(&floats, false), (&coded, true)] {
            let cluster = |node: u32| (g.id_of(node) as usize - 1) % 100;
            // As the bucket scores its rows: float rows, or int8 codes by `1 / |code|`.
            let score = |q: &[f32], node: u32| {
                let i = g.id_of(node) as usize - 1;
                if int8 {
                    vector::dot_f32_i8(q, &codes[i]) * vector::code_inv_norm(&codes[i])
                } else {
                    vector::dot(q, &data[i])
                }
            };
            // (k, min_sim, rejected entries, candidates kept, most lists scanned in percent)
            let cases = [
                (1, -1.0, Reject::No, 16, 40),
                (3, -1.0, Reject::Every4th, 16, 85),
                (1, 0.9, Reject::No, 16, 40),
                (5, 0.5, Reject::Every4th, 16, 90),
                (1, -1.0, Reject::OwnCluster, 512, 101),
            ];
            for (k, min_sim, reject, keep, most) in cases {
                let accepts = |node: u32, own: usize| match reject {
                    Reject::No => true,
                    Reject::Every4th => !node.is_multiple_of(4),
                    Reject::OwnCluster => cluster(node) != own,
                };
                let answer = |q: &[f32], own: usize, found: Vec<(u32, f32)>| {
                    let mut hits: Vec<(f32, u64)> = found
                        .into_iter()
                        .filter(|&(n, _)| accepts(n, own))
                        .map(|(n, _)| (score(q, n), g.id_of(n)))
                        .filter(|&(s, _)| s >= min_sim)
                        .collect();
                    hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    hits.truncate(k);
                    hits
                };
                let (mut all_probed, mut skip_probed, mut same) = (0, 0, 0);
                for (q, own) in &queries {
                    let own = *own;
                    let want = Want {
                        k,
                        min_sim,
                        answers: &|n| accepts(n, own),
                        only_answers: false,
                    };
                    let every = answer(q, own, g.search_all(q, keep, 64, 4));
                    all_probed += probed();
                    let skipping = answer(q, own, pairs(g.search(q, keep, 64, 4, &want)));
                    skip_probed += probed();
                    assert!(skipping.len() >= every.len(), "k {k} min {min_sim}");
                    assert!(reject != Reject::OwnCluster || !every.is_empty());
                    for (a, b) in every.iter().zip(&skipping) {
                        assert!(b.0 >= a.0, "k {k} min {min_sim}: {b:?} below {a:?}");
                    }
                    same += usize::from(every == skipping);
                }
                assert!(
                    same >= queries.len() * 99 / 100,
                    "k {k} min {min_sim}: {same} same"
                );
                assert_eq!(all_probed, 4 * queries.len());
                assert!(
                    skip_probed * 100 < all_probed * most,
                    "int8 {int8} k {k} min {min_sim}: {skip_probed} of {all_probed} lists scanned"
                );
            }
            // The bound itself: no member of any list is nearer the query than it says,
            // code to code, and row to query within the slack.
            for (q, _) in queries.iter().step_by(8) {
                let mut qc = vec![0i8; q.len()];
                vector::quantize_i8(q, &mut qc);
                let q_inv = vector::code_inv_norm(&qc);
                let slack = angle_to_code(q, &qc);
                for list in &g.lists {
                    let least = list.least_angle(&qc, q_inv);
                    for (j, &node) in list.nodes.iter().enumerate() {
                        let codes = super::score(list.code(j, g.dim), &qc, list.inv[j]);
                        let codes = codes * f64::from(q_inv);
                        assert!(codes.clamp(-1.0, 1.0).acos() >= least, "{codes} {least}");
                        let rows = f64::from(score(q, node)).clamp(-1.0, 1.0).acos();
                        assert!(rows >= least - slack, "{rows} {least} {slack}");
                    }
                }
            }
        }
    }

    /// A vector is never farther from its code than [`coding_bound`] says: Gaussian, one-hot
    /// (the widest steps), values half a step off the grid, 3 to 1536 dimensions.
    #[test]
    fn coding_bound_holds() {
        let mut rng = Rng::new(17);
        for dim in [3usize, 48, 384, 1536] {
            let mut cases: Vec<Vec<f32>> = (0..50)
                .map(|_| (0..dim).map(|_| rng.normal()).collect())
                .collect();
            let mut one_hot = vec![0.0f32; dim];
            one_hot[dim / 2] = 1.0;
            cases.push(one_hot);
            // Every element but the largest half a step from the code's grid.
            cases.push(
                (0..dim)
                    .map(|i| if i == 0 { 127.0 } else { 0.5 + (i % 7) as f32 })
                    .collect(),
            );
            for v in cases {
                let mut code = vec![0i8; dim];
                vector::quantize_i8(&v, &mut code);
                let inv = vector::code_inv_norm(&code);
                let norm = f64::from(vector::dot(&v, &v)).sqrt();
                let cos = f64::from(vector::dot_f32_i8(&v, &code)) * f64::from(inv) / norm;
                let angle = cos.clamp(-1.0, 1.0).acos();
                assert!(
                    angle <= coding_bound(inv, dim),
                    "dim {dim}: {angle} > {}",
                    coding_bound(inv, dim)
                );
                assert!(angle_to_code(&v, &code) >= angle);
            }
        }
        assert_eq!(coding_bound(0.0, 8), std::f64::consts::PI);
    }

    /// Where the bound is tight (points on an arc, the query beyond its end: the nearest
    /// member is the widest one), it is still never above the true least angle.
    #[test]
    fn least_angle_is_sound_where_it_is_tight() {
        let on_circle = |t: f32| vec![t.cos(), t.sin(), 0.0];
        let mut g = Ivf::new();
        for i in 0..200 {
            g.insert_vector(i + 1, &on_circle(i as f32 / 199.0));
        }
        check(&g);
        assert_eq!(g.lists(), 1);
        let list = &g.lists[0];
        for t in [1.2f32, 1.5, 2.0, 3.0, -0.5, 0.5] {
            let mut qc = vec![0i8; 3];
            vector::quantize_i8(&on_circle(t), &mut qc);
            let q_inv = vector::code_inv_norm(&qc);
            let nearest = (0..list.nodes.len())
                .map(|j| score(list.code(j, 3), &qc, list.inv[j]) * f64::from(q_inv))
                .fold(-1.0, f64::max)
                .clamp(-1.0, 1.0)
                .acos();
            let least = list.least_angle(&qc, q_inv);
            assert!(least <= nearest, "t {t}: {least} above {nearest}");
            if t > 1.0 {
                assert!(least > nearest - 0.03, "t {t}: {least} far below {nearest}");
            }
        }
    }

    #[test]
    fn removal_keeps_invariants_and_reuses_slots() {
        let mut rng = Rng::new(11);
        let data = clustered(3_000, 32, 30, &mut rng);
        let mut g = build(&data);
        for n in (0..3_000u32).filter(|n| n % 3 != 0) {
            g.remove(n);
        }
        check(&g);
        assert_eq!(g.len(), 1_000);
        // Removed nodes are never found; the rest still are.
        for (i, v) in data.iter().enumerate() {
            let found = g.search_all(v, 4, 64, g.lists());
            assert_eq!(
                found.first().map(|f| (f.0 as usize).is_multiple_of(3)),
                Some(true),
                "{i}"
            );
        }
        // Slots are reused smallest first.
        assert_eq!(g.insert_vector(99_999, &data[1]), 1);
        check(&g);
        // Down to nothing: every list dropped, then it works again.
        for n in 0..g.slots() as u32 {
            g.remove(n);
        }
        assert_eq!((g.len(), g.lists()), (0, 0));
        assert!(g.search_all(&data[0], 4, 64, 4).is_empty());
        g.insert_vector(5, &data[0]);
        check(&g);
        assert_eq!(g.search_all(&data[0], 4, 64, 1)[0].0, 0);
    }

    #[test]
    fn deterministic_and_identical_vectors_split() {
        let mut rng = Rng::new(3);
        let data = clustered(2_000, 48, 20, &mut rng);
        let mut a = build(&data);
        let mut b = build(&data);
        for n in (0..2_000u32).step_by(7) {
            a.remove(n);
            b.remove(n);
        }
        assert_eq!(a, b);
        // A list of identical vectors still splits (in halves) and stays searchable.
        let mut same = Ivf::new();
        for i in 0..500 {
            same.insert_vector(i + 1, &data[0]);
        }
        check(&same);
        assert!(same.lists() > 1);
        assert_eq!(same.search_all(&data[0], 500, 500, same.lists()).len(), 500);
    }

    #[test]
    fn persistence_roundtrip_and_hostile_payloads() {
        let mut rng = Rng::new(5);
        let data = clustered(3_000, 32, 30, &mut rng);
        let mut g = build(&data);
        for n in (0..3_000u32).step_by(5) {
            g.remove(n);
        }
        let mut bytes = Vec::new();
        g.encode(&mut bytes);
        let mut back = Ivf::decode(&mut Reader::new(&bytes), true).expect("decodes");
        let ids: Vec<u64> = back.ids.clone();
        back.load_vectors(32, |n| &data[ids[n as usize] as usize - 1][..]);
        assert_eq!(back, g);
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            let _ = Ivf::decode(&mut Reader::new(&bytes[..cut]), true);
        }
        let enc = |vals: &[u64]| {
            let mut out = Vec::new();
            vals.iter().for_each(|&v| put_varint(&mut out, v));
            out
        };
        for (vals, what) in [
            (vec![MAX_SLOTS + 1, 0], "slots"),
            (vec![2, 3], "lists"),
            (vec![2, 1, 0], "members"),
            (vec![2, 1, 1, 5, 1], "range"),
            (vec![2, 1, 1, 0, 0], "range"),
            (vec![2, 2, 1, 0, 7, 1, 0, 8], "twice"),
        ] {
            let e = Ivf::decode(&mut Reader::new(&enc(&vals)), false).expect_err(what);
            assert!(e.0.contains(what), "{what}: {}", e.0);
        }
        // The references: one length for all (the dimension, checked by the bucket).
        let one = enc(&[2, 2, 1, 0, 7, 1, 1, 8]);
        let with = |refs: &[&[u8]]| {
            let mut out = one.clone();
            refs.iter().for_each(|r| put_bytes(&mut out, r));
            out
        };
        for (refs, what) in [
            (
                &[&[][..], &[1, 2, 3], &[1, 2]][..],
                "list 1: a reference of 2",
            ),
            (&[&[][..], &[][..], &[][..]], "list 0: a reference of 0"),
            (&[&[1, 2][..], &[1, 2, 3], &[1, 2, 3]], "a reference of 2"),
            (&[&[][..], &[1, 2, 3]], "truncated"),
        ] {
            let e = Ivf::decode(&mut Reader::new(&with(refs)), true).expect_err(what);
            assert!(e.0.contains(what), "{what}: {}", e.0);
        }
        let ok = Ivf::decode(
            &mut Reader::new(&with(&[&[], &[1, 2, 3], &[3, 2, 1]])),
            true,
        );
        assert_eq!(ok.expect("decodes").declared_dim(), Some(3));
        // A version-4 index (no references) takes its centroids as references.
        let mut old = Vec::new();
        put_varint(&mut old, g.slots() as u64);
        put_varint(&mut old, g.lists.len() as u64);
        for list in &g.lists {
            put_varint(&mut old, list.nodes.len() as u64);
            for &n in &list.nodes {
                put_varint(&mut old, u64::from(n));
                put_varint(&mut old, g.ids[n as usize]);
            }
        }
        let mut v4 = Ivf::decode(&mut Reader::new(&old), false).expect("a version-4 index");
        assert_eq!(v4.declared_dim(), None);
        v4.load_vectors(32, |n| &data[ids[n as usize] as usize - 1][..]);
        check(&v4);
        assert_eq!(v4.lists[0].base, v4.centroid(0));
    }

    /// In-process speed and recall on the bench's data: `python benches/bench_semindex.py
    /// --shapes=100000x384 --quick --dump=/tmp/b100k`, then `HNSW_FILE=/tmp/b100k
    /// HNSW_DIM=384 cargo test --release --lib ivf_recall_file -- --ignored --nocapture`.
    /// `IVF_K=1` looks up as a caller wanting one answer (lists skipped), `IVF_MIN=0.9` with
    /// a threshold, `IVF_NOISE=0.03` moves the queries away from the entries (misses).
    #[test]
    #[ignore]
    fn ivf_recall_file() {
        use std::time::Instant;
        let env = |k: &str| std::env::var(k).ok();
        let base = env("HNSW_FILE").expect("HNSW_FILE");
        let dim: usize = env("HNSW_DIM").expect("HNSW_DIM").parse().unwrap();
        let data = read_le(&format!("{base}.data"), f32::from_le_bytes);
        let mut qs = read_le(&format!("{base}.q"), f32::from_le_bytes);
        if let Some(eps) = env("IVF_NOISE") {
            let mut rng = Rng::new(5);
            let eps: f32 = eps.parse().unwrap();
            for q in qs.chunks_mut(dim) {
                q.copy_from_slice(&near(q, &mut rng, eps));
            }
        }
        let truth = read_le(&format!("{base}.truth"), u32::from_le_bytes);
        let row = |i: usize| &data[i * dim..(i + 1) * dim];
        let n = data.len() / dim;
        let t = Instant::now();
        let mut g = Ivf::new();
        let mut slowest = std::time::Duration::ZERO;
        let mut over_ms = 0;
        for i in 0..n {
            let one = Instant::now();
            // As a bucket does: its rows are normalised again on the way in.
            g.insert_vector(
                i as u64 + 1,
                &vector::normalized(row(i)).expect("a unit row"),
            );
            let took = one.elapsed();
            slowest = slowest.max(took);
            over_ms += usize::from(took.as_millis() >= 1);
        }
        check(&g);
        // IVF_K=1: as a lookup for one answer (lists that cannot hold it are skipped).
        let k: usize = env("IVF_K")
            .filter(|k| !k.is_empty())
            .map_or(usize::MAX, |k| k.parse().unwrap());
        let want = Want {
            k,
            min_sim: env("IVF_MIN").map_or(-1.0, |m| m.parse().unwrap()),
            answers: &|_| true,
            only_answers: false,
        };
        let lookup =
            |q: &[f32], rr: usize, nprobe: usize| pairs(g.search(q, 16, rr, nprobe, &want));
        let sizes: Vec<usize> = g.lists.iter().map(|l| l.nodes.len()).collect();
        println!(
            "slowest insert {:.2} ms, {over_ms} of {n} took >= 1 ms (splits)",
            slowest.as_secs_f64() * 1e3
        );
        println!(
            "built {n} in {:.1} s: {} lists, members min {} max {}",
            t.elapsed().as_secs_f64(),
            g.lists(),
            sizes.iter().min().unwrap(),
            sizes.iter().max().unwrap()
        );
        {
            let t = Instant::now();
            let mut dots = Vec::new();
            let mut qc = vec![0i8; dim];
            for i in 0..truth.len() {
                vector::quantize_i8(&qs[i * dim..(i + 1) * dim], &mut qc);
                vector::scan_dots_i8(&g.centroids, dim, &qc, &mut dots);
            }
            println!(
                "centroid scan alone: {:.1} us",
                t.elapsed().as_secs_f64() * 1e6 / truth.len() as f64
            );
            for rr in env("IVF_RERANK").unwrap_or("64".into()).split(',') {
                let rr: usize = rr.parse().unwrap();
                for nprobe in [1usize, 2, 4] {
                    // Alternated rounds: skipping nothing, then as `IVF_K` wants.
                    let mut took = [0f64; 2];
                    for _ in 0..4 {
                        for (m, t) in took.iter_mut().enumerate() {
                            let start = Instant::now();
                            for i in 0..truth.len() {
                                let q = &qs[i * dim..(i + 1) * dim];
                                std::hint::black_box(if m == 0 {
                                    g.search_all(q, 16, rr, nprobe)
                                } else {
                                    lookup(q, rr, nprobe)
                                });
                            }
                            *t += start.elapsed().as_secs_f64() * 1e6 / truth.len() as f64 / 4.0;
                        }
                    }
                    let mut probed = 0;
                    for i in 0..truth.len() {
                        lookup(&qs[i * dim..(i + 1) * dim], rr, nprobe);
                        probed += SCRATCH.with(|sc| sc.borrow().probed);
                    }
                    println!(
                        "rerank {rr} search alone nprobe {nprobe}: {:.1} us, k {k}: {:.1} us, {:.2} lists",
                        took[0], took[1], probed as f64 / truth.len() as f64
                    );
                }
            }
        }
        let reranks: Vec<usize> = env("IVF_RERANK")
            .unwrap_or("64".into())
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        for &rr in &reranks {
            for nprobe in [1usize, 2, 4, 8] {
                let mut hits = 0;
                let t = Instant::now();
                for (i, &want) in truth.iter().enumerate() {
                    let q = &qs[i * dim..(i + 1) * dim];
                    let best = lookup(q, rr, nprobe)
                        .iter()
                        .map(|&(nd, _)| {
                            (vector::dot(q, row(g.id_of(nd) as usize - 1)), g.id_of(nd))
                        })
                        .max_by(|a, b| a.0.total_cmp(&b.0));
                    // (None: every list skipped, under IVF_MIN.)
                    hits += usize::from(best.is_some_and(|b| b.1 - 1 == u64::from(want)));
                }
                println!(
                    "rerank {rr} nprobe {nprobe}: {:.1} us/query, recall@1 {:.3}",
                    t.elapsed().as_secs_f64() * 1e6 / truth.len() as f64,
                    hits as f64 / truth.len() as f64
                );
            }
        }
    }

    /// Recall for queries that are not near-duplicates (fresh points of the clusters, best
    /// similarity ~0.77), IVF against the graph, 100,000 x 384, 1,000 clusters:
    /// `cargo test --release --lib ivf_fresh_queries -- --ignored --nocapture` (~2 min).
    #[test]
    #[ignore]
    fn ivf_fresh_queries() {
        use crate::semcache::hnsw::{Hnsw, Params};
        let mut rng = Rng::new(42);
        let n = 100_000;
        let all = clustered(n + 1000, 384, 1000, &mut rng);
        let (data, queries) = all.split_at(n);
        let g = build(data);
        let truth: Vec<usize> = queries.iter().map(|q| exact_best(data, q)).collect();
        let best = |found: Vec<(u32, f32)>, q: &[f32], id: &dyn Fn(u32) -> u64| {
            found
                .iter()
                .map(|&(node, _)| (vector::dot(q, &data[id(node) as usize - 1]), id(node)))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|x| x.1 as usize - 1)
        };
        let rate = |hits: usize| hits as f64 / queries.len() as f64;
        for rr in std::env::var("IVF_RERANK")
            .unwrap_or("16,64".into())
            .split(',')
        {
            let rr: usize = rr.parse().unwrap();
            for nprobe in [1, 2, 4, 8] {
                let hits = queries.iter().zip(&truth);
                let hits = hits
                    .filter(|(q, &t)| {
                        best(g.search_all(q, 16, rr, nprobe), q, &|n| g.id_of(n)) == Some(t)
                    })
                    .count();
                println!(
                    "rerank {rr} ivf nprobe {nprobe}: recall@1 {:.3}",
                    rate(hits)
                );
            }
        }
        if std::env::var("IVF_ONLY").is_ok() {
            return;
        }
        let mut h = Hnsw::new(Params::default());
        for (i, v) in data.iter().enumerate() {
            let node = h.alloc(i as u64 + 1, v);
            h.connect(node);
        }

        for ef in [16, 64] {
            let hits = queries.iter().zip(&truth);
            let hits = hits
                .filter(|(q, &t)| best(h.search(q, ef), q, &|n| h.id_of(n)) == Some(t))
                .count();
            println!("hnsw ef {ef}: recall@1 {:.3}", rate(hits));
        }
    }
}
