//! The archive files in `tests/fixtures/v1`, written by the module of main fd408e9 (CCH1
//! Huffman segments), decode to exactly the turns that module was given.

use std::path::PathBuf;

use super::format;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1")
}

#[test]
fn v1_archive_files_decode_exactly() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    for kind in ["valkey", "redis"] {
        for (key, archived) in [("cold", 12usize), ("mixed", 9)] {
            let dir = fixtures().join(kind).join("convcache-archive/0");
            let file = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&format!("{key}-"))
                })
                .unwrap();
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(&bytes[..4], b"CCAR");
            let (header, turns, scan) = format::read_all(&bytes).unwrap();
            assert_eq!(header.key, key.as_bytes());
            assert!(!scan.torn_tail);
            assert!(scan.segments.iter().all(|s| s.count > 0));
            assert_eq!(turns.len(), archived);
            let want = expected[key].as_array().unwrap();
            for (i, (t, w)) in turns.iter().zip(want).enumerate() {
                let n = i as u64 + 1;
                assert_eq!(t.seq, n);
                assert_eq!(t.seq, w["seq"].as_u64().unwrap());
                assert_eq!(t.ts_ms, w["ts"].as_i64().unwrap());
                assert_eq!(t.role, w["role"].as_str().unwrap());
                assert_eq!(t.content, w["content"].as_str().unwrap().as_bytes());
                let meta: serde_json::Value =
                    serde_json::from_str(t.meta.as_deref().unwrap()).unwrap();
                assert_eq!(meta, w["meta"]);
                assert_eq!(t.emb, Some(vec![n as f32, 1.0, -2.5]));
            }
        }
    }
}
