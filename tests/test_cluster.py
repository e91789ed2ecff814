"""Valkey Cluster: commands route by their declared keys (a two-node cluster where the wrong
node answers MOVED), and Valkey 9's atomic slot migration (CLUSTER MIGRATESLOTS) moves hot and
cold sessions and semantic buckets whole between the primaries of a three-node cluster."""
import json
import os
import struct
import time

import pytest
import redis

from harness import free_port, wait_for
from test_archive import (add_turns, archive_path, conv_info, history, make_cold, reads,
                          seqs)

MAX_CLUSTER_PORT = 55535  # a node's default bus port is port + 10000


def low_free_port():
    """A free loopback port no higher than MAX_CLUSTER_PORT."""
    for _ in range(1000):
        p = free_port()
        if p <= MAX_CLUSTER_PORT:
            return p
    raise RuntimeError("no free port at or below 55535")


def cluster_node(servers, kind, module_args=("window", "5")):
    # The bus port is given explicitly, and both ports stay at or below 55535.
    bus = low_free_port()
    s = servers(kind, module_args=list(module_args),
                extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(bus)], port=low_free_port())
    s.bus_port = bus
    return s


def cluster_ok(r):
    return "cluster_state:ok" in r.execute_command("CLUSTER", "INFO").decode()


def three_primaries(servers, kind, module_args):
    """Three primaries owning a third of the slots each, every node knowing the others."""
    nodes = [cluster_node(servers, kind, module_args) for _ in range(3)]
    rs = [n.client() for n in nodes]
    for r, (lo, hi) in zip(rs, [(0, 5460), (5461, 10922), (10923, 16383)]):
        r.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for n in nodes[1:]:
        rs[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port, n.bus_port)
    for r in rs:
        wait_for(lambda r=r: cluster_ok(r) and r.execute_command("CLUSTER", "NODES").count(b"connected") == 3,
                 timeout=30, what="cluster ok")
    for n, r in zip(nodes, rs):
        n.node_id = r.execute_command("CLUSTER", "MYID").decode()
    return nodes


def test_conv_commands_route_in_a_cluster(servers, kind):
    a = cluster_node(servers, kind)
    b = cluster_node(servers, kind)
    ra, rb = a.client(), b.client()
    ra.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
    rb.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
    ra.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.bus_port)
    for r in (ra, rb):
        wait_for(lambda r=r: r.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0,
                 timeout=30, what="cluster ok")
    # Keys on both nodes: each node serves its own slots and redirects the others.
    for key in ("chat:{user-1}", "chat:{user-2}", "chat:{user-3}", "chat:{user-4}"):
        slot = ra.execute_command("CLUSTER", "KEYSLOT", key)
        owner, other = (ra, rb) if slot <= 8191 else (rb, ra)
        assert owner.execute_command("CONV.ADD", key, "user", "hi") == 1
        assert json.loads(owner.execute_command("CONV.CTX", key)) == [{"role": "user", "content": "hi"}]
        for cmd in (["CONV.ADD", key, "user", "x"], ["CONV.CTX", key], ["CONV.LEN", key],
                    ["CONV.SEARCH", key, "TEXT", "hi"], ["CONV.HISTORY", key]):
            with pytest.raises(redis.exceptions.MovedError):
                other.execute_command(*cmd)
    # A cluster-aware client finds every session whatever node it asks first.
    rc = redis.RedisCluster(host="127.0.0.1", port=a.port)
    for i in range(20):
        rc.execute_command("CONV.ADD", f"s{i}", "user", f"m{i}")
    assert all(rc.execute_command("CONV.LEN", f"s{i}") == 1 for i in range(20))
    rc.close()


# Atomic slot migration (Valkey 9) ------------------------------------------------------------

NO_ASM = "Redis 7.0 has no atomic slot migration: CLUSTER MIGRATESLOTS is new in Valkey 9"
TAG = "{asm}"
KEYS = {name: f"{TAG}{name}" for name in ("hot", "mixed", "cold", "bucket", "plain")}


def f32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def cold_args(**more):
    cfg = {"window": 5, "archive-batch": 2, "idle-archive": 3600, "timer-interval-ms": 20}
    cfg.update(more)
    return [str(x) for kv in cfg.items() for x in kv]


def slot_and_nodes(nodes):
    """The slot of TAG, the node that owns it and another primary to move it to."""
    r = nodes[0].client()
    slot = r.execute_command("CLUSTER", "KEYSLOT", TAG)
    owner = next(i for i, lo in enumerate((0, 5461, 10923)) if slot >= lo and (i == 2 or slot < (5461, 10923)[i]))
    return slot, nodes[owner], nodes[(owner + 1) % 3]


def last_job(node):
    """The newest entry of CLUSTER GETSLOTMIGRATIONS on `node`, as a dict of str."""
    jobs = node.client(protocol=3).execute_command("CLUSTER", "GETSLOTMIGRATIONS")
    if not jobs:
        return {}
    return {k.decode(): v.decode() if isinstance(v, bytes) else v for k, v in jobs[0].items()}


def start_migration(src, slot, dst):
    assert src.client().execute_command(
        "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", dst.node_id) == b"OK"


def wait_job(node, states, timeout=30):
    wait_for(lambda: last_job(node).get("state") in states, timeout=timeout,
             what=f"slot migration state in {states} on port {node.port}")
    return last_job(node)


def keys_in_slot(node, slot):
    return node.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)


def digest(r, key):
    return r.execute_command("DEBUG", "DIGEST-VALUE", key)


def fill_slot(r):
    """A hot session, one with turns on disk and in memory, a cold one, a semantic bucket and
    a plain key, all in TAG's slot. Returns what HISTORY must show for each session."""
    want = {"hot": add_turns(r, KEYS["hot"], 4), "mixed": add_turns(r, KEYS["mixed"], 12)}
    wait_for(lambda: conv_info(r, KEYS["mixed"])["hot"] == 5, what="overflow archived")
    want["cold"] = make_cold(r, KEYS["cold"], 10)
    for i, (vec, answer) in enumerate([((1, 0, 0), "paris"), ((0, 1, 0), "rome"), ((0, 0, 1), "oslo")]):
        assert r.execute_command("SEMCACHE.SET", KEYS["bucket"], f32(*vec), answer) == i + 1
    r.set(KEYS["plain"], "plain value")
    return want


def test_migrateslots_moves_hot_and_cold_sessions_and_buckets(servers, kind):
    if kind != "valkey":
        pytest.skip(NO_ASM)
    nodes = three_primaries(servers, kind, cold_args())
    slot, src, dst = slot_and_nodes(nodes)
    rs, rd = src.client(), dst.client()
    assert "handle-atomic-slot-migration" in str(rs.info("modules"))
    want = fill_slot(rs)
    sessions = [KEYS[k] for k in ("hot", "mixed", "cold")]
    before = {k: reads(rs, k) for k in sessions}
    # CONV.CTX brought turns of the cold session back into memory: send them to disk again.
    rs.execute_command("CONV.FLUSH", KEYS["cold"])
    assert conv_info(rs, KEYS["cold"])["hot"] == 0
    digests = {k: digest(rs, k) for k in KEYS.values()}
    for k in ("mixed", "cold"):
        assert os.path.exists(archive_path(src, KEYS[k]))
        assert not os.path.exists(archive_path(dst, KEYS[k]))

    start_migration(src, slot, dst)
    job = wait_job(src, ("success", "failed", "cancelled"))
    assert job["state"] == "success", job

    # The new owner holds the same values (before any read brings turns back into memory),
    # and serves every turn, read directly and through a cluster client.
    assert {k: digest(rd, k) for k in KEYS.values()} == digests
    for k in sessions:
        assert reads(rd, k) == before[k], k
    for k in ("hot", "mixed", "cold"):
        assert history(rd, KEYS[k]) == want[k]
    assert rd.execute_command("SEMCACHE.LEN", KEYS["bucket"]) == 3
    assert rd.execute_command("SEMCACHE.GET", KEYS["bucket"], f32(0, 1, 0.01)) == b"rome"
    assert rd.get(KEYS["plain"]) == b"plain value"
    rc = redis.RedisCluster(host="127.0.0.1", port=src.port, protocol=2)
    try:
        assert json.loads(rc.execute_command("CONV.HISTORY", KEYS["cold"], "FORMAT", "full")) == want["cold"]
        assert rc.execute_command("CONV.LEN", KEYS["mixed"]) == 12
        assert rc.execute_command("SEMCACHE.GET", KEYS["bucket"], f32(1, 0, 0)) == b"paris"
    finally:
        rc.close()
    # The cold turns live in the new owner's own archive now, and the old owner let go of its
    # keys and files (only after the new owner had taken the slot).
    for k in ("mixed", "cold"):
        wait_for(lambda k=k: os.path.exists(archive_path(dst, KEYS[k])), what=f"{k} file on target")
        wait_for(lambda k=k: not os.path.exists(archive_path(src, KEYS[k])), what=f"{k} file gone on source")
    assert conv_info(rd, KEYS["cold"])["len"] == 10
    assert keys_in_slot(src, slot) == 0
    with pytest.raises(redis.exceptions.MovedError):
        rs.execute_command("CONV.HISTORY", KEYS["cold"])
    # The session goes on where it was: numbering, and appends after the restored archive.
    want["cold"] += add_turns(rd, KEYS["cold"], 2, first=11)
    in_memory = conv_info(rd, KEYS["cold"])["hot"]  # the 2 new ones and those reads brought back
    assert in_memory >= 2 and rd.execute_command("CONV.FLUSH", KEYS["cold"]) == in_memory
    assert conv_info(rd, KEYS["cold"])["archived"] == 12
    assert history(rd, KEYS["cold"]) == want["cold"]
    assert seqs(history(rd, KEYS["cold"])) == list(range(1, 13))


def test_cancelled_migration_loses_nothing_and_a_retry_moves_everything(servers, kind):
    if kind != "valkey":
        pytest.skip(NO_ASM)
    nodes = three_primaries(servers, kind, cold_args())
    slot, src, dst = slot_and_nodes(nodes)
    rs = src.client()
    want = fill_slot(rs)
    # Hold the migration before its last step: the target has the whole snapshot (and has
    # written the cold turns to its own archive), the source still owns the slot.
    rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 1)
    start_migration(src, slot, dst)
    wait_job(src, ("waiting-to-pause",))
    wait_for(lambda: keys_in_slot(dst, slot) == 5, what="snapshot applied on target")
    wait_for(lambda: os.path.exists(archive_path(dst, KEYS["cold"])), what="cold turns on target")
    # Writes go on at the source meanwhile and stream to the target, which decides nothing
    # about keys it does not own yet: past its own (smaller) archive batch, it archives nothing.
    rs.config_set("convcache.archive-batch", 1000)
    dst.client().config_set("convcache.archive-batch", 1)
    want["hot"] += add_turns(rs, KEYS["hot"], 6, first=5)
    time.sleep(0.5)  # 25 timer ticks of the target
    assert not os.path.exists(archive_path(dst, KEYS["hot"]))
    rs.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
    assert wait_job(src, ("cancelled", "failed"))["state"] == "cancelled"
    assert wait_job(dst, ("failed",))["state"] == "failed"
    # The target dropped the keys and the files it had made for them; the source lost nothing.
    wait_for(lambda: keys_in_slot(dst, slot) == 0, what="target cleaned up")
    wait_for(lambda: not os.path.exists(archive_path(dst, KEYS["cold"])), what="target file removed")
    for k in ("hot", "mixed", "cold"):
        assert history(rs, KEYS[k]) == want[k]
    assert os.path.exists(archive_path(src, KEYS["cold"]))
    assert conv_info(rs, KEYS["cold"])["archived"] == 10
    # Once the hold is lifted, the same migration goes through with everything.
    rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 0)
    start_migration(src, slot, dst)
    assert wait_job(src, ("success", "failed", "cancelled"))["state"] == "success"
    rd = dst.client()
    for k in ("hot", "mixed", "cold"):
        assert history(rd, KEYS[k]) == want[k]
    assert rd.execute_command("SEMCACHE.LEN", KEYS["bucket"]) == 3


def test_unreadable_archive_fails_the_migration_instead_of_losing_turns(servers, kind):
    if kind != "valkey":
        pytest.skip(NO_ASM)
    nodes = three_primaries(servers, kind, cold_args())
    slot, src, dst = slot_and_nodes(nodes)
    rs = src.client()
    make_cold(rs, KEYS["cold"], 4)
    add_turns(rs, KEYS["hot"], 2)
    os.remove(archive_path(src, KEYS["cold"]))  # the disk lost the file
    start_migration(src, slot, dst)
    job = wait_job(src, ("success", "failed", "cancelled"))
    assert job["state"] == "failed" and "snapshot" in job["message"], job
    wait_for(lambda: "cannot rewrite session '{asm}cold'" in open(os.path.join(src.dir, "server.log")).read(),
             what="reason in the source's log")
    assert keys_in_slot(src, slot) == 2
    wait_for(lambda: keys_in_slot(dst, slot) == 0, what="nothing left on target")
    # Without the broken session the slot moves.
    rs.delete(KEYS["cold"])
    start_migration(src, slot, dst)
    assert wait_job(src, ("success", "failed", "cancelled"))["state"] == "success"
    assert seqs(history(dst.client(), KEYS["hot"])) == [1, 2]
