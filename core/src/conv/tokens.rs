//! Token counts of message contents: the rule of thumb (`estimate`, a quarter of the bytes)
//! or an OpenAI vocabulary (`cl100k_base`, `o200k_base`, through `bpe-openai`, whose counts
//! equal tiktoken's). Pure: no server calls. A vocabulary is loaded on its first use (or
//! warmed on a background thread when the config names it), never while only `estimate` is used.
//! Big contents are counted on [`count_in_background`]'s threads (CONV.ADD decides which).

use crate::pool::{Job, Pool};

/// How a session counts the tokens of its turns; decided at its first CONV.ADD and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tokenizer {
    /// `ceil(bytes / 4)`: what sessions counted before exact counts existed.
    #[default]
    Estimate,
    Cl100kBase,
    O200kBase,
}

impl Tokenizer {
    pub const ALL: [Tokenizer; 3] = [
        Tokenizer::Estimate,
        Tokenizer::Cl100kBase,
        Tokenizer::O200kBase,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::Estimate => "estimate",
            Tokenizer::Cl100kBase => "cl100k_base",
            Tokenizer::O200kBase => "o200k_base",
        }
    }

    /// A name as users write it (case-insensitive).
    pub fn parse(name: &[u8]) -> Option<Tokenizer> {
        Tokenizer::ALL
            .into_iter()
            .find(|t| t.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The byte stored in session payloads.
    pub fn code(self) -> u8 {
        match self {
            Tokenizer::Estimate => 0,
            Tokenizer::Cl100kBase => 1,
            Tokenizer::O200kBase => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Tokenizer> {
        Tokenizer::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Tokens of `content`. Text that is not UTF-8 is counted as its lossy UTF-8 form (what
    /// JSON replies show). Special-token text such as `<|endoftext|>` is plain text here.
    pub fn count(self, content: &[u8]) -> u32 {
        let n = match self {
            Tokenizer::Estimate => return estimate(content.len()),
            Tokenizer::Cl100kBase => bpe_openai::cl100k_base().count(lossy(content).as_ref()),
            Tokenizer::O200kBase => bpe_openai::o200k_base().count(lossy(content).as_ref()),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Whether CONV.ADD counts a content of `len` bytes off the main thread: an exact count
    /// of more than `inline_max` bytes (`tokenize-inline-bytes`); `estimate` never.
    pub fn counts_in_background(self, len: usize, inline_max: i64) -> bool {
        self != Tokenizer::Estimate && i64::try_from(len).map_or(true, |n| n > inline_max)
    }

    /// Loads the vocabulary on a background thread, so the first CONV.ADD that needs it does
    /// not pay the load (27-64 ms) on the main thread. Nothing for `estimate`.
    pub fn warm_in_background(self) {
        if self != Tokenizer::Estimate {
            std::thread::spawn(move || self.count(b""));
        }
    }
}

/// Counts of big contents: a 16 MB content takes over a second to count, so a pool rather than
/// one thread, and other clients' big ADDs do not queue behind it.
static COUNTS: Pool = Pool::new("convcache-count");

/// Runs `job` (a count of a big content, and what follows it) on a counting thread.
pub fn count_in_background(job: Job) {
    COUNTS.submit(job);
}

/// The `estimate` count of a content of `len` bytes: a quarter, rounded up.
pub fn estimate(len: usize) -> u32 {
    u32::try_from(len.div_ceil(4)).unwrap_or(u32::MAX)
}

fn lossy(content: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for t in Tokenizer::ALL {
            assert_eq!(Tokenizer::parse(t.name().as_bytes()), Some(t));
            assert_eq!(Tokenizer::from_code(t.code()), Some(t));
        }
        assert_eq!(
            Tokenizer::parse(b"CL100K_BASE"),
            Some(Tokenizer::Cl100kBase)
        );
        assert_eq!(Tokenizer::parse(b"gpt2"), None);
        assert_eq!(Tokenizer::from_code(3), None);
    }

    #[test]
    fn only_exact_counts_of_big_contents_go_to_the_background() {
        assert!(!Tokenizer::Estimate.counts_in_background(1 << 30, 0));
        for t in [Tokenizer::Cl100kBase, Tokenizer::O200kBase] {
            assert!(!t.counts_in_background(16_384, 16_384));
            assert!(t.counts_in_background(16_385, 16_384));
            assert!(t.counts_in_background(1, 0));
            assert!(!t.counts_in_background(0, 0));
        }
    }

    #[test]
    fn background_counts_run_and_report() {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..8u32 {
            let tx = tx.clone();
            count_in_background(Box::new(move || {
                let n = Tokenizer::Cl100kBase.count("hello world ".repeat(i as usize).as_bytes());
                tx.send((i, n)).expect("receiver alive");
            }));
        }
        let mut got: Vec<(u32, u32)> = (0..8).map(|_| rx.recv().expect("a count")).collect();
        got.sort();
        let want: Vec<(u32, u32)> = (0..8)
            .map(|i| {
                (
                    i,
                    Tokenizer::Cl100kBase.count("hello world ".repeat(i as usize).as_bytes()),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_ne!(want[3].1, want[4].1);
    }

    #[test]
    fn counts() {
        assert_eq!(Tokenizer::Estimate.count(b""), 0);
        assert_eq!(Tokenizer::Estimate.count(b"12345"), 2);
        // Known tiktoken counts: "hello world" is 2 tokens in both vocabularies.
        assert_eq!(Tokenizer::Cl100kBase.count(b"hello world"), 2);
        assert_eq!(Tokenizer::O200kBase.count(b"hello world"), 2);
        // Special-token text is plain text: several tokens, not one.
        assert!(Tokenizer::Cl100kBase.count(b"<|endoftext|>") > 1);
        // Not UTF-8: counted, not refused.
        assert!(Tokenizer::Cl100kBase.count(&[0xff, 0xfe, b'a']) >= 1);
    }
}
