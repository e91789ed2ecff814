"""Issue 25's write storm: `redis-benchmark -c 50 -P 16 -r 20000 CONV.ADD storm:__rand_int__
user <200 bytes>` (3M adds by default), against one Valkey 9.1 with the module (window 20).
Prints the peak of turns in memory over the windows (goal: within 2x), how long the turns in
memory take to drain to the windows once the storm stops (goal: within 10 s), and CONV.ADD
vs RPUSH of the same payload into the same keyspace in the same run (goal: 0.9x or more).
A report, not a test: a missed goal is printed, exit stays 0.

Env: VALKEY_SERVER, MODULE_SO (set by `make bench`); optional STORM_ADDS (3000000),
STORM_SESSIONS (20000)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)
from harness import Server  # noqa: E402
from storm import BENCHMARK, BODY, storm  # noqa: E402

ADDS = int(os.environ.get("STORM_ADDS", "3000000"))
SESSIONS = int(os.environ.get("STORM_SESSIONS", "20000"))


def rps(port, command, n):
    out = subprocess.run([BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-P", "16",
                          "-n", str(n), "-r", str(SESSIONS), "--csv", *command],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return float(out.strip().splitlines()[-1].split('","')[1].strip('"'))


def main():
    s = Server("valkey", module_args=["window", "20"], extra=["--appendonly", "no"]).start()
    try:
        f = storm(s, ADDS, SESSIONS)
        c = s.client()
        c.flushall()
        # ADD vs RPUSH, alternated, 3 rounds of 500,000 each, on the same server.
        ratios = []
        for _ in range(3):
            push = rps(s.port, ["RPUSH", "list:__rand_int__", BODY], 500_000)
            add = rps(s.port, ["CONV.ADD", "storm:__rand_int__", "user", BODY], 500_000)
            ratios.append(add / push)
            c.flushall()
        ratios.sort()
    finally:
        s.cleanup()
    drain = "not within 30 s" if f["drain_s"] is None else f"{f['drain_s']:.1f} s"
    print(f"| storm ({f['adds']:,} adds, {f['sessions']:,} sessions, {f['seconds']:.1f} s) | figure | goal |")
    print("|---|---|---|")
    print(f"| peak turns in memory / windows | {f['peak_hot']:,} / {f['windows']:,} = "
          f"{f['peak_over_windows']:.2f}x | <= 2x |")
    print(f"| drain to the windows (+ overflow short of a batch) after the storm | {drain} | <= 10 s |")
    print(f"| CONV.ADD / RPUSH, same payload and keyspace (median of 3) | {ratios[1]:.2f}x "
          f"({', '.join(f'{r:.2f}' for r in ratios)}) | >= 0.9x |")


if __name__ == "__main__":
    main()
