"""CONV.ADD ... EX (the session's TTL, set and renewed in the same round trip, replicated as
the absolute expiry the primary decided) and CONV.CTX / CONV.HISTORY ... ROLES (only some
roles, on turns in memory and on disk), against real Valkey 9 and Redis 7 servers."""
import json
import threading
import time

import pytest
import redis

from conftest import MEMORY_ONLY
from harness import replica_of, wait_for, wait_replica_caught_up
from test_archive import cold_args, conv_info, wait_cold

MAX_EX = 100 * 365 * 86400


def pexpiretime(r, key):
    return r.execute_command("PEXPIRETIME", key)


def now_ms():
    return int(time.time() * 1000)


def add(r, key, role, content, *opts):
    return r.execute_command("CONV.ADD", key, role, content, *opts)


# EX ------------------------------------------------------------------------------------------

def test_ex_sets_the_ttl_of_a_new_session_and_each_add_renews_it(r):
    before = now_ms()
    assert add(r, "s", "user", "hi", "EX", 100) == 1
    at = pexpiretime(r, "s")
    assert before + 100_000 <= at <= now_ms() + 100_000
    # An ADD without EX leaves the TTL as it is.
    assert add(r, "s", "assistant", "hello") == 2
    assert pexpiretime(r, "s") == at
    # Each ADD ... EX renews it (here to a longer and then a shorter one).
    time.sleep(0.01)
    add(r, "s", "user", "more", "ex", 1000)
    assert 999 <= r.ttl("s") <= 1000
    add(r, "s", "user", "again", "EX", 50)
    assert 49 <= r.ttl("s") <= 50
    # On an existing session without a TTL, and over a TTL the user set with EXPIRE.
    add(r, "t", "user", "x")
    assert r.ttl("t") == -1
    add(r, "t", "user", "y", "EX", 300)
    assert 299 <= r.ttl("t") <= 300
    assert r.expire("t", 5000)
    add(r, "t", "user", "z", "META", '{"a":1}', "EX", 20, "WINDOW", 3)
    assert 19 <= r.ttl("t") <= 20
    assert r.execute_command("CONV.LEN", "t") == 3
    # It really expires.
    add(r, "gone", "user", "x", "EX", 1)
    wait_for(lambda: r.exists("gone") == 0, timeout=5, what="session expired")


def test_client_pxat_sets_an_absolute_expiry(r):
    at = now_ms() + 60_000
    add(r, "s", "user", "x", "PXAT", at)
    assert pexpiretime(r, "s") == at


def test_bad_ex_or_pxat_changes_nothing(r):
    add(r, "s", "user", "keep", "EX", 500)
    at = pexpiretime(r, "s")
    add(r, "plain", "user", "keep")
    bad = [
        (["EX", 0], "EX must be between 1 and 3153600000, got 0"),
        (["EX", -5], "EX must be between"),
        (["EX", MAX_EX + 1], "EX must be between"),
        (["EX", "soon"], "EX is not an integer"),
        (["EX"], "EX needs a value"),
        (["EX", 10, "PXAT", now_ms() + 60_000], "EX and PXAT cannot be given together"),
        (["PXAT", now_ms() - 1000], "PXAT must be between"),
        (["PXAT", now_ms() + (MAX_EX + 10) * 1000], "PXAT must be between"),
        (["PXAT", 0], "PXAT must be between"),
        (["EX", 10, "META", "[1]"], "META must be a JSON object"),
    ]
    for opts, msg in bad:
        for key in ("s", "plain", "new"):
            with pytest.raises(redis.ResponseError, match=msg):
                add(r, key, "user", "x", *opts)
    # Refused by the session itself (after EX was read): the TTL stays as it was too.
    for key in ("s", "plain"):
        with pytest.raises(redis.ResponseError, match="SEQ 1 is not past"):
            add(r, key, "user", "x", "EX", 10, "SEQ", 1)
    with pytest.raises(redis.ResponseError, match="role"):
        add(r, "s", "", "x", "EX", 10)
    assert pexpiretime(r, "s") == at
    assert r.ttl("plain") == -1
    assert r.exists("new") == 0
    assert r.execute_command("CONV.LEN", "s") == 1
    assert r.execute_command("CONV.LEN", "plain") == 1
    # The largest EX is accepted.
    add(r, "s", "user", "far", "EX", MAX_EX)
    assert r.ttl("s") > MAX_EX - 10


def test_replica_gets_the_absolute_expiry_the_primary_decided(servers, kind):
    primary = servers(kind, module_args=MEMORY_ONLY)
    replica = replica_of(servers, primary)
    p, rr = primary.client(), replica.client()
    add(p, "s", "user", "warm")
    wait_replica_caught_up(primary, replica)
    # The replica applies the ADD ~300 ms after the primary: a relative EX would expire there
    # later than on the primary.
    sleeper = threading.Thread(target=lambda: replica.client().execute_command("DEBUG", "SLEEP", "0.3"))
    sleeper.start()
    time.sleep(0.05)
    add(p, "s", "user", "hi", "EX", 1000)
    add(p, "new", "user", "hi", "EX", 2000, "META", '{"k":"v"}')
    sleeper.join()
    wait_replica_caught_up(primary, replica)
    for key in ("s", "new"):
        assert pexpiretime(rr, key) == pexpiretime(p, key) > 0, key
    assert rr.execute_command("CONV.HISTORY", "new", "FORMAT", "full") == \
        p.execute_command("CONV.HISTORY", "new", "FORMAT", "full")
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "new") == \
        p.execute_command("DEBUG", "DIGEST-VALUE", "new")


def test_aof_restart_keeps_the_expiry(servers, kind):
    s = servers(kind, module_args=MEMORY_ONLY,
                extra=["--appendonly", "yes", "--appendfsync", "always"])
    r = s.client()
    add(r, "s", "user", "a", "EX", 1000)
    add(r, "s", "user", "b")
    add(r, "t", "user", "a")
    add(r, "t", "user", "b", "EX", 2000)
    at = {k: pexpiretime(r, k) for k in ("s", "t")}
    time.sleep(0.05)  # a replayed relative EX would land later
    s.restart()  # replays CONV.ADD ... PXAT from the AOF
    r = s.client()
    assert {k: pexpiretime(r, k) for k in ("s", "t")} == at
    assert r.execute_command("CONV.LEN", "t") == 2
    r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
    s.restart()
    r = s.client()
    assert {k: pexpiretime(r, k) for k in ("s", "t")} == at


def test_ex_on_a_cold_session_replaces_the_retention_and_idle_archival_keeps_it(servers, kind):
    primary = servers(kind, module_args=cold_args(batch=2, idle=1))
    replica = replica_of(servers, primary)
    p, rr = primary.client(), replica.client()
    for i in range(6):
        add(p, "s", "user", f"m{i}")
    wait_cold(p, "s")
    assert p.ttl("s") > 86400  # the archive retention
    assert add(p, "s", "user", "back", "EX", 1000) == 7
    assert 999 <= p.ttl("s") <= 1000, "EX did not win over the retention TTL"
    at = pexpiretime(p, "s")
    wait_cold(p, "s")
    assert pexpiretime(p, "s") == at, "idle archival replaced the TTL EX set"
    wait_replica_caught_up(primary, replica)
    wait_cold(rr, "s")
    assert pexpiretime(rr, "s") == at
    assert conv_info(rr, "s")["len"] == 7


# ROLES ---------------------------------------------------------------------------------------

ROLE_CYCLE = ["user", "assistant", "tool", "tool:search", "assistant"]


def fill(r, key, n, first=1):
    """Turns first..first+n-1 cycling through ROLE_CYCLE; returns them as HISTORY FORMAT full
    shows them."""
    p = r.pipeline(transaction=False)
    want = []
    for i in range(first, first + n):
        role = ROLE_CYCLE[(i - 1) % len(ROLE_CYCLE)]
        content = f"turn {i} " + "x" * (i * 3)
        p.execute_command("CONV.ADD", key, role, content, "TS", 1000 + i)
        want.append({"seq": i, "ts": 1000 + i, "role": role, "content": content, "meta": {},
                     "tokens": -(-len(content.encode()) // 4)})
    assert p.execute() == list(range(first, first + n))
    return want


def tokens_of(m):
    return -(-len(m["content"].encode()) // 4) + 4


def expect_ctx(turns, roles, count, tokens=None):
    """CONV.CTX's documented rule, recomputed: filter, last COUNT, then fit TOKENS newest first."""
    kept = [m for m in turns if m["role"] in roles][-count:] if count else []
    if tokens is not None:
        out, used = [], 0
        for m in reversed(kept):
            used += tokens_of(m)
            if used > tokens:
                break
            out.append(m)
        kept = out[::-1]
    return kept


def role_reads(r, key):
    def full(*cmd):
        return json.loads(r.execute_command(*cmd, "FORMAT", "full"))
    return {
        "ctx-ua": full("CONV.CTX", key, "ROLES", "user,assistant"),
        "ctx-ua-8": full("CONV.CTX", key, "COUNT", 8, "ROLES", "user,assistant"),
        "ctx-tool-tokens": full("CONV.CTX", key, "ROLES", "tool,tool:search", "COUNT", 6,
                                "TOKENS", 60),
        "ctx-user-all": full("CONV.CTX", key, "ROLES", "user", "COUNT", 1000),
        "ctx-none": full("CONV.CTX", key, "ROLES", "system"),
        "hist-ua": full("CONV.HISTORY", key, "ROLES", "assistant,user"),
        "hist-range": full("CONV.HISTORY", key, "FROM", 4, "TO", 12, "ROLES", "tool"),
        "resp": r.execute_command("CONV.CTX", key, "COUNT", 3, "ROLES", "assistant",
                                  "FORMAT", "resp"),
        "text": r.execute_command("CONV.HISTORY", key, "TO", 6, "ROLES", "user", "FORMAT", "text"),
    }


def expected_role_reads(turns, window):
    def resp(m):
        return [m["seq"], m["ts"], m["role"].encode(), m["content"].encode(), None,
                m["tokens"], None, None, None]
    return {
        "ctx-ua": expect_ctx(turns, {"user", "assistant"}, window),
        "ctx-ua-8": expect_ctx(turns, {"user", "assistant"}, 8),
        "ctx-tool-tokens": expect_ctx(turns, {"tool", "tool:search"}, 6, 60),
        "ctx-user-all": [m for m in turns if m["role"] == "user"],
        "ctx-none": [],
        "hist-ua": [m for m in turns if m["role"] in ("assistant", "user")],
        "hist-range": [m for m in turns if 4 <= m["seq"] <= 12 and m["role"] == "tool"],
        "resp": [resp(m) for m in expect_ctx(turns, {"assistant"}, 3)],
        "text": "\n".join(f"user: {m['content']}" for m in turns
                          if m["seq"] <= 6 and m["role"] == "user").encode(),
    }


def test_roles_on_a_session_in_memory(r):
    turns = fill(r, "s", 20)
    want = expected_role_reads(turns, window=5)
    assert want["ctx-tool-tokens"] and len(want["ctx-tool-tokens"]) < 6  # TOKENS cuts
    assert role_reads(r, "s") == want
    # Tool chatter left out of the default (messages) format.
    msgs = json.loads(r.execute_command("CONV.CTX", "s", "COUNT", 4, "ROLES", "user,assistant"))
    assert [(m["role"], m["content"][:7]) for m in msgs] == [
        ("assistant", "turn 15"), ("user", "turn 16"), ("assistant", "turn 17"), ("assistant", "turn 20")]


@pytest.mark.parametrize("state", ["cold", "partly-archived"])
def test_roles_on_archived_turns(servers, kind, state):
    s = servers(kind, module_args=cold_args(window=5, batch=1000))
    r = s.client()
    turns = fill(r, "s", 23)
    want = expected_role_reads(turns, window=5)
    assert r.execute_command("CONV.FLUSH", "s") == 23
    if state == "partly-archived":
        turns += fill(r, "s", 3, first=24)
        want = expected_role_reads(turns, window=5)
        info = conv_info(r, "s")
        assert (info["hot"], info["archived"]) == (3, 23)
    else:
        assert conv_info(r, "s")["hot"] == 0
    reads_before = r.info("convcache")["convcache_archive_reads"]
    assert role_reads(r, "s") == want
    assert r.info("convcache")["convcache_archive_reads"] > reads_before
    # The same answers again once CTX brought the window back into memory.
    assert role_reads(r, "s") == want


def test_roles_errors_change_nothing(r):
    fill(r, "s", 4)
    for cmd in ("CONV.CTX", "CONV.HISTORY"):
        for opts, msg in [
            (["ROLES", ""], "ROLES needs at least one role name"),
            (["ROLES", ","], "ROLES has an empty role name"),
            (["ROLES", "user,"], "ROLES has an empty role name in 'user,'"),
            (["ROLES", "user,,tool"], "ROLES has an empty role name"),
            (["ROLES"], "ROLES needs a value"),
        ]:
            with pytest.raises(redis.ResponseError, match=msg):
                r.execute_command(cmd, "s", *opts)
    assert r.execute_command("CONV.LEN", "s") == 4
    # A missing key is still an empty result.
    assert json.loads(r.execute_command("CONV.CTX", "nope", "ROLES", "user")) == []
