"""convcache.lix (the drop-in, on the module's commands) against the real lix-open-cache 2.1.6,
the same calls on the same server (Valkey with the module loaded; lix uses only plain
commands), one client, in one run:

- SemanticCacheRedis.get on a 50 x 1536 bucket (goal: drop-in >= 100x lix);
- SessionContextWindow.get_context of a 20-message window (goal >= 10x);
- HybridConversationCache.add_message once 100 turns are archived (goal >= 100x).

    VALKEY_SERVER=... MODULE_SO=... python benches/bench_lix.py [--quick]

Prints a markdown table; figures are printed, never asserted (exit 0 whether goals are met).
lix's log output is switched off, which favours it.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import convcache.lix as dropin
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, os.path.join(HERE, "..", "clients", "python", "src"))
    import convcache.lix as dropin


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(d):
    binary = os.environ.get("VALKEY_SERVER") or shutil.which("valkey-server") or "redis-server"
    so = os.environ.get("MODULE_SO", os.path.join(HERE, "..", "target", "release", "libconvcache.so"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
         "--appendonly", "no", "--logfile", os.path.join(d, "server.log"),
         "--loadmodule", os.path.abspath(so)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def timed(fn, n, warmup=3):
    for _ in range(warmup):
        fn()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"mean": statistics.fmean(lat), "p50": lat[len(lat) // 2],
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "n": n}


def main():
    quick = "--quick" in sys.argv
    from loguru import logger
    logger.disable("lix_open_cache")
    import lix_open_cache as lix

    d = tempfile.mkdtemp(prefix="bench-lix-")
    proc, port = start_server(d)
    try:
        lix_cfg = lix.CacheConfig(redis_host="127.0.0.1", redis_port=port, redis_key_prefix="lix",
                                  archive_dir=os.path.join(d, "lix-archive"))
        our_cfg = dropin.CacheConfig(redis_host="127.0.0.1", redis_port=port,
                                     redis_key_prefix="ours")
        rng = np.random.default_rng(3)
        rows = []

        # 1. Semantic lookup, 50 x 1536.
        vecs = rng.standard_normal((50, 1536)).astype(np.float32)
        q = vecs[25] + 0.01 * rng.standard_normal(1536).astype(np.float32)
        resp = {"answer": "r" * 500}
        sems = {"lix": lix.SemanticCacheRedis("bench", config=lix_cfg),
                "drop-in": dropin.SemanticCacheRedis("bench", config=our_cfg)}
        res = {}
        for name, sem in sems.items():
            for v in vecs:
                sem.set("https://example.com", v, resp)
            assert sem.get("https://example.com", q) == resp, name
            res[name] = timed(lambda: sem.get("https://example.com", q),
                              (10 if quick else 40) if name == "lix" else (300 if quick else 2000))
        rows.append(("SemanticCacheRedis.get, 50 x 1536", res, 100))

        # 2. get_context of a full 20-message window.
        res = {}
        for name, mod, cfg in (("lix", lix, lix_cfg), ("drop-in", dropin, our_cfg)):
            w = mod.SessionContextWindow("ctx", config=cfg)
            for i in range(20):
                w.add_message("user" if i % 2 == 0 else "assistant",
                              f"message {i}: " + "words of a chat turn " * 8)
            assert len(w.get_context()) == 20, name
            res[name] = timed(w.get_context, 300 if quick else 2000)
        rows.append(("SessionContextWindow.get_context, 20 messages", res, 10))

        # 3. add_message once 100 turns are archived (window 20: 120 turns added first).
        res, archived = {}, {}
        for name, mod, cfg in (("lix", lix, lix_cfg), ("drop-in", dropin, our_cfg)):
            h = mod.HybridConversationCache("long", config=cfg)
            for i in range(120):
                h.add_message("user", f"turn {i}: " + "some earlier conversation " * 6)
            # Top up until 100 turns are on disk: lix loses turns added in the same millisecond,
            # and the server archives in batches (archive-batch 10) on its I/O threads.
            deadline = time.time() + 60
            while h.get_stats()["disk_turns"] < 100 and time.time() < deadline:
                h.add_message("user", "top-up turn: " + "some earlier conversation " * 6)
                if name == "drop-in":
                    time.sleep(0.01)
            archived[name] = h.get_stats()["disk_turns"]
            n = (10 if quick else 30) if name == "lix" else (300 if quick else 2000)
            counter = iter(range(10**9))
            res[name] = timed(lambda: h.add_message("user", f"new turn {next(counter)}: "
                                                    + "some later conversation " * 6), n)
        rows.append((f"HybridConversationCache.add_message, {archived['lix']} (lix) / "
                     f"{archived['drop-in']} (drop-in) turns already archived", res, 100))

        print("\n### convcache.lix drop-in vs lix-open-cache 2.1.6 (same server, one client)\n")
        print("| call | lix p50 ms | lix mean ms | drop-in p50 ms | drop-in mean ms | ratio (p50) "
              "| ratio (mean) | goal | met (both) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for name, res, goal in rows:
            a, b = res["lix"], res["drop-in"]
            r50, rmean = a["p50"] / b["p50"], a["mean"] / b["mean"]
            print(f"| {name} | {a['p50'] * 1e3:.3f} | {a['mean'] * 1e3:.3f} | {b['p50'] * 1e3:.3f} "
                  f"| {b['mean'] * 1e3:.3f} | {r50:,.0f}x | {rmean:,.0f}x | >= {goal}x | "
                  f"{'yes' if min(r50, rmean) >= goal else '**NO**'} |")
        print(f"\n(lix runs: {rows[0][1]['lix']['n']}, {rows[1][1]['lix']['n']}, "
              f"{rows[2][1]['lix']['n']}; drop-in runs: {rows[0][1]['drop-in']['n']} each. "
              f"lix's add_message rewrites its whole Huffman archive file on every overflow.)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
