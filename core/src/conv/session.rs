//! The pure session window: messages in memory, oldest first, plus a record of the turns that
//! already live in the archive. No server calls here; the shell passes clocks and decisions in.

use std::cell::Cell;

use super::arena::{alloc_size, Arena, Turns};
use super::message::Message;
use super::render::SizeHint;
use super::tokens::Tokenizer;
use super::turn::Turn;

/// What the archive holds for this session: how many turns and which sequence range.
/// Archived turns always precede the in-memory ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchivedRange {
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Largest window a session can have (CONV.ADD WINDOW, the config, every decoder).
pub const MAX_WINDOW: u32 = 1_000_000;

#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    /// An explicit sequence number (replica / AOF replay) that is not past the last one.
    SeqNotIncreasing { given: u64, next: u64 },
    /// A sequence number past [`MAX_SEQ`], given or next: refused before anything changes.
    SeqPastTop { seq: u64 },
    /// Turns loaded into a session (`_LOAD` continuation) at or past its `next_seq`.
    SeqPastNext { given: u64, next: u64 },
    /// Turns said to come back from the archive that the session never archived.
    NotArchived { first: u64, last: u64, upto: u64 },
    /// A session header whose fields contradict each other or their ranges.
    Inconsistent(String),
    /// Archived turns (AOF replay, slot migration) that do not continue the session's
    /// archived range in order.
    ArchivedOutOfOrder {
        given: u64,
        after: u64,
        range: ArchivedRange,
    },
    /// More archived turns than the session's archived range counts.
    ArchivedTooMany { count: u64 },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::SeqPastTop { seq } => write!(
                f,
                "sequence number {seq} is past the largest a session can use ({MAX_SEQ})"
            ),
            SessionError::SeqNotIncreasing { given, next } => {
                write!(
                    f,
                    "SEQ {given} is not past the session's last sequence ({})",
                    next.saturating_sub(1)
                )
            }
            SessionError::SeqPastNext { given, next } => write!(
                f,
                "turn {given} is not below the session's next sequence number {next}"
            ),
            SessionError::NotArchived { first, last, upto } => write!(
                f,
                "turns {first}..{last} are not archived turns of the session (archived up to {upto})"
            ),
            SessionError::Inconsistent(why) => write!(f, "inconsistent session: {why}"),
            SessionError::ArchivedOutOfOrder { given, after, range } => write!(
                f,
                "archived turn {given} does not follow {after} within the session's archived range {}..{}",
                range.first_seq, range.last_seq
            ),
            SessionError::ArchivedTooMany { count } => {
                write!(f, "more archived turns than the session's {count}")
            }
        }
    }
}

/// The largest sequence number a session issues: 2^53, which every JSON client represents
/// exactly, and far below what the module's own parser, AOF replay and replicas accept.
pub const MAX_SEQ: u64 = 1 << 53;

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Messages that stay in memory for CONV.CTX; older ones are due for archiving.
    pub window: u32,
    /// Sequence number the next message gets; never goes back, even after CLEAR.
    pub next_seq: u64,
    pub created_ms: i64,
    /// Not part of the replicated state: reads touch it through a shared reference, and only
    /// the primary's idle timer looks at it.
    pub last_access_ms: Cell<i64>,
    pub archived: ArchivedRange,
    /// Turns up to this seq are decided archived (by the primary). On a replica the local
    /// write may still be under way; the turns stay in memory until it is durable.
    pub archive_upto: u64,
    /// The expiry (unix ms) idle archival gave the key as archive retention, 0 if none. A TTL
    /// the user set is never this value, so it is never replaced or removed by the module.
    pub auto_expire_ms: i64,
    /// Random id of this session incarnation, written in its archive file's header: a file
    /// left by an earlier session of the same key (FLUSHALL, overwrite) is never mixed in.
    pub sid: u64,
    /// How this session counts tokens: decided at its first CONV.ADD, kept for its life.
    pub tokenizer: Tokenizer,
    /// Content tokens of the archived turns (derived when the session is loaded: from the
    /// archive file of an RDB value, from the archived turns of a `_LOAD` rebuild).
    pub archived_tokens: u64,
    /// Bookkeeping most sessions never need, boxed so the struct stays small. Not persisted.
    rare: Option<Box<Rare>>,
    /// The in-memory turns, oldest first, in one buffer.
    turns: Arena,
}

/// A session's state of archive writes and rebuilds, off the common path.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rare {
    /// An archive write of this node under way: (ticket, turns up to seq).
    pending: Option<(u64, u64)>,
    /// After a failed archive write, not before this time (ms).
    retry_at_ms: i64,
    /// Waiting in the timer's overflow queue.
    queued: bool,
    /// Archived turns received so far for a session being rebuilt by `CONV._LOAD` (AOF
    /// replay, slot migration), until all of them are here and go to disk together.
    incoming_archive: Vec<Message>,
    incoming_bytes: usize,
}

/// Tokens a message takes in a prompt: its content tokens as counted at add (the session's
/// tokenizer, or a quarter of the bytes for `estimate`), plus 4 for the role and the
/// chat-format framing.
pub fn estimate_tokens(m: &Turn) -> u64 {
    u64::from(m.tokens) + 4
}

/// `ROLES r1,r2,...` of CONV.CTX and CONV.HISTORY: only turns with one of these roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFilter(Vec<Vec<u8>>);

impl RoleFilter {
    /// A comma-separated list of role names; an empty list or an empty name is refused
    /// (a role can hold a comma, but then it cannot be filtered by name).
    pub fn parse(list: &[u8]) -> Result<RoleFilter, String> {
        if list.is_empty() {
            return Err("ROLES needs at least one role name".into());
        }
        let roles: Vec<Vec<u8>> = list.split(|&b| b == b',').map(<[u8]>::to_vec).collect();
        if roles.iter().any(Vec::is_empty) {
            return Err(format!(
                "ROLES has an empty role name in '{}'",
                String::from_utf8_lossy(list)
            ));
        }
        Ok(RoleFilter(roles))
    }

    pub fn keeps(&self, m: &Turn) -> bool {
        self.0.iter().any(|r| r.as_slice() == m.role.as_bytes())
    }
}

/// Whether `m` passes an optional role filter.
pub fn role_kept(roles: Option<&RoleFilter>, m: &Turn) -> bool {
    roles.is_none_or(|f| f.keeps(m))
}

/// The turns of `turns` that pass an optional role filter.
pub fn kept<'r, 'a: 'r, I>(
    turns: I,
    roles: Option<&'r RoleFilter>,
) -> impl Iterator<Item = Turn<'a>> + Clone + 'r
where
    I: Iterator<Item = Turn<'a>> + Clone + 'r,
{
    turns.filter(move |m| role_kept(roles, m))
}

/// CONV.CTX's choice among `turns` (oldest first): the turns of the wanted roles, the newest
/// `count` of them, then as many of those, newest first, as fit `tokens`. Oldest first.
/// Forward passes only (the turns are a forward-decoded buffer), no allocation: every turn
/// costs at least one token, so "the newest that fit" is "drop the oldest until they fit".
pub fn pick_ctx<'r, 'a: 'r, I>(
    turns: I,
    roles: Option<&'r RoleFilter>,
    count: usize,
    tokens: Option<u64>,
) -> impl Iterator<Item = Turn<'a>> + Clone + 'r
where
    I: ExactSizeIterator<Item = Turn<'a>> + Clone + 'r,
{
    let total = match roles {
        None => turns.len(),
        Some(_) => kept(turns.clone(), roles).count(),
    };
    let kept = kept(turns, roles);
    let mut skip = total.saturating_sub(count);
    if let Some(budget) = tokens {
        let mut used: u64 = kept.clone().skip(skip).map(|m| estimate_tokens(&m)).sum();
        for m in kept.clone().skip(skip) {
            if used <= budget {
                break;
            }
            used -= estimate_tokens(&m);
            skip += 1;
        }
    }
    kept.skip(skip)
}

impl Session {
    pub fn new(window: u32, now_ms: i64) -> Session {
        Session {
            window,
            next_seq: 1,
            created_ms: now_ms,
            last_access_ms: Cell::new(now_ms),
            archived: ArchivedRange::default(),
            archive_upto: 0,
            auto_expire_ms: 0,
            sid: 0,
            tokenizer: Tokenizer::Estimate,
            archived_tokens: 0,
            rare: None,
            turns: Arena::default(),
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the bookkeeping box once it holds nothing.
    fn tidy_rare(&mut self) {
        if self.rare.as_deref().is_some_and(|r| *r == Rare::default()) {
            self.rare = None;
        }
    }

    /// An archive write of this node under way: (ticket, turns up to seq). Not persisted.
    pub fn pending(&self) -> Option<(u64, u64)> {
        self.rare.as_ref().and_then(|r| r.pending)
    }

    pub fn set_pending(&mut self, pending: Option<(u64, u64)>) {
        self.rare_mut().pending = pending;
        self.tidy_rare();
    }

    /// After a failed archive write, not before this time (ms). Not persisted.
    pub fn retry_at_ms(&self) -> i64 {
        self.rare.as_ref().map_or(0, |r| r.retry_at_ms)
    }

    pub fn set_retry_at_ms(&mut self, at: i64) {
        self.rare_mut().retry_at_ms = at;
        self.tidy_rare();
    }

    /// Waiting in the timer's overflow queue. Not persisted.
    pub fn queued(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.queued)
    }

    pub fn set_queued(&mut self, queued: bool) {
        self.rare_mut().queued = queued;
        self.tidy_rare();
    }

    /// Appends a message (see [`Session::add_turn`]).
    pub fn add(&mut self, msg: Message, seq: Option<u64>) -> Result<u64, SessionError> {
        self.add_turn(msg.as_turn(), seq)
    }

    /// Appends a turn (its own `seq` is ignored). `seq` is `None` on the primary (the session
    /// decides) and the primary's decision on a replica or during AOF replay. Returns the
    /// sequence number.
    pub fn add_turn(&mut self, mut msg: Turn, seq: Option<u64>) -> Result<u64, SessionError> {
        let seq = self.seq_for(seq)?;
        msg.seq = seq;
        self.next_seq = seq + 1;
        self.turns.push(&msg, self.window as usize);
        Ok(seq)
    }

    /// The sequence number the next turn gets: `seq` if given and not below `next_seq`
    /// (checked before anything changes, also by a CONV.ADD that counts in the background).
    pub fn seq_for(&self, seq: Option<u64>) -> Result<u64, SessionError> {
        let seq = match seq {
            Some(s) if s < self.next_seq => {
                return Err(SessionError::SeqNotIncreasing {
                    given: s,
                    next: self.next_seq,
                })
            }
            Some(s) => s,
            None => self.next_seq,
        };
        if seq > MAX_SEQ {
            return Err(SessionError::SeqPastTop { seq });
        }
        Ok(seq)
    }

    /// Puts back a message read from RDB/AOF; sequence numbers must ascend, past the
    /// archived ones too.
    pub fn push_loaded(&mut self, msg: Message) -> Result<(), SessionError> {
        let last = self.last_seq().unwrap_or(0);
        if msg.seq <= last || msg.seq == u64::MAX {
            return Err(SessionError::SeqNotIncreasing {
                given: msg.seq,
                next: last + 1,
            });
        }
        self.next_seq = self.next_seq.max(msg.seq + 1);
        self.turns.push(&msg.as_turn(), self.window as usize);
        Ok(())
    }

    /// Checks that `more` (a `_LOAD` continuation, ascending) can follow the session's turns:
    /// past its last turn and below its `next_seq`, which the header of the same rebuild
    /// carried. Nothing is changed, so a refused payload leaves the session as it was.
    pub fn check_more(&self, more: &[Message]) -> Result<(), SessionError> {
        let mut last = self.last_seq().unwrap_or(0);
        for m in more {
            if m.seq <= last {
                return Err(SessionError::SeqNotIncreasing {
                    given: m.seq,
                    next: last + 1,
                });
            }
            if m.seq >= self.next_seq {
                return Err(SessionError::SeqPastNext {
                    given: m.seq,
                    next: self.next_seq,
                });
            }
            last = m.seq;
        }
        Ok(())
    }

    /// Appends a continuation checked by [`Session::check_more`].
    pub fn push_more(&mut self, more: Vec<Message>) -> Result<(), SessionError> {
        self.check_more(&more)?;
        for m in more {
            self.push_loaded(m)?;
        }
        Ok(())
    }

    /// Checks turns said to have come back from the archive (`CONV._REHYDRATED`): ascending,
    /// and archived by the primary's decision (at most `archive_upto`, or the archived range
    /// this node already holds). Nothing is changed.
    pub fn check_rehydrated(&self, turns: &[Message]) -> Result<(), SessionError> {
        let (Some(first), Some(last)) = (turns.first(), turns.last()) else {
            return Err(SessionError::Inconsistent("no turns".into()));
        };
        let upto = self.archive_upto.max(self.archived.last_seq);
        if first.seq == 0 || last.seq > upto || last.seq >= self.next_seq {
            return Err(SessionError::NotArchived {
                first: first.seq,
                last: last.seq,
                upto,
            });
        }
        Ok(())
    }

    /// The invariants of a whole session, checked after a decode: window in range, archived
    /// range well formed, every turn past the archived ones and below `next_seq`.
    pub fn check_consistent(&self) -> Result<(), SessionError> {
        let bad = |why: String| Err(SessionError::Inconsistent(why));
        if self.window == 0 || self.window > MAX_WINDOW {
            return bad(format!(
                "window {} is not between 1 and {MAX_WINDOW}",
                self.window
            ));
        }
        if self.next_seq == 0 {
            return bad("next_seq is 0".into());
        }
        let a = self.archived;
        if a.count == 0 {
            if a.first_seq != 0 || a.last_seq != 0 {
                return bad(format!(
                    "empty archived range has seqs {}..{}",
                    a.first_seq, a.last_seq
                ));
            }
        } else if a.first_seq == 0
            || a.last_seq < a.first_seq
            || a.count - 1 > a.last_seq - a.first_seq
        {
            return bad(format!(
                "archived range of {} turns cannot span seqs {}..{}",
                a.count, a.first_seq, a.last_seq
            ));
        }
        if let Some(front) = self.turns.iter().next() {
            if a.count > 0 && front.seq <= a.last_seq {
                return bad(format!(
                    "turn {} is not past the archived turns (up to {})",
                    front.seq, a.last_seq
                ));
            }
        }
        let last = self.last_seq().unwrap_or(0);
        if last >= self.next_seq {
            return bad(format!(
                "next_seq {} is not past the last turn {last}",
                self.next_seq
            ));
        }
        if self.archive_upto >= self.next_seq {
            return bad(format!(
                "archive_upto {} is not below next_seq {}",
                self.archive_upto, self.next_seq
            ));
        }
        if self.auto_expire_ms < 0 {
            return bad(format!(
                "auto_expire_ms {} is negative",
                self.auto_expire_ms
            ));
        }
        Ok(())
    }

    /// Drops all messages (memory and archive record) but keeps the sequence counter.
    pub fn clear(&mut self) {
        self.turns = Arena::default();
        self.archived = ArchivedRange::default();
        self.archived_tokens = 0;
        self.set_pending(None);
    }

    /// True when every turn is on disk and none in memory: a small cold record.
    pub fn is_cold(&self) -> bool {
        self.turns.is_empty() && self.archived.count > 0
    }

    /// In-memory turns the primary may decide to archive now: the overflow past the window,
    /// or everything when `all` (idle archival, CONV.FLUSH). Returns the seq to archive up to.
    pub fn archive_candidates(&self, all: bool) -> Option<u64> {
        let n = if all {
            self.turns.len()
        } else {
            self.overflow_len()
        };
        (n > 0).then(|| self.turns.iter().nth(n - 1).expect("n <= len").seq)
    }

    /// What stays of an evicted session once its in-memory turns are appended to its archive:
    /// the same session with every turn archived and none in memory. Its sequence counter,
    /// id, tokenizer and window are kept, so it comes back as the session it was.
    pub fn into_cold_stub(mut self) -> Session {
        let n = self.turns.len();
        self.drop_oldest(n);
        self.archive_upto = self.archive_upto.max(self.archived.last_seq);
        self.rare = None;
        self
    }

    /// [`Session::into_cold_stub`] of a copy, without copying the in-memory turns.
    pub fn cold_stub(&self) -> Session {
        let header = Session {
            window: self.window,
            next_seq: self.next_seq,
            created_ms: self.created_ms,
            last_access_ms: self.last_access_ms.clone(),
            archived: self.archived,
            archive_upto: self.archive_upto,
            auto_expire_ms: self.auto_expire_ms,
            sid: self.sid,
            tokenizer: self.tokenizer,
            archived_tokens: self.archived_tokens,
            rare: None,
            turns: Arena::default(),
        };
        let mut stub = header;
        let mut turns = self.turns.iter();
        if let Some(first) = turns.next() {
            let (mut last, mut tokens, mut n) = (first.seq, u64::from(first.tokens), 1u64);
            for t in turns {
                last = t.seq;
                tokens += u64::from(t.tokens);
                n += 1;
            }
            if stub.archived.count == 0 {
                stub.archived.first_seq = first.seq;
            }
            stub.archived.last_seq = last;
            stub.archived.count += n;
            stub.archived_tokens += tokens;
        }
        stub.archive_upto = stub.archive_upto.max(stub.archived.last_seq);
        stub
    }

    /// Copies of the in-memory turns up to `upto`, for an archive write.
    pub fn turns_upto(&self, upto: u64) -> Vec<Message> {
        self.turns
            .iter()
            .take_while(|m| m.seq <= upto)
            .map(|t| t.to_message())
            .collect()
    }

    /// Turns decided archived but still in memory (replica catching up, restart): work that
    /// any node re-drives without deciding anything new.
    pub fn undurable_upto(&self) -> Option<u64> {
        match self.turns.iter().next() {
            Some(m) if m.seq <= self.archive_upto => Some(self.archive_upto),
            _ => None,
        }
    }

    /// The write of turns up to `upto` is durable: drop them from memory. Returns how many.
    pub fn archived_durably(&mut self, upto: u64) -> usize {
        let n = self.turns.iter().take_while(|m| m.seq <= upto).count();
        self.drop_oldest(n);
        self.archive_upto = self.archive_upto.max(upto);
        n
    }

    /// The in-memory turns, oldest first, as borrowed views.
    pub fn turns(&self) -> Turns<'_> {
        self.turns.iter()
    }

    /// See [`Arena::prefetch`].
    pub fn prefetch_turns(&self) {
        self.turns.prefetch();
    }

    pub fn hot_len(&self) -> usize {
        self.turns.len()
    }

    /// An upper bound of what the in-memory turns hold (see [`SizeHint`]).
    pub fn hot_size(&self) -> SizeHint {
        SizeHint {
            bytes: self.turns.live_bytes(),
            turns: self.turns.len(),
        }
    }

    /// Content tokens of every turn, in memory or archived.
    pub fn total_tokens(&self) -> u64 {
        self.archived_tokens + self.turns.iter().map(|t| u64::from(t.tokens)).sum::<u64>()
    }

    /// Every message the session has, in memory or archived.
    pub fn total_len(&self) -> u64 {
        self.archived.count + self.turns.len() as u64
    }

    pub fn first_seq(&self) -> Option<u64> {
        if self.archived.count > 0 {
            Some(self.archived.first_seq)
        } else {
            self.turns.first_seq()
        }
    }

    pub fn last_seq(&self) -> Option<u64> {
        match self.turns.last_seq() {
            Some(seq) => Some(seq),
            None if self.archived.count > 0 => Some(self.archived.last_seq),
            None => None,
        }
    }

    /// In-memory messages older than the window: what the archiver should move to disk.
    pub fn overflow_len(&self) -> usize {
        self.turns.len().saturating_sub(self.window as usize)
    }

    /// The newest `count` in-memory messages, oldest first.
    pub fn last_n(&self, count: usize) -> std::iter::Skip<Turns<'_>> {
        let skip = self.turns.len().saturating_sub(count);
        self.turns.iter().skip(skip)
    }

    /// How many of the newest `max` messages fit a token budget (at least none, newest kept).
    pub fn fit_tokens(&self, max: usize, budget: u64) -> usize {
        pick_ctx(self.turns(), None, max, Some(budget)).count()
    }

    /// In-memory messages with `from <= seq <= to`, oldest first.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = Turn<'_>> + Clone {
        self.turns
            .iter()
            .skip_while(move |m| m.seq < from)
            .take_while(move |m| m.seq <= to)
    }

    /// Removes the `n` oldest in-memory messages after they were made durable in the archive.
    /// Returns how many left.
    pub fn drop_oldest(&mut self, n: usize) -> usize {
        let n = n.min(self.turns.len());
        self.archived_tokens += self
            .turns
            .iter()
            .take(n)
            .map(|t| u64::from(t.tokens))
            .sum::<u64>();
        let mut gone = self.turns.iter().take(n);
        if let Some(first) = gone.next() {
            let last = gone.last().unwrap_or(first);
            if self.archived.count == 0 {
                self.archived.first_seq = first.seq;
            }
            self.archived.last_seq = last.seq;
            self.archived.count += n as u64;
        }
        self.turns.drop_front(n);
        n
    }

    /// Takes archived turns of a session being rebuilt (its header already gave the archived
    /// range). They must continue the range in ascending order; once every archived turn is
    /// here, returns them all, for the caller to write to this node's archive.
    pub fn receive_archived(
        &mut self,
        turns: Vec<Message>,
    ) -> Result<Option<Vec<Message>>, SessionError> {
        let range = self.archived;
        let incoming: &[Message] = self
            .rare
            .as_ref()
            .map_or(&[], |r| r.incoming_archive.as_slice());
        let mut after = incoming
            .last()
            .map_or(range.first_seq.saturating_sub(1), |m| m.seq);
        let mut starts = incoming.is_empty();
        for m in &turns {
            let misplaced_first = starts && m.seq != range.first_seq;
            starts = false;
            if m.seq <= after || m.seq > range.last_seq || misplaced_first {
                return Err(SessionError::ArchivedOutOfOrder {
                    given: m.seq,
                    after,
                    range,
                });
            }
            after = m.seq;
        }
        if incoming.len() as u64 + turns.len() as u64 > range.count {
            return Err(SessionError::ArchivedTooMany { count: range.count });
        }
        let rare = self.rare_mut();
        rare.incoming_bytes += turns.iter().map(Message::heap_bytes).sum::<usize>();
        rare.incoming_archive.extend(turns);
        let complete = rare.incoming_archive.len() as u64 == range.count
            && rare.incoming_archive.last().map(|m| m.seq) == Some(range.last_seq);
        if !complete {
            return Ok(None);
        }
        rare.incoming_bytes = 0;
        let all = std::mem::take(&mut rare.incoming_archive);
        self.archived_tokens = all.iter().map(|m| u64::from(m.tokens)).sum();
        self.tidy_rare();
        Ok(Some(all))
    }

    /// Brings the newest archived turns (read back from disk, ascending) into memory again.
    /// They stay in the file; appends skip them when they are archived again. Returns how
    /// many came back. Turns still in memory (a replica that has not finished writing them)
    /// only move the watermark.
    pub fn rehydrate(&mut self, turns: Vec<Message>) -> usize {
        let (Some(first), Some(last)) = (turns.first().map(|m| m.seq), turns.last().map(|m| m.seq))
        else {
            return 0;
        };
        self.set_pending(None);
        self.archive_upto = self.archive_upto.min(first - 1);
        if self.turns.iter().next().is_some_and(|m| m.seq <= last)
            || self.archived.count < turns.len() as u64
            || last != self.archived.last_seq
            || first < self.archived.first_seq
        {
            return 0;
        }
        let n = turns.len();
        let front_tokens: u64 = turns.iter().map(|m| u64::from(m.tokens)).sum();
        self.archived_tokens = self.archived_tokens.saturating_sub(front_tokens);
        let front: Vec<Turn> = turns.iter().map(Message::as_turn).collect();
        self.turns.rebuild_with(&front);
        self.archived.count -= n as u64;
        if self.archived.count == 0 {
            self.archived = ArchivedRange::default();
            self.archived_tokens = 0;
        } else {
            self.archived.last_seq = first - 1;
        }
        n
    }

    /// Bytes this session holds in memory, as the allocator counts them: the struct, the
    /// turns' buffer and role table, and any rebuild or archive bookkeeping. O(1).
    pub fn mem_bytes(&self) -> usize {
        let rare = self.rare.as_ref().map_or(0, |r| {
            alloc_size(std::mem::size_of::<Rare>())
                + alloc_size(r.incoming_archive.capacity() * std::mem::size_of::<Message>())
                + r.incoming_bytes
        });
        alloc_size(std::mem::size_of::<Session>()) + self.turns.heap_bytes() + rare
    }

    pub fn touch(&self, now_ms: i64) {
        self.last_access_ms.set(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `drop_oldest`, returning copies of the turns that left.
    fn take_oldest(s: &mut Session, n: usize) -> Vec<Message> {
        let gone: Vec<Message> = s.turns().take(n).map(|t| t.to_message()).collect();
        assert_eq!(s.drop_oldest(n), gone.len());
        gone
    }

    fn msg(content: &str) -> Message {
        Message {
            seq: 0,
            ts_ms: 1,
            role: "user".into(),
            content: content.as_bytes().to_vec(),
            meta: None,
            emb: None,
            tokens: crate::conv::tokens::estimate(content.len()),
            ..Default::default()
        }
    }

    #[test]
    fn sequence_numbers_ascend_and_survive_clear() {
        let mut s = Session::new(3, 0);
        assert_eq!(s.add(msg("a"), None), Ok(1));
        assert_eq!(s.add(msg("b"), None), Ok(2));
        s.clear();
        assert_eq!(s.total_len(), 0);
        assert_eq!(s.add(msg("c"), None), Ok(3));
        assert_eq!(s.first_seq(), Some(3));
    }

    #[test]
    fn explicit_seq_must_advance() {
        let mut s = Session::new(3, 0);
        assert_eq!(s.add(msg("a"), Some(5)), Ok(5));
        assert_eq!(
            s.add(msg("b"), Some(5)),
            Err(SessionError::SeqNotIncreasing { given: 5, next: 6 })
        );
        assert_eq!(s.add(msg("c"), None), Ok(6));
    }

    #[test]
    fn window_and_overflow() {
        let mut s = Session::new(3, 0);
        for i in 0..5 {
            s.add(msg(&i.to_string()), None).unwrap();
        }
        assert_eq!(s.overflow_len(), 2);
        let last: Vec<u64> = s.last_n(3).map(|m| m.seq).collect();
        assert_eq!(last, vec![3, 4, 5]);
        let all: Vec<u64> = s.last_n(100).map(|m| m.seq).collect();
        assert_eq!(all, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn drop_oldest_records_archived_range_and_bytes() {
        let mut s = Session::new(2, 0);
        for i in 0..5 {
            s.add(msg(&"x".repeat(i * 10)), None).unwrap();
        }
        let before = s.mem_bytes();
        let gone = take_oldest(&mut s, 3);
        assert_eq!(s.drop_oldest(0), 0);
        assert_eq!(gone.len(), 3);
        assert_eq!(
            s.archived,
            ArchivedRange {
                count: 3,
                first_seq: 1,
                last_seq: 3
            }
        );
        assert_eq!(s.total_len(), 5);
        assert_eq!(s.first_seq(), Some(1));
        assert_eq!(s.last_seq(), Some(5));
        // The buffer is compacted lazily (once the dead part outgrows the live one).
        assert!(s.mem_bytes() <= before);
        s.drop_oldest(2);
        assert_eq!(s.last_seq(), Some(5));
        assert_eq!(s.hot_len(), 0);
        // A cold record keeps no slots.
        assert_eq!(s.mem_bytes(), Session::new(1, 0).mem_bytes());
    }

    #[test]
    fn rehydrate_brings_the_newest_archived_turns_back() {
        let mut s = Session::new(3, 0);
        for i in 0..6 {
            s.add(msg(&i.to_string()), None).unwrap();
        }
        let gone = take_oldest(&mut s, 6);
        s.archive_upto = 6;
        assert!(s.is_cold());
        let before = s.total_tokens();
        assert_eq!(s.rehydrate(gone[3..].to_vec()), 3);
        assert_eq!(
            s.total_tokens(),
            before,
            "tokens move from the archive to memory"
        );
        assert_eq!(
            s.archived,
            ArchivedRange {
                count: 3,
                first_seq: 1,
                last_seq: 3
            }
        );
        assert_eq!(s.archive_upto, 3);
        assert_eq!(
            s.last_n(10).map(|m| m.seq).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(s.total_len(), 6);
        // Not the newest archived turns: refused.
        assert_eq!(s.rehydrate(gone[..1].to_vec()), 0);
        assert_eq!(s.hot_len(), 3);
        // All the rest.
        assert_eq!(s.rehydrate(gone[..3].to_vec()), 3);
        assert_eq!(s.archived, ArchivedRange::default());
        assert_eq!(s.total_len(), 6);
    }

    #[test]
    fn rehydrate_on_a_replica_still_holding_the_turns_only_moves_the_watermark() {
        let mut s = Session::new(3, 0);
        for i in 0..6 {
            s.add(msg(&i.to_string()), None).unwrap();
        }
        s.archive_upto = 4; // decided, not yet durable here
        s.set_pending(Some((1, 4)));
        let copies: Vec<Message> = s.turns().skip(2).take(2).map(|t| t.to_message()).collect();
        assert_eq!(s.rehydrate(copies), 0);
        assert_eq!((s.archive_upto, s.pending(), s.hot_len()), (2, None, 6));
    }

    fn at(seq: u64) -> Message {
        Message { seq, ..msg("x") }
    }

    #[test]
    fn a_continuation_is_checked_whole_before_any_turn_is_added() {
        let mut s = Session::new(3, 0);
        s.push_loaded(at(1)).unwrap();
        s.next_seq = 10;
        let before = s.clone();
        // The third turn is bad: nothing is added.
        let more = vec![at(2), at(3), at(3)];
        assert_eq!(
            s.push_more(more),
            Err(SessionError::SeqNotIncreasing { given: 3, next: 4 })
        );
        assert_eq!(s, before);
        assert_eq!(
            s.check_more(&[at(2), at(10)]),
            Err(SessionError::SeqPastNext {
                given: 10,
                next: 10
            })
        );
        assert_eq!(
            s.check_more(&[at(1)]).unwrap_err().to_string(),
            "SEQ 1 is not past the session's last sequence (1)"
        );
        s.push_more(vec![at(2), at(9)]).unwrap();
        assert_eq!((s.hot_len(), s.next_seq), (3, 10));
        // Past the archived turns too, once memory is empty.
        let mut c = Session::new(3, 0);
        for i in 1..=3 {
            c.push_loaded(at(i)).unwrap();
        }
        c.drop_oldest(3);
        assert!(c.push_loaded(at(2)).is_err());
        assert!(c.push_loaded(at(u64::MAX)).is_err());
        c.push_loaded(at(4)).unwrap();
    }

    #[test]
    fn rehydrated_turns_must_be_archived_ones() {
        let mut s = Session::new(3, 0);
        for i in 1..=6 {
            s.push_loaded(at(i)).unwrap();
        }
        s.archived_durably(4);
        assert!(s.check_rehydrated(&[at(3), at(4)]).is_ok());
        assert_eq!(
            s.check_rehydrated(&[at(5)]).unwrap_err().to_string(),
            "turns 5..5 are not archived turns of the session (archived up to 4)"
        );
        assert!(s.check_rehydrated(&[]).is_err());
        assert!(s.check_rehydrated(&[at(0)]).is_err());
        // A replica whose own write lags: the primary's archive_upto counts.
        let mut r = Session::new(3, 0);
        for i in 1..=6 {
            r.push_loaded(at(i)).unwrap();
        }
        r.archive_upto = 4;
        assert!(r.check_rehydrated(&[at(3), at(4)]).is_ok());
    }

    fn archived_session(seqs: &[u64]) -> (Session, Vec<Message>) {
        let mut s = Session::new(3, 0);
        for &q in seqs {
            s.add(msg(&q.to_string()), Some(q)).unwrap();
        }
        let gone = take_oldest(&mut s, seqs.len());
        let mut header = Session::new(3, 0);
        header.archived = s.archived;
        header.next_seq = s.next_seq;
        (header, gone)
    }

    #[test]
    fn archived_turns_arrive_in_parts_and_come_out_whole() {
        let (mut s, turns) = archived_session(&[2, 3, 5, 8, 9]);
        assert_eq!(s.receive_archived(turns[..2].to_vec()), Ok(None));
        assert!(s.mem_bytes() > Session::new(1, 0).mem_bytes());
        assert_eq!(s.receive_archived(vec![]), Ok(None));
        assert_eq!(s.receive_archived(turns[2..].to_vec()), Ok(Some(turns)));
        assert_eq!(s.mem_bytes(), Session::new(1, 0).mem_bytes());
        // A complete archive can not be received twice.
        assert!(s.receive_archived(vec![msg("x")]).is_err());
    }

    #[test]
    fn archived_turns_out_of_range_or_order_are_refused_and_change_nothing() {
        let (s0, turns) = archived_session(&[2, 3, 5, 8, 9]);
        let at = |q: u64| {
            let mut m = msg("x");
            m.seq = q;
            m
        };
        for bad in [
            vec![turns[1].clone()], // does not start at the first archived seq
            vec![turns[0].clone(), turns[0].clone()], // repeated
            vec![turns[0].clone(), at(10)], // past the archived range
            vec![turns[0].clone(), turns[2].clone(), turns[1].clone()], // not ascending
        ] {
            let mut s = s0.clone();
            assert!(s.receive_archived(bad).is_err());
            assert_eq!(s, s0);
        }
        // Later parts must continue where the earlier ones ended.
        let mut s = s0.clone();
        s.receive_archived(turns[..3].to_vec()).unwrap();
        let before = s.clone();
        assert!(s.receive_archived(turns[1..].to_vec()).is_err());
        assert_eq!(s, before);
        // More turns than the range counts, even in order (a gap the header did not count).
        let (mut s, _) = archived_session(&[1, 2]);
        s.archived.last_seq = 3;
        assert_eq!(
            s.receive_archived(vec![at(1), at(2), at(3)]),
            Err(SessionError::ArchivedTooMany { count: 2 })
        );
        // No archived range at all.
        let mut s = Session::new(3, 0);
        assert!(s.receive_archived(vec![at(1)]).is_err());
    }

    #[test]
    fn token_budget_keeps_newest() {
        let mut s = Session::new(10, 0);
        for _ in 0..5 {
            s.add(msg(&"x".repeat(40)), None).unwrap(); // 10 + 4 tokens each
        }
        assert_eq!(s.fit_tokens(10, 14), 1);
        assert_eq!(s.fit_tokens(10, 41), 2);
        assert_eq!(s.fit_tokens(10, 13), 0);
        assert_eq!(s.fit_tokens(3, 1000), 3);
    }

    fn with_role(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            ..msg(content)
        }
    }

    fn with_role_turn(role: &'static str, content: &'static str) -> Turn<'static> {
        Turn {
            seq: 1,
            ts_ms: 0,
            role,
            content: content.as_bytes(),
            meta: None,
            emb: None,
            tokens: 0,
            name: None,
            tool_call_id: None,
            tool_calls: None,
            plain: false,
        }
    }

    #[test]
    fn role_filter_parses_a_list_and_refuses_empty_names() {
        let f = RoleFilter::parse(b"user,assistant").unwrap();
        assert!(
            f.keeps(&with_role_turn("user", "x")) && f.keeps(&with_role_turn("assistant", "x"))
        );
        assert!(!f.keeps(&with_role_turn("tool", "x")) && !f.keeps(&with_role_turn("use", "x")));
        for bad in [&b""[..], b",", b"user,", b",user", b"user,,assistant"] {
            assert!(RoleFilter::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            RoleFilter::parse(b"a,").unwrap_err(),
            "ROLES has an empty role name in 'a,'"
        );
    }

    #[test]
    fn pick_ctx_filters_then_counts_then_fits_tokens() {
        let mut s = Session::new(10, 0);
        for (i, role) in ["user", "tool", "assistant", "tool", "user", "assistant"]
            .iter()
            .enumerate()
        {
            s.add(with_role(role, &"x".repeat(40 + i)), None).unwrap(); // 15 tokens each
        }
        let seqs = |v: &mut dyn Iterator<Item = Turn>| v.map(|m| m.seq).collect::<Vec<_>>();
        let f = RoleFilter::parse(b"user,assistant").unwrap();
        assert_eq!(
            seqs(&mut pick_ctx(s.turns(), Some(&f), 10, None)),
            [1, 3, 5, 6]
        );
        assert_eq!(seqs(&mut pick_ctx(s.turns(), Some(&f), 3, None)), [3, 5, 6]);
        assert_eq!(
            seqs(&mut pick_ctx(s.turns(), Some(&f), 3, Some(31))),
            [5, 6]
        );
        assert_eq!(
            seqs(&mut pick_ctx(s.turns(), Some(&f), 3, Some(14))),
            [0u64; 0]
        );
        assert_eq!(seqs(&mut pick_ctx(s.turns(), None, 2, None)), [5, 6]);
        assert_eq!(seqs(&mut pick_ctx(s.turns(), None, 0, None)), [0u64; 0]);
        let tool = RoleFilter::parse(b"tool").unwrap();
        assert_eq!(
            seqs(&mut pick_ctx(s.turns(), Some(&tool), 10, None)),
            [2, 4]
        );
    }

    #[test]
    fn range_by_seq() {
        let mut s = Session::new(10, 0);
        for _ in 0..10 {
            s.add(msg("m"), None).unwrap();
        }
        let r: Vec<u64> = s.range(3, 6).map(|m| m.seq).collect();
        assert_eq!(r, vec![3, 4, 5, 6]);
        assert_eq!(s.range(11, 20).count(), 0);
    }

    #[test]
    fn sequence_numbers_stop_at_the_top() {
        let mut s = Session::new(4, 0);
        assert_eq!(s.add(msg("a"), Some(MAX_SEQ - 1)).unwrap(), MAX_SEQ - 1);
        assert_eq!(s.add(msg("b"), None).unwrap(), MAX_SEQ);
        let before = s.clone();
        assert_eq!(
            s.add(msg("c"), None),
            Err(SessionError::SeqPastTop { seq: MAX_SEQ + 1 })
        );
        assert_eq!(
            s.seq_for(Some(u64::MAX)),
            Err(SessionError::SeqPastTop { seq: u64::MAX })
        );
        assert_eq!(s, before, "a refused add changes nothing");
        assert!(SessionError::SeqPastTop { seq: MAX_SEQ + 1 }
            .to_string()
            .contains("9007199254740992"));
    }

    #[test]
    fn a_cold_stub_keeps_every_turn_archived_and_its_counter() {
        let mut s = Session::new(3, 7);
        s.sid = 42;
        for i in 0..5 {
            s.add(msg(&"x".repeat(i + 1)), None).unwrap();
        }
        s.drop_oldest(2);
        let tokens = s.total_tokens();
        let stub = s.clone().into_cold_stub();
        assert_eq!(s.cold_stub(), stub);
        assert_eq!(stub.hot_len(), 0);
        assert_eq!(stub.total_len(), 5);
        assert_eq!((stub.archived.first_seq, stub.archived.last_seq), (1, 5));
        assert_eq!(stub.archive_upto, 5);
        assert_eq!((stub.next_seq, stub.sid, stub.window), (6, 42, 3));
        assert_eq!(stub.total_tokens(), tokens);
    }

    proptest::proptest! {
        /// Whatever SEQ a client gives and however many ADDs follow, no sequence number past
        /// MAX_SEQ is ever issued, every issued one ascends, and a refused ADD changes nothing.
        #[test]
        fn prop_sequence_numbers_stay_in_range(start in (MAX_SEQ - 64)..=(MAX_SEQ + 64), adds in 0usize..80) {
            let mut s = Session::new(4, 0);
            let mut last = 0;
            match s.add(msg("first"), Some(start)) {
                Ok(n) => { proptest::prop_assert!(n <= MAX_SEQ); last = n; }
                Err(_) => proptest::prop_assert!(start > MAX_SEQ && s.total_len() == 0),
            }
            for _ in 0..adds {
                let before = s.clone();
                match s.add(msg("next"), None) {
                    Ok(n) => {
                        proptest::prop_assert!(n <= MAX_SEQ && n > last);
                        last = n;
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(e, SessionError::SeqPastTop { seq: MAX_SEQ + 1 });
                        proptest::prop_assert_eq!(&s, &before);
                    }
                }
            }
        }
    }
}
