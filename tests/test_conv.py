"""CONV.* against real Valkey 9 and Redis 7 servers with the module loaded."""
import json
import struct

import pytest
import redis

from conftest import MEMORY_ONLY
from harness import replica_of, wait_replica_caught_up


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def ctx(r, key, *opts):
    return json.loads(r.execute_command("CONV.CTX", key, *opts))


def test_add_returns_sequence_and_ctx_returns_window(r):
    for i in range(1, 8):
        assert r.execute_command("CONV.ADD", "s", "user" if i % 2 else "assistant", f"m{i}") == i
    msgs = ctx(r, "s")
    assert [m["content"] for m in msgs] == ["m3", "m4", "m5", "m6", "m7"]  # window 5
    assert msgs[0] == {"role": "user", "content": "m3"}
    assert [m["content"] for m in ctx(r, "s", "COUNT", 2)] == ["m6", "m7"]
    assert r.execute_command("CONV.LEN", "s") == 7
    assert len(ctx(r, "s", "COUNT", 100)) == 7


def test_missing_key_gives_empty_results(r):
    assert ctx(r, "nope") == []
    assert json.loads(r.execute_command("CONV.HISTORY", "nope")) == []
    assert r.execute_command("CONV.LEN", "nope") == 0
    assert r.execute_command("CONV.INFO", "nope") is None
    assert r.execute_command("CONV.CLEAR", "nope") == 0
    assert r.execute_command("CONV.DEL", "nope") == 0
    assert r.exists("nope") == 0


def test_formats_full_text_resp(r):
    r.execute_command("CONV.ADD", "s", "user", "hi", "META", '{"lang": "en"}', "TS", 1000)
    r.execute_command("CONV.ADD", "s", "assistant", "hello", "TS", 2000)
    full = ctx(r, "s", "FORMAT", "full")
    assert full == [
        {"seq": 1, "ts": 1000, "role": "user", "content": "hi", "meta": {"lang": "en"}, "tokens": 1},
        {"seq": 2, "ts": 2000, "role": "assistant", "content": "hello", "meta": {}, "tokens": 2},
    ]
    assert r.execute_command("CONV.CTX", "s", "FORMAT", "text") == b"user: hi\nassistant: hello"
    resp = r.execute_command("CONV.CTX", "s", "FORMAT", "resp")
    assert resp[0][:4] == [1, 1000, b"user", b"hi"]
    assert json.loads(resp[0][4]) == {"lang": "en"}
    assert resp[1][4] is None
    # Then tokens, name, tool_call_id, tool_calls (nil when the turn has none).
    assert resp[0][5:] == [1, None, None, None]
    r.execute_command("CONV.ADD", "s", "tool", "x", "NAME", "f", "TOOL_CALL_ID", "c",
                      "TOOL_CALLS", "[ 1 ]")
    last = r.execute_command("CONV.CTX", "s", "COUNT", 1, "FORMAT", "resp")[0]
    assert last[5:] == [1, b"f", b"c", b"[1]"]


def test_server_clock_timestamp(r):
    import time
    before = int(time.time() * 1000)
    r.execute_command("CONV.ADD", "s", "user", "x")
    after = int(time.time() * 1000)
    assert before - 5 <= ctx(r, "s", "FORMAT", "full")[0]["ts"] <= after + 5


def test_tokens_budget_keeps_newest(r):
    for i in range(5):
        r.execute_command("CONV.ADD", "s", "user", "x" * 40 + str(i))  # 41 bytes: 11 + 4 tokens
    assert [m["content"][-1] for m in ctx(r, "s", "TOKENS", 30)] == ["3", "4"]
    assert ctx(r, "s", "TOKENS", 5) == []
    assert len(ctx(r, "s", "TOKENS", 10_000)) == 5


def test_history_range(r):
    for i in range(12):
        r.execute_command("CONV.ADD", "s", "user", f"m{i + 1}")
    h = json.loads(r.execute_command("CONV.HISTORY", "s", "FORMAT", "full"))
    assert [m["seq"] for m in h] == list(range(1, 13))
    h = json.loads(r.execute_command("CONV.HISTORY", "s", "FROM", 3, "TO", 6, "FORMAT", "full"))
    assert [m["seq"] for m in h] == [3, 4, 5, 6]


def info_of(r, key):
    info = r.execute_command("CONV.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in info.items()}


def test_info_fields(r):
    for i in range(7):
        r.execute_command("CONV.ADD", "s", "user", f"m{i}")
    info = info_of(r, "s")
    assert info["window"] == 5
    assert info["len"] == 7
    assert info["hot"] + info["archived"] == 7
    assert info["first_seq"] == 1 and info["last_seq"] == 7
    assert info["memory_bytes"] > 0
    assert info["created_ms"] <= info["last_access_ms"]


def test_info_is_a_map_in_resp3(server):
    r3 = server.client(protocol=3)
    r3.execute_command("CONV.ADD", "s", "user", "x")
    info = r3.execute_command("CONV.INFO", "s")
    assert isinstance(info, dict) and info[b"len"] == 1


def test_clear_keeps_sequence_counter(r):
    for i in range(3):
        r.execute_command("CONV.ADD", "s", "user", f"m{i}")
    assert r.execute_command("CONV.CLEAR", "s") == 3
    assert r.execute_command("CONV.LEN", "s") == 0
    assert ctx(r, "s") == []
    assert r.execute_command("CONV.ADD", "s", "user", "again") == 4


def test_del(r):
    r.execute_command("CONV.ADD", "s", "user", "x")
    assert r.execute_command("CONV.DEL", "s") == 1
    assert r.exists("s") == 0
    assert r.execute_command("CONV.ADD", "s", "user", "x") == 1  # a new session starts at 1


def test_errors_change_nothing(r):
    r.execute_command("CONV.ADD", "s", "user", "keep")
    r.set("str", "v")
    bad = [
        (["CONV.ADD", "s", "user"], "wrong number of arguments"),
        (["CONV.ADD", "s", "", "x"], "role"),
        (["CONV.ADD", "s", "user", "x", "META", "{not json"], "META is not valid JSON"),
        (["CONV.ADD", "s", "user", "x", "META", "[1,2]"], "META must be a JSON object"),
        (["CONV.ADD", "s", "user", "x", "META"], "META needs a value"),
        (["CONV.ADD", "s", "user", "x", "EMB", b"\x00\x00\x80"], "multiple of 4"),
        (["CONV.ADD", "s", "user", "x", "EMB", fp32(1.0, float("nan"))], "NaN"),
        (["CONV.ADD", "s", "user", "x", "EMB", fp32(float("inf"))], "NaN or Inf"),
        (["CONV.ADD", "s", "user", "x", "TS", "soon"], "TS is not an integer"),
        (["CONV.ADD", "s", "user", "x", "BOGUS", "1"], "unknown option"),
        (["CONV.ADD", "s", "user", "x", "SEQ", "1"], "SEQ 1 is not past"),
        (["CONV.ADD", "s", "user", "x", "WINDOW", "0"], "WINDOW must be between"),
        (["CONV.CTX", "s", "COUNT", "-1"], "COUNT must be between"),
        (["CONV.CTX", "s", "COUNT", "x"], "COUNT is not an integer"),
        (["CONV.CTX", "s", "FORMAT", "xml"], "FORMAT must be"),
        (["CONV.CTX", "s", "NOPE"], "unknown option"),
        (["CONV.HISTORY", "s", "FROM"], "FROM needs a value"),
        (["CONV.LEN", "s", "extra"], "wrong number of arguments"),
        (["CONV.INFO"], "wrong number of arguments"),
        (["CONV._LOAD", "s", "garbage"], "corrupt session payload"),
    ]
    for argv, msg in bad:
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command(*argv)
        assert msg in str(e.value), (argv, str(e.value))
    for cmd in (["CONV.ADD", "str", "user", "x"], ["CONV.CTX", "str"], ["CONV.LEN", "str"],
                ["CONV.HISTORY", "str"], ["CONV.INFO", "str"], ["CONV.CLEAR", "str"], ["CONV.DEL", "str"]):
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command(*cmd)
        assert str(e.value).startswith("WRONGTYPE"), cmd
    assert r.get("str") == b"v"
    assert r.execute_command("CONV.LEN", "s") == 1
    assert ctx(r, "s", "FORMAT", "full")[0]["seq"] == 1
    assert r.execute_command("CONV.ADD", "s", "user", "next") == 2


def test_max_content_bytes_config(server, r):
    r.config_set("convcache.max-content-bytes", 10)
    assert r.config_get("convcache.max-content-bytes") == {"convcache.max-content-bytes": "10"}
    with pytest.raises(redis.ResponseError, match="over the maximum of 10"):
        r.execute_command("CONV.ADD", "s", "user", "x" * 11)
    assert r.exists("s") == 0
    r.execute_command("CONV.ADD", "s", "user", "x" * 10)


def test_window_config_and_option(r):
    r.config_set("convcache.window", 2)
    for i in range(4):
        r.execute_command("CONV.ADD", "a", "user", f"m{i}")
    assert len(ctx(r, "a")) == 2
    r.execute_command("CONV.ADD", "b", "user", "x", "WINDOW", 3)
    assert info_of(r, "b")["window"] == 3
    with pytest.raises(redis.ResponseError):
        r.config_set("convcache.window", 0)


def test_module_args_set_config(servers, kind):
    s = servers(kind, module_args=["window", "9"])
    assert s.client().config_get("convcache.window")["convcache.window"] == "9"


def test_order_and_numbering_over_10000_adds(r):
    p = r.pipeline(transaction=False)
    for i in range(10_000):
        p.execute_command("CONV.ADD", "big", "user", f"message {i}")
    seqs = p.execute()
    assert seqs == list(range(1, 10_001))
    h = json.loads(r.execute_command("CONV.HISTORY", "big", "FORMAT", "full"))
    assert [m["seq"] for m in h] == list(range(1, 10_001))
    assert all(m["content"] == f"message {m['seq'] - 1}" for m in h)
    assert r.execute_command("CONV.LEN", "big") == 10_000


def test_same_millisecond_messages_do_not_collide(r):
    # lix-open-cache used millisecond timestamps as ids; two adds in one ms collided.
    seqs = [r.execute_command("CONV.ADD", "s", "user", f"m{i}", "TS", 5) for i in range(50)]
    assert seqs == list(range(1, 51))
    assert r.execute_command("CONV.LEN", "s") == 50


def test_utf8_and_binary_content(r):
    texts = ["héllo wörld", "日本語のテキスト", "emoji 🎉🚀", "mixed\x00nul\r\n\ttabs", "\"quotes\" \\ back"]
    for t in texts:
        r.execute_command("CONV.ADD", "u", "user", t)
    assert [m["content"] for m in ctx(r, "u")] == texts
    binary = bytes(range(256)) * 4
    r.execute_command("CONV.ADD", "b", "user", binary)
    resp = r.execute_command("CONV.CTX", "b", "FORMAT", "resp")
    assert resp[0][3] == binary
    assert r.execute_command("CONV.CTX", "b", "FORMAT", "text") == b"user: " + binary


def test_one_mib_content(r):
    big = ("abcdefghij" * 104858)[: 1 << 20]
    r.execute_command("CONV.ADD", "s", "user", big)
    assert ctx(r, "s")[0]["content"] == big
    r.execute_command("DEBUG", "RELOAD")
    assert ctx(r, "s")[0]["content"] == big


def fill(r, key="s", n=8):
    for i in range(n):
        r.execute_command("CONV.ADD", key, "user" if i % 2 == 0 else "assistant", f"turn {i} ✓",
                          "META", json.dumps({"i": i}), "EMB", fp32(i, 1.0, -2.5))


def snapshot(r, key="s"):
    return (
        r.execute_command("CONV.CTX", key, "FORMAT", "full"),
        r.execute_command("CONV.HISTORY", key, "FORMAT", "resp"),
        r.execute_command("CONV.LEN", key),
        r.execute_command("DEBUG", "DIGEST-VALUE", key),
    )


def test_debug_reload_identical(r):
    fill(r)
    before = snapshot(r)
    r.execute_command("DEBUG", "RELOAD")
    assert snapshot(r) == before
    assert r.type("s") == b"convcache"


def test_real_restart_rdb_identical(servers, kind):
    s = servers(kind, module_args=MEMORY_ONLY)
    r = s.client()
    fill(r)
    before = snapshot(r)
    r.save()
    s.restart()
    assert snapshot(s.client()) == before


def test_aof_restart_identical_and_rewrite(servers, kind):
    s = servers(kind, module_args=MEMORY_ONLY, extra=["--appendonly", "yes", "--appendfsync", "always"])
    r = s.client()
    fill(r)
    r.execute_command("CONV.ADD", "s", "user", "after", "TS", 42)
    before = snapshot(r)
    s.restart()  # replays the AOF commands (with the primary's TS/SEQ decisions)
    r = s.client()
    assert snapshot(r) == before
    # Rewrite the AOF into CONV._LOAD commands and replay again, with a big session too.
    p = r.pipeline(transaction=False)
    for i in range(2500):
        p.execute_command("CONV.ADD", "big", "user", f"m{i}")
    p.execute()
    big_before = snapshot(r, "big")
    r.bgrewriteaof()
    from harness import wait_for
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
    s.restart()
    r = s.client()
    assert snapshot(r) == before
    assert snapshot(r, "big") == big_before


def test_dump_restore_and_copy(r):
    fill(r)
    before = snapshot(r)
    dumped = r.dump("s")
    r.restore("s2", 0, dumped)
    assert snapshot(r, "s2")[:3] == before[:3]
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "s2") == before[3]
    assert r.copy("s", "s3")
    assert snapshot(r, "s3")[:3] == before[:3]
    # the copy is independent
    r.execute_command("CONV.ADD", "s3", "user", "only in copy")
    assert r.execute_command("CONV.LEN", "s") == 8
    assert r.execute_command("CONV.LEN", "s3") == 9


def test_generic_key_commands(r):
    fill(r)
    assert r.type("s") == b"convcache"
    assert r.expire("s", 100)
    assert 0 < r.ttl("s") <= 100
    assert r.rename("s", "t")
    assert r.execute_command("CONV.LEN", "t") == 8
    assert r.object("encoding", "t") == b"raw"  # what the server reports for module types
    assert r.object("idletime", "t") >= 0
    assert r.memory_usage("t") > 0
    r.set("plain", "x")
    assert [k for k in r.scan_iter(_type="convcache")] == [b"t"]
    assert r.unlink("t") == 1
    assert r.exists("t") == 0
    fill(r, "e")
    r.pexpire("e", 50)
    import time
    time.sleep(0.2)
    assert r.exists("e") == 0


def test_command_getkeys(r):
    for cmd in (["CONV.ADD", "k1", "user", "x"], ["CONV.CTX", "k1"], ["CONV.LEN", "k1"],
                ["CONV.HISTORY", "k1"], ["CONV.INFO", "k1"], ["CONV.CLEAR", "k1"], ["CONV.DEL", "k1"]):
        assert r.command_getkeys(*cmd) == ["k1"]
    # Raw reply (redis-py's COMMAND INFO parser chokes on module commands).
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND", "INFO", "CONV.CTX", "CONV.ADD")
        ctx_info, add_info = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert b"readonly" in ctx_info[2] and b"write" in add_info[2] and b"fast" in add_info[2]
    assert ctx_info[3:6] == [1, 1, 1]  # first key, last key, step


def test_memory_usage_tracks_true_bytes(r):
    # Sum of MEMORY USAGE over many sessions vs. the growth of used_memory.
    r.execute_command("CONV.ADD", "warm", "user", "x")
    base = r.info("memory")["used_memory"]
    p = r.pipeline(transaction=False)
    for k in range(200):
        for i in range(10):
            p.execute_command("CONV.ADD", f"m{k}", "user", "y" * 2000, "META", '{"a":1}')
    p.execute()
    grown = r.info("memory")["used_memory"] - base
    reported = sum(r.memory_usage(f"m{k}", samples=0) for k in range(200))
    assert abs(reported - grown) <= 0.10 * grown, (reported, grown)


def test_info_section(r):
    fill(r, "a", 3)
    fill(r, "b", 2)
    info = r.info("convcache")
    assert info["convcache_sessions"] == 2
    assert info["convcache_hot_messages"] == 5
    assert info["convcache_session_bytes"] > 0
    assert info["convcache_conv_adds"] >= 5
    r.delete("a")
    info = r.info("convcache")
    assert info["convcache_sessions"] == 1
    assert info["convcache_hot_messages"] == 2


def test_replica_with_another_window_config_follows_the_primary(servers, kind):
    """An ordinary add replicates only its time and sequence (the session's window and id are
    the replica's state), so a WINDOW a later add sets must reach the replica with it."""
    primary = servers(kind, module_args=MEMORY_ONLY)
    replica = replica_of(servers, primary)
    replica.client().config_set("convcache.window", 3)
    p = primary.client()
    for i in range(6):
        p.execute_command("CONV.ADD", "w", "user", f"a{i}")  # created with the primary's window
    p.execute_command("CONV.ADD", "w", "user", "narrower", "window", 4)
    for i in range(3):
        p.execute_command("CONV.ADD", "w", "assistant", f"b{i}")
    wait_replica_caught_up(primary, replica)
    r = replica.client()
    assert snapshot(r, "w") == snapshot(p, "w")
    for c in (p, r):
        info = c.execute_command("CONV.INFO", "w")
        info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
        assert info[b"window"] == 4


def test_replica_answers_identically(servers, kind):
    primary = servers(kind, module_args=MEMORY_ONLY)
    p = primary.client()
    fill(p, "before")  # full sync carries this one (RDB)
    replica = replica_of(servers, primary)
    fill(p, "s")  # this one streams as commands
    p.execute_command("CONV.ADD", "s", "user", "late", "META", '{"x": [1, 2]}')
    p.execute_command("CONV.CLEAR", "before")
    p.execute_command("CONV.ADD", "before", "user", "after clear")
    wait_replica_caught_up(primary, replica)
    r = replica.client()
    for key in ("s", "before"):
        assert snapshot(r, key) == snapshot(p, key)
    with pytest.raises(redis.ResponseError, match="READONLY|read only"):
        r.execute_command("CONV.ADD", "s", "user", "nope")
