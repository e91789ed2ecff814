"""convcache.langgraph against real servers: LangGraph's own conformance suite
(langgraph-checkpoint-conformance, every capability), then real graphs whose threads are
resumed after the server archived them and after a restart."""
import asyncio
import itertools
import operator
import uuid
from typing import Annotated, List, TypedDict

import pytest
import redis
import redis.asyncio
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from convcache import Conversations
from harness import wait_for
from convcache.langgraph import AsyncConvcacheSaver, ConvcacheSaver

_prefixes = itertools.count()


def run_conformance(make_saver):
    """Runs every capability of the conformance suite; each capability gets a fresh saver
    with its own key prefix (the suite reuses thread names such as 'thread-0')."""

    async def factory():
        saver, close = await make_saver(f"cf{next(_prefixes)}-{uuid.uuid4().hex[:6]}")
        try:
            yield saver
        finally:
            await close()

    registered = checkpointer_test(name="convcache")(factory)
    report = asyncio.run(validate(registered))
    failures = {cap: r.failures for cap, r in report.results.items() if r.passed is not True}
    assert not failures, failures
    assert {cap for cap, r in report.results.items() if r.detected} == \
        {c.value for c in ALL_CAPABILITIES}
    passed = sum(r.tests_passed for r in report.results.values())
    assert passed >= 81, passed  # the suite's size in 0.0.2 (81 tests): the count must not collapse
    assert report.passed_all() and report.conformance_level() == "FULL"
    return report


def test_conformance_async_saver(server, protocol):
    async def make(prefix):
        client = redis.asyncio.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        saver = AsyncConvcacheSaver(redis_client=client, key_prefix=prefix)
        await saver.asetup()
        return saver, client.aclose
    run_conformance(make)


def test_conformance_sync_saver(server, protocol):
    async def make(prefix):
        client = redis.Redis(host="127.0.0.1", port=server.port, protocol=protocol)
        saver = ConvcacheSaver(redis_client=client, key_prefix=prefix)
        saver.setup()

        async def close():
            client.close()
        return saver, close
    run_conformance(make)


# ------------------------------------------------------------------------------------------
# Real graphs


class State(TypedDict):
    messages: Annotated[List[AnyMessage], add_messages]
    turns: Annotated[int, operator.add]
    log: Annotated[List[str], operator.add]


def chat_graph(model, checkpointer):
    def chatbot(state: State):
        return {"messages": [model.invoke(state["messages"])], "turns": 1}

    def note(state: State):
        return {"log": [f"turn {state['turns']}: {len(state['messages'])} messages"]}

    b = StateGraph(State)
    b.add_node("chatbot", chatbot)
    b.add_node("note", note)
    b.add_edge(START, "chatbot")
    b.add_edge("chatbot", "note")
    b.add_edge("note", END)
    return b.compile(checkpointer=checkpointer)


def fake_model(n):
    return GenericFakeChatModel(messages=iter([AIMessage(content=f"answer {i}") for i in range(n)]))


def session_keys(r, prefix):
    return sorted(k.decode() for k in r.scan_iter(match=f"{prefix}:*", _type="convcache"))


@pytest.fixture
def archiving_server(kind, servers):
    # A short window so checkpoints overflow to disk as the thread grows.
    return servers(kind, module_args=["window", "4", "archive-batch", "2"])


def test_graph_resumes_after_archive_and_restart(archiving_server, protocol):
    server = archiving_server
    r = server.client(protocol=protocol)
    model = fake_model(40)
    cfg = {"configurable": {"thread_id": "user-7"}}
    with ConvcacheSaver.from_conn_string(f"redis://127.0.0.1:{server.port}?protocol={protocol}",
                                         key_prefix="lg") as saver:
        saver.setup()
        graph = chat_graph(model, saver)
        for i in range(6):
            out = graph.invoke({"messages": [HumanMessage(content=f"question {i}")]}, cfg)
        assert [m.content for m in out["messages"]] == [
            x for i in range(6) for x in (f"question {i}", f"answer {i}")]
        assert out["turns"] == 6 and len(out["log"]) == 6
        history = list(saver.list(cfg))
        # 4 checkpoints per invoke (input, start, chatbot, note), newest first.
        assert len(history) == 24
        assert [h.checkpoint["id"] for h in history] == sorted(
            (h.checkpoint["id"] for h in history), reverse=True)
        # The overflow already sent older turns to disk.
        conv = Conversations(r)
        main = [k for k in session_keys(r, "lg") if k.endswith(":s")]
        assert len(main) == 1
        wait_for(lambda: conv.info(main[0]).archived > 0, what="overflow archived")
        # One blob turn per (channel, version), not one per channel per checkpoint.
        blobs = [m for m in conv.history(main[0]) if m.role == "blob"]
        versions = {(ch, v) for h in history for ch, v in h.checkpoint["channel_versions"].items()
                    if ch in h.checkpoint["channel_values"]}
        per_checkpoint = sum(len(h.checkpoint["channel_values"]) for h in history)
        assert len(blobs) == len(versions) and per_checkpoint >= 2 * len(blobs)
        # Every session of the thread to disk now (what idle archival does after idle-archive).
        for key in session_keys(r, "lg"):
            conv.flush(key)
        assert all(conv.info(k).hot == 0 for k in session_keys(r, "lg"))
        # The thread's two sessions (checkpoints and blobs; writes) are now small cold records
        # whatever they hold; what stays in memory besides is the index.
        sizes = {k: (r.memory_usage(k), conv.info(k).archived) for k in session_keys(r, "lg")}
        assert len(sizes) == 2 and all(m < 1024 and n >= 20 for m, n in sizes.values()), sizes
        # An old checkpoint (time travel) reads from disk: the end of the third invoke.
        third = [h for h in history if h.metadata["step"] == 10][0]
        assert third.checkpoint["channel_values"]["log"][-1] == "turn 3: 6 messages"
        old = saver.get_tuple(third.config)
        assert old.checkpoint["channel_values"]["turns"] == 3
        assert [m.content for m in old.checkpoint["channel_values"]["messages"]][-1] == "answer 2"
        # Resume the archived thread.
        out = graph.invoke({"messages": [HumanMessage(content="question 6")]}, cfg)
        assert out["turns"] == 7 and out["messages"][-1].content == "answer 6"
        assert len(out["messages"]) == 14
        r.save()
    server.restart()
    r = server.client(protocol=protocol)
    with ConvcacheSaver.from_conn_string(f"redis://127.0.0.1:{server.port}",
                                         key_prefix="lg") as saver:
        graph = chat_graph(fake_model(40), saver)
        state = graph.get_state(cfg)
        assert state.values["turns"] == 7 and len(state.values["log"]) == 7
        out = graph.invoke({"messages": [HumanMessage(content="question 7")]}, cfg)
        assert [m.content for m in out["messages"]][-2:] == ["question 7", "answer 0"]
        assert out["turns"] == 8
        # Fork from the old checkpoint: the branch sees turn 3's state, not the later ones.
        fork = graph.invoke({"messages": [HumanMessage(content="other")]}, third.config)
        assert fork["turns"] == 4 and len(fork["messages"]) == 8
        # Prune keeps the newest checkpoint only, and the thread still resumes from it.
        saver.prune(["user-7"])
        assert len(list(saver.list(cfg))) == 1
        latest = graph.get_state(cfg)
        assert latest.values["turns"] == 4 and latest.values["messages"][-1].content == "answer 1"
        saver.delete_thread("user-7")
        assert saver.get_tuple(cfg) is None and session_keys(r, "lg") == []


def test_async_graph_resumes_after_flush(archiving_server):
    server = archiving_server

    async def main():
        cfg = {"configurable": {"thread_id": "async-1"}}
        async with AsyncConvcacheSaver.from_conn_string(f"redis://127.0.0.1:{server.port}",
                                                        key_prefix="alg") as saver:
            await saver.asetup()
            graph = chat_graph(fake_model(10), saver)
            for i in range(3):
                await graph.ainvoke({"messages": [HumanMessage(content=f"q{i}")]}, cfg)
            r = redis.Redis(host="127.0.0.1", port=server.port)
            conv = Conversations(r)
            keys = session_keys(r, "alg")
            for k in keys:
                conv.flush(k)
            assert all(conv.info(k).hot == 0 for k in keys)
            out = await graph.ainvoke({"messages": [HumanMessage(content="q3")]}, cfg)
            assert [m.content for m in out["messages"]] == [
                x for i in range(4) for x in (f"q{i}", f"answer {i}")]
            n = 0
            async for _ in saver.alist(cfg, limit=5):
                n += 1
            assert n == 5
            await saver.acopy_thread("async-1", "async-2")
            copied = await graph.aget_state({"configurable": {"thread_id": "async-2"}})
            assert copied.values["turns"] == 4
            r.close()
    asyncio.run(main())


def test_interrupt_and_pending_writes_survive_archive(archiving_server):
    """A graph interrupted mid-step keeps its pending writes through the cold tier."""
    from langgraph.types import Command, interrupt

    server = archiving_server

    class S(TypedDict):
        draft: str
        approved: str

    def write(state):
        return {"draft": "v1"}

    def review(state):
        verdict = interrupt({"draft": state["draft"]})
        return {"approved": verdict}

    b = StateGraph(S)
    b.add_node("write", write)
    b.add_node("review", review)
    b.add_edge(START, "write")
    b.add_edge("write", "review")
    b.add_edge("review", END)
    r = server.client()
    saver = ConvcacheSaver(redis_client=r, key_prefix="hitl")
    graph = b.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "doc-1"}}
    out = graph.invoke({"draft": "", "approved": ""}, cfg)
    assert out["__interrupt__"][0].value == {"draft": "v1"}
    tup = saver.get_tuple(cfg)
    assert any(w[1] == "__interrupt__" for w in tup.pending_writes)
    conv = Conversations(r)
    for k in session_keys(r, "hitl"):
        conv.flush(k)
    assert all(conv.info(k).hot == 0 for k in session_keys(r, "hitl"))
    out = graph.invoke(Command(resume="ok"), cfg)
    assert out == {"draft": "v1", "approved": "ok"}


def test_saver_refuses_decoding_client(server):
    with pytest.raises(ValueError):
        ConvcacheSaver(redis_client=server.client(decode_responses=True))
    with pytest.raises(TypeError):
        ConvcacheSaver(redis_client=redis.asyncio.Redis(port=server.port))


def test_ttl_expires_a_threads_keys(server):
    r = server.client()
    saver = ConvcacheSaver(redis_client=r, key_prefix="ttl", ttl={"default_ttl": 2})
    graph = chat_graph(fake_model(2), saver)
    cfg = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage(content="hi")]}, cfg)
    saver.put_writes(saver.get_tuple(cfg).config, [("x", 1)], "task")
    keys = sorted(r.scan_iter(match="ttl:*"))
    assert len(keys) >= 5
    ttls = {k: r.ttl(k) for k in keys if not k.endswith(b":threads") and b":run:" not in k}
    assert ttls and all(60 <= t <= 120 for t in ttls.values()), ttls


def test_subgraph_interrupt_resumes_from_child_namespace(archiving_server, protocol):
    """A subgraph interrupted inside its own checkpoint namespace ("child:<task id>")
    resumes through the saver, after its sessions went to disk."""
    from langgraph.types import Command, interrupt

    class Inner(TypedDict):
        text: str

    def ask(state: Inner):
        return {"text": state["text"] + " / " + interrupt("more?")}

    sub = StateGraph(Inner)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)

    class Outer(TypedDict):
        text: str

    b = StateGraph(Outer)
    b.add_node("child", sub.compile())
    b.add_node("done", lambda s: {"text": s["text"] + " / done"})
    b.add_edge(START, "child")
    b.add_edge("child", "done")
    b.add_edge("done", END)
    r = archiving_server.client(protocol=protocol)
    saver = ConvcacheSaver(redis_client=r, key_prefix="sub")
    graph = b.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "s1"}}
    out = graph.invoke({"text": "start"}, cfg)
    assert out["__interrupt__"][0].value == "more?"
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(
        {"configurable": {"thread_id": "s1"}})}
    assert "" in namespaces and any(ns.startswith("child:") for ns in namespaces)
    conv = Conversations(r)
    for k in session_keys(r, "sub"):
        conv.flush(k)
    out = graph.invoke(Command(resume="yes"), cfg)
    assert out == {"text": "start / yes / done"}
    assert graph.get_state(cfg).next == ()


def test_concurrent_puts_on_one_thread_all_land(server):
    """Two writers putting checkpoints on the same thread at once (LangGraph itself does not,
    an application may): a refused sequence number is taken again, nothing is lost."""
    import threading

    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    saver = ConvcacheSaver(redis_client=server.client(), key_prefix="race")
    ids = [[], []]
    start = threading.Barrier(2)

    def writer(w):
        start.wait()
        for i in range(40):
            cp = empty_checkpoint()
            cp["id"] = str(uuid6(clock_seq=w * 1000 + i))
            cp["channel_values"] = {"v": f"{w}-{i}"}
            cp["channel_versions"] = {"v": saver.get_next_version(None, None)}
            saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp,
                      {"source": "loop", "step": i, "writer": w}, cp["channel_versions"])
            ids[w].append(cp["id"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listed = {t.checkpoint["id"]: t for t in saver.list({"configurable": {"thread_id": "t"}})}
    assert set(listed) == set(ids[0]) | set(ids[1]) and len(listed) == 80
    for w in (0, 1):
        for i, cid in enumerate(ids[w]):
            assert listed[cid].checkpoint["channel_values"] == {"v": f"{w}-{i}"}
            assert listed[cid].metadata["writer"] == w
