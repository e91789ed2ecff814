"""Cold tier: (1) the archive codecs and Store::append, measured by the Rust example
`codec_bench` (Huffman vs zlib/zstd vs the order-0 entropy bound; codec v2, zstd with the
archive's dictionary, vs Huffman segments in bytes on disk and MB/s, on the bench corpus and
on English prose; append cost at 100 vs 10,000 archived turns); (2) how a concurrent client's
GET latency fares while the module's timer archives 100,000 idle sessions on ONE
valkey-server, with today's Huffman codec and with codec v2. A report, not a test: a missed
goal is printed, exit stays 0; only a broken setup exits non-zero.

The archive run happens twice on a fresh server each: with archive-dir on tmpfs
(/dev/shm: fsync costs nothing, so the I/O threads finish as fast as the main thread lets
them, which is the hardest case for the main thread and lets 100k sessions finish in the time
budget), then on the disk under $TMPDIR for at most BENCH_DISK_SECONDS (a real fsync per file
bounds the rate there; the figure is the rate, not the full run).

Env: VALKEY_SERVER, MODULE_SO (set by `make bench`); optional BENCH_SESSIONS (100000),
BENCH_TURNS (3 per session), BENCH_ARCHIVE_TIMEOUT (120 s), BENCH_DISK_SECONDS (30 s)."""
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from harness import Server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VALKEY_SERVER = os.environ.get("VALKEY_SERVER", "")
MODULE_SO = os.environ.get("MODULE_SO", "")
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100000"))
TURNS = int(os.environ.get("BENCH_TURNS", "3"))
TIMEOUT = float(os.environ.get("BENCH_ARCHIVE_TIMEOUT", "120"))
DISK_SECONDS = float(os.environ.get("BENCH_DISK_SECONDS", "30"))
BASELINE_SECONDS = 3.0
MODULE_ARGS = {
    "window": 5, "archive-batch": 1, "idle-archive": 1,
    "timer-interval-ms": 10, "timer-budget-us": 1000,
}
TURN_TEXT = [
    ("user", "Can you help me rewrite this paragraph so it sounds more professional? The "
             "release slips two weeks because of the database migration."),
    ("assistant", "Sure. Here's a version: \"Because the database migration needs more time, "
                  "we are moving the release by two weeks. We will share a new date on Friday.\""),
    ("user", "Thanks, that works. Can you also make it shorter for the status page?"),
    ("assistant", "\"The release moves two weeks to finish the database migration.\""),
]


def run_codec_bench():
    """Builds (if needed) and runs the Rust example; its markdown goes straight to stdout."""
    argv = ["cargo", "run", "--quiet", "--release", "-p", "convcache-core", "--example", "codec_bench"]
    print(f"$ {' '.join(argv)}", flush=True)
    subprocess.run(argv, cwd=ROOT, check=True, timeout=900)


class Valkey(Server):
    """One server (tests/harness.py starts and stops it), archiving into a folder of its own."""

    def __init__(self, module_args, archive_base=None):
        self.archive_dir = tempfile.mkdtemp(prefix="convcache-archive-", dir=archive_base)
        margs = [str(x) for kv in module_args.items() for x in kv]
        super().__init__("valkey", module_args=[*margs, "archive-dir", self.archive_dir],
                         extra=["--appendonly", "no"])
        self.start()
        self.client = Server.client(self, socket_timeout=60)

    def close(self):
        self.cleanup()
        shutil.rmtree(self.archive_dir, ignore_errors=True)


def conv_info(client):
    info = client.info("convcache")
    # Module INFO fields carry the module name as a prefix.
    return {k[len("convcache_"):] if k.startswith("convcache_") else k: v for k, v in info.items()}


def fill(client):
    p = client.pipeline(transaction=False)
    for i in range(SESSIONS):
        for t in range(TURNS):
            role, text = TURN_TEXT[t % len(TURN_TEXT)]
            p.execute_command("CONV.ADD", f"s:{i}", role, text)
        if i % 500 == 499:
            p.execute()
    p.execute()


def get_loop(client, until, poll=None, poll_every=0.1):
    """GET in a loop, timing each call; `poll()` (untimed) every `poll_every` s may end it."""
    lat = []
    next_poll = time.monotonic() + poll_every
    while True:
        t = time.perf_counter_ns()
        v = client.get("probe")
        lat.append((time.perf_counter_ns() - t) / 1e3)
        assert v == b"x"
        now = time.monotonic()
        if now >= until:
            return lat, False
        if poll and now >= next_poll:
            next_poll = now + poll_every
            if poll():
                return lat, True


def pct(sorted_lat, p):
    return sorted_lat[min(len(sorted_lat) - 1, int(round((len(sorted_lat) - 1) * p)))]


def lat_row(name, lat):
    s = sorted(lat)
    return (f"| {name} | {len(s):,} | {statistics.median(s):.0f} | {pct(s, 0.99):.0f} | "
            f"{pct(s, 0.999):.0f} | {s[-1] / 1000:.1f} |")


def archive_run(archive_base, timeout, codec="zstd"):
    # The sessions are filled with archiving off (idle-archive far away), so the timed phase
    # is archiving only; it starts with CONFIG SET to the benchmark's idle-archive of 1 s.
    server = Valkey({**MODULE_ARGS, "idle-archive": 3600, "archive-codec": codec}, archive_base)
    try:
        c = server.client
        info = c.info("server")
        print(f"\nserver: valkey {info.get('valkey_version', info.get('redis_version'))} on "
              f"127.0.0.1:{server.port}, module {os.path.basename(MODULE_SO)} "
              + " ".join(f"{k} {v}" for k, v in MODULE_ARGS.items())
              + f", archive-codec {codec}, io-threads default; archive-dir {server.archive_dir}",
              flush=True)
        c.set("probe", "x")
        t = time.monotonic()
        fill(c)
        ci = conv_info(c)
        assert ci["sessions"] == SESSIONS and ci["hot_messages"] == SESSIONS * TURNS, ci
        print(f"  filled {SESSIONS:,} sessions x {TURNS} turns in {time.monotonic() - t:.1f} s "
              f"(pipelined CONV.ADD)", flush=True)

        # Baseline: the same keyspace, timer scanning, nothing idle yet.
        c.config_set("convcache.timer-interval-ms", MODULE_ARGS["timer-interval-ms"])
        base, _ = get_loop(c, time.monotonic() + BASELINE_SECONDS)
        ticks_before = conv_info(c)

        g = server.client
        c2 = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60)
        state = {"last": 0, "first_cold_at": None}
        t0 = time.monotonic()
        c2.config_set("convcache.idle-archive", MODULE_ARGS["idle-archive"])

        def poll():
            n = conv_info(c2)["cold_sessions"]
            if n and state["first_cold_at"] is None:
                state["first_cold_at"] = time.monotonic() - t0
            state["last"] = n
            return n >= SESSIONS

        lat, done = get_loop(g, t0 + timeout, poll)
        took = time.monotonic() - t0
        ci = conv_info(c2)
        # Idle sessions are archived >= idle-archive after their last access: the span that
        # counts is from the first cold session to the last.
        span = took - (state["first_cold_at"] or 0)
        return base, lat, done, took, span, ci, ticks_before
    finally:
        server.close()


def report(where, base, lat, done, took, span, ci, before):
    print(f"\n#### GET latency while the timer archives {SESSIONS:,} idle sessions, "
          f"archive-dir on {where}, archive-codec {ci.get('archive_codec', 'huffman')} "
          f"({datetime.date.today().isoformat()})\n")
    print("| phase | GETs | p50 us | p99 us | p99.9 us | worst ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(lat_row(f"before: {SESSIONS:,} hot sessions, timer scanning, {BASELINE_SECONDS:g} s",
                  base))
    print(lat_row("while archiving", lat))
    cold = ci["cold_sessions"]
    status = ("all archived" if done else
              f"stopped after {took:.0f} s with {cold:,} of {SESSIONS:,} archived")
    print(f"\nArchiving: {status}; {took:.1f} s from CONFIG SET idle-archive 1 to the end, "
          f"{span:.1f} s from the first cold session ({cold / max(span, 1e-9):,.0f} sessions/s).")
    print(f"INFO convcache: timer_tick_us_max {ci['timer_tick_us_max']:,}, timer_tick_us_avg "
          f"{ci['timer_tick_us_avg']:,} (before archiving: max {before['timer_tick_us_max']:,}, "
          f"avg {before['timer_tick_us_avg']:,}); archive_writes {ci['archive_writes']:,}, "
          f"io_errors {ci['io_errors']}, io_queue_depth {ci['io_queue_depth']:,}, "
          f"archive_compression_ratio {ci.get('archive_compression_ratio')}, "
          f"archive_disk_ratio {ci.get('archive_disk_ratio')}, "
          f"archive_dict_id {ci.get('archive_dict_id')}")
    return done, pct(sorted(lat), 0.999)


def main():
    for what, path in (("VALKEY_SERVER", VALKEY_SERVER), ("MODULE_SO", MODULE_SO)):
        if not path or not os.path.exists(path):
            print(f"{what} is not set to an existing file (run through `make bench`)",
                  file=sys.stderr)
            return 2
    try:
        with open("/proc/loadavg") as f:
            print(f"load average before the run: {' '.join(f.read().split()[:3])} "
                  f"on {os.cpu_count()} cores (other work on the machine halves the MB/s)")
    except OSError:
        pass
    run_codec_bench()
    print("\nGET client: one connection, GET of a 1-byte string in a loop, each call timed in "
          "the client (redis-py; about 40-80 us of p50 is the client itself).")
    ok = True
    if os.path.isdir("/dev/shm"):
        # Today's codec and codec v2 (zstd; the dictionary is trained during the run) on the
        # same workload, one after the other: the GET p99.9 of v2 must stay within today's.
        p999 = {}
        for codec in ("huffman", "zstd"):
            done, p999[codec] = report("tmpfs (/dev/shm)", *archive_run("/dev/shm", TIMEOUT, codec))
            ok = ok and done
        verdict = "ok" if p999["zstd"] <= p999["huffman"] * 1.10 else "MISSED"
        print(f"\nGoal: GET p99.9 while archiving with zstd {p999['zstd']:.0f} us vs huffman "
              f"{p999['huffman']:.0f} us (within today's figure, 10% noise allowed): {verdict}")
    report(f"disk ({tempfile.gettempdir()}, fsync per write), at most {DISK_SECONDS:g} s",
           *archive_run(None, DISK_SECONDS))
    if not ok:
        print("\nGOAL MISSED: archiving on tmpfs did not finish within the timeout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
