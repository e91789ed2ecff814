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
        dot: fallback::dot,
        scan: fallback::scan_dots,
        sum: fallback::sum,
        dot_i8: fallback::dot_i8,
        dot_f32_i8: fallback::dot_f32_i8,
        scan_i8: fallback::scan_dots_i8,
        hamming: fallback::scan_hamming,
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

/// Portable kernels: chunked loops over fixed-size arrays that LLVM turns into
/// SIMD code for whatever the baseline target offers (SSE2 on x86_64, NEON on
/// aarch64). 16 independent lanes hide the latency of the vector adds.
pub(crate) mod fallback {
    const LANES: usize = 16;

    /// 32 lanes of i32: LLVM widens and multiplies them with the baseline SIMD.
    pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ca = a.chunks_exact(32);
        let cb = b.chunks_exact(32);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let mut acc = [0i32; 32];
        for (x, y) in ca.zip(cb) {
            for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
                *s += i32::from(p) * i32::from(q);
            }
        }
        let tail: i32 = ra
            .iter()
            .zip(rb)
            .map(|(&p, &q)| i32::from(p) * i32::from(q))
            .sum();
        acc.iter().sum::<i32>() + tail
    }

    pub(crate) fn scan_dots_i8(block: &[i8], dim: usize, query: &[i8], out: &mut Vec<i32>) {
        out.extend(block.chunks_exact(dim).map(|row| dot_i8(row, query)));
    }

    /// How far ahead (in words) a Hamming scan of `words`-word rows prefetches: ~1 KiB, at
    /// least 2 rows, fetched while a row is counted (the scan streams from memory).
    #[inline(always)]
    pub(crate) fn hamming_ahead(words: usize) -> usize {
        (1024 / (words * 8)).max(2) * words
    }

    /// Rows of `W` words: the query in registers, the row count known to the compiler.
    #[inline(always)]
    fn hamming_rows<const W: usize>(block: &[u64], query: &[u64], out: &mut Vec<u32>) {
        let ahead = hamming_ahead(W);
        let q: &[u64; W] = query.try_into().expect("W words");
        for (r, row) in block.chunks_exact(W).enumerate() {
            if let Some(next) = block.get(r * W + ahead..r * W + ahead + W) {
                super::prefetch_lines(next, usize::MAX);
            }
            let row: &[u64; W] = row.try_into().expect("W words");
            let mut s = 0;
            for k in 0..W {
                s += (row[k] ^ q[k]).count_ones();
            }
            out.push(s);
        }
    }

    #[inline(always)]
    pub(crate) fn scan_hamming(block: &[u64], words: usize, query: &[u64], out: &mut Vec<u32>) {
        match words {
            2 => hamming_rows::<2>(block, query, out),
            4 => hamming_rows::<4>(block, query, out),
            6 => hamming_rows::<6>(block, query, out),
            8 => hamming_rows::<8>(block, query, out),
            12 => hamming_rows::<12>(block, query, out),
            16 => hamming_rows::<16>(block, query, out),
            24 => hamming_rows::<24>(block, query, out),
            48 => hamming_rows::<48>(block, query, out),
            _ => out.extend(block.chunks_exact(words).map(|row| {
                row.iter()
                    .zip(query)
                    .map(|(&a, &b)| (a ^ b).count_ones())
                    .sum::<u32>()
            })),
        }
    }

    /// 16 float lanes: LLVM widens the int8 with the baseline SIMD.
    pub(crate) fn dot_f32_i8(a: &[f32], code: &[i8]) -> f32 {
        let n = a.len().min(code.len());
        let (a, code) = (&a[..n], &code[..n]);
        let ca = a.chunks_exact(LANES);
        let cb = code.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let mut acc = [0.0f32; LANES];
        for (x, y) in ca.zip(cb) {
            let x: &[f32; LANES] = x.try_into().unwrap();
            let y: &[i8; LANES] = y.try_into().unwrap();
            for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
                *s += p * f32::from(q);
            }
        }
        let mut s = reduce(&acc);
        for (&p, &q) in ra.iter().zip(rb) {
            s += p * f32::from(q);
        }
        s
    }

    #[inline]
    fn reduce(acc: &[f32; LANES]) -> f32 {
        // Pairwise reduction: better rounding than a running sum.
        let mut v = *acc;
        let mut w = LANES;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                v[i] += v[i + w];
            }
        }
        v[0]
    }

    #[inline]
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let mut acc = [0.0f32; LANES];
        for (x, y) in ca.zip(cb) {
            let x: &[f32; LANES] = x.try_into().unwrap();
            let y: &[f32; LANES] = y.try_into().unwrap();
            for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
                *s += p * q;
            }
        }
        let mut s = reduce(&acc);
        for (&p, &q) in ra.iter().zip(rb) {
            s += p * q;
        }
        s
    }

    pub(crate) fn scan_dots(block: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        out.extend(block.chunks_exact(dim).map(|row| dot(row, query)));
    }

    pub(crate) fn sum(block: &[f32]) -> f32 {
        let c = block.chunks_exact(LANES);
        let r = c.remainder();
        let mut acc = [0.0f32; LANES];
        for x in c {
            let x: &[f32; LANES] = x.try_into().unwrap();
            for (s, &p) in acc.iter_mut().zip(x) {
                *s += p;
            }
        }
        let mut s = reduce(&acc);
        for &p in r {
            s += p;
        }
        s
    }
}

/// AVX2+FMA kernels. Only reachable through the `*_entry` wrappers, which are
/// installed in the dispatch table after the CPU features were detected.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Safe entry points: only ever called after `avx2` and `fma` were
    /// detected (see `detect`), or from tests that check it themselves.
    pub(crate) fn dot_entry(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only when avx2+fma are available.
        unsafe { dot(a, b) }
    }

    pub(crate) fn scan_entry(block: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        // SAFETY: as above.
        unsafe { scan_dots(block, dim, query, out) }
    }

    pub(crate) fn sum_entry(block: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { sum(block) }
    }

    pub(crate) fn dot_i8_entry(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { dot_i8(a, b) }
    }

    pub(crate) fn scan_i8_entry(block: &[i8], dim: usize, query: &[i8], out: &mut Vec<i32>) {
        // SAFETY: as above.
        unsafe { scan_dots_i8(block, dim, query, out) }
    }

    pub(crate) fn dot_f32_i8_entry(a: &[f32], code: &[i8]) -> f32 {
        // SAFETY: as above.
        unsafe { dot_f32_i8(a, code) }
    }

    pub(crate) fn quantize_entry(v: &[f32], code: &mut [i8]) -> f32 {
        // SAFETY: installed only when avx2+fma are available.
        unsafe { quantize(v, code) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize(v: &[f32], code: &mut [i8]) -> f32 {
        super::quantize_body(v, code)
    }

    pub(crate) fn sign_bits_entry(
        code: &[i8],
        inv: f32,
        base: &[i8],
        base_inv: f32,
        out: &mut [u64],
    ) {
        // SAFETY: installed only when avx2+fma are available.
        unsafe { sign_bits(code, inv, base, base_inv, out) }
    }

    pub(crate) fn group_sums_entry(v: &[i8], g: usize, out: &mut [f32]) -> usize {
        // SAFETY: installed only when avx2+fma are available.
        unsafe { group_sums(v, g, out) }
    }

    /// Groups of 2 and 4: 32 bytes at a time, pairs summed by `vpmaddubsw` (times 1), pairs
    /// of pairs by `vpmaddwd`, in order; other sizes and the tail: the portable body.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_sums(v: &[i8], g: usize, out: &mut [f32]) -> usize {
        if g != 2 && g != 4 {
            return super::group_sums_body(v, g, out);
        }
        let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        let per = 32 / g;
        let (mut i, mut o) = (0usize, 0usize);
        while i + 32 <= v.len() && o + per <= out.len() {
            // SAFETY: i + 32 <= v.len() bytes; o + per <= out.len() floats.
            let x = _mm256_loadu_si256(v.as_ptr().add(i).cast());
            let pairs = _mm256_maddubs_epi16(ones8, x);
            let p = out.as_mut_ptr().add(o);
            if g == 2 {
                let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(pairs));
                let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(pairs));
                _mm256_storeu_ps(p, _mm256_cvtepi32_ps(lo));
                _mm256_storeu_ps(p.add(8), _mm256_cvtepi32_ps(hi));
            } else {
                let quads = _mm256_madd_epi16(pairs, ones16);
                _mm256_storeu_ps(p, _mm256_cvtepi32_ps(quads));
            }
            i += 32;
            o += per;
        }
        o + super::group_sums_body(&v[i..], g, &mut out[o..])
    }

    pub(crate) fn sign_bits_f32_entry(
        a: &[f32],
        inv: f32,
        b: &[f32],
        base_inv: f32,
        out: &mut [u64],
    ) {
        // SAFETY: installed only when avx2+fma are available.
        unsafe { sign_bits_f32(a, inv, b, base_inv, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn sign_bits_f32(a: &[f32], inv: f32, b: &[f32], base_inv: f32, out: &mut [u64]) {
        sign_bits_of(a, inv, b, base_inv, out, |p: *const f32| _mm256_loadu_ps(p))
    }

    /// 8 elements at a time: widened to float, multiplied (no fused operation: the same
    /// products as the portable body), compared, and the 8 signs taken by `vmovmskps`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sign_bits(code: &[i8], inv: f32, base: &[i8], base_inv: f32, out: &mut [u64]) {
        let widen =
            |p: *const i8| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())));
        sign_bits_of(code, inv, base, base_inv, out, widen)
    }

    /// The sign-bit loop of both kernels; `load` reads 8 elements as floats.
    #[inline(always)]
    unsafe fn sign_bits_of<T: Copy + Into<f32>>(
        a: &[T],
        inv: f32,
        b: &[T],
        base_inv: f32,
        out: &mut [u64],
        load: impl Fn(*const T) -> __m256,
    ) {
        let (vi, vb) = (_mm256_set1_ps(inv), _mm256_set1_ps(base_inv));
        for (w, (ca, cb)) in out.iter_mut().zip(a.chunks(64).zip(b.chunks(64))) {
            let n = ca.len().min(cb.len());
            let mut x = 0u64;
            let mut k = 0;
            while k + 8 <= n {
                // SAFETY: k + 8 <= n elements are in both chunks.
                let (av, bv) = (load(ca.as_ptr().add(k)), load(cb.as_ptr().add(k)));
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(av, vi), _mm256_mul_ps(bv, vb));
                x |= u64::from(_mm256_movemask_ps(gt) as u8) << k;
                k += 8;
            }
            for j in k..n {
                x |= u64::from(ca[j].into() * inv > cb[j].into() * base_inv) << j;
            }
            *w = x;
        }
    }

    pub(crate) fn hamming_entry(block: &[u64], words: usize, query: &[u64], out: &mut Vec<u32>) {
        // SAFETY: installed only when popcnt is available (with avx2+fma).
        unsafe { hamming(block, words, query, out) }
    }

    /// Rows of 8 words or more (512+ dimensions): 4 words at a time counted by nibble
    /// lookups (`vpshufb`) and summed by `vpsadbw`, the query in registers (up to 32 words);
    /// narrower rows: the portable loop compiled with the `popcnt` instruction.
    #[target_feature(enable = "avx2,fma,popcnt")]
    unsafe fn hamming(block: &[u64], words: usize, query: &[u64], out: &mut Vec<u32>) {
        const MAX_VECS: usize = 8;
        let vecs = words / 4;
        if !(2..=MAX_VECS).contains(&vecs) {
            return super::fallback::scan_hamming(block, words, query, out);
        }
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
            3, 3, 4,
        );
        let nibble = _mm256_set1_epi8(0x0f);
        let mut q = [_mm256_setzero_si256(); MAX_VECS];
        // SAFETY (all loads): k * 4 + 4 <= vecs * 4 <= words, the length of the query and of
        // a row.
        for (k, v) in q[..vecs].iter_mut().enumerate() {
            *v = _mm256_loadu_si256(query.as_ptr().add(k * 4).cast());
        }
        let tail = &query[vecs * 4..];
        let ahead = super::fallback::hamming_ahead(words);
        for (r, row) in block.chunks_exact(words).enumerate() {
            if let Some(next) = block.get(r * words + ahead..r * words + ahead + words) {
                super::prefetch_lines(next, usize::MAX);
            }
            let p = row.as_ptr();
            let mut counts = _mm256_setzero_si256();
            for (k, qv) in q[..vecs].iter().enumerate() {
                let v = _mm256_xor_si256(_mm256_loadu_si256(p.add(k * 4).cast()), *qv);
                let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nibble));
                let hi =
                    _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble));
                // Each byte counts at most 8 per step: 8 steps stay below 256.
                counts = _mm256_add_epi8(counts, _mm256_add_epi8(lo, hi));
            }
            let sums = _mm256_sad_epu8(counts, _mm256_setzero_si256());
            let s = _mm_add_epi64(
                _mm256_castsi256_si128(sums),
                _mm256_extracti128_si256::<1>(sums),
            );
            let mut total = (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as u32;
            for (a, b) in row[vecs * 4..].iter().zip(tail) {
                total += (a ^ b).count_ones();
            }
            out.push(total);
        }
    }

    /// Widens 8 int8 at a time to float and multiply-adds them, two accumulators.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32_i8(a: &[f32], code: &[i8]) -> f32 {
        let n = a.len().min(code.len());
        let (pa, pc) = (a.as_ptr(), code.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0usize;
        // SAFETY (all loads): i + 16 <= n (or i + 8 <= n) elements are in both slices.
        while i + 16 <= n {
            let c = _mm_loadu_si128(pc.add(i).cast());
            let c0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
            let c1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(c)));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), c0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), c1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let c = _mm_loadl_epi64(pc.add(i).cast());
            let c0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), c0, acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * f32::from(*pc.add(i));
            i += 1;
        }
        s
    }

    /// Each row against the query widened to int16 once (on the stack for up to 4096
    /// dimensions): one sign extension per 16 codes instead of two.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scan_dots_i8(block: &[i8], dim: usize, query: &[i8], out: &mut Vec<i32>) {
        const MAX_WIDE: usize = 256;
        let full = (dim / 16).min(MAX_WIDE);
        let mut wide = [_mm256_setzero_si256(); MAX_WIDE];
        // SAFETY (all loads): k * 16 + 16 <= full * 16 <= dim bytes of the query and of a row.
        for (k, w) in wide[..full].iter_mut().enumerate() {
            *w = _mm256_cvtepi8_epi16(_mm_loadu_si128(query.as_ptr().add(k * 16).cast()));
        }
        // Rows 4 ahead are fetched while this one is scored: ~10% faster on a list that is
        // not in cache (the hardware prefetcher alone trails the scan).
        const AHEAD: usize = 4;
        for (r, row) in block.chunks_exact(dim).enumerate() {
            let p = row.as_ptr();
            if (r + AHEAD + 1) * dim <= block.len() {
                // SAFETY: a prefetch never faults; the row is inside `block`.
                let f = block.as_ptr().add((r + AHEAD) * dim);
                let mut off = 0;
                while off < dim {
                    _mm_prefetch::<_MM_HINT_T0>(f.add(off));
                    off += 64;
                }
            }
            let mut acc0 = _mm256_setzero_si256();
            let mut acc1 = _mm256_setzero_si256();
            let mut k = 0;
            while k + 2 <= full {
                let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(k * 16).cast()));
                let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(k * 16 + 16).cast()));
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, wide[k]));
                acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, wide[k + 1]));
                k += 2;
            }
            if k < full {
                let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(k * 16).cast()));
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, wide[k]));
            }
            let acc = _mm256_add_epi32(acc0, acc1);
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let mut total = _mm_cvtsi128_si32(s);
            for i in full * 16..dim {
                total += i32::from(row[i]) * i32::from(query[i]);
            }
            out.push(total);
        }
    }

    /// Sign-extends 16 int8 at a time to int16 and multiply-adds pairs into int32.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0usize;
        // SAFETY (all loads): i + 32 <= n (or i + 16 <= n) bytes are in both slices.
        while i + 32 <= n {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i).cast()));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i).cast()));
            let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16).cast()));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16).cast()));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
            i += 32;
        }
        if i + 16 <= n {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i).cast()));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i).cast()));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            i += 16;
        }
        let acc = _mm256_add_epi32(acc0, acc1);
        let lo = _mm256_castsi256_si128(acc);
        let hi = _mm256_extracti128_si256::<1>(acc);
        let s = _mm_add_epi32(lo, hi);
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let mut total = _mm_cvtsi128_si32(s);
        while i < n {
            total += i32::from(*pa.add(i)) * i32::from(*pb.add(i));
            i += 1;
        }
        total
    }

    #[cfg(test)]
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("popcnt")
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Dot product with four 8-wide FMA accumulators (32 floats per
    /// iteration), an 8-wide loop and a scalar tail.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0usize;
        // SAFETY (all loads): every index read is < n <= len of both slices.
        while i + 32 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            acc2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                acc2,
            );
            acc3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                acc3,
            );
            i += 32;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
        let mut s = hsum(acc);
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// Four rows against the query at once: each query load feeds four FMAs
    /// and the eight accumulators are independent dependency chains.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot4(rows: &[f32], dim: usize, query: &[f32]) -> [f32; 4] {
        debug_assert!(rows.len() >= 4 * dim && query.len() >= dim);
        let q = query.as_ptr();
        let r0 = rows.as_ptr();
        let r1 = r0.add(dim);
        let r2 = r1.add(dim);
        let r3 = r2.add(dim);
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut b0 = _mm256_setzero_ps();
        let mut b1 = _mm256_setzero_ps();
        let mut c0 = _mm256_setzero_ps();
        let mut c1 = _mm256_setzero_ps();
        let mut d0 = _mm256_setzero_ps();
        let mut d1 = _mm256_setzero_ps();
        let mut i = 0usize;
        // SAFETY (all loads): i + 16 <= dim, rows holds 4 * dim floats.
        // The prefetches (of the next four rows, possibly past the end of the
        // block) never fault; wrapping_add keeps the pointer maths defined.
        while i + 16 <= dim {
            _mm_prefetch::<_MM_HINT_T0>(r0.wrapping_add(i + 4 * dim) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(r1.wrapping_add(i + 4 * dim) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(r2.wrapping_add(i + 4 * dim) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(r3.wrapping_add(i + 4 * dim) as *const i8);
            let q0 = _mm256_loadu_ps(q.add(i));
            let q1 = _mm256_loadu_ps(q.add(i + 8));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(i)), q0, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(i + 8)), q1, a1);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(i)), q0, b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(i + 8)), q1, b1);
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(i)), q0, c0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(i + 8)), q1, c1);
            d0 = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(i)), q0, d0);
            d1 = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(i + 8)), q1, d1);
            i += 16;
        }
        if i + 8 <= dim {
            let q0 = _mm256_loadu_ps(q.add(i));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(i)), q0, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(i)), q0, b0);
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(i)), q0, c0);
            d0 = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(i)), q0, d0);
            i += 8;
        }
        let mut s = [
            hsum(_mm256_add_ps(a0, a1)),
            hsum(_mm256_add_ps(b0, b1)),
            hsum(_mm256_add_ps(c0, c1)),
            hsum(_mm256_add_ps(d0, d1)),
        ];
        while i < dim {
            let qi = *q.add(i);
            s[0] += *r0.add(i) * qi;
            s[1] += *r1.add(i) * qi;
            s[2] += *r2.add(i) * qi;
            s[3] += *r3.add(i) * qi;
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn scan_dots(block: &[f32], dim: usize, query: &[f32], out: &mut Vec<f32>) {
        let quads = block.chunks_exact(4 * dim);
        let rest = quads.remainder();
        for rows in quads {
            out.extend_from_slice(&dot4(rows, dim, query));
        }
        for row in rest.chunks_exact(dim) {
            out.push(dot(row, query));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn sum(block: &[f32]) -> f32 {
        let n = block.len();
        let p = block.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0usize;
        while i + 32 <= n {
            acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(p.add(i)));
            acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(p.add(i + 8)));
            acc2 = _mm256_add_ps(acc2, _mm256_loadu_ps(p.add(i + 16)));
            acc3 = _mm256_add_ps(acc3, _mm256_loadu_ps(p.add(i + 24)));
            i += 32;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
        let mut s = hsum(acc);
        while i < n {
            s += *p.add(i);
            i += 1;
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// xorshift64* — deterministic test data without a dependency.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [-1, 1).
        pub(crate) fn f32(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f32()).collect()
        }
    }

    const DIMS: [usize; 12] = [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 384, 1536];

    fn dot64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    fn abs_dot64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
            .sum()
    }

    /// All dot kernels available on this machine, by name.
    fn dot_kernels() -> Vec<(&'static str, DotFn)> {
        let mut v: Vec<(&'static str, DotFn)> =
            vec![("fallback", fallback::dot), ("dispatch", dot)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            v.push(("avx2", avx2::dot_entry));
        }
        v
    }

    fn scan_kernels() -> Vec<(&'static str, ScanFn)> {
        let mut v: Vec<(&'static str, ScanFn)> =
            vec![("fallback", fallback::scan_dots), ("dispatch", scan_dots)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            v.push(("avx2", avx2::scan_entry));
        }
        v
    }

    fn sum_kernels() -> Vec<(&'static str, SumFn)> {
        let mut v: Vec<(&'static str, SumFn)> = vec![
            ("fallback", fallback::sum),
            ("dispatch", memory_read_baseline),
        ];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            v.push(("avx2", avx2::sum_entry));
        }
        v
    }

    #[test]
    fn dot_normalised_matches_f64_within_1e5() {
        let mut rng = Rng::new(1);
        for (name, k) in dot_kernels() {
            for &d in &DIMS {
                for _ in 0..50 {
                    let a = normalized(&rng.vec(d)).unwrap();
                    let b = normalized(&rng.vec(d)).unwrap();
                    let got = f64::from(k(&a, &b));
                    let want = dot64(&a, &b);
                    assert!(
                        (got - want).abs() <= 1e-5,
                        "{name} dim {d}: {got} vs {want}"
                    );
                    // Self-similarity of a normalised vector is 1 within 1e-6.
                    let s = k(&a, &a);
                    assert!((s - 1.0).abs() <= 1e-6, "{name} dim {d}: self dot {s}");
                }
            }
        }
    }

    #[test]
    fn dot_raw_matches_f64_relative() {
        // Un-normalised data: error is relative to the sum of |a_i b_i|.
        let mut rng = Rng::new(2);
        for (name, k) in dot_kernels() {
            for &d in &DIMS {
                for _ in 0..20 {
                    let a: Vec<f32> = rng.vec(d).iter().map(|x| x * 100.0).collect();
                    let b = rng.vec(d);
                    let got = f64::from(k(&a, &b));
                    let want = dot64(&a, &b);
                    let scale = abs_dot64(&a, &b).max(1.0);
                    assert!(
                        (got - want).abs() <= 1e-5 * scale,
                        "{name} dim {d}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn scan_matches_f64() {
        let mut rng = Rng::new(3);
        for (name, k) in scan_kernels() {
            for &d in &DIMS {
                for &n in &[0usize, 1, 2, 5, 33] {
                    let mut block = Vec::with_capacity(n * d);
                    for _ in 0..n {
                        block.extend(normalized(&rng.vec(d)).unwrap());
                    }
                    let q = normalized(&rng.vec(d)).unwrap();
                    let mut out = vec![42.0; 3];
                    out.clear(); // the raw kernels append, scan_dots clears
                    k(&block, d, &q, &mut out);
                    assert_eq!(out.len(), n, "{name}");
                    for (r, &got) in out.iter().enumerate() {
                        let want = dot64(&block[r * d..(r + 1) * d], &q);
                        assert!(
                            (f64::from(got) - want).abs() <= 1e-5,
                            "{name} dim {d} row {r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sum_matches_f64() {
        let mut rng = Rng::new(4);
        for (name, k) in sum_kernels() {
            for &n in &[0usize, 1, 7, 31, 32, 33, 1000, 100_003] {
                let v = rng.vec(n);
                let want: f64 = v.iter().map(|&x| f64::from(x)).sum();
                let scale: f64 = v.iter().map(|&x| f64::from(x).abs()).sum::<f64>().max(1.0);
                let got = f64::from(k(&v));
                assert!(
                    (got - want).abs() <= 1e-5 * scale,
                    "{name} n {n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn quantize_kernels_give_the_same_codes() {
        let mut rng = Rng::new(12);
        let mut kernels: Vec<(&str, QuantizeFn)> = vec![("dispatch", quantize_i8)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::quantize_entry));
        }
        for d in [1usize, 7, 8, 31, 384, 1537] {
            for round in 0..20 {
                let mut v = rng.vec(d);
                if round == 1 {
                    // Values landing exactly halfway after scaling: the largest is 127, so the
                    // scale is 1 and every other value is k + 0.5.
                    v.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = (i % 254) as f32 - 126.5);
                    v[0] = 127.0;
                }
                let mut want = vec![0i8; d];
                let scale = quantize_body(&v, &mut want);
                for (name, k) in &kernels {
                    let mut got = vec![1i8; d];
                    assert_eq!(k(&v, &mut got), scale, "{name} dim {d}");
                    assert_eq!(got, want, "{name} dim {d}");
                }
                let inv = 127.0 / v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let rounded: Vec<i8> = v.iter().map(|&x| (x * inv).round() as i8).collect();
                assert_eq!(want, rounded, "dim {d}: f32::round of the scaled values");
            }
        }
    }

    #[test]
    fn round_half_away_is_round() {
        let mut rng = Rng::new(11);
        let mut ys: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            126.5,
            -126.5,
            127.0,
            -127.49,
            0.49999997,
            -0.49999997,
            1.4999999,
            -1.4999999,
            0.50000006,
            1e-30,
            -1e-30,
        ];
        ys.extend((0..100_000).map(|_| (rng.f32() - 0.5) * 300.0));
        ys.extend((0..1000).map(|i| i as f32 * 0.5 - 250.0));
        for y in ys {
            assert_eq!(round_half_away(y), y.round() as i32, "{y:e}");
        }
        // Outside the range: clamped, never an undefined conversion.
        assert_eq!(round_half_away(f32::NAN), -1_000_000_000);
        assert_eq!(round_half_away(f32::INFINITY), 1_000_000_000);
        assert_eq!(round_half_away(-3e9), -1_000_000_000);
    }

    #[test]
    fn sign_bits_kernels_give_the_same_bits() {
        let mut rng = Rng::new(13);
        let mut kernels: Vec<(&str, SignBitsFn)> = vec![("dispatch", sign_bits_i8)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::sign_bits_entry));
        }
        let mut f32_kernels: Vec<(&str, SignBitsF32Fn)> = vec![
            ("f32 portable", sign_bits_body::<f32>),
            ("f32 dispatch", sign_bits_f32),
        ];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            f32_kernels.push(("f32 avx2", avx2::sign_bits_f32_entry));
        }
        for d in [1usize, 7, 8, 9, 63, 64, 65, 100, 384, 1537] {
            for round in 0..10 {
                let code: Vec<i8> = (0..d).map(|_| (rng.next_u64() % 255) as i8).collect();
                let mut base: Vec<i8> = (0..d).map(|_| (rng.next_u64() % 255) as i8).collect();
                if round == 0 {
                    // Equal products are not positive.
                    base.copy_from_slice(&code);
                }
                let inv = rng.f32() + 0.01;
                let inv_b = if round == 0 { inv } else { rng.f32() };
                let words = d.div_ceil(64);
                let mut want = vec![0u64; words];
                for (i, (&c, &b)) in code.iter().zip(&base).enumerate() {
                    let pos = f64::from(f32::from(c) * inv) > f64::from(f32::from(b) * inv_b);
                    want[i / 64] |= u64::from(pos) << (i % 64);
                }
                let mut body = vec![u64::MAX; words];
                sign_bits_body(&code, inv, &base, inv_b, &mut body);
                assert_eq!(body, want, "portable body, dim {d}");
                // The float version on the widened codes gives the same bits.
                let (cf, bf): (Vec<f32>, Vec<f32>) = code
                    .iter()
                    .zip(&base)
                    .map(|(&c, &b)| (f32::from(c), f32::from(b)))
                    .unzip();
                for (name, k) in &f32_kernels {
                    let mut got = vec![u64::MAX; words + 1];
                    k(&cf, inv, &bf, inv_b, &mut got);
                    assert_eq!(got[..words], want[..], "{name} dim {d}");
                    assert_eq!(
                        got[words],
                        u64::MAX,
                        "{name} dim {d}: a word past the input"
                    );
                }
                for (name, k) in &kernels {
                    let mut got = vec![u64::MAX; words + 1];
                    k(&code, inv, &base, inv_b, &mut got);
                    assert_eq!(got[..words], want[..], "{name} dim {d}");
                    assert_eq!(got[words], u64::MAX, "{name} dim {d}: a word past the code");
                }
            }
        }
    }

    #[test]
    fn group_sums_kernels_match_the_portable_sums() {
        let mut rng = Rng::new(17);
        let mut kernels: Vec<(&str, GroupSumsFn)> = vec![("dispatch", group_sums_i8)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::group_sums_entry));
        }
        for len in [0usize, 1, 3, 31, 32, 33, 64, 100, 1030, 1536] {
            // The extremes too: 4 x -128 and 4 x 127.
            let mut v: Vec<i8> = (0..len)
                .map(|_| (rng.f32() * 255.0 - 128.0) as i8)
                .collect();
            v.iter_mut().take(4).for_each(|x| *x = -128);
            v.iter_mut().skip(4).take(4).for_each(|x| *x = 127);
            for g in [1usize, 2, 3, 4, 8] {
                let want: Vec<f32> = v
                    .chunks(g)
                    .map(|c| c.iter().map(|&y| f64::from(y)).sum::<f64>() as f32)
                    .collect();
                for (name, k) in &kernels {
                    let mut out = vec![f32::NAN; want.len() + 1];
                    assert_eq!(k(&v, g, &mut out), want.len(), "{name} len {len} g {g}");
                    assert_eq!(out[..want.len()], want[..], "{name} len {len} g {g}");
                    assert!(out[want.len()].is_nan(), "{name}: wrote past the sums");
                }
            }
        }
    }

    #[test]
    fn hamming_kernels_count_differing_bits() {
        let mut rng = Rng::new(9);
        let mut kernels: Vec<(&str, HammingFn)> = vec![
            ("fallback", fallback::scan_hamming),
            ("dispatch", scan_hamming),
        ];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("popcnt", avx2::hamming_entry));
        }
        for (name, k) in kernels {
            // The specialised widths, the vector kernel's (8 to 35 words) and its edges; 40
            // rows: past the prefetch distance.
            for &w in &[
                1usize, 2, 3, 6, 7, 8, 9, 12, 13, 24, 31, 32, 33, 35, 36, 48, 50,
            ] {
                let q: Vec<u64> = (0..w).map(|_| rng.next_u64()).collect();
                let block: Vec<u64> = (0..w * 40).map(|_| rng.next_u64()).collect();
                let mut out = Vec::new();
                k(&block, w, &q, &mut out);
                let want: Vec<u32> = block
                    .chunks_exact(w)
                    .map(|r| {
                        let mut n = 0;
                        for (a, b) in r.iter().zip(&q) {
                            for bit in 0..64 {
                                n += u32::from((a >> bit & 1) != (b >> bit & 1));
                            }
                        }
                        n
                    })
                    .collect();
                assert_eq!(out, want, "{name} {w} words");
            }
        }
    }

    #[test]
    fn scan_dots_i8_kernels_match_dot_i8() {
        let mut rng = Rng::new(8);
        let mut kernels: Vec<(&str, ScanI8Fn)> = vec![
            ("fallback", fallback::scan_dots_i8),
            ("dispatch", scan_dots_i8),
        ];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::scan_i8_entry));
        }
        for (name, k) in kernels {
            // 4112: past the widened query's 4096 dimensions (the rest goes scalar).
            for &d in &[1usize, 15, 16, 17, 31, 32, 33, 48, 384, 1536, 1537, 4112] {
                let code = |rng: &mut Rng| (rng.next_u64() % 256) as u8 as i8;
                let q: Vec<i8> = (0..d).map(|_| code(&mut rng)).collect();
                let block: Vec<i8> = (0..d * 5).map(|_| code(&mut rng)).collect();
                let mut out = Vec::new();
                k(&block, d, &q, &mut out);
                let want: Vec<i32> = block
                    .chunks_exact(d)
                    .map(|r| fallback::dot_i8(r, &q))
                    .collect();
                assert_eq!(out, want, "{name} dim {d}");
            }
        }
        let mut out = vec![1];
        scan_dots_i8(&[], 3, &[1, 2, 3], &mut out);
        assert!(out.is_empty(), "cleared, no rows");
    }

    #[test]
    fn dot_i8_kernels_are_exact() {
        let mut rng = Rng::new(6);
        let mut kernels: Vec<(&str, DotI8Fn)> =
            vec![("fallback", fallback::dot_i8), ("dispatch", dot_i8)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::dot_i8_entry));
        }
        for (name, k) in kernels {
            for &d in &[0usize, 1, 15, 16, 17, 31, 32, 33, 384, 1536, 1537] {
                let a: Vec<i8> = (0..d)
                    .map(|_| (rng.next_u64() % 255) as i16 as i8)
                    .collect();
                let b: Vec<i8> = (0..d)
                    .map(|_| (rng.next_u64() % 255) as i16 as i8)
                    .collect();
                let want: i32 = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                assert_eq!(k(&a, &b), want, "{name} dim {d}");
            }
            let ext = vec![-128i8; 1536];
            assert_eq!(k(&ext, &ext), 1536 * 128 * 128, "{name} extremes");
        }
        // Quantization: a unit vector's code dot stays within 1% of the float dot.
        for &d in &[8usize, 384, 1536] {
            let a = normalized(&rng.vec(d)).unwrap();
            let b = normalized(&rng.vec(d)).unwrap();
            let (mut ca, mut cb) = (vec![0i8; d], vec![0i8; d]);
            let (sa, sb) = (quantize_i8(&a, &mut ca), quantize_i8(&b, &mut cb));
            let approx = dot_i8(&ca, &cb) as f32 * sa * sb;
            assert!((approx - dot(&a, &b)).abs() < 0.01, "dim {d}");
            assert!((dot_i8(&ca, &ca) as f32 * sa * sa - 1.0).abs() < 0.01);
        }
        let mut z = vec![1i8; 3];
        assert_eq!(code_inv_norm(&z), 1.0 / 3f32.sqrt());
        assert_eq!(quantize_i8(&[0.0, 0.0, 0.0], &mut z), 0.0);
        assert_eq!(code_inv_norm(&z), 0.0);
        assert_eq!(z, vec![0, 0, 0]);
    }

    #[test]
    fn dot_f32_i8_kernels_match_f64() {
        let mut rng = Rng::new(7);
        let mut kernels: Vec<(&str, DotF32I8Fn)> =
            vec![("fallback", fallback::dot_f32_i8), ("dispatch", dot_f32_i8)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            kernels.push(("avx2", avx2::dot_f32_i8_entry));
        }
        for (name, k) in kernels {
            for &d in &[0usize, 1, 7, 8, 15, 16, 17, 31, 33, 384, 1536, 1537] {
                let a = rng.vec(d);
                let c: Vec<i8> = (0..d)
                    .map(|_| (rng.next_u64() % 255) as i16 as i8)
                    .collect();
                let want: f64 = a
                    .iter()
                    .zip(&c)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum();
                let scale: f64 = a
                    .iter()
                    .zip(&c)
                    .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
                    .sum::<f64>()
                    .max(1.0);
                let got = f64::from(k(&a, &c));
                assert!(
                    (got - want).abs() <= 1e-5 * scale,
                    "{name} dim {d}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn cosine_unnormalised() {
        let mut rng = Rng::new(5);
        for &d in &DIMS {
            let a: Vec<f32> = rng.vec(d).iter().map(|x| x * 7.0).collect();
            let b: Vec<f32> = rng.vec(d).iter().map(|x| x * 0.01).collect();
            let want = dot64(&a, &b) / (dot64(&a, &a).sqrt() * dot64(&b, &b).sqrt());
            let got = f64::from(cosine(&a, &b));
            assert!((got - want).abs() <= 1e-5, "dim {d}: {got} vs {want}");
            assert!((cosine(&a, &a) - 1.0).abs() <= 1e-6);
        }
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[3.0, 4.0], &[-6.0, -8.0]), -1.0);
    }

    #[test]
    fn parse_roundtrip_and_errors() {
        let v = vec![1.0f32, -2.5, 0.0, 3.25e-3];
        let blob = to_fp32_blob(&v);
        assert_eq!(blob.len(), 16);
        // Explicit little-endian layout: 1.0f32 = 0x3F800000.
        assert_eq!(&blob[..4], &[0x00, 0x00, 0x80, 0x3F]);
        assert_eq!(parse_fp32_blob(&blob).unwrap(), v);

        assert_eq!(parse_fp32_blob(&[]), Err(VectorError::Empty));
        assert_eq!(parse_fp32_blob(&[0u8; 10]), Err(VectorError::BadLength(10)));
        assert_eq!(
            VectorError::BadLength(10).to_string(),
            "vector length 10 is not a multiple of 4 bytes"
        );
        let mut bad = to_fp32_blob(&[1.0, 2.0, 3.0, f32::NAN]);
        assert_eq!(parse_fp32_blob(&bad), Err(VectorError::NonFinite(3)));
        assert_eq!(
            VectorError::NonFinite(3).to_string(),
            "vector holds NaN or Inf at index 3"
        );
        bad = to_fp32_blob(&[f32::NEG_INFINITY]);
        assert_eq!(parse_fp32_blob(&bad), Err(VectorError::NonFinite(0)));
        bad = to_fp32_blob(&[0.0, f32::INFINITY]);
        assert_eq!(parse_fp32_blob(&bad), Err(VectorError::NonFinite(1)));
        assert_eq!(VectorError::Empty.to_string(), "vector is empty");
    }

    #[test]
    fn normalized_query_is_normalized_within_an_ulp() {
        let mut rng = Rng::new(21);
        for d in [1usize, 3, 8, 9, 384, 1537] {
            let v = rng.vec(d);
            let (a, b) = (normalized(&v).unwrap(), normalized_query(&v).unwrap());
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= x.abs() * 2.0 * f32::EPSILON,
                    "dim {d}: {x} {y}"
                );
            }
        }
        assert_eq!(normalized_query(&[]), Err(VectorError::Empty));
        assert_eq!(normalized_query(&[0.0; 9]), Err(VectorError::ZeroNorm));
        assert_eq!(normalized_query(&[1e-45; 3]), Err(VectorError::TinyNorm));
        let mut v = vec![1.0f32; 17];
        v[11] = f32::NAN;
        assert_eq!(normalized_query(&v), Err(VectorError::NonFinite(11)));
        v[11] = f32::MAX;
        v[12] = f32::MAX;
        assert_eq!(normalized_query(&v), normalized(&v));
    }

    #[test]
    fn normalized_errors_and_values() {
        assert_eq!(normalized(&[0.0, 0.0, 0.0]), Err(VectorError::ZeroNorm));
        assert_eq!(normalized(&[0.0, -0.0]), Err(VectorError::ZeroNorm));
        // All-denormal vector: norm below f32::MIN_POSITIVE.
        assert_eq!(normalized(&[1e-40, -1e-40]), Err(VectorError::TinyNorm));
        assert_eq!(VectorError::ZeroNorm.to_string(), "vector has zero norm");
        assert_eq!(
            VectorError::TinyNorm.to_string(),
            "vector norm is below 1.1754943508222875e-38 (denormal elements) and cannot be normalised"
        );
        assert_eq!(normalized(&[]), Err(VectorError::Empty));
        assert_eq!(normalized(&[1.0, f32::NAN]), Err(VectorError::NonFinite(1)));
        assert_eq!(normalized(&[3.0, 4.0]).unwrap(), vec![0.6, 0.8]);
        // Huge values do not overflow (norm accumulated in f64).
        let n = normalized(&[3e37, 4e37]).unwrap();
        assert!((n[0] - 0.6).abs() < 1e-7 && (n[1] - 0.8).abs() < 1e-7);
        // Tiny but normal values are fine.
        let n = normalized(&[1e-30, 0.0]).unwrap();
        assert_eq!(n, vec![1.0, 0.0]);
    }

    fn gbps(bytes: usize, secs: f64) -> f64 {
        bytes as f64 / secs / 1e9
    }

    fn bench_one(n: usize, dim: usize, iters: usize) -> (f64, f64, f64) {
        use std::hint::black_box;
        use std::time::Instant;
        let mut rng = Rng::new(n as u64);
        let block: Vec<f32> = (0..n * dim).map(|_| rng.f32()).collect();
        let q = normalized(&rng.vec(dim)).unwrap();
        let bytes = block.len() * 4;
        let mut out = Vec::with_capacity(n);
        let (mut best_scan, mut best_read, mut best_port) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..iters {
            let t = Instant::now();
            out.clear();
            fallback::scan_dots(black_box(&block), dim, black_box(&q), &mut out);
            black_box(&out);
            best_port = best_port.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            scan_dots(black_box(&block), dim, black_box(&q), &mut out);
            black_box(&out);
            best_scan = best_scan.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            black_box(memory_read_baseline(black_box(&block)));
            best_read = best_read.min(t.elapsed().as_secs_f64());
        }
        (
            gbps(bytes, best_scan),
            gbps(bytes, best_read),
            gbps(bytes, best_port),
        )
    }

    /// `cargo test --release -- --ignored --nocapture scan_bandwidth`
    #[test]
    #[ignore]
    fn scan_bandwidth() {
        println!("kernel: {}", simd_level());
        for &(n, dim, iters) in &[(10_000usize, 384usize, 50usize), (100_000, 1536, 8)] {
            let (scan, read, port) = bench_one(n, dim, iters);
            println!(
                "{n} x {dim} ({:.1} MB): scan_dots {scan:.2} GB/s, read baseline {read:.2} GB/s, \
                 ratio {:.3} (portable scan {port:.2} GB/s)",
                (n * dim * 4) as f64 / 1e6,
                scan / read
            );
        }
    }
}
