"""CONV.ADD / CONV.CTX against the plain-list code they replace (RPUSH / LRANGE), on ONE
valkey-server with the module loaded, with the same client (redis-benchmark), the same
concurrency and the same turns. The baseline list holds each turn as lix-open-cache stores it:
a JSON string `{"role": .., "content": .., "timestamp": .., "metadata": {}}` (json.dumps, what
users migrate from). Each side runs BENCH_REPS times for >= BENCH_SECONDS, baseline and module
back to back (order flipped each repetition); the goal is judged on the median of the
per-repetition ratios (drift cancels within a pair), the medians of each side are shown too.
Memory: INFO used_memory delta over BENCH_MEM_SESSIONS sessions of 20 turns each way (MEMORY
USAGE averaged too, as a cross-check). A report, not a test: a missed
goal is printed, exit stays 0; only a broken setup (server, tool, error replies) exits non-zero.

Env: VALKEY_SERVER, MODULE_SO (set by `make bench`); optional BENCH_SECONDS (default 3),
BENCH_CLIENTS (50), BENCH_REPS (5), BENCH_MEM_SESSIONS (10000)."""
import csv
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from harness import Server  # noqa: E402

VALKEY_SERVER = os.environ.get("VALKEY_SERVER", "")
MODULE_SO = os.environ.get("MODULE_SO", "")
BENCHMARK = shutil.which("redis-benchmark")
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
REPS = int(os.environ.get("BENCH_REPS", "5"))
MEM_SESSIONS = int(os.environ.get("BENCH_MEM_SESSIONS", "10000"))
PIPELINES = (1, 16)
WINDOW = 20

# A realistic chat turn: ~200 bytes of English with punctuation (and an apostrophe the JSON
# renderer passes through, no escapes needed, as with most chat text).
PAYLOAD = ("Can you help me rewrite this paragraph so it sounds more professional? I need to tell "
           "the team the release slips two weeks because of the database migration, without it "
           "sounding like I'm blaming anyone.")
# A turn as lix-open-cache's HybridCache keeps it in Redis (json.dumps of its message dict,
# default separators; the timestamp is time.time()).
def lix_json(role, content, ts=1764151234.5678912):
    return json.dumps({"role": role, "content": content, "timestamp": ts, "metadata": {}})


PAYLOAD_JSON = lix_json("user", PAYLOAD)
ADD_KEYS = 10_000  # -r: keys written, so no key grows huge during a run
CTX_KEYS = 1_000   # pre-filled keys read by CTX / LRANGE
CTX_MSGS = 20      # messages per pre-filled key = COUNT = window


def bench_key(prefix, i):
    """The key redis-benchmark makes of `prefix__rand_int__`: the number padded to 12 digits."""
    return f"{prefix}{i:012d}"


class Valkey(Server):
    """The one server of this benchmark (tests/harness.py starts and stops it)."""

    def __init__(self):
        super().__init__("valkey", module_args=["window", str(WINDOW)], extra=["--appendonly", "no"])
        self.start()
        self.client = Server.client(self, socket_timeout=60)

    def close(self):
        self.cleanup()


def redis_benchmark(port, command, n, pipeline, keyspace):
    """One redis-benchmark run; returns (ops/s, p50 ms, p99 ms) from its CSV line."""
    argv = [BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS),
            "-P", str(pipeline), "-n", str(n), "-r", str(keyspace), "--csv", *command]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r]
    header, row = rows[0], rows[-1]
    if "p99_latency_ms" not in header:
        raise RuntimeError(f"unexpected redis-benchmark output:\n{out}")
    # The test name (the command) may hold commas and quotes redis-benchmark leaves unescaped
    # (the JSON baseline): the figures are the last fields.
    get = dict(zip(header[1:], row[len(row) - len(header) + 1:]))
    return float(get["rps"]), float(get["p50_latency_ms"]), float(get["p99_latency_ms"])


class Pair:
    """One operation measured two ways: the plain-structure baseline and the module command."""

    def __init__(self, name, goal, baseline, module, keyspace, before_run):
        self.name, self.goal = name, goal
        self.baseline, self.module = baseline, module
        self.keyspace, self.before_run = keyspace, before_run


def checked_run(server, cmd, n, pipeline, keyspace, before_run):
    """Runs one measurement and makes sure every request was executed without an error reply,
    so a typo or a WRONGTYPE cannot pass as a fast benchmark."""
    before_run()
    server.client.config_resetstat()
    result = redis_benchmark(server.port, cmd, n, pipeline, keyspace)
    stats = server.client.info("stats")
    cmdstats = {k.lower(): v for k, v in server.client.info("commandstats").items()}
    calls = cmdstats.get(f"cmdstat_{cmd[0].lower()}", {}).get("calls", 0)
    if stats.get("total_error_replies", 0) or calls < n:
        raise RuntimeError(f"{' '.join(cmd[:2])}: {calls} calls of {n}, "
                           f"{stats.get('total_error_replies')} error replies")
    return result


def measure(server, pair, pipeline):
    """Median ops/s, p50, p99 for baseline and module, REPS runs each, alternating (and the
    order flipped every repetition so neither side always runs on a warmer machine)."""
    # Calibrate each side with a short run (which also warms it up), so every measured run
    # lasts >= SECONDS whatever the ratio, and the whole script stays around two minutes.
    probe = min(10_000 * pipeline, 50_000)
    cmds = {"baseline": pair.baseline, "module": pair.module}
    n = {}
    for side, cmd in cmds.items():
        rps, _, _ = checked_run(server, cmd, probe, pipeline, pair.keyspace, pair.before_run)
        n[side] = max(probe, int(rps * SECONDS * 1.1))
    runs = {"baseline": [], "module": []}
    for rep in range(REPS):
        order = ("baseline", "module") if rep % 2 == 0 else ("module", "baseline")
        for side in order:
            runs[side].append(
                checked_run(server, cmds[side], n[side], pipeline, pair.keyspace, pair.before_run))
    med = {side: tuple(statistics.median(r[i] for r in rs) for i in range(3))
           for side, rs in runs.items()}
    return n, med, runs


def prefill(server):
    c = server.client
    c.flushall()
    p = c.pipeline(transaction=False)
    for i in range(CTX_KEYS):
        for _ in range(CTX_MSGS):
            p.execute_command("CONV.ADD", bench_key("conv:", i), "user", PAYLOAD)
        p.rpush(bench_key("list:", i), *([PAYLOAD_JSON] * CTX_MSGS))
        if i % 100 == 99:
            p.execute()
    p.execute()
    # Both sides hold the same 20 messages per key.
    k = 123
    ctx = c.execute_command("CONV.CTX", bench_key("conv:", k), "COUNT", CTX_MSGS)
    assert ctx.count(PAYLOAD.encode()) == CTX_MSGS, ctx[:200]
    assert c.lrange(bench_key("list:", k), -CTX_MSGS, -1) == [PAYLOAD_JSON.encode()] * CTX_MSGS
    return len(ctx), sum(len(x) for x in c.lrange(bench_key("list:", k), -CTX_MSGS, -1))


def main():
    for what, path in (("VALKEY_SERVER", VALKEY_SERVER), ("MODULE_SO", MODULE_SO)):
        if not path or not os.path.exists(path):
            print(f"{what} is not set to an existing file (run through `make bench`)", file=sys.stderr)
            return 2
    if not BENCHMARK:
        print("redis-benchmark not found (Debian: redis-tools)", file=sys.stderr)
        return 2
    tool = subprocess.run([BENCHMARK, "--version"], capture_output=True, text=True).stdout.strip()

    server = Valkey()
    try:
        info = server.client.info("server")
        print(f"server: valkey {info.get('valkey_version', info.get('redis_version'))} on "
              f"127.0.0.1:{server.port}, module {os.path.basename(MODULE_SO)} window {WINDOW}")
        print(f"client: {tool}, {CLIENTS} connections, pipelines {PIPELINES}, "
              f"{REPS} runs per side of >= {SECONDS:g} s, median; payload {len(PAYLOAD)} bytes")
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}")

        flush = server.client.flushall
        add = Pair("CONV.ADD vs RPUSH", 0.9,
                   ["RPUSH", "list:__rand_int__", PAYLOAD_JSON],
                   ["CONV.ADD", "conv:__rand_int__", "user", PAYLOAD],
                   ADD_KEYS, lambda: flush(asynchronous=False))
        ctx = Pair(f"CONV.CTX COUNT {CTX_MSGS} vs LRANGE -{CTX_MSGS} -1", {1: 1.0, 16: 0.8},
                   ["LRANGE", "list:__rand_int__", str(-CTX_MSGS), "-1"],
                   ["CONV.CTX", "conv:__rand_int__", "COUNT", str(CTX_MSGS)],
                   CTX_KEYS, lambda: None)

        results = []
        for pipeline in PIPELINES:
            results.append((add, pipeline, *measure(server, add, pipeline)))
            print(f"  measured {add.name}, pipeline {pipeline}", flush=True)
        ctx_bytes, list_bytes = prefill(server)
        print(f"  pre-filled {CTX_KEYS} keys x {CTX_MSGS} messages; one CTX reply is {ctx_bytes} "
              f"bytes of JSON, one LRANGE reply {list_bytes} bytes of lix JSON strings", flush=True)
        for pipeline in PIPELINES:
            results.append((ctx, pipeline, *measure(server, ctx, pipeline)))
            print(f"  measured {ctx.name}, pipeline {pipeline}", flush=True)
        memory = measure_memory(server)
        print(f"  measured memory of {MEM_SESSIONS:,} sessions each way", flush=True)
    finally:
        server.close()

    report(results, memory)
    return 0


MEM_GOAL = 0.85


def session_turns(i):
    """The 20 turns of session `i`: user and assistant alternating, ~200-byte contents that
    differ per session (so no side gets to share anything)."""
    return [("user" if t % 2 == 0 else "assistant", f"{i:06d} {t:02d} " + PAYLOAD[10:])
            for t in range(CTX_MSGS)]


def fill_sessions(c, prefix, write):
    p = c.pipeline(transaction=False)
    for i in range(MEM_SESSIONS):
        for role, content in session_turns(i):
            write(p, bench_key(prefix, i), role, content)
        if i % 50 == 49:
            p.execute()
    p.execute()


def used_memory(c):
    return c.info("memory")["used_memory"]


def measure_memory(server):
    """Bytes per 20-turn session: INFO used_memory delta over MEM_SESSIONS sessions (the
    figure the goal is judged on: everything the server holds for them, keys included), and
    MEMORY USAGE averaged over a sample of keys, for both CONV.ADD sessions and lists of
    lix JSON strings. Each side is measured on an otherwise empty server."""
    c = server.client
    out = {}
    sides = {
        "module": ("conv:", lambda p, k, role, content: p.execute_command("CONV.ADD", k, role, content)),
        "baseline": ("list:", lambda p, k, role, content: p.rpush(k, lix_json(role, content))),
    }
    for side, (prefix, write) in sides.items():
        # SYNC: Valkey 8+ frees lazily by default, which would skew the next side's delta.
        c.execute_command("FLUSHALL", "SYNC")
        before = used_memory(c)
        fill_sessions(c, prefix, write)
        after = used_memory(c)
        sample = range(0, MEM_SESSIONS, max(1, MEM_SESSIONS // 500))
        usage = [c.memory_usage(bench_key(prefix, i), samples=0) for i in sample]
        content = sum(len(x) for _, x in session_turns(0))
        out[side] = ((after - before) / MEM_SESSIONS, statistics.mean(usage), content)
    c.execute_command("FLUSHALL", "SYNC")
    return out


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def paired_ratio(runs):
    """The median over repetitions of module / baseline within each repetition: the two runs
    of a repetition are back to back, so the machine's drift (this VM's speed moves by up to
    2x over minutes) cancels out of each ratio, where a ratio of the two sides' medians can
    pair a fast minute with a slow one."""
    return statistics.median(m[0] / b[0] for b, m in zip(runs["baseline"], runs["module"]))


def report(results, memory):
    print(f"\n### CONV.* vs plain lists ({datetime.date.today().isoformat()})\n")
    print("| operation | pipeline | baseline ops/s | module ops/s | ratio of medians | "
          "ratio (median of pairs) | goal | met |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    missed = []
    for pair, pipeline, _n, med, runs in results:
        b, m = med["baseline"][0], med["module"][0]
        ratio = paired_ratio(runs)
        goal = pair.goal[pipeline] if isinstance(pair.goal, dict) else pair.goal
        ok = ratio >= goal
        if not ok:
            missed.append(f"{pair.name} at pipeline {pipeline}: {ratio:.2f}x < {goal}x")
        print(f"| {pair.name} | {pipeline} | {b:,.0f} | {m:,.0f} | {m / b:.2f}x | {ratio:.2f}x | "
              f">= {goal}x | {'yes' if ok else '**NO**'} |")
    print("\nThe baseline list holds each turn as lix-open-cache stores it, a JSON string "
          f"({len(PAYLOAD_JSON)} bytes for a {len(PAYLOAD)}-byte content).")
    (bm, bu, content), (mm, mu, _) = memory["baseline"], memory["module"]
    ratio = mm / bm
    ok = ratio <= MEM_GOAL
    if not ok:
        missed.append(f"memory per session: {ratio:.2f}x > {MEM_GOAL}x")
    print(f"\nMemory per {CTX_MSGS}-turn session ({content:,} bytes of content), INFO used_memory "
          f"delta over {MEM_SESSIONS:,} sessions (MEMORY USAGE average in brackets)\n")
    print("| stored as | bytes per session | ratio | goal | met |")
    print("|---|---:|---:|---:|---|")
    print(f"| list of lix JSON strings (RPUSH) | {bm:,.0f} [{bu:,.0f}] | 1.00x | | |")
    print(f"| CONV.ADD session | {mm:,.0f} [{mu:,.0f}] | {ratio:.2f}x | <= {MEM_GOAL}x | "
          f"{'yes' if ok else '**NO**'} |")
    print("\nLatency, ms (median of runs; with pipelining it is per batch as redis-benchmark times it)\n")
    print("| operation | pipeline | baseline p50 | baseline p99 | module p50 | module p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for pair, pipeline, _n, med, _runs in results:
        (_, bp50, bp99), (_, mp50, mp99) = med["baseline"], med["module"]
        print(f"| {pair.name} | {pipeline} | {bp50:.3f} | {bp99:.3f} | {mp50:.3f} | {mp99:.3f} |")
    print("\nAll runs, ops/s (requests per run in brackets), to judge the noise:")
    for pair, pipeline, n, _med, runs in results:
        fmt = lambda side: (f"{side} [{n[side]:,}] "
                            + ", ".join(f"{r[0]:,.0f}" for r in runs[side]))
        print(f"  {pair.name}, P{pipeline}: {fmt('baseline')}; {fmt('module')}")
    if missed:
        print("\nGOAL MISSED:\n  " + "\n  ".join(missed))
    else:
        print("\nAll goals met.")


if __name__ == "__main__":
    sys.exit(main())
