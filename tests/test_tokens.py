"""Exact token counts (`tokenizer` config, CONV.ADD ... TOKENIZER) and chat-API turn fields
(NAME, TOOL_CALL_ID, TOOL_CALLS) against real Valkey 9 and Redis 7 servers: counts equal an
independent implementation (js-tiktoken under node), options and errors, CTX budgets,
replication to a replica with another config, AOF replay, restart, archive round trips, IMPORT."""
import json
import os
import shutil
import subprocess

import pytest
import redis

from harness import replica_of, wait_for, wait_replica_caught_up
from test_archive import IMPORT_DIR, cold_args, conv_info, history, wait_cold

NODE_DIR = os.path.join(os.path.dirname(__file__), "node")
TOKENIZERS = ("cl100k_base", "o200k_base")

CORPUS = [
    "Hello, world! How are you today?",
    "Ça dépend: naïve café, résumé, Zürich, São Paulo, Ærøskøbing.",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "Family: 👨‍👩‍👧‍👦, coder: 👩‍💻, flags: 🏳️‍🌈 🇫🇷, skin tone: 👍🏽",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n}\n",
    "spaces:     five, tabs:\t\t\ttwo, newlines:\n\n\n\nend   ",
    "       leading and trailing        ",
    "<|endoftext|> is plain text here, and so are <|im_start|>user and <|fim_prefix|>",
    "numbers 1234567890 3.14159 -42 1e10 0x1F, contractions: it's, we'll, they'd, I'm",
    "",
    " ",
    "\n",
    "a" * 3000,
    "The quick brown fox jumps over the lazy dog. " * 40,
    "ASCII-art: ¯\\_(ツ)_/¯ ┌─┐ │ │ └─┘ → ← ↑ ↓ ∑ ∫ √ ∞ ≠ ≈",
    "URL https://example.com/path?q=1&x=%20y#frag and e-mail first.last@example.org",
    "Mixed: Привет мир, γειά σου κόσμε, مرحبا بالعالم, שלום עולם, नमस्ते दुनिया",
]


def reference_counts(texts):
    """Counts of js-tiktoken (its own vocabularies and code) for each text."""
    node = shutil.which("node")
    assert node, "node is needed for the reference counts (make deps-test installs nodejs)"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "js-tiktoken")), \
        "js-tiktoken is not installed: run `make node-deps`"
    out = subprocess.run([node, os.path.join(NODE_DIR, "count_tokens.mjs")],
                         input=json.dumps(texts), capture_output=True, text=True, check=True,
                         timeout=120)
    return json.loads(out.stdout)


def add(r, key, role, content, *opts):
    return r.execute_command("CONV.ADD", key, role, content, *opts)


def full(r, key):
    return history(r, key)


def estimate(text):
    return -(-len(text.encode()) // 4)


@pytest.fixture(scope="module")
def reference():
    return reference_counts(CORPUS)


def test_counts_equal_js_tiktoken_and_estimate_is_bytes_over_4(servers, kind, reference):
    r = servers(kind, module_args=["window", "100"]).client()
    for tok in TOKENIZERS:
        for i, text in enumerate(CORPUS):
            add(r, tok, "user", text, *(["TOKENIZER", tok] if i == 0 else []))
        got = [m["tokens"] for m in full(r, tok)]
        assert got == reference[tok], tok
        info = conv_info(r, tok)
        assert (info["tokenizer"], info["tokens"]) == (tok.encode(), sum(reference[tok]))
    for text in CORPUS:
        add(r, "est", "user", text)
    assert [m["tokens"] for m in full(r, "est")] == [estimate(t) for t in CORPUS]
    assert conv_info(r, "est")["tokenizer"] == b"estimate"
    # The reference is not trivially equal to the estimate (the test can fail).
    assert reference["cl100k_base"] != [estimate(t) for t in CORPUS]
    assert reference["cl100k_base"] != reference["o200k_base"]


def test_tokenizer_config_and_per_session_choice(servers, kind):
    s = servers(kind)
    r = s.client()
    assert r.config_get("convcache.tokenizer") == {"convcache.tokenizer": "estimate"}
    with pytest.raises(redis.ResponseError, match="tokenizer 'gpt2' is not 'estimate'"):
        r.config_set("convcache.tokenizer", "gpt2")
    add(r, "old", "user", "hello world")
    r.config_set("convcache.tokenizer", "o200k_base")
    assert r.config_get("convcache.tokenizer") == {"convcache.tokenizer": "o200k_base"}
    add(r, "new", "user", "hello world")
    add(r, "old", "user", "hello world")
    # A session keeps the tokenizer it started with, whatever the config says later.
    assert conv_info(r, "new")["tokenizer"] == b"o200k_base"
    assert [m["tokens"] for m in full(r, "new")] == [2]
    assert conv_info(r, "old")["tokenizer"] == b"estimate"
    assert [m["tokens"] for m in full(r, "old")] == [3, 3]
    # TOKENIZER on the first ADD wins over the config; later, the same name is accepted.
    add(r, "own", "user", "hello world", "TOKENIZER", "CL100K_BASE")
    add(r, "own", "user", "hello world", "tokenizer", "cl100k_base")
    assert conv_info(r, "own")["tokenizer"] == b"cl100k_base"
    # Another name on an existing session is an error that changes nothing.
    before = full(r, "own")
    with pytest.raises(redis.ResponseError, match="TOKENIZER estimate differs from the session's tokenizer cl100k_base"):
        add(r, "own", "user", "x", "TOKENIZER", "estimate")
    assert full(r, "own") == before
    for bad, msg in ((["TOKENIZER", "gpt2"], "TOKENIZER must be estimate, cl100k_base or o200k_base, got 'gpt2'"),
                     (["TOKENIZER"], "TOKENIZER needs a value")):
        with pytest.raises(redis.ResponseError, match=msg):
            add(r, "fresh", "user", "x", *bad)
    assert r.exists("fresh") == 0


def test_tool_fields_in_the_chat_api_shape_and_their_errors(servers, kind):
    r = servers(kind).client()
    calls = '[ {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}} ]'
    add(r, "s", "user", "Weather in Paris?")
    add(r, "s", "assistant", "", "TOOL_CALLS", calls)
    add(r, "s", "tool", "22 °C, sunny", "TOOL_CALL_ID", "call_1", "NAME", "get_weather")
    add(r, "s", "user", "Thanks", "NAME", "alice")
    want_calls = json.loads(calls)
    msgs = json.loads(r.execute_command("CONV.CTX", "s"))
    assert msgs == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": want_calls},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "22 °C, sunny"},
        {"role": "user", "name": "alice", "content": "Thanks"},
    ]
    # Stored compact, exactly once.
    raw = r.execute_command("CONV.HISTORY", "s", "FROM", 2, "TO", 2)
    assert b'"tool_calls":[{"function":' in raw and b": " not in raw
    f = full(r, "s")
    assert [sorted(m) for m in f] == [
        ["content", "meta", "role", "seq", "tokens", "ts"],
        ["content", "meta", "role", "seq", "tokens", "tool_calls", "ts"],
        ["content", "meta", "name", "role", "seq", "tokens", "tool_call_id", "ts"],
        ["content", "meta", "name", "role", "seq", "tokens", "ts"],
    ]
    assert [m["tokens"] for m in f] == [estimate(m["content"]) for m in f]
    # ROLES drops tool chatter, keeping the fields of what stays.
    kept = json.loads(r.execute_command("CONV.CTX", "s", "ROLES", "user,assistant"))
    assert [m["role"] for m in kept] == ["user", "assistant", "user"]
    assert kept[1]["tool_calls"] == want_calls
    # CONV.SEARCH renders turns in the full form.
    found = json.loads(r.execute_command("CONV.SEARCH", "s", "TEXT", "weather", "K", 0, "RECENT", 4))
    assert found["recent"][2]["tool_call_id"] == "call_1" and "tokens" in found["recent"][2]
    errors = [
        (["NAME", ""], "NAME must be non-empty UTF-8 of at most 256 bytes"),
        (["NAME", "n" * 257], "NAME must be non-empty"),
        (["NAME", b"\xff"], "NAME must be non-empty"),
        (["TOOL_CALL_ID", ""], "TOOL_CALL_ID must be non-empty UTF-8 of at most 256 bytes"),
        (["TOOL_CALL_ID", "i" * 257], "TOOL_CALL_ID must be"),
        (["TOOL_CALLS", "{}"], "TOOL_CALLS must be a JSON array"),
        (["TOOL_CALLS", "[1,"], "TOOL_CALLS is not valid JSON"),
        (["TOOL_CALLS"], "TOOL_CALLS needs a value"),
        (["NAME"], "NAME needs a value"),
        (["TOOL_CALL_ID"], "TOOL_CALL_ID needs a value"),
    ]
    before = full(r, "s")
    for opts, msg in errors:
        with pytest.raises(redis.ResponseError, match=msg):
            add(r, "s", "tool", "x", *opts)
        with pytest.raises(redis.ResponseError, match=msg):
            add(r, "t", "tool", "x", *opts)
    assert full(r, "s") == before and r.exists("t") == 0


def test_ctx_token_budget_counts_stored_tokens_plus_4(servers, kind):
    r = servers(kind, module_args=["tokenizer", "cl100k_base"]).client()
    texts = ["hello world", "a" * 400, "👩‍💻 " * 10, "short"]
    for t in texts:
        add(r, "s", "user", t)
    tokens = [m["tokens"] for m in full(r, "s")]
    assert tokens == reference_counts(texts)["cl100k_base"]
    cost = [n + 4 for n in tokens]
    for keep in range(len(texts) + 1):
        budget = sum(cost[len(cost) - keep:])
        got = json.loads(r.execute_command("CONV.CTX", "s", "TOKENS", budget))
        assert [m["content"] for m in got] == texts[len(texts) - keep:], keep
        if keep:
            got = json.loads(r.execute_command("CONV.CTX", "s", "TOKENS", budget - 1))
            assert len(got) == keep - 1


def digest(r, key):
    return r.execute_command("DEBUG", "DIGEST-VALUE", key)


def test_replica_with_another_tokenizer_config_reaches_the_same_state(servers, kind):
    primary = servers(kind, module_args=["tokenizer", "cl100k_base", "window", "50"])
    rep = replica_of(servers, primary, module_args=["tokenizer", "estimate", "window", "50"])
    r = primary.client()
    add(r, "a", "user", "Hello, how are you? 日本語")
    add(r, "a", "assistant", "", "TOOL_CALLS", '[{"id":"c"}]')
    add(r, "a", "tool", "done ✓", "TOOL_CALL_ID", "c", "NAME", "f")
    add(r, "b", "user", "Hello, how are you?", "TOKENIZER", "o200k_base", "EX", 1000)
    add(r, "b", "user", "more words here")
    wait_replica_caught_up(primary, rep)
    rr = rep.client()
    for key in ("a", "b"):
        assert full(rr, key) == full(r, key), key
        pi, ri = conv_info(r, key), conv_info(rr, key)
        assert (ri["tokens"], ri["tokenizer"]) == (pi["tokens"], pi["tokenizer"])
        assert digest(rr, key) == digest(r, key)
    assert conv_info(rr, "a")["tokenizer"] == b"cl100k_base"
    assert conv_info(rr, "b")["tokenizer"] == b"o200k_base"
    assert [m["tokens"] for m in full(rr, "a")][0] != estimate("Hello, how are you? 日本語")


def test_aof_replay_and_rewrite_with_another_config_reach_the_same_state(servers, kind):
    s = servers(kind, module_args=["tokenizer", "o200k_base"],
                extra=["--appendonly", "yes", "--aof-use-rdb-preamble", "no"])
    r = s.client()
    add(r, "s", "user", "Bonjour à tous 👋")
    add(r, "s", "tool", "ok", "TOOL_CALL_ID", "x1", "NAME", "n")
    r.execute_command("BGREWRITEAOF")
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, what="rewrite")
    add(r, "s", "assistant", "", "TOOL_CALLS", '[{"id":"x2"}]')
    add(r, "t", "user", "after the rewrite")
    want = {k: (full(r, k), digest(r, k)) for k in ("s", "t")}
    s.stop()
    s.module_args = ["tokenizer", "estimate"]
    s.start()
    r = s.client()
    assert r.config_get("convcache.tokenizer") == {"convcache.tokenizer": "estimate"}
    for k, (f, d) in want.items():
        assert (full(r, k), digest(r, k)) == (f, d), k
        assert conv_info(r, k)["tokenizer"] == b"o200k_base"


def test_restart_and_debug_reload_keep_fields_and_counts(servers, kind):
    s = servers(kind, module_args=["tokenizer", "cl100k_base"])
    r = s.client()
    add(r, "s", "assistant", "", "TOOL_CALLS", '[{"id":"c","type":"function"}]')
    add(r, "s", "tool", "résultat: 42", "TOOL_CALL_ID", "c", "NAME", "calc")
    want = (full(r, "s"), conv_info(r, "s")["tokens"], digest(r, "s"))
    r.execute_command("DEBUG", "RELOAD")
    assert (full(r, "s"), conv_info(r, "s")["tokens"], digest(r, "s")) == want
    dump = r.dump("s")
    r.restore("copy", 0, dump)
    assert full(r, "copy") == want[0]
    r.save()
    s.restart()
    r = s.client()
    assert (full(r, "s"), conv_info(r, "s")["tokens"], digest(r, "s")) == want
    assert conv_info(r, "s")["tokenizer"] == b"cl100k_base"


@pytest.mark.parametrize("codec", ["zstd", "huffman"])
def test_archived_turns_keep_tool_fields_and_tokens(servers, kind, codec):
    s = servers(kind, module_args=cold_args(window=2, batch=2, archive_codec=codec,
                                            tokenizer="o200k_base"))
    r = s.client()
    add(r, "s", "user", "What is 2 + 2? ¿Y en español?")
    add(r, "s", "assistant", "", "TOOL_CALLS", '[{"id":"c1","function":{"name":"add"}}]')
    add(r, "s", "tool", "4", "TOOL_CALL_ID", "c1", "NAME", "add")
    add(r, "s", "assistant", "It is 4. " * 20)
    add(r, "s", "user", "thanks!")
    want, tokens = full(r, "s"), conv_info(r, "s")["tokens"]
    assert tokens == sum(m["tokens"] for m in want)
    assert r.execute_command("CONV.FLUSH", "s") == 5
    wait_cold(r, "s")
    assert conv_info(r, "s")["archived"] == 5
    assert full(r, "s") == want
    assert json.loads(r.execute_command("CONV.CTX", "s", "COUNT", 4))[0]["tool_calls"] == \
        [{"function": {"name": "add"}, "id": "c1"}]
    assert conv_info(r, "s")["tokens"] == tokens
    # The RDB carries the file; the archived tokens are counted again from it.
    r.execute_command("DEBUG", "RELOAD")
    assert conv_info(r, "s")["tokens"] == tokens
    assert full(r, "s") == want
    # An AOF rewrite ships archived turns as `_LOAD` payloads; replayed, they keep everything.
    r.config_set("aof-use-rdb-preamble", "no")
    r.config_set("appendonly", "yes")
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0
             and r.info("persistence")["aof_enabled"] == 1, what="aof on")
    s.stop()
    shutil.rmtree(os.path.join(s.dir, "convcache-archive"))
    s.extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]
    s.start()
    r = s.client()
    wait_for(lambda: conv_info(r, "s") is not None, what="replayed")
    assert full(r, "s") == want
    assert conv_info(r, "s")["tokens"] == tokens


def test_import_keeps_tool_fields_and_counts_with_the_config_tokenizer(servers, kind):
    lix = pytest.importorskip("lix_open_cache.conversation_archive")
    s = servers(kind, module_args=cold_args(tokenizer="cl100k_base"))
    r = s.client()
    arch = lix.ConversationArchive(os.path.join(s.dir, IMPORT_DIR))
    turns = [
        {"role": "user", "content": "Weather in Oslo?", "timestamp": 1700000001.0, "metadata": {}},
        {"role": "assistant", "content": "", "timestamp": 1700000002.0, "metadata": {},
         "tool_calls": [{"id": "c9", "type": "function"}]},
        {"role": "tool", "content": "-3 °C", "timestamp": 1700000003.0, "metadata": {},
         "name": "weather", "tool_call_id": "c9"},
    ]
    assert arch.append_turns("oslo", turns)
    assert r.execute_command("CONV.IMPORT", "imp", "oslo") == 3
    got = full(r, "imp")
    assert got[1]["tool_calls"] == [{"id": "c9", "type": "function"}]
    assert (got[2]["name"], got[2]["tool_call_id"]) == ("weather", "c9")
    want = reference_counts([t["content"] for t in turns])["cl100k_base"]
    assert [m["tokens"] for m in got] == want
    assert conv_info(r, "imp")["tokenizer"] == b"cl100k_base"
    # Bad tool fields in a file are refused like CONV.ADD refuses them.
    assert arch.append_turns("bad", [{"role": "tool", "content": "x", "timestamp": 1.0,
                                      "metadata": {}, "tool_call_id": ""}])
    with pytest.raises(redis.ResponseError, match="TOOL_CALL_ID must be"):
        r.execute_command("CONV.IMPORT", "imp2", "bad")
    assert r.exists("imp2") == 0


# --- Big contents: counted on a counting thread (`tokenize-inline-bytes`), replicated as TOKENS ---

def mixed_text(size):
    """About `size` bytes (at most) of mixed text (ASCII, accents, CJK, emoji, code)."""
    # The corpus's long runs left out: js-tiktoken's merge is quadratic in a run's length.
    unit = "\n".join(t for t in CORPUS if 0 < len(t) < 500) + "\n"
    text = unit * (size // len(unit.encode()))
    assert len(text.encode()) > size // 2
    return text


def blocked_adds(r):
    """Clients waiting in CONV.ADD (blocked while their content is counted)."""
    return [c for c in r.client_list() if c.get("cmd", "").lower() == "conv.add" and "b" in c.get("flags", "")]


def add_in_thread(s, *args):
    """Runs CONV.ADD on its own connection in a thread; returns (thread, outcome list)."""
    import threading
    out = []

    def run():
        try:
            out.append(add(s.client(), *args))
        except redis.ResponseError as e:
            out.append(e)
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_big_content_counts_off_the_main_thread_as_js_tiktoken_and_as_inline(servers, kind):
    s = servers(kind, module_args=["tokenizer", "cl100k_base"])
    r = s.client()
    assert r.config_get("convcache.tokenize-inline-bytes") == {"convcache.tokenize-inline-bytes": "16384"}
    text = mixed_text(100_000)
    assert len(text.encode()) > 16384
    want = reference_counts([text])["cl100k_base"][0]
    assert add(r, "bg", "user", text) == 1
    r.config_set("convcache.tokenize-inline-bytes", 1 << 20)
    assert add(r, "inline", "user", text) == 1
    got = {k: [m["tokens"] for m in full(r, k)] for k in ("bg", "inline")}
    assert got == {"bg": [want], "inline": [want]}
    assert want != estimate(text)
    assert full(r, "bg")[0]["content"] == text
    # Inside MULTI the client cannot wait: the same ADD is counted inline there.
    r.config_set("convcache.tokenize-inline-bytes", 0)
    p = r.pipeline(transaction=True)
    p.execute_command("CONV.ADD", "multi", "user", text)
    p.execute_command("CONV.ADD", "multi", "user", "hello world")
    assert p.execute() == [1, 2]
    assert [m["tokens"] for m in full(r, "multi")] == [want, 2]
    # And in a script.
    assert r.eval("return redis.call('CONV.ADD', KEYS[1], 'user', ARGV[1])", 1, "lua", text) == 1
    assert [m["tokens"] for m in full(r, "lua")] == [want]
    with pytest.raises(redis.ResponseError, match="must be between 0 and"):
        r.config_set("convcache.tokenize-inline-bytes", -1)


def test_other_clients_are_served_while_a_huge_content_is_counted(servers, kind):
    s = servers(kind, module_args=["tokenizer", "cl100k_base"])
    r = s.client()
    huge = mixed_text(6_000_000)
    t, out = add_in_thread(s, "huge", "user", huge)
    # The ADD's client waits, blocked, while this connection is served...
    wait_for(lambda: blocked_adds(r), timeout=30, what="CONV.ADD blocked while counting")
    assert r.ping() is True
    other = s.client()
    assert add(other, "small", "user", "hello world") == 1
    # ...and its reply comes after those (it is still counting: no reply yet).
    assert out == []
    t.join(60)
    assert out == [1]
    r.config_set("convcache.tokenize-inline-bytes", 100_000_000)
    add(r, "huge-inline", "user", huge)
    assert full(r, "huge-inline")[0]["tokens"] == full(r, "huge")[0]["tokens"]


def test_a_session_changed_while_counting_is_checked_again(servers, kind):
    s = servers(kind, module_args=["tokenizer", "cl100k_base"])
    r = s.client()
    big = mixed_text(3_000_000)
    # Recreated with another tokenizer meanwhile: counted again with the session's own.
    add(r, "s", "user", "first")
    t, out = add_in_thread(s, "s", "user", big)
    wait_for(lambda: blocked_adds(r), timeout=30, what="blocked")
    r.delete("s")
    add(r, "s", "user", "again", "TOKENIZER", "o200k_base")
    t.join(60)
    assert out == [2]
    assert conv_info(r, "s")["tokenizer"] == b"o200k_base"
    r.config_set("convcache.tokenize-inline-bytes", 100_000_000)
    add(r, "o200k", "user", big, "TOKENIZER", "o200k_base")
    add(r, "cl100k", "user", big)
    counts = {k: full(r, k)[-1]["tokens"] for k in ("s", "o200k", "cl100k")}
    assert counts["s"] == counts["o200k"] != counts["cl100k"]
    r.config_set("convcache.tokenize-inline-bytes", 16384)
    # A SEQ taken meanwhile: refused when applied, changing nothing.
    t, out = add_in_thread(s, "q", "user", big, "SEQ", 5, "TOKENIZER", "cl100k_base")
    wait_for(lambda: blocked_adds(r), timeout=30, what="blocked")
    add(r, "q", "user", "took it", "SEQ", 7, "TOKENIZER", "cl100k_base")
    t.join(60)
    assert isinstance(out[0], redis.ResponseError) and "SEQ 5 is not past" in str(out[0])
    assert [m["content"] for m in full(r, "q")] == ["took it"]
    # Deleted meanwhile: the ADD creates the session again.
    t, out = add_in_thread(s, "d", "user", big, "TOKENIZER", "cl100k_base")
    wait_for(lambda: blocked_adds(r), timeout=30, what="blocked")
    r.delete("d")
    t.join(60)
    assert out == [1] and full(r, "d")[0]["tokens"] == counts["cl100k"]


def test_a_refused_big_add_answers_at_once_and_changes_nothing(servers, kind):
    r = servers(kind, module_args=["tokenizer", "cl100k_base", "tokenize-inline-bytes", "0"]).client()
    add(r, "s", "user", "hello", "SEQ", 3)
    before = full(r, "s")
    for opts, msg in ((["SEQ", 2], "SEQ 2 is not past"),
                      (["TOKENIZER", "o200k_base"], "TOKENIZER o200k_base differs"),
                      (["META", "[1]"], "META"),
                      (["TOKENS", 5], "TOKENS is the primary's count")):
        with pytest.raises(redis.ResponseError, match=msg):
            add(r, "s", "user", "big " * 10_000, *opts)
    assert full(r, "s") == before
    # A client's TOKENS is refused on a new session too, and on a small content.
    for content in ("x", "big " * 10_000):
        with pytest.raises(redis.ResponseError, match="TOKENS is the primary's count"):
            add(r, "new", "user", content, "TOKENS", 1)
    with pytest.raises(redis.ResponseError, match="TOKENS needs a value"):
        add(r, "new", "user", "x", "TOKENS")
    assert r.exists("new") == 0
    assert r.execute_command("CONV.LEN", "s") == 1


def test_pipelined_adds_of_one_client_keep_their_order(servers, kind):
    r = servers(kind, module_args=["tokenizer", "cl100k_base", "window", "100"]).client()
    texts = [("big %d " % i) * 8000 if i % 2 == 0 else "small %d" % i for i in range(12)]
    p = r.pipeline(transaction=False)
    for t in texts:
        p.execute_command("CONV.ADD", "s", "user", t)
    assert p.execute() == list(range(1, 13))
    got = full(r, "s")
    assert [m["content"] for m in got] == texts
    assert [m["tokens"] for m in got] == reference_counts(texts)["cl100k_base"]


def aof_bytes(s):
    chunks = []
    for root, _, files in os.walk(s.dir):
        for f in files:
            if ".aof" in f:
                with open(os.path.join(root, f), "rb") as fh:
                    chunks.append(fh.read())
    return b"".join(chunks)


def test_replica_and_aof_get_the_primarys_count_of_a_big_content(servers, kind):
    primary = servers(kind, module_args=["tokenizer", "cl100k_base"],
                      extra=["--appendonly", "yes", "--aof-use-rdb-preamble", "no"])
    rep = replica_of(servers, primary,
                     module_args=["tokenizer", "estimate", "tokenize-inline-bytes", "0"])
    r = primary.client()
    text = mixed_text(200_000)
    add(r, "a", "user", text)                         # creates the session: in full
    add(r, "a", "assistant", text, "META", '{"k":1}')  # the fast path
    add(r, "a", "tool", text, "TOOL_CALL_ID", "c", "EX", 1000)
    add(r, "a", "user", "short")
    add(r, "e", "user", text, "TOKENIZER", "estimate")
    want = reference_counts([text, "short"])["cl100k_base"]
    assert [m["tokens"] for m in full(r, "a")] == [want[0]] * 3 + [want[1]]
    wait_replica_caught_up(primary, rep)
    rr = rep.client()
    for key in ("a", "e"):
        assert full(rr, key) == full(r, key), key
        assert conv_info(rr, key)["tokens"] == conv_info(r, key)["tokens"]
        assert digest(rr, key) == digest(r, key)
    # Exact counts travel as TOKENS; estimated ones do not.
    log = aof_bytes(primary)
    assert log.count(b"TOKENS\r\n$%d\r\n%d\r\n" % (len(str(want[0])), want[0])) == 3
    assert log.count(b"TOKENS\r\n") == 4
    state = {k: (full(r, k), digest(r, k)) for k in ("a", "e")}
    primary.stop()
    primary.module_args = ["tokenizer", "o200k_base"]
    primary.extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]
    primary.start()
    r = primary.client()
    for k, (f, d) in state.items():
        assert (full(r, k), digest(r, k)) == (f, d), k


def test_an_add_whose_client_leaves_while_counting_is_still_applied(servers, kind):
    s = servers(kind, module_args=["tokenizer", "cl100k_base", "timer-interval-ms", "20"])
    r = s.client()
    big = mixed_text(3_000_000)
    add(r, "s", "user", "x")
    conn = redis.Connection(port=s.port)
    conn.send_command("CLIENT", "ID")
    leaver_id = conn.read_response()
    conn.send_command("CONV.ADD", "s", "assistant", big)
    wait_for(lambda: blocked_adds(r), timeout=30, what="blocked")
    assert r.client_kill_filter(_id=leaver_id) == 1
    # Applied once counted, as the server applies a command whose client left after sending it.
    wait_for(lambda: r.execute_command("CONV.LEN", "s") == 2, timeout=30, what="ADD applied")
    got = full(r, "s")
    assert [m["content"] for m in got] == ["x", big]
    r.config_set("convcache.tokenize-inline-bytes", 100_000_000)
    add(r, "inline", "user", big)
    assert got[1]["tokens"] == full(r, "inline")[0]["tokens"]
