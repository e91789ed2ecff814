//! Reader for lix_open_cache (2.x) `CAv1` conversation archives, for import.
//!
//! Layout, as written by `ConversationArchive._write_raw` (little-endian):
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `"CAv1"` |
//! | 4      | 8    | created_at, f64 unix seconds |
//! | 12     | 8    | updated_at, f64 unix seconds |
//! | 20     | 4    | num_turns, u32 |
//! | 24     | ...  | `HCv1` Huffman blob (see [`decode_lix_hcv1`]) |
//!
//! The decoded payload is `json.dumps(turns, ensure_ascii=False,
//! separators=(",", ":"))` in UTF-8: an array of objects
//! `{"role", "content", "timestamp" (float seconds), "metadata": {...},
//! "embedding": [...] (optional)}`.
//!
//! Mapping to [`LixTurn`]: `role` must be a string; `content` a string
//! (`null` gives `""`, any other JSON value is kept as its compact JSON
//! text); `timestamp` seconds are rounded to milliseconds (missing or not a
//! number: the archive's `created_at`); `metadata` that is missing, `null`
//! or `{}` gives `None`, another object its compact JSON text (keys sorted),
//! anything else is an error; `embedding` is `null`/missing or an array of
//! numbers converted to f32. Top-level `name` and `tool_call_id` (strings) and `tool_calls`
//! (an array, kept as compact JSON) are kept when a turn has them (lix itself writes none).

use super::hcv1::decode_lix_hcv1;
use crate::cold::ArchiveError;
use serde_json::Value;

const MAGIC: &[u8; 4] = b"CAv1";
const HEADER_LEN: usize = 24;

/// One turn of a lix archive.
#[derive(Debug, Clone, PartialEq)]
pub struct LixTurn {
    pub role: String,
    pub content: String,
    pub ts_ms: i64,
    /// Compact JSON object text; `None` when absent or empty.
    pub meta: Option<String>,
    pub emb: Option<Vec<f32>>,
    /// Chat-API fields, when a turn has them as top-level keys (lix itself writes none).
    pub name: Option<String>,
    pub tool_call_id: Option<String>,
    /// Compact JSON array text.
    pub tool_calls: Option<String>,
}

/// A decoded `CAv1` archive.
#[derive(Debug, Clone, PartialEq)]
pub struct LixArchive {
    pub created_ms: i64,
    pub updated_ms: i64,
    pub turns: Vec<LixTurn>,
}

fn secs_to_ms(s: f64, what: &str) -> Result<i64, ArchiveError> {
    let ms = (s * 1000.0).round();
    // i64 range check; f64 cannot represent i64::MAX exactly, stay below.
    if !ms.is_finite() || ms.abs() >= 9.2e18 {
        return Err(ArchiveError::Corrupt {
            segment: None,
            detail: format!("lix {what} out of range: {s}"),
        });
    }
    Ok(ms as i64)
}

fn json_err(i: usize, what: &str) -> ArchiveError {
    ArchiveError::Json(format!("turn {i}: {what}"))
}

fn convert_turn(i: usize, v: Value, default_ms: i64) -> Result<LixTurn, ArchiveError> {
    let Value::Object(mut o) = v else {
        return Err(json_err(i, "not an object"));
    };
    let role = match o.remove("role") {
        Some(Value::String(s)) => s,
        _ => return Err(json_err(i, "missing or non-string \"role\"")),
    };
    let content = match o.remove("content") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    let ts_ms = match o.get("timestamp").and_then(Value::as_f64) {
        Some(t) => secs_to_ms(t, "timestamp")?,
        None => default_ms,
    };
    let meta = match o.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(m @ Value::Object(_)) => Some(m.to_string()),
        Some(_) => return Err(json_err(i, "\"metadata\" is not an object")),
    };
    let emb = match o.remove("embedding") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| json_err(i, "non-numeric \"embedding\" element"))?,
        ),
        Some(_) => return Err(json_err(i, "\"embedding\" is not an array")),
    };
    let mut text = |key: &str| match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(json_err(i, &format!("\"{key}\" is not a string"))),
    };
    let name = text("name")?;
    let tool_call_id = text("tool_call_id")?;
    let tool_calls = match o.remove("tool_calls") {
        None | Some(Value::Null) => None,
        Some(a @ Value::Array(_)) => Some(a.to_string()),
        Some(_) => return Err(json_err(i, "\"tool_calls\" is not an array")),
    };
    Ok(LixTurn {
        role,
        content,
        ts_ms,
        meta,
        emb,
        name,
        tool_call_id,
        tool_calls,
    })
}

/// Reads a whole lix `CAv1` file. Any corruption gives an error.
pub fn read_cav1(bytes: &[u8]) -> Result<LixArchive, ArchiveError> {
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(ArchiveError::BadMagic { expected: "CAv1" });
    }
    if bytes.len() < HEADER_LEN {
        return Err(ArchiveError::Truncated { what: "lix header" });
    }
    let f64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[o..o + 8]);
        f64::from_le_bytes(a)
    };
    let created_ms = secs_to_ms(f64_at(4), "created_at")?;
    let updated_ms = secs_to_ms(f64_at(12), "updated_at")?;
    let num_turns = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]) as u64;
    let payload =
        decode_lix_hcv1(&bytes[HEADER_LEN..]).map_err(|source| ArchiveError::Huffman {
            segment: None,
            source,
        })?;
    let value: Value =
        serde_json::from_slice(&payload).map_err(|e| ArchiveError::Json(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(ArchiveError::Json("payload is not a JSON array".into()));
    };
    if items.len() as u64 != num_turns {
        return Err(ArchiveError::TurnCountMismatch {
            expected: num_turns,
            found: items.len() as u64,
        });
    }
    let turns = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| convert_turn(i, v, created_ms))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LixArchive {
        created_ms,
        updated_ms,
        turns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lix");
        std::fs::read(p.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    fn expected() -> serde_json::Map<String, Value> {
        match serde_json::from_slice(&fixture("expected.json")).unwrap() {
            Value::Object(m) => m,
            _ => panic!("expected.json"),
        }
    }

    #[test]
    fn real_lix_archives_match_lix_own_reader() {
        let exp = expected();
        for name in ["chat", "batch", "empty", "skewed"] {
            let a = read_cav1(&fixture(&format!("{name}.huff"))).unwrap();
            assert_eq!(a.created_ms, 1_700_000_000_250, "{name}");
            assert_eq!(a.updated_ms, 1_700_000_000_250, "{name}");
            let want = exp[name].as_array().unwrap();
            assert_eq!(a.turns.len(), want.len(), "{name}");
            for (t, w) in a.turns.iter().zip(want) {
                assert_eq!(t.role, w["role"].as_str().unwrap());
                assert_eq!(t.content, w["content"].as_str().unwrap());
                assert_eq!(
                    t.ts_ms,
                    (w["timestamp"].as_f64().unwrap() * 1000.0).round() as i64
                );
                let wm = &w["metadata"];
                if wm.as_object().unwrap().is_empty() {
                    assert_eq!(t.meta, None);
                } else {
                    let got: Value = serde_json::from_str(t.meta.as_ref().unwrap()).unwrap();
                    assert_eq!(&got, wm);
                }
                match w.get("embedding") {
                    None => assert_eq!(t.emb, None),
                    Some(e) => {
                        let e: Vec<f32> = e
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap() as f32)
                            .collect();
                        assert_eq!(t.emb.as_ref(), Some(&e));
                    }
                }
            }
        }
        let chat = read_cav1(&fixture("chat.huff")).unwrap();
        assert_eq!(chat.turns[1].ts_ms, 1_700_000_002_125);
        assert!(chat.turns[1].content.contains("🙂 日本語も"));
        assert_eq!(
            chat.turns[1].meta.as_deref(),
            Some(r#"{"model":"gpt-4o","nested":{"a":[1,2.5,null,true]},"tokens":42}"#)
        );
        assert_eq!(chat.turns[2].emb, Some(vec![0.5, -0.25, 1e-3, 3.0]));
        assert_eq!(chat.turns[3].content, "");
    }

    #[test]
    fn real_hcv1_blobs() {
        for name in ["empty", "one_symbol", "fib", "text"] {
            let blob = fixture(&format!("{name}.hcv1"));
            let want = fixture(&format!("{name}.hcv1.expected"));
            assert_eq!(decode_lix_hcv1(&blob).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn corrupt_files_error_never_panic() {
        let f = fixture("chat.huff");
        for cut in 0..f.len() {
            assert!(read_cav1(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut x = 12345u64;
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            let _ = read_cav1(&g);
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let j = (x >> 33) as usize % g.len();
            g[j] = (x >> 20) as u8;
            let _ = read_cav1(&g);
        }
        // num_turns mismatch is reported.
        let mut g = f.clone();
        g[20] = 9;
        assert!(matches!(
            read_cav1(&g),
            Err(ArchiveError::TurnCountMismatch {
                expected: 9,
                found: 4
            })
        ));
        assert!(matches!(
            read_cav1(b"CAv2...."),
            Err(ArchiveError::BadMagic { .. })
        ));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(300)))]

        /// Edits and truncations of a real lix archive, and plain garbage behind a valid
        /// header, never panic.
        #[test]
        fn prop_mutated_files_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..5),
            cut in any::<usize>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let f = fixture("chat.huff");
            let mut g = f.clone();
            for (at, byte) in edits {
                let i = at % g.len();
                g[i] = byte;
            }
            let _ = read_cav1(&g);
            let _ = read_cav1(&g[..cut % (g.len() + 1)]);
            let mut h = f[..HEADER_LEN].to_vec();
            h.extend_from_slice(b"HCv1");
            h.extend_from_slice(&garbage);
            let _ = read_cav1(&h);
        }
    }

    #[test]
    fn lenient_field_mapping() {
        let v: Value = serde_json::from_str(
            r#"{"role":"tool","content":{"x":1},"metadata":null,"embedding":null}"#,
        )
        .unwrap();
        let t = convert_turn(0, v, 77).unwrap();
        assert_eq!(
            (t.content.as_str(), t.ts_ms, t.meta, t.emb),
            (r#"{"x":1}"#, 77, None, None)
        );
        let v: Value = serde_json::from_str(r#"{"content":"x"}"#).unwrap();
        assert!(convert_turn(0, v, 0).is_err());
        let v: Value = serde_json::from_str(r#"{"role":"u","metadata":[1]}"#).unwrap();
        assert!(convert_turn(0, v, 0).is_err());
        let v: Value = serde_json::from_str(r#"{"role":"u","embedding":["a"]}"#).unwrap();
        assert!(convert_turn(0, v, 0).is_err());
    }
}
