"""SEMCACHE.GET ... FILTER on a big indexed bucket whose filter matches a small share of the
entries: the cost of a selective filter, for one or more module builds in turn.

    VALKEY_SERVER=... python benches/filter_semindex.py A.so [B.so ...] [--users=100]
        [--shape=100000x384]

Data and queries as in bench_semindex.py (clustered unit vectors, near-duplicate queries);
entry i has `TAG user u<i % users>` (so 1 / users of the entries match a filter, scattered
over every cluster) in an int8 ivf bucket; each query filters on the user of the entry it is
a near-duplicate of. Per build and COUNT (1, 5): p50 and mean latency of 500 lookups and the
command time from INFO commandstats (main thread; a lookup that falls back to the exact
filtered scan runs it on a background thread, which the command time does not include).
Figures are printed, never asserted.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import harness  # noqa: E402
from bench_semindex import RESPONSE, clustered, command_usec, near, timed_calls  # noqa: E402


def fill_tagged(r, key, data, users):
    p = r.pipeline(transaction=False)
    for i, v in enumerate(data):
        p.execute_command("SEMCACHE.SET", key, v.tobytes(), RESPONSE, "MAXITEMS", len(data),
                          "QUANT", "int8", "ALGO", "ivf", "TAG", "user", f"u{i % users}")
        if i % 1000 == 999:
            p.execute()
    p.execute()


def main():
    builds = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    if not builds:
        sys.exit(__doc__)
    n, dim = (int(x) for x in opts.get("shape", "100000x384").split("x"))
    users = int(opts.get("users", "100"))
    rng = np.random.default_rng(1)
    data = clustered(n, dim, rng)
    qidx = rng.integers(0, n, 500)
    queries = near(data, qidx, rng)
    print(f"| build | {n:,} x {dim}, 1/{users} of entries match | p50 µs | mean µs | command µs |")
    print("|---|---|---:|---:|---:|")
    for so in builds:
        harness.MODULE_SO = so
        srv = harness.Server("valkey", module_args=["max-items", str(n), "semcache-ttl", "0"]).start()
        try:
            r = srv.client(protocol=2, socket_timeout=600)
            fill_tagged(r, "big", data, users)
            conn = r.connection_pool.get_connection()
            for count in (1, 5):
                packed = [conn.pack_command("SEMCACHE.GET", "big", q.tobytes(), "MINSIM", -1,
                                            "COUNT", count, "FILTER", "user", f"u{i % users}")
                          for q, i in zip(queries, qidx)]
                r.config_resetstat()
                s = timed_calls(conn, packed, len(packed))
                print(f"| {os.path.basename(so)} | COUNT {count} | {s['p50']:.0f} | {1e6 / s['ops']:.0f} "
                      f"| {command_usec(r):.0f} |", flush=True)
            r.connection_pool.release(conn)
        finally:
            srv.cleanup()


if __name__ == "__main__":
    main()
