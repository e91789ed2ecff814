//! The approximate nearest-neighbour index of a big bucket, of either algorithm: an HNSW
//! graph (`hnsw.rs`) or inverted lists (`ivf.rs`). Both number their nodes with stable
//! slots, take int8 codes, return candidates to re-score and persist without their codes;
//! this enum is the one interface the bucket uses.

use super::hnsw::{GraphError, Hnsw, Params};
use super::ivf::Ivf;
pub use super::ivf::{Candidate, Want};
use crate::wire::Reader;

/// The index algorithm of a bucket (`SEMCACHE.SET ... ALGO`), fixed by its first SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algo {
    /// HNSW graph: the best recall per similarity computed; slow inserts (~0.6 ms at 100k).
    #[default]
    Hnsw,
    /// Inverted lists: sequential scans, inserts of a few microseconds, no links in memory.
    Ivf,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Hnsw => "hnsw",
            Algo::Ivf => "ivf",
        }
    }

    pub fn parse(text: &[u8]) -> Option<Algo> {
        match text.to_ascii_lowercase().as_slice() {
            b"hnsw" => Some(Algo::Hnsw),
            b"ivf" => Some(Algo::Ivf),
            _ => None,
        }
    }

    /// The persisted code (codec header).
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Algo> {
        [Algo::Hnsw, Algo::Ivf].get(code as usize).copied()
    }
}

/// How a lookup explores the index: HNSW keeps `ef` candidates, IVF scans `nprobe` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    pub ef: usize,
    pub nprobe: usize,
}

/// Lists an IVF lookup scans by default (`semcache-index-nprobe`).
pub const DEFAULT_NPROBE: usize = 2;

impl Effort {
    /// `ef` candidates and the default number of lists.
    pub fn ef(ef: usize) -> Effort {
        Effort {
            ef,
            nprobe: DEFAULT_NPROBE,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnnIndex {
    Hnsw(Hnsw),
    Ivf(Ivf),
}

impl AnnIndex {
    pub fn new(algo: Algo) -> AnnIndex {
        match algo {
            Algo::Hnsw => AnnIndex::Hnsw(Hnsw::new(Params::default())),
            Algo::Ivf => AnnIndex::Ivf(Ivf::new()),
        }
    }

    pub fn algo(&self) -> Algo {
        match self {
            AnnIndex::Hnsw(_) => Algo::Hnsw,
            AnnIndex::Ivf(_) => Algo::Ivf,
        }
    }

    /// Adds an entry by its unit vector; returns its node.
    pub fn insert_vector(&mut self, id: u64, v: &[f32]) -> u32 {
        match self {
            AnnIndex::Hnsw(g) => {
                let node = g.alloc(id, v);
                g.connect(node);
                node
            }
            AnnIndex::Ivf(x) => x.insert_vector(id, v),
        }
    }

    /// Adds an entry by its int8 code and `1 / |code|`; returns its node.
    pub fn insert_code(&mut self, id: u64, code: &[i8], inv: f32) -> u32 {
        match self {
            AnnIndex::Hnsw(g) => {
                let node = g.alloc_code(id, code, inv);
                g.connect(node);
                node
            }
            AnnIndex::Ivf(x) => x.insert_code(id, code),
        }
    }

    pub fn remove(&mut self, node: u32) {
        match self {
            AnnIndex::Hnsw(g) => g.remove(node),
            AnnIndex::Ivf(x) => x.remove(node),
        }
    }

    /// The vector dimension a decoded index declares, if it declares one.
    pub fn declared_dim(&self) -> Option<usize> {
        match self {
            AnnIndex::Hnsw(_) => None,
            AnnIndex::Ivf(x) => x.declared_dim(),
        }
    }

    pub fn slots(&self) -> usize {
        match self {
            AnnIndex::Hnsw(g) => g.slots(),
            AnnIndex::Ivf(x) => x.slots(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            AnnIndex::Hnsw(g) => g.is_empty(),
            AnnIndex::Ivf(x) => x.is_empty(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            AnnIndex::Hnsw(g) => g.heap_bytes(),
            AnnIndex::Ivf(x) => x.heap_bytes(),
        }
    }

    /// Every node and its entry id.
    pub fn nodes(&self) -> Vec<(u32, u64)> {
        match self {
            AnnIndex::Hnsw(g) => g.nodes().collect(),
            AnnIndex::Ivf(x) => x.nodes().collect(),
        }
    }

    /// Candidates for the unit vector `q`, best first by approximate similarity, with the
    /// index's copy of their code where it keeps one (lists: always; a graph: never): about
    /// `effort.ef` of them from a graph, at most `keep` from lists (which keep nothing the
    /// caller will not look at, and skip a list none of whose members can be among the
    /// answers `want` describes; with `want.only_answers`, only entries it accepts).
    pub fn search(
        &self,
        q: &[f32],
        effort: Effort,
        keep: usize,
        want: &Want,
    ) -> Vec<Candidate<'_>> {
        match self {
            AnnIndex::Hnsw(g) => g
                .search(q, effort.ef)
                .into_iter()
                .map(|(node, sim)| Candidate {
                    node,
                    sim,
                    copy: None,
                })
                .collect(),
            AnnIndex::Ivf(x) => x.search(
                q,
                keep.min(effort.ef).max(1),
                effort.ef,
                effort.nprobe,
                want,
            ),
        }
    }

    /// After a decode: the codes from the entries' float rows.
    pub fn load_vectors<'a>(&mut self, dim: usize, vector_of: impl Fn(u32) -> &'a [f32]) {
        match self {
            AnnIndex::Hnsw(g) => g.load_vectors(dim, vector_of),
            AnnIndex::Ivf(x) => x.load_vectors(dim, vector_of),
        }
    }

    /// After a decode: the codes from the entries' int8 rows (`(code, 1 / |code|)`).
    pub fn load_codes<'a>(&mut self, dim: usize, code_of: impl Fn(u32) -> (&'a [i8], f32)) {
        match self {
            AnnIndex::Hnsw(g) => g.load_codes(dim, code_of),
            AnnIndex::Ivf(x) => x.load_codes(dim, |n| code_of(n).0),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AnnIndex::Hnsw(g) => g.encode(out),
            AnnIndex::Ivf(x) => x.encode(out),
        }
    }

    /// Reads an index of `algo` written by [`AnnIndex::encode`] (hostile input: an error,
    /// never a panic).
    /// `with_bases`: an IVF payload of codec version 5 or later (with its sign references).
    pub fn decode(algo: Algo, r: &mut Reader, with_bases: bool) -> Result<AnnIndex, GraphError> {
        Ok(match algo {
            Algo::Hnsw => AnnIndex::Hnsw(Hnsw::decode(r)?),
            Algo::Ivf => AnnIndex::Ivf(Ivf::decode(r, with_bases)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algo_names_and_codes_round_trip() {
        for a in [Algo::Hnsw, Algo::Ivf] {
            assert_eq!(Algo::parse(a.name().as_bytes()), Some(a));
            assert_eq!(Algo::parse(a.name().to_uppercase().as_bytes()), Some(a));
            assert_eq!(Algo::from_code(a.code()), Some(a));
            assert_eq!(AnnIndex::new(a).algo(), a);
        }
        assert_eq!(Algo::parse(b"flat"), None);
        assert_eq!(Algo::from_code(2), None);
    }
}
