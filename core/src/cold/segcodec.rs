//! Segment payload codecs. A `SEG1` segment is always the order-0 Huffman codec (`CCH1`); a
//! `SEG2` segment names its codec in a byte, and for zstd the dictionary it was compressed
//! with (0 = none). Pure Rust over libzstd; no server calls.
//!
//! Dictionaries are content-addressed: a dictionary's id is its zstd dictionary id (which the
//! dictionary builder derives from the content) in the high 32 bits and the CRC32 of its bytes
//! in the low 32 bits, so a file whose bytes do not match its name is detected.

use std::cell::RefCell;

use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

/// Codec byte of a `SEG2` segment.
pub const CODEC_HUFFMAN: u8 = 1;
pub const CODEC_ZSTD: u8 = 2;

/// zstd level of archive segments: 3 (zstd's default) gains ~10% over level 1 on chat turns
/// at an encoding speed still above the Huffman codec's on 10-turn segments.
pub const ZSTD_LEVEL: i32 = 3;

/// Size of a trained dictionary: zstd's own default (110 KiB). On English prose chat turns it
/// takes the archive from 0.40 to 0.38 of the content against 64 KiB (codec_bench), for a
/// prepared dictionary of well under a megabyte per node.
pub const DICT_BYTES: usize = 112_640;

/// Decoded segments larger than this are not allocated up front (a hostile header could
/// claim 4 GiB); they grow as the frame decodes.
const PREALLOC_LIMIT: usize = 64 << 20;

/// zstd dictionary magic (little-endian `0xEC30A437`).
const DICT_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];

/// The codec new segments are written with (`convcache.archive-codec`): 0 = zstd, 1 = Huffman.
static WRITE_HUFFMAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn write_codec() -> Codec {
    if WRITE_HUFFMAN.load(std::sync::atomic::Ordering::Relaxed) {
        Codec::Huffman
    } else {
        Codec::Zstd
    }
}

pub fn set_write_codec(c: Codec) {
    WRITE_HUFFMAN.store(c == Codec::Huffman, std::sync::atomic::Ordering::Relaxed);
}

/// How the archive writes new segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `SEG1` + `CCH1`, byte for byte what earlier releases wrote.
    Huffman,
    /// `SEG2` + zstd, with the archive's dictionary when there is one.
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Huffman => "huffman",
            Codec::Zstd => "zstd",
        }
    }
    pub fn parse(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "huffman" => Some(Codec::Huffman),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A zstd dictionary, prepared for both directions.
pub struct Dict {
    pub id: u64,
    pub bytes: Vec<u8>,
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dict({:016x}, {} bytes)", self.id, self.bytes.len())
    }
}

/// The content address of dictionary bytes, if they are a zstd dictionary.
pub fn dict_id_of(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
        return None;
    }
    let zid = zstd_safe::get_dict_id_from_dict(bytes)?.get();
    Some((u64::from(zid) << 32) | u64::from(crc32fast::hash(bytes)))
}

impl Dict {
    /// Prepares dictionary bytes; refuses what is not a zstd dictionary.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Dict, String> {
        let id = dict_id_of(&bytes).ok_or("not a zstd dictionary")?;
        let cdict = CDict::try_create(&bytes, ZSTD_LEVEL).ok_or("zstd refused the dictionary")?;
        let ddict = DDict::try_create(&bytes).ok_or("zstd refused the dictionary")?;
        Ok(Dict {
            id,
            bytes,
            cdict,
            ddict,
        })
    }
}

thread_local! {
    // One context per thread, reused: creating one per 10-turn segment would cost more than
    // compressing it.
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd-compresses `raw` (with `dict` when given) into one frame holding its content size.
pub fn zstd_compress(raw: &[u8], dict: Option<&Dict>) -> Vec<u8> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        let cctx = c.get_or_insert_with(CCtx::create);
        let r = match dict {
            Some(d) => cctx.compress_using_cdict(&mut out, raw, &d.cdict),
            None => cctx.compress(&mut out, raw, ZSTD_LEVEL),
        };
        // The buffer holds compress_bound bytes: compression cannot run out of room.
        r.expect("zstd compression into a compress_bound buffer");
    });
    out
}

/// Decodes a zstd frame that must hold exactly `raw_len` bytes.
pub fn zstd_decompress(
    payload: &[u8],
    dict: Option<&Dict>,
    raw_len: usize,
) -> Result<Vec<u8>, String> {
    match zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => return Err(format!("zstd frame holds {n} bytes, header says {raw_len}")),
        _ => return Err("not a zstd frame with a content size".into()),
    }
    if raw_len > PREALLOC_LIMIT {
        return zstd_decompress_stream(payload, dict, raw_len);
    }
    let mut out = Vec::with_capacity(raw_len);
    DCTX.with(|c| {
        let mut c = c.borrow_mut();
        let dctx = c.get_or_insert_with(DCtx::create);
        let r = match dict {
            Some(d) => dctx.decompress_using_ddict(&mut out, payload, &d.ddict),
            None => dctx.decompress(&mut out, payload),
        };
        r.map_err(|code| format!("zstd: {}", zstd_safe::get_error_name(code)))
    })?;
    if out.len() != raw_len {
        return Err(format!(
            "zstd decoded {} bytes, header says {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

fn zstd_decompress_stream(
    payload: &[u8],
    dict: Option<&Dict>,
    raw_len: usize,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let err = |e: std::io::Error| format!("zstd: {e}");
    let mut out = Vec::new();
    let mut dec = match dict {
        Some(d) => zstd::stream::read::Decoder::with_dictionary(payload, &d.bytes).map_err(err)?,
        None => zstd::stream::read::Decoder::with_dictionary(payload, &[]).map_err(err)?,
    }
    .single_frame();
    (&mut dec)
        .take(raw_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() != raw_len {
        return Err(format!(
            "zstd decoded {} bytes, header says {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

/// Trains a dictionary of at most `max_size` bytes on `samples` (serialized segments).
pub fn train(samples: &[Vec<u8>], max_size: usize) -> Result<Vec<u8>, String> {
    zstd::dict::from_samples(samples, max_size)
        .map_err(|e| format!("zstd dictionary training: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_dict() -> &'static Dict {
        static DICT: std::sync::OnceLock<Dict> = std::sync::OnceLock::new();
        DICT.get_or_init(|| {
        let samples: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                format!(
                    "{{\"role\":\"user\",\"content\":\"message {i}: how do I configure the cache for session {}? thanks\"}} assistant: You can set the window with CONFIG SET convcache.window {}",
                    i * 7,
                    i % 13
                )
                .into_bytes()
            })
            .collect();
        Dict::from_bytes(train(&samples, 4096).unwrap()).unwrap()
        })
    }

    #[test]
    fn dict_ids_are_content_addresses() {
        let d = sample_dict();
        assert_eq!(dict_id_of(&d.bytes), Some(d.id));
        let mut other = d.bytes.clone();
        let n = other.len() - 1;
        other[n] ^= 1;
        assert_ne!(dict_id_of(&other), Some(d.id));
        assert_eq!(dict_id_of(b"not a dictionary at all"), None);
        assert!(Dict::from_bytes(b"garbage!".to_vec()).is_err());
    }

    #[test]
    fn dictionary_helps_small_inputs_and_is_required() {
        let d = sample_dict();
        let raw = b"message 9999: how do I configure the cache for session 5? thanks".to_vec();
        let plain = zstd_compress(&raw, None);
        let with = zstd_compress(&raw, Some(d));
        assert!(
            with.len() < plain.len(),
            "{} vs {}",
            with.len(),
            plain.len()
        );
        assert_eq!(zstd_decompress(&with, Some(d), raw.len()).unwrap(), raw);
        assert!(zstd_decompress(&with, None, raw.len()).is_err());
        assert!(zstd_decompress(&plain, None, raw.len() + 1).is_err());
        assert!(zstd_decompress(b"\x28\xb5\x2f\xfd", None, 0).is_err());
    }

    #[test]
    fn big_frames_take_the_streaming_path() {
        let raw: Vec<u8> = (0..PREALLOC_LIMIT + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let z = zstd_compress(&raw, None);
        assert_eq!(zstd_decompress(&z, None, raw.len()).unwrap(), raw);
    }

    proptest! {
        #[test]
        fn zstd_round_trips(raw in proptest::collection::vec(any::<u8>(), 0..4000), use_dict: bool) {
            let d = sample_dict();
            let dict = use_dict.then_some(d);
            let z = zstd_compress(&raw, dict);
            prop_assert_eq!(zstd_decompress(&z, dict, raw.len()).unwrap(), raw);
        }

        #[test]
        fn hostile_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300), raw_len in 0usize..5000) {
            let d = sample_dict();
            let _ = zstd_decompress(&payload, None, raw_len);
            let _ = zstd_decompress(&payload, Some(d), raw_len);
        }
    }
}
