"""SEMCACHE.* against real Valkey 9 and Redis 7 servers with the module loaded."""
import os
import threading
import time

import numpy as np
import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up


def f32(*xs):
    return np.asarray(xs, dtype=np.float32).tobytes()


def rand_vecs(n, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def info_of(r, key):
    info = r.execute_command("SEMCACHE.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in info.items()}


def test_set_get_hit_and_miss(r):
    assert r.execute_command("SEMCACHE.SET", "sc", f32(1, 0, 0), "paris") == 1
    assert r.execute_command("SEMCACHE.SET", "sc", f32(0, 1, 0), "rome") == 2
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0.01, 0)) == b"paris"
    assert r.execute_command("SEMCACHE.GET", "sc", f32(0, 0, 1)) is None
    assert r.execute_command("SEMCACHE.GET", "missing", f32(1, 0, 0)) is None
    assert r.execute_command("SEMCACHE.GET", "missing", f32(1, 0, 0), "COUNT", 3) == []
    assert r.execute_command("SEMCACHE.GET", "sc", f32(0, 0, 1), "COUNT", 3) == []
    assert r.execute_command("SEMCACHE.LEN", "sc") == 2
    assert r.execute_command("SEMCACHE.LEN", "missing") == 0
    assert r.type("sc") == b"semcachev"


def test_threshold_edges_minsim_and_maxdist(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0), "x")
    q = f32(3, 4)  # normalised [0.6, 0.8]: similarity exactly 0.6 in float32
    assert r.execute_command("SEMCACHE.GET", "sc", q, "MINSIM", "0.6") == b"x"
    assert r.execute_command("SEMCACHE.GET", "sc", q, "MINSIM", "0.60001") is None
    assert r.execute_command("SEMCACHE.GET", "sc", q, "MAXDIST", "0.4") == b"x"
    assert r.execute_command("SEMCACHE.GET", "sc", q, "MAXDIST", "0.39999") is None
    # Default threshold is the config (0.90): 0.6 misses, identical hits at MINSIM 1.
    assert r.execute_command("SEMCACHE.GET", "sc", q) is None
    assert r.execute_command("SEMCACHE.GET", "sc", f32(2, 0), "MINSIM", 1) == b"x"
    r.execute_command("CONFIG", "SET", "convcache.semcache-min-sim", "0.5")
    assert r.execute_command("SEMCACHE.GET", "sc", q) == b"x"
    with pytest.raises(redis.ResponseError, match="between -1 and 1"):
        r.execute_command("CONFIG", "SET", "convcache.semcache-min-sim", "1.5")


def test_count_withscores_ordering(r):
    for v, resp in [((1, 0), "a"), ((0, 1), "b"), ((1, 1), "c"), ((2, 0), "d"), ((-1, 0), "e")]:
        r.execute_command("SEMCACHE.SET", "sc", f32(*v), resp)
    out = r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "MINSIM", -1, "COUNT", 10, "WITHSCORES")
    resps, scores = out[::2], [float(s) for s in out[1::2]]
    assert resps == [b"d", b"a", b"c", b"b", b"e"]  # ties: newer first
    assert scores == pytest.approx([1, 1, 0.70710678, 0, -1], abs=1e-6)
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "MINSIM", 0.5, "COUNT", 10) == [b"d", b"a", b"c"]
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "MINSIM", 0.5, "COUNT", 2) == [b"d", b"a"]
    one = r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "WITHSCORES", "WITHIDS")
    assert one[:2] == [4, b"d"] and float(one[2]) == pytest.approx(1.0)


def test_meta_and_withmeta(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0), "a", "META", '{"model": "gpt"}')
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.1), "b")
    out = r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "COUNT", 2, "WITHMETA")
    assert out == [b"a", b'{"model":"gpt"}', b"b", None]
    with pytest.raises(redis.ResponseError, match="META is not valid JSON"):
        r.execute_command("SEMCACHE.SET", "sc", f32(1, 0), "x", "META", "{nope")


def test_errors_change_nothing(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 2, 3), "a")
    before = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    cases = [
        (("SEMCACHE.SET", "sc", f32(1, 2), "x"), "dimension 2 does not match the cache dimension 3"),
        (("SEMCACHE.SET", "sc", f32(0, 0, 0), "x"), "vector: vector has zero norm"),
        (("SEMCACHE.SET", "sc", f32(1, float("nan"), 0), "x"), "NaN or Inf at index 1"),
        (("SEMCACHE.SET", "sc", f32(1, float("inf"), 0), "x"), "NaN or Inf at index 1"),
        (("SEMCACHE.SET", "sc", b"abc", "x"), "not a multiple of 4"),
        (("SEMCACHE.SET", "sc", b"", "x"), "vector is empty"),
        (("SEMCACHE.SET", "sc", f32(1, 2, 3), "x", "EX", "soon"), "EX is not an integer"),
        (("SEMCACHE.SET", "sc", f32(1, 2, 3), "x", "EX", -1), "EX must be between"),
        (("SEMCACHE.SET", "sc", f32(1, 2, 3), "x", "BOGUS", 1), "unknown option 'BOGUS'"),
        (("SEMCACHE.SET", "sc", f32(1, 2, 3), "x", "ID", 1), "ID 1 is not greater"),
        (("SEMCACHE.SET", "sc", f32(1, 2, 3), "x", "MAXITEMS", 0), "MAXITEMS must be between"),
        (("SEMCACHE.GET", "sc", f32(1, 2)), "dimension 2 does not match"),
        (("SEMCACHE.GET", "sc", f32(0, 0, 0)), "zero norm"),
        (("SEMCACHE.GET", "sc", f32(1, 2, 3), "MINSIM", 2), "MINSIM must be between"),
        (("SEMCACHE.GET", "sc", f32(1, 2, 3), "MAXDIST", 3), "MAXDIST must be between"),
        (("SEMCACHE.GET", "sc", f32(1, 2, 3), "COUNT", 0), "COUNT must be between"),
        (("SEMCACHE.GET", "sc", f32(1, 2, 3), "MINSIM"), "MINSIM needs a value"),
        (("SEMCACHE.DEL", "sc", "x"), "id is not an integer"),
        (("SEMCACHE._LOAD", "sc", b"\x09junk"), "corrupt semcache payload"),
    ]
    for args, msg in cases:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command(*args)
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == before
    r.set("str", "v")
    for cmd in (("SEMCACHE.SET", "str", f32(1), "x"), ("SEMCACHE.GET", "str", f32(1)),
                ("SEMCACHE.DEL", "str", 1), ("SEMCACHE.LEN", "str"), ("SEMCACHE.INFO", "str")):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            r.execute_command(*cmd)
    assert r.get("str") == b"v"
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("SEMCACHE.SET", "sc", f32(1, 2, 3))


def test_del_len_info(r):
    for i in range(3):
        r.execute_command("SEMCACHE.SET", "sc", f32(1, i), f"r{i}")
    assert r.execute_command("SEMCACHE.DEL", "sc", 2, 99) == 1
    assert r.execute_command("SEMCACHE.DEL", "sc", 2) == 0
    assert r.execute_command("SEMCACHE.DEL", "nokey", 1) == 0
    r.execute_command("SEMCACHE.GET", "sc", f32(1, 0))  # hit
    r.execute_command("SEMCACHE.GET", "sc", f32(-1, 0))  # miss
    info = info_of(r, "sc")
    assert info["dimension"] == 2 and info["entries"] == 2 and info["max"] == 50
    assert info["hits"] == 1 and info["misses"] == 1
    assert info["bytes"] >= 2 * 8 + 4 and info["next_id"] == 4
    assert r.execute_command("SEMCACHE.INFO", "nokey") is None
    # A new entry never reuses an id.
    assert r.execute_command("SEMCACHE.SET", "sc", f32(1, 5), "x") == 4


def test_per_entry_expiry(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0), "short", "PX", 300)
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.01), "long", "EX", 100)
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.02), "forever", "EX", 0)
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "COUNT", 5) == [b"short", b"long", b"forever"]
    time.sleep(0.4)
    # Expired entries never answer (before any write reclaims them)...
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "COUNT", 5) == [b"long", b"forever"]
    assert r.execute_command("SEMCACHE.LEN", "sc") == 2
    assert info_of(r, "sc")["stored"] == 3
    # ...and the next write reclaims them.
    r.execute_command("SEMCACHE.SET", "sc", f32(0, 1), "other")
    assert info_of(r, "sc")["stored"] == 3
    # Default TTL comes from the config.
    r.execute_command("CONFIG", "SET", "convcache.semcache-ttl", 1)
    r.execute_command("SEMCACHE.SET", "sc", f32(0, 1), "ttl1")
    time.sleep(1.1)
    assert r.execute_command("SEMCACHE.GET", "sc", f32(0, 1), "COUNT", 5) == [b"other"]


def test_max_items_eviction_order(r):
    r.execute_command("CONFIG", "SET", "convcache.max-items", 3)
    for i in range(5):
        r.execute_command("SEMCACHE.SET", "sc", f32(1, i * 0.001), f"r{i}")
    out = r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "MINSIM", 0, "COUNT", 10, "WITHIDS")
    assert sorted(out[::2]) == [3, 4, 5]
    assert info_of(r, "sc")["max"] == 3
    # MAXITEMS changes a bucket's max (evicting the oldest); the config only sets new ones.
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.01), "r5", "MAXITEMS", 2)
    out = r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "MINSIM", 0, "COUNT", 10, "WITHIDS")
    assert sorted(out[::2]) == [5, 6]
    r.execute_command("CONFIG", "SET", "convcache.max-items", 10)
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.02), "r6")
    assert info_of(r, "sc")["max"] == 2 and r.execute_command("SEMCACHE.LEN", "sc") == 2
    with pytest.raises(redis.ResponseError):
        r.execute_command("CONFIG", "SET", "convcache.max-items", 0)
    r.execute_command("CONFIG", "SET", "convcache.max-items", 100000)


def test_concurrent_writers_lose_nothing(server):
    r = server.client()
    r.execute_command("CONFIG", "SET", "convcache.max-items", 10000)
    vecs = rand_vecs(800, 16, seed=3)
    ids = [[] for _ in range(8)]

    def writer(w):
        c = server.client()
        p = c.pipeline(transaction=False)
        for i in range(100):
            p.execute_command("SEMCACHE.SET", "sc", vecs[w * 100 + i].tobytes(), f"w{w}-{i}")
        ids[w] = p.execute()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for w in ids for i in w]
    assert sorted(all_ids) == list(range(1, 801))
    assert r.execute_command("SEMCACHE.LEN", "sc") == 800
    for w in range(8):
        for i in (0, 57, 99):
            got = r.execute_command("SEMCACHE.GET", "sc", vecs[w * 100 + i].tobytes(), "MINSIM", 0.9999)
            assert got == f"w{w}-{i}".encode()


@pytest.mark.parametrize("background", [False, True])
def test_matches_numpy_reference(server, background):
    r = server.client()
    n, dim = 300, 384
    r.execute_command("CONFIG", "SET", "convcache.max-items", n)
    # A threshold of 0 sends every lookup of this bucket to the background scan.
    r.execute_command("CONFIG", "SET", "convcache.semcache-inline-bytes", 0 if background else 1 << 30)
    vecs = rand_vecs(n, dim, seed=7)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(vecs):
        p.execute_command("SEMCACHE.SET", "sc", v.tobytes(), f"r{i}")
    p.execute()
    unit = vecs.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    scans0 = int(r.info("convcache")["convcache_semcache_background_scans"])
    for q in rand_vecs(10, dim, seed=8):
        qn = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64))
        ref = unit @ qn
        order = np.argsort(-ref, kind="stable")[:20]
        out = r.execute_command("SEMCACHE.GET", "sc", q.tobytes(), "MINSIM", -1, "COUNT", 20, "WITHSCORES")
        got = [int(x[1:]) for x in out[::2]]
        scores = np.array([float(s) for s in out[1::2]])
        assert np.max(np.abs(scores - ref[got])) <= 1e-5
        assert np.max(np.abs(scores - ref[order])) <= 1e-5
        assert np.all(np.diff(scores) <= 0)
    scans = int(r.info("convcache")["convcache_semcache_background_scans"]) - scans0
    assert scans == (10 if background else 0)


def test_background_scan_sees_deletes_and_replacement(server):
    r = server.client()
    r.execute_command("CONFIG", "SET", "convcache.semcache-inline-bytes", 0)
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0), "a")
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0.1), "b")
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0), "COUNT", 2) == [b"a", b"b"]
    # In MULTI the scan runs inline (a transaction cannot block).
    p = r.pipeline(transaction=True)
    p.execute_command("SEMCACHE.GET", "sc", f32(1, 0))
    p.execute_command("SEMCACHE.DEL", "sc", 1)
    p.execute_command("SEMCACHE.GET", "sc", f32(1, 0))
    assert p.execute() == [b"a", 1, b"b"]
    r.delete("sc")
    assert r.execute_command("SEMCACHE.GET", "sc", f32(1, 0)) is None
    assert r.info("convcache")["convcache_semcache_background_scans"] >= 1


def test_info_convcache_fields(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 0, 0, 0), "a")
    r.execute_command("SEMCACHE.GET", "sc", f32(1, 0, 0, 0))
    r.execute_command("SEMCACHE.GET", "sc", f32(0, 1, 0, 0))
    info = r.info("convcache")
    assert info["convcache_semcache_lookups"] == 2
    assert info["convcache_semcache_hits"] == 1 and info["convcache_semcache_misses"] == 1
    assert float(info["convcache_semcache_hit_ratio"]) == 0.5
    assert info["convcache_semcache_entries"] == 1 and info["convcache_semcache_vector_bytes"] == 16
    assert info["convcache_semcache_buckets"] == 1
    r.delete("sc")
    info = r.info("convcache")
    assert info["convcache_semcache_entries"] == 0 and info["convcache_semcache_vector_bytes"] == 0


def test_generic_key_commands(r):
    r.execute_command("SEMCACHE.SET", "sc", f32(1, 2), "a", "META", '{"k": 1}')
    assert r.copy("sc", "sc2")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == r.execute_command("DEBUG", "DIGEST-VALUE", "sc2")
    dump = r.dump("sc")
    r.restore("sc3", 0, dump)
    assert r.execute_command("SEMCACHE.GET", "sc3", f32(1, 2)) == b"a"
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc3") == r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    r.rename("sc3", "sc4")
    assert r.execute_command("SEMCACHE.LEN", "sc4") == 1
    assert r.unlink("sc4") == 1


def test_memory_usage_close_to_raw_bytes(r):
    n, dim = 1000, 384
    r.execute_command("CONFIG", "SET", "convcache.max-items", n)
    p = r.pipeline(transaction=False)
    for v in rand_vecs(n, dim, seed=1):
        p.execute_command("SEMCACHE.SET", "sc", v.tobytes(), b"x" * 100, "EX", 0)
    p.execute()
    raw = n * (dim * 4 + 100)
    used = r.memory_usage("sc", samples=0)
    # 84 bytes of columns per entry (id, expiry, response, meta, tags, renewal, hit count,
    # last use) plus chunk headers.
    assert raw <= used <= raw + n * 96, (raw, used)
    # Within 10% of what the allocator really holds for it. DEL frees inline: with
    # lazyfree-lazy-user-del (Valkey 8+ default) a background thread frees it and INFO can
    # run before it has.
    r.config_set("lazyfree-lazy-user-del", "no")
    before = r.info("memory")["used_memory"]
    r.delete("sc")
    freed = before - r.info("memory")["used_memory"]
    assert abs(freed - used) <= 0.1 * used, (freed, used)


def test_persistence_rdb_and_aof(kind, servers):
    s = servers(kind, extra=["--appendonly", "no", "--aof-use-rdb-preamble", "no"])
    r = s.client()
    vecs = rand_vecs(40, 8, seed=5)
    for i, v in enumerate(vecs):
        r.execute_command("SEMCACHE.SET", "sc", v.tobytes(), f"r{i}", "META", f'{{"i": {i}}}', "EX", 0)
    r.execute_command("SEMCACHE.SET", "sc", vecs[0].tobytes(), "expiring", "EX", 1000)
    r.execute_command("SEMCACHE.DEL", "sc", 3)
    r.execute_command("SEMCACHE.SET", "empty", f32(1, 2, 3), "x")
    r.execute_command("SEMCACHE.DEL", "empty", 1)
    # 3,000 x 1536 is 18 MB of vectors: several 8 MB chunks in the RDB and the AOF.
    p = r.pipeline(transaction=False)
    for v in rand_vecs(3000, 1536, seed=6):
        p.execute_command("SEMCACHE.SET", "big", v.tobytes(), "r", "MAXITEMS", 3000)
    p.execute()
    r.execute_command("SEMCACHE.DEL", "big", 2999)
    keys = ("sc", "empty", "big")
    digest = {k: r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in keys}
    r.execute_command("DEBUG", "RELOAD")
    assert {k: r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in keys} == digest
    assert r.execute_command("SEMCACHE.SET", "big", rand_vecs(1, 1536)[0].tobytes(), "n") == 3001
    assert r.execute_command("SEMCACHE.SET", "sc", vecs[1].tobytes(), "new") == 42
    with pytest.raises(redis.ResponseError, match="dimension 2 does not match the cache dimension 3"):
        r.execute_command("SEMCACHE.SET", "empty", f32(1, 2), "x")
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    # AOF rewrite, then a restart that loads only the AOF.
    r.config_set("appendonly", "yes")
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_enabled"] == 1, what="aof on")
    aof_dir = os.path.join(s.dir, "appendonlydir")
    aof = b"".join(open(os.path.join(aof_dir, f), "rb").read() for f in os.listdir(aof_dir))
    assert aof.count(b"SEMCACHE._LOAD") >= 1 + 1 + 3  # headers and entry chunks
    r.execute_command("SEMCACHE.SET", "sc", vecs[2].tobytes(), "after-rewrite")
    digest = {k: r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in keys}
    r.execute_command("DEBUG", "LOADAOF")
    assert {k: r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in keys} == digest
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[2].tobytes()) == b"after-rewrite"


def test_replica_equality(kind, servers):
    primary = servers(kind, module_args=["max-items", "5"])
    rep = replica_of(servers, primary)
    r = primary.client()
    vecs = rand_vecs(12, 8, seed=9)
    for i, v in enumerate(vecs):
        r.execute_command("SEMCACHE.SET", "sc", v.tobytes(), f"r{i}", "PX", 200 if i % 3 == 0 else 100000)
    r.execute_command("SEMCACHE.DEL", "sc", 11)
    time.sleep(0.25)
    # Reclaims the expired entries and evicts the oldest: both reach the replica as decided.
    r.execute_command("SEMCACHE.SET", "sc", vecs[0].tobytes(), "late", "EX", 0)
    r.execute_command("SEMCACHE.SET", "big", vecs[0].tobytes(), "x", "MAXITEMS", 1)
    r.execute_command("SEMCACHE.SET", "big", vecs[1].tobytes(), "y")
    wait_replica_caught_up(primary, rep)
    rr = rep.client()
    for k in ("sc", "big"):
        assert rr.execute_command("DEBUG", "DIGEST-VALUE", k) == r.execute_command("DEBUG", "DIGEST-VALUE", k)
    assert rr.execute_command("SEMCACHE.GET", "sc", vecs[0].tobytes()) == b"late"
    assert rr.execute_command("SEMCACHE.LEN", "big") == 1
    # The replica answers from its own clock: an expired entry does not answer there either.
    r.execute_command("SEMCACHE.SET", "sc", vecs[5].tobytes(), "gone-soon", "PX", 150)
    wait_replica_caught_up(primary, rep)
    assert rr.execute_command("SEMCACHE.GET", "sc", vecs[5].tobytes(), "MINSIM", 0.999) == b"gone-soon"
    time.sleep(0.2)
    assert rr.execute_command("SEMCACHE.GET", "sc", vecs[5].tobytes(), "MINSIM", 0.999) is None


def test_key_specs(r):
    assert r.command_getkeys("SEMCACHE.SET", "k", "v", "r") == ["k"]
    assert r.command_getkeys("SEMCACHE.GET", "k", "v") == ["k"]
