"""ConvcacheStore / AsyncConvcacheStore: LangGraph ``BaseStore``s on the module.

Layout under ``key_prefix`` ``p`` (a namespace is written ``a.b.c``: LangGraph refuses
periods in labels, so the dotted form is unambiguous; ``%`` and ``:`` are escaped in keys):

- ``p:i:<ns>:<key>`` the item, a JSON string ``{"v": value, "c": created, "u": updated,
  "t": ttl minutes}`` (times in unix seconds), with the item's TTL as the key's expiry;
- ``p:k:<ns>`` a sorted set of the namespace's keys, scored by expiry (unix ms, or 2^52 for
  none), so expired members are dropped in one ``ZREMRANGEBYSCORE`` before a read;
- ``p:namespaces`` the set of namespaces;
- ``p:v:<first label>`` a SEMCACHE bucket of the items' vectors (with an ``index`` config):
  one entry per indexed text, tagged ``item`` (the item) and ``n1``, ``n2``, ... (each
  prefix of its namespace), so ``search(("users", "u1"), query=...)`` is one
  ``SEMCACHE.GET ... FILTER n2 users.u1``; the response is ``<ns>:<key>``.

A search without ``query`` reads the namespaces under the prefix (their members, then their
items) and orders by ``updated_at``, newest first; ``filter`` applies to the values as in
LangGraph's in-memory store (``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, nested
dicts). With ``query``: the best entries by cosine similarity (max over an item's texts),
items without vectors after them, then ``filter``/``offset``/``limit``. An item's vectors
expire with it; searches renew the TTL of those they meet (``TOUCH``), ``get`` renews the
item only, so an item kept alive by ``get`` alone past its TTL is still found by ``search``,
after the scored ones, until it is written again.
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)
from langgraph.store.base import _ensure_refresh  # noqa: PLC2701 - the base class's rule
from langgraph.store.memory import _compare_values, _does_match

from ._common import connect, decodes_responses, translate_error, vector_bytes

__all__ = ["ConvcacheStore", "AsyncConvcacheStore"]

Batch = List[List[Any]]
_NO_EXPIRY = float(2 ** 52)
_MAX_ENTRIES = 1_000_000  # SEMCACHE's largest MAXITEMS: the vectors of one first label


def _esc(s: str) -> str:
    return s.replace("%", "%25").replace(":", "%3A")


def _ns_text(ns: Sequence[str]) -> str:
    return ".".join(ns)


def _s(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def _ts(x: float):
    from datetime import datetime, timezone
    return datetime.fromtimestamp(x, tz=timezone.utc)


class _StoreCore:
    supports_ttl = True

    def _init(self, client, key_prefix, index, ttl):
        if decodes_responses(client):
            raise ValueError("the convcache stores need a client made with "
                             "decode_responses=False: vectors are binary")
        self._redis = client
        self.p = key_prefix
        self.ttl_config: Optional[TTLConfig] = ttl
        self.index_config = None
        self.embeddings = None
        if index:
            self.index_config = dict(index)
            self.embeddings = ensure_embeddings(index.get("embed"))
            self.index_config["__tokenized_fields"] = [
                (f, tokenize_path(f)) if f != "$" else (f, f)
                for f in (index.get("fields") or ["$"])]

    # -- keys ---------------------------------------------------------------------------------

    def _item(self, ns, key) -> str:
        return f"{self.p}:i:{_esc(_ns_text(ns))}:{key}"

    def _members(self, ns) -> str:
        return f"{self.p}:k:{_esc(_ns_text(ns))}"

    def _namespaces(self) -> str:
        return f"{self.p}:namespaces"

    def _bucket(self, label: str) -> str:
        return f"{self.p}:v:{_esc(label)}"

    @staticmethod
    def _item_tag(ns, key) -> str:
        return f"{_esc(_ns_text(ns))}:{key}"

    # -- the operations, as generators of batches (see convcache.langgraph) -------------------

    def _op_batch(self, ops: Iterable[Op]):
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        results: List[Result] = [None] * len(ops)
        now = time.time()
        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            replies = yield [["GET", self._item(op.namespace, op.key)] for _, op in gets]
            refresh = []
            for (i, op), raw in zip(gets, replies):
                results[i] = self._to_item(op.namespace, op.key, raw)
                if results[i] is not None and _ensure_refresh(self.ttl_config, op.refresh_ttl):
                    refresh.append((op.namespace, op.key, raw))
            yield self._refresh(refresh, now)
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = yield from self._op_search(op, now)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._op_list_namespaces(op, now)
        puts: Dict[Tuple[Tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op
        if puts:
            yield from self._op_puts(list(puts.values()), now)
        return results

    def _to_item(self, ns, key, raw, score=None, cls=Item):
        if raw is None:
            return None
        d = json.loads(raw)
        if cls is SearchItem:
            return SearchItem(namespace=tuple(ns), key=key, value=d["v"],
                              created_at=_ts(d["c"]), updated_at=_ts(d["u"]), score=score)
        return Item(value=d["v"], key=key, namespace=tuple(ns), created_at=_ts(d["c"]),
                    updated_at=_ts(d["u"]))

    def _refresh(self, items, now) -> Batch:
        """EXPIRE (and the member's expiry) of items read, for those with a TTL."""
        out: Batch = []
        for ns, key, raw in items:
            t = json.loads(raw).get("t")
            if t:
                secs = max(1, int(t * 60))
                out += [["EXPIRE", self._item(ns, key), secs],
                        ["ZADD", self._members(ns), "XX", int((now + secs) * 1000), key]]
        return out

    def _texts(self, op: PutOp) -> List[Tuple[str, str]]:
        """(path, text) pairs of a put that get a vector."""
        if not self.embeddings or op.value is None or op.index is False:
            return []
        paths = (self.index_config["__tokenized_fields"] if op.index is None
                 else [(ix, tokenize_path(ix)) for ix in op.index])
        out = []
        for path, field in paths:
            texts = get_text_at_path(op.value, field)
            if len(texts) > 1:
                out += [(f"{path}.{i}", t) for i, t in enumerate(texts)]
            elif texts:
                out.append((path, texts[0]))
        return out

    def _op_puts(self, puts: List[PutOp], now: float):
        old = yield [["GET", self._item(op.namespace, op.key)] for op in puts]
        texts = [self._texts(op) for op in puts]
        flat = [t for ts in texts for _, t in ts]
        vectors = (yield ("embed", flat)) if flat else []
        batch: Batch = []
        v = iter(vectors)
        for op, raw, ts in zip(puts, old, texts):
            ns, key = tuple(op.namespace), op.key
            item, members = self._item(ns, key), self._members(ns)
            tag = self._item_tag(ns, key)
            if self.embeddings is not None:
                batch.append(["SEMCACHE.DEL", self._bucket(ns[0]), "FILTER", "item", tag])
            if op.value is None:
                batch += [["DEL", item], ["ZREM", members, key]]
                continue
            created = json.loads(raw)["c"] if raw is not None else now
            doc = json.dumps({"v": op.value, "c": created, "u": now, "t": op.ttl},
                             ensure_ascii=False, separators=(",", ":"), default=str)
            secs = max(1, int(op.ttl * 60)) if op.ttl else 0
            if secs:
                batch += [["SET", item, doc, "EX", secs],
                          ["ZADD", members, int((now + secs) * 1000), key]]
            else:
                batch += [["SET", item, doc], ["ZADD", members, _NO_EXPIRY, key]]
            batch.append(["SADD", self._namespaces(), _ns_text(ns)])
            tags: List[Any] = ["TAG", "item", tag]
            for i in range(1, len(ns) + 1):
                tags += ["TAG", f"n{i}", _ns_text(ns[:i])]
            for path, _ in ts:
                # The vectors expire with the item (searches renew them: GET ... TOUCH).
                batch.append(["SEMCACHE.SET", self._bucket(ns[0]), vector_bytes(next(v)), tag,
                              "EX", secs, "MAXITEMS", _MAX_ENTRIES, *tags,
                              "PROMPT", f"{tag}\x00{path}"])
        yield batch

    def _op_live_namespaces(self, now: float):
        """Every namespace that still has an unexpired item (emptied ones leave the set)."""
        (names,) = yield [["SMEMBERS", self._namespaces()]]
        names = sorted(_s(n) for n in names)
        if not names:
            return []
        nss = [tuple(n.split(".")) for n in names]
        cutoff = int(now * 1000)
        replies = yield [cmd for ns in nss for cmd in (
            ["ZREMRANGEBYSCORE", self._members(ns), "-inf", cutoff],
            ["ZCARD", self._members(ns)])]
        live, empty = [], []
        for i, ns in enumerate(nss):
            (live if int(replies[2 * i + 1]) else empty).append(ns)
        if empty:
            yield [["SREM", self._namespaces(), *[_ns_text(ns) for ns in empty]]]
        return live

    def _op_list_namespaces(self, op: ListNamespacesOp, now: float):
        nss = yield from self._op_live_namespaces(now)
        if op.match_conditions:
            nss = [ns for ns in nss if all(_does_match(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            nss = sorted({ns[:op.max_depth] for ns in nss})
        else:
            nss = sorted(nss)
        return nss[op.offset:op.offset + op.limit]

    def _op_scan(self, prefix: Tuple[str, ...], now: float):
        """Every live item under ``prefix``: [(ns, key, raw json)]."""
        nss = yield from self._op_live_namespaces(now)
        nss = [ns for ns in nss if ns[:len(prefix)] == prefix]
        if not nss:
            return []
        replies = yield [["ZRANGE", self._members(ns), 0, -1] for ns in nss]
        pairs = [(ns, _s(k)) for ns, r in zip(nss, replies) for k in r]
        if not pairs:
            return []
        raws = yield [["GET", self._item(ns, k)] for ns, k in pairs]
        return [(ns, k, raw) for (ns, k), raw in zip(pairs, raws) if raw is not None]

    def _matches(self, op: SearchOp, raw: Any) -> bool:
        if not op.filter:
            return True
        value = json.loads(raw)["v"]
        return all(_compare_values(value.get(k), fv) for k, fv in op.filter.items())

    def _op_search(self, op: SearchOp, now: float):
        prefix = tuple(op.namespace_prefix)
        refresh = _ensure_refresh(self.ttl_config, op.refresh_ttl)
        if not (op.query and self.embeddings):
            rows = yield from self._op_scan(prefix, now)
            rows = [r for r in rows if self._matches(op, r[2])]
            rows.sort(key=lambda r: json.loads(r[2])["u"], reverse=True)
            rows = rows[op.offset:op.offset + op.limit]
            if refresh:
                yield self._refresh(rows, now)
            return [self._to_item(ns, k, raw, cls=SearchItem) for ns, k, raw in rows]
        (qvec,) = yield ("embed_query", [op.query])
        if prefix:
            buckets = [self._bucket(prefix[0])]
            flt = ["FILTER", f"n{len(prefix)}", _ns_text(prefix)]
        else:
            nss = yield from self._op_live_namespaces(now)
            buckets = sorted({self._bucket(ns[0]) for ns in nss})
            flt = []
        want = op.offset + op.limit
        count = max(16, 4 * want)
        # A search renews the TTL of the vectors it meets, as it renews the items it returns.
        touch = ["TOUCH"] if refresh and self.ttl_config else []
        while True:
            replies = yield [["SEMCACHE.GET", b, vector_bytes(qvec), "MINSIM", "-1", "COUNT", count,
                              "WITHSCORES", *flt, *touch] for b in buckets]
            hits: List[Tuple[float, str, int]] = []  # (score, item tag, bucket)
            full = False
            for bi, reply in enumerate(replies):
                full = full or len(reply) >= 2 * count
                for j in range(0, len(reply), 2):
                    hits.append((float(reply[j + 1]), _s(reply[j]), bi))
            scored = yield from self._resolve(hits, buckets)
            rows = [r for r in scored if self._matches(op, r[3])]
            if len(rows) >= want or not full:
                break
            count *= 4
        rows = rows[op.offset:want]
        if len(rows) < op.limit:
            # Items without vectors come after the scored ones, as in LangGraph's own store.
            seen = {(ns, k) for _, ns, k, _ in scored}
            rest = yield from self._op_scan(prefix, now)
            rest = [r for r in rest if (r[0], r[1]) not in seen and self._matches(op, r[2])]
            rest.sort(key=lambda r: json.loads(r[2])["u"], reverse=True)
            rows += [(None, ns, k, raw) for ns, k, raw in rest[:op.limit - len(rows)]]
        if refresh:
            yield self._refresh([(ns, k, raw) for _, ns, k, raw in rows], now)
        return [self._to_item(ns, k, raw, score=s, cls=SearchItem) for s, ns, k, raw in rows]

    def _resolve(self, hits, buckets):
        """Best score per item, best first, with the item's JSON: [(score, ns, key, raw)].
        Entries of items that no longer exist (expired) are dropped from their bucket."""
        best: Dict[str, Tuple[float, int]] = {}
        for score, tag, bi in sorted(hits, key=lambda h: -h[0]):
            best.setdefault(tag, (score, bi))
        if not best:
            return []
        tags = list(best)
        parsed = [_parse_tag(t) for t in tags]
        raws = yield [["GET", self._item(ns, k)] for ns, k in parsed]
        out, stale = [], []
        for tag, (ns, k), raw in zip(tags, parsed, raws):
            if raw is None:
                stale.append(["SEMCACHE.DEL", buckets[best[tag][1]], "FILTER", "item", tag])
            else:
                out.append((best[tag][0], ns, k, raw))
        if stale:
            yield stale
        return out


def _parse_tag(tag: str) -> Tuple[Tuple[str, ...], str]:
    ns, _, key = tag.partition(":")
    return tuple(ns.replace("%3A", ":").replace("%25", "%").split(".")), key


class ConvcacheStore(_StoreCore, BaseStore):
    """LangGraph store (``BaseStore``) on the module, for ``redis.Redis`` clients made with
    ``decode_responses=False``: ``ConvcacheStore(redis_url)``, ``ConvcacheStore(redis_client=
    r)`` or ``with ConvcacheStore.from_conn_string(url, index=..., ttl=...) as store``.

    ``index={"dims": d, "embed": <LangChain Embeddings or function>, "fields": [...]}`` turns
    on ``search(..., query=...)`` (SEMCACHE buckets, cosine similarity); ``ttl={"default_ttl":
    minutes, "refresh_on_read": True}`` gives items a TTL (reads renew it). ``key_prefix``
    names the keys. The async methods run the sync ones in a worker thread; use
    ``AsyncConvcacheStore`` in async applications."""

    def __init__(self, redis_url: Optional[str] = None, *, redis_client: Any = None,
                 index: Optional[IndexConfig] = None, ttl: Optional[TTLConfig] = None,
                 key_prefix: str = "convcache:store", connection_args: Optional[Dict[str, Any]] = None):
        redis_client, self._owned = connect(
            redis_url, redis_client, connection_args, asynchronous=False,
            wrong_kind="ConvcacheStore needs a sync client; use AsyncConvcacheStore")
        self._init(redis_client, key_prefix, index, ttl)

    @classmethod
    @contextmanager
    def from_conn_string(cls, redis_url: str, **kwargs: Any):
        store = cls(redis_url, **kwargs)
        try:
            yield store
        finally:
            if store._owned:
                store._redis.close()

    def setup(self) -> None:
        """Checks that the server has the module (nothing to create)."""
        self._exec([["SEMCACHE.LEN", self.p + ":setup-probe"]])

    def _exec(self, batch: Batch) -> List[Any]:
        if not batch:
            return []
        try:
            if len(batch) == 1:
                return [self._redis.execute_command(*batch[0])]
            pipe = self._redis.pipeline(transaction=False)
            for args in batch:
                pipe.execute_command(*args)
            return pipe.execute()
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    def _drive(self, op):
        try:
            step = next(op)
            while True:
                if isinstance(step, tuple):
                    kind, texts = step
                    if kind == "embed":
                        reply = self.embeddings.embed_documents(texts)
                    else:
                        reply = [self.embeddings.embed_query(texts[0])]
                else:
                    reply = self._exec(step)
                step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    def batch(self, ops: Iterable[Op]) -> List[Result]:
        return self._drive(self._op_batch(ops))

    async def abatch(self, ops: Iterable[Op]) -> List[Result]:
        ops = list(ops)
        return await asyncio.get_running_loop().run_in_executor(None, self.batch, ops)


class AsyncConvcacheStore(_StoreCore, BaseStore):
    """``ConvcacheStore`` for ``redis.asyncio`` clients: the same storage and arguments,
    ``async with AsyncConvcacheStore.from_conn_string(url) as store``; use the a* methods
    (``aput``, ``aget``, ``asearch``, ``alist_namespaces``...); embeddings through their
    async methods."""

    def __init__(self, redis_url: Optional[str] = None, *, redis_client: Any = None,
                 index: Optional[IndexConfig] = None, ttl: Optional[TTLConfig] = None,
                 key_prefix: str = "convcache:store", connection_args: Optional[Dict[str, Any]] = None):
        redis_client, self._owned = connect(
            redis_url, redis_client, connection_args, asynchronous=True,
            wrong_kind="AsyncConvcacheStore needs a redis.asyncio client; use ConvcacheStore for this one")
        self._init(redis_client, key_prefix, index, ttl)

    @classmethod
    @asynccontextmanager
    async def from_conn_string(cls, redis_url: str, **kwargs: Any):
        store = cls(redis_url, **kwargs)
        try:
            yield store
        finally:
            if store._owned:
                await store._redis.aclose()

    async def setup(self) -> None:
        await self._exec([["SEMCACHE.LEN", self.p + ":setup-probe"]])

    asetup = setup

    async def _exec(self, batch: Batch) -> List[Any]:
        if not batch:
            return []
        try:
            if len(batch) == 1:
                return [await self._redis.execute_command(*batch[0])]
            pipe = self._redis.pipeline(transaction=False)
            for args in batch:
                pipe.execute_command(*args)
            return await pipe.execute()
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    async def _drive(self, op):
        try:
            step = next(op)
            while True:
                if isinstance(step, tuple):
                    kind, texts = step
                    if kind == "embed":
                        reply = await self.embeddings.aembed_documents(texts)
                    else:
                        reply = [await self.embeddings.aembed_query(texts[0])]
                else:
                    reply = await self._exec(step)
                step = op.send(reply)
        except StopIteration as stop:
            return stop.value

    async def abatch(self, ops: Iterable[Op]) -> List[Result]:
        return await self._drive(self._op_batch(ops))

    def batch(self, ops: Iterable[Op]) -> List[Result]:
        raise NotImplementedError("AsyncConvcacheStore is async: use aput/aget/asearch/... "
                                  "(or ConvcacheStore with a sync client)")
