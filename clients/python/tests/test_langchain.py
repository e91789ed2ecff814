"""convcache.langchain with the real langchain-core package (its fake LLMs and fake
embeddings, no network) against real servers with the module."""
import re
import zlib

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from convcache import Conversations
from convcache.langchain import ConvcacheChatMessageHistory, ConvcacheSemanticCache


@pytest.fixture(autouse=True)
def no_global_cache():
    yield
    set_llm_cache(None)


def conversation():
    return [
        SystemMessage(content="You are terse."),
        HumanMessage(content="What's the weather in Tokyo?", additional_kwargs={"lang": "en"}),
        AIMessage(content="", tool_calls=[{"name": "weather", "args": {"city": "Tokyo"}, "id": "call-1"}],
                  additional_kwargs={"refusal": None, "x": [1, 2]}, id="run-7"),
        ToolMessage(content='{"c": 22}', tool_call_id="call-1", status="success"),
        AIMessage(content=[{"type": "text", "text": "22°C and sunny ☀"}]),
        ChatMessage(role="critic", content="fine"),
    ]


def test_history_keeps_every_message_type_and_field(server, r):
    h = ConvcacheChatMessageHistory("s1", redis_client=r)
    msgs = conversation()
    h.add_messages(msgs[:3])
    h.add_message(msgs[3])
    h.add_messages(msgs[4:])
    got = h.messages
    assert got == msgs  # type, content, tool_call_id, tool_calls, additional_kwargs, id...
    assert [type(m) for m in got] == [type(m) for m in msgs]
    assert got[2].tool_calls[0]["args"] == {"city": "Tokyo"} and got[3].tool_call_id == "call-1"
    assert len(h) == 6 and h.key == "chat:s1" and h.id == "s1"
    # Other clients read the same session as a chat-API conversation.
    chat = [m.to_chat() for m in Conversations(r).ctx("chat:s1", count=6)]
    assert [c["role"] for c in chat] == ["system", "user", "assistant", "tool", "assistant", "critic"]
    assert chat[1]["content"] == "What's the weather in Tokyo?"
    # Through redis_url too, and a session written by another client reads as messages.
    h2 = ConvcacheChatMessageHistory("s1", redis_url=f"redis://127.0.0.1:{server.port}")
    assert h2.messages == msgs
    Conversations(r).add("chat:plain", "user", "hi")
    Conversations(r).add("chat:plain", "assistant", "hello")
    Conversations(r).add("chat:plain", "tool", "42", meta={"tool_call_id": "c9"})
    assert ConvcacheChatMessageHistory("plain", redis_client=r).messages == [
        HumanMessage(content="hi"), AIMessage(content="hello"), ToolMessage(content="42", tool_call_id="c9")]
    h.clear()
    assert h.messages == [] and r.exists("chat:s1") == 0
    with pytest.raises(ValueError):
        ConvcacheChatMessageHistory("", redis_client=r)


def test_window_and_token_limit_read_through_ctx(r):
    h = ConvcacheChatMessageHistory("w", redis_client=r, key_prefix="hist:")
    h.add_messages([HumanMessage(content=f"message number {i}") for i in range(12)])
    contents = [f"message number {i}" for i in range(12)]
    assert [m.content for m in h.messages] == contents
    windowed = ConvcacheChatMessageHistory("w", redis_client=r, key_prefix="hist:", window=3)
    assert [m.content for m in windowed.messages] == contents[-3:]
    # Each "message number N" (16-17 bytes) costs ceil(bytes/4) + 4 = 9 tokens.
    limited = ConvcacheChatMessageHistory("w", redis_client=r, key_prefix="hist:", max_token_limit=30)
    assert [m.content for m in limited.messages] == contents[-3:]
    both = ConvcacheChatMessageHistory("w", redis_client=r, key_prefix="hist:", window=2,
                                       max_token_limit=1000)
    assert [m.content for m in both.messages] == contents[-2:]


def test_ttl_search_and_delete(r):
    h = ConvcacheChatMessageHistory("t", redis_client=r, ttl=100)
    h.add_user_message("Tell me about machine learning")
    h.add_ai_message("Machine learning is a subset of AI")
    h.add_user_message("What are neural networks?")
    assert 90 <= r.ttl("chat:t") <= 100
    found = h.search_messages("machine learning", limit=5)
    assert [f["content"] for f in found] == ["Machine learning is a subset of AI",
                                             "Tell me about machine learning"]
    assert found[0]["type"] == "ai" and found[1]["type"] == "human"
    assert h.search_messages("") == []
    ConvcacheChatMessageHistory("other", redis_client=r).add_user_message("x")
    r.set("chat:not-a-session", "v")
    h.delete()
    assert r.exists("chat:t", "chat:other") == 0 and r.get("chat:not-a-session") == b"v"


def test_runnable_with_message_history(r):
    model = FakeListChatModel(responses=["Hi Bob!", "Your name is Bob."])
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."),
                                               MessagesPlaceholder("history"), ("human", "{input}")])
    chain = RunnableWithMessageHistory(
        prompt | model, lambda sid: ConvcacheChatMessageHistory(sid, redis_client=r),
        input_messages_key="input", history_messages_key="history")
    cfg = {"configurable": {"session_id": "bob"}}
    assert chain.invoke({"input": "I am Bob"}, config=cfg).content == "Hi Bob!"
    assert chain.invoke({"input": "Who am I?"}, config=cfg).content == "Your name is Bob."
    got = ConvcacheChatMessageHistory("bob", redis_client=r).messages
    assert [(type(m), m.content) for m in got] == [
        (HumanMessage, "I am Bob"), (AIMessage, "Hi Bob!"),
        (HumanMessage, "Who am I?"), (AIMessage, "Your name is Bob.")]


class WordHashEmbeddings(Embeddings):
    """Bag-of-words embedding (hashing trick): prompts sharing most words are close."""

    def embed_query(self, text):
        v = np.zeros(64, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[zlib.crc32(w.encode()) % 64] += 1.0
        v[63] += 0.01  # never the zero vector
        return v.tolist()

    def embed_documents(self, texts):
        return [self.embed_query(t) for t in texts]


def test_semantic_cache_with_fake_llm(r):
    cache = ConvcacheSemanticCache(WordHashEmbeddings(), redis_client=r, distance_threshold=0.2)
    set_llm_cache(cache)
    llm = FakeListLLM(responses=["Paris", "Rome", "Berlin"])
    assert llm.invoke("What is the capital of France") == "Paris"
    # Same question worded a little differently: answered from the cache, not the LLM.
    assert llm.invoke("what is the capital of france?") == "Paris"
    assert llm.invoke("Name the tallest mountain on earth please") == "Rome"
    # Another LLM configuration never gets this model's answer.
    other = FakeListLLM(responses=["Lyon"], sleep=0.001)
    assert other.invoke("What is the capital of France") == "Lyon"
    keys = sorted(r.scan_iter(match="llmcache:*"))
    assert len(keys) == 2 and all(r.type(k) == b"semcachev" for k in keys)
    cache.clear()
    assert list(r.scan_iter(match="llmcache:*")) == []
    assert llm.invoke("What is the capital of France") == "Berlin"


def test_semantic_cache_chat_generations_round_trip(r):
    emb = DeterministicFakeEmbedding(size=32)
    cache = ConvcacheSemanticCache(emb, redis_client=r, ttl=60, name="chatcache", max_items=3)
    gens = [ChatGeneration(message=AIMessage(
        content="hi", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}],
        usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}),
        generation_info={"finish_reason": "stop"})]
    cache.update("prompt one", "model-a", gens)
    assert cache.lookup("prompt one", "model-a") == gens
    assert cache.lookup("prompt one", "model-b") is None
    assert cache.lookup("an unrelated prompt", "model-a") is None
    key = cache._key("model-a")
    assert key.startswith("chatcache:")
    info = r.execute_command("SEMCACHE.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert info[b"max"] == 3
    cache.update("plain", "model-a", [Generation(text="t", generation_info={"k": [1]})])
    assert cache.lookup("plain", "model-a") == [Generation(text="t", generation_info={"k": [1]})]
    assert cache.name() == "chatcache"
    # Chat model through the global cache: the second call is served from the cache.
    set_llm_cache(ConvcacheSemanticCache(emb, redis_client=r, name="global"))
    model = FakeListChatModel(responses=["first", "second"])
    assert model.invoke("hello there").content == "first"
    assert model.invoke("hello there").content == "first"
    assert r.execute_command("SEMCACHE.LEN", next(r.scan_iter(match="global:*"))) == 1


def test_semantic_cache_ttl(r):
    import time
    short = ConvcacheSemanticCache(DeterministicFakeEmbedding(size=16), redis_client=r, ttl=1)
    forever = ConvcacheSemanticCache(DeterministicFakeEmbedding(size=16), redis_client=r,
                                     name="forever")
    for c in (short, forever):
        c.update("p", "m", [Generation(text="t")])
        assert c.lookup("p", "m") == [Generation(text="t")]
    time.sleep(1.1)
    assert short.lookup("p", "m") is None
    assert forever.lookup("p", "m") == [Generation(text="t")]  # ttl=None: never expires


def test_semantic_cache_keeps_more_than_the_servers_default(r):
    """Without max_items the cache keeps DEFAULT_MAX_ITEMS entries per model, not the server's
    max-items (50): 120 distinct prompts all hit afterwards, each with its own answer."""
    from convcache.langchain import DEFAULT_MAX_ITEMS
    assert int(r.config_get("convcache.max-items")["convcache.max-items"]) == 50
    cache = ConvcacheSemanticCache(DeterministicFakeEmbedding(size=64), redis_client=r,
                                   name="many")
    prompts = [f"prompt number {i}" for i in range(120)]
    for i, p in enumerate(prompts):
        cache.update(p, "model", [Generation(text=f"answer {i}")])
    assert [cache.lookup(p, "model") for p in prompts] == [
        [Generation(text=f"answer {i}")] for i in range(120)]
    info = r.execute_command("SEMCACHE.INFO", cache._key("model"))
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert info[b"max"] == DEFAULT_MAX_ITEMS and info[b"entries"] == 120
    # An explicit bound still drops the oldest entries.
    small = ConvcacheSemanticCache(DeterministicFakeEmbedding(size=64), redis_client=r,
                                   name="few", max_items=10)
    for i, p in enumerate(prompts[:30]):
        small.update(p, "model", [Generation(text=f"answer {i}")])
    hits = [small.lookup(p, "model") is not None for p in prompts[:30]]
    assert hits == [False] * 20 + [True] * 10
