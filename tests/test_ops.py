"""An operator's view: path settings fixed at load, config errors, and the manual's claims
about replies, limits, cold records and TTLs held against both servers."""
import json
import os
import re
import shlex
import struct
import subprocess

import pytest
import redis

import readme
from harness import wait_for


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def conv_info(r, key):
    info = r.execute_command("CONV.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode(): v for k, v in info.items()}


def add(r, key, n):
    for i in range(n):
        r.execute_command("CONV.ADD", key, "user", f"m{i}")


def test_path_settings_are_fixed_once_the_server_runs(servers, kind):
    s = servers(kind, module_args=["archive-dir", "arch-a", "import-dir", "imp-a"])
    r = s.client()
    add(r, "s", 4)
    assert r.execute_command("CONV.FLUSH", "s") == 4
    assert os.listdir(os.path.join(s.dir, "arch-a", "0"))
    for name, value in (("convcache.archive-dir", "/tmp"), ("convcache.import-dir", "/")):
        with pytest.raises(redis.ResponseError, match=f"'{name}'.*immutable"):
            r.config_set(name, value)
    assert r.config_get("convcache.*dir") == {"convcache.archive-dir": "arch-a",
                                              "convcache.import-dir": "imp-a"}
    # Sessions archived under the path stay readable.
    assert [m["content"] for m in json.loads(r.execute_command("CONV.HISTORY", "s"))] == \
        ["m0", "m1", "m2", "m3"]
    # Live settings stay live.
    r.config_set("convcache.window", 7)
    # A server-command-line (or config-file) directive still sets them at load.
    s2 = servers(kind, extra=["--convcache.archive-dir", "arch-b", "--convcache.import-dir", "imp-b"])
    r2 = s2.client()
    assert r2.config_get("convcache.archive-dir") == {"convcache.archive-dir": "arch-b"}
    assert r2.config_get("convcache.import-dir") == {"convcache.import-dir": "imp-b"}
    add(r2, "s", 2)
    assert r2.execute_command("CONV.FLUSH", "s") == 2
    assert os.listdir(os.path.join(s2.dir, "arch-b", "0"))


def test_float_config_error_says_err_once(server):
    conn = server.client().connection_pool.get_connection()
    conn.send_command("CONFIG", "SET", "convcache.semcache-min-sim", "2")
    with pytest.raises(redis.ResponseError) as e:
        conn.read_response()
    conn.disconnect()
    msg = str(e.value)
    assert "value '2' is not a number between -1 and 1" in msg
    assert "ERR" not in msg, msg  # redis-py strips the one leading ERR


def test_minsim_and_maxdist_together_are_refused(r):
    r.execute_command("SEMCACHE.SET", "sc", fp32(1, 0), "resp")
    for opts in (["MINSIM", "0.5", "MAXDIST", "0.9"], ["MAXDIST", "0.1", "COUNT", "2", "MINSIM", "0"]):
        with pytest.raises(redis.ResponseError, match="cannot be given together"):
            r.execute_command("SEMCACHE.GET", "sc", fp32(1, 0), *opts)
    assert "MINSIM and MAXDIST cannot be given together" in readme.flat()
    assert r.execute_command("SEMCACHE.GET", "sc", fp32(1, 0), "MAXDIST", "0.1") == b"resp"


def test_ctx_count_on_a_cold_session_brings_back_the_window(servers, kind):
    s = servers(kind, module_args=["window", "5", "archive-batch", "1000000"])
    r = s.client()
    add(r, "s", 12)
    assert r.execute_command("CONV.FLUSH", "s") == 12
    assert [m["content"] for m in json.loads(r.execute_command("CONV.CTX", "s", "COUNT", 2))] == \
        ["m10", "m11"]
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"], info["len"]) == (5, 7, 12)
    assert [m["content"] for m in json.loads(r.execute_command("CONV.CTX", "s"))] == \
        [f"m{i}" for i in range(7, 12)]
    assert r.info("convcache")["convcache_archive_reads"] == 1  # the window came from memory
    # More than the window: that many answered, only the window brought back.
    assert r.execute_command("CONV.FLUSH", "s") == 5
    assert len(json.loads(r.execute_command("CONV.CTX", "s", "COUNT", 9))) == 9
    info = conv_info(r, "s")
    assert (info["hot"], info["archived"]) == (5, 7)
    # A token budget still picks from the newest of the COUNT asked for (5 tokens a turn).
    for count, tokens, want in ((3, 9, ["m11"]), (1, 100, ["m11"]), (3, 100, ["m9", "m10", "m11"])):
        r.execute_command("CONV.FLUSH", "s")
        got = json.loads(r.execute_command("CONV.CTX", "s", "COUNT", count, "TOKENS", tokens))
        assert [m["content"] for m in got] == want, (count, tokens)
    assert "`CONV.CTX key COUNT 2` answers 2 turns and brings back the window" in readme.flat()


def test_readme_first_session_answers_as_shown(r):
    # Each `$ redis-cli --raw ...` line of the README's first session, and the lines after it
    # as what it prints.
    (block,) = readme.code_blocks("A first session")
    shown = []
    for line in block:
        if line.startswith("$ redis-cli --raw "):
            shown.append((shlex.split(line[len("$ redis-cli --raw "):]), []))
        else:
            shown[-1][1].append(line)
    assert len(shown) == 4
    for argv, lines in shown:
        reply = r.execute_command(*argv)
        got = str(reply) if isinstance(reply, int) else reply.decode()
        assert got.splitlines() == lines, argv


def test_configuration_table_names_every_setting_with_its_default(servers, kind):
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \| [^|]+ \| .* \|$",
                           readme.section("Configuration"), flags=re.M))
    r = servers(kind).client()  # no module arguments: every setting at its default
    live = {(k.decode() if isinstance(k, bytes) else k).removeprefix("convcache."):
            v.decode() if isinstance(v, bytes) else v
            for k, v in r.config_get("convcache.*").items()}
    assert set(rows) == set(live)
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}
    for name, cell in rows.items():
        doc = cell.strip().strip("`")
        m = re.fullmatch(r"(\d+) (B|KiB|MiB)", doc)
        if m:
            doc = str(int(m.group(1)) * units[m.group(2)])
        value = live[name]
        assert (float(value) == float(doc)) if name == "semcache-min-sim" else value == doc, name


def test_readme_info_field_names_are_the_real_ones(r):
    listed = set(re.findall(r"`(convcache_[a-z0-9_]+)`", readme.section("INFO")))
    assert listed == set(r.info("convcache"))


def test_cold_record_memory_usage_is_as_documented(servers, kind):
    m = re.search(r"`MEMORY USAGE` is (\d+)–(\d+) bytes with a short key", readme.flat())
    assert m, "the manual states no cold-record size"
    low, high = int(m.group(1)), int(m.group(2))
    s = servers(kind, module_args=["window", "5", "idle-archive", "1", "timer-interval-ms", "20"])
    r = s.client()
    for key, n in (("c1", 1), ("c30", 30)):
        add(r, key, n)
    for key in ("c1", "c30"):
        wait_for(lambda: conv_info(r, key)["hot"] == 0, timeout=20, what=f"{key} cold")
        assert low <= r.memory_usage(key, samples=0) <= high, key


def test_flush_leaves_the_ttl_as_it_was(r):
    add(r, "s", 3)
    add(r, "t", 3)
    r.expire("t", 5000)
    assert r.execute_command("CONV.FLUSH", "s") == 3
    assert r.execute_command("CONV.FLUSH", "t") == 3
    assert r.ttl("s") == -1
    assert 4900 <= r.ttl("t") <= 5000
    assert "a flushed session with no TTL keeps none" in readme.flat()


def test_role_limit_is_as_documented(r):
    m = re.search(r"A role is non-empty UTF-8 of at most (\d+) bytes", readme.flat())
    assert m, "the manual states no role limit"
    limit = int(m.group(1))
    assert r.execute_command("CONV.ADD", "s", "r" * limit, "x") == 1
    for bad in ("r" * (limit + 1), "", b"\xff"):
        with pytest.raises(redis.ResponseError, match=f"role must be non-empty UTF-8 of at most {limit}"):
            r.execute_command("CONV.ADD", "s", bad, "x")
    assert r.execute_command("CONV.LEN", "s") == 1


def test_semcache_set_with_pxat_in_the_past(r):
    assert r.execute_command("SEMCACHE.SET", "sc", fp32(1, 0), "live") == 1
    assert r.execute_command("SEMCACHE.SET", "sc", fp32(1, 0.01), "past", "PXAT", 1000) == 2
    assert r.execute_command("SEMCACHE.LEN", "sc") == 1
    assert r.execute_command("SEMCACHE.GET", "sc", fp32(1, 0.01), "COUNT", 5) == [b"live"]
    info = r.execute_command("SEMCACHE.INFO", "sc")
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert (info[b"entries"], info[b"stored"]) == (1, 2)
    r.execute_command("SEMCACHE.SET", "sc", fp32(0, 1), "next")
    info = r.execute_command("SEMCACHE.INFO", "sc")
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert info[b"stored"] == 2  # reclaimed by the next SET
    assert "A `PXAT` in the past is accepted" in readme.flat()


def test_semcache_get_reply_shapes_are_as_documented(server):
    r2, r3 = server.client(protocol=2), server.client(protocol=3)
    r2.execute_command("SEMCACHE.SET", "sc", fp32(1, 0), "a", "META", '{"k":1}')
    r2.execute_command("SEMCACHE.SET", "sc", fp32(1, 0.05), "b")
    q = fp32(1, 0.02)
    flat = r2.execute_command("SEMCACHE.GET", "sc", q, "COUNT", 2, "WITHIDS", "WITHSCORES", "WITHMETA")
    assert len(flat) == 8 and [flat[0], flat[1], flat[4], flat[5]] == [1, b"a", 2, b"b"]
    assert isinstance(flat[2], bytes) and 0.99 < float(flat[2]) <= 1.0  # RESP2: bulk string
    assert (flat[3], flat[7]) == (b'{"k":1}', None)
    resp3 = r3.execute_command("SEMCACHE.GET", "sc", q, "COUNT", 2, "WITHSCORES")
    assert resp3[0] == b"a" and isinstance(resp3[1], float)  # RESP3: double
    assert r2.execute_command("SEMCACHE.GET", "sc", fp32(-1, 0)) is None
    assert r2.execute_command("SEMCACHE.GET", "sc", fp32(-1, 0), "WITHSCORES") == []
    assert r2.execute_command("SEMCACHE.GET", "nokey", q, "WITHIDS") == []
    doc = readme.flat(readme.section("Semantic cache: `SEMCACHE.*`"))
    for claim in ("one flat array", "a miss (or a missing key) is an empty array, never nil",
                  "`score` is a bulk string in RESP2", "and a double in RESP3"):
        assert claim in doc, claim


def test_make_run_provides_a_cli():
    # Without the MAKE* variables of an enclosing `make test`, which add "make[1]: ..." lines.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    out = subprocess.run(["make", "-n", "run"], cwd=readme.ROOT, capture_output=True, text=True,
                         timeout=60, env=env).stdout
    install = [line for line in out.splitlines() if "install" in line and "redis-tools" in line]
    assert install and "command -v redis-cli" in install[0], out
    assert out.strip().splitlines()[-1].startswith("exec ")  # the server starts after it
