"""ConvcacheStore / AsyncConvcacheStore through LangGraph's public store API, against real
servers; embeddings from a deterministic bag-of-words function (no network)."""
import asyncio
import re
import time
import zlib

import numpy as np
import pytest
import redis.asyncio
from langchain_core.embeddings import Embeddings
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore, Item
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from convcache.langgraph import AsyncConvcacheStore, ConvcacheStore


class WordEmbeddings(Embeddings):
    def __init__(self):
        self.calls = 0

    def embed_query(self, text):
        self.calls += 1
        v = np.zeros(128, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[zlib.crc32(w.encode()) % 128] += 1.0
        v[127] += 0.01
        return v.tolist()

    def embed_documents(self, texts):
        return [self.embed_query(t) for t in texts]


DOCS = {
    ("users", "u1", "memories"): {
        "m1": {"text": "likes hiking in the mountains", "kind": "hobby", "n": 3},
        "m2": {"text": "allergic to peanuts", "kind": "health", "n": 7},
        "m3": {"text": "works as a database engineer on valkey", "kind": "job", "n": 5},
    },
    ("users", "u2", "memories"): {
        "m1": {"text": "plays the piano every evening", "kind": "hobby", "n": 1},
    },
    ("docs",): {"readme": {"text": "how to run valkey with modules", "kind": "doc", "n": 9}},
}


def fill(store):
    for ns, items in DOCS.items():
        for key, value in items.items():
            store.put(ns, key, value)


def both(store, ref):
    """Runs the same calls on our store and LangGraph's InMemoryStore."""
    fill(store)
    fill(ref)
    return store, ref


def keys(items):
    return [(i.namespace, i.key) for i in items]


def test_put_get_delete_search_like_in_memory_store(server, protocol):
    emb = WordEmbeddings()
    store, ref = both(ConvcacheStore(redis_client=server.client(protocol=protocol),
                                     index={"dims": 128, "embed": emb, "fields": ["text"]}),
                      InMemoryStore(index={"dims": 128, "embed": WordEmbeddings(),
                                           "fields": ["text"]}))
    store.setup()
    got = store.get(("users", "u1", "memories"), "m2")
    assert isinstance(got, Item) and got.value == DOCS[("users", "u1", "memories")]["m2"]
    assert got.created_at == got.updated_at and got.created_at.tzinfo is not None
    assert store.get(("users", "u1", "memories"), "nope") is None
    # Update keeps created_at, moves updated_at.
    time.sleep(0.01)
    store.put(("users", "u1", "memories"), "m2", {"text": "allergic to peanuts and shellfish",
                                                  "kind": "health", "n": 8})
    again = store.get(("users", "u1", "memories"), "m2")
    assert again.created_at == got.created_at and again.updated_at > got.updated_at
    ref.put(("users", "u1", "memories"), "m2", again.value)
    # Prefix search, newest first, limit/offset.
    assert keys(store.search(("users",), limit=10))[0] == (("users", "u1", "memories"), "m2")
    assert sorted(keys(store.search(("users",), limit=10))) == sorted(keys(ref.search(("users",), limit=10)))
    assert len(store.search(("users",), limit=2)) == 2
    assert len(store.search(("users",), limit=2, offset=3)) == 1
    assert keys(store.search(("users", "u2"))) == [(("users", "u2", "memories"), "m1")]
    # Value filters, as the in-memory store reads them.
    for flt in ({"kind": "hobby"}, {"n": {"$gt": 4}}, {"n": {"$gte": 5, "$lt": 9}},
                {"kind": {"$ne": "hobby"}}, {"kind": "none"}):
        assert sorted(keys(store.search((), filter=flt))) == sorted(keys(ref.search((), filter=flt))), flt
    # Semantic search: the same ranking and scores as the in-memory store's cosine.
    for prefix, q in ((("users",), "mountain hiking"), ((), "valkey"), (("users", "u1"), "food allergy peanuts")):
        ours = store.search(prefix, query=q, limit=3)
        theirs = ref.search(prefix, query=q, limit=3)
        assert keys(ours) == keys(theirs), (prefix, q)
        assert [round(i.score, 4) for i in ours] == [round(i.score, 4) for i in theirs]
    best = store.search(("users",), query="piano music", limit=1)[0]
    assert best.key == "m1" and best.namespace == ("users", "u2", "memories") and best.score > 0.2
    assert keys(store.search((), query="valkey", filter={"kind": "doc"})) == [(("docs",), "readme")]
    # Namespaces.
    assert store.list_namespaces() == ref.list_namespaces()
    assert store.list_namespaces(prefix=("users",)) == [("users", "u1", "memories"), ("users", "u2", "memories")]
    assert store.list_namespaces(suffix=("memories",), max_depth=2) == [("users", "u1"), ("users", "u2")]
    # index=False: stored, found by prefix, not by vector (listed after the scored ones).
    store.put(("docs",), "plain", {"text": "valkey valkey valkey"}, index=False)
    hits = store.search(("docs",), query="valkey", limit=5)
    assert keys(hits) == [(("docs",), "readme"), (("docs",), "plain")] and hits[1].score is None
    # Delete removes the item and its vectors.
    store.delete(("users", "u2", "memories"), "m1")
    assert store.get(("users", "u2", "memories"), "m1") is None
    assert all(i.key != "m1" or i.namespace[1] != "u2" for i in store.search((), query="piano", limit=10))
    assert ("users", "u2", "memories") not in store.list_namespaces()
    r = server.client()
    assert r.execute_command("SEMCACHE.LEN", "convcache:store:v:users") == 3


def test_ttl_expires_and_refreshes(server):
    r = server.client()
    store = ConvcacheStore(redis_client=r, ttl={"default_ttl": 1.0, "refresh_on_read": True},
                           index={"dims": 128, "embed": WordEmbeddings()})
    store.put(("t",), "short", {"text": "gone soon"}, ttl=1 / 60)  # one second
    store.put(("t",), "default", {"text": "one minute"})
    store.put(("t",), "forever", {"text": "stays"}, ttl=None)
    assert r.execute_command("SEMCACHE.LEN", "convcache:store:v:t") == 3
    assert 55 <= r.ttl("convcache:store:i:t:default") <= 60 and r.ttl("convcache:store:i:t:forever") == -1
    r.expire("convcache:store:i:t:default", 30)
    store.get(("t",), "default")  # a read renews the TTL
    assert r.ttl("convcache:store:i:t:default") > 50
    store.get(("t",), "default", refresh_ttl=False)
    time.sleep(1.2)
    assert store.get(("t",), "short") is None
    # Its vector expired with it, on the server, without a search meeting it.
    assert r.execute_command("SEMCACHE.LEN", "convcache:store:v:t") == 2
    assert sorted(i.key for i in store.search(("t",))) == ["default", "forever"]
    assert "short" not in [i.key for i in store.search(("t",), query="gone soon", limit=3)]
    store.put(("x",), "k", {"a": 1}, ttl=1 / 60)
    time.sleep(1.2)
    assert ("x",) not in store.list_namespaces()


def test_store_in_a_graph(server):
    """A graph node reads and writes memories through the store LangGraph injects."""

    class S(TypedDict):
        user: str
        fact: str
        recalled: list

    def remember(state: S, *, store: BaseStore):
        ns = ("memories", state["user"])
        if state["fact"]:
            store.put(ns, f"f{len(store.search(ns, limit=100))}", {"text": state["fact"]})
        found = store.search(ns, query="what food do I like", limit=1)
        return {"recalled": [i.value["text"] for i in found]}

    b = StateGraph(S)
    b.add_node("remember", remember)
    b.add_edge(START, "remember")
    b.add_edge("remember", END)
    with ConvcacheStore.from_conn_string(f"redis://127.0.0.1:{server.port}",
                                         index={"dims": 128, "embed": WordEmbeddings()}) as store:
        graph = b.compile(store=store)
        graph.invoke({"user": "ann", "fact": "I like spicy food", "recalled": []})
        graph.invoke({"user": "ann", "fact": "my cat is called Tom", "recalled": []})
        graph.invoke({"user": "bob", "fact": "I like sushi food", "recalled": []})
        out = graph.invoke({"user": "ann", "fact": "", "recalled": []})
        assert out["recalled"] == ["I like spicy food"]
        assert sorted(i.key for i in store.search(("memories", "ann"))) == ["f0", "f1"]


def test_async_store(server, protocol):
    async def main():
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        async with AsyncConvcacheStore.from_conn_string(
                f"redis://127.0.0.1:{server.port}", key_prefix="astore",
                index={"dims": 128, "embed": WordEmbeddings(), "fields": ["text"]}) as store:
            await store.setup()
            for ns, items in DOCS.items():
                for key, value in items.items():
                    await store.aput(ns, key, value)
            got = await store.aget(("docs",), "readme")
            assert got.value["kind"] == "doc"
            hits = await store.asearch(("users",), query="piano", limit=1)
            assert [(h.namespace[1], h.key) for h in hits] == [("u2", "m1")]
            assert await store.alist_namespaces(prefix=("users",), max_depth=2) == [
                ("users", "u1"), ("users", "u2")]
            await store.adelete(("docs",), "readme")
            assert await store.aget(("docs",), "readme") is None
            with pytest.raises(NotImplementedError):
                store.get(("docs",), "x")
        await client.aclose()
    asyncio.run(main())
