"""Memory pressure against real Valkey 9 and Redis 7 servers: a small `maxmemory` filled
well past it by many sessions, under `allkeys-lru` (the server evicts session keys: their
turns go to their archives and come back) and `noeviction` (pressure archiving keeps ADDs
from OOM errors); sequence numbers at the top of their range. Every acknowledged turn must
read back, in order, with its sequence number, after eviction, a restart and on a replica."""
import json
import os
import time

import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up

SESSIONS, TURNS = 1500, 20
BODY = "x" * 400
MAX_SEQ = 1 << 53


def module_args(**more):
    cfg = {"window": 20, "timer-interval-ms": 20}
    cfg.update({k.replace("_", "-"): v for k, v in more.items()})
    return [str(x) for kv in cfg.items() for x in kv]


def fill(r, sessions=SESSIONS, turns=TURNS):
    """Pipelined ADDs; returns {session: [acknowledged seq, ...]} and the errors."""
    acked, errors = {}, []
    for t in range(turns):
        p = r.pipeline(transaction=False)
        for s in range(sessions):
            p.execute_command("CONV.ADD", f"chat:{s}", "user", f"{t}:{s}:{BODY}")
        for s, reply in zip(range(sessions), p.execute(raise_on_error=False)):
            if isinstance(reply, Exception):
                errors.append(str(reply))
            else:
                acked.setdefault(s, []).append(reply)
    return acked, errors


def evict_some(r, acked):
    """Big plain values make the server evict the least recently used sessions; returns
    sessions that are gone from the keyspace."""
    for i in range(64):
        gone = [s for s in acked if not r.exists(f"chat:{s}")]
        if len(gone) >= 60:
            return gone
        r.set(f"filler:{i}", "f" * (1 << 20))
    raise AssertionError("the server never evicted a session")


def lost(r, acked):
    """Sessions whose history is not exactly their acknowledged turns."""
    bad = []
    for s, seqs in acked.items():
        h = json.loads(r.execute_command("CONV.HISTORY", f"chat:{s}", "FORMAT", "full"))
        if [m["seq"] for m in h] != seqs or any(
                not m["content"].startswith(f"{i}:{s}:") for i, m in enumerate(h)):
            bad.append(s)
    return bad


# Pressure archiving off (its mark at 100%), so the server has to evict.
EVICTING = dict(pressure_high=100, pressure_low=100)


def test_eviction_keeps_every_turn(servers, kind):
    srv = servers(kind, module_args=module_args(**EVICTING),
                  extra=["--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru",
                         "--appendonly", "yes"])
    r = srv.client()
    acked, errors = fill(r)
    evicted = r.info("stats")["evicted_keys"]
    assert evicted > 0, "the test must make the server evict"
    info = r.info("convcache")
    assert info["convcache_evicted_kept"] > 0
    assert sum(map(len, acked.values())) > 0.9 * SESSIONS * TURNS, errors[:3]
    assert lost(r, acked) == []
    # An evicted session keeps its counter: the next ADD continues it.
    gone = evict_some(r, acked)[0]
    n = r.execute_command("CONV.ADD", f"chat:{gone}", "user", f"{TURNS}:{gone}:again")
    assert n == acked[gone][-1] + 1
    acked[gone].append(n)
    assert r.execute_command("CONV.LEN", f"chat:{gone}") == len(acked[gone])
    srv.restart()
    assert lost(srv.client(), acked) == []


def test_eviction_on_a_replica_and_deletes_keep_their_meaning(servers, kind):
    srv = servers(kind, module_args=module_args(**EVICTING),
                  # Room for the replica's replication buffers besides the sessions.
                  extra=["--maxmemory", "24mb", "--maxmemory-policy", "allkeys-lru"])
    rep = replica_of(servers, srv)
    r = srv.client()
    acked, _ = fill(r, sessions=3000, turns=20)
    assert r.info("stats")["evicted_keys"] > 0
    # Reads on the primary bring nothing back; an ADD does, and the replica follows.
    gone = evict_some(r, acked)
    back = gone[:50]
    assert back, "sessions were evicted"
    for s in back:
        acked[s].append(r.execute_command("CONV.ADD", f"chat:{s}", "user", f"{len(acked[s])}:{s}:x"))
    wait_replica_caught_up(srv, rep)
    wait_for(lambda: rep.client().info("convcache")["convcache_io_queue_depth"] == 0)
    assert lost(rep.client(), {s: acked[s] for s in back}) == []
    # CONV.DEL deletes an evicted session; it does not come back.
    victim = next(s for s in gone[50:] if not r.exists(f"chat:{s}"))
    assert r.execute_command("CONV.DEL", f"chat:{victim}") == 1
    assert r.execute_command("CONV.LEN", f"chat:{victim}") == 0
    assert r.execute_command("CONV.ADD", f"chat:{victim}", "user", "new") == 1
    # FLUSHALL deletes evicted sessions too.
    r.flushall()
    assert all(r.execute_command("CONV.LEN", f"chat:{s}") == 0 for s in list(acked)[:100])


def test_noeviction_pressure_archives_instead_of_oom(servers, kind):
    # Marks that leave room for what a pipelined round adds between two ticks.
    srv = servers(kind, module_args=module_args(pressure_high=60, pressure_low=50),
                  extra=["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
    r = srv.client()
    acked, errors = {}, []
    # 300 conversations of 100 turns, sizes that differ by session (as real ones do), 100
    # ADDs a pipeline from a busy client: the windows alone would need ~15 MB, so the module
    # has to send the least recently used sessions' turns to disk to take every ADD.
    sessions, turns = 300, 100
    for t in range(turns):
        for lo in range(0, sessions, 100):
            time.sleep(0.002)
            a, e = fill_range(r, range(lo, lo + 100), t)
            errors += e
            for s, seqs in a.items():
                acked.setdefault(s, []).extend(seqs)
    info = r.info("convcache")
    assert info["convcache_pressure_sessions"] > 0, "pressure must have archived"
    assert info["convcache_pressure_turns"] > 0
    assert not errors, (len(errors), errors[:2])
    assert r.info("memory")["used_memory"] <= 10 << 20
    assert lost(r, acked) == []


def fill_range(r, sessions, t):
    acked, errors = {}, []
    p = r.pipeline(transaction=False)
    for s in sessions:
        p.execute_command("CONV.ADD", f"chat:{s}", "user", f"{t}:{s}:" + "y" * (150 + s * 37 % 500))
    for s, reply in zip(sessions, p.execute(raise_on_error=False)):
        if isinstance(reply, Exception):
            errors.append(str(reply))
        else:
            acked.setdefault(s, []).append(reply)
    return acked, errors


def test_sequence_numbers_stop_at_the_top(servers, kind):
    srv = servers(kind, module_args=module_args(), extra=["--appendonly", "yes"])
    rep = replica_of(servers, srv)
    r = srv.client()
    assert r.execute_command("CONV.ADD", "k", "user", "a", "SEQ", MAX_SEQ - 1) == MAX_SEQ - 1
    assert r.execute_command("CONV.ADD", "k", "user", "b") == MAX_SEQ
    with pytest.raises(redis.ResponseError, match="past the largest"):
        r.execute_command("CONV.ADD", "k", "user", "c")
    with pytest.raises(redis.ResponseError, match="SEQ"):
        r.execute_command("CONV.ADD", "k2", "user", "c", "SEQ", MAX_SEQ + 1)
    with pytest.raises(redis.ResponseError, match="SEQ"):
        r.execute_command("CONV.ADD", "k2", "user", "c", "SEQ", 2**63 - 1)
    assert r.execute_command("CONV.LEN", "k") == 2 and not r.exists("k2")
    want = [MAX_SEQ - 1, MAX_SEQ]

    def seqs(c):
        return [m["seq"] for m in json.loads(c.execute_command("CONV.HISTORY", "k", "FORMAT", "full"))]
    assert seqs(r) == want
    wait_replica_caught_up(srv, rep)
    assert seqs(rep.client()) == want
    r.execute_command("DEBUG", "LOADAOF")
    assert seqs(r) == want
    srv.restart()
    assert seqs(srv.client()) == want


def test_a_write_storm_keeps_turns_in_memory_bounded(servers, kind):
    # The storm of `make bench` (benches/bench_storm.py), smaller; only the bound is checked,
    # with generous slack (the bench reports the figures against the goals).
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benches"))
    from storm import storm
    srv = servers(kind, module_args=module_args())
    f = storm(srv, adds=400_000, sessions=5000)
    assert f["peak_over_windows"] <= 4, f
    assert f["drain_s"] is not None, f
