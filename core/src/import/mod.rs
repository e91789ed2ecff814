//! lix-open-cache archives, read for `CONV.IMPORT`: the `CAv1` container ([`lix`]) and its
//! legacy `HCv1` Huffman payload ([`hcv1`]). Readers of outside bytes: every input is hostile.
pub mod hcv1;
pub mod lix;
