//! `SEG2` segments (codec byte, dictionary id) next to `SEG1` ones: round trips, damage,
//! dictionaries that are needed and missing, and the dictionary-free copy that leaves a node.

use std::sync::Arc;

use proptest::prelude::*;

use super::format::{self, *};
use super::segcodec::{self, Codec, Dict, CODEC_HUFFMAN, CODEC_ZSTD};
use crate::conv::message::Message;

fn dict() -> Arc<Dict> {
    static D: std::sync::OnceLock<Arc<Dict>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| format::serialize_turns(&batch(i * 10 + 1, 10)).unwrap())
            .collect();
        Arc::new(Dict::from_bytes(segcodec::train(&samples, 8192).unwrap()).unwrap())
    })
    .clone()
}

fn with_dict(id: u64) -> Result<Arc<Dict>, String> {
    let d = dict();
    if d.id == id {
        Ok(d)
    } else {
        Err(format!("archive dictionary {id:016x} is missing"))
    }
}

fn msg(seq: u64) -> Message {
    Message {
        seq,
        ts_ms: 1_700_000_000_000 + seq as i64 * 977,
        role: if seq.is_multiple_of(2) { "user" } else { "assistant" }.into(),
        content: format!("turn {seq}: could you explain how the cache keeps sessions warm? yes — it keeps a window of {} turns", seq % 9).into_bytes(),
        meta: seq.is_multiple_of(3).then(|| format!("{{\"model\":\"gpt\",\"n\":{seq}}}")),
        emb: seq.is_multiple_of(4).then(|| vec![0.25, -1.5, seq as f32]),
        ..Default::default()
    }
}

fn batch(from: u64, n: u64) -> Vec<Message> {
    (from..from + n).map(msg).collect()
}

/// A file of Huffman (SEG1), zstd without and with a dictionary segments.
fn mixed_file() -> (Vec<u8>, Vec<Message>) {
    let d = dict();
    let mut f = encode_header(b"k", 42);
    let parts = [
        (batch(1, 10), Codec::Huffman, None),
        (batch(11, 10), Codec::Zstd, None),
        (batch(21, 10), Codec::Zstd, Some(&*d)),
        (batch(40, 3), Codec::Huffman, None),
    ];
    let mut all = Vec::new();
    for (turns, codec, dict) in parts {
        f.extend(encode_segment_with(&turns, codec, dict).unwrap().0);
        all.extend(turns);
    }
    (f, all)
}

#[test]
fn huffman_stays_seg1_byte_for_byte() {
    let turns = batch(1, 10);
    let (seg, raw) = encode_segment_with(&turns, Codec::Huffman, None).unwrap();
    assert_eq!(seg, encode_segment(&turns));
    assert_eq!(&seg[..4], b"SEG1");
    assert_eq!(raw, serialize_turns(&turns).unwrap().len());
}

#[test]
fn mixed_codecs_in_one_file_read_back() {
    let (f, all) = mixed_file();
    let sc = scan(&f).unwrap();
    assert!(!sc.torn_tail);
    let kinds: Vec<(u8, bool)> = sc
        .segments
        .iter()
        .map(|s| (s.codec, s.dict_id != 0))
        .collect();
    assert_eq!(
        kinds,
        [
            (CODEC_HUFFMAN, false),
            (CODEC_ZSTD, false),
            (CODEC_ZSTD, true),
            (CODEC_HUFFMAN, false)
        ]
    );
    assert_eq!(sc.segments[2].dict_id, dict().id);
    let (_, turns, _) = read_all_with(&f, &with_dict).unwrap();
    assert_eq!(turns, all);
    // Without the dictionary only its segment fails, with an error that says so.
    let e = read_all(&f).unwrap_err();
    assert!(
        matches!(
            e,
            super::ArchiveError::Dictionary {
                segment: Some(2),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("{:016x}", dict().id)),
        "{e}"
    );
    assert_eq!(decode_segment(&f, &sc.segments[1]).unwrap(), batch(11, 10));
}

#[test]
fn dictionary_free_copy_reads_anywhere_and_keeps_the_rest_byte_for_byte() {
    let (f, all) = mixed_file();
    let portable = without_dicts(&f, &with_dict).unwrap().unwrap();
    let sc = scan(&portable).unwrap();
    assert!(sc.segments.iter().all(|s| s.dict_id == 0));
    assert_eq!(read_all(&portable).unwrap().1, all);
    let old = scan(&f).unwrap();
    for i in [0, 1] {
        let (a, b) = (&old.segments[i], &sc.segments[i]);
        assert_eq!(f[a.offset..a.end()], portable[b.offset..b.end()]);
    }
    // Nothing to do for a file without dictionary segments; a missing dictionary is an error.
    assert_eq!(without_dicts(&portable, &format::no_dicts).unwrap(), None);
    assert!(without_dicts(&f, &format::no_dicts).is_err());
    // A torn tail is left out.
    let mut torn = f.clone();
    torn.extend_from_slice(b"SEG2 half a header");
    let p2 = without_dicts(&torn, &with_dict).unwrap().unwrap();
    assert_eq!(p2, portable);
}

#[test]
fn truncation_and_bit_flips_in_seg2_files() {
    let (f, _) = mixed_file();
    let full = scan(&f).unwrap();
    let ends: Vec<usize> = full.segments.iter().map(|s| s.end()).collect();
    for cut in full.header_len..=f.len() {
        let sc = scan(&f[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(sc.segments.len(), whole, "cut {cut}");
        let (_, turns, _) = read_all_with(&f[..cut], &with_dict).unwrap();
        assert_eq!(turns.len() as u64, sc.turn_count());
    }
    for i in full.header_len..f.len() {
        let mut g = f.clone();
        g[i] ^= 0x10;
        let sc = scan(&g).unwrap();
        let hit = full
            .segments
            .iter()
            .position(|s| i >= s.offset && i < s.end())
            .unwrap();
        assert_eq!(sc.segments.len(), hit, "byte {i}");
        if hit + 1 < full.segments.len() {
            assert_eq!(
                sc.resync_offset,
                Some(full.segments[hit + 1].offset),
                "byte {i}"
            );
        }
        read_all_with(&g, &with_dict).unwrap();
    }
}

#[test]
fn unknown_codec_and_reserved_bits_end_the_valid_prefix() {
    let mut f = encode_header(b"k", 1);
    let good = f.len();
    let mut seg = encode_segment_with(&batch(1, 2), Codec::Zstd, None)
        .unwrap()
        .0;
    for (at, v) in [(36usize, 9u8), (37, 1)] {
        let mut s = seg.clone();
        s[at] = v;
        let crc = crc32fast::hash(&s[..48]);
        s[48..52].copy_from_slice(&crc.to_le_bytes());
        let mut g = f.clone();
        g.extend(&s);
        let sc = scan(&g).unwrap();
        assert_eq!((sc.valid_len, sc.torn_tail), (good, true));
    }
    // A zstd frame whose content size disagrees with the header is corrupt, not a panic.
    let n = seg.len();
    seg[24] ^= 1; // raw_len
    let crc = crc32fast::hash(&seg[..48]);
    seg[48..52].copy_from_slice(&crc.to_le_bytes());
    f.extend(&seg[..n]);
    let e = read_all(&f).unwrap_err();
    assert!(e.to_string().contains("zstd"), "{e}");
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        any::<i64>(),
        "[a-z]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of("[ -~]{0,40}"),
        proptest::option::of(proptest::collection::vec(-1e6f32..1e6, 0..8)),
    )
        .prop_map(|(ts_ms, role, content, meta, emb)| Message {
            seq: 0,
            ts_ms,
            role,
            content,
            meta,
            emb,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_turns_round_trip_in_every_codec(
        msgs in proptest::collection::vec(arb_message(), 1..20),
        first in 1u64..1_000_000,
        gaps in proptest::collection::vec(1u64..5, 20),
        which in 0u8..3,
    ) {
        let mut seq = first;
        let turns: Vec<Message> = msgs.into_iter().zip(gaps).map(|(mut m, g)| {
            m.seq = seq;
            seq += g;
            m
        }).collect();
        let d = dict();
        let (codec, dict) = match which {
            0 => (Codec::Huffman, None),
            1 => (Codec::Zstd, None),
            _ => (Codec::Zstd, Some(&*d)),
        };
        let mut f = encode_header(b"p", 7);
        f.extend(encode_segment_with(&turns, codec, dict).unwrap().0);
        let (_, back, sc) = read_all_with(&f, &with_dict).unwrap();
        prop_assert_eq!(back, turns.clone());
        let portable = without_dicts(&f, &with_dict).unwrap().unwrap_or(f.clone());
        prop_assert_eq!(read_all(&portable).unwrap().1, turns);
        prop_assert_eq!(sc.segments[0].dict_id != 0, which == 2);
    }

    #[test]
    fn hostile_seg2_segments_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        raw_len in any::<u32>(),
        codec in 0u8..4,
        use_dict: bool,
    ) {
        let mut seg = Vec::new();
        seg.extend_from_slice(b"SEG2");
        seg.extend_from_slice(&1u64.to_le_bytes());
        seg.extend_from_slice(&1u64.to_le_bytes());
        seg.extend_from_slice(&1u32.to_le_bytes());
        seg.extend_from_slice(&raw_len.to_le_bytes());
        seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        seg.extend_from_slice(&[codec, 0, 0, 0]);
        seg.extend_from_slice(&(if use_dict { dict().id } else { 0 }).to_le_bytes());
        let crc = crc32fast::hash(&seg);
        seg.extend_from_slice(&crc.to_le_bytes());
        seg.extend_from_slice(&payload);
        let mut f = encode_header(b"h", 1);
        f.extend(seg);
        let _ = read_all_with(&f, &with_dict);
        let _ = without_dicts(&f, &with_dict);
    }
}
