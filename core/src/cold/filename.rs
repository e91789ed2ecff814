//! Safe, stable archive file names for arbitrary (binary) keys.
//!
//! `archive_file_name(key)` = `<prefix>-<hash>.huff` where
//!
//! * `<prefix>` is a readable hint: the first 64 bytes of the key, with every
//!   byte outside `[A-Za-z0-9_.-]` replaced by `_`, and a leading `.` or `-`
//!   replaced by `_` (no hidden files, no option-like names). An empty key
//!   gives `_`.
//! * `<hash>` is the first 128 bits (32 lowercase hex digits) of SHA-256 of
//!   the full key. SHA-256 is implemented here so the mapping never changes
//!   with a toolchain or dependency upgrade; collision resistance means two
//!   keys never share a file, even when keys are chosen by a hostile client.
//!
//! The result is at most 64 + 1 + 32 + 5 = 102 bytes, a single path component
//! made of `[A-Za-z0-9_.-]` only, never `.` or `..`. The archive header also
//! stores the full key, so a reader can verify a file belongs to its key.

use sha2::{Digest, Sha256};

/// Longest readable prefix kept from the key.
const PREFIX_MAX: usize = 64;
/// Longest name accepted by [`is_safe_import_name`].
pub const NAME_MAX: usize = 200;

/// The archive file name for `key` (see module docs).
pub fn archive_file_name(key: &[u8]) -> String {
    let mut name = String::with_capacity(PREFIX_MAX + 38);
    for (i, &b) in key.iter().take(PREFIX_MAX).enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
        let lead_bad = i == 0 && (b == b'.' || b == b'-');
        name.push(if keep && !lead_bad { b as char } else { '_' });
    }
    if name.is_empty() {
        name.push('_');
    }
    name.push('-');
    let digest = sha256(key);
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".huff");
    name
}

/// True if `name` can be used as a file name inside the archive directory
/// (e.g. for an import command): not empty, not `.` or `..`, no `/`, `\` or
/// NUL, at most 200 bytes.
pub fn is_safe_import_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == b'\\' || b == 0)
}

/// SHA-256 (FIPS 180-4) of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
        // 55/56/64-byte boundaries of the padding.
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn stable_names() {
        // Frozen: these must never change across versions.
        assert_eq!(
            archive_file_name(b"abc"),
            "abc-ba7816bf8f01cfea414140de5dae2223.huff"
        );
        assert_eq!(
            archive_file_name(b""),
            "_-e3b0c44298fc1c149afbf4c8996fb924.huff"
        );
    }

    fn assert_safe(name: &str) {
        assert!(name.ends_with(".huff"));
        assert!(name.len() <= NAME_MAX);
        assert!(name != "." && name != "..");
        assert!(!name.starts_with('.') && !name.starts_with('-'));
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'));
        assert!(is_safe_import_name(name.as_bytes()));
    }

    #[test]
    fn hostile_keys() {
        let long = vec![b'x'; 100_000];
        let keys: Vec<&[u8]> = vec![
            b"",
            b".",
            b"..",
            b"../../etc/passwd",
            b"/",
            b"a/b\\c",
            b"\0",
            b"nul\0byte",
            b"\xff\xfe\x80",
            b"-rf",
            b".hidden",
            "日本語🙂".as_bytes(),
            b"conv:user:42",
            b"CON",
            &long,
        ];
        let mut seen = HashSet::new();
        for k in &keys {
            let n = archive_file_name(k);
            assert_safe(&n);
            assert_eq!(n, archive_file_name(k), "deterministic");
            assert!(seen.insert(n), "collision for {k:?}");
        }
        assert_eq!(
            archive_file_name(b"../../etc/passwd"),
            format!(
                "_._.._etc_passwd-{}.huff",
                &hex(&sha256(b"../../etc/passwd"))[..32]
            )
        );
    }

    #[test]
    fn similar_keys_differ() {
        // Same readable prefix, different keys.
        let mut seen = HashSet::new();
        for i in 0..2000u32 {
            let mut k = vec![b'k'; 80];
            k.extend_from_slice(&i.to_le_bytes());
            assert!(seen.insert(archive_file_name(&k)));
        }
        assert_ne!(archive_file_name(b"a/b"), archive_file_name(b"a_b"));
        assert_ne!(archive_file_name(b"a\0"), archive_file_name(b"a"));
    }

    #[test]
    fn import_names() {
        assert!(is_safe_import_name(b"foo.huff"));
        assert!(is_safe_import_name(b"...")); // odd but a plain file name
        assert!(is_safe_import_name("ü.huff".as_bytes()));
        assert!(is_safe_import_name(&[b'a'; 200]));
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"../x",
            b"a\\b",
            b"a\0b",
            &[b'a'; 201],
        ] {
            assert!(!is_safe_import_name(bad), "{bad:?}");
        }
    }
}
