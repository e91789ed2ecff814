"""COMMAND DOCS / COMMAND INFO against the manual's command tables (README.md and docs/), the
README's command summary, and replies that a RESP2 user reads by position (CONV.INFO,
SEMCACHE.INFO) in the documented order. Plus: the manual's links lead somewhere."""
import os
import re
import struct

import pytest
import redis

import readme


def raw(r, *cmd):
    """A reply as the server sent it (redis-py's own COMMAND DOCS/INFO parsers break on
    module commands)."""
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command(*cmd)
        return conn.read_response()
    finally:
        r.connection_pool.release(conn)


def as_dict(flat):
    return {k.decode(): v for k, v in zip(flat[::2], flat[1::2])}


def docs_of(r, *names):
    reply = raw(r, "COMMAND", "DOCS", *names)
    out = {}
    for name, doc in zip(reply[::2], reply[1::2]):
        d = as_dict(doc)
        d["arguments"] = [arg_dict(a) for a in d.get("arguments", [])]
        out[name.decode().upper()] = d
    return out


def arg_dict(flat):
    a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in as_dict(flat).items()}
    a["flags"] = [f.decode() for f in a.get("flags", [])]
    a["arguments"] = [arg_dict(x) for x in a.get("arguments", [])]
    return a


def render(args):
    """COMMAND DOCS arguments written in the manual's notation."""
    return " ".join(render_arg(a) for a in args)


def render_arg(a):
    optional, multiple = "optional" in a["flags"], "multiple" in a["flags"]
    kind, token = a["type"], a.get("token")
    if kind == "pure-token":
        core = token
    elif kind == "oneof" and all(s["type"] == "pure-token" for s in a["arguments"]):
        core = "|".join(s["token"] for s in a["arguments"])
    elif kind == "oneof":
        inner = " | ".join(render_arg(s) for s in a["arguments"])
        return f"[{inner}]" if optional else f"({inner})"
    elif kind == "block":
        core = render(a["arguments"])
    else:
        core = a["name"]
    if token and kind != "pure-token":
        core = f"{token} {core}"
    if multiple:
        core = f"{core} [{core} ...]"
    return f"[{core}]" if optional else core


def find_arg(args, token):
    for a in args:
        if a.get("token") == token:
            return a
        found = find_arg(a["arguments"], token)
        if found:
            return found
    return None


def test_command_docs_match_the_readme_tables(server):
    r = server.client(protocol=2)
    rows = readme.command_rows()
    module_commands = {c.decode().upper() for c in
                       raw(r, "COMMAND", "LIST", "FILTERBY", "MODULE", "convcache")}
    assert module_commands == set(rows), \
        "the manual's command tables and the module's commands differ"
    docs = docs_of(r, *rows)
    for name, (syntax, _) in rows.items():
        d = docs[name]
        assert d["summary"] and d["complexity"] and d["since"] == b"1.0.0", name
        assert d["group"] == b"module" and d["module"] == b"convcache", name
        assert render(d["arguments"]) == syntax, name
    # Types a client or a CLI hint can rely on.
    assert docs["CONV.ADD"]["arguments"][0]["type"] == "key"
    assert find_arg(docs["CONV.CTX"]["arguments"], "COUNT")["type"] == "integer"
    assert find_arg(docs["CONV.ADD"]["arguments"], "TS")["type"] == "unix-time"
    assert find_arg(docs["SEMCACHE.GET"]["arguments"], "MAXDIST")["type"] == "double"
    assert find_arg(docs["SEMCACHE.GET"]["arguments"], "WITHSCORES")["type"] == "pure-token"
    assert find_arg(docs["SEMCACHE.SET"]["arguments"], "PXAT")["type"] == "unix-time"
    del_ids = docs["SEMCACHE.DEL"]["arguments"][1]["arguments"][0]
    assert (del_ids["type"], del_ids["flags"]) == ("integer", ["multiple"])


def test_readme_summary_lists_every_command(server):
    r = server.client(protocol=2)
    module_commands = {c.decode().upper() for c in
                       raw(r, "COMMAND", "LIST", "FILTERBY", "MODULE", "convcache")}
    summary = readme.summary_rows()
    assert set(summary) == module_commands, \
        "README's command summary and the module's commands differ"
    for name, link in summary.items():
        page = link.split("#")[0]
        assert os.path.isfile(os.path.join(readme.ROOT, page)), (name, link)
        # The page it links to has the command's full row.
        assert f"| `{name} " in open(os.path.join(readme.ROOT, page), encoding="utf-8").read(), \
            (name, link)


def slug(title):
    """The anchor a Markdown heading gets (GitHub's rule)."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def test_manual_links_lead_somewhere():
    for path in readme.FILES:
        text = open(path, encoding="utf-8").read()
        here = os.path.dirname(path)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            page, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(here, page)) if page else path
            assert os.path.exists(file), f"{os.path.relpath(path, readme.ROOT)}: {target}"
            if anchor:
                titles = readme.headings(open(file, encoding="utf-8").read())
                assert anchor in {slug(t) for _, t, _ in titles}, \
                    f"{os.path.relpath(path, readme.ROOT)}: {target}"


def test_arity_and_key_specs(server):
    r = server.client(protocol=2)
    info = {c[0].decode().upper(): c for c in raw(r, "COMMAND", "INFO", *readme.command_rows())}
    expected = {  # name: (arity, key-spec flags, first, last, step)
        "CONV.ADD": (-4, {"RW", "insert"}, 1, 1, 1),
        "CONV.CTX": (-2, {"RO", "access"}, 1, 1, 1),
        "CONV.HISTORY": (-2, {"RO", "access"}, 1, 1, 1),
        "CONV.SEARCH": (-3, {"RO", "access"}, 1, 1, 1),  # TEXT/EMB counted, its value checked by the module
        "CONV.LEN": (2, {"RO"}, 1, 1, 1),
        "CONV.INFO": (2, {"RO"}, 1, 1, 1),
        "CONV.CLEAR": (2, {"RW", "delete"}, 1, 1, 1),
        "CONV.DEL": (2, {"RM", "delete"}, 1, 1, 1),
        "CONV.FLUSH": (2, {"RW", "update"}, 1, 1, 1),
        "SEMCACHE.GET": (-3, {"RO", "access"}, 1, 1, 1),
        "SEMCACHE.SET": (-4, {"RW", "update"}, 1, 1, 1),
        "SEMCACHE.DEL": (-3, {"RW", "delete"}, 1, 1, 1),
        "URLEMB.MSET": (-3, {"OW", "update"}, 1, -1, 2),
        "URLEMB.MGET": (-2, {"RO", "access"}, 1, -1, 1),
        "CONV._ARCHIVED": (-3, {"RW", "update"}, 1, 1, 1),
    }
    for name, (arity, flags, first, last, step) in expected.items():
        c = info[name]
        assert c[1] == arity, name
        assert (c[3], c[4], c[5]) == (first, last, step), name
        (spec,) = c[8]
        assert {f.decode() for f in as_dict(spec)["flags"]} == flags, name
    # The server checks the arity before the module sees the call (which would count it).
    before = r.info("convcache")["convcache_conv_commands"]
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("CONV.LEN", "a", "b")
    assert r.info("convcache")["convcache_conv_commands"] == before
    assert r.command_getkeys("URLEMB.MSET", "a", "v", "b", "w") == ["a", "b"]


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def test_info_replies_keep_the_documented_order(server):
    r2, r3 = server.client(protocol=2), server.client(protocol=3)
    r2.execute_command("CONV.ADD", "s", "user", "hi")
    r2.execute_command("SEMCACHE.SET", "sc", fp32(1, 0), "resp")
    for command, key in (("CONV.INFO", "s"), ("SEMCACHE.INFO", "sc")):
        documented = readme.reply_fields(command)
        flat = r2.execute_command(command, key)
        assert [k.decode() for k in flat[::2]] == documented, command
        # Counters are integers; CONV.INFO's tokenizer and SEMCACHE.INFO's index and evict are names.
        assert all(isinstance(v, (int, bytes)) for v in flat[1::2])
        as_map = r3.execute_command(command, key)
        assert isinstance(as_map, dict)
        assert [k.decode() for k in as_map] == documented, command
        assert list(as_map.values()) == flat[1::2]
