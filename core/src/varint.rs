//! LEB128 varints and zigzag, the one home of the integer encoding every format of the module
//! uses (session and semcache codecs, archive segments, the HNSW graph, Huffman headers).

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos` and moves `*pos` past it; `None` when the input ends inside it or
/// it is overlong (more than 10 bytes, or bits beyond 64): hostile input, never a panic.
pub fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Maps signed to unsigned so small magnitudes of either sign stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut pos = 0;
            assert_eq!(get(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
        for v in [0, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
    }

    #[test]
    fn refuses_truncated_and_overlong() {
        let mut pos = 0;
        assert_eq!(get(&[0x80, 0x80], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get(&[0xff; 11], &mut pos), None);
        // 10th byte carrying bits past 64.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        let mut pos = 0;
        assert_eq!(get(&over, &mut pos), None);
    }
}
