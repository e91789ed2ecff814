"""Archive codec v2 against real servers: the archive directory trains its zstd dictionary
in the background, new segments name it, and a session reads back wherever it goes (restart,
DUMP/RESTORE, MIGRATE, full sync, failover, AOF) although other nodes lack the dictionary.
A missing, truncated or corrupt dictionary is an error for the sessions that need it only."""
import json
import os
import shutil
import struct

import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up
from test_archive import ARCHIVE_DIR, archive_path, cold_args, conv_info, history, stats

WORDS = ("the cache keeps a window of recent turns in memory and moves older ones to disk "
         "where they are compressed with a dictionary trained on earlier conversations so "
         "that small segments compress like whole files please explain how sessions expire "
         "and what happens when a replica takes over after a failover").split()


def prose(key, i):
    n = len(WORDS)
    words = [WORDS[(i * 7 + j * 3 + len(key)) % n] for j in range(25 + i % 20)]
    return f"{key} turn {i}: " + " ".join(words) + "."


def add_session(r, key, n=12, first=1):
    p = r.pipeline(transaction=False)
    for i in range(first, first + n):
        p.execute_command("CONV.ADD", key, "user" if i % 2 else "assistant", prose(key, i),
                          "META", json.dumps({"i": i, "model": "m"}),
                          "EMB", struct.pack("<2f", i, 1.0), "TS", 1_700_000_000_000 + i)
    p.execute()
    assert r.execute_command("CONV.FLUSH", key) > 0
    return history(r, key)


def dict_args(**more):
    return cold_args(**{"batch": 2, "archive_dict_min_bytes": 20000, **more})


def segments(path):
    """(magic, codec, dict id) of each segment of an archive file."""
    data = open(path, "rb").read()
    key_len = struct.unpack_from("<I", data, 16)[0]
    off = 20 + key_len + 4
    out = []
    while off < len(data):
        magic = data[off:off + 4]
        comp = struct.unpack_from("<I", data, off + 28)[0]
        if magic == b"SEG1":
            out.append(("SEG1", 1, 0))
            off += 40 + comp
        else:
            out.append(("SEG2", data[off + 36], struct.unpack_from("<Q", data, off + 40)[0]))
            off += 52 + comp
    return out


def trained(s, r, prefix=""):
    """Fills the archive until the dictionary exists; returns its id and the sessions, with
    `pre0` archived without a dictionary and `post*` with it."""
    want = {}
    for i in range(20):
        want[f"{prefix}pre{i}"] = add_session(r, f"{prefix}pre{i}")
    wait_for(lambda: stats(r)["archive_dict_id"] != "none", timeout=30, what="dictionary trained")
    dict_id = stats(r)["archive_dict_id"]
    path = os.path.join(s.dir, ARCHIVE_DIR, "dict", f"{dict_id}.zdict")
    assert os.path.getsize(path) > 1000
    for i in range(5):
        want[f"{prefix}post{i}"] = add_session(r, f"{prefix}post{i}")
    assert all(seg[2] == 0 for seg in segments(archive_path(s, f"{prefix}pre0")))
    assert {seg for seg in segments(archive_path(s, f"{prefix}post0"))} == \
        {("SEG2", 2, int(dict_id, 16))}
    return dict_id, path, want


def check_all(r, want):
    for k, v in want.items():
        assert history(r, k) == v, k


def test_dictionary_is_trained_used_and_survives_restart_and_aof(servers, kind):
    s = servers(kind, module_args=dict_args(),
                extra=["--appendonly", "yes", "--aof-use-rdb-preamble", "no"])
    r = s.client()
    dict_id, _, want = trained(s, r)
    st = stats(r)
    assert st["archive_codec"] == "zstd" and st["archive_dict_trainings"] == 1
    assert 0 < float(st["archive_disk_ratio"]) < 1
    check_all(r, want)
    r.save()
    s.restart()
    r = s.client()
    assert stats(r)["archive_dict_id"] == dict_id  # the restarted node keeps using it
    check_all(r, want)
    want["post9"] = add_session(r, "post9")
    assert segments(archive_path(s, "post9"))[0][2] == int(dict_id, 16)
    # An AOF without RDB preamble carries decoded turns: a node without archive dir (and
    # without the dictionary) rebuilds everything from it.
    r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_last_bgrewrite_status"] == "ok", what="aof rewrite")
    s.stop()
    os.remove(os.path.join(s.dir, "dump.rdb"))
    shutil.rmtree(os.path.join(s.dir, ARCHIVE_DIR))
    s.start()
    check_all(s.client(), want)


def test_dump_restore_and_migrate_reach_nodes_without_the_dictionary(servers, kind):
    a = servers(kind, module_args=dict_args())
    b = servers(kind, module_args=dict_args(archive_dict_min_bytes=0))
    ra, rb = a.client(), b.client()
    _, _, want = trained(a, ra)
    for k in ("pre0", "post0", "post1"):
        payload = ra.dump(k)
        rb.restore(k, 0, payload)
        assert history(rb, k) == want[k]
        wait_for(lambda k=k: os.path.exists(archive_path(b, k)), what=f"{k} on b")
        assert all(seg[2] == 0 for seg in segments(archive_path(b, k)))
        assert history(rb, k) == want[k]
    assert stats(rb)["archive_dict_id"] == "none"
    assert ra.migrate("127.0.0.1", b.port, ["post2", "post3"], 0, 5000) == b"OK"
    for k in ("post2", "post3"):
        assert history(rb, k) == want[k]
    # The sessions keep growing on b, and read back after a restart there.
    want["post0"] += [m for m in add_session(rb, "post0", n=3, first=13)[12:]]
    rb.save()
    b.restart()
    for k in ("pre0", "post0", "post1", "post2", "post3"):
        assert history(b.client(), k) == want[k]


def test_full_sync_replica_and_failover_without_the_primarys_dictionary(servers, kind):
    primary = servers(kind, module_args=dict_args())
    p = primary.client()
    _, _, want = trained(primary, p)
    replica = replica_of(servers, primary)  # full sync: the RDB carries dictionary-free files
    rr = replica.client()
    wait_replica_caught_up(primary, replica)
    check_all(rr, want)
    want["live"] = add_session(p, "live")  # archived by the replica into its own dir
    wait_replica_caught_up(primary, replica)
    wait_for(lambda: conv_info(rr, "live")["hot"] == 0, what="replica archived")
    primary.kill9()
    shutil.rmtree(primary.dir, ignore_errors=True)
    rr.execute_command("REPLICAOF", "NO", "ONE")
    check_all(rr, want)
    want["after"] = add_session(rr, "after")
    check_all(rr, want)


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt"])
def test_damaged_dictionary_fails_only_the_sessions_that_need_it(servers, kind, damage):
    s = servers(kind, module_args=dict_args())
    r = s.client()
    dict_id, path, want = trained(s, r)
    r.config_set("convcache.archive-codec", "huffman")
    want["huff"] = add_session(r, "huff")
    assert {seg[0] for seg in segments(archive_path(s, "huff"))} == {"SEG1"}
    r.save()
    s.stop()
    # No new dictionary after the restart: the test sees the damaged one's effects alone.
    s.module_args[s.module_args.index("archive-dict-min-bytes") + 1] = "0"
    data = open(path, "rb").read()
    if damage == "missing":
        os.remove(path)
    elif damage == "truncated":
        open(path, "wb").write(data[: len(data) // 2])
    else:
        open(path, "wb").write(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    s.start()
    r = s.client()
    for k, v in want.items():
        if any(seg[2] for seg in segments(archive_path(s, k))):
            with pytest.raises(redis.ResponseError) as e:
                history(r, k)
            msg = str(e.value)
            assert f"archive dictionary {dict_id}" in msg and k in msg, msg
            assert damage.replace("truncated", "truncated or corrupt") in msg or \
                (damage == "corrupt" and "corrupt" in msg), msg
        else:
            assert history(r, k) == v, k
    # The node goes on: new turns archive (without the lost dictionary) and read back.
    assert stats(r)["archive_dict_id"] == "none"
    assert r.execute_command("CONV.ADD", "post0", "user", "still writable") == 13
    assert r.execute_command("CONV.LEN", "post0") == 13
    assert s.proc.poll() is None


def test_archive_codec_setting(servers, kind):
    s = servers(kind, module_args=cold_args(batch=2, archive_codec="huffman"))
    r = s.client()
    assert r.config_get("convcache.archive-codec") == {"convcache.archive-codec": "huffman"}
    with pytest.raises(redis.ResponseError) as e:
        r.config_set("convcache.archive-codec", "lz4")
    assert "archive codec 'lz4' is not 'zstd' or 'huffman'" in str(e.value)
    assert stats(r)["archive_codec"] == "huffman"
    want = add_session(r, "h")
    assert {seg[0] for seg in segments(archive_path(s, "h"))} == {"SEG1"}
    r.config_set("convcache.archive-codec", "ZSTD")
    assert stats(r)["archive_codec"] == "zstd"
    want += add_session(r, "h", n=3, first=13)[12:]
    assert [seg[:2] for seg in segments(archive_path(s, "h"))][-1] == ("SEG2", 2)
    assert history(r, "h") == want
    # Too little archived for a dictionary (1 MiB by default): none is trained.
    assert stats(r)["archive_dict_id"] == "none"
    assert not os.path.exists(os.path.join(s.dir, ARCHIVE_DIR, "dict"))


def test_slot_migration_reaches_a_node_without_the_dictionary(servers, kind):
    from test_cluster import NO_ASM, TAG, slot_and_nodes, start_migration, three_primaries, wait_job
    if kind != "valkey":
        pytest.skip(NO_ASM)
    nodes = three_primaries(servers, kind, dict_args())
    slot, src, dst = slot_and_nodes(nodes)
    rs, rd = src.client(), dst.client()
    _, _, want = trained(src, rs, prefix=TAG)
    assert stats(rd)["archive_dict_id"] == "none"
    start_migration(src, slot, dst)
    job = wait_job(src, ("success", "failed", "cancelled"))
    assert job["state"] == "success", job
    check_all(rd, want)
    for k in want:
        wait_for(lambda k=k: os.path.exists(archive_path(dst, k)), what=f"{k} file on target")
    check_all(rd, want)


def huff_bytes(s):
    """Bytes of the archive files on disk; a file renamed or deleted by the I/O threads while
    the directory is walked counts as gone (callers wait for the figures to agree)."""
    root = os.path.join(s.dir, ARCHIVE_DIR)
    total = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".huff") and not f.startswith("."):
                try:
                    total += os.path.getsize(os.path.join(d, f))
                except FileNotFoundError:
                    pass
    return total


def test_info_shows_bytes_on_disk_raw_bytes_ratio_and_dictionary(servers, kind):
    s = servers(kind, module_args=dict_args())
    r = s.client()
    assert stats(r)["archive_disk_bytes"] == 0
    _, _, want = trained(s, r)
    st = stats(r)
    assert st["archive_disk_bytes"] == huff_bytes(s) > 0
    assert st["archive_raw_bytes_written"] > st["archive_bytes_written"] > 0
    assert float(st["archive_disk_ratio"]) == pytest.approx(
        st["archive_bytes_written"] / st["archive_raw_bytes_written"], abs=0.001)
    assert len(st["archive_dict_id"]) == 16
    # Every file operation moves the figure: delete, rename over another file, copy.
    r.delete("pre1")
    r.rename("pre2", "pre3")
    r.copy("post0", "copy0")
    r.execute_command("MOVE", "post1", 1)
    wait_for(lambda: stats(r)["archive_disk_bytes"] == huff_bytes(s), what="disk bytes follow")
    assert not os.path.exists(archive_path(s, "pre1"))
    r.save()
    s.stop()
    with open(archive_path(s, "pre0"), "ab") as f:
        f.write(b"torn tail" * 10)  # cut off by the next append, which the figure follows
    s.start()
    r = s.client()
    assert stats(r)["archive_disk_bytes"] == huff_bytes(s)  # counted again at start
    assert history(r, "pre0") == want["pre0"]
    want["pre0"] += add_session(r, "pre0", n=2, first=13)[12:]
    assert stats(r)["archive_disk_bytes"] == huff_bytes(s)
    assert history(r, "pre0") == want["pre0"]
