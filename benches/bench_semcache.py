"""SEMCACHE.GET against GET and against the old client-side way (lix_open_cache 2.1.6:
GET a JSON list of entries, json.loads, numpy cosine in Python), on one server in one run.

    VALKEY_SERVER=... MODULE_SO=... python benches/bench_semcache.py [--quick] [--big]

Prints markdown tables. One client, request/response (no pipelining), so a figure is the
round trip a caller sees; ops/s = 1 / mean latency. `--big` adds the 100,000 x 1536 bucket
(~600 MB of vectors: needs ~1.5 GB of RAM) and the worst PING latency while it is scanned.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import redis

RESPONSE_BYTES = 512


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    binary = os.environ.get("VALKEY_SERVER") or shutil.which("valkey-server") or "redis-server"
    so = os.environ.get("MODULE_SO", os.path.join(os.path.dirname(__file__), "..", "target",
                                                  "release", "libconvcache.so"))
    d = tempfile.mkdtemp(prefix="bench-semcache-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
         "--appendonly", "no", "--logfile", os.path.join(d, "server.log"),
         "--loadmodule", os.path.abspath(so), "max-items", "100000", "semcache-ttl", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, socket_timeout=120)
    for _ in range(200):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, d, r, port


def timed(fn, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    lat.sort()
    mean = statistics.fmean(lat)
    return {"ops": 1 / mean, "p50": lat[len(lat) // 2] * 1e6,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6, "mean": mean}


def raw_caller(r, *args):
    """A minimal-overhead request/response on one connection (pre-packed command)."""
    conn = r.connection_pool.get_connection()
    packed = conn.pack_command(*args)

    def call():
        conn.send_packed_command(packed, check_health=False)
        return conn.read_response()
    return call


def nul_free(v):
    """float32 values whose bytes hold no NUL, so a vector can be a redis-benchmark argv word
    (a zero byte becomes 1: a change in the low mantissa bits of random data)."""
    v = np.ascontiguousarray(v, dtype=np.float32).copy()
    b = v.view(np.uint8)
    b[b == 0] = 1
    return v


def benchmark_c(port, args, clients, n):
    """redis-benchmark (C client): ops/s and p50/p99 in µs."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-c", str(clients),
                          "--csv", *args], capture_output=True, timeout=600).stdout
    # The test name is the command itself (binary): read the 7 numbers at the very end.
    f = [x.strip(b'"') for x in out.strip().split(b",")[-7:]]
    return {"ops": float(f[0]), "p50": float(f[3]) * 1000, "p99": float(f[5]) * 1000}


def fill(r, key, vecs):
    p = r.pipeline(transaction=False)
    resp = b"r" * RESPONSE_BYTES
    for i, v in enumerate(vecs):
        p.execute_command("SEMCACHE.SET", key, v.tobytes(), resp, "MAXITEMS", len(vecs))
        if i % 1000 == 999:
            p.execute()
    p.execute()


def main():
    quick = "--quick" in sys.argv
    big = "--big" in sys.argv
    reps = 2000 if not quick else 300
    proc, d, r, port = start_server()
    try:
        rng = np.random.default_rng(1)
        r.set("plain", b"r" * RESPONSE_BYTES)
        get = timed(raw_caller(r, "GET", "plain"), reps)
        rows = []
        shapes = [(50, 384), (50, 1536), (10_000, 384)] + ([(100_000, 1536)] if big else [])
        scan_rows = []
        for n, dim in shapes:
            key = f"sc:{n}x{dim}"
            vecs = rng.standard_normal((n, dim)).astype(np.float32)
            fill(r, key, vecs)
            q = (vecs[n // 2] + 0.01 * rng.standard_normal(dim).astype(np.float32)).tobytes()
            res = timed(raw_caller(r, "SEMCACHE.GET", key, q), reps if n * dim < 10**7 else 50)
            rows.append((f"SEMCACHE.GET {n:,} x {dim}", res, res["ops"] / get["ops"]))
            if n * dim >= 10**6:
                # Server-side scan time: the lookup minus a GET round trip.
                scan_s = max(res["mean"] - get["mean"], 1e-9)
                gbs = n * dim * 4 / scan_s / 1e9
                block = np.ones(n * dim, dtype=np.float32)
                read = timed(lambda: np.add.reduce(block), 20)
                read_gbs = n * dim * 4 / read["mean"] / 1e9
                scan_rows.append((f"{n:,} x {dim}", n * dim * 4 / 1e6, gbs, read_gbs))
            if n == 100_000:
                worst = ping_while_scanning(port, key, q)
                scan_rows[-1] += (worst,)
            r.delete(key)

        # The old way, with the real library: lix_open_cache 2.1.6 SemanticCacheRedis.get.
        old = None
        try:
            from loguru import logger
            logger.remove()  # no debug log lines to stderr: favours the old way
            from lix_open_cache.semantic_cache import SemanticCacheRedis
            lix = SemanticCacheRedis("bench", redis_host="127.0.0.1", redis_port=port, redis_db=0)
            vecs = rng.standard_normal((50, 1536)).astype(np.float32)
            for v in vecs:
                lix.set("u", v, "r" * RESPONSE_BYTES)
            qv = vecs[25] + 0.01 * rng.standard_normal(1536).astype(np.float32)
            assert lix.get("u", qv) is not None
            old = timed(lambda: lix.get("u", qv), reps // 10)
            blob = len(r.get(lix._get_redis_key("u")))
        except ImportError as e:
            print(f"(old-way baseline skipped: {e})")

        c_rows = []
        if shutil.which("redis-benchmark"):
            r.execute_command("CONFIG", "SET", "convcache.semcache-inline-bytes", 1 << 40)
            for n, dim in [(50, 384), (50, 1536), (10_000, 384)]:
                vecs = nul_free(rng.standard_normal((n, dim)).astype(np.float32))
                fill(r, "cb", vecs)
                q = vecs[n // 2].tobytes()
                for clients in (1, 16):
                    cnt = 20000 if n == 50 else 2000
                    g = benchmark_c(port, ["GET", "plain"], clients, cnt)
                    e = benchmark_c(port, ["ECHO", q], clients, cnt)
                    s_ = benchmark_c(port, ["SEMCACHE.GET", "cb", q], clients, cnt)
                    c_rows.append((n, dim, clients, g, e, s_))
                r.delete("cb")
            r.execute_command("CONFIG", "SET", "convcache.semcache-inline-bytes", 4 << 20)

        new50 = rows[1][1]
        print(f"\n### SEMCACHE.GET vs GET ({RESPONSE_BYTES}-byte response, one client, "
              f"kernel {r.info('convcache').get('convcache_semcache_simd')})\n")
        print("| lookup | ops/s | p50 µs | p99 µs | vs GET |")
        print("|---|---:|---:|---:|---:|")
        print(f"| GET {RESPONSE_BYTES} B | {get['ops']:,.0f} | {get['p50']:.0f} | {get['p99']:.0f} | 1.00x |")
        for name, res, ratio in rows:
            print(f"| {name} | {res['ops']:,.0f} | {res['p50']:.0f} | {res['p99']:.0f} | {ratio:.2f}x |")
        if old:
            print(f"| old way 50 x 1536 (lix_open_cache 2.1.6, {blob / 1e6:.1f} MB JSON) | "
                  f"{old['ops']:,.0f} | {old['p50']:.0f} | {old['p99']:.0f} | "
                  f"{old['ops'] / get['ops']:.3f}x |")
            print(f"\n**Headline: SEMCACHE.GET is {new50['ops'] / old['ops']:,.0f}x the old way "
                  f"at 50 x 1536** (p50 {old['p50'] / 1000:.1f} ms -> {new50['p50']:.0f} µs).")
        if c_rows:
            print("\n### Same with a C client (redis-benchmark; query passed as an argv word)\n")
            print("| bucket | clients | GET ops/s | ECHO query ops/s | SEMCACHE.GET ops/s | p50 µs | p99 µs "
                  "| vs GET | vs ECHO of the query |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for n, dim, clients, g, e, s_ in c_rows:
                print(f"| {n:,} x {dim} | {clients} | {g['ops']:,.0f} | {e['ops']:,.0f} | {s_['ops']:,.0f} "
                      f"| {s_['p50']:.0f} | {s_['p99']:.0f} | {s_['ops'] / g['ops']:.2f}x "
                      f"| {s_['ops'] / e['ops']:.2f}x |")
        print("\n### Scan rate (server-side lookup time = lookup - GET round trip)\n")
        print("| bucket | vector MB | scan GB/s | memory-read GB/s (numpy sum, same size) | ratio |"
              + (" worst PING ms during scans |" if big else ""))
        print("|---|---:|---:|---:|---:|" + ("---:|" if big else ""))
        for row in scan_rows:
            extra = f" {row[4]:.2f} |" if len(row) > 4 else ""
            print(f"| {row[0]} | {row[1]:.0f} | {row[2]:.1f} | {row[3]:.1f} | "
                  f"{row[2] / row[3]:.2f} |{extra}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def ping_while_scanning(port, key, q, seconds=3.0):
    """Worst PING round trip of one client while another runs lookups back to back."""
    stop = threading.Event()

    def lookups():
        c = redis.Redis(port=port, socket_timeout=120)
        while not stop.is_set():
            c.execute_command("SEMCACHE.GET", key, q)
    t = threading.Thread(target=lookups)
    t.start()
    call = raw_caller(redis.Redis(port=port), "PING")
    worst = 0.0
    end = time.time() + seconds
    while time.time() < end:
        s = time.perf_counter()
        call()
        worst = max(worst, time.perf_counter() - s)
        time.sleep(0.001)
    stop.set()
    t.join()
    return worst * 1000


if __name__ == "__main__":
    main()
