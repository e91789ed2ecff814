"""The typed client's fast reply paths give what the field-by-field ones give: ctx/history
read FORMAT full (one JSON parse, orjson or the stdlib's json) when contents are text and
FORMAT resp for exact bytes; mget turns a reply into one numpy block."""
import dataclasses
import json

import numpy as np
import pytest

from convcache import Conversations, EmbeddingCache, Message
from convcache import _common


@pytest.fixture(params=["orjson", "json"])
def json_parser(request, monkeypatch):
    if request.param == "orjson":
        orjson = pytest.importorskip("orjson")
        monkeypatch.setattr(_common, "loads", orjson.loads)
    else:
        monkeypatch.setattr(_common, "loads", json.loads)
    return request.param


def test_ctx_and_history_same_through_json_and_resp(r, json_parser):
    text, raw = Conversations(r), Conversations(r, decode=False)
    text.add("f", "system", "Be terse.", meta={"lang": "en", "nested": {"a": [1, 2.5, None]}})
    text.add("f", "user", "héllo ☀ 日本", ts=1_700_000_000_000)
    text.add("f", "assistant", "", tool_calls=[{"id": "c1", "type": "function",
                                                "function": {"name": "w", "arguments": "{}"}}])
    text.add("f", "tool", "22 °C", tool_call_id="c1", name="w")
    text.add("f", "user", 'quotes " and \\ and \n newlines')
    for got, want in ((text.ctx("f", count=10), raw.ctx("f", count=10)),
                      (text.history("f", from_seq=2, to_seq=4), raw.history("f", from_seq=2, to_seq=4)),
                      (text.ctx("f", roles=["user"]), raw.ctx("f", roles=["user"]))):
        assert got and len(got) == len(want)
        for g, w in zip(got, want):
            assert isinstance(g, Message) and isinstance(g.content, str)
            assert g == dataclasses.replace(w, content=w.content.decode())
            assert repr(g) == repr(dataclasses.replace(w, content=w.content.decode()))
    msgs = text.ctx("f", count=10)
    assert msgs[0].meta == {"lang": "en", "nested": {"a": [1, 2.5, None]}}
    assert msgs[1].ts == 1_700_000_000_000 and msgs[1].content == "héllo ☀ 日本"
    assert msgs[2].tool_calls[0]["id"] == "c1" and msgs[2].name is None
    assert msgs[3].to_chat() == {"role": "tool", "tool_call_id": "c1", "name": "w", "content": "22 °C"}
    assert msgs[1].score is None and msgs[1].tokens > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        msgs[0].role = "x"
    # Invalid UTF-8 reads as U+FFFD in text, exactly with decode=False.
    r.execute_command("CONV.ADD", "bin", "user", b"ab\xffcd")
    assert text.ctx("bin")[0].content == "ab\ufffdcd"
    assert raw.ctx("bin")[0].content == b"ab\xffcd"


def test_mget_block_and_mixed(r):
    emb = EmbeddingCache(r)
    vs = {f"e{i}": np.arange(8, dtype=np.float32) * (i + 1) for i in range(5)}
    emb.mset(vs)
    got = emb.mget(list(vs))
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float32 for g in got)
    assert [g.tolist() for g in got] == [v.tolist() for v in vs.values()]
    got[0][0] = 99.0  # writable, and each vector is its own
    assert got[1][0] == 0.0 and got[1][1] == 2.0
    emb.set("other-dim", [1.0, 2.0])
    mixed = emb.mget(["e0", "missing", "other-dim"])
    assert mixed[0].tolist() == vs["e0"].tolist() and mixed[1] is None
    assert mixed[2].tolist() == [1.0, 2.0]
    assert EmbeddingCache(r, vector_type="list").mget(["e1"]) == [vs["e1"].tolist()]
