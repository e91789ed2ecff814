"""convcache's typed API (Conversations, SemanticCache, EmbeddingCache and the Async ones)
against real Valkey 9.1 and Redis 7.0 servers, over RESP2 and RESP3. Expected values come from
what the test wrote or from the raw command replies, never from the code under test."""
import asyncio
import datetime
import json
import os
import shutil
import struct

import numpy as np
import pytest
import redis
import redis.asyncio

from convcache import (
    AsyncConversations,
    AsyncEmbeddingCache,
    AsyncSemanticCache,
    BucketInfo,
    ConvcacheError,
    Conversations,
    EmbeddingCache,
    Hit,
    Message,
    ModuleNotLoadedError,
    SemanticCache,
    SessionInfo,
    WrongTypeError,
)
from harness import free_port, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LIX_FIXTURES = os.path.join(REPO, "tests", "fixtures", "lix")


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


# ------------------------------------------------------------------------------------------
# Conversations

def test_tool_turns_tokenizer_ex_and_roles_match_the_raw_commands(r):
    conv = Conversations(r)
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert conv.add("t", "user", "hello world", tokenizer="cl100k_base", ex=600) == 1
    assert conv.add("t", "assistant", "", tool_calls=calls) == 2
    assert conv.add("t", "tool", "42", tool_call_id="c1", name="f",
                    ex=datetime.timedelta(seconds=900)) == 3
    assert 890 <= r.ttl("t") <= 900
    raw = json.loads(r.execute_command("CONV.CTX", "t"))
    assert [m.to_chat() for m in conv.ctx("t")] == raw
    assert raw[1]["tool_calls"] == calls and raw[2]["tool_call_id"] == "c1"
    full = json.loads(r.execute_command("CONV.HISTORY", "t", "FORMAT", "full"))
    got = conv.history("t")
    assert [m.tokens for m in got] == [m["tokens"] for m in full] == [2, 0, 1]
    assert (got[2].name, got[2].tool_call_id, got[1].tool_calls) == ("f", "c1", calls)
    assert [m.role for m in conv.ctx("t", roles=["user", "tool"])] == ["user", "tool"]
    assert [m.seq for m in conv.history("t", roles=["assistant"])] == [2]
    info = conv.info("t")
    assert (info.tokens, info.tokenizer) == (3, "cl100k_base")
    with pytest.raises(ConvcacheError, match="differs from the session's tokenizer"):
        conv.add("t", "user", "x", tokenizer="o200k_base")
    with pytest.raises(ConvcacheError, match="TOOL_CALLS must be a JSON array"):
        conv.add("t", "assistant", "", tool_calls="{}")
    with pytest.raises(TypeError):
        conv.add("t", "assistant", "", tool_calls={"id": 1})
    with pytest.raises(TypeError):
        conv.ctx("t", roles="user")
    assert conv.len("t") == 3


def test_add_ctx_history_match_the_raw_commands(r):
    conv = Conversations(r)
    assert conv.add("s", "user", "hello", meta={"lang": "en"}, ts=1000) == 1
    assert conv.add("s", "assistant", "hi ✓", ts=datetime.datetime.fromtimestamp(2)) == 2
    for i in range(3, 9):
        assert conv.add("s", "user", f"m{i}", embedding=[i, 1.0]) == i
    raw = json.loads(r.execute_command("CONV.HISTORY", "s", "FORMAT", "full"))
    want = [Message(role=m["role"], content=m["content"], seq=m["seq"], ts=m["ts"], meta=m["meta"],
                    tokens=m["tokens"]) for m in raw]
    assert conv.history("s") == want
    assert want[0] == Message("user", "hello", 1, 1000, {"lang": "en"}, tokens=2)
    assert want[1].ts == 2000 and want[1].content == "hi ✓"
    assert conv.ctx("s") == want[-5:]  # the window (5)
    assert conv.ctx("s", count=2) == want[-2:]
    # TOKENS: each "mN" turn costs ceil(2/4) + 4 = 5 tokens.
    assert conv.ctx("s", count=8, tokens=11) == want[-2:]
    assert conv.history("s", from_seq=3, to_seq=4) == want[2:4]
    assert [m.to_chat() for m in conv.ctx("s", count=1)] == [{"role": "user", "content": "m8"}]
    assert conv.len("s") == 8
    assert conv.ctx("missing") == [] and conv.history("missing") == []


def test_info_is_the_same_dataclass_over_resp2_and_resp3(server):
    r2, r3 = server.client(protocol=2), server.client(protocol=3)
    Conversations(r2).add("s", "user", "x", window=7)
    i2, i3 = Conversations(r2).info("s"), Conversations(r3).info("s")
    assert isinstance(i2, SessionInfo) and i2 == i3
    raw = r2.execute_command("CONV.INFO", "s")
    raw = dict(zip([k.decode() for k in raw[::2]], raw[1::2]))
    assert (i2.window, i2.len, i2.hot, i2.archived, i2.first_seq, i2.last_seq) == (7, 1, 1, 0, 1, 1)
    assert i2.memory_bytes == raw["memory_bytes"] and i2.next_seq == raw["next_seq"]
    assert Conversations(r2).info("missing") is None


def test_clear_delete(r):
    conv = Conversations(r)
    for i in range(3):
        conv.add("s", "user", f"m{i}")
    assert conv.clear("s") == 3
    assert conv.add("s", "user", "again") == 4  # the counter stays
    assert conv.delete("s") is True and conv.delete("s") is False
    assert r.exists("s") == 0


def test_binary_content_round_trips_with_decode_false(r):
    blob = bytes(range(256)) * 3
    Conversations(r).add("b", "user", blob)
    assert Conversations(r, decode=False).ctx("b")[0].content == blob
    assert Conversations(r, decode=False).history("b")[0].role == "user"
    # decode=True gives str with U+FFFD where the bytes are not UTF-8, as the JSON formats do
    assert Conversations(r).ctx("b")[0].content == blob.decode("utf-8", "replace")


def test_search_text_and_embedding(r):
    conv = Conversations(r)
    conv.add("s", "user", "the quick brown fox", embedding=np.array([1, 0, 0], dtype=np.float32))
    conv.add("s", "user", "lazy dogs sleep", embedding=b"".join([fp32(0, 1, 0)]))
    conv.add("s", "user", "foxes are quick", embedding=[0.9, 0.1, 0.0])
    conv.add("s", "assistant", "recent one", embedding=[0, 0, 1])
    res = conv.search("s", text="quick fox", k=2, recent=1)
    assert [m.content for m in res.recent] == ["recent one"]
    raw = json.loads(r.execute_command("CONV.SEARCH", "s", "TEXT", "quick fox", "K", 2, "RECENT", 1))
    assert [(m.seq, m.score) for m in res.relevant] == [(x["seq"], x["score"]) for x in raw["relevant"]]
    assert res.relevant[0].content == "the quick brown fox" and res.relevant[0].score == 1.0
    res = conv.search("s", embedding=[1, 0.05, 0], k=3, recent=0)
    assert [m.seq for m in res.relevant] == [1, 3, 2]
    assert res.relevant[0].score == pytest.approx(0.99875, abs=1e-4)
    with pytest.raises(TypeError, match="exactly one"):
        conv.search("s", text="x", embedding=[1.0])
    with pytest.raises(TypeError, match="exactly one"):
        conv.search("s")


def test_flush_and_lix_import(kind, servers, protocol):
    s = servers(kind, module_args=["window", "5", "timer-interval-ms", "20"])
    r = s.client(protocol=protocol)
    conv = Conversations(r)
    for i in range(8):
        conv.add("s", "user", f"m{i}")
    before = conv.history("s")
    assert conv.flush("s") == 8
    info = conv.info("s")
    assert info.archived == 8 and info.hot == 0
    assert conv.history("s") == before  # read back from disk on the server's I/O thread
    imp = os.path.join(s.dir, "convcache-import")
    os.makedirs(imp)
    shutil.copy(os.path.join(LIX_FIXTURES, "chat.huff"), imp)
    expected = json.load(open(os.path.join(LIX_FIXTURES, "expected.json")))["chat"]
    assert conv.import_lix("imported", "chat") == len(expected)
    got = conv.history("imported")
    assert [(m.role, m.content, m.ts, m.meta) for m in got] == [
        (t["role"], t["content"], round(t["timestamp"] * 1000), t.get("metadata") or {})
        for t in expected]
    with pytest.raises(ConvcacheError, match="already exists"):
        conv.import_lix("imported", "chat")


def test_errors_are_typed_and_change_nothing(r):
    conv, sem, emb = Conversations(r), SemanticCache(r), EmbeddingCache(r)
    r.set("str", "v")
    r.rpush("list", "v")
    for call in (lambda: conv.add("str", "user", "x"), lambda: conv.ctx("str"),
                 lambda: sem.get("str", [1.0]), lambda: emb.set("list", [1.0])):
        with pytest.raises(WrongTypeError) as e:
            call()
        assert isinstance(e.value, redis.exceptions.ResponseError)
    conv.add("s", "user", "keep")
    with pytest.raises(ConvcacheError, match="META is not valid JSON"):
        conv.add("s", "user", "x", meta="{nope")
    with pytest.raises(ConvcacheError, match="NaN"):
        conv.add("s", "user", "x", embedding=[1.0, float("nan")])
    with pytest.raises(ConvcacheError, match="SEQ 1 is not past"):
        conv.add("s", "user", "x", seq=1)
    assert conv.len("s") == 1 and r.get("str") == b"v"
    with pytest.raises(ValueError, match="1-dimensional"):
        sem.set("sc", np.ones((2, 2), dtype=np.float32), "x")
    with pytest.raises(ValueError, match="whole number of float32s"):
        sem.set("sc", b"abc", "x")
    with pytest.raises(TypeError, match="got str"):
        sem.set("sc", "1,2", "x")
    with pytest.raises(TypeError, match="at most one of ex=, px=, pxat="):
        sem.set("sc", [1.0], "x", ex=1, px=1)
    with pytest.raises(TypeError, match="window must be an int"):
        conv.add("s", "user", "x", window="5")
    assert r.exists("sc") == 0


def test_module_not_loaded_is_named(kind, plain_server):
    r = plain_server(kind).client()
    with pytest.raises(ModuleNotLoadedError, match="convcache module is not loaded"):
        Conversations(r).add("s", "user", "x")
    with pytest.raises(ModuleNotLoadedError):
        SemanticCache(r).get("s", [1.0])


def test_sync_and_async_clients_are_not_mixed(server):
    with pytest.raises(TypeError, match="use AsyncConversations"):
        Conversations(redis.asyncio.Redis(port=server.port))
    with pytest.raises(TypeError, match="use Conversations"):
        AsyncConversations(server.client())
    with pytest.raises(ValueError, match="decode_responses=False"):
        EmbeddingCache(server.client(decode_responses=True))


def test_decode_responses_client_works_for_text(server):
    r = server.client(decode_responses=True)
    conv = Conversations(r)
    conv.add("s", "user", "héllo", meta={"a": 1})
    assert conv.ctx("s") == [Message("user", "héllo", 1, conv.ctx("s")[0].ts, {"a": 1}, tokens=2)]
    assert SemanticCache(r).set("sc", [1.0, 0.0], "paris") == 1
    assert SemanticCache(r).get("sc", [1.0, 0.01]) == "paris"


# ------------------------------------------------------------------------------------------
# SemanticCache

def test_semantic_set_get_lookup(r):
    sem = SemanticCache(r)
    assert sem.set("sc", np.array([1, 0, 0], dtype=np.float64), "paris", meta={"model": "m"}) == 1
    assert sem.set("sc", [0, 1, 0], "rome") == 2
    assert sem.set("sc", fp32(1, 1, 0), b"between") == 3
    assert sem.get("sc", [1, 0.01, 0]) == "paris"
    assert SemanticCache(r, decode=False).get("sc", [1, 0.01, 0]) == b"paris"
    assert sem.get("sc", [0, 0, 1]) is None
    assert sem.get("missing", [1, 0, 0]) is None
    # similarity with [1,1,0] is 0.7071: MINSIM 0.7 hits, MAXDIST 0.29 (= sim >= 0.71) misses
    assert sem.get("sc", [1, 1, 0.0001], min_sim=0.99) == "between"
    assert sem.get("sc", [0.0, 1, 0], min_sim=0.99) == "rome"
    hits = sem.lookup("sc", [1, 0, 0], count=3, min_sim=0.5)
    assert [h.response for h in hits] == ["paris", "between"]
    assert hits[0] == Hit(id=1, response="paris", score=pytest.approx(1.0), meta={"model": "m"})
    assert hits[1].meta is None and hits[1].score == pytest.approx(0.70710678, abs=1e-6)
    assert [h.id for h in sem.lookup("sc", [1, 0, 0], count=3, max_dist=0.29)] == [1]
    assert sem.lookup("sc", [0, 0, 1], count=3) == []
    raw = r.execute_command("SEMCACHE.GET", "sc", fp32(1, 0, 0), "MINSIM", 0.5, "COUNT", 3,
                            "WITHSCORES")
    assert [h.score for h in hits] == pytest.approx([float(x) for x in raw[1::2]])
    assert sem.len("sc") == 3
    assert sem.delete("sc", 2, 99) == 1 and sem.len("sc") == 2
    info = sem.info("sc")
    assert isinstance(info, BucketInfo) and (info.dimension, info.entries, info.next_id) == (3, 2, 4)
    assert sem.info("missing") is None


def test_semantic_expiry_options(r):
    sem = SemanticCache(r)
    now_ms = int(r.time()[0] * 1000)
    sem.set("sc", [1.0, 0], "a", ex=datetime.timedelta(seconds=100))
    sem.set("sc", [1.0, 0.1], "b", px=50)
    sem.set("sc", [1.0, 0.2], "c", pxat=now_ms + 60_000)
    sem.set("sc", [1.0, 0.3], "d", ex=0, max_items=3)  # never expires; bucket max 3 drops "a"
    assert sem.info("sc").max == 3
    wait_for(lambda: sem.len("sc") == 2, timeout=5, what="px entry expired")
    assert sorted(h.response for h in sem.lookup("sc", [1.0, 0.2], count=5, min_sim=0)) == ["c", "d"]


def test_semantic_info_same_over_both_protocols(server):
    SemanticCache(server.client()).set("sc", [1.0, 2.0], "x")
    SemanticCache(server.client()).get("sc", [1.0, 2.0])
    a = SemanticCache(server.client(protocol=2)).info("sc")
    b = SemanticCache(server.client(protocol=3)).info("sc")
    assert a == b and a.hits == 1
    la = SemanticCache(server.client(protocol=2)).lookup("sc", [1.0, 2.0])
    lb = SemanticCache(server.client(protocol=3)).lookup("sc", [1.0, 2.0])
    assert la == lb and isinstance(la[0].score, float)


# ------------------------------------------------------------------------------------------
# EmbeddingCache

def test_embedding_cache(r):
    emb = EmbeddingCache(r)
    v = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    assert emb.set("u:1", v, ex=100) is True
    assert 90 <= r.ttl("u:1") <= 100
    got = emb.get("u:1")
    assert got.dtype == np.float32 and np.array_equal(got, v)
    got[0] = 5.0  # a writable copy
    assert r.get("u:1") == v.tobytes()
    assert emb.get("missing") is None
    assert emb.mset({"a": [1.0, 2.0], "b": fp32(3, 4, 5)}) is True
    out = emb.mget(["a", "missing", "b"])
    assert out[1] is None and out[0].tolist() == [1.0, 2.0] and out[2].tolist() == [3.0, 4.0, 5.0]
    assert EmbeddingCache(r, vector_type="list").mget(["a"]) == [[1.0, 2.0]]
    assert EmbeddingCache(r, vector_type="bytes").get("b") == fp32(3, 4, 5)
    assert emb.mget([]) == []
    with pytest.raises(ConvcacheError, match="zero norm"):
        emb.set("z", [0.0, 0.0])
    with pytest.raises(ValueError, match="vector_type"):
        EmbeddingCache(r, vector_type="tensor")


# ------------------------------------------------------------------------------------------
# Async

def test_async_classes_give_the_sync_answers(server, protocol):
    sync = server.client(protocol=protocol)
    conv, sem, emb = Conversations(sync), SemanticCache(sync), EmbeddingCache(sync)

    async def main():
        ar = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        aconv, asem, aemb = AsyncConversations(ar), AsyncSemanticCache(ar), AsyncEmbeddingCache(ar)
        try:
            assert await aconv.add("s", "user", "hi", meta={"x": 1}, embedding=[1.0, 0]) == 1
            assert await aconv.add("s", "assistant", "yo") == 2
            out = {
                "ctx": await aconv.ctx("s"),
                "history": await aconv.history("s", from_seq=2),
                "info": await aconv.info("s"),
                "search": await aconv.search("s", text="hi", recent=0),
                "len": await aconv.len("s"),
            }
            assert await asem.set("sc", [1.0, 0.0], "paris") == 1
            out["get"] = await asem.get("sc", [1.0, 0.01])
            out["lookup"] = await asem.lookup("sc", [1.0, 0.01], count=2)
            assert await aemb.mset({"a": [1.0], "b": [2.0]}) is True
            out["mget"] = [v.tolist() for v in await aemb.mget(["a", "b"])]
            with pytest.raises(WrongTypeError):
                await aconv.ctx("sc")
            return out
        finally:
            await ar.aclose()

    got = asyncio.run(main())
    info = conv.info("s")
    assert got["ctx"] == conv.ctx("s") and got["history"] == conv.history("s", from_seq=2)
    assert got["info"].len == info.len == 2 and got["info"].created_ms == info.created_ms
    assert got["search"] == conv.search("s", text="hi", recent=0)
    assert got["len"] == 2
    assert got["get"] == sem.get("sc", [1.0, 0.01]) == "paris"
    assert got["lookup"] == sem.lookup("sc", [1.0, 0.01], count=2)
    assert got["mget"] == [v.tolist() for v in emb.mget(["a", "b"])] == [[1.0], [2.0]]


# ------------------------------------------------------------------------------------------
# Cluster

def make_cluster(servers, kind):
    nodes = []
    for _ in range(2):
        bus = free_port()
        nodes.append(servers(kind, module_args=["window", "5"],
                             extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                    "--cluster-port", str(bus)]))
        nodes[-1].bus_port = bus
    a, b = nodes
    a.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
    b.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
    a.client().execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.bus_port)
    for n in nodes:
        wait_for(lambda n=n: b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO"),
                 timeout=30, what="cluster ok")
    return nodes


def test_redis_cluster_client(kind, servers):
    a, b = make_cluster(servers, kind)
    rc = redis.RedisCluster(host="127.0.0.1", port=a.port)
    try:
        conv, sem, emb = Conversations(rc), SemanticCache(rc), EmbeddingCache(rc)
        keys = [f"chat:{i}" for i in range(12)]
        slots = {rc.keyslot(k) <= 8191 for k in keys}
        assert slots == {True, False}  # the keys live on both nodes
        for k in keys:
            assert conv.add(k, "user", f"hi {k}") == 1
        assert all(conv.ctx(k)[0].content == f"hi {k}" for k in keys)
        assert sem.set("sc:1", [1.0, 0], "x") == 1 and sem.get("sc:1", [1.0, 0]) == "x"
        vecs = {f"url:{i}": [float(i + 1), 1.0] for i in range(12)}
        assert emb.mset(vecs) is True  # keys of both nodes: one MSET per slot
        got = emb.mget(list(vecs) + ["url:missing"])
        assert [v.tolist() for v in got[:-1]] == list(vecs.values()) and got[-1] is None
    finally:
        rc.close()

    async def main():
        arc = redis.asyncio.RedisCluster(host="127.0.0.1", port=b.port)
        try:
            aconv, aemb = AsyncConversations(arc), AsyncEmbeddingCache(arc)
            assert [m.content for m in await aconv.ctx("chat:3")] == ["hi chat:3"]
            got = await aemb.mget(list(vecs))
            assert [v.tolist() for v in got] == list(vecs.values())
        finally:
            await arc.aclose()
    asyncio.run(main())
