"""The typed Python client (clients/python) against the same commands sent raw through
redis-py, on the same connection: what the typed layer costs per call.

For each call, the typed method and `client.execute_command(*the args it sends)` alternate
call by call, BENCH_ITERS pairs per block, BENCH_REPS blocks (which side goes first flips per
block); the figures are the medians of the blocks' mean µs per call and of their ratios
(typed / raw; the goal is <= 1.3x). Run for each
reply parser redis-py can use (hiredis, when installed, and its pure-Python parser) and both
protocols (RESP2, RESP3). One Valkey server with the module, one client, loopback. A report,
not a test: exit stays 0 whatever the ratios.

Env: VALKEY_SERVER, MODULE_SO (as `make bench` sets them); optional BENCH_ITERS (default
1000), BENCH_REPS (7), BENCH_ONLY (substring of the call names to run), BENCH_CLIENT_SRC (a
clients/python/src to measure instead of this one, e.g. `git archive` of an older commit)."""
import os
import statistics
import sys
import time

import numpy as np
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser
from redis.utils import HIREDIS_AVAILABLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
# BENCH_CLIENT_SRC: another copy of clients/python/src (e.g. an older commit's) to measure.
sys.path.insert(0, os.environ.get("BENCH_CLIENT_SRC") or os.path.join(ROOT, "clients", "python", "src"))
from harness import Server  # noqa: E402

from convcache import Conversations, EmbeddingCache, SemanticCache  # noqa: E402
import convcache  # noqa: E402

ITERS = int(os.environ.get("BENCH_ITERS", "1000"))
REPS = int(os.environ.get("BENCH_REPS", "7"))
ONLY = os.environ.get("BENCH_ONLY", "")
GOAL = 1.3

TURN = ("Can you help me rewrite this paragraph so it sounds more professional? I need to tell "
        "the team the release slips two weeks because of the database migration.")


class Recorder:
    """Wraps a client to capture the args a typed call sends (once, before timing)."""

    def __init__(self, client):
        self.client = client
        self.args = None

    def execute_command(self, *args, **kw):
        self.args = args
        return self.client.execute_command(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def calls(r):
    """(name, typed call, raw args) for every typed method worth measuring."""
    rec = Recorder(r)
    conv, sem, emb = Conversations(rec), SemanticCache(rec), EmbeddingCache(rec)
    rng = np.random.default_rng(1)
    v384 = rng.standard_normal(384).astype(np.float32)
    v1536 = rng.standard_normal(1536).astype(np.float32)
    r.delete("b:ctx", "b:add", "b:sc", "b:sc1536", "b:emb")
    for i in range(40):
        r.execute_command("CONV.ADD", "b:ctx", "user" if i % 2 == 0 else "assistant",
                          f"{TURN} ({i})", "META", '{"lang":"en"}', "WINDOW", "20")
    for i in range(50):
        r.execute_command("SEMCACHE.SET", "b:sc", (v384 + i * 0.01).astype(np.float32).tobytes(),
                          f"answer {i}", "EX", 0, "META", '{"model":"m"}', "TAG", "user", "u1")
        r.execute_command("SEMCACHE.SET", "b:sc1536", (v1536 + i * 0.01).astype(np.float32).tobytes(),
                          f"answer {i}", "EX", 0)
    emb.set("b:emb", v384, ex=3600)
    out = [
        ("conv.add", lambda: conv.add("b:add", "user", TURN, window=20)),
        ("conv.ctx count=20", lambda: conv.ctx("b:ctx", count=20)),
        ("conv.ctx count=5", lambda: conv.ctx("b:ctx", count=5)),
        ("conv.history 20", lambda: conv.history("b:ctx", from_seq=21, to_seq=40)),
        ("conv.len", lambda: conv.len("b:ctx")),
        ("conv.info", lambda: conv.info("b:ctx")),
        ("conv.search text", lambda: conv.search("b:ctx", text="database migration", k=3, recent=2)),
        ("sem.get 50x384", lambda: sem.get("b:sc", v384)),
        ("sem.get 50x1536", lambda: sem.get("b:sc1536", v1536)),
        ("sem.lookup count=3", lambda: sem.lookup("b:sc", v384, count=3)),
        ("sem.get filter", lambda: sem.get("b:sc", v384, filter={"user": "u1"})),
        ("sem.set 384", lambda: sem.set("b:sc", v384, "answer", ex=60, max_items=50)),
        ("sem.len", lambda: sem.len("b:sc")),
        ("sem.info", lambda: sem.info("b:sc")),
        ("emb.get", lambda: emb.get("b:emb")),
        ("emb.set", lambda: emb.set("b:emb", v384, ex=3600)),
        ("emb.mget 10", lambda: emb.mget(["b:emb"] * 10)),
    ]
    result = []
    for name, fn in out:
        if ONLY and ONLY not in name:
            continue
        rec.args = None
        fn()
        result.append((name, fn, rec.args))
    return result


def paired(typed, raw, n, typed_first):
    """n calls of each, interleaved one by one (machine noise hits both sides alike);
    returns the mean µs per call of each."""
    clock = time.perf_counter
    t_sum = r_sum = 0.0
    for _ in range(n):
        if typed_first:
            a = clock()
            typed()
            b = clock()
            raw()
            c = clock()
            t_sum += b - a
            r_sum += c - b
        else:
            a = clock()
            raw()
            b = clock()
            typed()
            c = clock()
            r_sum += b - a
            t_sum += c - b
    return t_sum / n * 1e6, r_sum / n * 1e6


def measure(r):
    rows = []
    for name, typed, args in calls(r):
        raw = lambda a=args: r.execute_command(*a)  # noqa: E731
        paired(typed, raw, 50, True)
        t_us, r_us, ratios = [], [], []
        for rep in range(REPS):
            b, a = paired(typed, raw, ITERS, rep % 2 == 0)
            t_us.append(b)
            r_us.append(a)
            ratios.append(b / a)
        rows.append((name, statistics.median(t_us), statistics.median(r_us),
                     statistics.median(ratios)))
    return rows


def main():
    if not os.environ.get("VALKEY_SERVER") or not os.environ.get("MODULE_SO"):
        sys.exit("set VALKEY_SERVER and MODULE_SO")
    server = Server("valkey").start()
    try:
        import json
        try:
            from convcache import _common
            fast_json = _common.loads
        except (ImportError, AttributeError):  # an older client: json only
            import types
            _common = types.SimpleNamespace(loads=json.loads)
            fast_json = json.loads
        json_name = "orjson" if fast_json is not json.loads else "json"
        configs = [("hiredis", _HiredisParser, p, json_name) for p in (2, 3)] if HIREDIS_AVAILABLE else []
        configs += [("python", None, p, json_name) for p in (2, 3)]
        if json_name == "orjson":  # without orjson (the stdlib's json)
            if HIREDIS_AVAILABLE:
                configs.append(("hiredis", _HiredisParser, 3, "json"))
            configs.append(("python", None, 3, "json"))
        print(f"# client {os.path.dirname(convcache.__file__)}")
        print(f"# typed client vs raw execute_command, same connection; redis-py {redis.__version__}, "
              f"{ITERS} calls x {REPS} blocks, median; goal typed/raw <= {GOAL}x")
        worst = []
        for pname, pcls, proto, jname in configs:
            _common.loads = fast_json if jname == json_name else json.loads
            if True:
                cls = pcls or (_RESP3Parser if proto == 3 else _RESP2Parser)
                pool = redis.ConnectionPool(host="127.0.0.1", port=server.port,
                                            protocol=proto, parser_class=cls)
                r = redis.Redis(connection_pool=pool)
                r.ping()
                assert type(pool.get_connection()._parser) is cls
                print(f"\n## parser {pname}, RESP{proto}, JSON replies parsed by {jname}")
                print("| call | typed µs | raw µs | typed/raw |")
                print("|---|---:|---:|---:|")
                for name, t, a, ratio in measure(r):
                    flag = "" if ratio <= GOAL else " (over)"
                    print(f"| {name} | {t:.1f} | {a:.1f} | {ratio:.2f}x{flag} |")
                    worst.append((ratio, f"{name} [{pname}, RESP{proto}, {jname}]"))
                r.close()
        worst.sort(reverse=True)
        print("\nslowest ratios: " + ", ".join(f"{n} {x:.2f}x" for x, n in worst[:5]))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
