"""Typed API over any redis-py client: one method per module command, keyword arguments for
its options, replies parsed into dataclasses. ``Conversations``/``SemanticCache``/
``EmbeddingCache`` take ``redis.Redis`` or ``redis.RedisCluster``; the ``Async...`` classes
take their ``redis.asyncio`` counterparts and have the same methods as coroutines.

Every method is one round trip unless its docstring says otherwise. Error replies raise
``ConvcacheError`` (``WrongTypeError`` for WRONGTYPE, ``ModuleNotLoadedError`` when the server
lacks the module), subclasses of redis-py's ``ResponseError``; bad Python arguments raise
``TypeError``/``ValueError`` before anything is sent.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence,
                    Union)

import redis

from . import _common
from ._common import (
    Vector,
    check_vector_type,
    decodes_responses,
    default_vector_type,
    int_arg,
    is_async_client,
    is_cluster_client,
    meta_arg,
    millis_arg,
    seconds_arg,
    text as _text,
    to_str,
    translate_error,
    vector_bytes,
    vector_out,
)

Content = Union[str, bytes]
TagValue = Union[str, bytes, int]
EvictPolicy = Literal["lru", "lfu", "fifo"]
Quant = Literal["float32", "int8"]
Algo = Literal["hnsw", "ivf"]


# ------------------------------------------------------------------------------------------
# Reply types

@dataclass(frozen=True)
class Message:
    """One turn of a session. ``ts`` is unix milliseconds, ``seq`` the session's sequence
    number (1, 2, 3... never reused), ``meta`` the JSON object given with ``META`` ({} if
    none). ``score`` is set only on ``search(...).relevant`` turns. ``tokens`` is the content's
    token count (the session's tokenizer), ``name``/``tool_call_id``/``tool_calls`` the
    chat-API fields of the turn (None when absent)."""
    role: str
    content: Content
    seq: int = 0
    ts: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)
    score: Optional[float] = None
    tokens: int = 0
    name: Optional[str] = None
    tool_call_id: Optional[str] = None
    tool_calls: Optional[List[Any]] = None

    def to_chat(self) -> Dict[str, Any]:
        """``{"role", "content"}`` plus ``tool_call_id``/``name``/``tool_calls`` when present:
        the shape chat-completion APIs take."""
        out: Dict[str, Any] = {"role": self.role}
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        out["content"] = self.content
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        return out


@dataclass(frozen=True)
class SessionInfo:
    """CONV.INFO. ``len`` counts every message; ``hot`` those in memory, ``archived`` those
    on disk. Times are unix ms. Fields a newer server adds land in ``extra``."""
    window: int
    hot: int
    archived: int
    len: int
    first_seq: int
    last_seq: int
    next_seq: int
    created_ms: int
    last_access_ms: int
    memory_bytes: int
    tokens: int
    tokenizer: str
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """CONV.SEARCH: the last ``recent`` turns (oldest first) and the most relevant older
    turns (best first, each with its ``score``)."""
    recent: List[Message]
    relevant: List[Message]


@dataclass(frozen=True)
class Hit:
    """One SEMCACHE entry that answered a lookup: ``score`` is the cosine similarity (1 for
    an exact ``prompt=`` match), ``hits`` the entry's hit count, this lookup included (set
    only with ``lookup(..., with_hits=True)``; None otherwise). Hit counts live in the
    answering server's memory: not persisted, not replicated."""
    id: int
    response: Content
    score: float
    meta: Optional[Dict[str, Any]]
    hits: Optional[int] = None

    def __repr__(self) -> str:
        # hits only when asked for: a plain lookup prints as it did before with_hits existed
        tail = "" if self.hits is None else f", hits={self.hits!r}"
        return (f"Hit(id={self.id!r}, response={self.response!r}, score={self.score!r}, "
                f"meta={self.meta!r}{tail})")


@dataclass(frozen=True)
class BucketInfo:
    """SEMCACHE.INFO. ``entries`` counts unexpired entries, ``stored`` those not yet
    reclaimed; ``max`` is the bucket's MAXITEMS; ``hits``/``misses`` count lookups.

    ``index`` is ``"hnsw"`` or ``"ivf"`` when the bucket keeps an index (``"none"`` otherwise),
    ``index_pending`` the entries not yet in it, ``index_bytes`` its memory; ``evict`` the
    eviction policy (``"fifo"``, ``"lru"``, ``"lfu"``); ``quant`` how vectors are stored
    (``"float32"`` or ``"int8"``); ``algo`` the index algorithm the bucket has or will get.
    These six are None from a server too old to report them.
    Fields a newer server adds land in ``extra``."""
    dimension: int
    entries: int
    stored: int
    max: int
    hits: int
    misses: int
    bytes: int
    vector_bytes: int
    next_id: int
    index: Optional[str] = None
    index_pending: Optional[int] = None
    evict: Optional[str] = None
    index_bytes: Optional[int] = None
    quant: Optional[str] = None
    algo: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


# Replies are turned into these dataclasses without running their __init__ (a frozen
# dataclass sets each field through object.__setattr__, ~0.2 µs a field): the instance's
# __dict__ is the parsed dict itself, and fields left out fall back to the class defaults.
_new = object.__new__
_set = object.__setattr__
_MESSAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(Message))


def _make(cls, d: Dict[str, Any]):
    o = _new(cls)
    _set(o, "__dict__", d)
    return o


def _opt_str(v: Any) -> Optional[str]:
    return None if v is None else to_str(v)


def _str_arg(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a str, got {type(v).__name__}")
    return v


def _roles_arg(roles: Optional[Iterable[str]]) -> List[Any]:
    """``ROLES r1,r2`` from an iterable of role names (a bare str is refused: it is one role
    only if it has no comma, which is easy to get wrong)."""
    if roles is None:
        return []
    if isinstance(roles, (str, bytes)):
        raise TypeError("roles must be a list of role names, not a str")
    names = [_str_arg(r, "a role") for r in roles]
    return ["ROLES", ",".join(names)]


_LAYOUTS: Dict[type, Any] = {}


def _layout(cls):
    """(field names, required names) of a reply dataclass, computed once per class."""
    got = _LAYOUTS.get(cls)
    if got is None:
        fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
        required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING)
        got = _LAYOUTS[cls] = (frozenset(f.name for f in fields), required)
    return got


def _dataclass_from(cls, reply, text_fields: Sequence[str] = ()):
    """A reply map as ``cls``: fields without a default are required, fields with one
    (added by later module versions) may be missing; ``text_fields`` are decoded to str
    (RESP2 without decode_responses gives bytes); the rest goes to ``extra``."""
    if reply is None:
        return None
    names, required = _layout(cls)
    d: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    for k, v in items:
        k = k.decode() if isinstance(k, bytes) else k
        (d if k in names else extra)[k] = v
    if not required <= d.keys():
        missing = sorted(required - d.keys())
        raise redis.exceptions.ResponseError(f"unexpected {cls.__name__} reply: no {missing}")
    for n in text_fields:
        if isinstance(d.get(n), (bytes, bytearray)):
            d[n] = to_str(d[n])
    d["extra"] = extra
    return _make(cls, d)


# ------------------------------------------------------------------------------------------
# Running commands: the sync and async classes share every method and differ only here.

class _Runner:
    _is_async = False

    def __init__(self, client: Any):
        if client is None:
            raise TypeError("a redis-py client is required")
        if is_async_client(client) != self._is_async:
            want = "an async (redis.asyncio)" if self._is_async else "a sync"
            other = "Async" + type(self).__name__ if not self._is_async else type(self).__name__[5:]
            raise TypeError(f"{type(self).__name__} needs {want} client; use {other} for this one")
        self.client = client

    def _run(self, parse: Callable[[Any], Any], *args: Any) -> Any:
        try:
            reply = self.client.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None
        return parse(reply)

    def _run_many(self, calls: Sequence[Sequence[Any]], combine: Callable[[List[Any]], Any]):
        replies = []
        for args in calls:
            try:
                replies.append(self.client.execute_command(*args))
            except redis.exceptions.ResponseError as e:
                raise translate_error(e) from None
        return combine(replies)


class _AsyncRunner(_Runner):
    _is_async = True

    async def _run(self, parse, *args):
        try:
            reply = await self.client.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None
        return parse(reply)

    async def _run_many(self, calls, combine):
        try:
            replies = await asyncio.gather(*(self.client.execute_command(*a) for a in calls))
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None
        return combine(list(replies))


def _int(reply: Any) -> int:
    return int(reply)


def _bool(reply: Any) -> bool:
    return bool(int(reply))


# ------------------------------------------------------------------------------------------
# CONV.*

class _ConversationCommands:
    decode: bool

    def _message_resp(self, item: Sequence[Any]) -> Message:
        seq, ts, role, content, meta = item[:5]
        tokens, name, call_id, calls = (list(item[5:9]) + [0, None, None, None][len(item[5:9]):])
        return Message(role=to_str(role), content=_text(content, self.decode), seq=int(seq),
                       ts=int(ts), meta=json.loads(meta) if meta is not None else {},
                       tokens=int(tokens), name=_opt_str(name), tool_call_id=_opt_str(call_id),
                       tool_calls=json.loads(calls) if calls is not None else None)

    def _messages(self, reply: Any) -> List[Message]:
        return [self._message_resp(item) for item in reply]

    def _messages_full(self, reply: Any) -> List[Message]:
        """FORMAT full: one JSON parse; each object becomes a Message as it is (its keys are
        Message's fields: seq, ts, role, content, meta, tokens and, when the turn has them,
        name, tool_call_id, tool_calls; absent ones read as the class defaults)."""
        out = _common.loads(reply)
        new, put, cls = _new, _set, Message
        for i, m in enumerate(out):
            o = new(cls)
            put(o, "__dict__", m)
            out[i] = o
        return out

    def _read(self, *args: Any) -> List[Message]:
        # Text contents: the JSON form (one parse in C). Exact bytes: the RESP form.
        if self.decode:
            return self._run(self._messages_full, *args, "FORMAT", "full")
        return self._run(self._messages, *args, "FORMAT", "resp")

    def _message_json(self, m: Mapping[str, Any]) -> Message:
        content = m["content"]
        return Message(role=m["role"], content=content if self.decode else content.encode(),
                       seq=m["seq"], ts=m["ts"], meta=m.get("meta") or {}, score=m.get("score"),
                       tokens=m.get("tokens", 0), name=m.get("name"),
                       tool_call_id=m.get("tool_call_id"), tool_calls=m.get("tool_calls"))

    def add(self, key: Any, role: str, content: Content, *, meta: Any = None,
            embedding: Optional[Vector] = None, ts: Any = None, window: Optional[int] = None,
            seq: Optional[int] = None, ex: Any = None, name: Optional[str] = None,
            tool_call_id: Optional[str] = None,
            tool_calls: Optional[Union[List[Any], str]] = None,
            tokenizer: Optional[str] = None) -> int:
        """CONV.ADD: appends a turn; returns its sequence number (1, 2, 3...).

        ``meta`` is a dict (or JSON object text), ``embedding`` a vector used by
        ``search(embedding=...)``, ``ts`` unix ms (int) or a datetime (default: the server's
        clock), ``window`` the session's window from now on, ``seq`` an explicit sequence
        number for idempotent writes (refused unless past the last one), ``ex`` the session's
        TTL in seconds (set and renewed by this add). ``name``, ``tool_call_id`` and
        ``tool_calls`` (a list, sent as JSON, or JSON array text) are the chat-API fields of a
        tool turn; ``tokenizer`` (``estimate``, ``cl100k_base``, ``o200k_base``) is how a new
        session counts tokens (an existing session only accepts its own).

        Cost: O(size of the turn) on the server (token counting included); turns overflowing the window are archived
        later by the server's I/O threads, never in this call."""
        args: List[Any] = ["CONV.ADD", key, role, content]
        m = meta_arg(meta)
        if m is not None:
            args += ["META", m]
        if embedding is not None:
            args += ["EMB", vector_bytes(embedding, "embedding")]
        if ts is not None:
            args += ["TS", millis_arg(ts, "ts")]
        if window is not None:
            args += ["WINDOW", int_arg(window, "window")]
        if seq is not None:
            args += ["SEQ", int_arg(seq, "seq")]
        if ex is not None:
            args += ["EX", seconds_arg(ex, "ex")]
        if name is not None:
            args += ["NAME", _str_arg(name, "name")]
        if tool_call_id is not None:
            args += ["TOOL_CALL_ID", _str_arg(tool_call_id, "tool_call_id")]
        if tool_calls is not None:
            if isinstance(tool_calls, str):
                args += ["TOOL_CALLS", tool_calls]
            elif isinstance(tool_calls, (list, tuple)):
                args += ["TOOL_CALLS", json.dumps(list(tool_calls), separators=(",", ":"))]
            else:
                raise TypeError("tool_calls must be a list or JSON array text")
        if tokenizer is not None:
            args += ["TOKENIZER", _str_arg(tokenizer, "tokenizer")]
        return self._run(_int, *args)

    def ctx(self, key: Any, *, count: Optional[int] = None,
            tokens: Optional[int] = None,
            roles: Optional[Iterable[str]] = None) -> List[Message]:
        """CONV.CTX: the last ``count`` turns (default: the session's window) of ``roles`` (all
        if None), oldest first, trimmed to the newest that fit ``tokens`` (each turn's stored
        content tokens + 4).

        Cost: O(turns returned) from memory. When ``count`` reaches past the in-memory turns
        of a session that has archived ones, the server reads them on an I/O thread while
        this call waits (other clients are not delayed)."""
        args: List[Any] = ["CONV.CTX", key]
        if count is not None:
            args += ["COUNT", int_arg(count, "count")]
        if tokens is not None:
            args += ["TOKENS", int_arg(tokens, "tokens")]
        args += _roles_arg(roles)
        return self._read(*args)

    def history(self, key: Any, *, from_seq: Optional[int] = None,
                to_seq: Optional[int] = None,
                roles: Optional[Iterable[str]] = None) -> List[Message]:
        """CONV.HISTORY: every turn (or those with ``from_seq <= seq <= to_seq``), oldest
        first. Cost: O(turns returned); archived turns are read on a server I/O thread."""
        args: List[Any] = ["CONV.HISTORY", key]
        if from_seq is not None:
            args += ["FROM", int_arg(from_seq, "from_seq")]
        if to_seq is not None:
            args += ["TO", int_arg(to_seq, "to_seq")]
        args += _roles_arg(roles)
        return self._read(*args)

    def len(self, key: Any) -> int:
        """CONV.LEN: number of turns, archived ones included. O(1)."""
        return self._run(_int, "CONV.LEN", key)

    def info(self, key: Any) -> Optional[SessionInfo]:
        """CONV.INFO as a ``SessionInfo``, or None if the key does not exist. O(1)."""
        def parse(r):
            info = _dataclass_from(SessionInfo, r)
            if info is not None and isinstance(info.tokenizer, bytes):
                info = dataclasses.replace(info, tokenizer=info.tokenizer.decode())
            return info
        return self._run(parse, "CONV.INFO", key)

    def clear(self, key: Any) -> int:
        """CONV.CLEAR: drops every turn (and the archive file); the sequence counter stays.
        Returns the number of turns dropped. O(turns in memory); the file is removed by an
        I/O thread."""
        return self._run(_int, "CONV.CLEAR", key)

    def delete(self, key: Any) -> bool:
        """CONV.DEL: deletes the session and its archive. True if it existed."""
        return self._run(_bool, "CONV.DEL", key)

    def search(self, key: Any, *, text: Optional[str] = None,
               embedding: Optional[Vector] = None, k: Optional[int] = None,
               recent: Optional[int] = None) -> SearchResult:
        """CONV.SEARCH: the last ``recent`` turns (default: the window) and the ``k``
        (default 5) older turns most similar to ``embedding`` (cosine) or sharing most words
        with ``text``. Give exactly one of ``text`` and ``embedding``.

        Cost: one pass over every turn of the session; archived turns are read and scored on
        a server I/O thread. Content comes through JSON, so non-UTF-8 bytes read as U+FFFD."""
        if (text is None) == (embedding is None):
            raise TypeError("search needs exactly one of text= and embedding=")
        args: List[Any] = ["CONV.SEARCH", key]
        args += ["TEXT", text] if text is not None else ["EMB", vector_bytes(embedding, "embedding")]
        if k is not None:
            args += ["K", int_arg(k, "k")]
        if recent is not None:
            args += ["RECENT", int_arg(recent, "recent")]

        def parse(reply):
            d = json.loads(reply)
            return SearchResult(recent=[self._message_json(m) for m in d["recent"]],
                                relevant=[self._message_json(m) for m in d["relevant"]])
        return self._run(parse, *args)

    def flush(self, key: Any) -> int:
        """CONV.FLUSH: archives every in-memory turn now; returns how many left memory, once
        they are durable (fsync). The write runs on an I/O thread while this call waits."""
        return self._run(_int, "CONV.FLUSH", key)

    def import_lix(self, key: Any, name: str) -> int:
        """CONV.IMPORT: creates session ``key`` from ``<import-dir>/<name>.huff``, a
        lix-open-cache archive on the server's disk. Returns the number of turns. Parsed on
        an I/O thread; refused if ``key`` exists."""
        return self._run(_int, "CONV.IMPORT", key, name)


class Conversations(_ConversationCommands, _Runner):
    """Conversation memory (``CONV.*``) over a ``redis.Redis`` or ``redis.RedisCluster``.

    ``decode=True`` gives contents as str (UTF-8; invalid bytes become U+FFFD);
    ``decode=False`` gives the exact bytes."""

    def __init__(self, client: Any, *, decode: bool = True):
        _Runner.__init__(self, client)
        self.decode = decode


class AsyncConversations(_ConversationCommands, _AsyncRunner):
    """``Conversations`` for ``redis.asyncio`` clients: the same methods, awaited."""

    def __init__(self, client: Any, *, decode: bool = True):
        _AsyncRunner.__init__(self, client)
        self.decode = decode


# ------------------------------------------------------------------------------------------
# SEMCACHE.*

def _pairs_arg(word: str, pairs_: Optional[Mapping[Any, TagValue]], what: str) -> List[Any]:
    """``TAG n v`` / ``FILTER n v`` words from a mapping of names to values (str, bytes or
    int: the server compares bytes, so 42 and "42" are the same value). The server checks
    lengths and counts."""
    if pairs_ is None:
        return []
    if not isinstance(pairs_, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, "
                        f"not {type(pairs_).__name__}")
    out: List[Any] = []
    for name, value in pairs_.items():
        if not isinstance(name, (str, bytes)):
            raise TypeError(f"{what}: a name must be a str, not {type(name).__name__}")
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise TypeError(f"{what}[{name!r}] must be a str, bytes or int, "
                            f"not {type(value).__name__}")
        out += [word, name, value]
    return out


def _choice_arg(word: str, value: Optional[str], what: str) -> List[Any]:
    """``EVICT p`` / ``QUANT q``: the server checks the value (and names the choices)."""
    if value is None:
        return []
    return [word, _str_arg(value, what)]


def _prompt_arg(prompt: Optional[Content]) -> List[Any]:
    if prompt is None:
        return []
    if not isinstance(prompt, (str, bytes)):
        raise TypeError(f"prompt must be a str or bytes, not {type(prompt).__name__}")
    return ["PROMPT", prompt]


class _SemanticCommands:
    decode: bool

    def set(self, key: Any, vector: Vector, response: Content, *, ex: Any = None,
            px: Any = None, pxat: Any = None, meta: Any = None,
            max_items: Optional[int] = None, entry_id: Optional[int] = None,
            tags: Optional[Mapping[str, TagValue]] = None, prompt: Optional[Content] = None,
            renew: Any = None, evict: Optional[EvictPolicy] = None,
            quant: Optional[Quant] = None, index: bool = False,
            algo: Optional[Algo] = None) -> int:
        """SEMCACHE.SET: stores ``response`` under ``vector``; returns the entry's id.

        Expiry (one of): ``ex`` seconds or ``px`` ms (int or timedelta), ``pxat`` absolute
        (ms or datetime); 0 = never; default: the server's ``semcache-ttl``. ``renew`` (ms or
        timedelta) is what ``get(..., touch=True)`` renews the entry by (default: the
        ``ex``/``px`` given, for ``pxat`` what was left, else ``semcache-ttl``).
        ``max_items`` bounds the bucket; a full bucket drops one entry chosen by ``evict``
        (``"fifo"`` the oldest, the default; ``"lru"`` the least recently used; ``"lfu"`` the
        fewest hits), which the bucket keeps until a later ``evict``. ``meta`` is a dict.

        ``tags`` ({name: value}, binary safe, at most 64 pairs) scope the entry for
        ``get(..., filter=...)`` and ``delete(key, filter=...)``. ``prompt`` stores the exact
        prompt text (1..64 KiB): a later ``set`` with the same prompt in this bucket replaces
        this entry, and ``get(..., prompt=...)`` finds it without a vector search.
        ``quant="int8"`` on the bucket's first ``set`` stores its vectors as int8 (``dim + 4``
        bytes each instead of ``4 * dim``; scores stay exact for the stored vectors); a later
        different ``quant`` is refused. ``index=True`` gives the bucket an index now
        (otherwise it starts at ``semcache-index-min`` entries, 4,096 by default).
        ``algo`` on the bucket's first ``set`` chooses it: ``"ivf"``, inverted lists (the
        server's ``semcache-index-algo`` default: fast lookups and inserts), or ``"hnsw"``,
        a graph (better recall for queries far from every entry, ~0.5 ms inserts); a later
        different ``algo`` is refused.

        Cost: O(dim) to normalise and append, plus reclaiming expired entries of this key;
        with an index, adding the entry to it on the server's main thread (IVF: ~0.1 ms;
        a graph: p50 ~0.5 ms at 384 dimensions, ~1.2 ms at 1536). Bad values (an unknown ``evict``/``quant``, an
        empty ``prompt``, too many ``tags``) are refused by the server and change nothing."""
        if sum(x is not None for x in (ex, px, pxat)) > 1:
            raise TypeError("give at most one of ex=, px=, pxat=")
        args: List[Any] = ["SEMCACHE.SET", key, vector_bytes(vector), response]
        if ex is not None:
            args += ["EX", seconds_arg(ex, "ex")]
        if px is not None:
            args += ["PX", millis_arg(px, "px")]
        if pxat is not None:
            args += ["PXAT", millis_arg(pxat, "pxat")]
        m = meta_arg(meta)
        if m is not None:
            args += ["META", m]
        if max_items is not None:
            args += ["MAXITEMS", int_arg(max_items, "max_items")]
        if entry_id is not None:
            args += ["ID", int_arg(entry_id, "entry_id")]
        args += _pairs_arg("TAG", tags, "tags")
        args += _prompt_arg(prompt)
        if renew is not None:
            args += ["RENEW", millis_arg(renew, "renew")]
        args += _choice_arg("EVICT", evict, "evict")
        args += _choice_arg("QUANT", quant, "quant")
        args += _choice_arg("ALGO", algo, "algo")
        if index:
            args.append("INDEX")
        return self._run(_int, *args)

    @staticmethod
    def _threshold(min_sim, max_dist) -> List[Any]:
        if min_sim is not None and max_dist is not None:
            raise TypeError("give at most one of min_sim= and max_dist=")
        if min_sim is not None:
            return ["MINSIM", repr(float(min_sim))]
        if max_dist is not None:
            return ["MAXDIST", repr(float(max_dist))]
        return []

    @staticmethod
    def _lookup_options(filter: Optional[Mapping[str, TagValue]], prompt: Optional[Content],
                        touch: bool) -> List[Any]:
        return (_pairs_arg("FILTER", filter, "filter") + _prompt_arg(prompt)
                + (["TOUCH"] if touch else []))

    def get(self, key: Any, vector: Vector, *, min_sim: Optional[float] = None,
            max_dist: Optional[float] = None, filter: Optional[Mapping[str, TagValue]] = None,
            prompt: Optional[Content] = None, touch: bool = False) -> Optional[Content]:
        """SEMCACHE.GET: the response of the most similar entry if its cosine similarity is
        at least ``min_sim`` (default: the server's ``semcache-min-sim``, 0.90) or its cosine
        distance at most ``max_dist``; else None.

        ``filter`` ({name: value}) considers only entries tagged with every pair (never one
        outside it). ``prompt``: the live entry stored with exactly that prompt (within the
        filter) answers, without a vector search; if none, the vector search runs.
        ``touch=True`` renews the expiry of the entry returned by its original duration (see
        ``set(renew=...)``; entries without expiry are left alone; a replica renews nothing).

        Cost: one pass of dot products over the bucket (about dim*4/11 ns per entry, e.g.
        28 µs for 50 x 1536) plus the round trip; buckets over ``semcache-inline-bytes``
        are scanned on a server thread without blocking other clients. A filter costs what an
        unfiltered scan does. With an index: ~0.2-0.5 ms, inline (a selective filter may fall
        back to the exact scan). An exact ``prompt`` match: O(1). ``touch`` writes, so it is
        always answered inline: on a big bucket without an index, a full scan on the main
        thread."""
        return self._run(lambda r: _text(r, self.decode), "SEMCACHE.GET", key,
                         vector_bytes(vector), *self._threshold(min_sim, max_dist),
                         *self._lookup_options(filter, prompt, touch))

    def lookup(self, key: Any, vector: Vector, *, count: int = 1,
               min_sim: Optional[float] = None, max_dist: Optional[float] = None,
               filter: Optional[Mapping[str, TagValue]] = None,
               prompt: Optional[Content] = None, touch: bool = False,
               with_hits: bool = False) -> List[Hit]:
        """SEMCACHE.GET ... COUNT WITHIDS WITHSCORES WITHMETA [WITHHITS]: up to ``count``
        entries above the threshold, best first (equal scores: newer first), as ``Hit``s.
        ``filter``, ``prompt`` (an exact match answers alone, score 1) and ``touch`` (renews
        every entry returned) as in ``get``; ``with_hits`` fills ``Hit.hits`` with each
        entry's hit count, this lookup included. Same cost as ``get`` plus a partial sort of
        the entries above the threshold."""
        width = 5 if with_hits else 4

        decode = self.decode

        def parse(reply):
            out = []
            for i in range(0, len(reply), width):
                resp, meta = reply[i + 1], reply[i + 3]
                if decode:
                    if isinstance(resp, bytes):
                        resp = resp.decode("utf-8", "replace")
                elif isinstance(resp, str):
                    resp = resp.encode("utf-8")
                out.append(_make(Hit, {"id": int(reply[i]), "response": resp,
                                       "score": float(reply[i + 2]),
                                       "meta": json.loads(meta) if meta is not None else None,
                                       "hits": int(reply[i + 4]) if with_hits else None}))
            return out
        return self._run(parse, "SEMCACHE.GET", key, vector_bytes(vector),
                         *self._threshold(min_sim, max_dist), "COUNT", int_arg(count, "count"),
                         "WITHIDS", "WITHSCORES", "WITHMETA", *(["WITHHITS"] if with_hits else []),
                         *self._lookup_options(filter, prompt, touch))

    def delete(self, key: Any, *ids: int,
               filter: Optional[Mapping[str, TagValue]] = None) -> int:
        """SEMCACHE.DEL: removes entries by id (``delete(key, 3, 7)``), or every entry tagged
        with every pair of ``filter`` (``delete(key, filter={"user": "42"})``: a user's
        data); give one of the two. Returns how many were removed.

        Cost: by id, O(ids + entries); by filter, one pass over the bucket's tags plus one
        removal per entry (~40 µs each with an index)."""
        if filter is not None:
            if ids:
                raise TypeError("delete takes ids or filter=, not both")
            words = _pairs_arg("FILTER", filter, "filter")
            if not words:
                raise ValueError("delete(filter=...) needs at least one name: value pair")
            return self._run(_int, "SEMCACHE.DEL", key, *words)
        if not ids:
            raise TypeError("delete needs at least one id (or filter=)")
        return self._run(_int, "SEMCACHE.DEL", key, *[int_arg(i, "id") for i in ids])

    def len(self, key: Any) -> int:
        """SEMCACHE.LEN: unexpired entries. O(entries)."""
        return self._run(_int, "SEMCACHE.LEN", key)

    def info(self, key: Any) -> Optional[BucketInfo]:
        """SEMCACHE.INFO as a ``BucketInfo``, or None if the key does not exist. O(entries)."""
        return self._run(lambda r: _dataclass_from(BucketInfo, r, ("index", "evict", "quant", "algo")),
                         "SEMCACHE.INFO", key)


class SemanticCache(_SemanticCommands, _Runner):
    """Semantic cache (``SEMCACHE.*``): one key is one bucket of (vector, response) entries.
    Vectors are numpy arrays, lists of floats or float32 little-endian bytes.
    ``decode=True`` gives responses as str, ``decode=False`` as bytes."""

    def __init__(self, client: Any, *, decode: bool = True):
        _Runner.__init__(self, client)
        self.decode = decode


class AsyncSemanticCache(_SemanticCommands, _AsyncRunner):
    """``SemanticCache`` for ``redis.asyncio`` clients: the same methods, awaited."""

    def __init__(self, client: Any, *, decode: bool = True):
        _AsyncRunner.__init__(self, client)
        self.decode = decode


# ------------------------------------------------------------------------------------------
# URLEMB.*

class _EmbeddingCommands:
    vector_type: str

    def set(self, key: Any, vector: Vector, *, ex: Any = None) -> bool:
        """URLEMB.SET: stores the vector (a plain string of float32 bytes, so ``GET`` reads
        it too) with ``ex`` seconds to live (0 = none; default: ``urlemb-ttl``). O(dim)."""
        args: List[Any] = ["URLEMB.SET", key, vector_bytes(vector)]
        if ex is not None:
            args += ["EX", seconds_arg(ex, "ex")]
        return self._run(lambda r: to_str(r) == "OK", *args)

    def get(self, key: Any) -> Any:
        """URLEMB.GET: the vector (as ``vector_type``) or None. O(dim)."""
        return self._run(lambda r: vector_out(r, self.vector_type), "URLEMB.GET", key)

    def _vectors(self, reply: Sequence[Any]) -> List[Any]:
        kind = self.vector_type
        if kind == "numpy" and reply and all(isinstance(v, bytes) for v in reply) \
                and len({len(v) for v in reply}) == 1 and len(reply[0]) % 4 == 0:
            # One copy for all of them: each vector is a row of one writable array.
            import numpy as np
            block = np.frombuffer(b"".join(reply), dtype="<f4").astype(np.float32)
            return list(block.reshape(len(reply), -1))
        return [vector_out(v, kind) for v in reply]

    def _by_slot(self, keys: Sequence[Any]) -> List[List[int]]:
        """Positions of ``keys`` grouped by cluster slot (one group without a cluster)."""
        if not is_cluster_client(self.client):
            return [list(range(len(keys)))]
        groups: Dict[int, List[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(self.client.keyslot(k), []).append(i)
        return list(groups.values())

    def mset(self, mapping: Mapping[Any, Vector]) -> bool:
        """URLEMB.MSET: stores every vector, all or nothing (the default TTL applies).

        In a cluster the keys are grouped by slot, one command (and one round trip) per
        slot: all-or-nothing then holds per slot only."""
        items = list(mapping.items())
        if not items:
            raise TypeError("mset needs at least one key")
        calls = []
        for group in self._by_slot([k for k, _ in items]):
            args: List[Any] = ["URLEMB.MSET"]
            for i in group:
                args += [items[i][0], vector_bytes(items[i][1])]
            calls.append(args)
        return self._run_many(calls, lambda rs: all(to_str(r) == "OK" for r in rs))

    def mget(self, keys: Iterable[Any]) -> List[Any]:
        """URLEMB.MGET: vectors in the order of ``keys`` (None for a missing key or another
        type). In a cluster: one command per slot, as ``mset``."""
        keys = list(keys)
        if not keys:
            return self._run_many([], lambda rs: [])
        if not is_cluster_client(self.client):
            return self._run(self._vectors, "URLEMB.MGET", *keys)
        groups = self._by_slot(keys)

        def combine(replies):
            out: List[Any] = [None] * len(keys)
            for group, reply in zip(groups, replies):
                for i, v in zip(group, reply):
                    out[i] = vector_out(v, self.vector_type)
            return out
        return self._run_many([["URLEMB.MGET", *[keys[i] for i in g]] for g in groups], combine)


def _check_binary_client(client: Any, what: str) -> None:
    if decodes_responses(client):
        raise ValueError(f"{what} needs a client made with decode_responses=False: "
                         "vectors are binary")


class EmbeddingCache(_EmbeddingCommands, _Runner):
    """Embedding cache (``URLEMB.*``): one key holds one vector. ``vector_type`` chooses what
    ``get``/``mget`` return: "numpy" (float32 array; the default when numpy is installed),
    "list" (floats) or "bytes". Needs a client with ``decode_responses=False``."""

    def __init__(self, client: Any, *, vector_type: Optional[str] = None):
        _Runner.__init__(self, client)
        _check_binary_client(client, "EmbeddingCache")
        self.vector_type = check_vector_type(vector_type or default_vector_type())


class AsyncEmbeddingCache(_EmbeddingCommands, _AsyncRunner):
    """``EmbeddingCache`` for ``redis.asyncio`` clients: the same methods, awaited."""

    def __init__(self, client: Any, *, vector_type: Optional[str] = None):
        _AsyncRunner.__init__(self, client)
        _check_binary_client(client, "AsyncEmbeddingCache")
        self.vector_type = check_vector_type(vector_type or default_vector_type())
