//! The legacy lix `HCv1` blob decoder (what lix-open-cache's CAv1 archives hold, read by
//! CONV.IMPORT): `"HCv1"`, u32 LE original length, u16 LE symbol count, (symbol, length)
//! pairs, u32 LE padding, then the MSB-first canonical Huffman bit stream. Decode only.

use crate::cold::huffman::HuffmanError;

const LEGACY_MAGIC: &[u8; 4] = b"HCv1";

/// Decodes a legacy lix `HCv1` blob: `"HCv1"`, u32 LE original length, u16 LE
/// symbol count, `(symbol, length)` byte pairs sorted by (length, symbol),
/// u32 LE padding bit count, then the canonical-Huffman bitstream MSB-first.
/// Code lengths are unlimited (1..=255). An empty input is written by lix as
/// `"HCv1"`, length 0, symbol count 0 and nothing else. As in lix, decoding
/// stops after the declared number of symbols (trailing bits are ignored);
/// a stream that ends early, a duplicate symbol, a zero length or an
/// over-subscribed code table is an error.
pub fn decode_lix_hcv1(blob: &[u8]) -> Result<Vec<u8>, HuffmanError> {
    if blob.len() < 8 {
        return Err(HuffmanError::Truncated("HCv1 header"));
    }
    if &blob[..4] != LEGACY_MAGIC {
        return Err(HuffmanError::BadMagic);
    }
    let orig_len = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
    if orig_len == 0 {
        return Ok(Vec::new());
    }
    let nsym = match blob.get(8..10) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]) as usize,
        None => return Err(HuffmanError::Truncated("HCv1 symbol count")),
    };
    if nsym == 0 || nsym > 256 {
        return Err(HuffmanError::BadTable("HCv1 symbol count"));
    }
    let table_end = 10 + 2 * nsym;
    let pairs = blob
        .get(10..table_end)
        .ok_or(HuffmanError::Truncated("HCv1 table"))?;
    let padding = match blob.get(table_end..table_end + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
        None => return Err(HuffmanError::Truncated("HCv1 padding")),
    };
    let stream = &blob[table_end + 4..];
    let total_bits = (stream.len() as u64 * 8)
        .checked_sub(padding)
        .ok_or(HuffmanError::BadStream("HCv1 padding exceeds stream"))?;
    if orig_len as u64 > total_bits {
        return Err(HuffmanError::BadLength {
            declared: orig_len as u64,
            blob_len: blob.len(),
        });
    }

    // count per length, symbols in canonical order.
    let mut count = [0u32; 256];
    let mut symbols = Vec::with_capacity(nsym);
    let mut seen = [false; 256];
    let mut prev = (0u8, 0u8);
    for (i, p) in pairs.chunks_exact(2).enumerate() {
        let (sym, len) = (p[0], p[1]);
        if len == 0 {
            return Err(HuffmanError::BadTable("HCv1 zero code length"));
        }
        if seen[sym as usize] {
            return Err(HuffmanError::BadTable("HCv1 duplicate symbol"));
        }
        if i > 0 && (len, sym) < (prev.1, prev.0) {
            return Err(HuffmanError::BadTable("HCv1 table not sorted"));
        }
        prev = (sym, len);
        seen[sym as usize] = true;
        count[len as usize] += 1;
        symbols.push(sym);
    }
    // Kraft check without big integers: `left` = unused codes at this length,
    // capped once it exceeds what the remaining symbols could ever fill.
    let mut left: u64 = 1;
    for &c in count.iter().skip(1) {
        left = (left * 2).min(1 << 20);
        left = left
            .checked_sub(c as u64)
            .ok_or(HuffmanError::BadTable("HCv1 over-subscribed code"))?;
    }
    let max_len = (1..256).rev().find(|&l| count[l] > 0).unwrap_or(0);

    // Fast path table for codes up to FAST bits; entry = sym | len << 8, 0 = slow.
    const FAST: u32 = 10;
    let mut fast = vec![0u16; 1 << FAST];
    {
        let mut code: u32 = 0;
        let mut idx = 0usize;
        for len in 1..=FAST.min(max_len as u32) {
            for _ in 0..count[len as usize] {
                let sym = symbols[idx];
                idx += 1;
                let shift = FAST - len;
                let base = (code << shift) as usize;
                for e in &mut fast[base..base + (1usize << shift)] {
                    *e = sym as u16 | ((len as u16) << 8);
                }
                code += 1;
            }
            code <<= 1;
        }
    }

    let mut out = Vec::with_capacity(orig_len);
    let mut bitpos: u64 = 0; // next bit to read (MSB-first)
    let bit_at = |p: u64| -> u32 { ((stream[(p >> 3) as usize] >> (7 - (p & 7))) & 1) as u32 };
    while out.len() < orig_len {
        // Fast path: peek FAST bits if available.
        if bitpos + FAST as u64 <= total_bits {
            let byte = (bitpos >> 3) as usize;
            let mut w: u32 = 0;
            for k in 0..3 {
                w = (w << 8) | *stream.get(byte + k).unwrap_or(&0) as u32;
            }
            let peek = (w >> (24 - FAST - (bitpos & 7) as u32)) & ((1 << FAST) - 1);
            let e = fast[peek as usize];
            if e != 0 {
                out.push(e as u8);
                bitpos += (e >> 8) as u64;
                continue;
            }
        }
        // Slow canonical decode, any length: d = code - first_code(len).
        let mut d: u64 = 0;
        let mut index = 0usize;
        let mut len = 1usize;
        loop {
            if bitpos >= total_bits {
                return Err(HuffmanError::BadStream("HCv1 stream ended early"));
            }
            d |= bit_at(bitpos) as u64;
            bitpos += 1;
            let c = count[len] as u64;
            if d < c {
                out.push(symbols[index + d as usize]);
                break;
            }
            index += c as usize;
            d -= c;
            len += 1;
            // d only grows by doubling; once above 256 no code can match.
            if len > max_len || d > 256 {
                return Err(HuffmanError::BadStream("HCv1 invalid code"));
            }
            d <<= 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cold::huffman::histogram;
    use crate::cold::huffman::tests::{chat_corpus, rng};
    use proptest::prelude::*;

    /// Reference HCv1 encoder mirroring lix's (unlimited Huffman lengths).
    pub(crate) fn lix_encode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"HCv1");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        if data.is_empty() {
            out.extend_from_slice(&[0, 0]);
            return out;
        }
        let freq = histogram(data);
        let mut lens = [0u8; 256];
        let used: Vec<usize> = (0..256).filter(|&s| freq[s] > 0).collect();
        if used.len() == 1 {
            lens[used[0]] = 1;
        } else {
            // plain Huffman via repeated merging of (weight, symbols)
            let mut nodes: Vec<(u64, Vec<usize>)> =
                used.iter().map(|&s| (freq[s], vec![s])).collect();
            while nodes.len() > 1 {
                nodes.sort_by_key(|n| std::cmp::Reverse(n.0));
                let a = nodes.pop().unwrap();
                let b = nodes.pop().unwrap();
                for &s in a.1.iter().chain(b.1.iter()) {
                    lens[s] += 1;
                }
                let mut syms = a.1;
                syms.extend(b.1);
                nodes.push((a.0 + b.0, syms));
            }
        }
        let mut sorted: Vec<(u8, u8)> = used.iter().map(|&s| (s as u8, lens[s])).collect();
        sorted.sort_by_key(|&(s, l)| (l, s));
        // canonical codes as big bit-vectors (lengths may exceed 64)
        let mut code: Vec<bool> = Vec::new();
        let mut codes: Vec<Vec<bool>> = vec![Vec::new(); 256];
        let mut first = true;
        for &(s, l) in &sorted {
            if first {
                code = vec![false; l as usize];
                first = false;
            } else {
                // increment
                let mut i = code.len();
                loop {
                    i -= 1;
                    if code[i] {
                        code[i] = false;
                    } else {
                        code[i] = true;
                        break;
                    }
                }
                while code.len() < l as usize {
                    code.push(false);
                }
            }
            codes[s as usize] = code.clone();
        }
        out.extend_from_slice(&(sorted.len() as u16).to_le_bytes());
        for &(s, l) in &sorted {
            out.push(s);
            out.push(l);
        }
        let mut bits = Vec::new();
        for &b in data {
            bits.extend_from_slice(&codes[b as usize]);
        }
        let padding = (8 - bits.len() % 8) % 8;
        out.extend_from_slice(&(padding as u32).to_le_bytes());
        for chunk in bits.chunks(8) {
            let mut byte = 0u8;
            for (i, &bit) in chunk.iter().enumerate() {
                if bit {
                    byte |= 0x80 >> i;
                }
            }
            out.push(byte);
        }
        out
    }

    #[test]
    fn lix_reference_roundtrips() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"aaaaaaaaaaaaa".to_vec(),
            (0..=255u8).collect(),
            chat_corpus(20_000),
        ];
        // Fibonacci frequencies over 40 symbols: codes up to 39 bits.
        let mut fib = Vec::new();
        let (mut a, mut b) = (1usize, 1usize);
        for sym in 0..28u8 {
            fib.extend(std::iter::repeat_n(sym, a));
            let c = a + b;
            a = b;
            b = c;
        }
        cases.push(fib);
        for c in &cases {
            let blob = lix_encode(c);
            assert_eq!(&decode_lix_hcv1(&blob).unwrap(), c);
        }
    }

    #[test]
    fn lix_deep_codes_over_64_bits() {
        // Hand-made table: lengths 1..=70 for 70 symbols + one extra at 70.
        let mut blob = Vec::new();
        blob.extend_from_slice(b"HCv1");
        let msg: Vec<u8> = vec![69, 70, 0, 1, 69, 70];
        blob.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        blob.extend_from_slice(&71u16.to_le_bytes());
        for s in 0..70u8 {
            blob.push(s);
            blob.push(s + 1);
        }
        blob.push(70);
        blob.push(70);
        // canonical codes: sym k (<69) = k ones then a zero; sym 69 = 69 ones + 0; sym 70 = 70 ones
        let mut bits: Vec<bool> = Vec::new();
        for &s in &msg {
            let ones = if s == 70 { 70 } else { s as usize };
            bits.extend(std::iter::repeat_n(true, ones));
            if s != 70 {
                bits.push(false);
            }
        }
        let padding = (8 - bits.len() % 8) % 8;
        blob.extend_from_slice(&(padding as u32).to_le_bytes());
        for chunk in bits.chunks(8) {
            let mut byte = 0u8;
            for (i, &bit) in chunk.iter().enumerate() {
                if bit {
                    byte |= 0x80 >> i;
                }
            }
            blob.push(byte);
        }
        assert_eq!(decode_lix_hcv1(&blob).unwrap(), msg);
    }

    #[test]
    fn lix_corruption_never_panics() {
        let blob = lix_encode(&chat_corpus(5_000));
        let mut seed = 11;
        for _ in 0..3000 {
            let mut b = blob.clone();
            for _ in 0..1 + rng(&mut seed) % 3 {
                let i = (rng(&mut seed) % b.len() as u64) as usize;
                b[i] ^= 1 << (rng(&mut seed) % 8);
            }
            let _ = decode_lix_hcv1(&b);
        }
        for cut in 0..blob.len() {
            let _ = decode_lix_hcv1(&blob[..cut]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::conv::message::strategies::cases(300)))]
        #[test]
        fn prop_roundtrip_small_alphabet(data in proptest::collection::vec(0u8..5, 0..9000)) {
            prop_assert_eq!(decode_lix_hcv1(&lix_encode(&data)).unwrap(), data);
        }

        #[test]
        fn prop_corruption_never_panics(data in proptest::collection::vec(0u8..40, 1..6000), cut in any::<usize>()) {
            let mut legacy = lix_encode(&data);
            let n = legacy.len();
            legacy[cut % n] ^= 0x10;
            let _ = decode_lix_hcv1(&legacy);
            let _ = decode_lix_hcv1(&legacy[..cut % (n + 1)]);
        }

        #[test]
        fn prop_garbage_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if data.len() >= 4 {
                data[..4].copy_from_slice(LEGACY_MAGIC);
            }
            let _ = decode_lix_hcv1(&data);
        }
    }
}
