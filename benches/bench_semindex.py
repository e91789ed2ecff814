"""SEMCACHE.GET on big buckets with an index (HNSW graph or IVF lists), against GET in the same
run, against an exact scan (recall@1) and against faiss / usearch in-process on the same data.

    VALKEY_SERVER=... MODULE_SO=... python benches/bench_semindex.py [--quick] [--shapes=100000x384,...]
        [--quant=float32,int8] [--algo=hnsw,ivf] [--no-libs] [--dump=PREFIX]

--dump=PREFIX writes the first shape's vectors, queries and exact answers (PREFIX.data, .q:
float32 rows; .truth: uint32 rows) and exits, for the in-process graph check
`hnsw_recall_file` in src/semcache/hnsw.rs.

Data: embedding-like clustered unit vectors (1,000 centres; points = centre + noise, so
neighbours in a cluster have cosine ~0.8), queries = a stored vector plus a small noise
(near-duplicates: noise of norm 0.4 whatever the dimension, cosine ~0.93 to their source). One client, request/response, 512-byte
responses; ops/s = 1 / mean latency; GET and SEMCACHE.GET are timed in 10 alternated rounds, so
that the machine's drift falls on both. The figures are printed, never asserted.

Per shape: fill time (pipelined SETs: the index is built as entries arrive), MEMORY USAGE,
index bytes, SEMCACHE.GET ops/s and ratio to GET, recall@1 against numpy's exact argmax,
SEMCACHE.SET latency with the index (each evicting the oldest entry), DEBUG RELOAD time
(RDB save + load, graph included) and whether answers after reload are identical, the
floor of a request of that dimension (a 10-entry bucket: p50 and command time from INFO
commandstats, against the big bucket's), and the same lookups written in one piece (redis-py
writes an argument over 6,000 bytes separately: 3 writes per 1536-dim request); then
faiss IndexHNSWFlat (M 16, efSearch 64) and usearch (int8, M 16) on the same vectors.
Each shape runs once per index algorithm (`SEMCACHE.SET ... ALGO hnsw|ivf`) and vector kind
(`QUANT float32|int8`), all four by default; the effort sweep is semcache-index-ef (hnsw) or
semcache-index-nprobe and -ef (ivf):
recall@1 is always against the exact float32 scan of the original vectors.
"""
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("MODULE_SO", os.path.join(HERE, "..", "target", "release", "libconvcache.so"))

from harness import Server  # noqa: E402

RESPONSE = b"r" * 512


def clustered(n, dim, rng, clusters=1000):
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        x = centres[rng.integers(0, clusters, e - s)] + 0.5 * rng.standard_normal((e - s, dim)).astype(np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def near(data, idx, rng):
    # Noise of norm ~0.4 whatever the dimension: cosine ~0.93 to the source vector.
    sigma = 0.4 / np.sqrt(data.shape[1])
    q = data[idx] + sigma * rng.standard_normal((len(idx), data.shape[1])).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top1(data, queries):
    return np.concatenate([np.argmax(queries[s:s + 256] @ data.T, axis=1) for s in range(0, len(queries), 256)])


def call_latencies(conn, packed_list, reps, start=0):
    lat = []
    for i in range(start, start + reps):
        p = packed_list[i % len(packed_list)]
        t = time.perf_counter()
        conn.send_packed_command(p, check_health=False)
        conn.read_response()
        lat.append(time.perf_counter() - t)
    return lat


def latency_stats(lat):
    lat = sorted(lat)
    mean = statistics.fmean(lat)
    return {"ops": 1 / mean, "p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6}


def timed_calls(conn, packed_list, reps):
    return latency_stats(call_latencies(conn, packed_list, reps))


def timed_rounds(conn, kinds, reps, rounds=10):
    """`reps` calls of each kind ({name: packed commands}), in `rounds` alternated rounds: this
    machine's speed drifts by tens of percent over minutes, and a ratio of two kinds timed
    minutes apart measures the drift as much as the kinds."""
    lat = {name: [] for name in kinds}
    per = max(1, reps // rounds)
    for r in range(rounds):
        for name, packed in kinds.items():
            lat[name] += call_latencies(conn, packed, per, start=r * per)
    return {name: latency_stats(v) for name, v in lat.items()}


def fill(r, key, data, quant, algo, batch=1000):
    p = r.pipeline(transaction=False)
    for s in range(0, len(data), batch):
        for v in data[s:s + batch]:
            p.execute_command("SEMCACHE.SET", key, v.tobytes(), RESPONSE, "MAXITEMS", len(data),
                              "QUANT", quant, "ALGO", algo)
        p.execute()


def command_usec(r):
    """SEMCACHE.GET's mean command time (µs) since the last CONFIG RESETSTAT."""
    stats = r.info("commandstats")
    return next(v["usec_per_call"] for k, v in stats.items() if k.lower() == "cmdstat_semcache.get")


def info_map(r, key):
    i = r.execute_command("SEMCACHE.INFO", key)
    return {k.decode(): v for k, v in zip(i[::2], i[1::2])}


def run_shape(n, dim, quick, rng, quants, algos):
    data = clustered(n, dim, rng)
    nq = 300 if quick else 1000
    qidx = rng.integers(0, n, nq)
    queries = near(data, qidx, rng)
    truth = exact_top1(data, queries)
    for a in sys.argv[1:]:
        if a.startswith("--dump="):
            prefix = a.split("=", 1)[1]
            data.tofile(prefix + ".data")
            queries.tofile(prefix + ".q")
            truth.astype(np.uint32).tofile(prefix + ".truth")
            sys.exit(0)
    extra = clustered(200 if quick else 1000, dim, rng)
    rows = [run_quant(n, dim, quick, quant, algo, data, queries, truth, extra)
            for algo in algos for quant in quants]
    if "--no-libs" not in sys.argv:
        rows[0].update(compare_libraries(data, queries, truth, quick))
    return rows


def run_quant(n, dim, quick, quant, algo, data, queries, truth, extra):
    srv = Server("valkey", module_args=["max-items", "1000000", "semcache-ttl", "0"]).start()
    out = {"shape": f"{n:,} x {dim}", "quant": quant, "algo": algo}
    try:
        r = srv.client(socket_timeout=600, protocol=2)
        t = time.perf_counter()
        fill(r, "big", data, quant, algo)
        out["fill_s"] = time.perf_counter() - t
        info = info_map(r, "big")
        assert info["index_pending"] == 0, info
        assert info["quant"].decode() == quant, info
        assert info["index"].decode() == algo, info
        out["mem_mb"] = r.memory_usage("big") / 1e6
        out["index_mb"] = info["index_bytes"] / 1e6
        out["vec_ratio"] = info["vector_bytes"] / (n * dim * 4)
        r.set("plain", RESPONSE)
        conn = r.connection_pool.get_connection()
        reps = 1000 if quick else 5000
        packed = [conn.pack_command("SEMCACHE.GET", "big", q.tobytes(), "MINSIM", -1, "WITHIDS")
                  for q in queries]
        r.config_resetstat()
        # GET and SEMCACHE.GET alternated in rounds (see timed_rounds). redis-py writes an
        # argument over 6,000 bytes (a 1536-dim float32 vector is 6,144) as its own write, so
        # such a request goes out in 3 writes (hiredis formats a command into one buffer); the
        # same calls each written in one piece are timed alongside.
        timed = timed_rounds(conn, {"get": [conn.pack_command("GET", "plain")], "sem": packed,
                                    "sem_one": [[b"".join(p)] for p in packed]}, reps)
        get, sem = timed["get"], timed["sem"]
        out["sem_us"] = command_usec(r)
        out["sem_one"] = timed["sem_one"]
        out["writes"] = len(packed[0])
        # The floor of a request of this dimension: a 10-entry bucket (no index), same queries.
        fill(r, "small", data[:10], quant, algo)
        small = [conn.pack_command("SEMCACHE.GET", "small", q.tobytes(), "MINSIM", -1, "WITHIDS")
                 for q in queries]
        r.config_resetstat()
        out["small"] = timed_calls(conn, small, reps)
        out["small_us"] = command_usec(r)
        r.delete("small")
        def recall():
            ids = []
            for p in packed:
                conn.send_packed_command(p, check_health=False)
                ids.append(conn.read_response()[0])
            # Ids are 1.. in insertion order: id - 1 is the row of `data`.
            return float(np.mean(np.array(ids) - 1 == truth))
        out["recall"] = recall()
        out["get"], out["sem"] = get, sem
        # The effort trade-off (semcache-index-ef for hnsw, -nprobe for ivf), then back to
        # the default.
        # IVF: ef is the members re-ranked by their int8 codes per probed list.
        knobs = ([("semcache-index-ef", (16, 32, 64, 128))] if algo == "hnsw"
                 else [("semcache-index-nprobe", (1, 2, 4, 8)), ("semcache-index-ef", (16, 32, 128))])
        out["ef"] = []
        for knob, values in knobs:
            default = r.config_get("convcache." + knob)["convcache." + knob]
            for ef in values:
                r.config_set("convcache." + knob, ef)
                out["ef"].append((f"{knob[15:]} {ef}", timed_calls(conn, packed, reps // 2), recall()))
            r.config_set("convcache." + knob, default)
        # SET cost with the index (each evicts the oldest entry).
        sets = timed_calls(conn, [conn.pack_command("SEMCACHE.SET", "big", v.tobytes(), RESPONSE)
                                  for v in extra], len(extra))
        out["set"] = sets
        before = []
        for p in packed[:200]:
            conn.send_packed_command(p, check_health=False)
            before.append(conn.read_response())
        r.connection_pool.release(conn)
        t = time.perf_counter()
        r.execute_command("DEBUG", "RELOAD")
        out["reload_s"] = time.perf_counter() - t
        conn = r.connection_pool.get_connection()
        after = []
        for p in packed[:200]:
            conn.send_packed_command(p, check_health=False)
            after.append(conn.read_response())
        r.connection_pool.release(conn)
        out["same_after_reload"] = before == after
    finally:
        srv.cleanup()
    return out


def compare_libraries(data, queries, truth, quick):
    res = {}
    nq = len(queries)
    try:
        import faiss
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        ix = faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 100
        ix.add(data)
        build = time.perf_counter() - t
        ix.hnsw.efSearch = 64
        t = time.perf_counter()
        got = np.array([ix.search(queries[i:i + 1], 1)[1][0, 0] for i in range(nq)])
        lat = (time.perf_counter() - t) / nq
        res["faiss"] = {"us": lat * 1e6, "recall": float(np.mean(got == truth)), "build_s": build}
    except ImportError as e:
        res["faiss"] = {"skipped": str(e)}
    try:
        from usearch.index import Index
        t = time.perf_counter()
        ix = Index(ndim=data.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=100,
                   expansion_search=64)
        ix.add(np.arange(len(data)), data, threads=1)
        build = time.perf_counter() - t
        t = time.perf_counter()
        got = np.array([ix.search(queries[i], 1).keys[0] for i in range(nq)])
        lat = (time.perf_counter() - t) / nq
        res["usearch"] = {"us": lat * 1e6, "recall": float(np.mean(got == truth)), "build_s": build,
                          "mb": ix.memory_usage / 1e6}
    except ImportError as e:
        res["usearch"] = {"skipped": str(e)}
    return res


def main():
    quick = "--quick" in sys.argv
    shapes = [(20_000, 384)] if quick else [(100_000, 384)]
    for a in sys.argv[1:]:
        if a.startswith("--shapes="):
            shapes = [tuple(int(x) for x in s.split("x")) for s in a.split("=", 1)[1].split(",")]
    quants = ["float32", "int8"]
    algos = ["hnsw", "ivf"]
    for a in sys.argv[1:]:
        if a.startswith("--quant="):
            quants = a.split("=", 1)[1].split(",")
        if a.startswith("--algo="):
            algos = a.split("=", 1)[1].split(",")
    rng = np.random.default_rng(7)
    rows = [row for n, dim in shapes for row in run_shape(n, dim, quick, rng, quants, algos)]
    print("\n### SEMCACHE.GET with an index (one client, 512-byte responses)\n")
    print("| bucket | index | vectors | vector bytes | fill s | MEMORY USAGE MB | index MB | GET ops/s "
          "| SEMCACHE.GET ops/s | p50 µs | p99 µs | vs GET | recall@1 | SET p50 µs | SET p99 µs "
          "| DEBUG RELOAD s | same after reload |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for o in rows:
        print(f"| {o['shape']} | {o['algo']} | {o['quant']} | {o['vec_ratio']:.2f}x | {o['fill_s']:.0f} "
              f"| {o['mem_mb']:.0f} | {o['index_mb']:.1f} "
              f"| {o['get']['ops']:,.0f} | {o['sem']['ops']:,.0f} | {o['sem']['p50']:.0f} "
              f"| {o['sem']['p99']:.0f} | {o['sem']['ops'] / o['get']['ops']:.2f}x | {o['recall']:.3f} "
              f"| {o['set']['p50']:.0f} | {o['set']['p99']:.0f} | {o['reload_s']:.1f} "
              f"| {'yes' if o['same_after_reload'] else 'NO'} |")
    print("\n### semcache-index-ef (hnsw) and semcache-index-nprobe (ivf): speed and recall\n")
    print("| bucket | index | vectors | effort | SEMCACHE.GET ops/s | p50 µs | vs GET | recall@1 |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for o in rows:
        for ef, res, rec in o["ef"]:
            print(f"| {o['shape']} | {o['algo']} | {o['quant']} | {ef} | {res['ops']:,.0f} | {res['p50']:.0f} "
                  f"| {res['ops'] / o['get']['ops']:.2f}x | {rec:.3f} |")
    print("\n### Where a lookup's time goes: the bucket against a 10-entry bucket of the same dimension\n")
    print("| bucket | index | vectors | GET p50 µs | 10-entry p50 µs | 10-entry command µs | SEMCACHE.GET p50 µs | command µs "
          "| writes per request (redis-py) | p50 µs, one write | vs GET, one write |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for o in rows:
        print(f"| {o['shape']} | {o['algo']} | {o['quant']} | {o['get']['p50']:.0f} | {o['small']['p50']:.0f} "
              f"| {o['small_us']:.1f} | {o['sem']['p50']:.0f} | {o['sem_us']:.1f} | {o['writes']} "
              f"| {o['sem_one']['p50']:.0f} | {o['sem_one']['ops'] / o['get']['ops']:.2f}x |")
    print("\n### Same data in-process (one thread, one query at a time)\n")
    print("| bucket | library | µs / query | recall@1 | build s | memory MB | SEMCACHE.GET p50 / library |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for o in rows:
        if o["quant"] != rows[0]["quant"]:
            continue
        for name in ("faiss", "usearch"):
            lib = o.get(name, {"skipped": "--no-libs"})
            if "skipped" in lib:
                print(f"| {o['shape']} | {name} | skipped: {lib['skipped']} | | | | |")
                continue
            print(f"| {o['shape']} | {name} | {lib['us']:.0f} | {lib['recall']:.3f} | {lib['build_s']:.1f} "
                  f"| {lib.get('mb', float('nan')):.0f} | {o['sem']['p50'] / lib['us']:.2f}x |")


if __name__ == "__main__":
    main()
