//! A session's in-memory turns in one contiguous, appendable buffer (listpack-like): one heap
//! block per session instead of one struct and four allocations per turn. Pure; readers get
//! borrowed [`Turn`] views decoded on iteration (a few varints per turn).
//!
//! Record layout, one after the other from `start` (integers are LEB128 varints):
//!
//! | field            | when                | encoding                                         |
//! |------------------|---------------------|--------------------------------------------------|
//! | flags            | always              | u8, bits below                                   |
//! | role             | always              | index: [`BUILTIN_ROLES`], then the session's own |
//! | seq gap          | `SEQ_GAP`           | seq - previous seq - 1 (else seq = previous + 1) |
//! | ts delta         | always              | zigzag(ts_ms - previous ts_ms)                   |
//! | tokens           | always              | the content's token count                        |
//! | content          | always              | length, bytes                                    |
//! | meta             | `META`              | length, UTF-8 bytes                              |
//! | emb              | `EMB`               | dim, dim * 4 bytes f32 little-endian (unaligned) |
//! | name             | `NAME`              | length, UTF-8 bytes                              |
//! | tool_call_id     | `TOOL_CALL_ID`      | length, UTF-8 bytes                              |
//! | tool_calls       | `TOOL_CALLS`        | length, UTF-8 bytes (a compact JSON array)       |
//!
//! Flag bits: 0 `META`, 1 `EMB`, 2 `SEQ_GAP`, 3 `NAME`, 4 `TOOL_CALL_ID`, 5 `TOOL_CALLS`,
//! 6 `PLAIN` (the content goes into JSON as it is: checked once here, not on every read);
//! bit 7 would mean a second flags byte follows (never set today).
//! "Previous" for the first live record is the arena's
//! base (the last dropped turn, or 0/0). Only this file reads or writes the layout; it is never
//! persisted (RDB/AOF use `codec.rs`), so it can change freely between releases.

use std::sync::atomic::{AtomicBool, Ordering};

use super::render::json_plain;
use super::turn::{Emb, Turn};
use crate::varint::put as put_varint;

const META: u8 = 1;
const EMB: u8 = 1 << 1;
const SEQ_GAP: u8 = 1 << 2;
const NAME: u8 = 1 << 3;
const TOOL_CALL_ID: u8 = 1 << 4;
const TOOL_CALLS: u8 = 1 << 5;
const PLAIN: u8 = 1 << 6;

/// Roles every session shares without storing them: index 0.. in records.
pub const BUILTIN_ROLES: [&str; 6] = [
    "user",
    "assistant",
    "system",
    "tool",
    "developer",
    "function",
];

/// Whether the server's allocator is jemalloc (Redis, most Valkey builds) rather than the C
/// library's malloc (some Valkey builds); the shell finds out at load time.
static JEMALLOC: AtomicBool = AtomicBool::new(true);

pub fn set_allocator_is_jemalloc(yes: bool) {
    JEMALLOC.store(yes, Ordering::Relaxed);
}

/// What an allocation of `n` bytes really costs, as INFO used_memory counts it (MEMORY USAGE
/// must stay within 10% of that): jemalloc's size classes (16-byte steps up to 128, then four
/// per doubling), or glibc's 16-byte chunks with an 8-byte header.
pub fn alloc_size(n: usize) -> usize {
    if JEMALLOC.load(Ordering::Relaxed) {
        jemalloc_size(n)
    } else {
        libc_size(n)
    }
}

fn libc_size(n: usize) -> usize {
    match n {
        0 => 0,
        _ => (n + 8).div_ceil(16).max(2) * 16,
    }
}

fn jemalloc_size(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=128 => n.div_ceil(16) * 16,
        _ => {
            let group = usize::BITS - (n - 1).leading_zeros() - 1; // 2^group < n <= 2^(group+1)
            let step = 1usize << (group - 2);
            n.div_ceil(step) * step
        }
    }
}

/// The turns, oldest first. Appends are amortized O(1); dropping a prefix is O(dropped) plus an
/// occasional compaction (when the dead prefix outgrows the live part).
#[derive(Clone, Default)]
pub struct Arena {
    buf: Vec<u8>,
    /// Offset of the first live record; bytes before it are dead.
    start: usize,
    len: usize,
    /// (seq, ts) the first live record's deltas are relative to.
    base: (u64, i64),
    /// (seq, ts) of the newest record, what the next one is relative to (== base when empty).
    last: (u64, i64),
    /// Roles past the built-in ones, in first-use order.
    roles: Vec<Box<str>>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when they hold the same turns (however the bytes are laid out).
impl PartialEq for Arena {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_len_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Varint length of `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Arena {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the live records (more than their contents, metas and embeddings together).
    pub fn live_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes of the heap this arena holds (buffer capacity and its own roles).
    pub fn heap_bytes(&self) -> usize {
        alloc_size(self.buf.capacity())
            + alloc_size(self.roles.capacity() * std::mem::size_of::<Box<str>>())
            + self
                .roles
                .iter()
                .map(|r| alloc_size(r.len()))
                .sum::<usize>()
    }

    /// Seq of the newest turn.
    pub fn last_seq(&self) -> Option<u64> {
        (self.len > 0).then_some(self.last.0)
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.iter().next().map(|t| t.seq)
    }

    fn role_index(&mut self, role: &str) -> u64 {
        if let Some(i) = BUILTIN_ROLES.iter().position(|r| *r == role) {
            return i as u64;
        }
        let i = match self.roles.iter().position(|r| &**r == role) {
            Some(i) => i,
            None => {
                self.roles.push(role.into());
                self.roles.len() - 1
            }
        };
        (BUILTIN_ROLES.len() + i) as u64
    }

    /// Appends a turn. Its seq must be past the newest one's (the session checks; a smaller
    /// one is a bug and panics). `expect` is how many turns the arena is expected to hold (the
    /// session's window): while it fills up, the buffer grows straight to that size at the
    /// turns' average, so a full window wastes (almost) nothing.
    pub fn push(&mut self, t: &Turn, expect: usize) {
        assert!(
            t.seq > self.last.0,
            "turn {} pushed after {}",
            t.seq,
            self.last.0
        );
        // Roles of turns long gone (a client inventing one per turn) would pile up. Checked
        // here, before a role index is taken: a session whose buffer just fits its window
        // never compacts in `drop_front`, only when it appends.
        if self.roles.len() > 2 * self.len + 8 {
            self.rebuild_with(&[]);
        }
        let role = self.role_index(t.role);
        let gap = t.seq - self.last.0 - 1;
        let ts = zigzag(t.ts_ms.wrapping_sub(self.last.1));
        let bit = |present: bool, b: u8| if present { b } else { 0 };
        let flags = bit(t.meta.is_some(), META)
            | bit(t.emb.is_some(), EMB)
            | bit(gap > 0, SEQ_GAP)
            | bit(t.name.is_some(), NAME)
            | bit(t.tool_call_id.is_some(), TOOL_CALL_ID)
            | bit(t.tool_calls.is_some(), TOOL_CALLS)
            | bit(t.plain || json_plain(t.content), PLAIN);
        let texts = [t.meta, t.name, t.tool_call_id, t.tool_calls];
        let need = 1
            + varint_len(role)
            + if gap > 0 { varint_len(gap) } else { 0 }
            + varint_len(ts)
            + varint_len(u64::from(t.tokens))
            + varint_len(t.content.len() as u64)
            + t.content.len()
            + texts
                .iter()
                .flatten()
                .map(|x| varint_len(x.len() as u64) + x.len())
                .sum::<usize>()
            + t.emb
                .map_or(0, |e| varint_len(e.dim() as u64) + 4 * e.dim());
        self.reserve(need, expect);
        let out = &mut self.buf;
        out.push(flags);
        put_varint(out, role);
        if gap > 0 {
            put_varint(out, gap);
        }
        put_varint(out, ts);
        put_varint(out, u64::from(t.tokens));
        put_len_bytes(out, t.content);
        if let Some(meta) = t.meta {
            put_len_bytes(out, meta.as_bytes());
        }
        if let Some(emb) = t.emb {
            put_varint(out, emb.dim() as u64);
            match emb {
                Emb::Le(b) => out.extend_from_slice(b),
                Emb::F32(v) => v
                    .iter()
                    .for_each(|f| out.extend_from_slice(&f.to_le_bytes())),
            }
        }
        for text in [t.name, t.tool_call_id, t.tool_calls].into_iter().flatten() {
            put_len_bytes(out, text.as_bytes());
        }
        self.last = (t.seq, t.ts_ms);
        self.len += 1;
    }

    /// Room for `need` more bytes. A full buffer first reuses its dead prefix; then it grows
    /// towards the expected size while filling up, geometrically past it (amortized O(1)
    /// appends).
    fn reserve(&mut self, need: usize, expect: usize) {
        if self.buf.len() + need <= self.buf.capacity() {
            return;
        }
        if self.start > 0 {
            self.compact();
        }
        let want = self.buf.len() + need;
        if want <= self.buf.capacity() {
            return;
        }
        let cap = if self.len < expect {
            // What the window will take: the bytes now, plus the turns to come at the average,
            // at most 4x what is held (one long first turn does not reserve a window of them).
            // A chat session reaches a 20-turn window in two or three allocations.
            let per_turn = want.div_ceil(self.len + 1);
            (want + per_turn * (expect - self.len - 1)).clamp(want + want / 16, 4 * want + 64)
        } else {
            // Past the window the overflow waits for the archiver, which under a heavy write
            // load falls behind (it has a bounded slice of main-thread time): doubling keeps
            // the regrowths (a new block, page faults, a copy) few. Once the archived turns
            // are dropped, `drop_front` gives the slack back.
            2 * want
        };
        self.buf.reserve_exact(cap - self.buf.len());
    }

    /// Moves the live turns to the front of the buffer.
    fn compact(&mut self) {
        self.buf.drain(..self.start);
        self.start = 0;
    }

    /// Asks the CPU for the live bytes ahead of a read of them all (a reply): the cache
    /// misses of one session then overlap instead of coming one line at a time.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        for line in self.buf[self.start..].chunks(64) {
            // SAFETY: a hint on an address inside the buffer; it never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line.as_ptr().cast(),
                )
            };
        }
    }

    pub fn iter(&self) -> Turns<'_> {
        Turns {
            buf: &self.buf,
            roles: &self.roles,
            pos: self.start,
            left: self.len,
            prev: self.base,
        }
    }

    /// Drops the `n` oldest turns. Compacts once the dead prefix outgrows the live part, and
    /// gives the buffer back when nothing is left.
    pub fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        let mut it = self.iter();
        for _ in 0..n {
            it.next();
        }
        let (pos, prev) = (it.pos, it.prev);
        self.start = pos;
        self.base = prev;
        self.len -= n;
        if self.len == 0 {
            self.buf = Vec::new();
            self.start = 0;
            self.roles = Vec::new();
        } else if 4 * self.start > self.buf.len() - self.start {
            // Dead bytes over a quarter of the live ones: each compaction moves at most four
            // bytes per byte dropped since the last one, and memory stays close to the turns.
            self.compact();
            if self.buf.capacity() > 2 * self.buf.len() {
                self.buf.shrink_to(self.buf.len() + self.buf.len() / 4);
            }
        }
    }

    /// Re-encodes the arena with `front` (ascending, before every turn held) put first.
    pub fn rebuild_with(&mut self, front: &[Turn]) {
        let base = if front.is_empty() { self.base } else { (0, 0) };
        let mut fresh = Arena {
            base,
            last: base,
            ..Arena::default()
        };
        let expect = front.len() + self.len;
        for t in front.iter().copied().chain(self.iter()) {
            fresh.push(&t, expect);
        }
        *self = fresh;
    }
}

/// Forward iterator over an arena's turns.
#[derive(Clone)]
pub struct Turns<'a> {
    buf: &'a [u8],
    roles: &'a [Box<str>],
    pos: usize,
    left: usize,
    prev: (u64, i64),
}

/// Reads a varint at `*p` (the arena's own bytes: well formed by construction).
#[inline(always)]
fn read_varint(buf: &[u8], p: &mut usize) -> u64 {
    let b = buf[*p];
    *p += 1;
    if b < 0x80 {
        return u64::from(b);
    }
    let mut v = u64::from(b & 0x7f);
    let mut shift = 7;
    loop {
        let b = buf[*p];
        *p += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Reads a length-prefixed byte string at `*p`.
#[inline(always)]
fn read_len_bytes<'a>(buf: &'a [u8], p: &mut usize) -> &'a [u8] {
    let n = read_varint(buf, p) as usize;
    let s = &buf[*p..*p + n];
    *p += n;
    s
}

impl<'a> Iterator for Turns<'a> {
    type Item = Turn<'a>;

    #[inline]
    fn next(&mut self) -> Option<Turn<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (buf, mut p) = (self.buf, self.pos);
        let flags = buf[p];
        p += 1;
        let role_index = read_varint(buf, &mut p) as usize;
        let role: &'a str = match BUILTIN_ROLES.get(role_index) {
            Some(r) => r,
            None => &self.roles[role_index - BUILTIN_ROLES.len()],
        };
        let gap = if flags & SEQ_GAP != 0 {
            read_varint(buf, &mut p)
        } else {
            0
        };
        let seq = self.prev.0 + gap + 1;
        let ts_ms = self.prev.1.wrapping_add(unzigzag(read_varint(buf, &mut p)));
        let tokens = read_varint(buf, &mut p) as u32;
        let content = read_len_bytes(buf, &mut p);
        let meta = (flags & META != 0).then(|| {
            std::str::from_utf8(read_len_bytes(buf, &mut p)).expect("meta is pushed from a str")
        });
        let emb = (flags & EMB != 0).then(|| {
            let dim = read_varint(buf, &mut p) as usize;
            let b = &buf[p..p + 4 * dim];
            p += 4 * dim;
            Emb::Le(b)
        });
        let mut text = |bit: u8| {
            (flags & bit != 0).then(|| {
                std::str::from_utf8(read_len_bytes(buf, &mut p)).expect("pushed from a str")
            })
        };
        let (name, tool_call_id, tool_calls) = (text(NAME), text(TOOL_CALL_ID), text(TOOL_CALLS));
        self.pos = p;
        self.prev = (seq, ts_ms);
        Some(Turn {
            seq,
            ts_ms,
            role,
            content,
            meta,
            emb,
            tokens,
            name,
            tool_call_id,
            tool_calls,
            plain: flags & PLAIN != 0,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Turns<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::message::strategies;
    use crate::conv::message::Message;
    use crate::conv::render::{render, Format, SizeHint};
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn msg(seq: u64, ts_ms: i64, role: &str, content: &str) -> Message {
        Message {
            seq,
            ts_ms,
            role: role.into(),
            content: content.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn owned(a: &Arena) -> Vec<Message> {
        a.iter().map(|t| t.to_message()).collect()
    }

    #[test]
    fn size_classes_match_jemalloc() {
        let got: Vec<usize> = [1, 8, 9, 16, 17, 128, 129, 160, 161, 4096, 4097, 5121, 16385]
            .iter()
            .map(|&n| jemalloc_size(n))
            .collect();
        assert_eq!(
            got,
            [8, 8, 16, 16, 32, 128, 160, 160, 192, 4096, 5120, 6144, 20480]
        );
        assert_eq!(jemalloc_size(0), 0);
        let libc: Vec<usize> = [1, 24, 25, 4080].iter().map(|&n| libc_size(n)).collect();
        assert_eq!(libc, [32, 32, 48, 4096]);
    }

    #[test]
    fn turns_come_back_as_pushed() {
        let mut a = Arena::default();
        let mut m3 = msg(7, 5, "reviewer", "c");
        m3.meta = Some("{\"k\":1}".into());
        m3.emb = Some(vec![1.0, -2.0, 0.5]);
        let all = [
            msg(1, 1_700_000_000_000, "user", "hi"),
            msg(2, 1_700_000_000_000, "assistant", ""),
            m3,
            msg(u64::MAX - 1, i64::MAX, "user", "x"),
            msg(u64::MAX, 0, "reviewer", "y"),
        ];
        for m in &all {
            a.push(&m.as_turn(), 0);
        }
        assert_eq!(owned(&a), all);
        assert_eq!(a.iter().len(), 5);
        assert_eq!((a.first_seq(), a.last_seq()), (Some(1), Some(u64::MAX)));
        // Built-in roles cost no table entry; others one each, however often used.
        assert_eq!(a.roles.len(), 1);
        // A plain turn: flags (only PLAIN: JSON takes "abc" as it is), role, ts delta,
        // tokens, length, content.
        let mut b = Arena::default();
        b.push(&msg(1, 0, "user", "abc").as_turn(), 0);
        assert_eq!(b.buf, [PLAIN, 0, 0, 0, 3, b'a', b'b', b'c']);
        b.push(&msg(2, 0, "user", "a\"").as_turn(), 0);
        assert_eq!(b.buf[8..], [0, 0, 0, 0, 2, b'a', b'"']);
    }

    #[test]
    fn dropping_a_prefix_compacts_and_empties() {
        let mut a = Arena::default();
        for i in 1..=10 {
            a.push(
                &msg(i, i as i64 * 1000, "user", &"x".repeat(100)).as_turn(),
                10,
            );
        }
        let cap = a.buf.capacity();
        a.drop_front(1);
        assert_eq!(a.start, 106, "no move while the dead part is small");
        assert_eq!(a.first_seq(), Some(2));
        a.drop_front(2);
        assert_eq!(a.start, 0, "compacted");
        assert!(a.buf.capacity() <= cap);
        let ts: Vec<i64> = a.iter().map(|t| t.ts_ms).collect();
        assert_eq!(ts, [4000, 5000, 6000, 7000, 8000, 9000, 10000]);
        a.push(&msg(11, 500, "user", "y").as_turn(), 10);
        assert_eq!(a.iter().last().unwrap().ts_ms, 500);
        a.drop_front(100);
        assert!(a.is_empty() && a.buf.capacity() == 0 && a.heap_bytes() == 0);
        // The counters go on from the dropped turns.
        a.push(&msg(12, 550, "user", "z").as_turn(), 10);
        assert_eq!(a.buf[..3], [PLAIN, 0, 100]);
    }

    #[test]
    fn a_full_buffer_reuses_its_dead_prefix_before_growing() {
        let mut a = Arena::default();
        for i in 1..=10 {
            a.push(&msg(i, 0, "user", &"x".repeat(100)).as_turn(), 10);
        }
        a.drop_front(1);
        let cap = a.buf.capacity();
        a.push(&msg(11, 0, "user", &"x".repeat(100)).as_turn(), 10);
        assert_eq!((a.start, a.buf.capacity()), (0, cap));
    }

    #[test]
    fn roles_of_gone_turns_are_forgotten() {
        // Whatever the turn size, so whichever compaction the arena does (in `drop_front`, or
        // on an append to a buffer that just fits).
        for size in [1, 7, 50, 200] {
            let content = "c".repeat(size);
            for expect in [0, 5] {
                let mut a = Arena::default();
                for i in 1..=200u64 {
                    a.push(&msg(i, 0, &format!("r{i}"), &content).as_turn(), expect);
                    if i > 5 {
                        a.drop_front(1);
                    }
                    assert!(
                        a.roles.len() <= 2 * 5 + 8 + 1,
                        "{size}/{expect}: {}",
                        a.roles.len()
                    );
                }
                assert_eq!(a.len(), 5);
                let roles: Vec<&str> = a.iter().map(|t| t.role).collect();
                assert_eq!(roles, ["r196", "r197", "r198", "r199", "r200"]);
            }
        }
    }

    #[test]
    fn a_rebuild_puts_turns_in_front() {
        let mut a = Arena::default();
        let all: Vec<Message> = (1..=6).map(|i| msg(i * 2, i as i64, "tool", "t")).collect();
        for m in &all[3..] {
            a.push(&m.as_turn(), 0);
        }
        let front: Vec<Turn> = all[..3].iter().map(Message::as_turn).collect();
        a.rebuild_with(&front);
        assert_eq!(owned(&a), all);
    }

    #[test]
    fn a_window_fills_with_few_reallocations_and_little_slack() {
        for expect in [1, 20, 1000] {
            let mut a = Arena::default();
            let mut grows = 0;
            let mut cap = 0;
            for i in 1..=expect as u64 {
                a.push(&msg(i, 0, "user", &"z".repeat(200)).as_turn(), expect);
                if a.buf.capacity() != cap {
                    grows += 1;
                    cap = a.buf.capacity();
                }
            }
            assert!(grows <= 12, "{expect}: {grows}");
            assert!(cap - a.buf.len() <= a.buf.len() / 16, "{expect}: {cap}");
            // Past the window, growth is geometric.
            let before = grows;
            for i in 1..=10 * expect as u64 {
                a.push(
                    &msg(expect as u64 + i, 0, "user", &"z".repeat(200)).as_turn(),
                    expect,
                );
                if a.buf.capacity() != cap {
                    grows += 1;
                    cap = a.buf.capacity();
                }
            }
            assert!(grows - before <= 12, "{expect}: {}", grows - before);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Message),
        Drop(usize),
    }

    fn ops() -> impl Strategy<Value = (Vec<(Op, u64)>, usize)> {
        proptest::collection::vec(
            (
                prop_oneof![
                    3 => strategies::message().prop_map(Op::Push),
                    1 => (0usize..8).prop_map(Op::Drop),
                ],
                prop_oneof![Just(1u64), 1u64..1_000_000, Just(u64::MAX / 4)],
            ),
            0..60,
        )
        .prop_flat_map(|ops| (Just(ops), 0usize..40))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(strategies::cases(256)))]

        /// Appends and prefix drops in any order read back as a VecDeque<Message> model does.
        #[test]
        fn behaves_like_a_deque_of_messages((ops, expect) in ops()) {
            let mut a = Arena::default();
            let mut model: VecDeque<Message> = VecDeque::new();
            let mut seq = 0u64;
            for (op, gap) in ops {
                match op {
                    Op::Push(mut m) => {
                        let Some(s) = seq.checked_add(gap) else { continue };
                        seq = s;
                        m.seq = seq;
                        a.push(&m.as_turn(), expect);
                        model.push_back(m);
                    }
                    Op::Drop(n) => {
                        a.drop_front(n);
                        model.drain(..n.min(model.len()));
                    }
                }
                prop_assert_eq!(a.len(), model.len());
                prop_assert_eq!(owned(&a), model.iter().cloned().collect::<Vec<_>>());
                prop_assert_eq!(a.last_seq(), model.back().map(|m| m.seq));
                prop_assert!(a.start <= a.buf.len());
            }
            let snapshot = a.clone();
            a.rebuild_with(&[]);
            prop_assert_eq!(&a, &snapshot);
        }

        /// Replies built from the arena's turns (whose plain flag spares the JSON scan) are
        /// byte for byte those built from the messages themselves, plain content or not.
        #[test]
        fn plain_flag_renders_as_a_scan_would(
            msgs in proptest::collection::vec(
                (strategies::message(), prop_oneof![
                    "[ -~]{0,60}".prop_map(String::into_bytes),
                    "[a-zA-Z ,.?']{0,60}".prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..40),
                ]),
                1..12,
            )
        ) {
            let mut a = Arena::default();
            let msgs: Vec<Message> = msgs
                .into_iter()
                .enumerate()
                .map(|(i, (m, content))| Message { seq: i as u64 + 1, content, ..m })
                .collect();
            for m in &msgs {
                a.push(&m.as_turn(), 20);
            }
            for (t, m) in a.iter().zip(&msgs) {
                prop_assert_eq!(t.plain, json_plain(&m.content));
            }
            for format in [Format::Messages, Format::Full, Format::Text] {
                prop_assert_eq!(
                    render(format, a.iter(), SizeHint::default()),
                    render(format, msgs.iter().map(Message::as_turn), SizeHint::default())
                );
            }
        }
    }
}
