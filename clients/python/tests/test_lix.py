"""convcache.lix, the drop-in for lix-open-cache 2.1.6: the same names and signatures, the
package's own README examples run unchanged, and one scripted workload runs against the real
package (on its own server without the module) and against the drop-in (on a server with
it), comparing answers. Where lix has a defect, the test shows it in lix and its absence in
the drop-in."""
import dataclasses
import inspect
import os
import shutil
import threading

import numpy as np
import pytest

import lix_open_cache
import lix_open_cache.hybrid_cache
from loguru import logger

import convcache.lix
from convcache.lix import server_settings

logger.disable("lix_open_cache")  # lix logs every call at DEBUG/INFO to stderr

CLASSES = ["CacheConfig", "CacheCoordinator", "HybridConversationCache", "SessionContextWindow",
           "SemanticCacheRedis", "URLEmbeddingCache"]


class DistinctMillisClock:
    """The `time` module for lix's hybrid_cache in comparisons: real time, but never the same
    millisecond twice, so lix's same-millisecond defect (tested on its own below) does not
    make the comparison flaky."""

    def __init__(self):
        self.last = 0.0

    def time(self):
        import time
        self.last = max(time.time(), self.last + 0.0011)
        return self.last


@pytest.fixture
def pair(kind, servers, plain_server, tmp_path, monkeypatch):
    """(lix module, its config) on a plain server and (drop-in, its config) on a module
    server, both with a 5-message window. lix writes its archive under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lix_open_cache.hybrid_cache, "time", DistinctMillisClock())
    plain = plain_server(kind)
    mod = servers(kind, module_args=["timer-interval-ms", "20"])
    lix_cfg = lix_open_cache.CacheConfig(redis_host="127.0.0.1", redis_port=plain.port,
                                         hot_window_size=5, archive_dir=str(tmp_path / "lix"))
    our_cfg = convcache.lix.CacheConfig(redis_host="127.0.0.1", redis_port=mod.port,
                                        hot_window_size=5)
    return (lix_open_cache, lix_cfg, plain), (convcache.lix, our_cfg, mod)


def comparable(msgs):
    """Messages without their timestamps (each side's own clock)."""
    return [{k: v for k, v in m.items() if k != "timestamp"} for m in msgs]


def check_timestamps(msgs, lo, hi):
    ts = [m["timestamp"] for m in msgs]
    assert ts == sorted(ts) and all(lo - 1 <= t <= hi + 1 for t in ts), ts


# ------------------------------------------------------------------------------------------
# The same API

def test_same_public_names_fields_and_signatures():
    for name in lix_open_cache.__all__:
        if name in ("HuffmanCodec", "ConversationArchive", "_get_archive"):
            continue  # client-side disk tools: the server archives (documented)
        assert hasattr(convcache.lix, name), name
    lix_fields = [(f.name, f.default) for f in dataclasses.fields(lix_open_cache.CacheConfig)]
    our_fields = [(f.name, f.default) for f in dataclasses.fields(convcache.lix.CacheConfig)]
    assert our_fields == lix_fields
    assert convcache.lix.CacheConfig.from_env("X") == convcache.lix.CacheConfig(
        **dataclasses.asdict(lix_open_cache.CacheConfig.from_env("X")))
    for name in CLASSES:
        lix_cls, our_cls = getattr(lix_open_cache, name), getattr(convcache.lix, name)
        lix_methods = {m for m, _ in inspect.getmembers(lix_cls, inspect.isfunction)
                       if not m.startswith("_") or m == "__init__"}
        for m in lix_methods:
            assert hasattr(our_cls, m), f"{name}.{m}"
            assert inspect.signature(getattr(our_cls, m)).parameters.keys() == \
                inspect.signature(getattr(lix_cls, m)).parameters.keys(), f"{name}.{m}"


# The examples of lix-open-cache's README, verbatim (PyPI page "Quick Start", and the
# repository README's "Full 3-layer setup" and "Session memory only"); only the port differs.
QUICK_START = '''
from lix_open_cache import CacheConfig, CacheCoordinator

config = CacheConfig(redis_host="localhost", redis_port=6379)
cache = CacheCoordinator(session_id="user-abc", config=config)

# Store & retrieve conversation context
cache.add_message_to_context("user", "What's the weather in Tokyo?")
cache.add_message_to_context("assistant", "22C and sunny.")
history = cache.get_context_messages()

# Semantic cache — skip LLM on similar queries
import numpy as np
embedding = np.random.rand(384).astype(np.float32)
cached = cache.get_semantic_response("https://weather.com", embedding)
'''

FULL_SETUP = '''
from lix_open_cache import CacheConfig, CacheCoordinator

config = CacheConfig(
    redis_host="localhost",
    redis_port=6379,
    redis_key_prefix="mychat",
    archive_dir="./data/conversations",
)

cache = CacheCoordinator(session_id="user-abc", config=config)

# Store messages
cache.add_message_to_context("user", "What's the weather in Tokyo?")
cache.add_message_to_context("assistant", "It's 22°C and sunny.")

# Retrieve context for next LLM call
history = cache.get_context_messages()

# Check semantic cache before calling LLM
import numpy as np
query_embedding = np.random.rand(384).astype(np.float32)
cached = cache.get_semantic_response("https://weather.com", query_embedding)
if cached:
    print("Cache hit — skip LLM")
else:
    response = {"answer": "22°C and sunny", "sources": ["..."]}
    cache.cache_semantic_response("https://weather.com", query_embedding, response)
'''

SESSION_ONLY = '''
from lix_open_cache import HybridConversationCache, CacheConfig

config = CacheConfig(redis_host="localhost", redis_port=6379)
cache = HybridConversationCache("session-123", config=config)

cache.add_message("user", "hello")
cache.add_message("assistant", "hey there!")

messages = cache.get_context()  # last 20 from Redis

# Smart retrieval: recent + semantically relevant from disk
context = cache.smart_context(
    query="what did we talk about yesterday?",
    query_embedding=your_embedding,
    recent_k=10,
    disk_k=5,
)
# → {"recent": [...last 10...], "relevant": [...5 from disk archive...]}
'''


def run_example(code, port, dropin):
    if dropin:
        code = code.replace("from lix_open_cache import", "from convcache.lix import")
    code = code.replace("redis_port=6379", f"redis_port={port}")
    env = {"your_embedding": np.ones(8, dtype=np.float32)}
    exec(compile(code, "<readme example>", "exec"), env)
    return env


def test_lix_readme_examples_run_unchanged_and_answer_the_same(pair):
    (_, _, plain), (_, _, mod) = pair
    for code in (QUICK_START, FULL_SETUP, SESSION_ONLY):
        theirs = run_example(code, plain.port, dropin=False)
        ours = run_example(code, mod.port, dropin=True)
        assert type(ours["cache"]).__module__.startswith("convcache.lix")
        for name in ("history", "messages"):
            if name in theirs:
                assert comparable(ours[name]) == comparable(theirs[name]) != []
        if "context" in theirs:
            assert comparable(ours["context"]["recent"]) == comparable(theirs["context"]["recent"])
            assert ours["context"]["relevant"] == theirs["context"]["relevant"] == []
        if "cached" in theirs:
            assert ours["cached"] is None and theirs["cached"] is None
    # FULL_SETUP cached its response: a second run of the same lookup hits on both sides.
    emb = np.random.rand(384).astype(np.float32)
    for mod_, port in ((lix_open_cache, plain.port), (convcache.lix, mod.port)):
        c = mod_.CacheCoordinator("user-abc", config=mod_.CacheConfig(
            redis_host="localhost", redis_port=port, redis_key_prefix="mychat"))
        c.cache_semantic_response("https://weather.com", emb, {"answer": "22°C"})
        assert c.get_semantic_response("https://weather.com", emb * 2) == {"answer": "22°C"}


# ------------------------------------------------------------------------------------------
# One workload, both implementations

def workload(mod, cfg, rng_seed=7):
    """The script both sides run; returns everything they answered."""
    import time
    out = {}
    rng = np.random.default_rng(rng_seed)
    t0 = time.time()
    ctx = mod.SessionContextWindow("sess-1", config=cfg)
    out["adds"] = [ctx.add_message("user" if i % 2 == 0 else "assistant", f"turn {i}: ✓ {'fox ' * (i % 3)}",
                                   {"i": i, "tags": ["a", i]} if i % 4 == 0 else None)
                   for i in range(12)]
    out["context"] = ctx.get_context()
    out["formatted"] = ctx.get_formatted_context()
    out["formatted_2"] = ctx.get_formatted_context(max_lines=2)
    out["full"] = ctx.get_full_history()
    out["stats"] = ctx.get_stats()
    # Embedding search over older turns (HybridConversationCache takes embeddings).
    h = mod.HybridConversationCache("sess-2", config=cfg)
    embs = rng.standard_normal((9, 32)).astype(np.float32)
    for i, e in enumerate(embs):
        h.add_message("user", f"emb turn {i}", None, embedding=e)
    sc = h.smart_context("anything", query_embedding=embs[1] + 0.05 * embs[0], recent_k=3, disk_k=2)
    out["smart_recent"] = sc["recent"]
    out["smart_top"] = sc["relevant"][0]
    out["t"] = (t0, time.time())
    # Semantic cache: 64-dim, threshold 0.9.
    sem = mod.SemanticCacheRedis("sess-1", config=cfg, max_items_per_url=5)
    base = rng.standard_normal((8, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    responses = [{"answer": f"r{i}", "nested": {"x": [i, 1.5, None, "é"]}} for i in range(8)]
    for i in range(8):
        sem.set("https://a.example", base[i], responses[i])
    sem.set("https://b.example", base[0], {"only": "b"})
    noise = rng.standard_normal(64).astype(np.float32)
    noise -= noise.dot(base[6]) * base[6]
    noise /= np.linalg.norm(noise)

    def at(sim):  # a query whose cosine similarity with base[6] is `sim`
        return sim * base[6] + np.sqrt(1 - sim * sim) * noise
    out["sem"] = {
        "exact": sem.get("https://a.example", base[7]),
        "near_0.95": sem.get("https://a.example", at(0.95)),
        "far_0.85": sem.get("https://a.example", at(0.85)),
        "evicted": sem.get("https://a.example", base[0]),  # max 5 items: 0..2 dropped
        "kept": sem.get("https://a.example", base[3]),
        "other_url": sem.get("https://b.example", base[0]),
        "unknown_url": sem.get("https://c.example", base[0]),
        "list_query": sem.get("https://a.example", base[4].tolist()),
        "wrong_dim": sem.get("https://a.example", base[4][:10]),
    }
    out["sem_stats"] = sem.get_stats()
    out["sem_cleared"] = sem.clear_session()
    out["sem_after_clear"] = sem.get("https://a.example", base[7])
    # URL embeddings.
    url = mod.URLEmbeddingCache("sess-1", config=cfg)
    v = rng.standard_normal(384).astype(np.float32)
    out["url_set"] = url.set("https://u.example", v)
    out["url_get"] = url.get("https://u.example")
    out["url_list"] = (url.set("https://l.example", [1.0, 2.0]), url.get("https://l.example"))
    out["url_missing"] = url.get("https://missing.example")
    batch = {f"https://{i}.example": rng.standard_normal(16).astype(np.float32) for i in range(5)}
    out["url_batch"] = url.batch_set(batch)
    out["url_batch_back"] = [url.get(u) for u in batch]
    out["url_batch_in"] = list(batch.values())
    out["url_stats_keys"] = sorted(url.get_stats())
    # The coordinator's facade.
    co = mod.CacheCoordinator("sess-3", config=cfg)
    co.add_message_to_context("user", "hello")
    co.add_message_to_context("assistant", "hi there")
    co.cache_url_embedding("https://co.example", v)
    out["co_context"] = co.get_context_messages()
    out["co_formatted"] = co.get_formatted_context()
    out["co_url"] = co.get_url_embedding("https://co.example")
    out["co_batch"] = co.batch_cache_url_embeddings({"https://x.example": v})
    co.cache_semantic_response("https://co.example", base[2], {"a": 1})
    out["co_sem"] = co.get_semantic_response("https://co.example", base[2])
    stats = co.get_stats()
    out["co_stats_keys"] = {k: sorted(v) if isinstance(v, dict) else type(v).__name__
                            for k, v in stats.items()}
    out["co_clear"] = co.clear_session_cache()
    out["co_sem_after_clear"] = co.get_semantic_response("https://co.example", base[2])
    return out


def test_same_workload_same_answers(pair):
    (lix, lix_cfg, _), (ours, our_cfg, _) = pair
    theirs, mine = workload(lix, lix_cfg), workload(ours, our_cfg)
    assert mine["adds"] == theirs["adds"] == [1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5]
    assert comparable(mine["context"]) == comparable(theirs["context"])
    assert [m["content"] for m in mine["context"]] == [f"turn {i}: ✓ {'fox ' * (i % 3)}" for i in range(7, 12)]
    assert mine["context"][1]["metadata"] == {"i": 8, "tags": ["a", 8]}
    check_timestamps(mine["context"], *mine["t"])
    assert set(mine["context"][0]) == set(theirs["context"][0]) == {"role", "content", "timestamp", "metadata"}
    for k in ("formatted", "formatted_2"):
        assert mine[k] == theirs[k]
    assert comparable(mine["full"]) == comparable(theirs["full"]) and len(mine["full"]) == 12
    check_timestamps(mine["full"], *mine["t"])
    assert set(mine["stats"]) == set(theirs["stats"])
    for k in ("session_id", "hot_messages", "hot_window_size", "ttl_seconds", "max_tokens"):
        assert mine["stats"][k] == theirs["stats"][k], k
    assert comparable(mine["smart_recent"]) == [
        {k: v for k, v in m.items() if k != "embedding"} for m in comparable(theirs["smart_recent"])]
    assert mine["smart_top"]["content"] == theirs["smart_top"]["content"] == "emb turn 1"
    assert mine["sem"] == theirs["sem"]
    assert mine["sem"]["exact"] == {"answer": "r7", "nested": {"x": [7, 1.5, None, "é"]}}
    assert mine["sem"]["near_0.95"]["answer"] == "r6" and mine["sem"]["far_0.85"] is None
    assert mine["sem"]["evicted"] is None and mine["sem"]["kept"]["answer"] == "r3"
    assert mine["sem"]["other_url"] == {"only": "b"} and mine["sem"]["wrong_dim"] is None
    assert mine["sem_stats"] == theirs["sem_stats"] and mine["sem_stats"]["cached_urls"] == 2
    assert mine["sem_cleared"] is theirs["sem_cleared"] is True
    assert mine["sem_after_clear"] is theirs["sem_after_clear"] is None
    assert mine["url_set"] is theirs["url_set"] is True
    for a, b in ((mine["url_get"], theirs["url_get"]), (mine["url_list"][1], theirs["url_list"][1]),
                 (mine["co_url"], theirs["co_url"])):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(mine["url_list"][1], [1.0, 2.0])
    assert mine["url_missing"] is theirs["url_missing"] is None
    assert mine["url_batch"] == theirs["url_batch"] == {u: True for u in mine["url_batch"]}
    for a, b, v in zip(mine["url_batch_back"], theirs["url_batch_back"], mine["url_batch_in"]):
        assert np.array_equal(a, v) and np.array_equal(b, v)
    assert mine["url_stats_keys"] == theirs["url_stats_keys"]
    assert comparable(mine["co_context"]) == comparable(theirs["co_context"])
    assert mine["co_formatted"] == theirs["co_formatted"] == "User: hello\nAssistant: hi there"
    assert mine["co_batch"] == theirs["co_batch"]
    assert mine["co_sem"] == theirs["co_sem"] == {"a": 1}
    assert mine["co_stats_keys"] == theirs["co_stats_keys"]
    assert mine["co_clear"] is theirs["co_clear"] is True
    assert mine["co_sem_after_clear"] is theirs["co_sem_after_clear"] is None


# ------------------------------------------------------------------------------------------
# lix's defects, and the drop-in without them

class FrozenClock:
    """A stand-in for the `time` module inside lix's hybrid_cache: every add happens in the
    same millisecond, deterministically (what two fast adds, or two workers, hit by chance)."""

    def __init__(self, t):
        self.t = t

    def time(self):
        return self.t


def test_same_millisecond_turns_collide_in_lix_not_in_the_dropin(pair, monkeypatch):
    (lix, lix_cfg, _), (ours, our_cfg, mod) = pair
    monkeypatch.setattr(lix_open_cache.hybrid_cache, "time", FrozenClock(1_700_000_000.0005))
    theirs = lix.HybridConversationCache("s", config=lix_cfg)
    theirs.add_message("user", "What is the capital of France?")
    theirs.add_message("assistant", "Paris.")
    # lix keys a turn by its millisecond: the answer overwrote the question.
    assert [m["content"] for m in theirs.get_context()] == ["Paris.", "Paris."]
    monkeypatch.undo()

    mine = ours.HybridConversationCache("s", config=our_cfg)
    mine.add_message("user", "What is the capital of France?")
    mine.add_message("assistant", "Paris.")
    assert [m["content"] for m in mine.get_context()] == ["What is the capital of France?", "Paris."]
    # Four workers adding to one session at full speed: many turns share a millisecond,
    # none is lost or reordered within its worker.
    big = ours.HybridConversationCache("burst", config=our_cfg, hot_window_size=1000)

    def worker(w):
        for i in range(100):
            big.add_message("user", f"w{w} #{i}")
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    full = big.get_full()
    assert len(full) == 400
    for w in range(4):
        assert [m["content"] for m in full if m["content"].startswith(f"w{w} ")] == \
            [f"w{w} #{i}" for i in range(100)]
    stamps = [m["timestamp"] for m in full]
    assert len(set(stamps)) < len(stamps)  # the burst did put several turns in one ms


def test_concurrent_semantic_writers_lose_entries_in_lix_not_in_the_dropin(pair):
    (lix, lix_cfg, plain), (ours, our_cfg, mod) = pair
    vecs = np.eye(128, dtype=np.float32)[:100] + 0.01  # 100 distinct directions

    def run(mod_, cfg):
        barrier = threading.Barrier(4)

        def writer(w):
            cache = mod_.SemanticCacheRedis("s", config=cfg, max_items_per_url=1000)
            barrier.wait()
            for i in range(w, 100, 4):
                cache.set("https://x.example", vecs[i], {"i": i})
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cache = mod_.SemanticCacheRedis("s", config=cfg)
        return sum(cache.get("https://x.example", vecs[i]) == {"i": i} for i in range(100))

    lix_found = run(lix, lix_cfg)
    assert lix_found < 100  # read-modify-write of one JSON blob: concurrent writes are lost
    assert run(ours, our_cfg) == 100


def test_get_full_duplicates_turns_in_lix_not_in_the_dropin(pair):
    (lix, lix_cfg, _), (ours, our_cfg, _) = pair
    got = {}
    for name, mod_, cfg in (("lix", lix, lix_cfg), ("ours", ours, our_cfg)):
        h = mod_.HybridConversationCache("dup", config=cfg)
        for i in range(7):
            h.add_message("user", f"m{i}")
        h.get_full()  # lix writes the hot turns into its archive here...
        for i in range(7, 10):
            h.add_message("user", f"m{i}")  # ...and again when they overflow
        got[name] = [m["content"] for m in h.get_full()]
    assert got["ours"] == [f"m{i}" for i in range(10)]
    assert len(got["lix"]) > 10 and got["lix"].count("m2") == 2


def test_flush_to_disk_and_clear(pair):
    """lix's flush_to_disk (and its idle evictor, the same function) formats the turn ids it
    reads back as b'...' and finds no message: nothing moves to disk. Its clear() then leaves
    the archived overflow turns, which the next get_context() brings back."""
    (lix, lix_cfg, _), (ours, our_cfg, _) = pair
    theirs = lix.HybridConversationCache("c", config=lix_cfg)
    mine = ours.HybridConversationCache("c", config=our_cfg)
    for h in (theirs, mine):
        for i in range(8):
            h.add_message("user", f"m{i}")
        assert h.flush_to_disk() is True
    assert theirs.get_stats()["disk_turns"] == 3  # only the 3 that overflowed the window
    assert theirs.get_stats()["hot_messages"] == 5  # still only in Redis
    info = mine.redis_client.execute_command("CONV.INFO", convcache.lix.session_key(our_cfg, "c"))
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert (info[b"archived"], info[b"hot"]) == (8, 0)
    assert [m["content"] for m in mine.get_context()] == [f"m{i}" for i in range(3, 8)]
    for h in (theirs, mine):
        assert h.clear() is True
    assert [m["content"] for m in theirs.get_context()] == ["m0", "m1", "m2"]
    assert mine.get_context() == [] and mine.get_full() == []


# ------------------------------------------------------------------------------------------
# Migration and server settings

def test_import_a_real_lix_archive(pair):
    (lix, lix_cfg, _), (ours, our_cfg, mod) = pair
    h = lix.HybridConversationCache("old-session", config=lix_cfg)
    for i in range(9):
        h.add_message("user" if i % 2 == 0 else "assistant", f"old turn {i} ✓",
                      {"i": i} if i % 3 == 0 else None,
                      embedding=np.array([i, 1.0, -1.0], dtype=np.float32))
    assert h.flush_to_disk() is True
    want = h.get_full()
    assert len(want) == 9
    imp = os.path.join(mod.dir, "convcache-import")
    os.makedirs(imp)
    shutil.copy(os.path.join(lix_cfg.archive_dir, "old-session.huff"), imp)
    assert convcache.lix.import_lix_session("old-session", config=our_cfg) == 9
    mine = ours.HybridConversationCache("old-session", config=our_cfg)
    got = mine.get_full()
    assert comparable(got) == [{k: v for k, v in m.items() if k != "embedding"} for m in comparable(want)]
    assert [round(m["timestamp"], 3) for m in got] == [round(m["timestamp"], 3) for m in want]
    # The embeddings came along: smart_context finds turn 4 by its vector.
    sc = mine.smart_context("", query_embedding=[4, 1.0, -1.0], recent_k=2, disk_k=1)
    assert sc["relevant"][0]["content"] == "old turn 4 ✓"
    assert mine.add_message("user", "new turn") == 5  # the window holds 5


def test_server_settings_are_loadmodule_arguments(kind, servers, tmp_path):
    cfg = convcache.lix.CacheConfig(archive_dir=str(tmp_path / "arch"), disk_ttl_days=3,
                                    evict_after_minutes=30, hot_window_size=12)
    settings = server_settings(cfg)
    s = servers(kind, module_args=[x for kv in settings.items() for x in kv])
    got = s.client().config_get("convcache.*")
    assert got["convcache.idle-archive"] == "1800" and got["convcache.archive-ttl"] == "3"
    assert got["convcache.window"] == "12" and got["convcache.archive-dir"] == str(tmp_path / "arch")
