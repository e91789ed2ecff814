"""Two module builds side by side: the same big bucket in two servers, SEMCACHE.GET queries
alternated between them in rounds, so that the drift of a shared machine (its speed moves by
tens of percent over minutes) falls on both alike. For judging a change to the lookup path;
`bench_semindex.py` gives the figures of one build.

    VALKEY_SERVER=... python benches/ab_semindex.py A.so B.so [--shape=100000x1536]
        [--quant=int8] [--algo=ivf] [--rounds=8]

Per build: the median over rounds of the command time (INFO commandstats, reset per round) and
of the p50 latency, for the big bucket, a 10-entry bucket of the same dimension and GET. Data
and queries as in bench_semindex.py (clustered unit vectors, near-duplicate queries). Figures
are printed, never asserted.
"""
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import harness  # noqa: E402
from bench_semindex import RESPONSE, clustered, fill, near, timed_calls  # noqa: E402


def main():
    builds = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    if len(builds) != 2:
        sys.exit(__doc__)
    n, dim = (int(x) for x in opts.get("shape", "100000x1536").split("x"))
    quant, algo = opts.get("quant", "int8"), opts.get("algo", "ivf")
    rounds = int(opts.get("rounds", "8"))
    rng = np.random.default_rng(1)
    data = clustered(n, dim, rng)
    queries = near(data, rng.integers(0, n, 1000), rng)
    servers, sides = [], []
    try:
        for so in builds:
            harness.MODULE_SO = so
            srv = harness.Server("valkey", module_args=["max-items", str(max(n, 1000)), "semcache-ttl", "0"]).start()
            servers.append(srv)
            r = srv.client(protocol=2, socket_timeout=600)
            fill(r, "big", data, quant, algo)
            fill(r, "small", data[:10], quant, algo)
            r.set("k", RESPONSE)
            conn = r.connection_pool.get_connection()
            packs = {
                kind: [conn.pack_command("SEMCACHE.GET", kind, q.tobytes(), "MINSIM", -1, "WITHIDS")
                       for q in queries]
                for kind in ("big", "small")
            }
            packs["get"] = [conn.pack_command("GET", "k")]
            sides.append((r, conn, packs))
        got = {(side, kind): [] for side in (0, 1) for kind in ("big", "small", "get")}
        for rnd in range(rounds):
            for side in (0, 1) if rnd % 2 == 0 else (1, 0):
                r, conn, packs = sides[side]
                for kind, packed in packs.items():
                    r.config_resetstat()
                    lat = timed_calls(conn, packed, 1000)
                    stat = "cmdstat_get" if kind == "get" else "cmdstat_SEMCACHE.GET"
                    got[(side, kind)].append((r.info("commandstats")[stat]["usec_per_call"], lat["p50"]))
        print(f"{n:,} x {dim}, {quant}, {algo}: medians of {rounds} alternated rounds of 1,000 calls")
        print("| calls | A command µs | A p50 µs | B command µs | B p50 µs |")
        print("|---|---:|---:|---:|---:|")
        for kind, label in (("big", f"SEMCACHE.GET {n:,} entries"), ("small", "SEMCACHE.GET 10 entries"),
                            ("get", "GET")):
            cells = []
            for side in (0, 1):
                cells.append(statistics.median(x[0] for x in got[(side, kind)]))
                cells.append(statistics.median(x[1] for x in got[(side, kind)]))
            print(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
        print(f"A = {builds[0]}, B = {builds[1]}")
    finally:
        for srv in servers:
            srv.cleanup()


if __name__ == "__main__":
    main()
