//! AVX2+FMA kernels. Only reachable through the `*_entry` wrappers, which are
//! installed in the dispatch table after the CPU features were detected.
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

pub(crate) fn sign_bits_entry(code: &[i8], inv: f32, base: &[i8], base_inv: f32, out: &mut [u64]) {
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

pub(crate) fn sign_bits_f32_entry(a: &[f32], inv: f32, b: &[f32], base_inv: f32, out: &mut [u64]) {
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
    let widen = |p: *const i8| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())));
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
        return super::portable::scan_hamming(block, words, query, out);
    }
    let lut = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
        3, 4,
    );
    let nibble = _mm256_set1_epi8(0x0f);
    let mut q = [_mm256_setzero_si256(); MAX_VECS];
    // SAFETY (all loads): k * 4 + 4 <= vecs * 4 <= words, the length of the query and of
    // a row.
    for (k, v) in q[..vecs].iter_mut().enumerate() {
        *v = _mm256_loadu_si256(query.as_ptr().add(k * 4).cast());
    }
    let tail = &query[vecs * 4..];
    let ahead = super::portable::hamming_ahead(words);
    for (r, row) in block.chunks_exact(words).enumerate() {
        if let Some(next) = block.get(r * words + ahead..r * words + ahead + words) {
            super::prefetch_lines(next, usize::MAX);
        }
        let p = row.as_ptr();
        let mut counts = _mm256_setzero_si256();
        for (k, qv) in q[..vecs].iter().enumerate() {
            let v = _mm256_xor_si256(_mm256_loadu_si256(p.add(k * 4).cast()), *qv);
            let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nibble));
            let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble));
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
