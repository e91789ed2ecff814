"""SemanticCache's newer SEMCACHE options (TAG/FILTER, PROMPT, RENEW/TOUCH, EVICT, QUANT,
INDEX, WITHHITS, DEL FILTER, the new INFO fields) against real Valkey 9.1 and Redis 7.0
servers. Expected values come from what the test wrote or from raw commands, never from the
client under test."""
import asyncio
import time

import numpy as np
import pytest
import redis
import redis.asyncio

from convcache import AsyncSemanticCache, BucketInfo, ConvcacheError, Hit, SemanticCache
from harness import wait_for


def unit(rng, dim):
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def raw_info(r, key):
    reply = r.execute_command("SEMCACHE.INFO", key)
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    dec = lambda x: x.decode() if isinstance(x, bytes) else x  # noqa: E731
    return {dec(k): dec(v) for k, v in items}


# ------------------------------------------------------------------------------------------
# SET options reach the server

def test_set_sends_tags_prompt_evict_quant_index(r):
    sem = SemanticCache(r)
    assert sem.set("sc", [1.0, 0, 0], "paris", tags={"user": "a", "lang": b"fr"},
                   prompt="capital of France?", evict="lru", quant="int8", index=True) == 1
    info = raw_info(r, "sc")
    assert (info["evict"], info["quant"], info["index"]) == ("lru", "int8", "ivf")
    # The tags are stored: the raw FILTER finds the entry only with the right pairs.
    v = np.array([1.0, 0, 0], dtype=np.float32).tobytes()
    assert r.execute_command("SEMCACHE.GET", "sc", v, "FILTER", "user", "a",
                             "FILTER", "lang", "fr") == b"paris"
    assert r.execute_command("SEMCACHE.GET", "sc", v, "FILTER", "user", "b") is None
    # The prompt is stored: the raw exact path answers an orthogonal vector.
    far = np.array([0, 0, 1.0], dtype=np.float32).tobytes()
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "capital of France?") == b"paris"
    assert r.execute_command("SEMCACHE.GET", "sc", far) is None
    # ALGO: the bucket's index algorithm, fixed by its first set.
    assert sem.set("graph", [1.0, 0, 0], "x", algo="hnsw", index=True) == 1
    assert SemanticCache(r).info("graph").algo == "hnsw" and raw_info(r, "graph")["index"] == "hnsw"
    assert SemanticCache(r).info("sc").algo == "ivf"  # semcache-index-algo's default
    # An int tag value is its decimal text, as redis-py sends ints.
    sem.set("sc", [0, 1.0, 0], "rome", tags={"user": 42})
    assert sem.get("sc", [0, 1.0, 0], filter={"user": "42"}) == "rome"


def test_bucket_info_has_the_new_fields_over_both_protocols(server):
    SemanticCache(server.client()).set("sc", [1.0, 2.0, 3.0], "x", quant="int8", evict="lfu")
    SemanticCache(server.client()).set("plain", [1.0, 2.0], "y")
    a = SemanticCache(server.client(protocol=2)).info("sc")
    b = SemanticCache(server.client(protocol=3)).info("sc")
    assert isinstance(a, BucketInfo) and a == b
    raw = raw_info(server.client(protocol=2), "sc")
    assert (a.index, a.index_pending, a.evict, a.index_bytes, a.quant) == (
        raw["index"], raw["index_pending"], raw["evict"], raw["index_bytes"], raw["quant"])
    assert (a.quant, a.evict, a.index) == ("int8", "lfu", "none")
    assert all(isinstance(x, str) for x in (a.index, a.evict, a.quant))
    assert a.extra == {}  # every field the server sends is typed
    p = SemanticCache(server.client(protocol=2)).info("plain")
    assert (p.quant, p.evict, p.index, p.index_pending, p.index_bytes) == (
        "float32", "fifo", "none", 0, 0)
    idx = SemanticCache(server.client())
    idx.set("idx", [1.0, 0.5], "z", index=True)
    i = idx.info("idx")
    raw_idx = raw_info(server.client(), "idx")
    assert i.index == "ivf" and i.index_bytes == raw_idx["index_bytes"] > 0


# ------------------------------------------------------------------------------------------
# Errors

def test_server_refusals_come_through_as_response_errors_and_change_nothing(r):
    sem = SemanticCache(r)
    sem.set("sc", [1.0, 0], "a", quant="float32")
    before = raw_info(r, "sc")
    cases = [
        (dict(evict="random"), "EVICT must be lru, lfu or fifo"),
        (dict(quant="int4"), "QUANT must be float32 or int8"),
        (dict(quant="int8"), "QUANT int8 differs from the cache's vector kind float32"),
        (dict(prompt=""), "PROMPT must not be empty"),
        (dict(prompt="x" * (64 * 1024 + 1)), "PROMPT is longer than"),
        (dict(tags={"": "v"}), "TAG name must not be empty"),
        (dict(tags={f"t{i}": "v" for i in range(65)}), "more than 64 TAG pairs"),
        (dict(tags={"n": "v" * 4097}), "TAG value is longer than"),
        (dict(renew=-1), "RENEW must be between"),
    ]
    for kwargs, message in cases:
        with pytest.raises(redis.exceptions.ResponseError, match=message) as e:
            sem.set("sc", [0.0, 1.0], "b", **kwargs)
        assert isinstance(e.value, ConvcacheError), kwargs
    for kwargs, message in [(dict(filter={"": "v"}), "FILTER name must not be empty"),
                            (dict(filter={f"f{i}": "v" for i in range(65)}),
                             "more than 64 FILTER pairs"),
                            (dict(prompt=""), "PROMPT must not be empty")]:
        with pytest.raises(redis.exceptions.ResponseError, match=message):
            sem.get("sc", [1.0, 0], **kwargs)
        with pytest.raises(redis.exceptions.ResponseError, match=message):
            sem.lookup("sc", [1.0, 0], **kwargs)
    with pytest.raises(redis.exceptions.ResponseError, match="FILTER name must not be empty"):
        sem.delete("sc", filter={"": "v"})
    after = raw_info(r, "sc")
    assert (after["entries"], after["next_id"], after["quant"], after["evict"]) == (
        before["entries"], before["next_id"], before["quant"], before["evict"])
    assert sem.get("sc", [1.0, 0]) == "a"
    # Wrong Python types never reach the server.
    for kwargs in [dict(tags=[("user", "a")]), dict(tags={"user": 1.5}), dict(tags={"u": True}),
                   dict(evict=1), dict(quant=8), dict(prompt=3)]:
        with pytest.raises(TypeError):
            sem.set("sc", [0.0, 1.0], "b", **kwargs)
    with pytest.raises(TypeError):
        sem.get("sc", [1.0, 0], filter="user=a")
    with pytest.raises(TypeError):
        sem.delete("sc", 1, filter={"user": "a"})
    with pytest.raises(ValueError):
        sem.delete("sc", filter={})
    with pytest.raises(TypeError):
        sem.delete("sc")
    assert raw_info(r, "sc")["next_id"] == before["next_id"]


# ------------------------------------------------------------------------------------------
# int8 buckets

def test_int8_bucket_round_trip(r):
    rng = np.random.default_rng(7)
    dim, n = 384, 40
    vecs = [unit(rng, dim) for _ in range(n)]
    q8, f32 = SemanticCache(r), SemanticCache(r)
    for i, v in enumerate(vecs):
        assert q8.set("q8", v, f"r{i}", quant="int8", meta={"i": i}) == i + 1
        assert f32.set("f32", v, f"r{i}") == i + 1
    a, b = q8.info("q8"), f32.info("f32")
    assert (a.quant, b.quant) == ("int8", "float32")
    assert a.vector_bytes < b.vector_bytes / 3  # dim + 4 bytes a row instead of 4 * dim
    for i, v in enumerate(vecs):
        hits = q8.lookup("q8", v, count=3, min_sim=-1)
        assert hits[0].id == i + 1 and hits[0].response == f"r{i}" and hits[0].meta == {"i": i}
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        exact = f32.lookup("f32", v, count=3, min_sim=-1)
        assert [h.score for h in hits] == pytest.approx([h.score for h in exact], abs=1e-2)
    # The kind survives a reload (RDB) with the same answers.
    before = [q8.lookup("q8", v, count=2, min_sim=-1) for v in vecs[:5]]
    r.execute_command("DEBUG", "RELOAD")
    assert q8.info("q8").quant == "int8"
    assert [q8.lookup("q8", v, count=2, min_sim=-1) for v in vecs[:5]] == before
    assert q8.set("q8", vecs[0], "again", quant="int8") == n + 1  # the same kind is accepted


# ------------------------------------------------------------------------------------------
# FILTER, PROMPT, TOUCH, WITHHITS, DEL FILTER

@pytest.mark.parametrize("index", [False, True])
def test_filter_isolates_tagged_entries(r, index):
    sem = SemanticCache(r)
    v = [1.0, 0.0, 0.0]
    sem.set("sc", v, "for-a", tags={"user": "a", "team": "x"}, index=index)
    sem.set("sc", v, "for-b", tags={"user": "b", "team": "x"})
    sem.set("sc", [1.0, 0.05, 0.0], "untagged")
    assert raw_info(r, "sc")["index"] == ("ivf" if index else "none")
    assert sem.get("sc", v, filter={"user": "a"}) == "for-a"
    assert sem.get("sc", v, filter={"user": "b"}) == "for-b"
    assert sem.get("sc", v, filter={"user": "c"}) is None  # never an entry outside the filter
    assert sem.get("sc", v, filter={"user": "a", "team": "y"}) is None  # every pair must match
    assert [h.response for h in sem.lookup("sc", v, count=5, filter={"team": "x"})] == [
        "for-b", "for-a"]  # equal scores: newer first
    assert [h.response for h in sem.lookup("sc", v, count=5, filter={"user": "a"})] == ["for-a"]
    assert len(sem.lookup("sc", v, count=5)) == 3
    assert sem.get("sc", v, filter={}) == "for-b"  # an empty filter is no filter


def test_prompt_exact_path(r):
    sem = SemanticCache(r)
    first = sem.set("sc", [1.0, 0.0], "four", prompt="What is 2+2?", meta={"v": 1})
    sem.set("sc", [0.0, 1.0], "other", tags={"user": "a"})
    far = [-1.0, 0.0]  # similarity -1 with the prompt's entry
    assert sem.get("sc", far) is None
    assert sem.get("sc", far, prompt="What is 2+2?") == "four"
    hits = sem.lookup("sc", far, count=5, min_sim=-1, prompt="What is 2+2?")
    assert hits == [Hit(id=first, response="four", score=1.0, meta={"v": 1})]  # alone, score 1
    # An unknown prompt falls back to the vector search.
    assert sem.get("sc", [0.0, 1.0], prompt="What is 3+3?") == "other"
    # The exact path respects the filter.
    assert sem.get("sc", far, prompt="What is 2+2?", filter={"user": "a"}) is None
    # Same prompt again: an upsert replacing the older entry.
    second = sem.set("sc", [0.6, 0.8], "4", prompt="What is 2+2?")
    assert second > first and sem.len("sc") == 2
    assert sem.get("sc", far, prompt="What is 2+2?") == "4"
    assert sem.delete("sc", first) == 0  # already replaced
    assert SemanticCache(r, decode=False).get("sc", far, prompt=b"What is 2+2?") == b"4"


def test_touch_renews_ttl_and_renew_sets_by_how_much(server):
    sem = SemanticCache(server.client())
    a, b, c = [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]
    start = time.monotonic()
    sem.set("sc", a, "a", px=3000)
    sem.set("sc", b, "b", px=3000)
    sem.set("sc", c, "c", px=3000, renew=600_000)
    time.sleep(1.5)
    assert sem.get("sc", a, touch=True) == "a"  # renewed to ~now + 3 s (t = 4.5 s)
    assert sem.get("sc", b) == "b"  # a lookup without touch renews nothing (t = 3 s)
    assert [h.response for h in sem.lookup("sc", c, touch=True)] == ["c"]  # ~now + 600 s
    wait_for(lambda: sem.get("sc", b) is None, timeout=5, what="b expired")
    assert time.monotonic() - start < 4.0, "machine too slow for the timing margins"
    assert sem.get("sc", a) == "a" and sem.get("sc", c) == "c"
    wait_for(lambda: sem.get("sc", a) is None, timeout=5, what="a expired after its renewal")
    assert sem.get("sc", c) == "c" and sem.len("sc") == 1


def test_lookup_with_hits_counts_each_entrys_hits(r):
    sem = SemanticCache(r)
    sem.set("sc", [1.0, 0.0], "x", meta={"k": 1})
    sem.set("sc", [0.0, 1.0], "y")
    plain = sem.lookup("sc", [1.0, 0.0])
    assert plain[0].hits is None and plain[0] == Hit(1, "x", pytest.approx(1.0), {"k": 1})
    assert [h.hits for h in sem.lookup("sc", [1.0, 0.0], with_hits=True)] == [2]
    sem.get("sc", [1.0, 0.0])
    got = sem.lookup("sc", [1.0, 0.1], count=2, min_sim=-1, with_hits=True)
    assert [(h.response, h.hits) for h in got] == [("x", 4), ("y", 1)]
    raw = r.execute_command("SEMCACHE.GET", "sc", np.float32([1.0, 0.1]).tobytes(), "MINSIM", -1,
                            "COUNT", 2, "WITHHITS")
    assert raw[1::2] == [5, 2]  # the raw lookup counts too: the same counters


def test_delete_by_filter(r):
    sem = SemanticCache(r)
    ids_a = [sem.set("sc", [1.0, float(i)], f"a{i}", tags={"user": "a", "n": str(i % 2)})
             for i in range(3)]
    ids_b = [sem.set("sc", [2.0, float(i)], f"b{i}", tags={"user": "b"}) for i in range(2)]
    plain = sem.set("sc", [3.0, 1.0], "plain")
    assert sem.delete("sc", filter={"user": "a", "n": "0"}) == 2  # every pair must match
    assert sem.delete("sc", filter={"user": "a"}) == 1
    assert sem.delete("sc", filter={"user": "a"}) == 0
    left = {h.id for h in sem.lookup("sc", [1.0, 1.0], count=10, min_sim=-1)}
    assert left == set(ids_b) | {plain} and not left & set(ids_a)
    assert sem.delete("missing", filter={"user": "a"}) == 0
    assert sem.delete("sc", *ids_b) == 2 and sem.len("sc") == 1


def test_evict_policy_chooses_the_dropped_entry(r):
    sem = SemanticCache(r)
    sem.set("lru", [1.0, 0, 0], "a", max_items=2, evict="lru")
    sem.set("lru", [0, 1.0, 0], "b")
    assert sem.get("lru", [1.0, 0, 0]) == "a"  # a is now more recently used than b
    sem.set("lru", [0, 0, 1.0], "c")
    got = {h.response for h in sem.lookup("lru", [1.0, 1.0, 1.0], count=5, min_sim=-1)}
    assert got == {"a", "c"} and sem.info("lru").evict == "lru"
    sem.set("fifo", [1.0, 0, 0], "a", max_items=2)
    sem.set("fifo", [0, 1.0, 0], "b")
    assert sem.get("fifo", [1.0, 0, 0]) == "a"
    sem.set("fifo", [0, 0, 1.0], "c")
    got = {h.response for h in sem.lookup("fifo", [1.0, 1.0, 1.0], count=5, min_sim=-1)}
    assert got == {"b", "c"} and sem.info("fifo").evict == "fifo"


# ------------------------------------------------------------------------------------------
# Async

def test_async_new_options_give_the_sync_answers(server, protocol):
    sem = SemanticCache(server.client(protocol=protocol))

    async def main():
        ar = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        asem = AsyncSemanticCache(ar)
        try:
            assert await asem.set("sc", [1.0, 0.0], "a", tags={"user": "a"}, prompt="p",
                                  quant="int8", evict="lfu", index=True, px=60_000,
                                  renew=120_000) == 1
            assert await asem.set("sc", [1.0, 0.0], "b", tags={"user": "b"}) == 2
            out = {
                "filtered": await asem.get("sc", [1.0, 0.0], filter={"user": "a"}),
                "prompt": await asem.get("sc", [-1.0, 0.0], prompt="p", touch=True),
                "hits": await asem.lookup("sc", [1.0, 0.0], count=2, with_hits=True,
                                          filter={"user": "a"}),
                "info": await asem.info("sc"),
            }
            with pytest.raises(ConvcacheError, match="EVICT must be"):
                await asem.set("sc", [1.0, 0.0], "c", evict="mru")
            out["deleted"] = await asem.delete("sc", filter={"user": "b"})
            return out
        finally:
            await ar.aclose()

    got = asyncio.run(main())
    assert got["filtered"] == "a" and got["prompt"] == "a"
    assert [(h.id, h.hits) for h in got["hits"]] == [(1, 3)]
    assert (got["info"].quant, got["info"].evict, got["info"].index) == ("int8", "lfu", "ivf")
    assert got["deleted"] == 1
    assert sem.lookup("sc", [1.0, 0.0], count=5) == [
        Hit(1, "a", pytest.approx(1.0, abs=1e-3), None)]


def test_hit_repr_shows_hits_only_when_asked_for():
    assert repr(Hit(1, "x", 0.5, None)) == "Hit(id=1, response='x', score=0.5, meta=None)"
    assert repr(Hit(2, b"y", 1.0, {"k": 1}, hits=3)) == (
        "Hit(id=2, response=b'y', score=1.0, meta={'k': 1}, hits=3)")
