use super::*;
use crate::vector::normalized;
use crate::vector::tests::Rng;

fn ins(b: &mut Bucket, v: &[f32], resp: &str) -> InsertOutcome {
    b.insert(None, v, resp.as_bytes().to_vec(), None, 0)
        .unwrap()
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn threshold_edges() {
    let mut b = Bucket::new(10);
    ins(&mut b, &[1.0, 0.0], "x");
    // normalized([3,4]) == [0.6f32, 0.8f32]; dot with [1,0] is 0.6f32.
    let q = normalized(&[3.0, 4.0]).unwrap();
    let hits = b.search(&q, 0.6, 5, 0);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].score, 0.6);
    // Within SCORE_EPSILON above the similarity: still a hit.
    assert_eq!(b.search(&q, 0.6 + 5e-7, 5, 0).len(), 1);
    // Similarity just below the threshold: miss.
    assert!(b.search(&q, 0.6 + 1e-5, 5, 0).is_empty());
    assert!(b.search(&q, 0.61, 5, 0).is_empty());
    // Opposite vector hits only at -1.
    let neg = normalized(&[-1.0, 0.0]).unwrap();
    assert_eq!(b.search(&neg, -1.0, 5, 0).len(), 1);
    assert!(b.search(&neg, -0.99, 5, 0).is_empty());
    // k == 0 and a wrong-dimension query match nothing.
    assert!(b.search(&q, 0.0, 0, 0).is_empty());
    assert!(b.search(&[1.0, 0.0, 0.0], 0.0, 5, 0).is_empty());
}

#[test]
fn identical_vector_hits_at_minsim_one() {
    let mut rng = Rng::new(7);
    for &dim in &[1usize, 3, 8, 17, 384, 768, 1536, 3072, 4096] {
        let mut b = Bucket::new(64);
        let mut raws = Vec::new();
        for _ in 0..40 {
            let v: Vec<f32> = rng.vec(dim).iter().map(|x| x * 3.0 + 0.1).collect();
            ins(&mut b, &v, "r");
            raws.push(v);
        }
        for (i, v) in raws.iter().enumerate() {
            let q = normalized(v).unwrap();
            // (In dims 1 and 3 other entries may share the direction.)
            let hits = b.search(&q, 1.0, usize::MAX, 0);
            assert!(ids(&hits).contains(&(i as u64 + 1)), "dim {dim} entry {i}");
            assert!(hits.iter().all(|h| h.score <= 1.0));
            let snap_hits = b.snapshot().search(&q, 1.0, usize::MAX, 0);
            assert_eq!(snap_hits, hits);
        }
    }
}

#[test]
fn ordering_with_k_and_ties() {
    let mut b = Bucket::new(10);
    ins(&mut b, &[1.0, 0.0], "a"); // 1: score 1
    ins(&mut b, &[0.0, 1.0], "b"); // 2: score 0
    ins(&mut b, &[1.0, 1.0], "c"); // 3: score 0.707
    ins(&mut b, &[2.0, 0.0], "d"); // 4: score 1 (tie with 1, newer)
    ins(&mut b, &[-1.0, 0.0], "e"); // 5: score -1
    let q = [1.0, 0.0];
    assert_eq!(ids(&b.search(&q, -1.0, 10, 0)), vec![4, 1, 3, 2, 5]);
    assert_eq!(ids(&b.search(&q, -1.0, 2, 0)), vec![4, 1]);
    assert_eq!(ids(&b.search(&q, -1.0, 3, 0)), vec![4, 1, 3]);
    assert_eq!(ids(&b.search(&q, 0.5, 10, 0)), vec![4, 1, 3]);
    assert_eq!(ids(&b.search(&q, 0.5, 1, 0)), vec![4]);
    let hits = b.search(&q, 0.5, 10, 0);
    for h in &hits {
        assert_eq!(b.entry_at(h.index).0, h.id);
    }
    assert_eq!(b.get(3).unwrap().2, b"c");
}

#[test]
fn eviction_oldest_first() {
    let mut b = Bucket::new(3);
    for (i, r) in ["a", "b", "c"].iter().enumerate() {
        let out = ins(&mut b, &[1.0, i as f32], r);
        assert_eq!(out.id, i as u64 + 1);
        assert!(out.evicted.is_empty());
    }
    let out = ins(&mut b, &[1.0, 5.0], "d");
    assert_eq!(
        out,
        InsertOutcome {
            id: 4,
            evicted: vec![1]
        }
    );
    let out = ins(&mut b, &[1.0, 6.0], "e");
    assert_eq!(out.evicted, vec![2]);
    // Removing a middle entry then inserting evicts nothing.
    assert!(b.remove(4));
    assert!(!b.remove(4));
    let out = ins(&mut b, &[1.0, 7.0], "f");
    assert!(out.evicted.is_empty());
    let out = ins(&mut b, &[1.0, 8.0], "g");
    assert_eq!(out.evicted, vec![3]);
    let order: Vec<(u64, Vec<u8>)> = b.entries().map(|e| (e.0, e.2.to_vec())).collect();
    assert_eq!(
        order,
        vec![(5, b"e".to_vec()), (6, b"f".to_vec()), (7, b"g".to_vec())]
    );
    assert_eq!(b.len(), 3);
    // max_items 0 behaves as 1.
    let mut one = Bucket::new(0);
    ins(&mut one, &[1.0], "x");
    assert_eq!(ins(&mut one, &[1.0], "y").evicted, vec![1]);
}

#[test]
fn expiry_skip_and_remove_expired() {
    let mut b = Bucket::new(10);
    b.insert(None, &[1.0, 0.0], b"a".to_vec(), None, 100)
        .unwrap();
    b.insert(None, &[1.0, 0.1], b"b".to_vec(), None, 0).unwrap();
    b.insert(None, &[1.0, 0.2], b"c".to_vec(), None, 200)
        .unwrap();
    b.insert(None, &[1.0, 0.3], b"d".to_vec(), None, 100)
        .unwrap();
    let q = [1.0, 0.0];
    assert_eq!(ids(&b.search(&q, 0.0, 10, 99)), vec![1, 2, 3, 4]);
    // Expired at exactly expire_at_ms.
    assert_eq!(ids(&b.search(&q, 0.0, 10, 100)), vec![2, 3]);
    assert_eq!(ids(&b.search(&q, 0.0, 10, 1_000)), vec![2]);
    assert_eq!(ids(&b.snapshot().search(&q, 0.0, 10, 150)), vec![2, 3]);
    assert!(b.remove_expired(99).is_empty());
    assert_eq!(b.remove_expired(150), vec![1, 4]);
    assert_eq!(b.len(), 2);
    assert_eq!(ids(&b.search(&q, 0.0, 10, 150)), vec![2, 3]);
    assert!(b.set_expire(2, 120));
    assert!(!b.set_expire(99, 120));
    // The sweep wakes up for the earliest expiry, including one set after insert.
    assert!(b.remove_expired(119).is_empty());
    assert_eq!(b.remove_expired(120), vec![2]);
    assert!(b.remove_expired(199).is_empty());
    assert_eq!(b.remove_expired(300), vec![3]);
    assert!(b.is_empty());
    assert_eq!(b.dim(), 2); // stays fixed
    assert_eq!(ins(&mut b, &[0.0, 1.0], "e").id, 5);
}

#[test]
fn dimension_mismatch_and_bad_vectors() {
    let mut b = Bucket::new(10);
    assert_eq!(b.dim(), 0);
    ins(&mut b, &[1.0, 2.0, 3.0], "a");
    assert_eq!(b.dim(), 3);
    let e = b.insert(None, &[1.0, 2.0], vec![], None, 0).unwrap_err();
    assert_eq!(
        e,
        BucketError::DimMismatch {
            expected: 3,
            got: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "vector dimension 2 does not match the cache dimension 3"
    );
    let e = b
        .insert(None, &[0.0, 0.0, 0.0], vec![], None, 0)
        .unwrap_err();
    assert_eq!(e.to_string(), "vector has zero norm");
    let e = b.insert(None, &[], vec![], None, 0).unwrap_err();
    assert_eq!(e, BucketError::Vector(VectorError::Empty));
    // Failed inserts consumed no id and changed nothing.
    assert_eq!(b.len(), 1);
    assert_eq!(b.next_id(), 2);
    assert_eq!(ins(&mut b, &[0.0, 1.0, 0.0], "b").id, 2);
}

#[test]
fn explicit_ids() {
    let mut b = Bucket::new(10);
    assert_eq!(b.insert(Some(5), &[1.0], vec![], None, 0).unwrap().id, 5);
    assert_eq!(b.next_id(), 6);
    assert_eq!(ins(&mut b, &[1.0], "x").id, 6);
    let e = b.insert(Some(6), &[1.0], vec![], None, 0).unwrap_err();
    assert_eq!(e, BucketError::IdNotIncreasing { id: 6, last: 6 });
    assert_eq!(
        e.to_string(),
        "entry id 6 is not greater than the last issued id 6"
    );
    assert!(b.insert(Some(3), &[1.0], vec![], None, 0).is_err());
    assert!(b.insert(Some(0), &[1.0], vec![], None, 0).is_err());
    assert_eq!(
        b.insert(Some(100), &[1.0], vec![], None, 0).unwrap().id,
        100
    );
    assert_eq!(ins(&mut b, &[1.0], "y").id, 101);
    // Removed ids are never reissued.
    assert!(b.remove(101));
    assert_eq!(ins(&mut b, &[1.0], "z").id, 102);
    assert_eq!(
        b.insert(Some(u64::MAX), &[1.0], vec![], None, 0),
        Err(BucketError::IdExhausted)
    );
    assert_eq!(b.len(), 4);
}

#[test]
fn snapshot_isolation() {
    let mut b = Bucket::new(2);
    ins(&mut b, &[1.0, 0.0], "a");
    ins(&mut b, &[0.0, 1.0], "b");
    let snap = b.snapshot();
    let bytes_before = b.heap_bytes();
    // Insert (evicting id 1) and remove id 2 while the snapshot lives.
    let out = ins(&mut b, &[1.0, 1.0], "c");
    assert_eq!(out.evicted, vec![1]);
    assert!(b.remove(2));
    let q = [1.0, 0.0];
    assert_eq!(ids(&snap.search(&q, -1.0, 10, 0)), vec![1, 2]);
    assert_eq!(snap.len(), 2);
    assert_eq!(ids(&b.search(&q, -1.0, 10, 0)), vec![3]);
    // The caller re-resolves snapshot ids; deleted ones are gone.
    assert!(b.get(1).is_none() && b.get(2).is_none());
    assert_eq!(b.get(3).unwrap().2, b"c");
    // Copy-on-write kept the capacity.
    assert!(b.heap_bytes() <= bytes_before);
    drop(snap);
    // Without a snapshot the rows are mutated in place.
    let p = b.chunks[0].rows.as_ptr();
    ins(&mut b, &[1.0, 2.0], "d");
    assert_eq!(b.chunks[0].rows.as_ptr(), p);
}

#[test]
fn matches_f64_reference() {
    let mut rng = Rng::new(11);
    for &dim in &[1usize, 3, 7, 8, 15, 16, 17, 384, 1536] {
        let mut b = Bucket::new(50);
        let mut rows: Vec<Vec<f64>> = Vec::new();
        for _ in 0..37 {
            let v = rng.vec(dim);
            if normalized(&v).is_err() {
                continue;
            }
            ins(&mut b, &v, "r");
            let n: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            rows.push(v.iter().map(|&x| f64::from(x) / n).collect());
        }
        let qraw = rng.vec(dim);
        let q = normalized(&qraw).unwrap();
        let hits = b.search(&q, -1.0, usize::MAX, 0);
        assert_eq!(hits.len(), rows.len());
        let qn: f64 = qraw
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        for h in &hits {
            let row = &rows[(h.id - 1) as usize];
            let want: f64 = row
                .iter()
                .zip(&qraw)
                .map(|(r, &x)| r * f64::from(x) / qn)
                .sum();
            assert!(
                (f64::from(h.score) - want).abs() <= 1e-5,
                "dim {dim}: {} vs {want}",
                h.score
            );
        }
        // Sorted best first.
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn load_roundtrip() {
    let mut a = Bucket::new(5);
    for i in 0..8 {
        let meta = (i % 2 == 0).then(|| format!("m{i}"));
        a.insert(
            None,
            &[1.0, i as f32, 2.0],
            vec![i as u8, 0, 255],
            meta,
            i * 10,
        )
        .unwrap();
    }
    a.remove(6);
    a.hits = 3;
    a.misses = 4;
    let mut b = Bucket::new(a.max_items());
    for (id, row, resp, meta, exp) in a.entries() {
        b.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
            .unwrap();
    }
    b.restore_next_id(a.next_id());
    b.hits = a.hits;
    b.misses = a.misses;
    let ea: Vec<_> = a.entries().collect();
    let eb: Vec<_> = b.entries().collect();
    assert_eq!(ea, eb);
    assert_eq!(ea.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5, 7, 8]);
    assert_eq!(b.next_id(), 9);
    assert_eq!(b.get(4).unwrap().3, None);
    assert_eq!(b.get(5).unwrap().3, Some("m4"));
    assert_eq!(b.get(5).unwrap().2, &[4u8, 0, 255][..]);
    // Out-of-order or duplicate loads are refused.
    assert!(b
        .push_loaded(8, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0)
        .is_err());
    assert!(b
        .push_loaded(20, RowRef::F32(&[1.0, 0.0]), vec![], None, 0)
        .is_err());
    assert!(b
        .push_loaded(20, RowRef::F32(&[1.0, f32::NAN, 0.0]), vec![], None, 0)
        .is_err());
    assert_eq!(
        b.push_loaded(20, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0),
        Ok(())
    );
    assert_eq!(
        b.push_loaded(21, RowRef::F32(&[1.0, 0.0, 0.0]), vec![], None, 0),
        Err(BucketError::Full { max_items: 5 })
    );
}

fn bound(dim: usize, n: usize, resp_bytes: usize) -> usize {
    n * (4 * dim + 96) + resp_bytes
}

fn fill(b: &mut Bucket, n: usize, dim: usize, rng: &mut Rng) -> usize {
    let mut resp_bytes = 0;
    for i in 0..n {
        let mut resp = Vec::with_capacity(4096); // slack must not count
        resp.extend_from_slice(format!("response number {i}").as_bytes());
        resp_bytes += resp.len();
        b.insert(None, &rng.vec(dim), resp, None, 0).unwrap();
    }
    resp_bytes
}

#[test]
fn heap_bytes_per_entry_bound() {
    let mut rng = Rng::new(13);
    let dim = 384;
    // 1,000 x 384 with max_items 1,000: exact reservation.
    let mut b = Bucket::new(1_000);
    let resp = fill(&mut b, 1_000, dim, &mut rng);
    assert!(b.exact_mode());
    let hb = b.heap_bytes();
    assert!(
        hb <= bound(dim, 1_000, resp),
        "{hb} > {}",
        bound(dim, 1_000, resp)
    );
    assert!(hb >= 1_000 * 4 * dim + resp);
    // Churn (2,000 evictions) keeps the bound: eviction reuses the rows.
    let mut c = Bucket::new(1_000);
    let r2 = fill(&mut c, 3_000, dim, &mut rng);
    let live_resp: usize = c.entries().map(|e| e.2.len()).sum();
    assert!(r2 > live_resp);
    assert!(c.heap_bytes() <= bound(dim, 1_000, live_resp));

    // Amortised growth (block over EXACT_RESERVE_BYTES): growth is capped
    // at max_items, so a full bucket meets the bound too.
    let mut d = Bucket::new(3_000);
    let r3 = fill(&mut d, 3_000, dim, &mut rng);
    assert!(!d.exact_mode());
    assert!(d.heap_bytes() <= bound(dim, 3_000, r3));
    // While growing, slack is at most half of the live rows.
    let mut e = Bucket::new(100_000);
    let r4 = fill(&mut e, 1_000, dim, &mut rng);
    assert!(e.heap_bytes() <= bound(dim, 1_000, r4) + 1_000 * (4 * dim + 84) / 2);
    // Shrinks after mass removal.
    let before = e.heap_bytes();
    for id in 1..=900 {
        assert!(e.remove(id));
    }
    assert!(e.heap_bytes() < before / 4);
    assert_eq!(e.len(), 100);
}

#[test]
fn set_max_items_evicts_oldest() {
    let mut b = Bucket::new(5);
    for i in 0..5 {
        ins(&mut b, &[1.0, i as f32], "r");
    }
    assert!(b.set_max_items(10).is_empty());
    assert_eq!(b.max_items(), 10);
    assert_eq!(b.set_max_items(2), vec![1, 2, 3]);
    assert_eq!(b.len(), 2);
    assert_eq!(b.vector_bytes(), 2 * 2 * 4);
    assert_eq!(ins(&mut b, &[1.0, 9.0], "r").evicted, vec![4]);
    assert_eq!(b.set_max_items(0), vec![5]);
    assert_eq!(b.max_items(), 1);
}

#[test]
fn large_bucket_eviction_is_in_place() {
    // Eviction must not shift the rows: no chunk moves.
    let mut rng = Rng::new(17);
    let mut b = Bucket::new(2_000);
    fill(&mut b, 2_000, 64, &mut rng);
    let p = chunk_ptrs(&b);
    let out = b.insert(None, &rng.vec(64), vec![], None, 0).unwrap();
    assert_eq!(out.evicted, vec![1]);
    assert_eq!(chunk_ptrs(&b), p);
    assert_eq!(b.len(), 2_000);
    assert_eq!(b.entries().next().unwrap().0, 2);
}

/// Where each chunk's rows live (a copy moves them).
fn chunk_ptrs(b: &Bucket) -> Vec<*const f32> {
    b.chunks.iter().map(|c| c.rows.as_ptr()).collect()
}

fn snap_ptrs(s: &BucketSnapshot) -> Vec<*const f32> {
    s.chunks.iter().map(|c| c.rows.as_ptr()).collect()
}

#[test]
fn chunk_shape() {
    let f32_rows = |dim| chunk_rows_for(Quant::Float32.row_bytes(dim));
    assert_eq!(f32_rows(1536), 340); // 2 MiB / 6 KiB = 341, down to a multiple of 4
    assert_eq!(f32_rows(384), 1364);
    assert_eq!(f32_rows(1), CHUNK_BYTES / 4);
    assert_eq!(f32_rows(1 << 20), 4);
    assert_eq!(chunk_rows_for(Quant::Int8.row_bytes(384)), 5404); // 2 MiB / 388
    let mut rng = Rng::new(19);
    let mut b = Bucket::new(1_000);
    fill(&mut b, 1_000, 1536, &mut rng);
    // Every chunk but the last is full; none is over ~CHUNK_BYTES.
    let lens: Vec<usize> = b.chunks.iter().map(|c| c.len()).collect();
    assert_eq!(lens, vec![340, 340, 320]);
    assert!(b
        .chunks
        .iter()
        .all(|c| c.rows.capacity() * 4 <= CHUNK_BYTES));
    // Removing rows empties and frees the last chunk.
    for id in 1..=320 {
        assert!(b.remove(id));
    }
    assert_eq!(b.chunks.len(), 2);
    assert_eq!(b.len(), 680);
    assert_eq!(b.entries().next().unwrap().0, 321);
}

#[test]
fn chunked_scan_scores_like_one_block() {
    // The scores of a chunked search are bit for bit those of one scan over a
    // contiguous block of the same rows (what the bucket did before chunking).
    let mut rng = Rng::new(23);
    for &(n, dim) in &[(3_001usize, 384usize), (1_000, 1536), (700, 1000), (9, 3)] {
        let mut b = Bucket::new(n);
        fill(&mut b, n + 37, dim, &mut rng); // with evictions: rows swapped around
        for id in (40..n as u64).step_by(7) {
            b.remove(id);
        }
        let block: Vec<f32> = (0..b.len())
            .flat_map(|i| b.entry_at(i).1.to_f32())
            .collect();
        let q = normalized(&rng.vec(dim)).unwrap();
        let mut want = Vec::new();
        vector::scan_dots(&block, dim, &q, &mut want);
        let hits = b.search(&q, -1.0, usize::MAX, 0);
        assert_eq!(hits.len(), b.len());
        for h in &hits {
            assert_eq!(h.score, want[h.index].clamp(-1.0, 1.0), "{n} x {dim}");
            assert_eq!(b.entry_at(h.index).0, h.id);
        }
        assert_eq!(b.snapshot().search(&q, -1.0, usize::MAX, 0), hits);
    }
}

#[test]
fn copy_on_write_copies_only_touched_chunks() {
    let mut rng = Rng::new(29);
    let dim = 2048; // 256 rows per chunk
    let mut b = Bucket::new(1_000);
    let mut raws = Vec::new();
    for i in 0..1_000 {
        let v = rng.vec(dim);
        b.insert(None, &v, format!("r{i}").into_bytes(), None, 0)
            .unwrap();
        raws.push(v);
    }
    assert_eq!(b.chunks.len(), 4);
    let q = normalized(&rng.vec(dim)).unwrap();
    let before = b.search(&q, -1.0, usize::MAX, 0);
    let snap = b.snapshot();
    let old = snap_ptrs(&snap);
    assert_eq!(chunk_ptrs(&b), old); // taking it copied nothing

    // Insert at capacity: evicts id 1 (row 0, chunk 0), moves the last row
    // (chunk 3) into row 0 and appends to chunk 3. Chunks 1 and 2 stay shared.
    let out = b
        .insert(None, &rng.vec(dim), b"new".to_vec(), None, 0)
        .unwrap();
    assert_eq!(out.evicted, vec![1]);
    let now = chunk_ptrs(&b);
    assert_ne!(now[0], old[0]);
    assert_eq!(now[1..3], old[1..3]);
    assert_ne!(now[3], old[3]);
    // Remove id 300 (chunk 1) and change the expiry of id 600 (chunk 2):
    // each copies its own chunk once; chunk 0 and 3 are already the bucket's.
    let (c0, c3) = (now[0], now[3]);
    assert!(b.remove(300));
    assert!(b.set_expire(600, 5));
    let now = chunk_ptrs(&b);
    assert_eq!((now[0], now[3]), (c0, c3));
    assert_ne!(now[1], old[1]);
    assert_ne!(now[2], old[2]);
    assert_eq!(Arc::strong_count(&b.chunks[0]), 1);

    // The snapshot still sees every old row, and scores them as before.
    assert_eq!(snap_ptrs(&snap), old);
    assert_eq!(snap.len(), 1_000);
    assert_eq!(snap.search(&q, -1.0, usize::MAX, 0), before);
    for id in [1u64, 300, 600, 1_000] {
        let mine = normalized(&raws[id as usize - 1]).unwrap();
        let hit = snap.search(&mine, 1.0, 1, 10)[0];
        assert_eq!((hit.id, hit.index), (id, id as usize - 1));
    }
    // The bucket sees its own rows.
    assert!(b.get(1).is_none() && b.get(300).is_none());
    assert_eq!(b.get(1_001).unwrap().2, b"new");
    assert_eq!(b.get(600).unwrap().4, 5);
    assert_eq!(b.len(), 999);
    // Copy-on-write kept the capacity: no chunk was regrown (the last holds
    // what max_items leaves: 1,000 - 3 x 256).
    let caps: Vec<usize> = b.chunks.iter().map(|c| c.cap_rows()).collect();
    assert_eq!(caps, vec![256, 256, 256, 232]);
    drop(snap);
    // Without a snapshot nothing is copied.
    let p = chunk_ptrs(&b);
    b.insert(None, &rng.vec(dim), vec![], None, 0).unwrap();
    b.remove(2);
    b.set_expire(700, 0);
    assert_eq!(chunk_ptrs(&b), p);
}

/// Clustered unit-ish vectors: `clusters` centres plus noise.
fn clustered(n: usize, dim: usize, clusters: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.vec(dim)).collect();
    (0..n)
        .map(|i| {
            let noise = rng.vec(dim);
            centres[i % clusters]
                .iter()
                .zip(noise)
                .map(|(c, e)| c + 0.4 * e)
                .collect()
        })
        .collect()
}

fn near(v: &[f32], rng: &mut Rng) -> Vec<f32> {
    let n = normalized(v).unwrap();
    normalized(&n.iter().map(|x| x + 0.01 * rng.f32()).collect::<Vec<_>>()).unwrap()
}

/// Index lookups against exact scans: top-1 agreement, live entries only, exact scores,
/// through inserts, evictions, removals and expiry.
#[test]
fn index_matches_exact_scan_through_churn() {
    index_churn(Algo::Hnsw);
}

#[test]
fn ivf_index_matches_exact_scan_through_churn() {
    index_churn(Algo::Ivf);
}

/// Int8 rows are re-scored from the index's copy of them: the scores must be those of
/// the bucket's rows (checked by `index_churn`), after churn and after a reload.
#[test]
fn ivf_int8_index_matches_exact_scan_through_churn() {
    index_churn_quant(Algo::Ivf, Quant::Int8);
}

fn index_churn(algo: Algo) {
    index_churn_quant(algo, Quant::Float32)
}

fn index_churn_quant(algo: Algo, quant: Quant) {
    let mut rng = Rng::new(31);
    let dim = 48;
    let data = clustered(4_000, dim, 100, &mut rng);
    let mut b = Bucket::new(2_500);
    assert!(b.set_algo(algo));
    b.set_quant(quant);
    for (i, v) in data.iter().enumerate() {
        let exp = if i % 10 == 0 { 5_000 } else { 0 };
        b.insert(None, v, vec![], None, exp).unwrap();
        if i == 600 {
            b.create_index();
            assert!(b.has_index() && b.unindexed() == b.len());
            assert!(b
                .search_index(&data[0], 0.0, 1, 0, Effort::ef(64))
                .is_none()); // not complete
        }
        b.index_pending(8);
        if i % 7 == 0 && i > 10 {
            b.remove(i as u64 - 5);
        }
    }
    assert_eq!(b.unindexed(), 0);
    let expired = b.remove_expired(6_000);
    assert!(!expired.is_empty());
    assert_eq!(b.unindexed(), 0);
    let mut agree = 0;
    let live: Vec<u64> = b.entries().map(|e| e.0).collect();
    for k in 0..300 {
        let id = live[(k * 7) % live.len()];
        let q = near(&data[id as usize - 1], &mut rng);
        let exact = b.search(&q, -1.0, 3, 0);
        let got = b.search_index(&q, -1.0, 3, 0, Effort::ef(64)).unwrap();
        assert_eq!(got.len(), 3);
        for h in &got {
            assert_eq!(b.entry_at(h.index).0, h.id, "hit resolves to its row");
            let want = b.entry_at(h.index).1.score(&q);
            assert_eq!(h.score, want, "scores are exact");
        }
        agree += usize::from(got[0].id == exact[0].id);
    }
    assert!(agree >= 297, "{algo:?}: top-1 agreement {agree}/300");
    assert_eq!(b.index_graph().map(|g| g.algo()), Some(algo));
    // Expired entries (by the caller's clock) never answer, even before reclaiming.
    let mut c = b.clone();
    let victim = live[live.len() / 2];
    assert!(c.set_expire(victim, 10));
    let q = near(&data[victim as usize - 1], &mut rng);
    assert_eq!(
        c.search_index(&q, -1.0, 1, 0, Effort::ef(64)).unwrap()[0].id,
        victim
    );
    assert!(c
        .search_index(&q, -1.0, 5, 10, Effort::ef(64))
        .unwrap()
        .iter()
        .all(|h| h.id != victim));
    // A threshold above every score: nothing.
    assert!(c
        .search_index(&q, 1.0, 5, 0, Effort::ef(64))
        .unwrap()
        .iter()
        .all(|h| h.score >= 1.0 - 1e-6));
    if algo == Algo::Ivf {
        ivf_reload(&b, &data, &mut rng);
    }
}

/// Equal scores through the index: the newer entry first, an expired one skipped, as
/// the exact scan orders them (the index path reads entries only as it takes answers).
#[test]
fn index_orders_equal_scores_newer_first() {
    each_indexed_bucket(47, |algo, quant, mut b, data, rng| {
        let twin = near(&data[5], rng);
        let ids: Vec<u64> = (0..4)
            .map(|_| b.insert(None, &twin, vec![], None, 0).unwrap().id)
            .collect();
        b.index_pending(usize::MAX);
        assert!(b.set_expire(ids[2], 10));
        let q = normalized(&twin).unwrap();
        for (k, now) in [(1, 0), (3, 0), (4, 0), (3, 10), (4, 10)] {
            let got = b.search_index(&q, -1.0, k, now, Effort::ef(64)).unwrap();
            let want = b.search(&q, -1.0, k, now);
            assert_eq!(got, want, "{algo:?} {quant:?} k {k} now {now}");
        }
        let got = b.search_index(&q, 0.99, 3, 10, Effort::ef(64)).unwrap();
        assert_eq!(
            got.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![ids[3], ids[1], ids[0]],
            "{algo:?} {quant:?}"
        );
    });
}

/// Runs `test` on an indexed 800 x 32 bucket (10 clusters) of every index algorithm and
/// vector kind, with its rows and the generator that made them.
fn each_indexed_bucket(
    seed: u64,
    mut test: impl FnMut(Algo, Quant, Bucket, &[Vec<f32>], &mut Rng),
) {
    for (algo, quant) in [
        (Algo::Ivf, Quant::Int8),
        (Algo::Ivf, Quant::Float32),
        (Algo::Hnsw, Quant::Int8),
        (Algo::Hnsw, Quant::Float32),
    ] {
        let mut rng = Rng::new(seed);
        let data = clustered(800, 32, 10, &mut rng);
        let mut b = Bucket::new(1_000);
        assert!(b.set_algo(algo));
        b.set_quant(quant);
        for v in &data {
            b.insert(None, v, vec![], None, 0).unwrap();
        }
        b.create_index();
        test(algo, quant, b, &data, &mut rng);
    }
}

/// More expired (not yet reclaimed) entries than an index lookup keeps candidates, all
/// nearer than any live one: the lookup still answers with the live ones, as a scan does.
#[test]
fn index_answers_past_expired_nearest_entries() {
    each_indexed_bucket(53, |algo, quant, mut b, data, rng| {
        let twin = near(&data[5], rng);
        for _ in 0..RESCORE_MIN + 4 {
            b.insert(None, &twin, vec![], None, 10).unwrap();
        }
        b.index_pending(usize::MAX);
        let q = normalized(&twin).unwrap();
        for (k, min_sim) in [(1, -1.0), (3, -1.0), (1, 0.5)] {
            let got = b.search_index(&q, min_sim, k, 10, Effort::ef(64)).unwrap();
            let want = b.search(&q, min_sim, k, 10);
            let case = format!("{algo:?} {quant:?} k {k} min {min_sim}");
            assert_eq!(got.len(), k, "{case}: {got:?}");
            assert_eq!(got[0], want[0], "{case}");
            assert!(got.iter().all(|h| h.id <= data.len() as u64), "{case}");
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "{case}");
        }
        // Before they expire, the twins answer.
        let got = b.search_index(&q, 0.99, 3, 0, Effort::ef(64)).unwrap();
        assert!(
            got.iter().all(|h| h.id > data.len() as u64),
            "{algo:?} {quant:?}"
        );
    });
}

thread_local! {
    /// Index lookups skip no list (as before lists were skipped): what skipping is
    /// compared against.
    pub(super) static SKIP_NO_LIST: Cell<bool> = const { Cell::new(false) };
    /// Index lookups take their first candidates as they are (as before a second look).
    pub(super) static NO_SECOND_LOOK: Cell<bool> = const { Cell::new(false) };
}

/// An IVF lookup skips lists that cannot hold the answer, counting only live entries as
/// found: with a query's 8 nearest entries expired (clusters of 300 span lists of at
/// most 256), its answers are as good as without skipping, never an expired entry.
#[test]
fn ivf_lookup_counts_only_live_entries_when_skipping_lists() {
    let mut rng = Rng::new(43);
    let data = clustered(6_000, 128, 20, &mut rng);
    let mut b = Bucket::new(10_000);
    assert!(b.set_algo(Algo::Ivf));
    for v in &data {
        b.insert(None, v, vec![], None, 0).unwrap();
    }
    b.create_index();
    b.index_pending(usize::MAX);
    assert_eq!(b.unindexed(), 0);
    let every_list = Effort {
        ef: 64,
        nprobe: 10_000,
    };
    let lists = match b.index_graph() {
        Some(AnnIndex::Ivf(x)) => x.lists(),
        _ => 0,
    };
    assert!(lists > 25, "{lists} lists");
    let (mut agree, mut asked) = (0, 0);
    for i in (0..6_000).step_by(97) {
        let q = near(&data[i], &mut rng);
        let mut c = b.clone();
        let nearest: Vec<u64> = c.search(&q, -1.0, 8, 0).iter().map(|h| h.id).collect();
        for &id in &nearest {
            assert!(c.set_expire(id, 10));
        }
        for (k, min_sim) in [(1, -1.0), (3, -1.0), (1, 0.5)] {
            let lookup = |skip_no_list: bool| {
                SKIP_NO_LIST.set(skip_no_list);
                let hits = c.search_index(&q, min_sim, k, 10, every_list).unwrap();
                SKIP_NO_LIST.set(false);
                hits.iter().map(|h| (h.score, h.id)).collect::<Vec<_>>()
            };
            let (all, skipping) = (lookup(true), lookup(false));
            assert!(
                skipping.iter().all(|h| !nearest.contains(&h.1)),
                "{i}: {skipping:?}"
            );
            assert!(skipping.len() >= all.len(), "{i}: {skipping:?} {all:?}");
            for (a, s) in all.iter().zip(&skipping) {
                assert!(s.0 >= a.0, "{i}: {skipping:?} below {all:?}");
            }
            agree += usize::from(all == skipping);
            asked += 1;
        }
    }
    assert!(agree * 100 >= asked * 98, "{agree} of {asked} the same");
}

/// A saved IVF index (with the references of its sign bits, taken from past centroids)
/// loads as the same index and gives the same answers; one of another dimension is refused.
fn ivf_reload(b: &Bucket, data: &[Vec<f32>], rng: &mut Rng) {
    let payload = index_payload(b);
    let decode =
        || AnnIndex::decode(Algo::Ivf, &mut crate::wire::Reader::new(&payload), true).unwrap();
    let mut d = Bucket::new(b.max_items());
    assert!(d.set_algo(Algo::Ivf));
    d.set_quant(b.quant());
    for (id, row, resp, meta, exp) in b.entries() {
        d.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
            .unwrap();
    }
    d.attach_index(decode()).unwrap();
    assert_eq!(index_payload(&d), payload);
    let live: Vec<u64> = b.entries().map(|e| e.0).collect();
    for k in 0..100 {
        let q = near(&data[live[(k * 13) % live.len()] as usize - 1], rng);
        let key = |x: &Bucket| {
            let hits = x.search_index(&q, -1.0, 3, 0, Effort::ef(64)).unwrap();
            hits.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>()
        };
        assert_eq!(key(b), key(&d)); // rows differ: the copy's are in id order
    }
    let mut other = Bucket::new(10);
    assert!(other.set_algo(Algo::Ivf));
    other.insert(None, &data[0][1..], vec![], None, 0).unwrap();
    let e = other.attach_index(decode()).unwrap_err();
    assert!(e.contains("dimension 48"), "{e}");
    assert!(!other.has_index());
}

fn index_payload(b: &Bucket) -> Vec<u8> {
    let mut out = Vec::new();
    b.index_graph().unwrap().encode(&mut out);
    out
}

/// The graph depends only on the order of inserts and removals by id, never on physical
/// rows: expiry on a primary (rows in physical order) and the replica's SEMCACHE.DEL of
/// the same ids (in id order) build the same graph.
#[test]
fn index_is_deterministic_across_removal_paths() {
    let mut rng = Rng::new(37);
    let data = clustered(1_500, 16, 20, &mut rng);
    let mut primary = Bucket::new(1_000);
    let mut replica = Bucket::new(1_000);
    for (i, v) in data.iter().enumerate() {
        let exp = if i % 3 == 0 { 100 + (i as i64 % 50) } else { 0 };
        for b in [&mut primary, &mut replica] {
            if i == 200 {
                b.create_index();
            }
            b.index_pending(8);
        }
        if i % 100 == 99 {
            let dropped = primary.remove_expired(120);
            for id in &dropped {
                assert!(replica.remove(*id));
            }
        }
        let p = primary.insert(None, v, vec![], None, exp).unwrap();
        for id in &p.evicted {
            assert!(replica.remove(*id));
        }
        replica.insert(Some(p.id), v, vec![], None, exp).unwrap();
    }
    for b in [&mut primary, &mut replica] {
        b.index_pending(usize::MAX);
    }
    assert_eq!(index_payload(&primary), index_payload(&replica));
    assert_eq!(
        primary.entries().collect::<Vec<_>>(),
        replica.entries().collect::<Vec<_>>()
    );
}

#[test]
fn attached_index_answers_like_the_original() {
    let mut rng = Rng::new(41);
    let data = clustered(1_200, 24, 30, &mut rng);
    let mut a = Bucket::new(1_000);
    a.create_index();
    for v in &data {
        a.insert(None, v, vec![], None, 0).unwrap();
        a.index_pending(8);
    }
    let mut b = Bucket::new(a.max_items());
    for (id, row, resp, meta, exp) in a.entries() {
        b.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
            .unwrap();
    }
    let payload = index_payload(&a);
    let g = AnnIndex::decode(Algo::Hnsw, &mut crate::wire::Reader::new(&payload), false).unwrap();
    b.attach_index(g).unwrap();
    assert_eq!(index_payload(&a), index_payload(&b));
    for v in data.iter().step_by(13) {
        let q = near(v, &mut rng);
        let key = |h: Vec<Hit>| h.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>();
        let (x, y) = (
            a.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
            b.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
        );
        assert_eq!(key(x.unwrap()), key(y.unwrap()));
    }
    // A graph naming an entry the bucket lacks is refused, and changes nothing.
    let mut c = Bucket::new(1_000);
    for (id, row, resp, meta, exp) in a.entries().skip(1) {
        c.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
            .unwrap();
    }
    let g = AnnIndex::decode(
        Algo::Hnsw,
        &mut crate::wire::Reader::new(&index_payload(&a)),
        false,
    )
    .unwrap();
    assert!(c.attach_index(g).unwrap_err().contains("not in the bucket"));
    assert!(!c.has_index());
}

fn tag(user: &str) -> Option<Box<[u8]>> {
    tags::encode(&[(b"user".to_vec(), user.as_bytes().to_vec())])
}

fn tagged(user: &str) -> EntryData {
    EntryData {
        tags: tag(user),
        ..EntryData::default()
    }
}

fn filter(user: &str) -> Vec<Pair> {
    vec![(b"user".to_vec(), user.as_bytes().to_vec())]
}

/// A FILTER never lets another entry answer: exact scans (bucket and snapshot, through
/// row moves), the index (with a fallback for selective filters), and DEL FILTER's ids.
#[test]
fn filters_hold_everywhere() {
    let mut rng = Rng::new(43);
    let data = clustered(1_200, 16, 10, &mut rng);
    let mut b = Bucket::new(1_000);
    b.create_index();
    for (i, v) in data.iter().enumerate() {
        // u0..u9 own 10% each; "rare" owns 3 entries.
        let user = if i % 400 == 7 {
            "rare".to_string()
        } else {
            format!("u{}", i % 10)
        };
        b.insert_entry(None, v, tagged(&user)).unwrap();
        b.index_pending(8);
    }
    b.remove(500);
    let snap = b.snapshot();
    b.insert_entry(None, &data[0], tagged("u3")).unwrap(); // moves rows
    b.index_pending(8);
    let user_of = |b: &Bucket, h: &Hit| b.tags_at(h.index).map(<[u8]>::to_vec);
    for (k, v) in data.iter().enumerate().step_by(37) {
        let q = near(v, &mut rng);
        let u = format!("u{}", k % 10);
        for hits in [
            b.search_where(&q, -1.0, 5, 0, &filter(&u)),
            b.search_index_where(&q, -1.0, 5, 0, Effort::ef(64), &filter(&u))
                .unwrap(),
        ] {
            assert_eq!(hits.len(), 5);
            assert!(hits
                .iter()
                .all(|h| user_of(&b, h) == tag(&u).map(|t| t.to_vec())));
        }
        let exact = b.search_where(&q, -1.0, 1, 0, &filter(&u));
        let ixd = b
            .search_index_where(&q, -1.0, 1, 0, Effort::ef(64), &filter(&u))
            .unwrap();
        assert_eq!(exact[0].id, ixd[0].id);
        for h in snap.search_where(&q, -1.0, 5, 0, &filter(&u)) {
            assert_eq!(
                b.get(h.id).map(|_| ()),
                Some(()),
                "snapshot ids are live here"
            );
        }
    }
    // A selective filter: the index gives up (None) unless its walk found enough.
    let q = near(&data[7], &mut rng);
    // (id 8, the first "rare" entry, was evicted.)
    let rare = b.search_where(&q, -1.0, 3, 0, &filter("rare"));
    assert_eq!(rare.iter().map(|h| h.id).collect::<Vec<_>>().len(), 2);
    assert_eq!(
        b.search_index_where(&q, -1.0, 3, 0, Effort::ef(64), &filter("rare")),
        None
    );
    assert!(b.search_where(&q, -1.0, 3, 0, &filter("nobody")).is_empty());
    assert_eq!(b.ids_where(&filter("rare")), vec![408, 808]);
    assert_eq!(b.ids_where(&filter("u3")).len(), 101); // 120 - 20 evicted + 1
    assert!(b.ids_where(&[]).len() == b.len());
}

/// A selective filter on inverted lists: too few of the candidates match, so the lists
/// are looked at again keeping only matching entries, and the index answers (a graph
/// gives up and the caller scans). Never an entry outside the filter.
#[test]
fn ivf_selective_filter_answers_from_the_lists() {
    let mut rng = Rng::new(59);
    let data = clustered(8_000, 32, 40, &mut rng);
    // 100 users, each with entries in every cluster (entry i is in cluster i % 40).
    let user = |i: usize| format!("u{}", (i / 40) % 100);
    let mut b = Bucket::new(10_000);
    assert!(b.set_algo(Algo::Ivf));
    b.create_index();
    for (i, v) in data.iter().enumerate() {
        b.insert_entry(None, v, tagged(&user(i))).unwrap();
        b.index_pending(8);
    }
    let (mut answered, mut gave_up, mut same, mut n) = (0, 0, 0, 0);
    for i in (0..data.len()).step_by(97) {
        n += 1;
        let q = near(&data[i], &mut rng);
        let only = filter(&user(i));
        let exact = b.search_where(&q, -1.0, 5, 0, &only);
        assert_eq!(exact.len(), 5);
        let lookup = || b.search_index_where(&q, -1.0, 5, 0, Effort::ef(64), &only);
        tests::NO_SECOND_LOOK.set(true);
        gave_up += usize::from(lookup().is_none());
        tests::NO_SECOND_LOOK.set(false);
        if let Some(hits) = lookup() {
            answered += 1;
            assert_eq!(hits.len(), 5);
            assert!(hits
                .iter()
                .all(|h| b.tags_at(h.index) == tag(&user(i)).as_deref()));
            same += usize::from(hits[0].id == exact[0].id);
        }
    }
    assert!(gave_up * 2 >= n, "the filter is selective: {gave_up} / {n}");
    assert!(answered * 10 >= n * 9, "lists answered {answered} / {n}");
    assert!(same * 100 >= answered * 95, "top-1 {same} / {answered}");
}

/// The exact answer over a bucket's stored rows (each scored with its own `score`).
fn reference(b: &Bucket, q: &[f32], min_sim: f32, k: usize, now: i64) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> = b
        .entries()
        .filter(|e| !is_expired(e.4, now))
        .map(|e| (e.0, e.1.score(q)))
        .filter(|&(_, s)| s >= min_sim - SCORE_EPSILON)
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    all.truncate(k);
    all
}

/// An int8 bucket's scan prunes with integer scores but answers exactly what an exact scan
/// of its stored (dequantized) vectors answers, through removals, expiry and snapshots.
#[test]
fn int8_scan_answers_exactly() {
    let mut rng = Rng::new(53);
    let dim = 40;
    let data = clustered(3_000, dim, 60, &mut rng);
    let mut b = Bucket::new(2_500);
    assert!(b.set_quant(Quant::Int8));
    for (i, v) in data.iter().enumerate() {
        let exp = if i % 9 == 0 { 50 } else { 0 };
        b.insert(None, v, vec![], None, exp).unwrap();
        if i % 5 == 0 && i > 10 {
            b.remove(i as u64 - 3);
        }
    }
    assert!(!b.set_quant(Quant::Float32), "fixed by the first entry");
    assert!(b.set_quant(Quant::Int8));
    assert_eq!(b.vector_bytes(), b.len() * (dim + 4));
    assert!(b.entries().all(|e| matches!(e.1, RowRef::I8(..))));
    let snap = b.snapshot();
    for (n, v) in data.iter().enumerate().step_by(29) {
        let q = near(v, &mut rng);
        for (min_sim, k, now) in [(-1.0, 1, 0), (0.5, 5, 60), (0.9, 50, 60), (0.99, 3, 0)] {
            let want = reference(&b, &q, min_sim, k, now);
            let got: Vec<(u64, f32)> = b
                .search(&q, min_sim, k, now)
                .iter()
                .map(|h| (h.id, h.score))
                .collect();
            assert_eq!(got, want, "query {n}, min_sim {min_sim}, k {k}");
            let from_snap: Vec<(u64, f32)> = snap
                .search(&q, min_sim, k, now)
                .iter()
                .map(|h| (h.id, h.score))
                .collect();
            assert_eq!(from_snap, want);
        }
    }
}

/// Recall@1 of an int8 bucket (scan and index) against an exact float32 scan of the
/// original vectors, on clustered data with near-duplicate queries.
#[test]
fn int8_recall_against_float_originals() {
    let mut rng = Rng::new(59);
    let dim = 64;
    let data = clustered(4_000, dim, 80, &mut rng);
    let mut exact = Bucket::new(4_000);
    let mut b = Bucket::new(4_000);
    b.set_quant(Quant::Int8);
    b.create_index();
    for v in &data {
        exact.insert(None, v, vec![], None, 0).unwrap();
        b.insert(None, v, vec![], None, 0).unwrap();
        b.index_pending(8);
    }
    assert_eq!(b.unindexed(), 0);
    assert!(b.vector_bytes() * 10 <= exact.vector_bytes() * 3, "<= 0.3x");
    let (mut scan_ok, mut index_ok, n) = (0, 0, 400);
    for k in 0..n {
        let q = near(&data[(k * 37) % data.len()], &mut rng);
        let truth = exact.search(&q, -1.0, 1, 0)[0].id;
        scan_ok += usize::from(b.search(&q, -1.0, 1, 0)[0].id == truth);
        let ixd = b.search_index(&q, -1.0, 1, 0, Effort::ef(64)).unwrap();
        index_ok += usize::from(ixd[0].id == truth);
        // Index scores are the exact ones of the stored rows.
        let h = ixd[0];
        assert_eq!(h.score, b.entry_at(h.index).1.score(&q));
    }
    assert!(scan_ok * 100 >= n * 98, "scan recall {scan_ok}/{n}");
    assert!(index_ok * 100 >= n * 98, "index recall {index_ok}/{n}");
    // A loaded graph over int8 rows gives the same answers.
    let mut c = Bucket::new(4_000);
    c.set_quant(Quant::Int8);
    for (id, row, resp, meta, exp) in b.entries() {
        c.push_loaded(id, row, resp.to_vec(), meta.map(str::to_owned), exp)
            .unwrap();
    }
    let g = AnnIndex::decode(
        Algo::Hnsw,
        &mut crate::wire::Reader::new(&index_payload(&b)),
        false,
    )
    .unwrap();
    c.attach_index(g).unwrap();
    for v in data.iter().step_by(97) {
        let q = near(v, &mut rng);
        assert_eq!(
            b.search_index(&q, -1.0, 5, 0, Effort::ef(32)),
            c.search_index(&q, -1.0, 5, 0, Effort::ef(32))
        );
    }
    // Rows of the other kind are refused.
    let mut d = Bucket::new(10);
    d.set_quant(Quant::Int8);
    assert_eq!(
        d.push_loaded(1, RowRef::F32(&[1.0, 0.0]), vec![], None, 0),
        Err(BucketError::QuantMismatch {
            bucket: Quant::Int8,
            row: Quant::Float32
        })
    );
    assert_eq!(
        d.push_loaded(1, RowRef::I8(&[0, 0], 0.0), vec![], None, 0),
        Err(BucketError::ZeroCode)
    );
    assert!(d.is_empty());
}

/// The per-chunk minimum ids stay right through inserts, evictions, removals (row moves
/// across chunks) and expiry, so the oldest entry is found without reading every id.
#[test]
fn chunk_min_ids_track_the_oldest_entry() {
    let mut rng = Rng::new(61);
    let mut b = Bucket::new(3_000);
    let dim = 300; // 1,744 rows per chunk: two chunks
    for i in 0..6_000u64 {
        let exp = if i % 11 == 0 { 5_000 + i as i64 } else { 0 };
        b.insert(None, &rng.vec(dim), vec![], None, exp).unwrap();
        if i % 3 == 0 {
            let victim = ((rng.f32() + 1.0) * 0.5 * b.next_id() as f32) as u64;
            b.remove(victim);
        }
        if i % 500 == 0 {
            b.remove_expired(5_000 + i as i64 / 2);
        }
        for chunk in &b.chunks {
            assert_eq!(
                chunk.min_id,
                chunk.ids.iter().copied().min().unwrap(),
                "at {i}"
            );
        }
        let brute = b.entries().next().map(|e| e.0);
        assert_eq!(b.oldest_index().map(|x| b.id_at(x)), brute, "at {i}");
    }
}

#[test]
fn prompts_follow_their_entries() {
    let mut b = Bucket::new(3);
    for i in 0..3 {
        ins(&mut b, &[1.0, i as f32], "r");
    }
    assert!(b.set_prompt(1, b"hello"));
    assert!(!b.set_prompt(2, b"hello"), "one entry per prompt");
    assert!(!b.set_prompt(99, b"other"), "absent id");
    assert!(b.set_prompt(2, b"bye"));
    assert_eq!(b.id_of_prompt(b"hello"), Some(1));
    assert_eq!(b.prompt_of(2), Some(&b"bye"[..]));
    // Eviction (id 1), removal and expiry take the prompt along.
    ins(&mut b, &[1.0, 5.0], "r");
    assert_eq!(b.id_of_prompt(b"hello"), None);
    assert!(b.remove(2));
    assert_eq!(b.id_of_prompt(b"bye"), None);
    assert!(b.set_prompt(3, b"bye"));
    let full: Vec<_> = b.entries_with_tags().map(|e| (e.0 .0, e.2)).collect();
    assert_eq!(full, vec![(3, Some(&b"bye"[..])), (4, None)]);
    assert!(b.set_expire(3, 10));
    assert_eq!(b.remove_expired(10), vec![3]);
    assert_eq!(b.id_of_prompt(b"bye"), None);
    assert!(b.id_prompts.is_empty() && b.prompt_ids.is_empty());
}

#[test]
fn eviction_victims_are_the_smallest_rank_use_id() {
    // Against the definition, with many ties (hits and uses drawn from few values).
    let mut rng = Rng::new(7);
    let mut next = |m: u64| rng.next_u64() % m;
    for policy in [EvictPolicy::Lru, EvictPolicy::Lfu] {
        for _ in 0..50 {
            let mut b = Bucket::new(40);
            b.set_policy(policy);
            let n = 1 + next(40) as usize;
            for i in 0..n {
                ins(&mut b, &[1.0, i as f32], "r");
            }
            if policy == EvictPolicy::Lfu {
                for i in 0..b.len() {
                    b.last_use[i].set(next(4));
                    b.hit_counts[i].set(next(3) as u32);
                }
            } else {
                // LRU keeps its order as rows are read, removed (renumbered) and added.
                for _ in 0..next(80) {
                    match next(4) {
                        0 => b.remove(b.id_at(next(b.len() as u64) as usize)),
                        1 => ins(&mut b, &[2.0, next(9) as f32], "r").evicted.is_empty(),
                        _ => {
                            b.record_hit(next(b.len() as u64) as usize);
                            true
                        }
                    };
                    if b.is_empty() {
                        ins(&mut b, &[1.0, 1.0], "r");
                    }
                }
                let mut by_use: Vec<usize> = (0..b.len()).collect();
                by_use.sort_by_key(|&i| b.last_use[i].get());
                assert_eq!(b.use_order.order(), by_use);
            }
            let rank = |i: usize| match policy {
                EvictPolicy::Lfu => b.hit_counts[i].get(),
                _ => 0,
            };
            let want = (0..b.len()).min_by_key(|&i| (rank(i), b.last_use[i].get(), b.id_at(i)));
            assert_eq!(b.victim_index(), want);
        }
    }
}

#[test]
fn eviction_policies() {
    let fill = |policy| {
        let mut b = Bucket::new(3);
        b.set_policy(policy);
        for i in 0..3 {
            ins(&mut b, &[1.0, i as f32], "r");
        }
        b
    };
    let hit = |b: &Bucket, id: u64| b.record_hit(b.index_of(id).unwrap());
    // FIFO: the oldest, whatever was read.
    let mut b = fill(EvictPolicy::Fifo);
    hit(&b, 1);
    assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![1]);
    // LRU: 1 was read after 2 and 3 were inserted: 2 goes, then 3.
    let mut b = fill(EvictPolicy::Lru);
    hit(&b, 1);
    assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![2]);
    assert_eq!(ins(&mut b, &[2.0, 2.0], "n").evicted, vec![3]);
    assert_eq!(ins(&mut b, &[2.0, 3.0], "n").evicted, vec![1]);
    // LFU: fewest hits (1 twice, 3 once); the new entry (0 hits) goes next.
    let mut b = fill(EvictPolicy::Lfu);
    hit(&b, 1);
    hit(&b, 1);
    hit(&b, 3);
    assert_eq!(ins(&mut b, &[2.0, 1.0], "n").evicted, vec![2]);
    assert_eq!(ins(&mut b, &[2.0, 2.0], "n").evicted, vec![4]);
    assert_eq!(b.hits_at(b.index_of(1).unwrap()), 2);
    // set_max_items follows the policy too.
    assert_eq!(b.set_max_items(1), vec![5, 3]);
    assert_eq!(EvictPolicy::parse(b"LRU"), Some(EvictPolicy::Lru));
    assert_eq!(EvictPolicy::parse(b"random"), None);
    for p in [EvictPolicy::Fifo, EvictPolicy::Lru, EvictPolicy::Lfu] {
        assert_eq!(EvictPolicy::from_code(p.code()), Some(p));
        assert_eq!(EvictPolicy::parse(p.name().as_bytes()), Some(p));
    }
    assert_eq!(EvictPolicy::from_code(3), None);
}

/// The floor of a lookup: a 10-entry bucket scanned in-process (what a `SEMCACHE.GET` pays
/// whatever the bucket, besides parsing): `cargo test --release --lib small_bucket_lookup_ns
/// -- --ignored --nocapture`.
mod floor_probe {
    use super::*;
    use crate::semcache::hnsw::tests_support::{clustered, Rng};

    #[test]
    #[ignore]
    fn small_bucket_lookup_ns() {
        let mut rng = Rng::new(1);
        for (quant, dim) in [
            (Quant::Int8, 384),
            (Quant::Float32, 384),
            (Quant::Int8, 1536),
        ] {
            let data = clustered(20, dim, 4, &mut rng);
            let mut b = Bucket::new(100);
            b.set_quant(quant);
            for v in &data[..10] {
                b.insert(None, v, vec![0; 512], None, 0).unwrap();
            }
            let t = std::time::Instant::now();
            let n = 200_000;
            for i in 0..n {
                std::hint::black_box(b.search_where(&data[10 + i % 10], -1.0, 1, 0, &[]));
            }
            println!(
                "{quant:?} {dim}: {:.0} ns",
                t.elapsed().as_nanos() as f64 / n as f64
            );
        }
    }
}
