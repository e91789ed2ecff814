//! Entry tags (`TAG name value`, any number) and lookup filters (`FILTER name value`): one
//! bucket holding many scopes (users, models...) that a lookup or a delete selects.
//!
//! An entry's tags are kept as one compact blob, pairs sorted and deduplicated:
//! `varint len, name, varint len, value` per pair. A filter matches an entry that has every
//! one of its pairs (binary-safe, exact bytes).

use crate::wire::{put_bytes, Reader};

/// Longest tag name and value accepted, in bytes.
pub const MAX_NAME: usize = 256;
pub const MAX_VALUE: usize = 4096;
/// Most pairs on one entry or in one filter.
pub const MAX_PAIRS: usize = 64;

/// A tag pair as given by a client.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Checks one pair; the error names the option (`TAG` or `FILTER`).
pub fn check_pair(option: &str, name: &[u8], value: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{option} name must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!("{option} name is longer than {MAX_NAME} bytes"));
    }
    if value.len() > MAX_VALUE {
        return Err(format!("{option} value is longer than {MAX_VALUE} bytes"));
    }
    Ok(())
}

/// The blob of a set of pairs (sorted, duplicates dropped); `None` for no pair.
pub fn encode(pairs: &[Pair]) -> Option<Box<[u8]>> {
    if pairs.is_empty() {
        return None;
    }
    let mut sorted: Vec<&Pair> = pairs.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut out = Vec::new();
    for (n, v) in sorted {
        put_bytes(&mut out, n);
        put_bytes(&mut out, v);
    }
    Some(out.into_boxed_slice())
}

/// The pairs of a blob, in order; `None` when the blob is malformed (hostile input).
pub fn decode(blob: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut r = Reader::new(blob);
    let mut out = Vec::new();
    while !r.at_end() {
        let n = r.bytes().ok()?;
        let v = r.bytes().ok()?;
        if n.is_empty() || n.len() > MAX_NAME || v.len() > MAX_VALUE || out.len() >= MAX_PAIRS {
            return None;
        }
        out.push((n, v));
    }
    // Sorted and without duplicates, as `encode` writes them.
    if out.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    Some(out)
}

/// Whether an entry's tags hold every pair of `filter`.
pub fn matches(tags: Option<&[u8]>, filter: &[Pair]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Some(blob) = tags else { return false };
    filter.iter().all(|(n, v)| has(blob, n, v))
}

fn has(blob: &[u8], name: &[u8], value: &[u8]) -> bool {
    let mut r = Reader::new(blob);
    while !r.at_end() {
        let (Ok(n), Ok(v)) = (r.bytes(), r.bytes()) else {
            return false;
        };
        if n == name && v == value {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> Pair {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn encode_match_decode() {
        let blob = encode(&[p("user", "u1"), p("model", "gpt"), p("user", "u1")]).unwrap();
        let pairs = decode(&blob).unwrap();
        assert_eq!(
            pairs,
            vec![(&b"model"[..], &b"gpt"[..]), (&b"user"[..], &b"u1"[..])]
        );
        assert!(matches(Some(&blob), &[]));
        assert!(matches(Some(&blob), &[p("user", "u1")]));
        assert!(matches(Some(&blob), &[p("user", "u1"), p("model", "gpt")]));
        assert!(!matches(Some(&blob), &[p("user", "u2")]));
        assert!(!matches(Some(&blob), &[p("user", "u1"), p("model", "x")]));
        assert!(!matches(Some(&blob), &[p("use", "ru1")])); // lengths delimit
        assert!(!matches(None, &[p("user", "u1")]));
        assert!(matches(None, &[]));
        assert!(encode(&[]).is_none());
        // Binary-safe.
        let bin = encode(&[(vec![0, 1], vec![255, 0])]).unwrap();
        assert!(matches(Some(&bin), &[(vec![0, 1], vec![255, 0])]));
    }

    #[test]
    fn checks_and_hostile_blobs() {
        assert_eq!(
            check_pair("TAG", b"", b"v").unwrap_err(),
            "TAG name must not be empty"
        );
        assert!(check_pair("FILTER", &[b'a'; 257], b"v")
            .unwrap_err()
            .starts_with("FILTER name"));
        assert!(check_pair("TAG", b"a", &[0; 4097])
            .unwrap_err()
            .contains("value"));
        let blob = encode(&[p("a", "1"), p("b", "2")]).unwrap();
        for cut in 1..blob.len() {
            // (4 bytes is the first pair alone: a valid blob.)
            assert_eq!(decode(&blob[..cut]).is_some(), cut == 4, "cut {cut}");
        }
        // Unsorted or duplicated pairs are not what encode writes.
        let mut swapped = Vec::new();
        put_bytes(&mut swapped, b"b");
        put_bytes(&mut swapped, b"2");
        put_bytes(&mut swapped, b"a");
        put_bytes(&mut swapped, b"1");
        assert!(decode(&swapped).is_none());
    }
}
