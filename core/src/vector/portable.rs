//! Portable kernels: chunked loops over fixed-size arrays that LLVM turns into
//! SIMD code for whatever the baseline target offers (SSE2 on x86_64, NEON on
//! aarch64). 16 independent lanes hide the latency of the vector adds.
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
