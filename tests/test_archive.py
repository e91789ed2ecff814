"""The cold tier against real Valkey 9 and Redis 7 servers: overflow and idle archiving to
`<dir>/<archive-dir>/<db>/`, reads that span disk and memory, persistence, replication, key
commands that move files, crashes, damaged files, lix imports, hostile key names and write
errors. Small settings (window 5, a 20 ms timer) make the timer act within a test; every wait
polls with `wait_for`."""
import hashlib
import json
import os
import shutil
import struct
import threading
import time

import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up

ARCHIVE_DIR = "convcache-archive"
IMPORT_DIR = "convcache-import"
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "lix")
RETENTION_S = 14 * 86400


def cold_args(window=5, batch=2, idle=3600, **more):
    cfg = {"window": window, "archive-batch": batch, "idle-archive": idle,
           "timer-interval-ms": 20, "archive-ttl": 14}
    cfg.update({k.replace("_", "-"): v for k, v in more.items()})
    return [str(x) for kv in cfg.items() for x in kv]


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


_NAME_OK = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def archive_file_name(key):
    """The module's file name for a key (src/archive/filename.rs), recomputed independently."""
    key = key.encode() if isinstance(key, str) else key
    prefix = "".join(chr(b) if b in _NAME_OK and not (i == 0 and b in b".-") else "_"
                     for i, b in enumerate(key[:64])) or "_"
    return f"{prefix}-{hashlib.sha256(key).hexdigest()[:32]}.huff"


def archive_path(server, key, db=0):
    return os.path.join(server.dir, ARCHIVE_DIR, str(db), archive_file_name(key))


def conv_info(r, key):
    info = r.execute_command("CONV.INFO", key)
    if info is None:
        return None
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in info.items()}


def stats(r):
    return {k[len("convcache_"):]: v for k, v in r.info("convcache").items()}


def estimated_tokens(content):
    """The `estimate` tokenizer's count: ceil(UTF-8 bytes / 4)."""
    return -(-len(content.encode()) // 4)


def content_of(key, i):
    key = key.decode("latin-1") if isinstance(key, bytes) else key
    return f"turn {i} of {key!r} ✓ " + "the quick brown fox " * (i % 4)


def add_turns(r, key, n, first=1, ts0=None):
    """Adds turns `first..first+n-1` (role, content, META, EMB, TS all known) in one round trip.
    Returns what HISTORY FORMAT full must show for them."""
    ts0 = int(time.time() * 1000) if ts0 is None else ts0
    p = r.pipeline(transaction=False)
    want = []
    for i in range(first, first + n):
        role = "user" if i % 2 else "assistant"
        p.execute_command("CONV.ADD", key, role, content_of(key, i), "META", json.dumps({"i": i}),
                          "EMB", fp32(i, 1.0, -2.5), "TS", ts0 + i)
        want.append({"seq": i, "ts": ts0 + i, "role": role, "content": content_of(key, i),
                     "meta": {"i": i}, "tokens": estimated_tokens(content_of(key, i))})
    assert p.execute() == list(range(first, first + n))
    return want


def read_cmds(key):
    """Every read whose answer must not change when turns move between memory and disk."""
    return [
        ["CONV.HISTORY", key, "FORMAT", "full"],
        ["CONV.HISTORY", key, "FORMAT", "resp"],
        ["CONV.HISTORY", key, "FROM", 3, "TO", 9, "FORMAT", "full"],
        ["CONV.CTX", key, "FORMAT", "full"],
        ["CONV.CTX", key, "COUNT", 12, "FORMAT", "full"],
        ["CONV.CTX", key, "COUNT", 12, "TOKENS", 60, "FORMAT", "full"],
        ["CONV.CTX", key, "COUNT", 1000, "FORMAT", "text"],
        ["CONV.SEARCH", key, "TEXT", "turn 3 fox", "K", 3, "RECENT", 2],
        ["CONV.SEARCH", key, "EMB", fp32(3, 1.0, -2.5), "K", 4],
        ["CONV.LEN", key],
    ]


def normalize(replies):
    out = []
    for v in replies:
        if isinstance(v, bytes) and v[:1] in (b"[", b"{"):
            v = json.loads(v)
        out.append(v)
    return out


def reads(r, key):
    return normalize([r.execute_command(*c) for c in read_cmds(key)])


def fill_and_read(r, key, n):
    """Adds n turns and takes every read in the same MULTI, so no archiving can come between."""
    p = r.pipeline(transaction=True)
    ts0 = int(time.time() * 1000)
    want = []
    for i in range(1, n + 1):
        role = "user" if i % 2 else "assistant"
        p.execute_command("CONV.ADD", key, role, content_of(key, i), "META", json.dumps({"i": i}),
                          "EMB", fp32(i, 1.0, -2.5), "TS", ts0 + i)
        want.append({"seq": i, "ts": ts0 + i, "role": role, "content": content_of(key, i),
                     "meta": {"i": i}, "tokens": estimated_tokens(content_of(key, i))})
    for c in read_cmds(key):
        p.execute_command(*c)
    res = p.execute()
    assert res[:n] == list(range(1, n + 1))
    before = normalize(res[n:])
    assert before[0] == want
    return before


def pexpiretime(r, key):
    return r.execute_command("PEXPIRETIME", key)


def history(r, key, *opts):
    return json.loads(r.execute_command("CONV.HISTORY", key, "FORMAT", "full", *opts))


def seqs(msgs):
    return [m["seq"] for m in msgs]


def wait_cold(r, key, timeout=15):
    wait_for(lambda: (conv_info(r, key) or {}).get("hot") == 0, timeout=timeout,
             what=f"{key!r} cold")


def make_cold(r, key, n=10):
    """A session of n turns, all of them on disk (CONV.FLUSH replies once durable)."""
    want = add_turns(r, key, n)
    assert r.execute_command("CONV.FLUSH", key) == n
    info = conv_info(r, key)
    assert (info["hot"], info["archived"]) == (0, n)
    return want


# 1 -------------------------------------------------------------------------------------------

def test_overflow_archival_reads_span_disk_and_memory(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2))
    r = s.client()
    before = fill_and_read(r, "s", 20)
    wait_for(lambda: conv_info(r, "s")["archived"] > 0 and conv_info(r, "s")["hot"] == 5,
             what="overflow archived")
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"], info["len"]) == (5, 15, 20)
    assert (info["first_seq"], info["last_seq"], info["next_seq"]) == (1, 20, 21)
    assert os.listdir(os.path.join(s.dir, ARCHIVE_DIR, "0")) == [archive_file_name("s")]
    assert os.path.getsize(archive_path(s, "s")) > 0
    assert reads(r, "s") == before
    ctx12 = json.loads(r.execute_command("CONV.CTX", "s", "COUNT", 12, "FORMAT", "full"))
    assert seqs(ctx12) == list(range(9, 21))  # 7 from disk, 5 from memory
    assert ctx12 == before[0][8:]
    # Window-sized reads and ranges inside memory never touch the disk.
    n = stats(r)["archive_reads"]
    assert seqs(json.loads(r.execute_command("CONV.CTX", "s", "FORMAT", "full"))) == list(range(16, 21))
    assert seqs(history(r, "s", "FROM", 16)) == list(range(16, 21))
    assert stats(r)["archive_reads"] == n
    assert seqs(history(r, "s", "FROM", 15, "TO", 16)) == [15, 16]
    assert stats(r)["archive_reads"] == n + 1
    # More turns append to the same file and keep every read whole.
    add_turns(r, "s", 4, first=21)
    wait_for(lambda: conv_info(r, "s")["archived"] == 19, what="second append")
    assert seqs(history(r, "s")) == list(range(1, 25))
    assert history(r, "s")[:20] == before[0]


# 2 -------------------------------------------------------------------------------------------

def test_idle_archival_cold_record_ttl_and_revival(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2, idle=1))
    r = s.client()
    before = fill_and_read(r, "s", 8)
    add_turns(r, "u", 3)
    assert r.expire("u", 5000)
    wait_cold(r, "s")
    wait_cold(r, "u")
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"], info["len"]) == (0, 8, 8)
    assert r.memory_usage("s") <= 256
    assert RETENTION_S - 60 <= r.ttl("s") <= RETENTION_S
    assert 4900 <= r.ttl("u") <= 5000, "idle archival overrode a TTL the user set"
    assert reads(r, "s") == before
    # CTX brought the last window back into memory; once idle again the session is cold again.
    wait_cold(r, "s")
    # A new turn on a cold session needs no disk read, continues the numbering and drops the
    # retention TTL that idle archival gave the key.
    st = stats(r)
    assert r.execute_command("CONV.ADD", "s", "user", "back again") == 9
    after = stats(r)
    assert (after["archive_reads"], after["rehydrations"]) == (st["archive_reads"], st["rehydrations"])
    assert r.ttl("s") == -1
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"], info["len"]) == (1, 8, 9)
    h = history(r, "s")
    assert seqs(h) == list(range(1, 10))
    assert h[:8] == before[0] and h[8]["content"] == "back again"
    # It goes cold again, with the retention TTL again.
    wait_cold(r, "s")
    assert RETENTION_S - 60 <= r.ttl("s") <= RETENTION_S
    assert seqs(history(r, "s")) == list(range(1, 10))


def test_small_cold_session_is_a_small_record(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2, idle=1))
    r = s.client()
    add_turns(r, "s", 3)
    wait_cold(r, "s")
    assert r.memory_usage("s") <= 256
    assert conv_info(r, "s")["memory_bytes"] <= 256


def test_user_ttl_set_on_a_cold_session_survives_add_and_archival(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2, idle=1))
    r = s.client()
    add_turns(r, "s", 6)
    wait_cold(r, "s")
    assert r.ttl("s") > 5000  # the retention TTL from idle archival
    assert r.expire("s", 5000)  # the user's own TTL replaces it
    assert r.execute_command("CONV.ADD", "s", "user", "more") == 7
    assert 4900 <= r.ttl("s") <= 5000, "CONV.ADD removed a TTL the user set"
    wait_cold(r, "s")
    assert 4900 <= r.ttl("s") <= 5000, "idle archival replaced a TTL the user set"


# 3 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["debug-reload", "rdb-restart", "aof-restart"])
def test_archived_sessions_survive_reload_and_restart(servers, kind, how):
    extra = ["--appendonly", "yes", "--appendfsync", "always"] if how == "aof-restart" else []
    s = servers(kind, module_args=cold_args(batch=2, idle=1), extra=extra)
    r = s.client()
    cold_before = fill_and_read(r, "c", 12)
    wait_cold(r, "c")
    ttl_at = pexpiretime(r, "c")
    # A second session with turns both on disk and in memory.
    r.config_set("convcache.idle-archive", 3600)
    hot_before = fill_and_read(r, "h", 12)
    wait_for(lambda: conv_info(r, "h")["hot"] == 5, what="overflow archived")
    assert reads(r, "c") == cold_before and reads(r, "h") == hot_before

    def check(r):
        assert reads(r, "c") == cold_before
        assert reads(r, "h") == hot_before
        assert pexpiretime(r, "c") == ttl_at
        assert r.ttl("h") == -1
        assert r.execute_command("CONV.INFO", "c") is not None

    if how == "debug-reload":
        r.execute_command("DEBUG", "RELOAD")
        check(r)
    elif how == "rdb-restart":
        r.save()
        s.restart()
        check(s.client())
    else:
        s.restart()  # replays CONV.ADD ... and CONV._ARCHIVED ... from the AOF
        r = s.client()
        check(r)
        r.bgrewriteaof()
        wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
                 and r.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
        s.restart()  # replays CONV._LOAD from the rewritten AOF
        check(s.client())
    # The server keeps archiving where it left off (DEBUG RELOAD keeps the CONFIG SET above).
    r = s.client()
    r.config_set("convcache.idle-archive", 1)
    add_turns(r, "h", 3, first=13)
    wait_cold(r, "h")
    assert seqs(history(r, "h")) == list(range(1, 16))
    assert history(r, "h")[:12] == hot_before[0]


def aof_rewrite(r):
    r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
    return r.info("persistence")["aof_last_bgrewrite_status"]


def test_aof_without_rdb_preamble_carries_the_archived_turns(servers, kind):
    # An AOF rewritten without an RDB preamble holds each session as CONV._LOAD commands,
    # the archived turns included (as a Valkey slot migration ships them to a node without
    # the file), so the AOF alone rebuilds everything.
    s = servers(kind, module_args=cold_args(batch=2),
                extra=["--appendonly", "yes", "--appendfsync", "always",
                       "--aof-use-rdb-preamble", "no"])
    r = s.client()
    want = {"c": make_cold(r, "c", 12), "m": add_turns(r, "m", 12)}
    wait_for(lambda: conv_info(r, "m")["hot"] == 5, what="overflow archived")
    assert aof_rewrite(r) == "ok"
    archive = os.path.join(s.dir, ARCHIVE_DIR)
    db0 = os.path.join(archive, "0")

    s.stop()
    shutil.rmtree(archive)  # the archive directory is lost: the AOF is enough
    s.start()
    r = s.client()
    for k in want:
        assert history(r, k) == want[k]
        wait_for(lambda k=k: os.path.exists(archive_path(s, k)), what=f"{k} written again")
    assert (conv_info(r, "c")["archived"], conv_info(r, "m")["archived"]) == (12, 7)

    # The archive directory can not be written: the turns stay in memory, and reach the
    # disk once it can be written again.
    s.stop()
    shutil.rmtree(archive)
    os.makedirs(archive)
    open(db0, "w").write("not a directory")  # root ignores modes; a file in the way does not
    s.start()
    r = s.client()
    wait_for(lambda: conv_info(r, "c")["hot"] == 12 and conv_info(r, "m")["hot"] == 12,
             what="archived turns kept in memory")
    assert "writing the archived turns of 'c' failed" in open(os.path.join(s.dir, "server.log")).read()
    assert stats(r)["io_errors"] >= 2
    for k in want:
        assert history(r, k) == want[k]
    os.remove(db0)
    wait_for(lambda: (conv_info(r, "c")["hot"], conv_info(r, "m")["hot"]) == (0, 5), timeout=20,
             what="turns archived again")
    for k in want:
        assert history(r, k) == want[k]

    # A rewrite that can not read a session's archive fails, and the AOF it would have
    # replaced still holds every turn.
    os.remove(archive_path(s, "c"))
    assert aof_rewrite(r) == "err"
    assert "cannot rewrite session 'c'" in open(os.path.join(s.dir, "server.log")).read()
    s.restart()
    r = s.client()
    for k in want:
        assert history(r, k) == want[k]


# 4 -------------------------------------------------------------------------------------------

def test_rehydration_does_not_stall_other_clients(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2))
    r = s.client()
    n = 4000
    p = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        p.execute_command("CONV.ADD", "big", "user", f"{i:05d} " + "x" * 300)
    p.execute()
    # The timer archives overflow while the adds arrive; FLUSH moves the rest.
    assert 0 < r.execute_command("CONV.FLUSH", "big") <= n
    assert (conv_info(r, "big")["hot"], conv_info(r, "big")["archived"]) == (0, n)
    r.set("plain", "v")
    stop = threading.Event()
    pings, errors, lat = [], [], []

    def pinger():
        c = s.client()
        while not stop.is_set():
            try:
                t = time.time()
                assert c.ping() and c.get("plain") == b"v"
                lat.append(time.time() - t)
                pings.append(t)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    results = []

    def reader():
        c = s.client()
        for _ in range(8):
            t = time.time()
            h = c.execute_command("CONV.HISTORY", "big", "FORMAT", "resp")
            results.append((t, time.time(), len(h), h[0][0], h[-1][0], h[-1][3][:5]))

    th = [threading.Thread(target=pinger), threading.Thread(target=reader)]
    for t in th:
        t.start()
    th[1].join(timeout=120)
    stop.set()
    th[0].join(timeout=30)
    assert not errors, errors[:3]
    assert len(results) == 8
    assert all(x[2:] == (n, 1, n, b"04000") for x in results)
    start, end = results[0][0], results[-1][1]
    during = [t for t in pings if start <= t <= end]
    assert len(during) >= 8, (len(during), end - start)
    assert max(lat) < 2.0
    assert stats(r)["archive_reads"] >= 8


# 5 -------------------------------------------------------------------------------------------

def test_del_unlink_expiry_remove_the_file(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    for key, drop in (("d", lambda: r.delete("d")), ("u", lambda: r.unlink("u")),
                      ("cd", lambda: r.execute_command("CONV.DEL", "cd")),
                      ("e", lambda: r.pexpire("e", 100))):
        make_cold(r, key)
        assert os.path.exists(archive_path(s, key))
        assert drop()
        wait_for(lambda: r.exists(key) == 0 and not os.path.exists(archive_path(s, key)),
                 what=f"file of {key} removed")
        # The key comes back as a new session that owns a new file.
        assert r.execute_command("CONV.ADD", key, "user", "new") == 1
        assert history(r, key)[0]["content"] == "new"
    assert os.listdir(os.path.join(s.dir, ARCHIVE_DIR, "0")) == []


def test_rename_and_move_carry_the_file(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    want = make_cold(r, "a", 12)
    assert r.rename("a", "b")
    wait_for(lambda: not os.path.exists(archive_path(s, "a")) and os.path.exists(archive_path(s, "b")),
             what="file renamed")
    assert history(r, "b") == want
    assert history(r, "a") == []
    # Appends go to the moved file.
    want += add_turns(r, "b", 2, first=13)
    assert r.execute_command("CONV.FLUSH", "b") == 2
    assert history(r, "b") == want
    # RENAME over an existing session with its own file.
    make_cold(r, "c", 3)
    assert r.rename("b", "c")
    wait_for(lambda: not os.path.exists(archive_path(s, "b")), what="file renamed")
    assert history(r, "c") == want
    # MOVE to another database.
    assert r.move("c", 1)
    wait_for(lambda: not os.path.exists(archive_path(s, "c"))
             and os.path.exists(archive_path(s, "c", db=1)), what="file moved to db 1")
    r1 = s.client(db=1)
    assert history(r1, "c") == want
    assert r1.execute_command("CONV.ADD", "c", "user", "in db 1") == 15


def test_copy_is_independent_and_clear_removes_the_file(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    want = make_cold(r, "c", 10)
    assert r.copy("c", "c2")
    wait_for(lambda: os.path.exists(archive_path(s, "c2")), what="file copied")
    assert history(r, "c2") == want
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "c2") == r.execute_command("DEBUG", "DIGEST-VALUE", "c")
    assert r.execute_command("CONV.ADD", "c2", "user", "only in copy") == 11
    assert r.execute_command("CONV.FLUSH", "c2") == 1
    assert r.execute_command("CONV.ADD", "c", "user", "only in source") == 11
    assert r.execute_command("CONV.FLUSH", "c") == 1
    assert history(r, "c")[-1]["content"] == "only in source" and history(r, "c")[:10] == want
    assert history(r, "c2")[-1]["content"] == "only in copy" and history(r, "c2")[:10] == want
    assert r.delete("c2") == 1
    wait_for(lambda: not os.path.exists(archive_path(s, "c2")), what="copy's file removed")
    assert seqs(history(r, "c")) == list(range(1, 12))
    # CLEAR drops the file and keeps the numbering.
    assert r.execute_command("CONV.CLEAR", "c") == 11
    wait_for(lambda: not os.path.exists(archive_path(s, "c")), what="file removed by CLEAR")
    assert history(r, "c") == []
    assert r.execute_command("CONV.ADD", "c", "user", "after clear") == 12
    assert r.execute_command("CONV.FLUSH", "c") == 1
    assert seqs(history(r, "c")) == [12]
    info = conv_info(r, "c")
    assert (info["archived"], info["first_seq"], info["next_seq"]) == (1, 12, 13)


# 6 -------------------------------------------------------------------------------------------

def test_replica_archives_into_its_own_dir_and_survives_failover(servers, kind):
    primary = servers(kind, module_args=cold_args(batch=2, idle=1))
    replica = replica_of(servers, primary)
    assert replica.dir != primary.dir
    p, rr = primary.client(), replica.client()
    before = fill_and_read(p, "s", 12)
    p.execute_command("CONV.ADD", "warm", "user", "w")
    wait_cold(p, "s")
    wait_replica_caught_up(primary, replica)
    wait_cold(rr, "s")
    assert os.path.exists(archive_path(primary, "s"))
    assert os.path.exists(archive_path(replica, "s"))
    assert reads(rr, "s") == before
    assert rr.execute_command("DEBUG", "DIGEST-VALUE", "s") == p.execute_command("DEBUG", "DIGEST-VALUE", "s")
    assert abs(pexpiretime(rr, "s") - pexpiretime(p, "s")) == 0
    primary.kill9()
    shutil.rmtree(primary.dir, ignore_errors=True)  # the primary's disk is gone with it
    rr.execute_command("REPLICAOF", "NO", "ONE")
    assert reads(rr, "s") == before
    assert rr.execute_command("CONV.ADD", "s", "user", "after failover") == 13
    assert seqs(history(rr, "s")) == list(range(1, 14))


def test_replica_that_syncs_after_archival_has_the_full_history(servers, kind):
    primary = servers(kind, module_args=cold_args(batch=2, idle=1))
    p = primary.client()
    before = fill_and_read(p, "s", 12)
    wait_cold(p, "s")
    replica = replica_of(servers, primary)  # full sync: the RDB carries no archived turns
    rr = replica.client()
    wait_replica_caught_up(primary, replica)
    assert conv_info(rr, "s")["len"] == 12
    try:
        got = reads(rr, "s")
    except redis.ResponseError as e:
        got = f"error: {e}"
    assert got == before
    primary.kill9()
    rr.execute_command("REPLICAOF", "NO", "ONE")
    assert seqs(history(rr, "s")) == list(range(1, 13))


def test_migrate_moves_a_cold_session_whole(servers, kind):
    # MIGRATE sends DUMP payloads, which carry the archive file: the target writes it to its
    # own archive, the source removes its copy with the key.
    a = servers(kind, module_args=cold_args(batch=2))
    b = servers(kind, module_args=cold_args(batch=2))
    ra, rb = a.client(), b.client()
    want = {"c": make_cold(ra, "c", 10), "m": add_turns(ra, "m", 12)}
    wait_for(lambda: conv_info(ra, "m")["hot"] == 5, what="overflow archived")
    assert ra.migrate("127.0.0.1", b.port, ["c", "m"], 0, 5000) == b"OK"
    assert ra.exists("c", "m") == 0
    for k in want:
        assert history(rb, k) == want[k]
        wait_for(lambda k=k: os.path.exists(archive_path(b, k)), what=f"{k} file on target")
        wait_for(lambda k=k: not os.path.exists(archive_path(a, k)), what=f"{k} file gone on source")
    assert (conv_info(rb, "c")["archived"], conv_info(rb, "m")["archived"]) == (10, 7)
    want["c"] += add_turns(rb, "c", 2, first=11)
    assert rb.execute_command("CONV.FLUSH", "c") == 2
    assert history(rb, "c") == want["c"]


def test_new_session_with_an_old_timestamp_is_not_idle(servers, kind):
    # TS is the message's time, not an access: a session made a moment ago is not idle.
    s = servers(kind, module_args=cold_args(idle=60))
    r = s.client()
    r.execute_command("CONV.ADD", "old", "user", "from the past", "TS", 1000)
    r.execute_command("CONV.ADD", "new", "user", "now")
    t = time.time()
    while time.time() - t < 1.0:
        assert conv_info(r, "old")["hot"] == 1, "a new session was archived as idle at once"
        time.sleep(0.05)
    assert r.ttl("old") == -1


# 7 -------------------------------------------------------------------------------------------

def test_kill9_during_archiving_loses_and_duplicates_nothing(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1),
                extra=["--appendonly", "yes", "--appendfsync", "always"])
    r = s.client()
    keys = [f"k{i:03d}" for i in range(200)]
    acked = {k: 0 for k in keys}
    failed = []

    def adder():
        c = s.client()
        try:
            for i in range(1, 101):  # long enough that the kill lands mid-load
                p = c.pipeline(transaction=False)
                for k in keys:
                    p.execute_command("CONV.ADD", k, "user", f"{k} turn {i}")
                assert p.execute() == [i] * len(keys)
                for k in keys:
                    acked[k] = i
        except (redis.ConnectionError, redis.TimeoutError) as e:
            failed.append(repr(e))

    t = threading.Thread(target=adder)
    t.start()
    # Killed while archiving is under way: turns waiting past the windows, or writes queued.
    def under_way():
        st = stats(r)
        return st["archive_writes"] >= 300 and (
            st["hot_messages"] > 5 * len(keys) or st["io_queue_depth"] > 0)
    wait_for(lambda: under_way() or not t.is_alive(), timeout=60, interval=0.001,
             what="archiving under way")
    busy = stats(r)
    s.kill9()
    t.join(timeout=30)
    assert busy["archive_writes"] > 0 and sum(acked.values()) > 0
    assert busy["hot_messages"] > 5 * len(keys) or busy["io_queue_depth"] > 0, \
        "the kill should land while archiving is under way"
    s.start()
    r = s.client()

    def check():
        p = r.pipeline(transaction=False)
        for k in keys:
            p.execute_command("CONV.HISTORY", k, "FORMAT", "full")
        for k, h in zip(keys, p.execute()):
            got = seqs(json.loads(h))
            assert got == list(range(1, len(got) + 1)), (k, got)
            assert acked[k] <= len(got) <= acked[k] + 1, (k, acked[k], got)
            assert all(m["content"] == f"{k} turn {m['seq']}" for m in json.loads(h))

    check()
    # Let the restarted timer finish the archiving the crash interrupted, then check again.
    wait_for(lambda: stats(r)["hot_messages"] <= 5 * len(keys) and stats(r)["io_queue_depth"] == 0,
             timeout=180, what="archiving settled")
    check()
    assert stats(r)["io_errors"] == 0


# 8 -------------------------------------------------------------------------------------------

def test_corrupt_and_truncated_files_give_errors_not_crashes(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    make_cold(r, "flipped", 20)
    make_cold(r, "cut", 20)
    good = make_cold(r, "good", 20)
    path = archive_path(s, "flipped")
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    for i in range(mid, mid + 8):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))
    path = archive_path(s, "cut")
    data = open(path, "rb").read()
    header_len = 20 + len(b"cut") + 4
    assert data[header_len:header_len + 4] in (b"SEG1", b"SEG2")
    open(path, "wb").write(data[: header_len + (len(data) - header_len) // 2])
    errors_before = stats(r)["io_errors"]
    for key in ("flipped", "cut"):
        for cmd in (["CONV.HISTORY", key], ["CONV.HISTORY", key, "FORMAT", "resp"],
                    ["CONV.CTX", key, "COUNT", 3], ["CONV.SEARCH", key, "TEXT", "turn"]):
            with pytest.raises(redis.ResponseError) as e:
                r.execute_command(*cmd)
            assert "archive" in str(e.value) and key in str(e.value), (cmd, str(e.value))
            assert r.ping()
        assert r.execute_command("CONV.LEN", key) == 20
        assert r.execute_command("CONV.ADD", key, "user", "still writable") == 21
    assert stats(r)["io_errors"] >= errors_before + 8
    assert history(r, "good") == good
    assert r.execute_command("CONV.CTX", "flipped", "COUNT", 1, "FORMAT", "text") == b"user: still writable"
    assert s.proc.poll() is None


# 9 -------------------------------------------------------------------------------------------

def test_lix_import_matches_lix_output_and_refuses_bad_names(servers, kind):
    s = servers(kind, module_args=cold_args())
    r = s.client()
    imp = os.path.join(s.dir, IMPORT_DIR)
    os.makedirs(imp)
    for f in os.listdir(FIXTURES):
        if f.endswith(".huff"):
            shutil.copy(os.path.join(FIXTURES, f), imp)
    expected = json.load(open(os.path.join(FIXTURES, "expected.json")))
    assert set(expected) == {"chat", "batch", "empty", "skewed"}
    for name, turns in expected.items():
        assert r.execute_command("CONV.IMPORT", f"imp:{name}", name) == len(turns)
        got = history(r, f"imp:{name}")
        assert [(m["role"], m["content"], m["ts"], m["meta"]) for m in got] == [
            (t["role"], t["content"], round(t["timestamp"] * 1000), t.get("metadata") or {})
            for t in turns], name
        assert seqs(got) == list(range(1, len(turns) + 1))
    assert r.execute_command("CONV.ADD", "imp:chat", "user", "next") == 5
    # The embedding came along: searching with it finds its turn first.
    found = json.loads(r.execute_command("CONV.SEARCH", "imp:chat", "EMB", fp32(0.5, -0.25, 0.001, 3.0),
                                         "K", 1, "RECENT", 0))
    assert found["relevant"][0]["content"] == expected["chat"][2]["content"]
    keys = r.dbsize()
    open(os.path.join(imp, "garbage.huff"), "wb").write(b"CAv1" + b"\x00" * 40)
    for name, msg in ((b"a/b", "plain file name"), (b"../chat", "plain file name"),
                      (b"..", "plain file name"), (b".", "plain file name"), (b"", "plain file name"),
                      (b"/etc/passwd", "plain file name"), (b"ch\x00at", "plain file name"),
                      (b"x" * 201, "plain file name"),
                      (b"missing", "cannot read"), (b"garbage", "import file")):
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("CONV.IMPORT", "newkey", name)
        assert msg in str(e.value), (name, str(e.value))
    with pytest.raises(redis.ResponseError, match="already exists"):
        r.execute_command("CONV.IMPORT", "imp:chat", "batch")
    r.set("str", "v")
    with pytest.raises(redis.ResponseError, match="already exists"):
        r.execute_command("CONV.IMPORT", "str", "batch")
    assert r.dbsize() == keys + 1 and r.get("str") == b"v"
    assert r.exists("newkey") == 0
    assert seqs(history(r, "imp:chat")) == [1, 2, 3, 4, 5]


# 10 ------------------------------------------------------------------------------------------

HOSTILE_KEYS = [b"../../etc/x", b"/abs", b"../../../../../../../../tmp/cc-escape", b"a/b/c",
                b"a\x00b", b"\xff\xfe\x00\xff", b"k" * 5000, b"..", b".", b"", b"-rf",
                b"\\win\\path", b"\n\r\t", "ключ/日本".encode()]


def huff_files(root, skip=()):
    found = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
        found.update(os.path.join(d, f) for f in files if ".huff" in f)
    return found


def test_hostile_key_names_stay_inside_the_archive_dir(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    # Other servers (other tests, other worktrees) keep their files in /tmp/convcache-*.
    others = tuple(os.path.join("/tmp", x) for x in os.listdir("/tmp") if x.startswith("convcache-"))
    tmp_before = huff_files("/tmp", skip=others + (s.dir,))
    wants = {k: make_cold(r, k, 3) for k in HOSTILE_KEYS}
    db0 = os.path.join(s.dir, ARCHIVE_DIR, "0")
    inside = huff_files(s.dir)
    assert inside == {os.path.join(db0, archive_file_name(k)) for k in HOSTILE_KEYS}
    assert all(len(os.path.basename(f)) <= 102 for f in inside)
    others = tuple(os.path.join("/tmp", x) for x in os.listdir("/tmp") if x.startswith("convcache-"))
    assert huff_files("/tmp", skip=others + (s.dir,)) == tmp_before
    for stray in ("/abs", "/abs.huff", "/tmp/cc-escape", "/tmp/cc-escape.huff",
                  os.path.join(s.dir, "etc"), os.path.join(s.dir, ARCHIVE_DIR, "etc")):
        assert not os.path.exists(stray), stray
    for k, want in wants.items():
        assert history(r, k) == want, k
    for k in HOSTILE_KEYS:
        assert r.delete(k) == 1
    wait_for(lambda: os.listdir(db0) == [], what="all files removed")


# 11 ------------------------------------------------------------------------------------------

def test_write_errors_keep_turns_in_memory_and_are_retried(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    old = make_cold(r, "old", 6)
    db0 = os.path.join(s.dir, ARCHIVE_DIR, "0")
    os.rename(db0, db0 + ".away")
    open(db0, "w").write("not a directory")  # root ignores modes; a file in the way does not
    errors = stats(r)["io_errors"]
    want = add_turns(r, "s", 10)
    wait_for(lambda: stats(r)["io_errors"] > errors, what="io error counted")
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"]) == (10, 0)
    assert history(r, "s") == want
    with pytest.raises(redis.ResponseError, match="I/O"):
        r.execute_command("CONV.FLUSH", "s")
    assert conv_info(r, "s")["hot"] == 10
    wait_for(lambda: "archiving 's' failed" in open(os.path.join(s.dir, "server.log")).read(),
             what="warning in the log")
    assert r.ping()
    os.remove(db0)
    os.rename(db0 + ".away", db0)
    wait_for(lambda: conv_info(r, "s")["archived"] == 5, timeout=20, what="retry archived")
    assert conv_info(r, "s")["hot"] == 5
    assert history(r, "s") == want
    assert history(r, "old") == old
    assert os.path.exists(archive_path(s, "s"))


# 12 ------------------------------------------------------------------------------------------

def test_info_convcache_fields_move(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    st0 = stats(r)
    for f in ("sessions", "hot_sessions", "cold_sessions", "archived_turns", "archive_writes",
              "archive_reads", "archive_bytes_written", "archive_raw_bytes_written",
              "archive_bytes_read", "rehydrations", "io_errors", "io_queue_depth",
              "timer_tick_us_max", "timer_tick_us_avg", "archive_compression_ratio"):
        assert f in st0, f
    assert st0["cold_sessions"] == 0 and st0["archived_turns"] == 0 and st0["io_queue_depth"] == 0
    p = r.pipeline(transaction=False)
    for i in range(30):
        p.execute_command("CONV.ADD", "c", "user", "the same words again and again " * 8)
    p.execute()
    add_turns(r, "h", 3)
    assert r.execute_command("CONV.FLUSH", "c") == 30
    st = stats(r)
    assert st["sessions"] == 2 and st["cold_sessions"] == 1 and st["hot_sessions"] == 1
    assert st["archived_turns"] == 30
    assert st["archive_writes"] >= 1
    assert st["archive_raw_bytes_written"] > st["archive_bytes_written"] > 0
    assert st["archive_compression_ratio"] > 1.3
    assert st["hot_messages"] == 3
    assert 0 <= st["timer_tick_us_avg"] <= st["timer_tick_us_max"]  # a tick over 2 keys may round to 0 us
    assert st["io_queue_depth"] == 0
    r.execute_command("CONV.CTX", "h")
    assert stats(r)["rehydrations"] == st["rehydrations"]
    assert len(json.loads(r.execute_command("CONV.HISTORY", "c"))) == 30
    st2 = stats(r)
    assert st2["rehydrations"] == st["rehydrations"]  # HISTORY reads the disk, brings nothing back
    assert st2["archive_reads"] == st["archive_reads"] + 1
    assert st2["archive_bytes_read"] > st["archive_bytes_read"]
    assert r.execute_command("CONV.ADD", "c", "user", "x") == 31
    st3 = stats(r)
    assert st3["cold_sessions"] == 0 and st3["hot_messages"] == 4 and st3["archived_turns"] == 30
    # CTX on the resumed session brings the rest of its window (5) back into memory.
    r.execute_command("CONV.CTX", "c")
    st3 = stats(r)
    assert st3["rehydrations"] == st["rehydrations"] + 1
    assert st3["hot_messages"] == 3 + 5 and st3["archived_turns"] == 26
    assert r.delete("c") == 1
    st4 = stats(r)
    assert st4["sessions"] == 1 and st4["archived_turns"] == 0 and st4["cold_sessions"] == 0
    assert st4["io_errors"] == 0


def test_flush_replies_and_reads_refuse_to_block_in_multi(servers, kind):
    s = servers(kind, module_args=cold_args())
    r = s.client()
    assert r.execute_command("CONV.FLUSH", "missing") == 0
    add_turns(r, "s", 4)
    assert r.execute_command("CONV.FLUSH", "s") == 4
    assert r.execute_command("CONV.FLUSH", "s") == 0
    p = r.pipeline(transaction=True)
    p.execute_command("CONV.HISTORY", "s")
    with pytest.raises(redis.ResponseError, match="cannot wait inside MULTI"):
        p.execute()
    with pytest.raises(redis.ResponseError, match="cannot wait"):
        r.eval("return redis.call('CONV.HISTORY', KEYS[1])", 1, "s")
    assert len(history(r, "s")) == 4


# Key-space changes outside DEL/RENAME ---------------------------------------------------------

def test_flushall_then_same_key_and_timestamps_keeps_the_new_turns(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    add_turns(r, "s", 8, ts0=1_700_000_000_000)
    assert r.execute_command("CONV.FLUSH", "s") == 8
    r.flushall()
    # The same conversation replayed with new content (e.g. a re-import with the source's TS).
    p = r.pipeline(transaction=False)
    for i in range(1, 4):
        p.execute_command("CONV.ADD", "s", "user", f"new {i}", "TS", 1_700_000_000_000 + i)
    p.execute()
    assert r.execute_command("CONV.FLUSH", "s") == 3
    assert [m["content"] for m in history(r, "s")] == ["new 1", "new 2", "new 3"]


def test_flushall_keeps_archive_files_and_new_sessions_never_see_them(servers, kind):
    # The documented choice: a flush never destroys archives on disk (docs/cold-tier.md);
    # the session id in each file keeps a later session of the same key from mixing them in.
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    make_cold(r, "a")
    make_cold(r, "b")
    files = sorted(os.listdir(os.path.join(s.dir, ARCHIVE_DIR, "0")))
    assert len(files) == 2
    r.flushall()
    time.sleep(0.3)
    assert sorted(os.listdir(os.path.join(s.dir, ARCHIVE_DIR, "0"))) == files
    add_turns(r, "a", 2)
    assert r.execute_command("CONV.FLUSH", "a") == 2
    assert len(history(r, "a")) == 2


def test_rename_while_an_archive_write_is_in_flight(servers, kind):
    s = servers(kind, module_args=cold_args(batch=1))
    r = s.client()
    big = "lorem ipsum dolor sit amet " * 20000  # 540 KB: a slow Huffman encode + fsync
    p = r.pipeline(transaction=False)
    for i in range(40):
        p.execute_command("CONV.ADD", "a", "user", f"{i} {big}")
    p.execute()
    wait_for(lambda: stats(r)["io_queue_depth"] > 0, interval=0.002, what="write in flight")
    assert r.rename("a", "b")
    wait_for(lambda: stats(r)["io_queue_depth"] == 0, what="write done")
    # The renamed session keeps being archived by the timer.
    for i in range(40, 45):
        r.execute_command("CONV.ADD", "b", "user", f"{i} small")
    wait_for(lambda: conv_info(r, "b")["hot"] == 5, timeout=10, what="renamed session archived")
    h = history(r, "b")
    assert [int(m["content"].split()[0]) for m in h] == list(range(45))


def test_a_flush_whose_client_leaves_is_still_applied(servers, kind):
    """The server gives no reply callback to a blocked client that disconnected; the durable
    write must still be applied (turns leave memory, the session is free for the timer)."""
    s = servers(kind, module_args=cold_args(window=5, batch=100_000))
    r = s.client()
    big = "lorem ipsum dolor sit amet " * 20000  # 540 KB a turn: the write takes a while
    p = r.pipeline(transaction=False)
    for i in range(40):
        p.execute_command("CONV.ADD", "a", "user", f"{i} {big}")
    p.execute()
    assert conv_info(r, "a")["hot"] == 40
    import socket
    sock = socket.create_connection(("127.0.0.1", s.port))
    sock.sendall(b"*2\r\n$10\r\nCONV.FLUSH\r\n$1\r\na\r\n")
    sock.close()  # gone before the write is durable
    wait_for(lambda: conv_info(r, "a")["hot"] == 0, timeout=20, what="flush applied")
    assert conv_info(r, "a")["archived"] == 40
    # Nothing is left pending: the next overflow is archived again.
    assert [m["seq"] for m in history(r, "a")] == list(range(1, 41))
    r.execute_command("CONV.ADD", "a", "user", "one more")
    assert r.execute_command("CONV.FLUSH", "a") == 1
