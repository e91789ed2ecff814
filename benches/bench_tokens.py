"""CONV.ADD with exact token counts (`tokenizer` cl100k_base / o200k_base) against the
`estimate` rule (bytes / 4), on ONE valkey-server with the module loaded, same client
(redis-benchmark), same run: the tokenizer is switched with CONFIG SET between runs (each run
writes new sessions, which take the config's tokenizer). Payloads: a ~200-byte chat turn and a
20 KB tool output. Each figure is the median of BENCH_REPS runs of >= BENCH_SECONDS, the
tokenizers alternating. Also reports the server's own µs per CONV.ADD (INFO commandstats).
A report, not a test: exit stays 0 unless the setup breaks.

Env: VALKEY_SERVER, MODULE_SO (set by `make bench`); optional BENCH_SECONDS (default 3),
BENCH_CLIENTS (50), BENCH_REPS (3)."""
import datetime
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_conv import CLIENTS, PAYLOAD, Valkey, checked_run  # noqa: E402

BENCHMARK = shutil.which("redis-benchmark")
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
TOKENIZERS = ("estimate", "cl100k_base", "o200k_base")
# A tool output of 20 KB: rows of numbers, code and prose (no commas or quotes: redis-benchmark
# names its CSV row after the command).
BIG = "".join(f"row {i}: item {i} costs {i * 1.25:.2f} EUR; fn f(x) {{ x * {i} }} -- ok 日本 👩‍💻\n"
              for i in range(400))[:20_000]
PAYLOADS = (("chat turn", PAYLOAD, 1), ("tool output", BIG, 1))
KEYS = 10_000


def usec_per_call(server):
    stats = {k.lower(): v for k, v in server.client.info("commandstats").items()}
    return stats.get("cmdstat_conv.add", {}).get("usec_per_call", 0.0)


def run(server, tokenizer, payload, n, pipeline):
    server.client.config_set("convcache.tokenizer", tokenizer)
    cmd = ["CONV.ADD", "conv:__rand_int__", "user", payload]
    rps, _, _ = checked_run(server, cmd, n, pipeline, KEYS,
                            lambda: server.client.flushall(asynchronous=False))
    return rps, usec_per_call(server)


def main():
    for what in ("VALKEY_SERVER", "MODULE_SO"):
        if not os.path.exists(os.environ.get(what, "")):
            print(f"{what} is not set to an existing file (run through `make bench`)", file=sys.stderr)
            return 2
    if not BENCHMARK:
        print("redis-benchmark not found (Debian: redis-tools)", file=sys.stderr)
        return 2
    server = Valkey()
    results = []
    try:
        # Loads both vocabularies before anything is timed.
        for t in TOKENIZERS[1:]:
            server.client.execute_command("CONV.ADD", f"warm:{t}", "user", "x", "TOKENIZER", t)
        for label, payload, pipeline in PAYLOADS:
            n = {}
            for t in TOKENIZERS:  # calibrate: every measured run lasts >= SECONDS
                rps, _ = run(server, t, payload, 5_000, pipeline)
                n[t] = max(5_000, int(rps * SECONDS * 1.1))
            runs = {t: [] for t in TOKENIZERS}
            for rep in range(REPS):
                order = TOKENIZERS if rep % 2 == 0 else TOKENIZERS[::-1]
                for t in order:
                    runs[t].append(run(server, t, payload, n[t], pipeline))
            med = {t: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
                   for t, rs in runs.items()}
            results.append((label, len(payload.encode()), pipeline, med, runs))
            print(f"  measured {label}", flush=True)
    finally:
        server.close()
    print(f"\n### CONV.ADD by tokenizer ({datetime.date.today().isoformat()}, {CLIENTS} clients, "
          f"{REPS} runs of >= {SECONDS:g} s, median)\n")
    print("| payload | bytes | tokenizer | ops/s | vs estimate | server µs/call |")
    print("|---|---:|---|---:|---:|---:|")
    for label, size, _p, med, _runs in results:
        base = med["estimate"][0]
        for t in TOKENIZERS:
            rps, us = med[t]
            print(f"| {label} | {size} | {t} | {rps:,.0f} | {rps / base:.2f}x | {us:.2f} |")
    print("\nAll runs, ops/s:")
    for label, _s, _p, _med, runs in results:
        for t, rs in runs.items():
            print(f"  {label}, {t}: " + ", ".join(f"{r[0]:,.0f}" for r in rs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
