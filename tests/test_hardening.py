"""No payload may crash the server or half-apply (issue 8, section 1), against real Valkey 9
and Redis 7 servers: hostile DUMP payloads, `_LOAD` payloads and internal commands, refused
writes that must change nothing, and the errors that name what is wrong."""
import json
import os
import struct

import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up
from payloads import (dump_of, fix_archive_crcs, more_payload, parse_module_value, sc_entries,
                      sc_header, seal, session_payload, split_dump, turn)

ARCHIVE_DIR = "convcache-archive"
COLD = ["window", "5", "archive-batch", "1000000", "timer-interval-ms", "20", "idle-archive", "3600"]


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


@pytest.fixture
def srv(kind, servers):
    s = servers(kind, module_args=COLD)
    s.client().config_set("rdbcompression", "no")  # DUMP strings stay parseable
    return s


@pytest.fixture
def r(srv):
    return srv.client()


def info_of(r, key):
    info = r.execute_command("CONV.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode(): v for k, v in info.items()}


def refused(r, *argv):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command(*argv)
    return str(e.value)


def frame_of(r, key):
    """(prefix, strings, rdb version) of a key's DUMP."""
    value, version = split_dump(r.dump(key))
    prefix, strings = parse_module_value(value)
    return prefix, strings, version


def history(r, key):
    return json.loads(r.execute_command("CONV.HISTORY", key, "FORMAT", "full"))


# 1. Truncated or altered DUMP payloads ------------------------------------------------------

def test_truncated_dump_payloads_are_refused_not_fatal(srv, r):
    r.execute_command("CONV.ADD", "k", "user", "hi")
    r.execute_command("SEMCACHE.SET", "sc", fp32(1, 2, 3), "answer", "META", '{"m":1}')
    r.set("plain", "v")
    before = [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("k", "sc", "plain")]
    for key in ("k", "sc"):
        value, version = split_dump(r.dump(key))
        # The example: the first 11 bytes of the value, the version, a right CRC.
        for cut in (11, 1, len(value) // 2, len(value) - 1):
            e = refused(r, "RESTORE", key + "2", 0, seal(value[:cut] + version))
            assert "Bad data format" in e or "payload" in e.lower(), e
            assert r.ping() and r.exists(key + "2") == 0
    # Altered with the CRC recomputed: a session payload whose length says more than is there.
    prefix, strings, version = frame_of(r, "k")
    longer = prefix + b"\x05" + bytes([len(strings[0]) + 9]) + strings[0]
    refused(r, "RESTORE", "k3", 0, seal(longer + version))
    assert srv.proc.poll() is None and r.exists("k3") == 0
    assert [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in ("k", "sc", "plain")] == before
    assert "cannot load session 'k2'" in srv.log_tail(200)
    assert "handle-io-errors" in str(r.execute_command("INFO", "modules"))


def test_valid_values_still_load_from_restore_debug_reload_and_restart(srv, r):
    r.execute_command("CONV.ADD", "hot", "user", "hello", "META", '{"a":[1]}', "EMB", fp32(1, 0))
    for i in range(6):
        r.execute_command("CONV.ADD", "cold", "user", f"turn {i}")
    assert r.execute_command("CONV.FLUSH", "cold") == 6
    r.execute_command("SEMCACHE.SET", "sc", fp32(1, 2), "answer")
    keys = ("hot", "cold", "sc")
    reads = lambda: ([history(r, k) for k in ("hot", "cold")],  # noqa: E731
                     [r.execute_command("DEBUG", "DIGEST-VALUE", k) for k in keys])
    before = reads()
    for k in keys:
        r.restore(k + ":copy", 0, r.dump(k))
    assert history(r, "cold:copy") == before[0][1]
    r.execute_command("DEBUG", "RELOAD")
    assert reads() == before
    r.save()
    srv.restart()
    r = srv.client()
    assert reads() == before
    assert history(r, "cold:copy") == before[0][1]


def test_restore_refuses_an_archive_that_does_not_hold_the_archived_turns(srv, r):
    for i in range(6):
        r.execute_command("CONV.ADD", "cold", "user", f"turn {i}")
    r.execute_command("CONV.FLUSH", "cold")
    prefix, (payload, archive), version = frame_of(r, "cold")
    assert archive[:4] == b"CCAR"
    damaged = bytearray(archive)
    damaged[-3] ^= 0x20
    for bad in (bytes(damaged), archive[:-5], b"CCAR" + archive[4:40]):
        refused(r, "RESTORE", "c2", 0, dump_of(prefix, [payload, bad], version))
        assert r.exists("c2") == 0
    # With the CRCs recomputed the damage reaches the decoders, which refuse it too.
    from payloads import archive_segments
    segs = archive_segments(archive)
    for at in range(segs[0][0] + segs[0][2], len(archive), 7):
        edited = bytearray(archive)
        edited[at] ^= 0x5A
        try:
            r.restore("c2", 0, dump_of(prefix, [payload, fix_archive_crcs(bytes(edited), segs)], version))
        except redis.ResponseError:
            assert r.exists("c2") == 0
            continue
        history(r, "c2")  # accepted: reads back
        r.delete("c2")
    # Without its archive a RESTORE is refused; an RDB load (one lost file) still loads.
    refused(r, "RESTORE", "c2", 0, dump_of(prefix, [payload, b""], version))
    assert r.exists("c2") == 0
    r.restore("c2", 0, dump_of(prefix, [payload, archive], version))
    assert history(r, "c2") == history(r, "cold")
    from test_archive import archive_path
    os.remove(archive_path(srv, "c2"))
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("CONV.LEN", "c2") == 6
    assert "'c2' (db 0) has 6 archived turns but its RDB value carries no archive file" in srv.log_tail(50)
    assert "archive" in refused(r, "CONV.HISTORY", "c2")


def test_a_corrupt_session_in_an_rdb_file_is_refused_cleanly_at_startup(servers, kind):
    from harness import Server
    from payloads import crc64
    s = servers(kind, module_args=COLD)
    r = s.client()
    r.config_set("rdbcompression", "no")
    r.execute_command("CONV.ADD", "k", "user", "hello there", "WINDOW", 7)
    r.save()
    s.stop()
    path = os.path.join(s.dir, "dump.rdb")
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\x04\x00\x07\x02")  # codec version 4, kind, window 7, next_seq 2
    data[at + 2] = 0  # window 0: the RDB's own CRC-64 is recomputed below
    body = bytes(data[:-8])
    open(path, "wb").write(body + struct.pack("<Q", crc64(body)))
    again = Server(kind, module_args=COLD, workdir=s.dir)
    with pytest.raises(RuntimeError, match="exited early"):
        again.start()
    log = again.log_tail(40)
    assert "cannot load session 'k' (db 0): corrupt session payload: window 0" in log
    assert "crashed by signal" not in log and "STACK TRACE" not in log


# 2. _LOAD continuations are all or nothing ---------------------------------------------------

def test_load_continuation_is_checked_whole_before_anything_is_added(r):
    r.execute_command("CONV.ADD", "k", "user", "a")
    e = refused(r, "CONV._LOAD", "k", more_payload([turn(100), turn(100)]))
    assert r.execute_command("CONV.LEN", "k") == 1
    assert "corrupt session payload: turn 100 does not come after turn 100" in e
    # Each turn fine on its own, the second past the header's next_seq: nothing is added.
    r.execute_command("CONV._LOAD", "s", session_payload([turn(1)], next_seq=50))
    e = refused(r, "CONV._LOAD", "s", more_payload([turn(10), turn(60)]))
    assert "turn 60 is not below the session's next sequence number 50" in e
    assert r.execute_command("CONV.LEN", "s") == 1
    r.execute_command("CONV._LOAD", "s", more_payload([turn(10), turn(49)]))
    assert [m["seq"] for m in history(r, "s")] == [1, 10, 49]
    assert r.execute_command("CONV.ADD", "s", "user", "next") == 50


# 3. The decoder refuses what CONV.ADD refuses -----------------------------------------------

BAD_TURNS = [
    (turn(1, meta="x"), "META is not valid JSON"),
    (turn(1, meta="[1]"), "META must be a JSON object"),
    (turn(1, role=""), "role must be non-empty"),
    (turn(1, role="r" * 257), "role must be non-empty"),
    (turn(1, emb=[float("nan")]), "EMB: vector holds NaN or Inf"),
    (turn(1, emb=[]), "EMB: vector is empty"),
    (turn(1, ts=-1), "TS must be between 0"),
    (turn(1, flags=4), "unknown flags"),
]


def test_payloads_with_turns_add_would_refuse_are_refused_everywhere(r):
    r.execute_command("CONV.ADD", "model", "user", "x")
    prefix, _, version = frame_of(r, "model")
    for t, why in BAD_TURNS:
        assert why in refused(r, "CONV._LOAD", "k", session_payload([t]))
        assert why in refused(r, "CONV._LOAD", "model", more_payload([t]))
        refused(r, "RESTORE", "k", 0, dump_of(prefix, [session_payload([t]), b""], version))
        assert r.exists("k") == 0
    assert r.execute_command("CONV.LEN", "model") == 1
    bad_headers = [
        (dict(window=0), "window 0 is not between 1 and 1000000"),
        (dict(window=1_000_001), "window 1000001"),
        (dict(next_seq=1), "next_seq 1 is not past the last turn 1"),
        (dict(archive_upto=2), "archive_upto 2 is not below next_seq 2"),
        (dict(archived=(2, 1, 1)), "archived range of 2 turns"),
        (dict(auto_expire=-5), "auto_expire_ms -5 is negative"),
    ]
    for kw, why in bad_headers:
        turns = [] if "archived" in kw else [turn(1)]
        assert why in refused(r, "CONV._LOAD", "k", session_payload(turns, **kw))
        assert r.exists("k") == 0
    # A valid one renders valid JSON.
    r.execute_command("CONV._LOAD", "k", session_payload([turn(1, meta='{"a":1}', emb=[1.0])]))
    assert history(r, "k")[0]["meta"] == {"a": 1}


def test_semcache_load_refuses_out_of_range_headers_and_bad_entries(r):
    r.execute_command("SEMCACHE.SET", "sc", fp32(1, 0), "a")
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "sc")
    for payload, why in [
        (sc_header(2, 0, 1, 0), "max_items 0 is not between 1 and 1000000"),
        (sc_header(2, 10, 20, 11), "11 entries are more than max_items 10"),
        (sc_header(1 << 28, 10, 1, 0), "dimension 268435456 is over"),
        (sc_entries([(2, [0.0, 0.0], b"r", None, 0)], 3), "has norm 0, not 1"),
        (sc_entries([(2, [0.6, 0.8], b"r", "[]", 0)], 3), "META must be a JSON object"),
        (sc_entries([(2, [0.6, 0.8], b"", None, 0), (2, [0.6, 0.8], b"", None, 0)]), "does not come after"),
        (b"garbage", "not a semcache payload (first byte 103"),
    ]:
        assert why in refused(r, "SEMCACHE._LOAD", "sc", payload)
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "sc") == digest
    r.execute_command("SEMCACHE._LOAD", "sc", sc_entries([(2, [0.6, 0.8], b"b", '{"x":1}', 0)], 3))
    assert r.execute_command("SEMCACHE.GET", "sc", fp32(0.6, 0.8)) == b"b"


# 4. A refused CONV.ADD changes nothing; a session keeps its window -----------------------------

def test_refused_add_changes_nothing_and_sessions_keep_their_window(servers, kind):
    primary = servers(kind, module_args=["window", "5", "archive-batch", "1000000"])
    p = primary.client()
    replica = replica_of(servers, primary)
    p.execute_command("CONV.ADD", "k", "user", "a", "WINDOW", 7)
    assert "SEQ 1 is not past" in refused(p, "CONV.ADD", "k", "user", "b", "SEQ", 1, "WINDOW", 3)
    assert info_of(p, "k")["window"] == 7
    refused(p, "CONV.ADD", "k", "user", "b", "SEQ", 1)
    assert info_of(p, "k")["window"] == 7
    # A plain ADD keeps the session's window; WINDOW changes it; a new session gets the config's.
    p.execute_command("CONV.ADD", "k", "user", "c")
    assert info_of(p, "k")["window"] == 7
    p.execute_command("CONV.ADD", "k", "user", "d", "WINDOW", 9)
    p.execute_command("CONV.ADD", "k", "user", "e")
    assert info_of(p, "k")["window"] == 9
    p.execute_command("CONV.ADD", "new", "user", "x")
    assert info_of(p, "new")["window"] == 5
    wait_replica_caught_up(primary, replica)
    rr = replica.client()
    for key in ("k", "new"):
        assert rr.execute_command("DEBUG", "DIGEST-VALUE", key) == p.execute_command("DEBUG", "DIGEST-VALUE", key)
        assert info_of(rr, key)["window"] == info_of(p, key)["window"]


# 5. Internal commands check every argument ----------------------------------------------------

def test_internal_commands_check_every_argument(srv, r):
    for i in range(4):
        r.execute_command("CONV.ADD", "k", "user", f"m{i}")
    r.execute_command("CONV.FLUSH", "k")
    r.execute_command("CONV.ADD", "k", "user", "hot")
    digest = r.execute_command("DEBUG", "DIGEST-VALUE", "k")
    path_dir = os.path.join(srv.dir, ARCHIVE_DIR, "0")
    files = os.listdir(path_dir)
    cases = [
        (["CONV._ARCHIVED", "k", 0, "FOO", 1], "upto must be between 1"),
        (["CONV._ARCHIVED", "k", 2, "FOO", 1], "unknown option 'FOO'"),
        (["CONV._ARCHIVED", "k", 2, "PXAT", 1], "PXAT must be between"),
        (["CONV._ARCHIVED", "k", 2, "PXAT", "soon"], "PXAT is not an integer"),
        (["CONV._ARCHIVED", "k", 6], "upto 6 is past the session's last sequence number 5"),
        (["CONV._ARCHIVED", "k", "x"], "upto is not an integer"),
        (["CONV._ARCHIVED", "k", 1, "PXAT"], "wrong number of arguments"),
        (["CONV._REHYDRATED", "k", more_payload([turn(5)])], "turns 5..5 are not archived turns"),
        (["CONV._REHYDRATED", "k", more_payload([])], "no turns"),
        (["CONV._REHYDRATED", "k", session_payload([turn(1)])], "payload must hold turns brought back into memory"),
        (["CONV._REHYDRATED", "k", b"garbage"], "not a session payload (first byte 103"),
        (["CONV._LOAD", "k", b"garbage"], "not a session payload (first byte 103"),
        (["CONV._LOAD", "k", bytes([0, 1, 0])], "first byte 0 is no encoding version"),
        (["CONV._LOAD", "k", bytes([2, 9, 0])], "unknown payload kind 9"),
        (["CONV._LOAD", "k"], "wrong number of arguments"),
    ]
    for argv, why in cases:
        assert why in refused(r, *argv), argv
    assert r.execute_command("DEBUG", "DIGEST-VALUE", "k") == digest
    assert r.pttl("k") == -1 and sorted(os.listdir(path_dir)) == sorted(files)
    assert len(history(r, "k")) == 5
    # A sane PXAT from a client is taken (what the primary would send).
    at = int(r.time()[0]) * 1000 + 14 * 86_400_000
    assert r.execute_command("CONV._ARCHIVED", "k", 4, "pxat", at) == 1
    assert r.execute_command("PEXPIRETIME", "k") == at


# 6. Errors that say what is wrong ---------------------------------------------------------------

def test_errors_name_what_is_wrong(srv, r):
    r.execute_command("CONV.ADD", "k", "user", "x", "EMB", fp32(1, 0, 0, 0))
    assert "TEXT needs a value" in refused(r, "CONV.SEARCH", "k", "TEXT")
    assert "EMB needs a value" in refused(r, "CONV.SEARCH", "k", "EMB")
    assert "needs EMB vector or TEXT query" in refused(r, "CONV.SEARCH", "k", "K", 5)
    e = refused(r, "CONV.SEARCH", "k", "EMB", fp32(1, 0, 0))
    assert "EMB has dimension 3 but the session's embeddings have 4" in e
    assert json.loads(r.execute_command("CONV.SEARCH", "k", "EMB", fp32(0, 1, 0, 0)))["recent"]
    # Decided on the I/O thread when the turns are archived.
    for i in range(6):
        r.execute_command("CONV.ADD", "c", "user", f"m{i}", "EMB", fp32(i, 1, 0, 0))
    r.execute_command("CONV.FLUSH", "c")
    e = refused(r, "CONV.SEARCH", "c", "EMB", fp32(1, 0), "RECENT", 0)
    assert "EMB has dimension 2 but the session's embeddings have 4" in e
    assert len(json.loads(r.execute_command("CONV.SEARCH", "c", "EMB", fp32(1, 1, 0, 0), "RECENT", 0))["relevant"]) == 5
    # A session without embeddings: nothing to compare, not an error.
    r.execute_command("CONV.ADD", "plain", "user", "x")
    assert json.loads(r.execute_command("CONV.SEARCH", "plain", "EMB", fp32(1, 0)))["relevant"] == []
    # A denormal vector is not called zero.
    e = refused(r, "SEMCACHE.SET", "sc", fp32(1e-40, -1e-40), "x")
    assert "denormal" in e and "zero norm" not in e
    assert "zero norm" in refused(r, "SEMCACHE.SET", "sc", fp32(0, 0), "x")
    # A damaged first archive segment is named, not called missing turns.
    from test_archive import archive_path
    data = bytearray(open(archive_path(srv, "c"), "rb").read())
    header_len = 20 + 1 + 4
    data[header_len + 60] ^= 1  # in the payload, past a 52-byte SEG2 header
    open(archive_path(srv, "c"), "wb").write(bytes(data))
    e = refused(r, "CONV.HISTORY", "c")
    assert f"segment 0 at offset {header_len}: segment payload CRC32 mismatch" in e, e
    assert "missing turns" not in e


# 7. With read errors handled, replicas may load diskless: still the same data -----------------

def test_diskless_replica_loads_sessions_and_caches(servers, kind):
    primary = servers(kind, module_args=COLD, extra=["--repl-diskless-sync", "yes",
                                                     "--repl-diskless-sync-delay", "0"])
    p = primary.client()
    for i in range(6):
        p.execute_command("CONV.ADD", "cold", "user", f"turn {i}")
    p.execute_command("CONV.FLUSH", "cold")
    p.execute_command("CONV.ADD", "hot", "user", "h", "META", '{"a":1}')
    p.execute_command("SEMCACHE.SET", "sc", fp32(1, 2), "r")
    replica = servers(kind, module_args=COLD, extra=[
        "--replicaof", "127.0.0.1", str(primary.port), "--repl-diskless-load", "on-empty-db",
        "--propagation-error-behavior", "panic"])
    rr = replica.client()
    wait_for(lambda: rr.info("replication").get("master_link_status") == "up", timeout=20,
             what="replica link up")
    assert "don't handle read errors" not in replica.log_tail(200)
    for key in ("cold", "hot", "sc"):
        assert rr.execute_command("DEBUG", "DIGEST-VALUE", key) == p.execute_command("DEBUG", "DIGEST-VALUE", key)
    assert history(rr, "cold") == history(p, "cold")


# 8. Imports obey the same rules (what is imported must load again from RDB/AOF) -----------

def test_import_refuses_turns_add_would_refuse(srv, r, tmp_path):
    lix = pytest.importorskip("lix_open_cache.conversation_archive")
    arch = lix.ConversationArchive(str(tmp_path))
    ok = {"role": "user", "content": "fine", "timestamp": 1700000000.5, "metadata": {}}
    arch.append_turns("emptyrole", [ok, dict(ok, role="")])
    arch.append_turns("longrole", [dict(ok, role="r" * 300)])
    arch.append_turns("negative", [dict(ok, timestamp=-5.0)])
    arch.append_turns("good", [ok])
    imp = os.path.join(srv.dir, "convcache-import")
    os.makedirs(imp, exist_ok=True)
    for name in ("emptyrole", "longrole", "negative", "good"):
        os.replace(os.path.join(str(tmp_path), name + ".huff"), os.path.join(imp, name + ".huff"))
    for name, why in (("emptyrole", "turn 1: role must be non-empty"),
                      ("longrole", "turn 0: role must be non-empty"),
                      ("negative", "turn 0: TS must be between 0")):
        e = refused(r, "CONV.IMPORT", name, name)
        assert f"import file '{name}.huff': {why}" in e, e
        assert r.exists(name) == 0
    assert r.execute_command("CONV.IMPORT", "good", "good") == 1
    r.execute_command("DEBUG", "RELOAD")
    assert history(r, "good")[0]["content"] == "fine"
