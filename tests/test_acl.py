"""ACL: the manual's recipes (docs/operations.md) as it states them, ACL categories (Valkey), key
permissions that follow each command's key spec, and internal commands out of reach of
application users while replication and AOF replay keep applying them."""
import struct

import pytest
import redis

import readme
from harness import replica_of, wait_for, wait_replica_caught_up

NoPerm = redis.exceptions.NoPermissionError
# The internal commands are the manual's rows named `X._Y`; each is called with enough
# arguments to pass the server's arity check, so the refusal is the ACL's.
INTERNAL = {name for name in readme.command_rows() if "._" in name}
SAMPLE_ARGS = {"SEMCACHE._TOUCH": ("app:1", "1", "1"), "CONV._EVICTED": ("app:1",)}


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def user(server, name, password):
    return server.client(username=name, password=password, protocol=2)


def setuser(r, words):
    assert words[:2] == ["ACL", "SETUSER"]
    assert r.execute_command(*words) in (b"OK", "OK", True)


def category(r, name):
    return {c.decode().upper() for c in r.execute_command("ACL", "CAT", name)}


def refused(fn, *args):
    with pytest.raises(NoPerm):
        fn(*args)


def test_readme_recipes_do_what_they_say(server):
    r = server.client()
    recipes = readme.acl_recipes(for_redis_70=server.kind == "redis")
    for words in recipes:
        setuser(r, words)
    secret = {w[2]: w[4][1:] for w in recipes}
    assert set(secret) == {"app-reader", "app-writer", "tenant-42", "app-auditor"}
    r.execute_command("CONV.ADD", "app:1", "user", "hello")
    r.execute_command("SEMCACHE.SET", "app:sc", fp32(1, 0), "cached")
    r.execute_command("CONV.ADD", "other:1", "user", "not yours")

    reader = user(server, "app-reader", secret["app-reader"])
    assert reader.execute_command("CONV.LEN", "app:1") == 1
    assert b"hello" in reader.execute_command("CONV.CTX", "app:1")
    assert reader.execute_command("SEMCACHE.GET", "app:sc", fp32(1, 0)) == b"cached"
    assert reader.execute_command("URLEMB.MGET", "app:u1", "app:u2") == [None, None]
    refused(reader.execute_command, "CONV.ADD", "app:1", "user", "x")
    refused(reader.execute_command, "SEMCACHE.SET", "app:sc", fp32(1, 0), "x")
    refused(reader.execute_command, "CONV.CTX", "other:1")
    for cmd in INTERNAL:
        refused(reader.execute_command, cmd, *SAMPLE_ARGS.get(cmd, ("app:1", "1")))

    writer = user(server, "app-writer", secret["app-writer"])
    assert writer.execute_command("CONV.ADD", "app:1", "assistant", "hi") == 2
    assert b"hi" in writer.execute_command("CONV.CTX", "app:1")
    assert writer.execute_command("SEMCACHE.SET", "app:sc", fp32(0, 1), "more") == 2
    assert writer.execute_command("URLEMB.MSET", "app:u1", fp32(1, 2), "app:u2", fp32(3, 4))
    assert writer.execute_command("CONV.FLUSH", "app:1") == 2
    refused(writer.execute_command, "CONV.ADD", "other:1", "user", "x")
    refused(writer.execute_command, "URLEMB.MSET", "app:u3", fp32(1, 2), "other:u", fp32(1, 2))
    for cmd in INTERNAL:
        refused(writer.execute_command, cmd, *SAMPLE_ARGS.get(cmd, ("app:1", "1")))

    tenant = user(server, "tenant-42", secret["tenant-42"])
    assert tenant.execute_command("CONV.ADD", "t42:chat:7", "user", "x") == 1
    assert tenant.execute_command("SEMCACHE.SET", "t42:sc", fp32(1, 0), "r") == 1
    refused(tenant.execute_command, "CONV.CTX", "app:1")
    refused(tenant.execute_command, "CONV.ADD", "app:2", "user", "x")

    auditor = user(server, "app-auditor", secret["app-auditor"])
    assert b"hello" in auditor.execute_command("CONV.HISTORY", "app:1")
    assert auditor.execute_command("CONV.INFO", "app:1")[:2] == [b"window", 5]
    refused(auditor.execute_command, "CONV.ADD", "app:1", "user", "x")
    refused(auditor.execute_command, "CONV.DEL", "app:1")
    refused(auditor.execute_command, "SEMCACHE.DEL", "app:sc", "1")
    assert r.execute_command("CONV.LEN", "app:1") == 2


def test_read_only_key_permission_reads_but_never_writes(server):
    r = server.client()
    r.execute_command("CONV.ADD", "app:1", "user", "hello")
    r.execute_command("SEMCACHE.SET", "app:sc", fp32(1, 0), "cached")
    r.execute_command("ACL", "SETUSER", "ro", "on", ">p", "%R~app:*", "+@all")
    ro = user(server, "ro", "p")
    assert b"hello" in ro.execute_command("CONV.CTX", "app:1")
    assert ro.execute_command("SEMCACHE.GET", "app:sc", fp32(1, 0)) == b"cached"
    assert ro.execute_command("URLEMB.GET", "app:u") is None
    refused(ro.execute_command, "CONV.ADD", "app:1", "user", "x")
    refused(ro.execute_command, "CONV.CLEAR", "app:1")
    refused(ro.execute_command, "SEMCACHE.SET", "app:sc", fp32(1, 0), "x")
    refused(ro.execute_command, "URLEMB.SET", "app:u", fp32(1, 0))
    assert r.execute_command("CONV.LEN", "app:1") == 1


def test_internal_commands_need_more_than_read_and_write(server):
    r = server.client()
    r.execute_command("CONV.ADD", "s", "user", "x")
    r.execute_command("ACL", "SETUSER", "app", "on", ">p", "~*", "+@read", "+@write")
    r.execute_command("ACL", "SETUSER", "ops", "on", ">p", "~*", "+@all")
    app, ops = user(server, "app", "p"), user(server, "ops", "p")
    if server.kind == "valkey":
        assert app.execute_command("CONV.ADD", "s", "user", "y") == 2  # @write reaches it
        assert b"y" in app.execute_command("CONV.CTX", "s")  # @read too
    refused(app.execute_command, "CONV._ARCHIVED", "s", "1")
    refused(app.execute_command, "CONV._LOAD", "s", "x")
    refused(app.execute_command, "SEMCACHE._LOAD", "sc", "x")
    refused(app.execute_command, "CONV._REHYDRATED", "s", "x")
    assert ops.execute_command("CONV._ARCHIVED", "s", "1") == 1  # like RESTORE: +@all may
    with pytest.raises(redis.ResponseError, match="corrupt"):
        ops.execute_command("CONV._LOAD", "s", "garbage")


def test_acl_categories_on_valkey(servers):
    s = servers("valkey")
    r = s.client()
    public = set(readme.command_rows()) - INTERNAL
    assert category(r, "convcache") == public
    read = {c for c in public if c in category(r, "read")}
    write = {c for c in public if c in category(r, "write")}
    assert read | write == public and not read & write
    assert {"CONV.CTX", "CONV.HISTORY", "CONV.LEN", "CONV.INFO", "CONV.SEARCH", "SEMCACHE.GET",
            "SEMCACHE.LEN", "SEMCACHE.INFO", "URLEMB.GET", "URLEMB.MGET"} == read
    assert {"CONV.ADD", "CONV.LEN", "CONV.DEL", "URLEMB.GET"} <= category(r, "fast")
    assert {"CONV.CTX", "SEMCACHE.GET", "CONV.FLUSH"} <= category(r, "slow")
    assert "CONV.DEL" in category(r, "keyspace")
    for cat in ("read", "write", "convcache", "fast"):
        assert not INTERNAL & category(r, cat), cat
    assert INTERNAL <= category(r, "admin") & category(r, "dangerous")
    # The examples: categories alone now grant the module's commands.
    r.execute_command("ACL", "SETUSER", "ro", "on", ">p", "~app:*", "+@read")
    r.execute_command("ACL", "SETUSER", "rw", "on", ">p", "~app:*", "+@write")
    r.execute_command("CONV.ADD", "app:1", "user", "x")
    assert b"x" in user(s, "ro", "p").execute_command("CONV.CTX", "app:1")
    assert user(s, "rw", "p").execute_command("CONV.ADD", "app:1", "user", "y") == 2


def digest(r, key):
    return r.execute_command("DEBUG", "DIGEST-VALUE", key)


def conv_info(r, key):
    info = r.execute_command("CONV.INFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    return {k.decode(): v for k, v in info.items()}


def test_replication_and_aof_apply_internal_commands(servers, kind):
    """Writes by an application user (the manual's app-writer recipe) reach a replica and the
    AOF as internal commands (`CONV._ARCHIVED`, `CONV._REHYDRATED`, `*._LOAD` after a rewrite)
    that the application user itself may not send."""
    args = ["window", "3", "archive-batch", "1000000"]
    primary = servers(kind, module_args=args,
                      extra=["--appendonly", "yes", "--appendfsync", "always"])
    p = primary.client()
    replica = replica_of(servers, primary)
    recipes = readme.acl_recipes(for_redis_70=kind == "redis")
    writer_words = next(w for w in recipes if w[2] == "app-writer")
    setuser(p, writer_words)
    app = user(primary, "app-writer", writer_words[4][1:])
    for i in range(8):
        app.execute_command("CONV.ADD", "app:1", "user", f"m{i}")
    app.execute_command("SEMCACHE.SET", "app:sc", fp32(1, 0), "cached", "EX", 3600)
    assert app.execute_command("CONV.FLUSH", "app:1") == 8  # replicates CONV._ARCHIVED
    assert len(app.execute_command("CONV.CTX", "app:1", "COUNT", 2, "FORMAT", "resp")) == 2
    assert conv_info(p, "app:1")["hot"] == 3  # brought back, replicated as CONV._REHYDRATED
    refused(app.execute_command, "CONV._ARCHIVED", "app:1", "8")
    wait_replica_caught_up(primary, replica)
    rr = replica.client()
    for key in ("app:1", "app:sc"):
        assert digest(rr, key) == digest(p, key)
    # The replica archives on its own I/O thread, and keeps the turns the primary brought back.
    wait_for(lambda: {k: conv_info(rr, "app:1")[k] for k in ("hot", "archived", "len")}
             == {"hot": 3, "archived": 5, "len": 8}, what="replica archived as the primary did")
    before = (digest(p, "app:1"), digest(p, "app:sc"), conv_info(p, "app:1")["len"])
    primary.restart()  # replays CONV.ADD, CONV._ARCHIVED, CONV._REHYDRATED from the AOF
    p = primary.client()
    assert (digest(p, "app:1"), digest(p, "app:sc"), conv_info(p, "app:1")["len"]) == before
    p.bgrewriteaof()
    wait_for(lambda: p.info("persistence")["aof_rewrite_in_progress"] == 0
             and p.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
    primary.restart()  # replays CONV._LOAD and SEMCACHE._LOAD
    p = primary.client()
    assert (digest(p, "app:1"), digest(p, "app:sc"), conv_info(p, "app:1")["len"]) == before
