"""The write storm of issue 25, shared by benches/bench_storm.py (the figures) and
tests/test_pressure.py (the bound): redis-benchmark pipelining CONV.ADDs of ~200 bytes into
a random keyspace, while a sampler reads INFO convcache; afterwards the turns in memory
drain to the windows (plus each session's overflow short of an archive batch, which waits
for the next batch or for idle archival by design)."""
import shutil
import subprocess
import threading
import time

BENCHMARK = shutil.which("redis-benchmark")
BODY = "x" * 200


def storm(server, adds, sessions, clients=50, pipeline=16, window=20, batch=10, drain_s=30):
    """Runs the storm; returns a dict of figures."""
    c = server.client(socket_timeout=60)
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic(), c.info("convcache")["convcache_hot_messages"]))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.monotonic()
    subprocess.run([BENCHMARK, "-h", "127.0.0.1", "-p", str(server.port), "-c", str(clients),
                    "-P", str(pipeline), "-n", str(adds), "-r", str(sessions), "-q",
                    "CONV.ADD", "storm:__rand_int__", "user", BODY],
                   check=True, capture_output=True, timeout=600)
    ended = time.monotonic()
    keys = c.dbsize()
    # At rest: each session's window plus an overflow short of a batch at most.
    rest = keys * (window + batch - 1)
    drained = None
    while time.monotonic() - ended < drain_s:
        if samples and samples[-1][0] > ended and samples[-1][1] <= rest:
            drained = samples[-1][0] - ended
            break
        time.sleep(0.1)
    stop.set()
    t.join()
    peak = max(h for _, h in samples)
    return {
        "adds": adds, "seconds": ended - start, "sessions": keys,
        "windows": keys * window, "peak_hot": peak, "peak_over_windows": peak / (keys * window),
        "drain_s": drained, "hot_at_end": samples[-1][1], "rest_bound": rest,
    }
