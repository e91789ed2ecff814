"""The index of big SEMCACHE buckets (HNSW and IVF), against real Valkey 9 and Redis 7 servers."""
import os
import time

import numpy as np
import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up

DIM = 32


def clustered(n, dim=DIM, seed=0, clusters=40):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(v, seed):
    q = v + 0.03 * np.random.default_rng(seed).standard_normal(v.shape)
    return (q / np.linalg.norm(q)).astype(np.float32)


def info_of(r, key):
    info = r.execute_command("SEMCACHE.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    out = {k.decode() if isinstance(k, bytes) else k: v for k, v in info.items()}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


def fill(r, key, vecs, *extra):
    p = r.pipeline(transaction=False)
    for i, v in enumerate(vecs):
        p.execute_command("SEMCACHE.SET", key, v.tobytes(), f"r{i}", *extra)
    p.execute()


def top_ids(r, key, queries, count=1):
    out = []
    for q in queries:
        reply = r.execute_command("SEMCACHE.GET", key, q.tobytes(), "MINSIM", -1, "COUNT", count,
                                  "WITHIDS", "WITHSCORES")
        out.append([(reply[i], round(float(reply[i + 2]), 5)) for i in range(0, len(reply), 3)])
    return out


@pytest.fixture(params=["hnsw", "ivf"])
def algo(request):
    """The index algorithm of new buckets (`semcache-index-algo`)."""
    return request.param


def index_args(algo, index_min=300):
    return ["semcache-index-min", str(index_min), "semcache-ttl", "0", "semcache-index-algo", algo]


@pytest.fixture
def ix(kind, servers, algo):
    """A server that indexes buckets from 300 entries with `algo`."""
    return servers(kind, module_args=index_args(algo))


def test_index_answers_like_an_exact_scan(ix, algo):
    r = ix.client(protocol=2)
    vecs = clustered(2000)
    fill(r, "big", vecs, "MAXITEMS", 2000)
    info = info_of(r, "big")
    assert info["index"] == algo and info["index_pending"] == 0 and info["index_bytes"] > 0
    fill(r, "small", vecs[:100])
    assert info_of(r, "small")["index"] == "none"
    if algo == "ivf":
        # 32 dimensions, 40 overlapping clusters: 0.965 at the default 2 lists, 0.99 at 4.
        r.config_set("convcache.semcache-index-nprobe", 4)
    before = r.info("convcache")["convcache_semcache_index_lookups"]
    idx = np.random.default_rng(1).integers(0, 2000, 200)
    got = [ids[0][0] for ids in top_ids(r, "big", [near(vecs[i], i) for i in idx])]
    truth = [int(np.argmax(vecs @ near(vecs[i], i))) + 1 for i in idx]
    assert np.mean(np.array(got) == np.array(truth)) >= 0.99
    assert r.info("convcache")["convcache_semcache_index_lookups"] - before == 200
    # Scores are exact (re-scored with the float rows), best first, the threshold holds.
    q = near(vecs[7], 7)
    reply = top_ids(r, "big", [q], count=5)[0]
    want = sorted(((float(vecs[i - 1] @ q), i) for i, _ in reply), reverse=True)
    assert [i for _, i in want] == [i for i, _ in reply]
    assert [s for _, s in reply] == pytest.approx([s for s, _ in want], abs=1e-5)
    assert r.execute_command("SEMCACHE.GET", "big", q.tobytes(), "MINSIM", 0.9999) is None
    assert r.execute_command("SEMCACHE.GET", "big", vecs[7].tobytes(), "MINSIM", 1) == b"r7"


def test_index_follows_deletes_expiry_and_eviction(ix):
    r = ix.client(protocol=2)
    vecs = clustered(1500, seed=2)
    fill(r, "big", vecs[:1000], "MAXITEMS", 1000)
    # Eviction (oldest first), deletes and expiry: none of them ever answers again.
    fill(r, "big", vecs[1000:1200])  # evicts ids 1..200
    assert r.execute_command("SEMCACHE.DEL", "big", *range(300, 350)) == 50
    r.execute_command("SEMCACHE.SET", "big", vecs[1200].tobytes(), "soon", "PX", 100)
    gone = list(range(0, 200)) + list(range(299, 349))
    for i in gone[::10]:
        ids = [x for x, _ in top_ids(r, "big", [vecs[i]], count=3)[0]]
        assert i + 1 not in ids
    assert r.execute_command("SEMCACHE.GET", "big", vecs[1200].tobytes(), "MINSIM", 0.999) == b"soon"
    time.sleep(0.15)
    assert r.execute_command("SEMCACHE.GET", "big", vecs[1200].tobytes(), "MINSIM", 0.999) is None
    r.execute_command("SEMCACHE.SET", "big", vecs[1201].tobytes(), "x")  # reclaims the expired one
    info = info_of(r, "big")
    assert info["index_pending"] == 0 and info["stored"] == info["entries"]
    # Live entries still answer through the index.
    hits = sum(top_ids(r, "big", [vecs[i]])[0][0][0] == i + 1 for i in range(400, 1000, 6))
    assert hits >= 99


def test_index_started_on_a_full_bucket_catches_up(kind, servers, algo):
    s = servers(kind, module_args=index_args(algo, 0))
    r = s.client(protocol=2)
    vecs = clustered(600, seed=3)
    fill(r, "big", vecs[:500], "MAXITEMS", 1000)
    assert info_of(r, "big")["index"] == "none"
    r.config_set("convcache.semcache-index-min", 400)
    scans = r.info("convcache")["convcache_semcache_index_lookups"]
    # Each SET indexes up to 8 pending entries; lookups scan exactly until none is left.
    r.execute_command("SEMCACHE.SET", "big", vecs[500].tobytes(), "r500")
    info = info_of(r, "big")
    assert info["index"] == algo and info["index_pending"] == 501 - 8
    assert r.execute_command("SEMCACHE.GET", "big", vecs[3].tobytes(), "MINSIM", 1) == b"r3"
    assert r.info("convcache")["convcache_semcache_index_lookups"] == scans
    fill(r, "big", vecs[501:600])  # each SET: one new pending, 8 indexed
    assert info_of(r, "big")["index_pending"] == 0
    assert r.execute_command("SEMCACHE.GET", "big", vecs[3].tobytes(), "MINSIM", 1) == b"r3"
    assert r.info("convcache")["convcache_semcache_index_lookups"] == scans + 1
    # INDEX asks for an index on a bucket of any size.
    r.execute_command("SEMCACHE.SET", "tiny", vecs[0].tobytes(), "t", "INDEX")
    assert info_of(r, "tiny")["index"] == algo
    assert r.execute_command("SEMCACHE.GET", "tiny", vecs[0].tobytes()) == b"t"


def test_index_persistence_rdb_aof_dump(kind, servers, algo):
    s = servers(kind, module_args=index_args(algo),
                extra=["--appendonly", "no", "--aof-use-rdb-preamble", "no"])
    r = s.client(protocol=2)
    vecs = clustered(1300, seed=4)
    fill(r, "big", vecs[:1200], "MAXITEMS", 1000)
    r.execute_command("SEMCACHE.DEL", "big", *range(500, 520))
    queries = [near(vecs[i], i) for i in range(200, 1200, 7)]
    answers = top_ids(r, "big", queries, count=3)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "big")
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "big") == digest
    assert info_of(r, "big")["index"] == algo and info_of(r, "big")["index_pending"] == 0
    assert top_ids(r, "big", queries, count=3) == answers
    # DUMP / RESTORE carries the graph.
    r.restore("copy", 0, r.dump("big"))
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "copy") == digest
    assert top_ids(r, "copy", queries, count=3) == answers
    # AOF rewrite (SEMCACHE._LOAD payloads, the graph last), then a load of the AOF alone.
    r.config_set("appendonly", "yes")
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_enabled"] == 1, what="aof on")
    fill(r, "big", vecs[1200:1300])  # appended as SETs after the rewrite
    r.config_set("convcache.semcache-index-algo", "hnsw")
    fill(r, "tail", vecs[:400], "ALGO", algo, "MAXITEMS", 1000)  # a bucket born in the AOF tail keeps its ALGO
    digests = [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("big", "tail")]
    answers = top_ids(r, "big", queries, count=3)
    r.config_set("convcache.semcache-index-algo", "ivf" if algo == "hnsw" else "hnsw")
    r.execute_command("DEBUG", "LOADAOF")
    assert [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("big", "tail")] == digests
    assert info_of(r, "tail")["index"] == algo
    assert top_ids(r, "big", queries, count=3) == answers


def test_index_replica_builds_the_same_graph(kind, servers, algo):
    primary = servers(kind, module_args=index_args(algo))
    # The replica's own threshold and algorithm are never used: it follows the primary's
    # INDEX and ALGO decisions.
    rep = replica_of(servers, primary)
    rep.client().config_set("convcache.semcache-index-min", 0)
    rep.client().config_set("convcache.semcache-index-algo", "ivf" if algo == "hnsw" else "hnsw")
    r = primary.client(protocol=2)
    vecs = clustered(1400, seed=5)
    p = r.pipeline(transaction=False)
    for i, v in enumerate(vecs[:1200]):
        p.execute_command("SEMCACHE.SET", "big", v.tobytes(), f"r{i}", "MAXITEMS", 1000,
                          "PX", 300 if i % 5 == 0 else 0)
    p.execute()
    r.execute_command("SEMCACHE.DEL", "big", *range(700, 760))
    time.sleep(0.35)
    fill(r, "big", vecs[1200:1400])  # reclaims the expired entries, evicts the oldest
    wait_replica_caught_up(primary, rep)
    rr = rep.client(protocol=2)
    assert info_of(rr, "big")["index"] == algo
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "big") == \
        r.execute_command("DEBUG", "DIGEST-VALUE", "big")
    queries = [near(vecs[i], i) for i in range(0, 1400, 9)]
    assert top_ids(rr, "big", queries, count=3) == top_ids(r, "big", queries, count=3)


def test_index_bad_payloads_change_nothing(ix, algo):
    r = ix.client(protocol=2)
    vecs = clustered(400, seed=6)
    fill(r, "big", vecs)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "big")
    answers = top_ids(r, "big", [vecs[5]], count=3)
    # Version 2, kind 2 (HNSW index): parameters out of range, then a graph naming a missing
    # id; version 4, kind 3 (IVF lists): a member out of the slots, a list naming a missing id,
    # then a well-formed index of the other algorithm.
    bad = [b"\x02\x02\x01\x40\x00\x00", b"\x02\x02\x10\x40\x01\x01\x63\x00\x00",
           b"\x04\x03\x01\x01\x01\x05\x01", b"\x04\x03\x01\x01\x01\x00\x63",
           b"\x04\x03\x01\x01\x01\x00\x01" if algo == "hnsw" else b"\x02\x02\x10\x40\x01\x01\x01\x00\x00"]
    for payload in bad:
        with pytest.raises(redis.ResponseError, match="corrupt semcache payload: index"):
            r.execute_command("SEMCACHE._LOAD", "big", payload)
    with pytest.raises(redis.ResponseError, match="no semcache bucket to attach the index to"):
        r.execute_command("SEMCACHE._LOAD", "nokey", bad[1])
    with pytest.raises(redis.ResponseError, match="unknown option 'INDEXX'"):
        r.execute_command("SEMCACHE.SET", "big", vecs[0].tobytes(), "x", "INDEXX")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "big") == digest
    assert top_ids(r, "big", [vecs[5]], count=3) == answers
    assert not r.exists("nokey")


def test_algo_option_config_and_errors_change_nothing(kind, servers):
    s = servers(kind, module_args=["semcache-index-min", "300", "semcache-ttl", "0"])
    r = s.client(protocol=2)
    vecs = clustered(700, seed=12)
    with pytest.raises(redis.ResponseError, match="ALGO must be hnsw or ivf, got 'flat'"):
        r.execute_command("SEMCACHE.SET", "sc", vecs[0].tobytes(), "a", "ALGO", "flat")
    with pytest.raises(redis.ResponseError):
        r.execute_command("SEMCACHE.SET", "sc", vecs[0].tobytes(), "a", "ALGO")
    assert r.exists("sc") == 0
    # The first SET fixes the algorithm (before the bucket has an index); INFO shows it.
    fill(r, "sc", vecs[:200], "ALGO", "IVF", "MAXITEMS", 1000)
    assert (info_of(r, "sc")["algo"], info_of(r, "sc")["index"]) == ("ivf", "none")
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    with pytest.raises(redis.ResponseError,
                       match="ALGO hnsw differs from the cache's index algorithm ivf"):
        r.execute_command("SEMCACHE.SET", "sc", vecs[200].tobytes(), "b", "ALGO", "hnsw")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    fill(r, "sc", vecs[200:700])  # without ALGO: the bucket's own, index from 300 entries
    info = info_of(r, "sc")
    assert (info["algo"], info["index"], info["index_pending"]) == ("ivf", "ivf", 0)
    hits = sum(top_ids(r, "sc", [near(vecs[i], i)])[0][0][0] == i + 1 for i in range(0, 700, 7))
    assert hits >= 98
    # semcache-index-algo: new buckets only; a bad value is refused.
    assert r.config_get("convcache.semcache-index-algo") == {"convcache.semcache-index-algo": "ivf"}
    with pytest.raises(redis.ResponseError, match="index algorithm 'flat' is not 'hnsw' or 'ivf'"):
        r.config_set("convcache.semcache-index-algo", "flat")
    r.config_set("convcache.semcache-index-algo", "ivf")
    fill(r, "new", vecs[:3])
    assert info_of(r, "new")["algo"] == "ivf"
    assert info_of(r, "sc")["algo"] == "ivf"
    r.config_set("convcache.semcache-index-algo", "hnsw")
    fill(r, "old", vecs[:3])
    assert info_of(r, "old")["algo"] == "hnsw"
    with pytest.raises(redis.ResponseError):
        r.config_set("convcache.semcache-index-nprobe", 0)
    r.config_set("convcache.semcache-index-nprobe", 64)  # every list: the exact int8 ranking
    assert top_ids(r, "sc", [vecs[9]])[0][0][0] == 10


# ---- TAG / FILTER ----

def fill_users(r, key, vecs, users=5, *extra):
    p = r.pipeline(transaction=False)
    for i, v in enumerate(vecs):
        p.execute_command("SEMCACHE.SET", key, v.tobytes(), f"r{i}", "TAG", "user", f"u{i % users}",
                          "TAG", "model", "m1" if i % 2 else "m2", *extra)
    p.execute()


@pytest.mark.parametrize("shape", ["inline", "background", "index"])
def test_filter_never_answers_outside(ix, algo, shape):
    r = ix.client(protocol=2)
    vecs = clustered(600 if shape == "index" else 200, seed=7)
    if shape == "background":
        r.config_set("convcache.semcache-inline-bytes", 0)  # every lookup on a worker
    fill_users(r, "sc", vecs, 5, "MAXITEMS", 1000)
    assert info_of(r, "sc")["index"] == (algo if shape == "index" else "none")
    for i in range(0, len(vecs), 17):
        u = f"u{(i + 1) % 5}"  # the nearest entry (vecs[i] itself) belongs to another user
        reply = r.execute_command("SEMCACHE.GET", "sc", vecs[i].tobytes(), "MINSIM", -1, "COUNT", 4,
                                  "WITHIDS", "FILTER", "user", u)
        ids = reply[::2]
        assert len(ids) == 4 and all((x - 1) % 5 == (i + 1) % 5 for x in ids), (i, ids)
        want = sorted(range((i + 1) % 5, len(vecs), 5), key=lambda j: -float(vecs[j] @ vecs[i]))[:4]
        assert ids[0] == want[0] + 1
        # Two pairs: both must hold.
        both = r.execute_command("SEMCACHE.GET", "sc", vecs[i].tobytes(), "MINSIM", -1, "COUNT", 3,
                                 "WITHIDS", "FILTER", "user", u, "FILTER", "model", "m1")
        assert all((x - 1) % 5 == (i + 1) % 5 and (x - 1) % 2 == 1 for x in both[::2])
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[0].tobytes(), "MINSIM", -1,
                             "FILTER", "user", "nobody") is None
    # The same vector, unfiltered, answers itself.
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[3].tobytes(), "MINSIM", 1) == b"r3"


def test_del_filter_replicates_persists_and_refuses_bad_input(kind, servers):
    primary = servers(kind, module_args=["semcache-index-min", "300", "semcache-ttl", "0"])
    rep = replica_of(servers, primary)
    r = primary.client(protocol=2)
    vecs = clustered(500, seed=8)
    fill_users(r, "sc", vecs, 5, "MAXITEMS", 1000)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    bad = [
        (("SEMCACHE.SET", "sc", vecs[0].tobytes(), "x", "TAG", "user"), "TAG needs a name and a value"),
        (("SEMCACHE.SET", "sc", vecs[0].tobytes(), "x", "TAG", "", "v"), "TAG name must not be empty"),
        (("SEMCACHE.SET", "sc", vecs[0].tobytes(), "x", "TAG", "n" * 257, "v"), "TAG name is longer"),
        (("SEMCACHE.GET", "sc", vecs[0].tobytes(), "FILTER", "user"), "FILTER needs a name and a value"),
        (("SEMCACHE.GET", "sc", vecs[0].tobytes(), "FILTER"), "FILTER needs a value"),
        (("SEMCACHE.DEL", "sc", "FILTER", "user"), "FILTER needs a name and a value"),
        (("SEMCACHE.DEL", "sc", "FILTER", "user", "u1", "BOGUS"), "unknown option 'BOGUS'"),
        (("SEMCACHE.DEL", "sc", "FILTER", "", "u1"), "FILTER name must not be empty"),
    ]
    for args, msg in bad:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command(*args)
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    assert r.execute_command("SEMCACHE.DEL", "sc", "FILTER", "user", "u2") == 100
    assert r.execute_command("SEMCACHE.DEL", "sc", "FILTER", "user", "u2") == 0
    assert r.execute_command("SEMCACHE.DEL", "sc", "FILTER", "user", "u3", "FILTER", "model", "m1") == 50
    assert r.execute_command("SEMCACHE.LEN", "sc") == 350
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[2].tobytes(), "MINSIM", -1,
                             "FILTER", "user", "u2") is None
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[8].tobytes(), "MINSIM", 1,
                             "FILTER", "user", "u3") == b"r8"  # m2: kept
    wait_replica_caught_up(primary, rep)
    rr = rep.client(protocol=2)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    # Tags survive RDB (DEBUG RELOAD) and DUMP/RESTORE.
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    r.restore("copy", 0, r.dump("sc"))
    for key in ("sc", "copy"):
        reply = r.execute_command("SEMCACHE.GET", key, vecs[4].tobytes(), "MINSIM", -1, "COUNT", 5,
                                  "WITHIDS", "FILTER", "user", "u4")
        assert all((x - 1) % 5 == 4 for x in reply[::2]) and len(reply) == 10


# ---- PROMPT ----

def test_prompt_upsert_and_exact_path(kind, servers):
    primary = servers(kind, module_args=["semcache-ttl", "0"])
    rep = replica_of(servers, primary)
    r = primary.client(protocol=2)
    vecs = clustered(20, seed=9)
    assert r.execute_command("SEMCACHE.SET", "sc", vecs[0].tobytes(), "paris", "PROMPT", "capital of France?",
                             "TAG", "user", "u1") == 1
    r.execute_command("SEMCACHE.SET", "sc", vecs[1].tobytes(), "other", "PROMPT", "something else")
    # Same prompt again: replaces the older entry (upsert), whatever its vector.
    assert r.execute_command("SEMCACHE.SET", "sc", vecs[2].tobytes(), "Paris", "PROMPT", "capital of France?",
                             "TAG", "user", "u1") == 3
    assert r.execute_command("SEMCACHE.LEN", "sc") == 2
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[0].tobytes(), "MINSIM", 0.9999) is None  # id 1 gone
    # The exact path: the prompt answers with score 1 even for a far vector.
    hits = r.info("convcache")["convcache_semcache_prompt_hits"]
    far = (-vecs[2]).tobytes()
    out = r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "capital of France?", "WITHSCORES", "WITHIDS")
    assert out[:2] == [3, b"Paris"] and float(out[2]) == 1.0
    assert r.info("convcache")["convcache_semcache_prompt_hits"] == hits + 1
    # Not that prompt: the vector search runs; outside the FILTER: no exact answer.
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "capital of Spain?") is None
    assert r.execute_command("SEMCACHE.GET", "sc", vecs[1].tobytes(), "PROMPT", "nope") == b"other"
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "capital of France?",
                             "FILTER", "user", "u2") is None
    # An expired prompt entry does not answer.
    r.execute_command("SEMCACHE.SET", "sc", vecs[4].tobytes(), "brief", "PROMPT", "short-lived", "PX", 100)
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "short-lived") == b"brief"
    time.sleep(0.15)
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "short-lived") is None
    for args, msg in [
        (("SEMCACHE.SET", "sc", vecs[5].tobytes(), "x", "PROMPT", ""), "PROMPT must not be empty"),
        (("SEMCACHE.SET", "sc", vecs[5].tobytes(), "x", "PROMPT"), "PROMPT needs a value"),
        (("SEMCACHE.GET", "sc", vecs[5].tobytes(), "PROMPT", "a" * 70000), "PROMPT is longer than"),
    ]:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command(*args)
    # Replicas apply the upsert as decided (DEL of the old id, then SET); persisted.
    r.execute_command("SEMCACHE.SET", "sc", vecs[6].tobytes(), "other v2", "PROMPT", "something else")
    wait_replica_caught_up(primary, rep)
    rr = rep.client(protocol=2)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    assert rr.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "something else") == b"other v2"
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    assert r.execute_command("SEMCACHE.GET", "sc", far, "PROMPT", "capital of France?") == b"Paris"


# ---- TOUCH ----

def test_touch_renews_by_the_original_ttl(kind, servers):
    primary = servers(kind, module_args=["semcache-ttl", "0", "semcache-index-min", "50"])
    rep = replica_of(servers, primary)
    r = primary.client(protocol=2)
    vecs = clustered(120, seed=10)
    fill(r, "big", vecs[:100], "MAXITEMS", 1000)  # indexed: TOUCH goes through the index too
    r.execute_command("SEMCACHE.SET", "big", vecs[100].tobytes(), "touched", "PX", 600)
    r.execute_command("SEMCACHE.SET", "big", vecs[101].tobytes(), "untouched", "PX", 600)
    r.execute_command("SEMCACHE.SET", "big", vecs[102].tobytes(), "custom", "PX", 600, "RENEW", 5000)
    assert info_of(r, "big")["index"] == "ivf"
    time.sleep(0.4)
    q = lambda i, *x: r.execute_command("SEMCACHE.GET", "big", vecs[i].tobytes(), "MINSIM", 0.999, *x)
    assert q(100, "TOUCH") == b"touched"
    assert q(101) == b"untouched"  # a plain GET renews nothing
    assert q(102, "TOUCH") == b"custom"
    assert q(5, "TOUCH") == b"r5"  # no expiry: nothing to renew
    wait_replica_caught_up(primary, rep)
    rr = rep.client(protocol=2)
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "big") == r.execute_command("DEBUG", "DIGEST-VALUE", "big")
    # On a replica TOUCH answers but renews nothing (the primary decides).
    assert rr.execute_command("SEMCACHE.GET", "big", vecs[101].tobytes(), "MINSIM", 0.999, "TOUCH") == b"untouched"
    time.sleep(0.35)  # 750 ms after the SETs: 350 ms after the renewal
    assert q(100) == b"touched" and q(101) is None and q(102) == b"custom"
    assert rr.execute_command("SEMCACHE.GET", "big", vecs[100].tobytes(), "MINSIM", 0.999) == b"touched"
    assert rr.execute_command("SEMCACHE.GET", "big", vecs[101].tobytes(), "MINSIM", 0.999) is None
    time.sleep(0.4)
    assert q(100) is None and q(102) == b"custom"
    # Inside MULTI (no blocking) it works the same.
    r.execute_command("SEMCACHE.SET", "small", vecs[0].tobytes(), "m", "PX", 400)
    p = r.pipeline(transaction=True)
    p.execute_command("SEMCACHE.GET", "small", vecs[0].tobytes(), "TOUCH")
    assert p.execute() == [b"m"]
    with pytest.raises(redis.ResponseError, match="RENEW must be between"):
        r.execute_command("SEMCACHE.SET", "small", vecs[0].tobytes(), "x", "RENEW", -1)
    with pytest.raises(redis.ResponseError, match="pxat is not an integer"):
        r.execute_command("SEMCACHE._TOUCH", "small", 1, "soon")
    # The renewal survives a reload (the duration is persisted).
    r.execute_command("DEBUG", "RELOAD")
    r.execute_command("SEMCACHE.SET", "small", vecs[1].tobytes(), "n", "PX", 300)
    time.sleep(0.2)
    assert r.execute_command("SEMCACHE.GET", "small", vecs[1].tobytes(), "TOUCH") == b"n"
    time.sleep(0.2)
    assert r.execute_command("SEMCACHE.GET", "small", vecs[1].tobytes()) == b"n"


# ---- EVICT / hit counts / latency ----

@pytest.mark.parametrize("policy,evicted", [("fifo", 1), ("lru", 2), ("lfu", 3)])
def test_evict_policies_replicate_their_decisions(kind, servers, policy, evicted):
    primary = servers(kind, module_args=["semcache-ttl", "0"])
    rep = replica_of(servers, primary)
    r = primary.client(protocol=2)
    vecs = clustered(6, seed=11)
    for i in range(3):
        r.execute_command("SEMCACHE.SET", "sc", vecs[i].tobytes(), f"r{i}", "MAXITEMS", 3, "EVICT", policy)
    get = lambda i, *x: r.execute_command("SEMCACHE.GET", "sc", vecs[i].tobytes(), "MINSIM", 0.999, *x)
    # Reads: id 1 four times, id 3 twice, id 2 never (WITHHITS counts this lookup too).
    get(0), get(0), get(2), get(0)
    assert get(0, "WITHHITS", "WITHIDS") == [1, b"r0", 4]
    assert get(2, "WITHHITS") == [b"r2", 2]
    # fifo drops the oldest (1), lru the least recently used (2, never read); for lfu,
    # id 2 gets the most hits, so the fewest are id 3's.
    if policy == "lfu":
        for _ in range(5):
            get(1)
    r.execute_command("SEMCACHE.SET", "sc", vecs[3].tobytes(), "new")
    ids = sorted(x for x in (get(i, "WITHIDS") for i in range(4)) if x for x in x[:1])
    assert evicted not in ids and len(ids) == 3
    assert info_of(r, "sc")["evict"] == policy
    wait_replica_caught_up(primary, rep)
    rr = rep.client(protocol=2)
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "sc") == r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    assert info_of(rr, "sc")["evict"] == policy
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    with pytest.raises(redis.ResponseError, match="EVICT must be lru, lfu or fifo, got 'random'"):
        r.execute_command("SEMCACHE.SET", "sc", vecs[4].tobytes(), "x", "EVICT", "random")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    r.execute_command("DEBUG", "RELOAD")
    assert info_of(r, "sc")["evict"] == policy


def test_hit_and_miss_latency_in_info(r):
    r.execute_command("SEMCACHE.SET", "sc", np.float32([1, 0]).tobytes(), "x")
    r.execute_command("SEMCACHE.GET", "sc", np.float32([1, 0]).tobytes())
    r.execute_command("SEMCACHE.GET", "sc", np.float32([0, 1]).tobytes())
    info = r.info("convcache")
    assert float(info["convcache_semcache_hit_latency_us"]) > 0
    assert float(info["convcache_semcache_miss_latency_us"]) > 0


# ---- exact filtered lookups (posting lists) ----

def exact_best(vecs, owners, q, user, count):
    """The ids (1-based) of the `count` best entries of `user`, by an exact numpy scan."""
    idx = np.flatnonzero(owners == user)
    scores = vecs[idx] @ q
    order = np.lexsort((-idx, -scores))  # best score first, ties: newer first
    return [int(idx[j]) + 1 for j in order[:count]]


def test_filtered_lookups_are_exact_at_every_selectivity(kind, servers):
    """A bucket with an index, users owning 0.1%, 1%, 10% and 50% of 6,000 entries: every
    filtered lookup answers what an exact scan of that user's entries answers, also after
    DEBUG RELOAD, DEL FILTER and on a replica (posting lists are rebuilt from the entries)."""
    primary = servers(kind, module_args=["semcache-index-min", "500", "semcache-ttl", "0"])
    rep = replica_of(servers, primary)
    r = primary.client(protocol=2)
    n = 6000
    vecs = clustered(n, seed=11)
    rng = np.random.default_rng(3)
    shares = {"tiny": 0.001, "small": 0.01, "mid": 0.1, "big": 0.5}
    draw = rng.random(n)
    owners = np.full(n, "rest", dtype=object)
    edge = 0.0
    for user, share in shares.items():
        owners[(draw >= edge) & (draw < edge + share)] = user
        edge += share
    p = r.pipeline(transaction=False)
    for i, v in enumerate(vecs):
        p.execute_command("SEMCACHE.SET", "sc", v.tobytes(), f"r{i}", "TAG", "user", owners[i],
                          "MAXITEMS", n)
    p.execute()
    wait_for(lambda: info_of(r, "sc")["index_pending"] == 0, timeout=30)
    assert info_of(r, "sc")["index"] != "none"
    # Fresh queries (far from every entry's own vector) are where an index misses.
    queries = [near(clustered(1, seed=100 + j)[0], j) for j in range(40)]

    def check(client, users):
        for user in users:
            for q in queries:
                reply = client.execute_command("SEMCACHE.GET", "sc", q.tobytes(), "MINSIM", -1,
                                               "COUNT", 3, "WITHIDS", "FILTER", "user", user)
                got = [int(x) for x in (reply or [])[::2]]
                assert got == exact_best(vecs, owners, q, user, 3), (user, got)

    check(r, shares)
    before = r.info("convcache")["convcache_semcache_posted_lookups"]
    assert before > 0, "selective filters take the posting lists"
    r.execute_command("DEBUG", "RELOAD")
    check(r, shares)
    # DEL FILTER drops a user's entries from its posting list with them.
    assert r.execute_command("SEMCACHE.DEL", "sc", "FILTER", "user", "small") == int(
        (owners == "small").sum())
    assert r.execute_command("SEMCACHE.GET", "sc", queries[0].tobytes(), "MINSIM", -1,
                             "FILTER", "user", "small") is None
    owners[owners == "small"] = "gone"
    check(r, ["tiny", "mid"])
    wait_replica_caught_up(primary, rep)
    assert rep.client().execute_command("DEBUG", "DIGEST-VALUE", "sc") == \
        r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    check(rep.client(protocol=2), ["tiny", "mid", "big"])
