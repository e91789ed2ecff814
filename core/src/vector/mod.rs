//! Vector math for the semantic cache: parsing of FP32 blobs, normalisation,
//! dot products and the bucket scan, with runtime SIMD dispatch.
//!
//! On x86_64 the AVX2+FMA kernels are chosen at run time (detected once and
//! cached in a `OnceLock`), so the module is compiled for the baseline target
//! and still loads and runs on CPUs without AVX2. Everywhere else (and on old
//! x86_64 CPUs) a portable, auto-vectorisable kernel with 16 independent
//! accumulators is used.
//!
//! Float summation order differs between kernels, so results may differ in
//! the last bits; all kernels stay within ~1e-6 of a float64 reference for
//! normalised inputs of the dimensions used by embedding models.

use std::fmt;
use std::sync::OnceLock;

/// Errors from parsing or normalising a vector. `Display` gives the message
/// meant for the user (the caller prefixes it with `ERR `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorError {
    /// The blob (or vector) holds no element.
    Empty,
    /// The blob length in bytes is not a multiple of 4.
    BadLength(usize),
    /// The element at this index is NaN or +/-Inf.
    NonFinite(usize),
    /// Every element is zero.
    ZeroNorm,
    /// The norm is not zero but below [`MIN_NORM`] (denormal elements): no direction to keep.
    TinyNorm,
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Empty => write!(f, "vector is empty"),
            VectorError::BadLength(len) => {
                write!(f, "vector length {len} is not a multiple of 4 bytes")
            }
            VectorError::NonFinite(i) => write!(f, "vector holds NaN or Inf at index {i}"),
            VectorError::ZeroNorm => write!(f, "vector has zero norm"),
            VectorError::TinyNorm => write!(
                f,
                "vector norm is below {MIN_NORM:e} (denormal elements) and cannot be normalised"
            ),
        }
    }
}

impl std::error::Error for VectorError {}

/// Parses a blob of little-endian IEEE-754 float32 values (what
/// `numpy.float32(...).tobytes()` gives on every common platform).
///
/// Errors: empty blob, length not a multiple of 4, NaN or Inf (reporting the
/// index of the first such element).
pub fn parse_fp32_blob(bytes: &[u8]) -> Result<Vec<f32>, VectorError> {
    if bytes.is_empty() {
        return Err(VectorError::Empty);
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(VectorError::BadLength(bytes.len()));
    }
    let out: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_finite(&out)?;
    Ok(out)
}

/// NaN or Inf: the error names the first. One pass without an early exit (the compiler
/// vectorises it), then the position.
fn check_finite(v: &[f32]) -> Result<(), VectorError> {
    if !v.iter().fold(true, |ok, x| ok & x.is_finite()) {
        let i = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
        return Err(VectorError::NonFinite(i));
    }
    Ok(())
}

/// Serialises a vector as little-endian float32 bytes (inverse of
/// [`parse_fp32_blob`]).
pub fn to_fp32_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Smallest norm accepted by [`normalized`]: below it (zero, or all-denormal
/// vectors) the direction is meaningless and dividing would overflow or lose
/// all precision.
pub const MIN_NORM: f64 = f32::MIN_POSITIVE as f64;

/// Returns `v / |v|`. The norm is accumulated in float64, so the result has
/// unit norm to float32 precision.
///
/// Errors: empty vector, NaN/Inf element, zero or denormal-tiny norm.
pub fn normalized(v: &[f32]) -> Result<Vec<f32>, VectorError> {
    if v.is_empty() {
        return Err(VectorError::Empty);
    }
    let mut ss = 0.0f64;
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() {
            return Err(VectorError::NonFinite(i));
        }
        ss += f64::from(x) * f64::from(x);
    }
    divided_by_norm(v, ss)
}

/// `v / sqrt(ss)`, `ss` its sum of squares; the norm errors of [`normalized`].
fn divided_by_norm(v: &[f32], ss: f64) -> Result<Vec<f32>, VectorError> {
    let norm = ss.sqrt();
    if norm == 0.0 {
        return Err(VectorError::ZeroNorm);
    }
    // A NaN norm is not finite either.
    if !norm.is_finite() || norm < MIN_NORM {
        return Err(VectorError::TinyNorm);
    }
    let inv = 1.0 / norm;
    Ok(v.iter().map(|&x| (f64::from(x) * inv) as f32).collect())
}

/// [`normalized`] for a query, which is compared, never stored: the norm is summed in 8
/// independent float64 lanes (the compiler vectorises them) instead of one serial chain
/// (~4 cycles an element: ~2.5 µs at 1536 dimensions), so its last bits may differ from
/// [`normalized`]'s. Same errors.
pub fn normalized_query(v: &[f32]) -> Result<Vec<f32>, VectorError> {
    if v.is_empty() {
        return Err(VectorError::Empty);
    }
    check_finite(v)?;
    let mut lanes = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x) * f64::from(x);
        }
    }
    divided_by_norm(v, lanes.iter().sum::<f64>() + tail)
}

type DotFn = fn(&[f32], &[f32]) -> f32;
type ScanFn = fn(&[f32], usize, &[f32], &mut Vec<f32>);
type SumFn = fn(&[f32]) -> f32;
type DotI8Fn = fn(&[i8], &[i8]) -> i32;
type DotF32I8Fn = fn(&[f32], &[i8]) -> f32;
type ScanI8Fn = fn(&[i8], usize, &[i8], &mut Vec<i32>);
type HammingFn = fn(&[u64], usize, &[u64], &mut Vec<u32>);
type QuantizeFn = fn(&[f32], &mut [i8]) -> f32;
type SignBitsFn = fn(&[i8], f32, &[i8], f32, &mut [u64]);
type SignBitsF32Fn = fn(&[f32], f32, &[f32], f32, &mut [u64]);
type GroupSumsFn = fn(&[i8], usize, &mut [f32]) -> usize;

struct Kernels {
    name: &'static str,
    dot: DotFn,
    scan: ScanFn,
    sum: SumFn,
    dot_i8: DotI8Fn,
    dot_f32_i8: DotF32I8Fn,
    scan_i8: ScanI8Fn,
    hamming: HammingFn,
    quantize: QuantizeFn,
    sign_bits: SignBitsFn,
    sign_bits_f32: SignBitsF32Fn,
    group_sums: GroupSumsFn,
}

static KERNELS: OnceLock<Kernels> = OnceLock::new();

fn detect() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            return Kernels {
                name: "avx2+fma",
                dot: avx2::dot_entry,
                scan: avx2::scan_entry,
                sum: avx2::sum_entry,
                dot_i8: avx2::dot_i8_entry,
                dot_f32_i8: avx2::dot_f32_i8_entry,
                scan_i8: avx2::scan_i8_entry,
                hamming: avx2::hamming_entry,
                quantize: avx2::quantize_entry,
                sign_bits: avx2::sign_bits_entry,
                sign_bits_f32: avx2::sign_bits_f32_entry,
                group_sums: avx2::group_sums_entry,
            };
        }
    }
    Kernels {
        name: "portable",
        dot: portable::dot,
        scan: portable::scan_dots,
        sum: portable::sum,
        dot_i8: portable::dot_i8,
        dot_f32_i8: portable::dot_f32_i8,
        scan_i8: portable::scan_dots_i8,
        hamming: portable::scan_hamming,
        quantize: quantize_body,
        sign_bits: sign_bits_body::<i8>,
        sign_bits_f32: sign_bits_body::<f32>,
        group_sums: group_sums_body,
    }
}

#[inline]
fn kernels() -> &'static Kernels {
    KERNELS.get_or_init(detect)
}

/// Name of the kernel set chosen at run time: `"avx2+fma"` or `"portable"`
/// (for INFO / diagnostics).
pub fn simd_level() -> &'static str {
    kernels().name
}

/// Dot product of `a` and `b`.
///
/// The slices must have the same length; if they do not (a caller bug) only
/// the common prefix is used, and debug builds panic.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    (kernels().dot)(a, b)
}

/// Cosine similarity of two vectors that need not be normalised, clamped to
/// [-1, 1]. Returns 0.0 when either vector has a zero (or non-finite) norm.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let k = kernels();
    let ab = f64::from((k.dot)(a, b));
    let aa = f64::from((k.dot)(a, a));
    let bb = f64::from((k.dot)(b, b));
    let denom = (aa * bb).sqrt();
    if !denom.is_finite() || denom <= 0.0 {
        return 0.0;
    }
    ((ab / denom) as f32).clamp(-1.0, 1.0)
}

/// Computes, in one pass, the dot product of `query` with every row of
/// `block`, a contiguous row-major `n x dim` matrix, and stores the `n`
/// results in `out` (cleared first; its allocation is reused).
///
/// Panics if `query.len() != dim` or `block.len()` is not a multiple of `dim`
/// (both are bucket invariants). `dim == 0` yields no result.
pub fn scan_dots(block: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
    out.clear();
    if dim == 0 {
        return;
    }
    assert_eq!(query.len(), dim, "scan_dots: query length differs from dim");
    assert_eq!(block.len() % dim, 0, "scan_dots: block is not n x dim");
    out.reserve(block.len() / dim);
    (kernels().scan)(block, dim, query, out)
}

/// Dot product of two int8 vectors (exact, in i32: |sum| <= dim * 127^2 fits for any
/// dim below 133,000). Only the common prefix is used if the lengths differ.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len(), "dot_i8 of vectors of different lengths");
    (kernels().dot_i8)(a, b)
}

/// [`dot_i8`] of `query` with each row of `block` (a contiguous `n x dim` int8 matrix), into
/// `out` (cleared first). One dispatch for all rows, the query widened once: a list scan
/// costs about half of `n` calls to [`dot_i8`].
///
/// Panics if `query.len() != dim` or `block.len()` is not a multiple of `dim`.
pub fn scan_dots_i8(block: &[i8], dim: usize, query: &[i8], out: &mut Vec<i32>) {
    out.clear();
    if dim == 0 {
        return;
    }
    assert_eq!(
        query.len(),
        dim,
        "scan_dots_i8: query length differs from dim"
    );
    assert_eq!(block.len() % dim, 0, "scan_dots_i8: block is not n x dim");
    out.reserve(block.len() / dim);
    (kernels().scan_i8)(block, dim, query, out)
}

/// Hamming distance of `query` (`words` 64-bit words of bits) to each row of `block` (a
/// contiguous `n x words` matrix), into `out` (cleared first).
///
/// Panics if `query.len() != words` or `block.len()` is not a multiple of `words`.
pub fn scan_hamming(block: &[u64], words: usize, query: &[u64], out: &mut Vec<u32>) {
    out.clear();
    if words == 0 {
        return;
    }
    assert_eq!(query.len(), words, "scan_hamming: query length differs");
    assert_eq!(
        block.len() % words,
        0,
        "scan_hamming: block is not n x words"
    );
    out.reserve(block.len() / words);
    (kernels().hamming)(block, words, query, out)
}

/// Prefetches up to `lines` cache lines of `v` (no-op off x86_64). Few at a time: a core
/// tracks only ~10 outstanding misses, and a prefetch beyond that stalls.
#[inline]
pub fn prefetch_lines<T>(v: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(v).min(lines.saturating_mul(64));
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults; the address is inside `v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, lines);
}

/// Int8 code of a vector: `v[i] ~= code[i] * scale`, `scale = max |v[i]| / 127` (written to
/// `code`, which must be as long as `v`). Returns the scale (0 for an all-zero vector).
pub fn quantize_i8(v: &[f32], code: &mut [i8]) -> f32 {
    (kernels().quantize)(v, code)
}

/// [`quantize_i8`]'s body, inlined into each kernel: the AVX2 one is the same operations
/// compiled for wider registers (no operation is reordered or fused: the same codes).
#[inline(always)]
fn quantize_body(v: &[f32], code: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        code.iter_mut().for_each(|c| *c = 0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (c, &x) in code.iter_mut().zip(v) {
        *c = round_half_away(x * inv).clamp(-127, 127) as i8;
    }
    max / 127.0
}

/// Sign bits of `code * inv - base * base_inv`, 64 per word (bit `k` of word `w` for
/// element `64 w + k`; set where positive). Float32 products of exact values are correctly
/// rounded: the same bits on every CPU and from every kernel. Words past the shorter of
/// `code` and `base` are left as they are.
pub fn sign_bits_i8(code: &[i8], inv: f32, base: &[i8], base_inv: f32, out: &mut [u64]) {
    (kernels().sign_bits)(code, inv, base, base_inv, out)
}

/// The portable sign bits, of int8 codes or of floats (exact conversions to float32).
fn sign_bits_body<T: Copy + Into<f32>>(a: &[T], inv: f32, b: &[T], base_inv: f32, out: &mut [u64]) {
    for (w, (ca, cb)) in out.iter_mut().zip(a.chunks(64).zip(b.chunks(64))) {
        let mut x = 0u64;
        for (k, (&p, &q)) in ca.iter().zip(cb).enumerate() {
            x |= u64::from(p.into() * inv > q.into() * base_inv) << k;
        }
        *w = x;
    }
}

/// [`sign_bits_i8`] of float vectors: bit set where `a * inv > b * base_inv`.
pub fn sign_bits_f32(a: &[f32], inv: f32, b: &[f32], base_inv: f32, out: &mut [u64]) {
    (kernels().sign_bits_f32)(a, inv, b, base_inv, out)
}

/// The sums of each `g` consecutive values of `v` (the last group may be shorter) into
/// `out`, as exact floats; returns how many (`v.len().div_ceil(g)`, at most `out.len()`).
pub fn group_sums_i8(v: &[i8], g: usize, out: &mut [f32]) -> usize {
    (kernels().group_sums)(v, g.max(1), out)
}

fn group_sums_body(v: &[i8], g: usize, out: &mut [f32]) -> usize {
    let mut n = 0;
    for (x, c) in out.iter_mut().zip(v.chunks(g.max(1))) {
        *x = c.iter().map(|&y| i32::from(y)).sum::<i32>() as f32;
        n += 1;
    }
    n
}

/// `y.round()` for `|y| <= 1e9` (exactly: the fraction `y - trunc(y)` is exact), without
/// the libm call `round` is on the x86_64 baseline: a loop of it vectorises. `y` is first
/// clamped to `[-1e9, 1e9]` (NaN to `-1e9`), so the truncation needs no saturating cast
/// (which the compiler emits one element at a time).
#[inline(always)]
fn round_half_away(y: f32) -> i32 {
    const LIMIT: f32 = 1e9;
    // Not `clamp`: it keeps NaN, which the unchecked conversion must not see.
    #[allow(clippy::manual_clamp)]
    let y = y.max(-LIMIT).min(LIMIT);
    // SAFETY: `y` is finite and within i32 (max/min return the non-NaN operand).
    let t: i32 = unsafe { y.to_int_unchecked() };
    let f = y - t as f32;
    t + i32::from(f >= 0.5) - i32::from(f <= -0.5)
}

/// Dot product of a float vector and an int8 code (the code widened to float; summation in
/// float32 like [`dot`]). Only the common prefix is used if the lengths differ.
#[inline]
pub fn dot_f32_i8(a: &[f32], code: &[i8]) -> f32 {
    debug_assert_eq!(
        a.len(),
        code.len(),
        "dot_f32_i8 of vectors of different lengths"
    );
    (kernels().dot_f32_i8)(a, code)
}

/// `1 / |code|` (computed in float64), or 0 for an all-zero code: `code * inv_norm` is the
/// unit vector an int8 row stands for.
pub fn code_inv_norm(code: &[i8]) -> f32 {
    let ss: i64 = code.iter().map(|&c| i64::from(c) * i64::from(c)).sum();
    if ss == 0 {
        0.0
    } else {
        (1.0 / (ss as f64).sqrt()) as f32
    }
}

/// Plain read of every float of `block` (their sum), with the same SIMD level
/// as [`scan_dots`]: the memory-bandwidth baseline for benchmarks.
pub fn memory_read_baseline(block: &[f32]) -> f32 {
    (kernels().sum)(block)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
/// Portable kernels (SSE2/NEON through LLVM) and the AVX2+FMA kernels, one file each.
pub(crate) mod portable;

#[cfg(test)]
pub(crate) mod tests;
