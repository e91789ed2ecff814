//! The cold tier's pure parts: on-disk conversation archives (the main-thread glue that
//! drives them is the module's `conv/cold.rs`).
//!
//! * [`format`]: the appendable, recoverable `CCAR` archive file (docs/archive-format.md).
//! * [`segcodec`]: which codec a new segment is written with (Huffman or zstd).
//! * [`huffman`]: length-limited canonical Huffman codec (codec 1).
//! * [`dict`]: the per-directory zstd dictionary (codec 2), trained on the archive's turns.
//! * [`store`]: a session's archive file: append, read, recover, delete.
//! * [`worker`]: the I/O threads that run store tasks off the main thread.
//! * [`filename`]: safe, stable file names for arbitrary keys.

pub mod dict;
pub mod evicted;
pub mod filename;
pub mod format;
pub mod huffman;
#[cfg(test)]
mod seg2_tests;
pub mod segcodec;
pub mod store;
pub mod uncounted;
#[cfg(test)]
mod v1_fixtures;
pub mod worker;

use std::fmt;

pub use huffman::HuffmanError;

/// Errors of the archive readers. The `Display` text is meant for operators
/// ("corrupt archive: checksum mismatch in segment 3").
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveError {
    /// The file does not start with the expected magic.
    BadMagic { expected: &'static str },
    /// A format version this code does not read.
    UnsupportedVersion(u16),
    /// The data ends before a fixed-size part (`what`).
    Truncated { what: &'static str },
    /// A CRC32 does not match; `segment` is the segment index if any.
    ChecksumMismatch {
        what: &'static str,
        segment: Option<usize>,
    },
    /// Structurally invalid content.
    Corrupt {
        segment: Option<usize>,
        detail: String,
    },
    /// The Huffman payload of a segment (or lix blob) did not decode.
    Huffman {
        segment: Option<usize>,
        source: HuffmanError,
    },
    /// The lix JSON payload is not what was expected.
    Json(String),
    /// The turn count in a header differs from the decoded payload.
    TurnCountMismatch { expected: u64, found: u64 },
    /// A caller-side misuse (e.g. empty segment) when writing.
    InvalidInput(String),
    /// The dictionary a segment was compressed with is missing, truncated or corrupt.
    Dictionary {
        segment: Option<usize>,
        detail: String,
    },
}

fn seg(f: &mut fmt::Formatter<'_>, segment: &Option<usize>) -> fmt::Result {
    match segment {
        Some(i) => write!(f, " in segment {i}"),
        None => Ok(()),
    }
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::BadMagic { expected } => {
                write!(f, "not an archive: expected magic {expected:?}")
            }
            ArchiveError::UnsupportedVersion(v) => {
                write!(f, "unsupported archive format version {v}")
            }
            ArchiveError::Truncated { what } => write!(f, "corrupt archive: truncated {what}"),
            ArchiveError::ChecksumMismatch { what, segment } => {
                write!(f, "corrupt archive: checksum mismatch ({what})")?;
                seg(f, segment)
            }
            ArchiveError::Corrupt { segment, detail } => {
                write!(f, "corrupt archive: {detail}")?;
                seg(f, segment)
            }
            ArchiveError::Huffman { segment, source } => {
                write!(f, "corrupt archive: {source}")?;
                seg(f, segment)
            }
            ArchiveError::Json(e) => write!(f, "corrupt archive: bad JSON payload: {e}"),
            ArchiveError::TurnCountMismatch { expected, found } => write!(
                f,
                "corrupt archive: header says {expected} turns, payload has {found}"
            ),
            ArchiveError::InvalidInput(e) => write!(f, "invalid archive input: {e}"),
            ArchiveError::Dictionary { segment, detail } => {
                write!(f, "{detail}")?;
                seg(f, segment)
            }
        }
    }
}

impl std::error::Error for ArchiveError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_messages() {
        let e = ArchiveError::ChecksumMismatch {
            what: "segment payload",
            segment: Some(3),
        };
        assert_eq!(
            e.to_string(),
            "corrupt archive: checksum mismatch (segment payload) in segment 3"
        );
        let e = ArchiveError::Truncated { what: "header" };
        assert_eq!(e.to_string(), "corrupt archive: truncated header");
        let e = ArchiveError::Huffman {
            segment: None,
            source: HuffmanError::ChecksumMismatch,
        };
        assert!(e.to_string().contains("checksum"));
    }
}
