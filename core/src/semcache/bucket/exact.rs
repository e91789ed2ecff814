//! Exact search: every live row scored (f32 rows, or int8 codes then an exact re-score).

use super::*;

/// The chunked rows a search reads (a bucket's or a snapshot's).
pub(super) struct Rows<'a> {
    pub(super) chunks: &'a [Arc<Chunk>],
    pub(super) chunk_rows: usize,
    pub(super) dim: usize,
    pub(super) quant: Quant,
}

/// The search shared by [`Bucket::search`] and [`BucketSnapshot::search`]:
/// one scan per chunk.
pub(super) fn search_rows(
    rows: Rows<'_>,
    query: &[f32],
    min_sim: f32,
    k: usize,
    now_ms: i64,
    filter: &[Pair],
) -> Vec<Hit> {
    let Rows {
        chunks,
        chunk_rows,
        dim,
        quant,
    } = rows;
    if k == 0 || chunks.is_empty() || dim == 0 || query.len() != dim {
        return Vec::new();
    }
    if quant == Quant::Int8 {
        return search_codes(rows, query, min_sim, k, now_ms, filter);
    }
    let threshold = min_sim - SCORE_EPSILON;
    let mut scores = Vec::with_capacity(chunks[0].len());
    let mut hits: Vec<Hit> = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        vector::scan_dots(&chunk.rows, dim, query, &mut scores);
        let base = c * chunk_rows;
        hits.extend(scores.iter().enumerate().filter_map(|(o, &s)| {
            let score = s.clamp(-1.0, 1.0);
            if score.is_nan() || score < threshold || is_expired(chunk.expire_at_ms[o], now_ms) {
                return None;
            }
            if !tags::matches(chunk.tags[o].as_deref(), filter) {
                return None;
            }
            Some(Hit {
                index: base + o,
                id: chunk.ids[o],
                score,
            })
        }));
    }
    best_k(hits, k)
}

/// Best score first; equal scores: newer (greater id) first.
pub(super) fn hit_order(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(b.id.cmp(&a.id))
}

pub(super) fn best_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, hit_order);
        hits.truncate(k);
    }
    hits.sort_unstable_by(hit_order);
    hits
}

/// The scan of an int8 bucket: integer dot products with the query's own int8 code, then
/// the exact score of every row that can be among the answers. The int8 score is the exact
/// one of the quantized query, so it is off by at most `|query - quantized query|` (the
/// rows are unit vectors): a row whose int8 score is below the threshold, or below the
/// k-th best int8 score, by more than that (twice that for the k-th) cannot answer. The
/// answer is thus exactly that of an exact scan of the stored (dequantized) vectors.
pub(super) fn search_codes(
    rows: Rows<'_>,
    query: &[f32],
    min_sim: f32,
    k: usize,
    now_ms: i64,
    filter: &[Pair],
) -> Vec<Hit> {
    let Rows {
        chunks,
        chunk_rows,
        dim,
        ..
    } = rows;
    let threshold = min_sim - SCORE_EPSILON;
    let mut qcode = vec![0i8; dim];
    let qscale = vector::quantize_i8(query, &mut qcode);
    // |query - its code|, in 4 independent float64 sums (a bound with 1e-5 of slack: the
    // summation order does not matter, a serial chain of 1536 adds did, ~2.5 µs).
    let mut sums = [0.0f64; 4];
    let (xs, cs) = (query.chunks_exact(4), qcode.chunks_exact(4));
    let tail: f64 = xs
        .remainder()
        .iter()
        .zip(cs.remainder())
        .map(|(&x, &c)| (f64::from(x) - f64::from(c) * f64::from(qscale)).powi(2))
        .sum();
    for (x, c) in xs.zip(cs) {
        for k in 0..4 {
            let d = f64::from(x[k]) - f64::from(c[k]) * f64::from(qscale);
            sums[k] += d * d;
        }
    }
    let err = (sums.iter().sum::<f64>() + tail).sqrt() as f32 + 1e-5;
    let mut cands: Vec<Hit> = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        let base = c * chunk_rows;
        for (o, (code, &inv)) in chunk
            .codes
            .chunks_exact(dim)
            .zip(&chunk.inv_norms)
            .enumerate()
        {
            let approx = vector::dot_i8(&qcode, code) as f32 * qscale * inv;
            if approx < threshold - err || is_expired(chunk.expire_at_ms[o], now_ms) {
                continue;
            }
            if !tags::matches(chunk.tags[o].as_deref(), filter) {
                continue;
            }
            cands.push(Hit {
                index: base + o,
                id: chunk.ids[o],
                score: approx,
            });
        }
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, hit_order);
        let kth = cands[k - 1].score;
        cands.retain(|h| h.score >= kth - 2.0 * err);
    }
    let hits: Vec<Hit> = cands
        .into_iter()
        .filter_map(|h| {
            let chunk = &chunks[h.index / chunk_rows];
            let score = chunk.row(h.index % chunk_rows, dim).score(query);
            (!score.is_nan() && score >= threshold).then_some(Hit { score, ..h })
        })
        .collect();
    best_k(hits, k)
}
