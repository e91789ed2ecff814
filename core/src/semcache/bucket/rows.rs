//! Row kinds (f32 rows, int8 codes), what an entry carries, lookup hits and the errors of a bucket.

use super::*;

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
pub(super) const MIN_GROW_ROWS: usize = 16;

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
