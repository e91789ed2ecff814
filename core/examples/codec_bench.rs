//! Cold-tier codec and append benchmark (run by `benches/bench_archive.py`, or
//! `cargo run --release --example codec_bench`). Prints markdown tables.
//!
//! 1. Size and speed of the archive's Huffman codec against zlib and zstd on a ~4 MB
//!    chat-history corpus, and against the order-0 entropy bound.
//! 2. Archive codec v2 (zstd segments with a shared dictionary) against today's Huffman
//!    segments on the same segments in the same run: bytes on disk, encode/decode MB/s, on
//!    the bench corpus and on English prose (Python's documentation paragraphs as turns).
//! 3. The cost of `Store::append` of a 10-turn segment to a file already holding 100 vs
//!    10,000 turns (it should not depend on the file size).
//!
//! The archive code is the core crate's (`convcache-core`), which has no server calls and
//! so runs here with the system allocator, with the same release profile.

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convcache_core::cold::segcodec::{self, Codec as SegCodec, Dict};
use convcache_core::cold::{format, huffman, store};
use convcache_core::conv::message::Message;
use convcache_core::conv::render;

const CORPUS_BYTES: usize = 4 << 20;
/// Each codec runs at least this often and this long; the median run is shown.
const MIN_RUNS: usize = 5;
const MIN_TIME: Duration = Duration::from_millis(400);
const APPENDS: usize = 200;
const SEGMENT_TURNS: usize = 10;

// ---------------------------------------------------------------------------
// corpus

/// xorshift64*: fixed seed, same corpus on every machine and run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Zipf-like index in `0..n`: rank r has weight ~ 1/(r+1).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (((n as f64 + 1.0).powf(u) - 1.0) as usize).min(n - 1)
    }
}

/// Common English words, most frequent first, plus the vocabulary of a tech-support chat.
const WORDS: &str = "the of and to a in is you that it for i on with this be are as your can \
have not or we at by if but from will an do so what all about there which when would one they \
my more use like just how your also it's should need then some could time here into don't \
other these me out than only make first very get them because see any way may new such \
example know want each does work well two used first data value function error code file \
request response server client cache memory session key message model token user query \
result return string number list array object type field table index database config option \
default setting version update change problem issue question answer help thanks please sure \
great good right let's try check run test build deploy release team project customer email \
meeting week today tomorrow yesterday morning report draft document paragraph summary \
explain describe rewrite translate compare suggest recommend improve fix add remove replace \
call send read write open close start stop create delete find search sort filter group count \
timeout latency throughput performance slow fast large small simple complex clear important \
because however therefore although instead otherwise actually probably usually already still \
python rust javascript sql json yaml docker kubernetes linux api http redis valkey postgres \
step next previous following above below before after during while until since between \
possible different same similar specific general current recent previous final initial";

const OPENERS: [&str; 12] = [
    "Sure, here's",
    "Can you",
    "I think",
    "Thanks, that",
    "Could you please",
    "Here is",
    "The short answer:",
    "Good question.",
    "Let me",
    "Why does",
    "How do I",
    "One more thing:",
];

const NON_ASCII: [&str; 8] = [
    "café",
    "naïve",
    "über",
    "São Paulo",
    "日本語",
    "🙂",
    "—",
    "€",
];

fn sentence(rng: &mut Rng, words: &[&str], out: &mut String) {
    let n = 4 + rng.below(18);
    out.push_str(OPENERS[rng.below(OPENERS.len())]);
    for i in 0..n {
        out.push(' ');
        match rng.below(60) {
            0 => out.push_str(NON_ASCII[rng.below(NON_ASCII.len())]),
            1 | 2 => out.push_str(&rng.below(10_000).to_string()),
            3 => {
                out.push('`');
                out.push_str(words[rng.zipf(words.len())]);
                out.push_str("()`");
            }
            _ => out.push_str(words[rng.zipf(words.len())]),
        }
        if i + 1 < n && rng.below(9) == 0 {
            out.push(',');
        }
    }
    out.push_str([".", ".", ".", "?", "!", ":"][rng.below(6)]);
}

fn content(rng: &mut Rng, role: &str, words: &[&str]) -> String {
    let mut s = String::new();
    match role {
        "tool" => {
            s.push_str(&format!(
                "{{\"status\":\"ok\",\"rows\":{},\"took_ms\":{},\"items\":[",
                rng.below(500),
                rng.below(2000)
            ));
            for i in 0..1 + rng.below(5) {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!(
                    "{{\"id\":{},\"name\":\"{}\",\"score\":0.{}}}",
                    rng.below(100_000),
                    words[rng.zipf(words.len())],
                    rng.below(1000)
                ));
            }
            s.push_str("]}");
        }
        _ => {
            let paragraphs = if role == "assistant" {
                1 + rng.below(4)
            } else {
                1
            };
            for p in 0..paragraphs {
                if p > 0 {
                    s.push_str("\n\n");
                }
                if role == "assistant" && rng.below(5) == 0 {
                    s.push_str("```python\ndef handler(request):\n    value = cache.get(request.key)\n    if value is None:\n        value = compute(request)\n    return value\n```\n");
                }
                for i in 0..1 + rng.below(if role == "assistant" { 6 } else { 3 }) {
                    if i > 0 {
                        s.push(' ');
                    }
                    if role == "assistant" && rng.below(6) == 0 {
                        s.push_str("\n- ");
                    }
                    sentence(rng, words, &mut s);
                }
            }
        }
    }
    s
}

/// Realistic chat turns: user / assistant / occasional tool and system turns, English-like
/// text (Zipf-distributed words, punctuation, numbers, a little non-ASCII, code blocks),
/// increasing timestamps, and metadata like a chat client sends.
fn chat_turns(approx_json_bytes: usize) -> Vec<Message> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng(0x5eed_c0de_2026_1126);
    let mut turns = Vec::new();
    let mut ts = 1_764_000_000_000i64;
    let mut bytes = 0;
    let mut seq = 0;
    while bytes < approx_json_bytes {
        seq += 1;
        let role = match seq % 2 {
            _ if seq % 40 == 1 => "system",
            _ if rng.below(12) == 0 => "tool",
            0 => "assistant",
            _ => "user",
        };
        let text = content(&mut rng, role, &words);
        ts += 500 + rng.below(90_000) as i64;
        let meta = match role {
            "assistant" => Some(format!(
                "{{\"model\":\"gpt-4o-mini\",\"tokens\":{},\"latency_ms\":{},\"finish\":\"stop\"}}",
                text.len() / 4,
                100 + rng.below(3000)
            )),
            "user" => Some(format!(
                "{{\"client\":\"web\",\"lang\":\"en\",\"user_id\":\"u{}\"}}",
                1000 + rng.below(50)
            )),
            "tool" => Some("{\"tool\":\"search_orders\"}".to_string()),
            _ => None,
        };
        bytes += text.len() + 80 + meta.as_ref().map_or(0, |m| m.len());
        turns.push(Message {
            seq,
            ts_ms: ts,
            role: role.to_string(),
            content: text.into_bytes(),
            meta,
            emb: None,
            ..Default::default()
        });
    }
    turns
}

/// The turns as the module shows them (`CONV.HISTORY ... FORMAT full`): one JSON array.
fn render_json(turns: &[Message]) -> Vec<u8> {
    let size = render::SizeHint::of_messages(turns);
    render::render(
        render::Format::Full,
        turns.iter().map(Message::as_turn),
        size,
    )
}

// ---------------------------------------------------------------------------
// codecs

fn order0_entropy_bytes(data: &[u8]) -> f64 {
    let mut h = [0u64; 256];
    for &b in data {
        h[b as usize] += 1;
    }
    let n = data.len() as f64;
    h.iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / n).log2())
        .sum::<f64>()
        / 8.0
}

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for i in 0..10 {
        let b = buf[*pos];
        *pos += 1;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// Bytes of a `CCH1` blob before its bitstreams: header, code-length table, stream sizes
/// (layout in src/archive/huffman.rs). What a coder at the entropy bound would also pay.
fn huffman_overhead(blob: &[u8]) -> usize {
    let mode = blob[4];
    let mut pos = 5;
    varint(blob, &mut pos);
    pos += 4;
    if mode < 2 {
        return pos;
    }
    let start = pos;
    let mut nib = 0usize;
    let next = |nib: &mut usize| {
        let b = blob[start + *nib / 2];
        let v = if nib.is_multiple_of(2) {
            b & 15
        } else {
            b >> 4
        };
        *nib += 1;
        v as usize
    };
    let mut s = 0;
    while s < 256 {
        s += match next(&mut nib) {
            12 => next(&mut nib) + 2,
            13 => {
                let hi = next(&mut nib);
                ((hi << 4) | next(&mut nib)) + 18
            }
            _ => 1,
        };
    }
    pos = start + nib.div_ceil(2);
    if mode == 3 {
        for _ in 0..3 {
            varint(blob, &mut pos);
        }
    }
    pos
}

type EncodeFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;
/// Blob and original length to data.
type DecodeFn = Box<dyn Fn(&[u8], usize) -> Vec<u8>>;

struct Codec {
    name: &'static str,
    encode: EncodeFn,
    decode: DecodeFn,
}

fn codecs() -> Vec<Codec> {
    use flate2::Compression;
    let mut v = vec![Codec {
        name: "convcache huffman",
        encode: Box::new(huffman::encode),
        decode: Box::new(|b, _| huffman::decode(b).expect("huffman decode")),
    }];
    for level in [1u32, 6] {
        v.push(Codec {
            name: if level == 1 { "zlib -1" } else { "zlib -6" },
            encode: Box::new(move |d| {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(d.len() / 2),
                    Compression::new(level),
                );
                e.write_all(d).expect("zlib");
                e.finish().expect("zlib")
            }),
            decode: Box::new(|b, n| {
                let mut d = flate2::write::ZlibDecoder::new(Vec::with_capacity(n));
                d.write_all(b).expect("zlib");
                d.finish().expect("zlib")
            }),
        });
    }
    for level in [1i32, 3] {
        v.push(Codec {
            name: if level == 1 { "zstd -1" } else { "zstd -3" },
            encode: Box::new(move |d| zstd::bulk::compress(d, level).expect("zstd")),
            decode: Box::new(|b, n| zstd::bulk::decompress(b, n).expect("zstd")),
        });
    }
    v
}

/// Median seconds of `f` over >= MIN_RUNS runs and >= MIN_TIME, after one warm-up run.
fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut runs = Vec::new();
    let begun = Instant::now();
    while runs.len() < MIN_RUNS || begun.elapsed() < MIN_TIME {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    median(&mut runs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn codec_table(title: &str, data: &[u8], goals: bool) {
    let ent = order0_entropy_bytes(data);
    let mb = data.len() as f64 / 1e6;
    println!(
        "\n#### {title}: {} bytes, order-0 entropy {:.0} bytes ({:.3} bits/byte)\n",
        data.len(),
        ent,
        ent * 8.0 / data.len() as f64
    );
    println!("| codec | size | % of input | size / order-0 bound | encode MB/s | decode MB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut huff = None;
    for c in codecs() {
        let blob = (c.encode)(data);
        assert_eq!((c.decode)(&blob, data.len()), data, "{} round trip", c.name);
        let enc = median_secs(|| {
            black_box((c.encode)(black_box(data)));
        });
        let dec = median_secs(|| {
            black_box((c.decode)(black_box(&blob), data.len()));
        });
        let bound = if c.name.starts_with("convcache") {
            let table = huffman_overhead(&blob);
            let r = blob.len() as f64 / (ent + table as f64);
            huff = Some((r, mb / enc, mb / dec, table));
            format!("{r:.4} (bound + {table} B header/table)")
        } else {
            format!("{:.4}", blob.len() as f64 / ent)
        };
        println!(
            "| {} | {} | {:.1}% | {} | {:.0} | {:.0} |",
            c.name,
            blob.len(),
            100.0 * blob.len() as f64 / data.len() as f64,
            bound,
            mb / enc,
            mb / dec
        );
    }
    if goals {
        let (r, e, d, _) = huff.expect("huffman row");
        let yes = |ok: bool| if ok { "yes" } else { "**NO**" };
        println!("\nGoals for convcache huffman on this corpus:");
        println!(
            "- size within 2% of order-0 bound + table: {:.2}% over -> {}",
            (r - 1.0) * 100.0,
            yes(r <= 1.02)
        );
        println!("- encode >= 300 MB/s: {e:.0} -> {}", yes(e >= 300.0));
        println!("- decode >= 500 MB/s: {d:.0} -> {}", yes(d >= 500.0));
    }
}

/// The archive as the timer writes it: every SEGMENT_TURNS turns coded on their own, each
/// with its own table. Compared with zstd -3 on the same pieces.
fn segment_line(turns: &[Message]) {
    let raws: Vec<Vec<u8>> = turns
        .chunks(SEGMENT_TURNS)
        .map(|c| format::serialize_turns(c).expect("serialize"))
        .collect();
    let raw_total: usize = raws.iter().map(Vec::len).sum();
    let mb = raw_total as f64 / 1e6;
    let blobs: Vec<Vec<u8>> = raws.iter().map(|r| huffman::encode(r)).collect();
    let huff: usize = blobs.iter().map(Vec::len).sum();
    let bound: f64 = raws
        .iter()
        .zip(&blobs)
        .map(|(r, b)| order0_entropy_bytes(r) + huffman_overhead(b) as f64)
        .sum();
    let zstd3: usize = raws
        .iter()
        .map(|r| zstd::bulk::compress(r, 3).expect("zstd").len())
        .sum();
    let enc = median_secs(|| {
        for r in &raws {
            black_box(huffman::encode(black_box(r)));
        }
    });
    let dec = median_secs(|| {
        for b in &blobs {
            black_box(huffman::decode(black_box(b)).expect("decode"));
        }
    });
    println!(
        "\nThe same payload cut into {}-turn segments as the timer writes them ({} segments, \
         {} bytes raw on average): huffman {:.1}% of raw, {:.4} x (bound + per-segment \
         header/table), encode {:.0} MB/s, decode {:.0} MB/s; zstd -3 per segment {:.1}% of raw.",
        SEGMENT_TURNS,
        raws.len(),
        raw_total / raws.len(),
        100.0 * huff as f64 / raw_total as f64,
        huff as f64 / bound,
        mb / enc,
        mb / dec,
        100.0 * zstd3 as f64 / raw_total as f64
    );
}

// ---------------------------------------------------------------------------
// codec v2: zstd segments with a shared dictionary

/// English prose as chat turns: the paragraphs of Python's own documentation
/// (`pydoc_data.topics`, shipped with every CPython), user and assistant in turn, each with
/// META as a chat client sends it. None when python3 is not there.
fn prose_turns() -> Option<Vec<Message>> {
    const SCRIPT: &str = r"
import sys, pydoc_data.topics as t
for k in sorted(t.topics):
    for p in t.topics[k].split('\n\n'):
        p = ' '.join(p.split())
        if len(p) >= 40:
            sys.stdout.write(p + '\0')
";
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut ts = 1_764_000_000_000i64;
    let turns: Vec<Message> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| {
            ts += 1000 + (i as i64 * 7919) % 60_000;
            let user = i % 2 == 0;
            Message {
                seq: i as u64 + 1,
                ts_ms: ts,
                role: if user { "user" } else { "assistant" }.into(),
                content: p.to_vec(),
                meta: Some(if user {
                    format!(
                        "{{\"client\":\"web\",\"lang\":\"en\",\"user_id\":\"u{}\"}}",
                        1000 + i % 37
                    )
                } else {
                    format!(
                        "{{\"model\":\"gpt-4o-mini\",\"tokens\":{},\"latency_ms\":{}}}",
                        p.len() / 4,
                        100 + (i * 31) % 2900
                    )
                }),
                emb: None,
                ..Default::default()
            }
        })
        .collect();
    (turns.len() > 100).then_some(turns)
}

/// One codec's figures on the measured segments.
struct V2Row {
    name: &'static str,
    disk: usize,
    enc_mbs: f64,
    dec_mbs: f64,
}

/// Archives of SESSION_TURNS-turn sessions written as the timer writes them (a file header,
/// then SEGMENT_TURNS-turn segments), for the second half of `turns`; the dictionary is
/// trained on the first half (other conversations), as the server trains it on what it
/// archived before. Returns (content bytes, raw bytes, rows: huffman, zstd, zstd+dict).
fn v2_rows(turns: &[Message]) -> (usize, usize, Vec<V2Row>) {
    const SESSION_TURNS: usize = 20;
    let half = turns.len() / 2;
    let train: Vec<Vec<u8>> = turns[..half]
        .chunks(SEGMENT_TURNS)
        .map(|c| format::serialize_turns(c).expect("serialize"))
        .collect();
    let dict = Dict::from_bytes(segcodec::train(&train, segcodec::DICT_BYTES).expect("train"))
        .expect("dict");
    let test = &turns[half..];
    let content: usize = test.iter().map(|m| m.content.len()).sum();
    let raws: Vec<Vec<u8>> = test
        .chunks(SEGMENT_TURNS)
        .map(|c| format::serialize_turns(c).expect("serialize"))
        .collect();
    let raw_total: usize = raws.iter().map(Vec::len).sum();
    let mb = raw_total as f64 / 1e6;
    let mut rows = Vec::new();
    for (name, codec, d) in [
        ("huffman (SEG1, today)", SegCodec::Huffman, None),
        ("zstd-3, no dictionary", SegCodec::Zstd, None),
        ("zstd-3 + 110 KiB dictionary", SegCodec::Zstd, Some(&dict)),
    ] {
        let mut disk = 0;
        for (i, session) in test.chunks(SESSION_TURNS).enumerate() {
            disk += format::encode_header(format!("chat:{i}").as_bytes(), i as i64).len();
            for seg in session.chunks(SEGMENT_TURNS) {
                disk += format::encode_segment_with(seg, codec, d)
                    .expect("encode")
                    .0
                    .len();
            }
        }
        let blobs: Vec<Vec<u8>> = raws
            .iter()
            .map(|r| match codec {
                SegCodec::Huffman => huffman::encode(r),
                SegCodec::Zstd => segcodec::zstd_compress(r, d),
            })
            .collect();
        let enc = median_secs(|| {
            for r in &raws {
                black_box(match codec {
                    SegCodec::Huffman => huffman::encode(black_box(r)),
                    SegCodec::Zstd => segcodec::zstd_compress(black_box(r), d),
                });
            }
        });
        let dec = median_secs(|| {
            for (b, r) in blobs.iter().zip(&raws) {
                black_box(match codec {
                    SegCodec::Huffman => huffman::decode(black_box(b)).expect("decode"),
                    SegCodec::Zstd => {
                        segcodec::zstd_decompress(black_box(b), d, r.len()).expect("decode")
                    }
                });
            }
        });
        rows.push(V2Row {
            name,
            disk,
            enc_mbs: mb / enc,
            dec_mbs: mb / dec,
        });
    }
    (content, raw_total, rows)
}

fn v2_table(title: &str, turns: &[Message]) -> Vec<V2Row> {
    let (content, raw, rows) = v2_rows(turns);
    println!(
        "\n### {title}\n\n{} turns measured in {SEGMENT_TURNS}-turn segments of 20-turn sessions \
         (dictionary trained on the other {} turns); content {content} bytes, serialized {raw} bytes\n",
        turns.len() - turns.len() / 2,
        turns.len() / 2
    );
    println!("| codec | disk bytes | / content | / raw | vs huffman | encode MB/s | decode MB/s | enc vs huffman | dec vs huffman |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let h = (rows[0].disk as f64, rows[0].enc_mbs, rows[0].dec_mbs);
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
            r.name,
            r.disk,
            r.disk as f64 / content as f64,
            r.disk as f64 / raw as f64,
            r.disk as f64 / h.0,
            r.enc_mbs,
            r.dec_mbs,
            r.enc_mbs / h.1,
            r.dec_mbs / h.2
        );
    }
    rows
}

/// Codec v2 against today's Huffman segments, in one run, with the issue's goals.
fn v2_section(chat: &[Message]) {
    println!("\n## Archive codec v2 (SEG2: zstd with the archive's dictionary) vs SEG1 Huffman");
    let bench = v2_table("Bench chat corpus (synthetic, fixed seed)", chat);
    let ok = |b: bool| if b { "ok" } else { "MISSED" };
    let d = &bench[2];
    let ratio = d.disk as f64 / bench[0].disk as f64;
    println!("\nGoals:");
    println!(
        "- bench corpus: disk <= 0.55x huffman: {ratio:.3}x {}",
        ok(ratio <= 0.55)
    );
    println!(
        "- encode >= 1.0x huffman: {:.2}x {}; decode >= 1.5x: {:.2}x {}",
        d.enc_mbs / bench[0].enc_mbs,
        ok(d.enc_mbs >= bench[0].enc_mbs),
        d.dec_mbs / bench[0].dec_mbs,
        ok(d.dec_mbs >= 1.5 * bench[0].dec_mbs)
    );
    match prose_turns() {
        Some(prose) => {
            let content: usize = prose[prose.len() / 2..]
                .iter()
                .map(|m| m.content.len())
                .sum();
            let rows = v2_table(
                "Prose chat corpus (Python's documentation paragraphs as turns, per-turn META)",
                &prose,
            );
            let r = rows[2].disk as f64 / content as f64;
            println!(
                "\nGoal: prose corpus disk <= 0.40 of content: {r:.3} {} (huffman {:.3}); encode {:.2}x, decode {:.2}x huffman",
                ok(r <= 0.40),
                rows[0].disk as f64 / content as f64,
                rows[2].enc_mbs / rows[0].enc_mbs,
                rows[2].dec_mbs / rows[0].dec_mbs
            );
        }
        None => println!("\n(prose corpus skipped: python3 with pydoc_data not found)"),
    }
}

// ---------------------------------------------------------------------------
// appends

/// Writes an archive file holding `turns` as segments of SEGMENT_TURNS, straight (fast
/// setup; the store learns its state from the file on the first append, as after a restart).
fn prefill_file(path: &Path, key: &[u8], created_ms: i64, turns: &[Message]) {
    let mut bytes = format::encode_header(key, created_ms);
    for seg in turns.chunks(SEGMENT_TURNS) {
        bytes.extend_from_slice(&format::encode_segment(seg));
    }
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("prefill");
}

struct AppendRun {
    first_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    max_ms: f64,
    file_bytes: u64,
}

/// APPENDS appends of SEGMENT_TURNS turns each to every file of `helds` (a file already
/// holding that many turns), the files taking turns so disk noise hits them alike.
fn append_runs(root: &Path, turns: &[Message], helds: &[usize]) -> Vec<AppendRun> {
    let created = 1_764_000_000_000;
    // Sequence numbers continue past the held turns; contents cycle through the corpus.
    let turn = |i: usize| Message {
        seq: i as u64 + 1,
        ..turns[i % turns.len()].clone()
    };
    let files: Vec<(Vec<u8>, PathBuf)> = helds
        .iter()
        .map(|held| {
            let key = format!("bench:append:{held}").into_bytes();
            let path = store::session_path(root, 0, &key);
            prefill_file(
                &path,
                &key,
                created,
                &(0..*held).map(turn).collect::<Vec<_>>(),
            );
            (key, path)
        })
        .collect();
    let mut st = store::Store::new();
    let mut times = vec![Vec::with_capacity(APPENDS); helds.len()];
    let mut first_ms = vec![0.0; helds.len()];
    for a in 0..=APPENDS {
        for j in 0..helds.len() {
            let f = if a % 2 == 0 { j } else { helds.len() - 1 - j };
            let (key, path) = &files[f];
            let start = helds[f] + a * SEGMENT_TURNS;
            let seg: Vec<Message> = (start..start + SEGMENT_TURNS).map(turn).collect();
            let t = Instant::now();
            let out = st.append(path, key, created, 0, &seg).expect("append");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(out.turns_written, SEGMENT_TURNS as u64);
            if a == 0 {
                first_ms[f] = ms; // reads and scans the file: the first append after a restart
            } else {
                times[f].push(ms);
            }
        }
    }
    files
        .iter()
        .zip(helds)
        .zip(times)
        .zip(first_ms)
        .map(|((((_key, path), held), mut t), first_ms)| {
            let last = (held + (APPENDS + 1) * SEGMENT_TURNS) as u64;
            let (back, _) = store::read_turns(path, created, last, 0, u64::MAX).expect("read");
            assert_eq!(back.len() as u64, last);
            AppendRun {
                first_ms,
                median_ms: median(&mut t),
                p90_ms: percentile(&mut t, 0.9),
                max_ms: percentile(&mut t, 1.0),
                file_bytes: fs::metadata(path).expect("stat").len(),
            }
        })
        .collect()
}

fn append_table(turns: &[Message]) {
    let disk = std::env::var_os("BENCH_ARCHIVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("convcache-append-{}", std::process::id()));
    let shm = Path::new("/dev/shm").join(format!("convcache-append-{}", std::process::id()));
    let seg_bytes = format::encode_segment(&turns[..SEGMENT_TURNS]).len();
    println!(
        "\n#### Store::append of one {SEGMENT_TURNS}-turn segment (~{seg_bytes} bytes), \
         {APPENDS} appends per row\n"
    );
    println!("| where (fsync) | turns already in file | first append (reads the file) ms | median ms | p90 ms | max ms | file after |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut places = vec![(
        format!(
            "{} (fsync to disk)",
            disk.parent().unwrap_or(&disk).display()
        ),
        disk.clone(),
    )];
    if Path::new("/dev/shm").is_dir() {
        places.push(("/dev/shm (tmpfs: fsync is free)".to_string(), shm.clone()));
    }
    for (label, root) in &places {
        let helds = [100, 10_000];
        for (held, r) in helds.iter().zip(append_runs(root, turns, &helds)) {
            println!(
                "| {label} | {held} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} MB |",
                r.first_ms,
                r.median_ms,
                r.p90_ms,
                r.max_ms,
                r.file_bytes as f64 / 1e6
            );
        }
        let _ = fs::remove_dir_all(root);
    }
}

fn main() {
    let t0 = Instant::now();
    let turns = chat_turns(CORPUS_BYTES);
    let json = render_json(&turns);
    let raw = format::serialize_turns(&turns).expect("serialize");
    println!(
        "corpus: {} turns rendered as the module's JSON (CONV.HISTORY FORMAT full), fixed seed; \
         speeds in MB/s of uncompressed data (1 MB = 10^6 bytes), median of >= {MIN_RUNS} runs",
        turns.len()
    );
    println!(
        "zlib = flate2 with its default miniz_oxide backend; zstd = zstd crate, libzstd {}",
        zstd::zstd_safe::version_string()
    );
    codec_table("Chat-history JSON corpus", &json, true);
    codec_table(
        "Archive segment payload of the same turns (format::serialize_turns, what a CCAR segment codes)",
        &raw,
        false,
    );
    segment_line(&turns);
    v2_section(&turns);
    append_table(&turns);
    eprintln!("codec_bench: {:.1} s", t0.elapsed().as_secs_f64());
}
