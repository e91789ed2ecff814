//! CONV.* command handlers: parse, call the session core, reply, replicate what was decided.

use redis_module::{raw, Context, NotifyEvent, RedisError, RedisResult, RedisString, RedisValue};

use redis_module::key::RedisKeyWritable;

use super::codec::{self, Decoded};
use super::message::{self, Message};
use super::r#type::SESSION_TYPE;
use super::render::{self, Format, SizeHint};
use super::session::{self, RoleFilter, Session, MAX_WINDOW};
use super::tokens::{self, Tokenizer};
use super::turn::{Emb, Turn};
use super::{cold, search};
use crate::clock::{now_ms, random_id};
use crate::metrics;
use crate::server::args::{self, err, Args};
use crate::server::reply::Field;
use crate::server::{blocking, config, keys};

/// The command AOF rewrite emits to rebuild a session (also accepted from clients, as RESTORE is).
pub const LOAD_COMMAND: &str = "CONV._LOAD";

/// Longest `EX` of CONV.ADD (as SEMCACHE.SET's): 100 years.
pub const MAX_TTL_SECS: i64 = 100 * 365 * 86_400;

/// The session's expiry (unix ms) an ADD asked for: `EX` from a client, decided here against
/// the clock, or `PXAT`, the primary's decision as replicas and the AOF receive it.
fn expire_at(
    ctx: &Context,
    ex: Option<i64>,
    pxat: Option<i64>,
    now: i64,
) -> Result<Option<i64>, RedisError> {
    match (ex, pxat) {
        (Some(_), Some(_)) => err("EX and PXAT cannot be given together"),
        (Some(secs), None) => Ok(Some(now + secs * 1000)),
        (None, Some(at)) => {
            // A decision taken elsewhere is applied as it is; a client's must be ahead.
            let decided = applying_decisions(ctx);
            let (min, max) = (now + 1, now + MAX_TTL_SECS * 1000);
            if !decided && !(min..=max).contains(&at) {
                return err(format!("PXAT must be between {min} and {max}, got {at}"));
            }
            Ok(Some(at))
        }
        (None, None) => Ok(None),
    }
}

/// CONV.ADD key role content [META json] [EMB fp32blob] [TS ms] [WINDOW n] [SEQ n]
/// [EX seconds | PXAT ms] [NAME n] [TOOL_CALL_ID id] [TOOL_CALLS json-array] [TOKENIZER name]
/// [TOKENS n]
pub fn add(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    metrics::CONV_ADDS.incr();
    // Past maxmemory an ADD waits for pressure archiving rather than failing (not on a
    // replica or while loading: those apply what the primary decided).
    if !applying_decisions(ctx) {
        if let Some(reply) = super::backpressure::admit(ctx, argv) {
            return reply;
        }
    }
    apply_add(ctx, argv, Counting::MayDefer)
}

/// A parked ADD, applied once memory is back under the limit (counted here).
pub(super) fn add_admitted(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    apply_add(ctx, argv, Counting::Inline)
}

/// Where [`apply_add`] gets the content's token count from.
#[derive(Debug, Clone, Copy)]
enum Counting {
    /// A command as it arrives: a big exact count may go to a counting thread.
    MayDefer,
    /// Counted here, whatever its size (the client already waited).
    Inline,
    /// Counted on a counting thread with this tokenizer; used if the session still counts
    /// with it, else counted again here.
    Counted(Tokenizer, u32),
}

/// CONV.ADD's arguments, parsed and checked (borrowed from them where they are used as sent).
struct AddRequest<'a> {
    role: &'a str,
    content: &'a [u8],
    meta: Option<String>,
    emb: Option<Vec<f32>>,
    ts: Option<i64>,
    seq: Option<u64>,
    window: Option<u32>,
    sid: Option<u64>,
    expire_at: Option<i64>,
    name: Option<String>,
    tool_call_id: Option<String>,
    tool_calls: Option<String>,
    tokenizer: Option<Tokenizer>,
    /// `TOKENS n`: the primary's count, from replication or the AOF only.
    tokens: Option<u32>,
}

impl<'a> AddRequest<'a> {
    fn parse(ctx: &Context, argv: &'a [RedisString], now: i64) -> Result<Self, RedisError> {
        if argv.len() < 4 {
            return Err(RedisError::WrongArity);
        }
        let role = message::check_role(argv[2].as_slice()).map_err(args::reply_err)?;
        let content = argv[3].as_slice();
        let max_content = config::get(&config::MAX_CONTENT_BYTES);
        if content.len() as i64 > max_content {
            return err(format!(
                "content is {} bytes, over the maximum of {max_content} (convcache.max-content-bytes)",
                content.len()
            ));
        }
        let mut r = AddRequest {
            role,
            content,
            meta: None,
            emb: None,
            ts: None,
            seq: None,
            window: None,
            sid: None,
            expire_at: None,
            name: None,
            tool_call_id: None,
            tool_calls: None,
            tokenizer: None,
            tokens: None,
        };
        let (mut ex, mut pxat) = (None, None);
        let mut i = 4;
        while i < argv.len() {
            let kw = argv[i].as_slice();
            let name = String::from_utf8_lossy(kw).to_ascii_uppercase();
            let Some(value) = argv.get(i + 1).map(|v| v.as_slice()) else {
                return match name.as_str() {
                    "META" | "EMB" | "TS" | "SEQ" | "WINDOW" | "SID" | "EX" | "PXAT" | "NAME"
                    | "TOOL_CALL_ID" | "TOOL_CALLS" | "TOKENIZER" | "TOKENS" => {
                        err(format!("{name} needs a value"))
                    }
                    _ => args::unknown_option(&name),
                };
            };
            match name.as_str() {
                "META" => r.meta = Some(message::compact_meta(value).map_err(args::reply_err)?),
                "EMB" => r.emb = Some(message::parse_emb(value).map_err(args::reply_err)?),
                "TS" => r.ts = Some(args::int_in("TS", value, 0, i64::MAX)?),
                "SEQ" => {
                    r.seq = Some(args::int_in("SEQ", value, 1, session::MAX_SEQ as i64)? as u64)
                }
                "WINDOW" => {
                    r.window = Some(args::int_in("WINDOW", value, 1, i64::from(MAX_WINDOW))? as u32)
                }
                "SID" => r.sid = Some(args::parse_i64("SID", value)? as u64),
                "EX" => ex = Some(args::int_in("EX", value, 1, MAX_TTL_SECS)?),
                "PXAT" => pxat = Some(args::int_in("PXAT", value, 1, i64::MAX)?),
                "NAME" => {
                    r.name = Some(
                        message::check_name(value)
                            .map_err(args::reply_err)?
                            .to_string(),
                    )
                }
                "TOOL_CALL_ID" => {
                    r.tool_call_id = Some(
                        message::check_tool_call_id(value)
                            .map_err(args::reply_err)?
                            .to_string(),
                    )
                }
                "TOOL_CALLS" => {
                    r.tool_calls =
                        Some(message::compact_tool_calls(value).map_err(args::reply_err)?)
                }
                "TOKENIZER" => {
                    r.tokenizer = Some(Tokenizer::parse(value).ok_or_else(|| {
                        RedisError::String(format!(
                            "ERR TOKENIZER must be estimate, cl100k_base or o200k_base, got '{}'",
                            String::from_utf8_lossy(value)
                        ))
                    })?)
                }
                "TOKENS" => {
                    // The count the primary decided: a client's would be taken on trust.
                    if !applying_decisions(ctx) {
                        return err(
                            "TOKENS is the primary's count (replication and AOF only), not accepted from clients",
                        );
                    }
                    r.tokens = Some(args::int_in("TOKENS", value, 0, i64::from(u32::MAX))? as u32)
                }
                other => return args::unknown_option(other),
            }
            i += 2;
        }
        r.expire_at = expire_at(ctx, ex, pxat, now)?;
        Ok(r)
    }
}

/// Applies a CONV.ADD: the handler's path, and (with [`Counting::Counted`]) the path of an ADD
/// whose content was counted on a counting thread, which checks everything again against the
/// session as it is now (it may have changed, or been deleted or recreated, meanwhile).
fn apply_add(ctx: &Context, argv: &[RedisString], counting: Counting) -> RedisResult {
    let now = now_ms();
    let req = AddRequest::parse(ctx, argv, now)?;
    let key = ctx.open_key_writable(&argv[1]);
    let ts = req.ts.unwrap_or(now);
    // Borrowed from the arguments: the session's arena copies the bytes once.
    let mut msg = Turn {
        seq: 0,
        ts_ms: ts,
        role: req.role,
        content: req.content,
        meta: req.meta.as_deref(),
        emb: req.emb.as_deref().map(Emb::F32),
        tokens: 0,
        name: req.name.as_deref(),
        tool_call_id: req.tool_call_id.as_deref(),
        tool_calls: req.tool_calls.as_deref(),
        plain: false,
    };
    // The same rules as every decoder of stored turns (see message.rs).
    msg.validate().map_err(args::reply_err)?;
    let mut drop_auto_expire = 0;
    // A session keeps its window until a later WINDOW changes it; a new one starts with the
    // config's. A new session's window, or a WINDOW given, is replicated; otherwise it is
    // already the replica's state.
    // An evicted session comes back before the write (the primary decides; replicas get it
    // as CONV._LOAD just before this ADD).
    if key.is_empty() && !applying_decisions(ctx) {
        super::evicted::restore(ctx, &key, &argv[1])?;
    }
    let existing = keys::write::<Session>(&key, &SESSION_TYPE)?;
    let window = req.window.unwrap_or_else(|| match &existing {
        Some(s) => s.window,
        None => config::get(&config::WINDOW) as u32,
    });
    // A session counts with the tokenizer it started with; a new one with TOKENIZER or the
    // config's. The count is taken once, here (or on a counting thread), and stored with the turn.
    let turn_tokenizer = match (&existing, req.tokenizer) {
        (Some(s), Some(t)) if t != s.tokenizer => {
            return err(format!(
                "TOKENIZER {} differs from the session's tokenizer {} (a session keeps the tokenizer it started with)",
                t.name(),
                s.tokenizer.name()
            ))
        }
        (Some(s), _) => s.tokenizer,
        (None, t) => t.unwrap_or_else(|| config::TOKENIZER.value()),
    };
    if let Some(s) = &existing {
        // Refused now rather than after a count in the background.
        s.seq_for(req.seq).map_err(args::reply_err)?;
    }
    msg.tokens = match (req.tokens, counting) {
        (Some(n), _) => n,
        (None, Counting::Counted(t, n)) if t == turn_tokenizer => n,
        (None, Counting::MayDefer)
            if turn_tokenizer.counts_in_background(
                msg.content.len(),
                config::get(&config::TOKENIZE_INLINE_BYTES),
            ) && !applying_decisions(ctx) =>
        {
            // Where the client cannot wait (MULTI, scripts) the count is taken here.
            match blocking::block(ctx, "CONV.ADD") {
                Ok(bc) => return count_then_add(bc, argv, turn_tokenizer),
                Err(_) => turn_tokenizer.count(msg.content),
            }
        }
        _ => turn_tokenizer.count(msg.content),
    };
    // Replicas and the AOF get an exact count as decided here: they never run the BPE.
    let replicated_tokens =
        (turn_tokenizer != Tokenizer::Estimate || req.tokens.is_some()).then_some(msg.tokens);
    let tool_fields = msg.has_tool_fields();
    let mut created = None;
    let (seq, session_sid) = match existing {
        Some(s) => {
            // `add` refuses (changing nothing) before the window is set: a refused ADD
            // changes nothing at all.
            let seq = metrics::tracked(s, |s| {
                let seq = s.add_turn(msg, req.seq)?;
                s.window = window;
                Ok::<u64, session::SessionError>(seq)
            })
            .map_err(args::reply_err)?;
            s.touch(now);
            // A cold session that comes back to life loses the retention TTL idle archival gave it.
            drop_auto_expire = std::mem::take(&mut s.auto_expire_ms);
            if s.overflow_len() >= config::get(&config::ARCHIVE_BATCH).max(1) as usize
                && !ctx.get_flags().contains(redis_module::ContextFlags::SLAVE)
                && !crate::server::cluster::from_slot_import(ctx)
            {
                cold::overflow_ready(keys::selected_db(ctx), argv[1].as_slice(), s);
            }
            (seq, s.sid)
        }
        None => {
            // Created at its first message's time: decided by the primary, so replicas agree.
            let mut s = Session::new(window, ts);
            s.touch(now);
            s.tokenizer = turn_tokenizer;
            created = Some(turn_tokenizer);
            s.sid = req.sid.unwrap_or_else(random_id);
            let sid = s.sid;
            let seq = s.add_turn(msg, req.seq).map_err(args::reply_err)?;
            store_new(&key, s)?;
            (seq, sid)
        }
    };
    drop(key);
    let expire_at = req.expire_at;
    match expire_at {
        // The TTL asked for wins over any other (a retention TTL, the user's earlier one).
        Some(at) => keys::set_expire_at(ctx, &argv[1], Some(at)),
        None if drop_auto_expire != 0 && keys::abs_expire_ms(ctx, &argv[1]) == drop_auto_expire => {
            keys::set_expire_at(ctx, &argv[1], None)
        }
        None => {}
    }
    if expire_at.is_some() || created.is_some() || tool_fields {
        let decided = [ts, seq as i64, i64::from(window), session_sid as i64];
        replicate_add_in_full(ctx, argv, decided, expire_at, created, replicated_tokens);
    } else {
        replicate_add(ctx, argv, ts, seq, replicated_tokens);
    }
    // SAFETY: plain module API call; a C string literal spares the crate's CString per add.
    unsafe {
        raw::RedisModule_NotifyKeyspaceEvent.expect("NotifyKeyspaceEvent")(
            ctx.ctx,
            NotifyEvent::MODULE.bits(),
            c"conv.add".as_ptr(),
            argv[1].inner,
        );
    }
    Ok(RedisValue::Integer(seq as i64))
}

/// Counts the content of an ADD that [`apply_add`] has checked on a counting thread, then
/// applies the ADD on the main thread. The client waits meanwhile, and so do its next commands
/// (a blocked client's pipeline is read after its reply): one client's ADDs keep their order.
fn count_then_add(
    bc: blocking::Blocked,
    argv: &[RedisString],
    tokenizer: Tokenizer,
) -> RedisResult {
    // Bytes cross the threads, never server strings; new ones are made to apply the ADD.
    let args: Vec<Vec<u8>> = argv.iter().map(|a| a.as_slice().to_vec()).collect();
    tokens::count_in_background(Box::new(move || {
        let tokens = tokenizer.count(&args[3]);
        let counted = CountedAdd {
            args,
            tokenizer,
            tokens,
        };
        // If the client left meanwhile, the timer applies it (see `blocking`).
        bc.finish(Box::new(move |ctx| counted.apply(ctx)));
    }));
    Ok(RedisValue::NoReply)
}

/// An ADD whose content was counted on a counting thread, as bytes.
struct CountedAdd {
    args: Vec<Vec<u8>>,
    tokenizer: Tokenizer,
    tokens: u32,
}

impl CountedAdd {
    fn apply(self, ctx: &Context) -> RedisResult {
        let argv: Vec<RedisString> = self
            .args
            .iter()
            .map(|a| RedisString::create_from_slice(ctx.ctx, a))
            .collect();
        apply_add(ctx, &argv, Counting::Counted(self.tokenizer, self.tokens))
    }
}

/// Replicas and the AOF get the primary's decisions (time, sequence, an exact token count), so
/// a replay reaches the same state whatever the replica's clock or config. This is the path of
/// an ordinary add to an existing session, whose window and id are already the replica's state
/// (the add that created the session, or changed its window, replicated them);
/// [`replicate_add_in_full`] takes the rest.
fn replicate_add(ctx: &Context, argv: &[RedisString], ts: i64, seq: u64, tokens: Option<u32>) {
    let [t, q, m, e, n] = replication_keywords().0;
    // META, EMB and WINDOW, those given, go on as the client sent them (shared, not copied),
    // and an exact TOKENS count, as one vector argument (`v`, which may be empty).
    let mut optional = [std::ptr::null_mut(); 8];
    let mut len = 0;
    for pair in argv[4..].chunks_exact(2) {
        let kw = pair[0].as_slice();
        let ours = if kw.eq_ignore_ascii_case(b"META") {
            m
        } else if kw.eq_ignore_ascii_case(b"EMB") {
            e
        } else if kw.eq_ignore_ascii_case(b"WINDOW") {
            pair[0].inner
        } else {
            continue;
        };
        optional[len] = ours;
        optional[len + 1] = pair[1].inner;
        len += 2;
    }
    // Only sessions with an exact tokenizer have a count to send: a string made for it.
    let count = tokens.map(|n| RedisString::create(None, itoa::Buffer::new().format(n)));
    if let Some(count) = &count {
        optional[len] = n;
        optional[len + 1] = count.inner;
        len += 2;
    }
    // The numbers go as digits (`b`, one small string each) rather than as integers (`l`,
    // which the server turns into an object and a separate string): half the allocations.
    let (mut ts_digits, mut seq_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (ts, seq) = (ts_digits.format(ts), seq_digits.format(seq));
    // SAFETY: each format letter matches its arguments: s = RedisModuleString*, v =
    // RedisModuleString** and its length (size_t), b = a byte pointer and its length (size_t).
    unsafe {
        raw::RedisModule_Replicate.expect("Replicate")(
            ctx.ctx,
            c"CONV.ADD".as_ptr(),
            c"sssvsbsb".as_ptr(),
            argv[1].inner,
            argv[2].inner,
            argv[3].inner,
            optional.as_mut_ptr(),
            len,
            t,
            ts.as_ptr(),
            ts.len(),
            q,
            seq.as_ptr(),
            seq.len(),
        );
    }
}

/// The keywords `replicate_add` sends, as server strings made once: each ADD then shares them
/// (a reference count) instead of creating strings for the replication stream.
struct ReplicationKeywords([*mut raw::RedisModuleString; 5]);

// SAFETY: made once, never changed or freed; the server only reads them, on the main thread.
unsafe impl Send for ReplicationKeywords {}
unsafe impl Sync for ReplicationKeywords {}

fn replication_keywords() -> &'static ReplicationKeywords {
    static KEYWORDS: std::sync::OnceLock<ReplicationKeywords> = std::sync::OnceLock::new();
    KEYWORDS.get_or_init(|| {
        let make = |s: &std::ffi::CStr| {
            // SAFETY: a string with no context is not freed automatically: it lives forever.
            unsafe {
                raw::RedisModule_CreateString.expect("CreateString")(
                    std::ptr::null_mut(),
                    s.as_ptr(),
                    s.to_bytes().len(),
                )
            }
        };
        ReplicationKeywords([c"TS", c"SEQ", c"META", c"EMB", c"TOKENS"].map(make))
    })
}

/// `replicate_add` for an ADD that set the session's expiry, created the session, or carries
/// tool fields: the absolute time decided here replaces `EX`, so replicas and an AOF replay
/// expire the session at the same instant; a new session's tokenizer goes on explicitly, so
/// a replica with another `tokenizer` config counts the same; an exact count goes on as
/// `TOKENS`, as in [`replicate_add`].
fn replicate_add_in_full(
    ctx: &Context,
    argv: &[RedisString],
    decided: [i64; 4],
    expire_at: Option<i64>,
    created: Option<Tokenizer>,
    tokens: Option<u32>,
) {
    const KEPT: [&[u8]; 5] = [b"META", b"EMB", b"NAME", b"TOOL_CALL_ID", b"TOOL_CALLS"];
    let mut out: Vec<RedisString> = argv[1..4].to_vec();
    for pair in argv[4..].chunks_exact(2) {
        let kw = pair[0].as_slice();
        if KEPT.iter().any(|k| kw.eq_ignore_ascii_case(k)) {
            out.extend_from_slice(pair);
        }
    }
    for (name, value) in ["TS", "SEQ", "WINDOW", "SID"].iter().zip(decided) {
        out.push(ctx.create_string(*name));
        out.push(ctx.create_string(value.to_string()));
    }
    if let Some(at) = expire_at {
        out.push(ctx.create_string("PXAT"));
        out.push(ctx.create_string(at.to_string()));
    }
    if let Some(t) = created {
        out.push(ctx.create_string("TOKENIZER"));
        out.push(ctx.create_string(t.name()));
    }
    if let Some(n) = tokens {
        out.push(ctx.create_string("TOKENS"));
        out.push(ctx.create_string(n.to_string()));
    }
    let refs: Vec<&RedisString> = out.iter().collect();
    ctx.replicate("CONV.ADD", refs.as_slice());
}

/// The session under `key`, or the one an evicted key left (served from its archive).
fn read_or_evicted<'a>(
    ctx: &Context,
    key: &'a redis_module::key::RedisKey,
    name: &RedisString,
    cold_stub: &'a mut Option<Session>,
) -> Result<Option<&'a Session>, RedisError> {
    if let Some(s) = keys::read::<Session>(key, &SESSION_TYPE)? {
        return Ok(Some(s));
    }
    *cold_stub = super::evicted::stub(keys::selected_db(ctx), name.as_slice());
    Ok(cold_stub.as_ref())
}

/// Gives a new session to the server and counts it; `free` uncounts it.
pub(super) fn store_new(key: &RedisKeyWritable, s: Session) -> Result<(), RedisError> {
    metrics::session_created(&s);
    key.set_value(&SESSION_TYPE, s)
}

fn parse_format(opts: &mut Args) -> Result<Format, RedisError> {
    let v = opts.value_of("FORMAT")?;
    Format::parse(v).ok_or_else(|| {
        RedisError::String(format!(
            "ERR FORMAT must be messages, full, text or resp, got '{}'",
            String::from_utf8_lossy(v)
        ))
    })
}

fn text_or_nil(text: Option<&str>) -> RedisValue {
    text.map_or(RedisValue::Null, |x| {
        RedisValue::StringBuffer(x.as_bytes().to_vec())
    })
}

pub fn reply_messages<'a>(
    format: Format,
    msgs: impl Iterator<Item = Turn<'a>>,
    size: SizeHint,
) -> RedisValue {
    match format {
        Format::Resp => RedisValue::Array(
            msgs.map(|m| {
                RedisValue::Array(vec![
                    RedisValue::Integer(m.seq as i64),
                    RedisValue::Integer(m.ts_ms),
                    RedisValue::StringBuffer(m.role.as_bytes().to_vec()),
                    RedisValue::StringBuffer(m.content.to_vec()),
                    text_or_nil(m.meta),
                    RedisValue::Integer(i64::from(m.tokens)),
                    text_or_nil(m.name),
                    text_or_nil(m.tool_call_id),
                    text_or_nil(m.tool_calls),
                ])
            })
            .collect(),
        ),
        _ => RedisValue::StringBuffer(render::render(format, msgs, size)),
    }
}

/// [`reply_messages`] for turns read in memory on the main thread: the text formats are built
/// in one buffer kept between replies and copied into the client's reply, so a CTX or HISTORY
/// allocates nothing for its reply.
fn reply_in_place<'a>(
    ctx: &Context,
    format: Format,
    msgs: impl Iterator<Item = Turn<'a>>,
    size: SizeHint,
) -> RedisResult {
    if format == Format::Resp {
        return Ok(reply_messages(format, msgs, size));
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        render::render_into(buf, format, msgs, size);
        // SAFETY: plain module API call; the server copies the bytes.
        unsafe {
            raw::RedisModule_ReplyWithStringBuffer.expect("ReplyWithStringBuffer")(
                ctx.ctx,
                buf.as_ptr().cast(),
                buf.len(),
            );
        }
        // A one-off huge reply does not keep its memory.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
    });
    Ok(RedisValue::NoReply)
}

/// `ROLES r1,r2,...`: the roles a read keeps.
fn parse_roles(opts: &mut Args) -> Result<RoleFilter, RedisError> {
    RoleFilter::parse(opts.value_of("ROLES")?).map_err(args::reply_err)
}

/// CONV.CTX key [COUNT n] [TOKENS budget] [ROLES r1,r2] [FORMAT messages|full|text|resp]
///
/// ROLES filters first: the reply is the last COUNT turns of those roles, fit to TOKENS.
pub fn ctx_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    metrics::CONV_READS.incr();
    let mut a = Args::new(argv, 1)?;
    let key_name = a.next_arg()?;
    let (mut count, mut tokens, mut roles, mut format) = (None, None, None, Format::Messages);
    while !a.done() {
        match a.next_keyword()?.as_str() {
            "COUNT" => count = Some(a.int_in("COUNT", 0, i64::MAX)? as usize),
            "TOKENS" => tokens = Some(a.int_in("TOKENS", 0, i64::MAX)? as u64),
            "ROLES" => roles = Some(parse_roles(&mut a)?),
            "FORMAT" => format = parse_format(&mut a)?,
            other => return args::unknown_option(other),
        }
    }
    let key = ctx.open_key(key_name);
    let mut cold_stub = None;
    let Some(s) = read_or_evicted(ctx, &key, key_name, &mut cold_stub)? else {
        return Ok(reply_messages(
            format,
            std::iter::empty(),
            SizeHint::default(),
        ));
    };
    s.touch(now_ms());
    let n = count.unwrap_or(s.window as usize);
    // Turns of the wanted roles in memory, newest first, up to n: enough means no disk read.
    let hot_kept = match &roles {
        None => s.hot_len(),
        Some(_) => session::kept(s.turns(), roles.as_ref()).count(),
    }
    .min(n);
    if hot_kept >= n || s.archived.count == 0 {
        s.prefetch_turns();
        let picked = session::pick_ctx(s.turns(), roles.as_ref(), n, tokens);
        return reply_in_place(ctx, format, picked, s.hot_size());
    }
    // Part of the answer is on disk: read it in the background, reply with it and the
    // in-memory turns as they are now. The read covers the window too (never more), so the
    // primary brings the whole window back into memory whatever COUNT asked for. With ROLES,
    // how many archived turns hold the missing ones is unknown: the whole archive is read.
    let bring_back = (s.window as usize).saturating_sub(s.hot_len());
    let need = match roles {
        Some(_) => s.archived.count,
        None => ((n - s.hot_len()).max(bring_back) as u64).min(s.archived.count),
    };
    let from = s.archived.last_seq + 1 - need;
    let hot: Vec<Message> = s.turns().map(|t| t.to_message()).collect();
    let render = Box::new(move |mut turns: Vec<Message>| {
        turns.extend(hot);
        let all = turns.iter().map(Message::as_turn);
        let picked = session::pick_ctx(all, roles.as_ref(), n, tokens);
        Ok(reply_messages(
            format,
            picked,
            SizeHint::of_messages(&turns),
        ))
    });
    let last = s.archived.last_seq;
    cold::read_archive(
        ctx,
        "CONV.CTX",
        key_name.as_slice(),
        s,
        from,
        last,
        bring_back,
        render,
    )
}

/// CONV.HISTORY key [FROM seq] [TO seq] [ROLES r1,r2] [FORMAT ...]
pub fn history(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    metrics::CONV_READS.incr();
    let mut a = Args::new(argv, 1)?;
    let key_name = a.next_arg()?;
    let (mut from, mut to, mut roles, mut format) = (0u64, u64::MAX, None, Format::Messages);
    while !a.done() {
        match a.next_keyword()?.as_str() {
            "FROM" => from = a.int_in("FROM", 0, i64::MAX)? as u64,
            "TO" => to = a.int_in("TO", 0, i64::MAX)? as u64,
            "ROLES" => roles = Some(parse_roles(&mut a)?),
            "FORMAT" => format = parse_format(&mut a)?,
            other => return args::unknown_option(other),
        }
    }
    let key = ctx.open_key(key_name);
    let mut cold_stub = None;
    let Some(s) = read_or_evicted(ctx, &key, key_name, &mut cold_stub)? else {
        return Ok(reply_messages(
            format,
            std::iter::empty(),
            SizeHint::default(),
        ));
    };
    s.touch(now_ms());
    if s.archived.count == 0 || from > s.archived.last_seq || to < s.archived.first_seq {
        let kept = session::kept(s.range(from, to), roles.as_ref());
        return reply_in_place(ctx, format, kept, s.hot_size());
    }
    let hot: Vec<Message> = s.range(from, to).map(|t| t.to_message()).collect();
    let render = Box::new(move |mut turns: Vec<Message>| {
        turns.extend(hot);
        let size = SizeHint::of_messages(&turns);
        let all = turns.iter().map(Message::as_turn);
        Ok(reply_messages(
            format,
            session::kept(all, roles.as_ref()),
            size,
        ))
    });
    let (lo, hi) = (from.max(s.archived.first_seq), to.min(s.archived.last_seq));
    cold::read_archive(
        ctx,
        "CONV.HISTORY",
        key_name.as_slice(),
        s,
        lo,
        hi,
        0,
        render,
    )
}

/// CONV.SEARCH key (EMB fp32 | TEXT query) [K n] [RECENT n]: the last RECENT turns and the K
/// older turns most relevant to the query, as one JSON object.
pub fn search(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    metrics::CONV_READS.incr();
    // Only the key is positional: a keyword without its value gets "X needs a value".
    let mut a = Args::new(argv, 1)?;
    let key_name = a.next_arg()?;
    let (mut query, mut k, mut recent) = (None, 5usize, None);
    while !a.done() {
        match a.next_keyword()?.as_str() {
            "EMB" => {
                let v = message::parse_emb(a.value_of("EMB")?).map_err(args::reply_err)?;
                query = Some(search::Query::Emb(v));
            }
            "TEXT" => {
                query = Some(search::Query::Text(
                    String::from_utf8_lossy(a.value_of("TEXT")?).into_owned(),
                ))
            }
            "K" => k = a.int_in("K", 0, 10_000)? as usize,
            "RECENT" => recent = Some(a.int_in("RECENT", 0, 1_000_000)? as usize),
            other => return args::unknown_option(other),
        }
    }
    let Some(query) = query else {
        return err("CONV.SEARCH needs EMB vector or TEXT query");
    };
    let scorer = search::Scorer::new(query);
    let key = ctx.open_key(key_name);
    let mut cold_stub = None;
    let Some(s) = read_or_evicted(ctx, &key, key_name, &mut cold_stub)? else {
        return search_reply(&[], &scorer, 0, k);
    };
    s.touch(now_ms());
    let recent = recent.unwrap_or(s.window as usize);
    // The EMB dimension is checked against the turns searched: here (main thread) when they
    // are all in memory, on the I/O thread with the archived ones otherwise.
    if s.archived.count == 0 {
        let all: Vec<Turn> = s.turns().collect();
        return search_reply(&all, &scorer, recent, k);
    }
    let hot: Vec<Message> = s.turns().map(|t| t.to_message()).collect();
    let render = Box::new(move |mut turns: Vec<Message>| {
        turns.extend(hot);
        let all: Vec<Turn> = turns.iter().map(Message::as_turn).collect();
        search_reply(&all, &scorer, recent, k)
    });
    let (lo, hi) = (s.archived.first_seq, s.archived.last_seq);
    cold::read_archive(
        ctx,
        "CONV.SEARCH",
        key_name.as_slice(),
        s,
        lo,
        hi,
        0,
        render,
    )
}

fn search_reply(all: &[Turn], scorer: &search::Scorer, recent: usize, k: usize) -> RedisResult {
    search::search_json(all, scorer, recent, k)
        .map(RedisValue::StringBuffer)
        .map_err(args::reply_err)
}

/// CONV.LEN key
pub fn len(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    let key = ctx.open_key(args::single_key(argv)?);
    let mut cold_stub = None;
    let n = read_or_evicted(ctx, &key, &argv[1], &mut cold_stub)?.map_or(0, |s| s.total_len());
    Ok(RedisValue::Integer(n as i64))
}

/// CONV.INFO key: a map (RESP3) / flat array (RESP2); nil when the key is missing.
pub fn info(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    let key = ctx.open_key(args::single_key(argv)?);
    let mut cold_stub = None;
    let Some(s) = read_or_evicted(ctx, &key, &argv[1], &mut cold_stub)? else {
        return Ok(RedisValue::Null);
    };
    crate::server::reply::ordered_fields(
        ctx,
        &[
            ("window", Field::Int(i64::from(s.window))),
            ("hot", Field::Int(s.hot_len() as i64)),
            ("archived", Field::Int(s.archived.count as i64)),
            ("len", Field::Int(s.total_len() as i64)),
            ("first_seq", Field::Int(s.first_seq().unwrap_or(0) as i64)),
            ("last_seq", Field::Int(s.last_seq().unwrap_or(0) as i64)),
            ("next_seq", Field::Int(s.next_seq as i64)),
            ("created_ms", Field::Int(s.created_ms)),
            ("last_access_ms", Field::Int(s.last_access_ms.get())),
            ("memory_bytes", Field::Int(s.mem_bytes() as i64)),
            ("tokens", Field::Int(s.total_tokens() as i64)),
            ("tokenizer", Field::Text(s.tokenizer.name())),
        ],
    )
}

/// CONV.CLEAR key: drops every message, keeps the sequence counter. Replies the count dropped.
pub fn clear(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    let name = args::single_key(argv)?;
    let key = ctx.open_key_writable(name);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let dropped = s.total_len();
    if s.archived.count > 0 || s.archive_upto > 0 || s.pending().is_some() {
        cold::delete_archive(keys::selected_db(ctx), name.as_slice());
    }
    metrics::tracked(s, |s| s.clear());
    ctx.replicate_verbatim();
    ctx.notify_keyspace_event(NotifyEvent::MODULE, "conv.clear", name);
    Ok(RedisValue::Integer(dropped as i64))
}

/// CONV.DEL key: deletes the session. Replies 1 if it existed.
pub fn del(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    let name = args::single_key(argv)?;
    let key = ctx.open_key_writable(name);
    if keys::write::<Session>(&key, &SESSION_TYPE)?.is_none() {
        // An evicted session is no key, but CONV.DEL deletes it all the same.
        let db = keys::selected_db(ctx);
        if key.is_empty() && super::evicted::stub(db, name.as_slice()).is_some() {
            super::evicted::forget(db, name.as_slice());
            cold::delete_archive(db, name.as_slice());
            ctx.replicate_verbatim();
            return Ok(RedisValue::Integer(1));
        }
        return Ok(RedisValue::Integer(0));
    }
    key.delete()?;
    ctx.replicate_verbatim();
    ctx.notify_keyspace_event(NotifyEvent::GENERIC, "del", name);
    Ok(RedisValue::Integer(1))
}

/// CONV._LOAD key payload: rebuilds a session from the AOF-rewrite encoding (internal: an AOF
/// rewrite and a Valkey slot-migration snapshot emit it). A payload with a session header
/// replaces the key; one with more turns appends them to the session being rebuilt; one with
/// archived turns (the session's cold part, for a node without its file) collects them until
/// the header's whole archived range is here, then writes them to this node's archive in the
/// background.
pub fn load(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let decoded = codec::decode(argv[2].as_slice()).map_err(args::reply_err)?;
    let key = ctx.open_key_writable(&argv[1]);
    match decoded {
        Decoded::Session(s) => {
            if keys::write::<Session>(&key, &SESSION_TYPE).is_err() {
                return Err(RedisError::WrongType);
            }
            store_new(&key, s)?;
            super::evicted::forget(keys::selected_db(ctx), argv[1].as_slice());
        }
        Decoded::More(msgs) => {
            let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
                return err("no session to continue loading into");
            };
            // Every turn is checked before the first is added: all or nothing.
            s.check_more(&msgs).map_err(args::reply_err)?;
            metrics::tracked(s, |s| s.push_more(msgs)).map_err(args::reply_err)?;
        }
        Decoded::Archived(turns) => {
            let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
                return err("no session to continue loading into");
            };
            let complete =
                metrics::tracked(s, |s| s.receive_archived(turns)).map_err(args::reply_err)?;
            if let Some(all) = complete {
                cold::restore_archived_turns(keys::selected_db(ctx), argv[1].as_slice(), s, all);
            }
        }
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// Latest PXAT a client may give CONV._ARCHIVED: the longest archive-ttl (100 years) ahead.
const MAX_PXAT_AHEAD_MS: i64 = 100 * 365 * 86_400_000 + 86_400_000;

/// Commands applied from the primary's stream or the AOF: decisions taken elsewhere.
fn applying_decisions(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(redis_module::ContextFlags::REPLICATED | redis_module::ContextFlags::LOADING)
}

/// CONV._ARCHIVED key upto [PXAT ms]: the primary made turns up to `upto` durable; this node
/// archives the same turns into its own archive (in the background) and drops them once durable.
///
/// Every argument is checked before anything changes: `upto` between 1 and the session's last
/// sequence number, the literal keyword PXAT, and a PXAT in the future (at most 100 years
/// ahead) unless the command comes from the primary or the AOF, whose decision is applied.
pub fn archived_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 3 && argv.len() != 5 {
        return Err(RedisError::WrongArity);
    }
    let upto = crate::server::args::int_in("upto", argv[2].as_slice(), 1, i64::MAX)? as u64;
    let pxat = if argv.len() == 5 {
        if !argv[3].as_slice().eq_ignore_ascii_case(b"PXAT") {
            return crate::server::args::unknown_option(&String::from_utf8_lossy(
                argv[3].as_slice(),
            ));
        }
        let now = crate::clock::now_ms();
        let (min, max) = if applying_decisions(ctx) {
            (1, i64::MAX)
        } else {
            (now + 1, now + MAX_PXAT_AHEAD_MS)
        };
        Some(crate::server::args::int_in(
            "PXAT",
            argv[4].as_slice(),
            min,
            max,
        )?)
    } else {
        None
    };
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let last = s.next_seq - 1;
    if upto > last {
        return Err(RedisError::String(format!(
            "ERR upto {upto} is past the session's last sequence number {last}"
        )));
    }
    s.archive_upto = s.archive_upto.max(upto);
    if let Some(at) = pxat {
        s.auto_expire_ms = at;
    }
    if s.pending().is_none() {
        if let Some(upto) = s.undurable_upto() {
            cold::submit_append(
                keys::selected_db(ctx),
                argv[1].as_slice(),
                s,
                upto,
                false,
                None,
            );
        }
    }
    drop(key);
    if let Some(at) = pxat {
        keys::set_expire_at(ctx, &argv[1], Some(at));
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::Integer(1))
}

/// CONV.FLUSH key: archives every in-memory turn now; replies (the number of turns that left
/// memory) once they are durable on disk.
pub fn flush_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    if argv.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    let upto = match (s.archive_candidates(true), s.pending()) {
        (Some(u), _) => u,
        (None, Some((_, u))) => u,
        (None, None) => return Ok(RedisValue::Integer(0)),
    };
    let bc = blocking::block(ctx, "CONV.FLUSH")?;
    cold::submit_append(
        keys::selected_db(ctx),
        argv[1].as_slice(),
        s,
        upto,
        false,
        Some(bc),
    );
    Ok(RedisValue::NoReply)
}

/// CONV._REHYDRATED key payload: the primary brought these archived turns back into memory.
pub fn rehydrated_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let codec::Decoded::More(turns) = codec::decode(argv[2].as_slice()).map_err(args::reply_err)?
    else {
        return Err(RedisError::Str(
            "ERR payload must hold turns brought back into memory, not a session or archived turns",
        ));
    };
    let key = ctx.open_key_writable(&argv[1]);
    let Some(s) = keys::write::<Session>(&key, &SESSION_TYPE)? else {
        return Ok(RedisValue::Integer(0));
    };
    s.check_rehydrated(&turns).map_err(args::reply_err)?;
    let n = metrics::tracked(s, |s| s.rehydrate(turns));
    ctx.replicate_verbatim();
    Ok(RedisValue::Integer(n as i64))
}
