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
    let mut v: Vec<(&'static str, DotFn)> = vec![("fallback", portable::dot), ("dispatch", dot)];
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        v.push(("avx2", avx2::dot_entry));
    }
    v
}

fn scan_kernels() -> Vec<(&'static str, ScanFn)> {
    let mut v: Vec<(&'static str, ScanFn)> =
        vec![("fallback", portable::scan_dots), ("dispatch", scan_dots)];
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        v.push(("avx2", avx2::scan_entry));
    }
    v
}

fn sum_kernels() -> Vec<(&'static str, SumFn)> {
    let mut v: Vec<(&'static str, SumFn)> = vec![
        ("fallback", portable::sum),
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
        ("fallback", portable::scan_hamming),
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
        ("fallback", portable::scan_dots_i8),
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
                .map(|r| portable::dot_i8(r, &q))
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
        vec![("fallback", portable::dot_i8), ("dispatch", dot_i8)];
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
        vec![("fallback", portable::dot_f32_i8), ("dispatch", dot_f32_i8)];
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
        portable::scan_dots(black_box(&block), dim, black_box(&q), &mut out);
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
