"""URLEMB.* against real Valkey 9 and Redis 7 servers with the module loaded."""
import time

import numpy as np
import pytest
import redis

from harness import replica_of, wait_replica_caught_up


def vec(*xs):
    return np.asarray(xs, dtype=np.float32).tobytes()


def test_round_trip_through_plain_get(r):
    v = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    assert r.execute_command("URLEMB.SET", "u:1", v.tobytes()) == b"OK"
    assert r.get("u:1") == v.tobytes()
    assert np.array_equal(np.frombuffer(r.execute_command("URLEMB.GET", "u:1"), dtype=np.float32), v)
    assert r.execute_command("URLEMB.GET", "missing") is None
    assert r.type("u:1") == b"string"
    # Default TTL is the urlemb-ttl config (one day).
    assert 86390 <= r.ttl("u:1") <= 86400


def test_ttl_options(r):
    r.execute_command("URLEMB.SET", "a", vec(1, 2), "EX", 100)
    assert 95 <= r.ttl("a") <= 100
    r.execute_command("URLEMB.SET", "a", vec(1, 2), "EX", 0)
    assert r.ttl("a") == -1
    r.execute_command("CONFIG", "SET", "convcache.urlemb-ttl", 7)
    r.execute_command("URLEMB.MSET", "b", vec(1), "c", vec(2))
    assert 1 <= r.ttl("b") <= 7 and 1 <= r.ttl("c") <= 7
    r.execute_command("URLEMB.SET", "d", vec(1), "EX", 1)
    time.sleep(1.1)
    assert r.execute_command("URLEMB.GET", "d") is None


def test_mset_mget(r):
    assert r.execute_command("URLEMB.MSET", "a", vec(1, 2), "b", vec(3, 4, 5)) == b"OK"
    assert r.execute_command("URLEMB.MGET", "a", "nope", "b") == [vec(1, 2), None, vec(3, 4, 5)]
    info = r.info("convcache")
    assert info["convcache_urlemb_hits"] == 2 and info["convcache_urlemb_misses"] == 1


def test_errors_change_nothing(r):
    r.execute_command("URLEMB.SET", "a", vec(1, 2))
    for args, msg in [
        (("URLEMB.SET", "a", vec(0, 0)), "vector: vector has zero norm"),
        (("URLEMB.SET", "a", vec(1, float("nan"))), "NaN or Inf at index 1"),
        (("URLEMB.SET", "a", b"abcde"), "not a multiple of 4"),
        (("URLEMB.SET", "a", b""), "vector is empty"),
        (("URLEMB.SET", "a", vec(1), "EX", -5), "EX must be between"),
        (("URLEMB.SET", "a", vec(1), "NX"), "unknown option 'NX'"),
        (("URLEMB.MSET", "a", vec(5), "b", vec(float("inf"))), "vector 2: vector holds NaN or Inf"),
    ]:
        with pytest.raises(redis.ResponseError, match=msg):
            r.execute_command(*args)
    assert r.get("a") == vec(1, 2) and r.exists("b") == 0
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("URLEMB.MSET", "a", vec(1), "b")
    r.lpush("list", "x")
    for args in (("URLEMB.GET", "list"), ("URLEMB.SET", "list", vec(1)),
                 ("URLEMB.MSET", "a", vec(9), "list", vec(1))):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            r.execute_command(*args)
    assert r.get("a") == vec(1, 2)
    r.set("text", "hello")  # 5 bytes: not float32s
    with pytest.raises(redis.ResponseError, match="value of 'text' is not a float32 vector"):
        r.execute_command("URLEMB.GET", "text")


def test_mget_answers_nil_for_other_types(r):
    """Like MGET: a key of another type is nil for that key, the others still answer."""
    r.execute_command("URLEMB.SET", "a", vec(1, 2))
    r.lpush("list", "x")
    r.hset("hash", "f", "v")
    r.execute_command("SEMCACHE.SET", "sc", vec(1, 0), "resp")
    assert r.mget("a", "list", "missing") == [vec(1, 2), None, None]
    assert r.execute_command("URLEMB.MGET", "list", "a", "hash", "missing", "sc") == \
        [None, vec(1, 2), None, None, None]
    info = r.info("convcache")
    assert info["convcache_urlemb_hits"] == 1 and info["convcache_urlemb_misses"] == 4
    assert r.execute_command("URLEMB.MGET", "list") == [None]
    # URLEMB.GET of one key keeps answering WRONGTYPE, as GET does.
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.execute_command("URLEMB.GET", "list")
    # A string that is not a vector still fails the whole command, naming the key, and
    # counts nothing.
    r.set("text", "hello")
    with pytest.raises(redis.ResponseError, match="value of 'text' is not a float32 vector"):
        r.execute_command("URLEMB.MGET", "a", "list", "text")
    info = r.info("convcache")
    assert info["convcache_urlemb_hits"] == 1 and info["convcache_urlemb_misses"] == 5


def test_key_specs(r):
    assert r.command_getkeys("URLEMB.MSET", "a", "v", "b", "w") == ["a", "b"]
    assert r.command_getkeys("URLEMB.MGET", "a", "b", "c") == ["a", "b", "c"]
    assert r.command_getkeys("URLEMB.SET", "a", "v") == ["a"]


def test_replica_gets_absolute_expiry(kind, servers):
    primary = servers(kind)
    rep = replica_of(servers, primary)
    r = primary.client()
    r.execute_command("URLEMB.SET", "a", vec(1, 2), "EX", 500)
    r.execute_command("URLEMB.MSET", "b", vec(3), "c", vec(4))
    r.execute_command("URLEMB.SET", "d", vec(5), "EX", 0)
    wait_replica_caught_up(primary, rep)
    rr = rep.client()
    for k in ("a", "b", "c", "d"):
        assert rr.get(k) == r.get(k)
        assert rr.pexpiretime(k) == r.pexpiretime(k)
    assert rr.pexpiretime("d") == -1
