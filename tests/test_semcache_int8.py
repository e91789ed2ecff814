"""SEMCACHE.SET ... QUANT int8: buckets of int8 vectors, against real Valkey 9 and Redis 7."""
import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up
from payloads import parse_module_value, split_dump
from test_semindex import clustered, fill, info_of, near, top_ids

DIM = 256


def scores_of(r, key, queries):
    out = []
    for q in queries:
        rep = r.execute_command("SEMCACHE.GET", key, q.tobytes(), "MINSIM", -1, "WITHIDS",
                                "WITHSCORES")
        out.append((rep[0], float(rep[2])))
    return out


def test_int8_bucket_is_smaller_and_answers_like_float32(kind, servers):
    r = servers(kind, module_args=["semcache-ttl", "0"]).client(protocol=2)
    vecs = clustered(400, dim=DIM, seed=11)
    fill(r, "f32", vecs, "MAXITEMS", 400)
    fill(r, "i8", vecs, "QUANT", "int8", "MAXITEMS", 400)
    f, i = info_of(r, "f32"), info_of(r, "i8")
    assert (f["quant"], i["quant"]) == ("float32", "int8")
    assert f["vector_bytes"] == 400 * DIM * 4
    assert i["vector_bytes"] == 400 * (DIM + 4)  # <= 0.3x
    # MEMORY USAGE shows the smaller vectors.
    assert r.memory_usage("i8") < 0.4 * r.memory_usage("f32")
    queries = [near(vecs[k], k) for k in range(0, 400, 4)]
    want, got = scores_of(r, "f32", queries), scores_of(r, "i8", queries)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert max(abs(g[1] - w[1]) for g, w in zip(got, want)) < 0.01
    # A stored vector finds itself at (nearly) 1.
    assert r.execute_command("SEMCACHE.GET", "i8", vecs[7].tobytes(), "MINSIM", 0.999) == b"r7"


def test_quant_errors_change_nothing(kind, servers):
    r = servers(kind).client(protocol=2)
    v = clustered(3, dim=8)
    with pytest.raises(redis.ResponseError, match="QUANT must be float32 or int8, got 'int4'"):
        r.execute_command("SEMCACHE.SET", "sc", v[0].tobytes(), "a", "QUANT", "int4")
    with pytest.raises(redis.ResponseError):
        r.execute_command("SEMCACHE.SET", "sc", v[0].tobytes(), "a", "QUANT")
    assert r.exists("sc") == 0
    assert r.execute_command("SEMCACHE.SET", "sc", v[0].tobytes(), "a", "QUANT", "INT8") == 1
    # A later QUANT of another kind: refused, nothing changes; the same kind is accepted.
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    with pytest.raises(redis.ResponseError,
                       match="QUANT float32 differs from the cache's vector kind int8"):
        r.execute_command("SEMCACHE.SET", "sc", v[1].tobytes(), "b", "QUANT", "float32")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    assert info_of(r, "sc")["next_id"] == 2
    assert r.execute_command("SEMCACHE.SET", "sc", v[1].tobytes(), "b", "QUANT", "int8") == 2
    assert r.execute_command("SEMCACHE.SET", "sc", v[2].tobytes(), "c") == 3  # kept without QUANT
    assert info_of(r, "sc")["quant"] == "int8"
    # A float32 bucket refuses int8 likewise; QUANT float32 is its default.
    r.execute_command("SEMCACHE.SET", "f", v[0].tobytes(), "a")
    with pytest.raises(redis.ResponseError, match="QUANT int8 differs"):
        r.execute_command("SEMCACHE.SET", "f", v[1].tobytes(), "b", "QUANT", "int8")
    assert r.execute_command("SEMCACHE.SET", "f", v[1].tobytes(), "b", "QUANT", "float32") == 2
    assert r.execute_command("SEMCACHE.LEN", "f") == 2


def test_int8_persists_rdb_aof_dump(kind, servers):
    s = servers(kind, module_args=["semcache-index-min", "300", "semcache-ttl", "0"],
                extra=["--appendonly", "no", "--aof-use-rdb-preamble", "no"])
    r = s.client(protocol=2)
    vecs = clustered(900, dim=64, seed=5)
    fill(r, "big", vecs[:800], "MAXITEMS", 700, "QUANT", "int8", "TAG", "t", "x", "ALGO", "hnsw")
    r.execute_command("SEMCACHE.DEL", "big", *range(300, 310))
    info = info_of(r, "big")
    assert (info["quant"], info["index"], info["index_pending"]) == ("int8", "hnsw", 0)
    queries = [near(vecs[i], i) for i in range(100, 800, 9)]
    answers = top_ids(r, "big", queries, count=3)
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "big")
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "big") == digest
    assert info_of(r, "big")["quant"] == "int8"
    assert top_ids(r, "big", queries, count=3) == answers
    r.restore("copy", 0, r.dump("big"))
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "copy") == digest
    assert top_ids(r, "copy", queries, count=3) == answers
    r.config_set("appendonly", "yes")
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_enabled"] == 1, what="aof on")
    fill(r, "big", vecs[800:900])  # appended as SETs (carrying QUANT int8) after the rewrite
    fill(r, "fresh", vecs[:5], "QUANT", "int8")  # a bucket born in the AOF tail
    digests = [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("big", "fresh")]
    answers = top_ids(r, "big", queries, count=3)
    r.execute_command("DEBUG", "LOADAOF")
    assert [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("big", "fresh")] == digests
    assert info_of(r, "fresh")["quant"] == "int8"
    assert top_ids(r, "big", queries, count=3) == answers


def test_int8_replicates_its_kind(kind, servers):
    primary = servers(kind, module_args=["semcache-index-min", "200", "semcache-ttl", "0"])
    rep = replica_of(servers, primary)
    r, rr = primary.client(protocol=2), rep.client(protocol=2)
    vecs = clustered(400, dim=48, seed=9)
    fill(r, "sc", vecs[:300], "QUANT", "int8", "MAXITEMS", 250)
    fill(r, "sc", vecs[300:])  # later SETs without QUANT replicate the bucket's kind
    wait_replica_caught_up(primary, rep)
    assert info_of(rr, "sc")["quant"] == "int8"
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "sc") == \
        r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    queries = [near(vecs[i], i) for i in range(150, 400, 10)]
    assert top_ids(rr, "sc", queries, count=2) == top_ids(r, "sc", queries, count=2)


def test_int8_load_payload_kind_is_checked(kind, servers):
    """An entries payload of int8 rows cannot continue a float32 bucket (and back)."""
    r = servers(kind, module_args=["semcache-ttl", "0"]).client(protocol=2)
    vecs = clustered(4, dim=8)
    fill(r, "i8", vecs, "QUANT", "int8")
    fill(r, "f32", vecs)
    r.config_set("rdbcompression", "no")  # DUMP strings stay parseable
    i8 = parse_module_value(split_dump(r.dump("i8"))[0])[1]
    f32 = parse_module_value(split_dump(r.dump("f32"))[0])[1]
    r.execute_command("SEMCACHE._LOAD", "x", f32[0])
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "x")
    with pytest.raises(redis.ResponseError, match="vector kind int8 does not match"):
        r.execute_command("SEMCACHE._LOAD", "x", i8[1])
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "x") == digest
    r.execute_command("SEMCACHE._LOAD", "y", i8[0])
    with pytest.raises(redis.ResponseError, match="vector kind float32 does not match"):
        r.execute_command("SEMCACHE._LOAD", "y", f32[1])
    r.execute_command("SEMCACHE._LOAD", "y", i8[1])
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "y") == \
        r.execute_command("DEBUG", "DIGEST-VALUE", "i8")
