"""LangGraph checkpointers (and a store) on the convcache module.

``ConvcacheSaver`` / ``AsyncConvcacheSaver`` are LangGraph ``BaseCheckpointSaver``s, built
and called like langgraph-checkpoint-redis's ``RedisSaver`` / ``AsyncRedisSaver``::

    with ConvcacheSaver.from_conn_string("redis://localhost:6379") as saver:
        saver.setup()
        graph = builder.compile(checkpointer=saver)

A thread's checkpoints are turns of convcache sessions (``CONV.*``), so the server moves a
thread's older checkpoints, its channel values and its pending writes to its cold tier on
disk (turns past the window, and whole threads idle for ``idle-archive`` seconds) and reads
them back transparently when an old checkpoint or a resumed thread needs them.

Keys, for a thread ``t`` and checkpoint namespace ``ns`` (``t``/``ns`` escaped, the thread
in a hash tag so one thread's keys share a cluster slot), under ``key_prefix``:

- ``<p>:{t}:ns:s`` a session (CONV) holding, in order, channel blobs (role ``blob``: one turn
  per (channel, version), written once, the first time that version is checkpointed) and
  checkpoints (role ``checkpoint``: the checkpoint without its channel values, with the
  metadata, parent id and the sequence numbers of its channels' blob turns in META);
- ``<p>:{t}:ns:z`` a sorted set (lexicographic) of ``checkpoint_id|seq``: the index that
  ``list``/``get_tuple`` read (ids sort by time);
- ``<p>:{t}:ns:b`` a hash ``channel NUL version -> blob seq`` (``0``: the channel was empty);
- ``<p>:{t}:ns:ws`` a session of the pending writes (role ``write``, the checkpoint id, task,
  index, channel and task path in META), and ``<p>:{t}:ns:wz`` their index
  (``checkpoint_id|seq``, lexicographic): one session per namespace, not one per checkpoint,
  so a thread's cold tier is two archive files per namespace;
- ``<p>:{t}:nss`` / ``<p>:{t}:runs`` the thread's namespaces and run ids,
  ``<p>:threads`` every thread, ``<p>:run:<run_id>`` the threads a run wrote to.

Only the index entries (an id and a number per checkpoint) and the small sets stay in
memory; checkpoint bodies, channel values and writes leave it with the session's turns.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import (Any, AsyncIterator, Dict, Generator, Iterator, List, Optional, Sequence,
                    Tuple)

import redis

try:
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_checkpoint_metadata,
    )
except ImportError as e:  # pragma: no cover - exercised by the clean-venv install test
    raise ImportError("convcache.langgraph needs langgraph: "
                      "pip install 'convcache[langgraph]'") from e
from langchain_core.runnables import RunnableConfig

from ._common import connect, decodes_responses, translate_error

__all__ = ["ConvcacheSaver", "AsyncConvcacheSaver", "ConvcacheStore", "AsyncConvcacheStore"]

# A batch of commands sent as one pipeline (no MULTI: a read that needs the disk cannot wait
# inside a transaction). An operation is a generator that yields batches and receives the
# replies; the sync and async savers only differ in how they send a batch.
Batch = List[List[Any]]
Op = Generator[Batch, List[Any], Any]

_PAGE = 64  # checkpoints read per round trip by list()


def _esc(s: str) -> str:
    return (s.replace("%", "%25").replace(":", "%3A").replace("{", "%7B")
            .replace("}", "%7D").replace("|", "%7C"))


def _s(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class _Keys:
    def __init__(self, prefix: str):
        self.p = prefix

    def thread(self, t: str) -> str:
        return f"{self.p}:{{{_esc(t)}}}"

    def base(self, t: str, ns: str) -> str:
        return f"{self.thread(t)}:{_esc(ns)}"

    def session(self, t, ns):
        return self.base(t, ns) + ":s"

    def rewrite(self, t, ns):
        return self.base(t, ns) + ":r"

    def index(self, t, ns):
        return self.base(t, ns) + ":z"

    def blobs(self, t, ns):
        return self.base(t, ns) + ":b"

    def writes(self, t, ns):
        return self.base(t, ns) + ":ws"

    def writes_rewrite(self, t, ns):
        return self.base(t, ns) + ":wr"

    def writes_index(self, t, ns):
        return self.base(t, ns) + ":wz"

    def namespaces(self, t):
        return self.thread(t) + ":nss"

    def runs(self, t):
        return self.thread(t) + ":runs"

    def threads(self):
        return f"{self.p}:threads"

    def run(self, run_id):
        return f"{self.p}:run:{_esc(run_id)}"


def _turn(item: Sequence[Any]) -> Tuple[int, int, str, bytes, Dict[str, Any]]:
    """(seq, ts, role, content, meta) of a FORMAT resp item."""
    seq, ts, role, content, meta = item[:5]
    if isinstance(content, str):
        content = content.encode("utf-8")
    return int(seq), int(ts), _s(role), content, (json.loads(meta) if meta is not None else {})


def _checked(replies: List[Any], tolerant: bool) -> List[Any]:
    """Pipeline replies; an error reply raises unless the operation reads errors itself."""
    if not tolerant:
        for r in replies:
            if isinstance(r, redis.exceptions.ResponseError):
                raise translate_error(r)
    return replies


def _next_seq(info: Any) -> int:
    if info is None:
        return 1
    d = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2]))
    return int({_s(a): b for a, b in d.items()}["next_seq"])


def _member(m: Any) -> Tuple[str, int]:
    cid, _, seq = _s(m).rpartition("|")
    return cid, int(seq)


class _Core:
    """What both savers share: key layout, serialization and the operations."""

    serde: Any

    def _init(self, client: Any, key_prefix: str, ttl: Optional[Dict[str, Any]],
              window: Optional[int]) -> None:
        if decodes_responses(client):
            raise ValueError("the convcache savers need a client made with "
                             "decode_responses=False: checkpoints are binary")
        self._redis = client
        self.keys = _Keys(key_prefix)
        self.ttl = ttl
        minutes = (ttl or {}).get("default_ttl")
        self._ttl_seconds = int(minutes * 60) if minutes else None
        self.window = window

    @property
    def redis_client(self) -> Any:
        return self._redis

    # -- serialization ----------------------------------------------------------------------

    def _meta_fields(self, md: Dict[str, Any]) -> Dict[str, Any]:
        try:
            text = json.dumps(md, ensure_ascii=False)
            if json.loads(text) == md:
                return {"md": md}
        except (TypeError, ValueError):
            pass
        typ, data = self.serde.dumps_typed(md)
        return {"mdt": typ, "mdb": base64.b64encode(data).decode()}

    def _load_meta(self, meta: Dict[str, Any]) -> Dict[str, Any]:
        if "md" in meta:
            return meta["md"]
        return self.serde.loads_typed((meta["mdt"], base64.b64decode(meta["mdb"])))

    def _add(self, key: str, role: str, content: bytes, meta: Dict[str, Any],
             *extra: Any) -> List[Any]:
        args = ["CONV.ADD", key, role, content, "META", _dumps(meta), *extra]
        if self.window is not None:
            args += ["WINDOW", self.window]
        if self._ttl_seconds:
            args += ["EX", self._ttl_seconds]
        return args

    def _expire(self, *keys: str) -> Batch:
        if not self._ttl_seconds:
            return []
        return [["EXPIRE", k, self._ttl_seconds] for k in keys]

    def get_next_version(self, current: Optional[str], channel: None = None) -> str:
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- put ----------------------------------------------------------------------------------

    def _op_put(self, config: RunnableConfig, checkpoint: Checkpoint,
                metadata: CheckpointMetadata, new_versions: ChannelVersions) -> Op:
        conf = config["configurable"]
        t, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        parent = conf.get("checkpoint_id")
        k = self.keys
        S, B = k.session(t, ns), k.blobs(t, ns)
        c = dict(checkpoint)
        values = c.pop("channel_values", {}) or {}
        batch: Batch = []
        new: List[Tuple[str, str, bool]] = []  # (channel, version, stored as a turn)
        for ch, ver in new_versions.items():
            if ch in values:
                typ, data = self.serde.dumps_typed(values[ch])
                batch.append(self._add(S, "blob", data, {"c": ch, "v": str(ver), "t": typ}))
                new.append((ch, str(ver), True))
            else:
                new.append((ch, str(ver), False))
        others = [(ch, str(v)) for ch, v in c.get("channel_versions", {}).items()
                  if ch not in new_versions]
        if others:
            batch.append(["HMGET", B, *[f"{ch}\x00{v}" for ch, v in others]])
        batch.append(["CONV.INFO", S])
        replies = yield batch
        blob_seqs: Dict[str, int] = {}
        fields: List[Any] = []
        i = 0
        for ch, ver, stored in new:
            seq = int(replies[i]) if stored else 0
            i += stored
            fields += [f"{ch}\x00{ver}", seq]
            if seq:
                blob_seqs[ch] = seq
        if others:
            for (ch, _), seq in zip(others, replies[i]):
                if seq is not None and int(seq):
                    blob_seqs[ch] = int(seq)
            i += 1
        next_seq = _next_seq(replies[i])
        md = get_checkpoint_metadata(config, metadata)
        typ, body = self.serde.dumps_typed(c)
        meta = {"id": checkpoint["id"], "parent": parent, "t": typ, "b": blob_seqs,
                "run": md.get("run_id"), **self._meta_fields(md)}
        Z = k.index(t, ns)
        # The checkpoint takes the next sequence number explicitly, so its index entry goes in
        # the same round trip. If another writer took that number meanwhile, the server
        # refuses the SEQ: the entry is taken back, the turn added without SEQ and indexed
        # with the number the server gives it (one more round trip, never a lost put).
        member = f"{checkpoint['id']}|{next_seq}"
        batch = [self._add(S, "checkpoint", body, meta, "SEQ", next_seq), ["ZADD", Z, 0, member]]
        if fields:
            batch.append(["HSET", B, *fields])
        batch += [["SADD", k.threads(), t], ["SADD", k.namespaces(t), ns]]
        run_id = md.get("run_id")
        if run_id:
            batch += [["SADD", k.runs(t), str(run_id)], ["SADD", k.run(str(run_id)), t]]
        batch += self._expire(B, Z, k.namespaces(t), k.runs(t))
        replies = yield ("tolerant", batch)
        errors = [r for r in replies if isinstance(r, redis.exceptions.ResponseError)]
        if errors:
            if errors[0] is not replies[0] or "SEQ" not in str(replies[0]):
                raise translate_error(errors[0])
            _, seq = yield [["ZREM", Z, member], self._add(S, "checkpoint", body, meta)]
            yield [["ZADD", Z, 0, f"{checkpoint['id']}|{int(seq)}"]]
        return {"configurable": {"thread_id": t, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    # -- writes -------------------------------------------------------------------------------

    def _op_put_writes(self, config: RunnableConfig, writes: Sequence[Tuple[str, Any]],
                       task_id: str, task_path: str = "") -> Op:
        conf = config["configurable"]
        t, ns, cid = conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        WS, WZ = self.keys.writes(t, ns), self.keys.writes_index(t, ns)
        batch: Batch = []
        for idx, (ch, value) in enumerate(writes):
            typ, data = self.serde.dumps_typed(value)
            batch.append(self._add(WS, "write", data, {"cp": cid, "task": task_id,
                                                       "idx": WRITES_IDX_MAP.get(ch, idx),
                                                       "ch": ch, "t": typ, "path": task_path}))
        if not batch:
            return None
        seqs = yield batch
        members: List[Any] = []
        for seq in seqs:
            members += [0, f"{cid}|{int(seq)}"]
        yield [["ZADD", WZ, *members]] + self._expire(WZ)
        return None

    def _pending_writes(self, turns: Sequence[Tuple[int, bytes, Dict[str, Any]]]
                        ) -> List[Tuple[str, str, Any]]:
        """Writes of one checkpoint, (seq, content, meta) in seq order: the first write of a
        (task, idx) wins, except special channels (negative idx: errors, interrupts...), where
        the last one does; sorted as LangGraph applies them (task path, task id, idx)."""
        kept: Dict[Tuple[str, int], Tuple[str, str, Dict[str, Any], bytes]] = {}
        for _, content, meta in turns:
            key = (meta["task"], int(meta["idx"]))
            if key[1] < 0 or key not in kept:
                kept[key] = (meta.get("path", ""), meta["ch"], meta, content)
        order = sorted(kept, key=lambda k: (kept[k][0], k[0], k[1]))
        return [(k[0], kept[k][1], self.serde.loads_typed((kept[k][2]["t"], kept[k][3])))
                for k in order]

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _range_reads(key: str, role: str, seqs: Sequence[int]) -> Batch:
        """HISTORY commands covering ``seqs``: one range per run of nearby sequence numbers
        (a checkpoint's new blobs, and its writes, are close together), so few commands."""
        out: Batch = []
        ordered = sorted(set(seqs))
        i = 0
        while i < len(ordered):
            j = i
            while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] <= 4:
                j += 1
            out.append(["CONV.HISTORY", key, "FROM", ordered[i], "TO", ordered[j],
                        "ROLES", role, "FORMAT", "resp"])
            i = j + 1
        return out

    def _op_load(self, t: str, ns: str, members: Sequence[Tuple[str, int]],
                 filter: Optional[Dict[str, Any]] = None) -> Op:
        """CheckpointTuples of ``members`` (id, seq) in that order (those matching ``filter``),
        in two round trips: the checkpoint turns with their writes' index entries, then their
        blobs and writes."""
        if not members:
            return []
        k = self.keys
        S, WS, WZ = k.session(t, ns), k.writes(t, ns), k.writes_index(t, ns)
        seqs = [s for _, s in members]
        batch: Batch = []
        lo, hi = min(seqs), max(seqs)
        if len(members) == 1 or hi - lo < 4 * len(members):
            batch.append(["CONV.HISTORY", S, "FROM", lo, "TO", hi, "ROLES", "checkpoint",
                          "FORMAT", "resp"])
        else:
            batch += [["CONV.HISTORY", S, "FROM", s, "TO", s, "FORMAT", "resp"] for s in seqs]
        batch += [["ZRANGEBYLEX", WZ, f"[{cid}|", f"({cid}}}"] for cid, _ in members]
        replies = yield batch
        n_cp = len(batch) - len(members)
        turns: Dict[int, Tuple[bytes, Dict[str, Any]]] = {}
        for r in replies[:n_cp]:
            for item in r:
                seq, _, role, content, meta = _turn(item)
                if role == "checkpoint":
                    turns[seq] = (content, meta)
        found = []
        for (cid, seq), windex in zip(members, replies[n_cp:]):
            if seq not in turns or turns[seq][1].get("id") != cid:
                continue
            content, meta = turns[seq]
            md = self._load_meta(meta)
            if filter and not all(md.get(fk) == fv for fk, fv in filter.items()):
                continue
            found.append((cid, content, meta, md, [_member(m)[1] for m in windex]))
        blob_seqs = [s for _, _, meta, _, _ in found for s in meta.get("b", {}).values()]
        write_seqs = [s for *_, ws in found for s in ws]
        blobs: Dict[int, Any] = {}
        writes: Dict[int, Tuple[bytes, Dict[str, Any]]] = {}
        reads = self._range_reads(S, "blob", blob_seqs)
        reads += self._range_reads(WS, "write", write_seqs)
        if reads:
            wanted_b, wanted_w = set(blob_seqs), set(write_seqs)
            for cmd, r in zip(reads, (yield reads)):
                for item in r:
                    seq, _, role, content, meta = _turn(item)
                    if role == "blob" and cmd[1] == S and seq in wanted_b:
                        blobs[seq] = self.serde.loads_typed((meta["t"], content))
                    elif role == "write" and cmd[1] == WS and seq in wanted_w:
                        writes[seq] = (content, meta)
        out = []
        for cid, content, meta, md, wseqs in found:
            cp = self.serde.loads_typed((meta["t"], content))
            cp["channel_values"] = {ch: blobs[s] for ch, s in meta.get("b", {}).items()
                                    if s in blobs}
            mine = [(s, *writes[s]) for s in sorted(wseqs)
                    if s in writes and writes[s][1].get("cp") == cid]
            parent = meta.get("parent")
            out.append(CheckpointTuple(
                config={"configurable": {"thread_id": t, "checkpoint_ns": ns,
                                         "checkpoint_id": cid}},
                checkpoint=cp,
                metadata=md,
                parent_config=({"configurable": {"thread_id": t, "checkpoint_ns": ns,
                                                 "checkpoint_id": parent}}
                               if parent else None),
                pending_writes=self._pending_writes(mine),
            ))
        return out

    def _op_get_tuple(self, config: RunnableConfig) -> Op:
        conf = config["configurable"]
        t, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        Z = self.keys.index(t, ns)
        cid = get_checkpoint_id(config)
        if cid:
            cmd = ["ZRANGEBYLEX", Z, f"[{cid}|", f"({cid}}}", "LIMIT", 0, 1]
        else:
            cmd = ["ZREVRANGEBYLEX", Z, "+", "-", "LIMIT", 0, 1]
        (reply,) = yield [cmd]
        if not reply:
            return None
        tuples = yield from self._op_load(t, ns, [_member(reply[0])])
        return tuples[0] if tuples else None

    def _op_list_page(self, t: str, ns: str, hi: Optional[str], n: int,
                      filter: Optional[Dict[str, Any]]) -> Op:
        """Up to ``n`` index members before ``hi`` (newest first), loaded and filtered;
        returns (tuples, the last member's id or None when the index is exhausted)."""
        upper = f"({hi}" if hi is not None else "+"
        (reply,) = yield [["ZREVRANGEBYLEX", self.keys.index(t, ns), upper, "-", "LIMIT", 0, n]]
        members = [_member(m) for m in reply]
        tuples = yield from self._op_load(t, ns, members, filter)
        return tuples, (members[-1][0] if len(members) == n else None)

    def _op_scopes(self, config: Optional[RunnableConfig]) -> Op:
        """(thread, namespace) pairs a list() call covers."""
        conf = (config or {}).get("configurable", {})
        if "thread_id" in conf:
            threads = [conf["thread_id"]]
        else:
            (members,) = yield [["SMEMBERS", self.keys.threads()]]
            threads = sorted(_s(m) for m in members)
        if "checkpoint_ns" in conf and "thread_id" in conf:
            return [(threads[0], conf["checkpoint_ns"])]
        if not threads:
            return []
        replies = yield [["SMEMBERS", self.keys.namespaces(t)] for t in threads]
        ns_filter = conf.get("checkpoint_ns")
        return [(t, ns) for t, r in zip(threads, replies) for ns in sorted(_s(m) for m in r)
                if ns_filter is None or ns == ns_filter]

    # -- deletion, copies, rewrites -----------------------------------------------------------

    def _op_thread_layout(self, t: str) -> Op:
        """{ns: (index members, writes index members)} and the thread's run ids."""
        k = self.keys
        nss, runs = yield [["SMEMBERS", k.namespaces(t)], ["SMEMBERS", k.runs(t)]]
        nss = sorted(_s(m) for m in nss)
        layout: Dict[str, Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]] = {}
        if nss:
            replies = yield [cmd for ns in nss for cmd in (["ZRANGE", k.index(t, ns), 0, -1],
                                                        ["ZRANGE", k.writes_index(t, ns), 0, -1])]
            for i, ns in enumerate(nss):
                layout[ns] = ([_member(m) for m in replies[2 * i]],
                              [_member(m) for m in replies[2 * i + 1]])
        return layout, [_s(r) for r in runs]

    def _ns_keys(self, t: str, ns: str) -> List[str]:
        k = self.keys
        return [k.session(t, ns), k.index(t, ns), k.blobs(t, ns), k.writes(t, ns),
                k.writes_index(t, ns)]

    def _op_delete_thread(self, thread_id: str) -> Op:
        t = str(thread_id)
        k = self.keys
        layout, runs = yield from self._op_thread_layout(t)
        keys = [key for ns in layout for key in self._ns_keys(t, ns)]
        keys += [k.namespaces(t), k.runs(t)]
        batch: Batch = [["DEL", key] for key in keys]
        batch.append(["SREM", k.threads(), t])
        batch += [["SREM", k.run(r), t] for r in runs]
        yield batch

    def _op_copy_thread(self, source: str, target: str) -> Op:
        k = self.keys
        src, dst = str(source), str(target)
        layout, runs = yield from self._op_thread_layout(src)
        if not layout:
            return None
        batch: Batch = []
        for ns in layout:
            batch += [["COPY", a, b, "REPLACE"]
                      for a, b in zip(self._ns_keys(src, ns), self._ns_keys(dst, ns))]
            batch.append(["SADD", k.namespaces(dst), ns])
        batch.append(["SADD", k.threads(), dst])
        if runs:
            batch.append(["SADD", k.runs(dst), *runs])
            batch += [["SADD", k.run(r), dst] for r in runs]
        yield batch
        return None

    def _rewrite_batch(self, key: str, tmp: str, kept) -> Batch:
        """Writes the kept turns (seq, ts, role, content, meta) to ``tmp`` with their own
        sequence numbers and times, then puts ``tmp`` in the place of ``key``."""
        batch: Batch = [["DEL", tmp]]
        batch += [self._add(tmp, role, content, meta, "SEQ", seq, "TS", ts)
                  for seq, ts, role, content, meta in kept]
        batch.append(["CONV.DEL", key])
        if kept:
            batch.append(["RENAME", tmp, key])
        return batch

    def _op_rewrite(self, t: str, ns: str, members, write_members, keep) -> Op:
        """Keeps the checkpoints for which ``keep(id, meta)`` is true, the blobs they use and
        their writes: the sessions are read back (archives included) and the kept turns
        written to new keys, which then replace them."""
        k = self.keys
        S, B, Z = k.session(t, ns), k.blobs(t, ns), k.index(t, ns)
        WS, WZ = k.writes(t, ns), k.writes_index(t, ns)
        history, blob_fields = yield [["CONV.HISTORY", S, "FORMAT", "resp"], ["HGETALL", B]]
        indexed = {seq: cid for cid, seq in members}
        kept_cps, kept_ids, dropped = set(), set(), set()
        turns = [_turn(item) for item in history]
        used_blobs = set()
        for seq, _, role, _, meta in turns:
            if role != "checkpoint" or seq not in indexed:
                continue
            if keep(indexed[seq], meta):
                kept_cps.add(seq)
                kept_ids.add(indexed[seq])
                used_blobs.update(meta.get("b", {}).values())
            else:
                dropped.add(indexed[seq])
        if not dropped:
            return None
        kept = [x for x in turns
                if x[0] in kept_cps or (x[2] == "blob" and x[0] in used_blobs)]
        batch = self._rewrite_batch(S, k.rewrite(t, ns), kept)
        batch.append(["ZREM", Z, *[f"{cid}|{seq}" for cid, seq in members if cid in dropped]])
        if isinstance(blob_fields, dict):
            items = list(blob_fields.items())
        else:
            items = list(zip(blob_fields[::2], blob_fields[1::2]))
        stale = [f for f, v in items if int(v) and int(v) not in used_blobs]
        if stale:
            batch.append(["HDEL", B, *stale])
        doomed_writes = [f"{cid}|{seq}" for cid, seq in write_members if cid not in kept_ids]
        if doomed_writes:
            (whistory,) = yield [["CONV.HISTORY", WS, "FORMAT", "resp"]]
            kept_w = [x for x in (_turn(item) for item in whistory)
                      if x[4].get("cp") in kept_ids]
            batch += self._rewrite_batch(WS, k.writes_rewrite(t, ns), kept_w)
            batch.append(["ZREM", WZ, *doomed_writes])
        if not kept_cps:
            batch += [["DEL", Z, B, WZ], ["SREM", k.namespaces(t), ns]]
        yield batch
        return None

    def _op_prune(self, thread_ids: Sequence[str], strategy: str) -> Op:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for tid in thread_ids:
            if strategy == "delete":
                yield from self._op_delete_thread(tid)
                continue
            layout, _ = yield from self._op_thread_layout(str(tid))
            for ns, (members, ww) in layout.items():
                if not members:
                    continue
                latest = max(cid for cid, _ in members)
                yield from self._op_rewrite(str(tid), ns, members, ww,
                                            lambda cid, meta, latest=latest: cid == latest)
        return None

    def _op_delete_for_runs(self, run_ids: Sequence[str]) -> Op:
        runs = [str(r) for r in run_ids]
        if not runs:
            return None
        k = self.keys
        replies = yield [["SMEMBERS", k.run(r)] for r in runs]
        threads = sorted({_s(m) for r in replies for m in r})
        doomed = set(runs)
        for t in threads:
            layout, _ = yield from self._op_thread_layout(t)
            for ns, (members, ww) in layout.items():
                if members:
                    yield from self._op_rewrite(t, ns, members, ww,
                                                lambda cid, meta: meta.get("run") not in doomed)
        batch: Batch = [["DEL", k.run(r)] for r in runs]
        batch += [["SREM", k.runs(t), *runs] for t in threads]
        yield batch
        return None


class ConvcacheSaver(_Core, BaseCheckpointSaver[str]):
    """LangGraph checkpointer on convcache sessions, for ``redis.Redis`` (or
    ``redis.RedisCluster``) clients made with ``decode_responses=False``.

    ``ConvcacheSaver(redis_url)``, ``ConvcacheSaver(redis_client=r)`` or
    ``with ConvcacheSaver.from_conn_string(url) as saver``. ``ttl={"default_ttl": minutes}``
    expires a thread's keys that long after its last write (as langgraph-checkpoint-redis);
    ``window`` is the sessions' in-memory window (default: the server's ``window``);
    ``key_prefix`` names the keys. ``setup()`` only checks that the module is loaded (there
    is no index to create). The async methods run the sync ones in a worker thread; use
    ``AsyncConvcacheSaver`` in async applications.

    Cost: ``put`` 2 round trips, ``put_writes`` 2 (the turns, then their index entries),
    ``get_tuple`` 3 (index; checkpoint and its writes' index; channel values and writes),
    ``list`` 3 per page of 64 checkpoints. A checkpoint or blob
    the server archived is read from disk on its I/O thread while the call waits."""

    def __init__(self, redis_url: Optional[str] = None, *, redis_client: Any = None,
                 connection_args: Optional[Dict[str, Any]] = None,
                 ttl: Optional[Dict[str, Any]] = None, key_prefix: str = "convcache:checkpoint",
                 window: Optional[int] = None, serde: Any = None):
        BaseCheckpointSaver.__init__(self, serde=serde)
        redis_client, self._owned = connect(
            redis_url, redis_client, connection_args, asynchronous=False,
            wrong_kind="ConvcacheSaver needs a sync client; use AsyncConvcacheSaver")
        self._init(redis_client, key_prefix, ttl, window)

    @classmethod
    @contextmanager
    def from_conn_string(cls, redis_url: Optional[str] = None, *, redis_client: Any = None,
                         connection_args: Optional[Dict[str, Any]] = None,
                         ttl: Optional[Dict[str, Any]] = None, **kwargs: Any
                         ) -> Iterator["ConvcacheSaver"]:
        saver = cls(redis_url, redis_client=redis_client, connection_args=connection_args,
                    ttl=ttl, **kwargs)
        try:
            yield saver
        finally:
            if saver._owned:
                saver._redis.close()

    def setup(self) -> None:
        """Checks that the server has the module (raises ``ModuleNotLoadedError``)."""
        self._exec([["CONV.LEN", self.keys.p + ":setup-probe"]])

    def _exec(self, batch: Batch, tolerant: bool = False) -> List[Any]:
        if not batch:
            return []
        try:
            p = self._redis.pipeline(transaction=False)
            for args in batch:
                p.execute_command(*args)
            return _checked(p.execute(raise_on_error=False), tolerant)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    def _drive(self, op: Op) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, tuple):  # ("tolerant", batch): errors come back as replies
                    step = op.send(self._exec(step[1], tolerant=True))
                else:
                    step = op.send(self._exec(step))
        except StopIteration as stop:
            return stop.value

    def get_tuple(self, config: RunnableConfig) -> Optional[CheckpointTuple]:
        return self._drive(self._op_get_tuple(config))

    def list(self, config: Optional[RunnableConfig], *, filter: Optional[Dict[str, Any]] = None,
             before: Optional[RunnableConfig] = None,
             limit: Optional[int] = None) -> Iterator[CheckpointTuple]:
        if limit is not None and limit <= 0:
            return
        if config is not None and get_checkpoint_id(config):
            tup = self.get_tuple(config)
            if tup is not None and (not filter or all(
                    tup.metadata.get(k) == v for k, v in filter.items())):
                if not before or tup.checkpoint["id"] < get_checkpoint_id(before):
                    yield tup
            return
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for t, ns in self._drive(self._op_scopes(config)):
            hi = before_id
            while True:
                n = _PAGE if left is None or filter else min(_PAGE, left)
                tuples, hi = self._drive(self._op_list_page(t, ns, hi, n, filter))
                for tup in tuples:
                    yield tup
                    if left is not None:
                        left -= 1
                        if left <= 0:
                            return
                if hi is None:
                    break

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._drive(self._op_put(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[Tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        self._drive(self._op_put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._drive(self._op_delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and their writes) whose metadata ``run_id`` is one of
        ``run_ids``: each session concerned is read back and rewritten without them (and
        without the blobs no remaining checkpoint uses). Not while those threads run."""
        self._drive(self._op_delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every namespace of a thread (COPY of each key: archives are copied by the
        server); the target's namespaces that the source has are replaced."""
        self._drive(self._op_copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keeps each namespace's newest checkpoint (with its writes and
        channel values), rewriting the session; ``delete``: deletes the threads."""
        self._drive(self._op_prune(thread_ids, strategy))

    # Async API: the sync calls in a worker thread (AsyncConvcacheSaver is native async).
    async def _in_thread(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kwargs))

    async def aget_tuple(self, config):
        return await self._in_thread(self.get_tuple, config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        for tup in await self._in_thread(lambda: list(self.list(config, filter=filter,
                                                                 before=before, limit=limit))):
            yield tup

    async def aput(self, config, checkpoint, metadata, new_versions):
        return await self._in_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        return await self._in_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id):
        return await self._in_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids):
        return await self._in_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id, target_thread_id):
        return await self._in_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids, *, strategy="keep_latest"):
        return await self._in_thread(self.prune, thread_ids, strategy=strategy)


class AsyncConvcacheSaver(_Core, BaseCheckpointSaver[str]):
    """``ConvcacheSaver`` for ``redis.asyncio`` clients: the same storage and arguments,
    ``async with AsyncConvcacheSaver.from_conn_string(url) as saver``; the a* methods are
    native coroutines (the sync ones raise: use ``ConvcacheSaver`` there)."""

    def __init__(self, redis_url: Optional[str] = None, *, redis_client: Any = None,
                 connection_args: Optional[Dict[str, Any]] = None,
                 ttl: Optional[Dict[str, Any]] = None, key_prefix: str = "convcache:checkpoint",
                 window: Optional[int] = None, serde: Any = None):
        BaseCheckpointSaver.__init__(self, serde=serde)
        redis_client, self._owned = connect(
            redis_url, redis_client, connection_args, asynchronous=True,
            wrong_kind="AsyncConvcacheSaver needs a redis.asyncio client; use ConvcacheSaver for this one")
        self._init(redis_client, key_prefix, ttl, window)

    @classmethod
    @asynccontextmanager
    async def from_conn_string(cls, redis_url: Optional[str] = None, *, redis_client: Any = None,
                               connection_args: Optional[Dict[str, Any]] = None,
                               ttl: Optional[Dict[str, Any]] = None, **kwargs: Any
                               ) -> AsyncIterator["AsyncConvcacheSaver"]:
        saver = cls(redis_url, redis_client=redis_client, connection_args=connection_args,
                    ttl=ttl, **kwargs)
        try:
            yield saver
        finally:
            if saver._owned:
                await saver._redis.aclose()

    async def asetup(self) -> None:
        await self._exec([["CONV.LEN", self.keys.p + ":setup-probe"]])

    setup = asetup  # langgraph-checkpoint-redis users call `await saver.asetup()`

    async def _exec(self, batch: Batch, tolerant: bool = False) -> List[Any]:
        if not batch:
            return []
        try:
            p = self._redis.pipeline(transaction=False)
            for args in batch:
                p.execute_command(*args)
            return _checked(await p.execute(raise_on_error=False), tolerant)
        except redis.exceptions.ResponseError as e:
            raise translate_error(e) from None

    async def _drive(self, op: Op) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, tuple):
                    step = op.send(await self._exec(step[1], tolerant=True))
                else:
                    step = op.send(await self._exec(step))
        except StopIteration as stop:
            return stop.value

    async def aget_tuple(self, config: RunnableConfig) -> Optional[CheckpointTuple]:
        return await self._drive(self._op_get_tuple(config))

    async def alist(self, config: Optional[RunnableConfig], *,
                    filter: Optional[Dict[str, Any]] = None,
                    before: Optional[RunnableConfig] = None,
                    limit: Optional[int] = None) -> AsyncIterator[CheckpointTuple]:
        if limit is not None and limit <= 0:
            return
        if config is not None and get_checkpoint_id(config):
            tup = await self.aget_tuple(config)
            if tup is not None and (not filter or all(
                    tup.metadata.get(k) == v for k, v in filter.items())):
                if not before or tup.checkpoint["id"] < get_checkpoint_id(before):
                    yield tup
            return
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for t, ns in await self._drive(self._op_scopes(config)):
            hi = before_id
            while True:
                n = _PAGE if left is None or filter else min(_PAGE, left)
                tuples, hi = await self._drive(self._op_list_page(t, ns, hi, n, filter))
                for tup in tuples:
                    yield tup
                    if left is not None:
                        left -= 1
                        if left <= 0:
                            return
                if hi is None:
                    break

    async def aput(self, config, checkpoint, metadata, new_versions) -> RunnableConfig:
        return await self._drive(self._op_put(config, checkpoint, metadata, new_versions))

    async def aput_writes(self, config, writes, task_id, task_path: str = "") -> None:
        await self._drive(self._op_put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._drive(self._op_delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._drive(self._op_delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._drive(self._op_copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._drive(self._op_prune(thread_ids, strategy))


from ._store import AsyncConvcacheStore, ConvcacheStore  # noqa: E402
