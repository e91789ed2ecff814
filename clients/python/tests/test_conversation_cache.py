"""ConversationCache / AsyncConversationCache against real servers, with a deterministic
embedding function (hashed bag of words), no mocks."""
import asyncio
import re
import zlib

import numpy as np
import pytest
import redis.asyncio

from convcache import AsyncConversationCache, Conversations, ConversationCache, SemanticCache
from convcache.conversation_cache import context_text


class CountingEmbed:
    """Hashing bag of words into 256 dimensions: texts sharing most words are close."""

    def __init__(self):
        self.calls = []

    def __call__(self, text):
        self.calls.append(text)
        v = np.zeros(256, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[zlib.crc32(w.encode()) % 256] += 1.0
        v[255] += 0.01
        return v


VALKEY = [("user", "How do I set up replication in Valkey?"),
          ("assistant", "Add replicaof <primary-host> <port> to the replica's valkey.conf."),
          ("user", "Tell me more")]
PYTHON = [("user", "How do I write a list comprehension in Python?"),
          ("assistant", "Write [f(x) for x in xs if cond(x)] instead of a for loop."),
          ("user", "Tell me more")]


def fill(conv, key, turns):
    for role, content in turns:
        conv.add(key, role, content)


def test_tell_me_more_is_not_shared_between_conversations(r):
    conv = Conversations(r)
    embed = CountingEmbed()
    cache = ConversationCache(r, embed)
    fill(conv, "chat:valkey", VALKEY)
    fill(conv, "chat:python", PYTHON)
    assert cache.lookup("chat:valkey", "u1") is None
    assert cache.store("chat:valkey", "u1", "Replicas resync with PSYNC...") >= 1
    # embed ran once for that turn: store reused lookup's vector for the same context.
    assert len(embed.calls) == 1 and embed.calls[0].endswith("user: Tell me more")
    # The same last message after another conversation is not a hit.
    assert cache.lookup("chat:python", "u1") is None
    cache.store("chat:python", "u1", "Nested comprehensions read left to right...")
    assert cache.lookup("chat:valkey", "u1") == "Replicas resync with PSYNC..."
    assert cache.lookup("chat:python", "u1") == "Nested comprehensions read left to right..."
    # A cache keyed on the last message alone would have mixed them up.
    sem = SemanticCache(r)
    sem.set("naive", embed("Tell me more"), "Replicas resync with PSYNC...")
    assert sem.get("naive", embed("Tell me more"), min_sim=0.9) == "Replicas resync with PSYNC..."
    # The same conversation in another session of the same user is a hit (semantic, 0.90).
    fill(conv, "chat:valkey-2", VALKEY[:2] + [("user", "tell me more!")])
    assert cache.lookup("chat:valkey-2", "u1") == "Replicas resync with PSYNC..."
    # Another user never gets u1's answers.
    assert cache.lookup("chat:valkey", "u2") is None
    assert cache.forget_user("u1") == 2
    assert cache.lookup("chat:valkey", "u1") is None


def test_key_is_last_three_turns_cut_to_200_chars(r):
    conv = Conversations(r)
    embed = CountingEmbed()
    cache = ConversationCache(r, embed)
    conv.add("long", "system", "You are helpful.")
    conv.add("long", "user", "x" * 500)
    conv.add("long", "assistant", "ok")
    conv.add("long", "user", "and then?")
    assert cache.lookup("long", 7) is None
    assert embed.calls == ["user: " + "x" * 200 + "\nassistant: ok\nuser: and then?"]
    assert context_text([{"role": "user", "content": "abc"}], chars=2) == "user: ab"
    # Entries are tagged with the user and bounded explicitly (not the server's 50).
    cache.store("long", 7, "answer")
    info = SemanticCache(r).info("convcache:answers")
    assert info.entries == 1 and info.max == 100_000
    # A session with no turns misses without embedding anything.
    n = len(embed.calls)
    assert cache.lookup("empty", 7) is None and cache.store("empty", 7, "x") is None
    assert len(embed.calls) == n
    # A store after the conversation moved on embeds its own context.
    conv.add("long", "assistant", "then this")
    cache.store("long", 7, "later")
    assert embed.calls[-1].endswith("assistant: then this")
    with pytest.raises(TypeError):
        cache.lookup("long", None)


def test_threshold_and_more_than_fifty_entries(r):
    conv = Conversations(r)
    cache = ConversationCache(r, CountingEmbed(), min_sim=0.99)
    for i in range(60):
        conv.add(f"s{i}", "user", f"question about topic{i} and subject{i}")
        cache.store(f"s{i}", "u", f"answer {i}")
    assert [cache.lookup(f"s{i}", "u") for i in range(60)] == [f"answer {i}" for i in range(60)]
    # Close but below 0.99: a miss (the same question with one more word).
    conv.add("near", "user", "question about topic3 and subject3 please")
    assert cache.lookup("near", "u") is None
    assert ConversationCache(r, CountingEmbed(), min_sim=0.8).lookup("near", "u") == "answer 3"


def test_async_conversation_cache(server, protocol):
    async def main():
        r = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        sync = server.client(protocol=protocol)
        fill(Conversations(sync), "a:valkey", VALKEY)
        fill(Conversations(sync), "a:python", PYTHON)
        embed = CountingEmbed()

        async def aembed(text):
            return embed(text)
        cache = AsyncConversationCache(r, aembed, ttl=60)
        assert await cache.lookup("a:valkey", "u") is None
        await cache.store("a:valkey", "u", "valkey answer")
        assert await cache.lookup("a:python", "u") is None
        await cache.store("a:python", "u", "python answer")
        assert await cache.lookup("a:valkey", "u") == "valkey answer"
        assert await cache.lookup("a:python", "u") == "python answer"
        assert len(embed.calls) == 4  # two lookups+stores sharing vectors, then two lookups
        assert await cache.forget_user("u") == 2
        await r.aclose()
        sync.close()
    asyncio.run(main())
