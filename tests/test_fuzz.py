"""Fuzzing every decoder of outside bytes through a real server (both servers): mutated DUMP
payloads of both types (truncations and byte edits, the CRC-64 recomputed so the server hands
them to the module), mutated `_LOAD` payloads (whole values and continuations), and a cold
session's archive file mutated on disk, then read.

After every case: the server answers PING, the other keys read the same, a refused payload
left nothing behind (no key, or the value it would have continued unchanged), and an accepted
one reads back without error and renders valid JSON. At the end, DEBUG RELOAD keeps every
accepted value as it was.

Fixed seed; bounded by FUZZ_CASES (per kind) and FUZZ_SECONDS (per server). `make test` runs
the small defaults, `make fuzz` big numbers. The case counts are printed."""
import json
import os
import random
import struct
import time

import redis

from payloads import (archive_segments, archived_payload, dump_of, fix_archive_crcs, more_payload,
                      parse_module_value, seal, session_payload, split_dump, turn)

SEED = int(os.environ.get("FUZZ_SEED", "8"))
CASES = int(os.environ.get("FUZZ_CASES", "1000"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "25"))
COLD = ["window", "4", "archive-batch", "1000000", "timer-interval-ms", "20", "idle-archive", "3600"]
KEEP_ACCEPTED = 200


def fp32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x3F, 0x40, 0xC0]


def mutate(rng, data):
    """1 to 4 edits: bit flips, byte sets, inserts, deletes."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data.append(rng.randrange(256))
            continue
        i = rng.randrange(len(data))
        op = rng.randrange(5)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i] = rng.randrange(256)
        elif op == 2:
            data[i] = rng.choice(INTERESTING)
        elif op == 3:
            data.insert(i, rng.randrange(256))
        else:
            del data[i]
    return bytes(data)


def truncate(rng, data):
    return data[:rng.randrange(len(data))] if data else data


def json_of(reply):
    return json.loads(reply)


class Fuzz:
    def __init__(self, server):
        self.server = server
        self.r = server.client()
        self.rng = random.Random(SEED)
        self.n = 0
        self.counts = {}
        self.accepted = []  # keys kept for the final reload

    # --- setup ---------------------------------------------------------------------------

    def setup(self):
        r = self.r
        r.config_set("rdbcompression", "no")  # DUMP strings stay parseable
        # Tool fields and exact token counts on some turns, so the DUMP, `_LOAD` and archive
        # payloads mutated below carry every field of a turn (session codec 4, archive flag bits).
        tool = [["NAME", "fn"], ["TOOL_CALL_ID", "call_1"], ["TOOL_CALLS", '[{"id":"c"}]'], []]
        for i in range(6):
            r.execute_command("CONV.ADD", "src:hot", "user" if i % 2 else "assistant", f"turn {i} ✓",
                              "META", json.dumps({"i": i, "t": [1, "x"]}), "EMB", fp32(i, 1, -2),
                              *tool[i % 4], *(["TOKENIZER", "o200k_base"] if i == 0 else []))
        for i in range(12):
            r.execute_command("CONV.ADD", "src:cold", "user", f"cold turn {i} the quick brown fox",
                              "META", json.dumps({"i": i}), "EMB", fp32(1, i, 0), *tool[i % 4],
                              *(["TOKENIZER", "cl100k_base"] if i == 0 else []))
        r.execute_command("CONV.FLUSH", "src:cold")
        for i in range(5):
            r.execute_command("CONV.ADD", "src:cold", "user", f"hot again {i}")  # hot and cold
        for i in range(5):
            r.execute_command("SEMCACHE.SET", "src:sc", fp32(1, i, 2, -i), f"answer {i}",
                              "META", json.dumps({"q": i}))
        r.execute_command("SEMCACHE.SET", "src:sc1", fp32(3, 4), "only")
        for i in range(5):  # int8 rows (QUANT int8)
            r.execute_command("SEMCACHE.SET", "src:sc8", fp32(1, -i, 0.5, i * i), f"int8 {i}",
                              "QUANT", "int8", "TAG", "user", f"u{i % 2}")
        r.set("plain", "value")
        self.sentinels = ["src:hot", "src:cold", "src:sc", "src:sc1", "src:sc8", "plain"]
        self.digests = self.digest_all(self.sentinels)
        self.frames = {}
        for key in ("src:hot", "src:cold", "src:sc", "src:sc1", "src:sc8"):
            value, version = split_dump(r.dump(key))
            prefix, strings = parse_module_value(value)
            self.frames[key] = (value, version, prefix, strings)
        self.hot_turns = [
            turn(seq, content, role, ts, meta, emb=[float(seq), 1.0, -2.0] if seq % 2 else None)
            for seq, ts, role, content, meta, *_ in r.execute_command(
                "CONV.HISTORY", "src:hot", "FORMAT", "resp")]
        self.cold_turns = [
            turn(seq, content, role, ts, meta)
            for seq, ts, role, content, meta, *_ in r.execute_command(
                "CONV.HISTORY", "src:cold", "TO", self.archived("src:cold"), "FORMAT", "resp")]
        self.cold_file = os.path.join(self.server.dir, "convcache-archive", "0",
                                      __import__("test_archive").archive_file_name("src:cold"))
        self.cold_bytes = open(self.cold_file, "rb").read()
        self.cold_segments = archive_segments(self.cold_bytes)
        assert self.cold_segments

    def digest_all(self, keys):
        p = self.r.pipeline(transaction=False)
        for k in keys:
            p.execute_command("DEBUG", "DIGEST-VALUE", k)
        return p.execute()

    # --- checks --------------------------------------------------------------------------

    def count(self, kind, accepted):
        a, f = self.counts.get(kind, (0, 0))
        self.counts[kind] = (a + accepted, f + (not accepted))

    def check_session(self, key, loaded=False):
        r = self.r
        if loaded and self.archived(key):
            # _LOAD never carries an archive (AOF replay reads this node's own files): a
            # payload that claims archived turns under a new key reads them as missing.
            try:
                json_of(r.execute_command("CONV.HISTORY", key, "FORMAT", "full"))
            except redis.ResponseError as e:
                assert "archive" in str(e), str(e)
            json_of(r.execute_command("CONV.HISTORY", key, "FROM", self.archived(key) + 10**12))
            return
        for cmd in (["CONV.HISTORY", key, "FORMAT", "full"], ["CONV.CTX", key, "FORMAT", "full"],
                    ["CONV.HISTORY", key, "FORMAT", "messages"]):
            v = json_of(r.execute_command(*cmd))
            assert isinstance(v, list), cmd
        json_of(r.execute_command("CONV.SEARCH", key, "TEXT", "turn fox", "RECENT", 1))
        assert r.execute_command("CONV.LEN", key) >= 0
        r.execute_command("CONV.INFO", key)

    def archived(self, key):
        info = self.r.execute_command("CONV.INFO", key)
        info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
        return info[b"archived"]

    def check_cache(self, key):
        r = self.r
        info = r.execute_command("SEMCACHE.INFO", key)
        info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
        dim = info[b"dimension"]
        if dim and dim <= 4096:
            got = r.execute_command("SEMCACHE.GET", key, fp32(*([1.0] * dim)), "MINSIM", -1,
                                    "COUNT", 100, "WITHMETA", "WITHSCORES")
            for meta in got[2::3]:
                if meta is not None:
                    assert isinstance(json.loads(meta), dict)
        r.execute_command("SEMCACHE.LEN", key)

    def check(self, key, kind_of_key, loaded=False):
        if kind_of_key == "conv":
            self.check_session(key, loaded)
        else:
            self.check_cache(key)

    def keep(self, key):
        self.accepted.append(key)
        if len(self.accepted) > KEEP_ACCEPTED:
            self.r.delete(self.accepted.pop(0))

    def after_case(self):
        assert self.r.ping()
        assert self.server.proc.poll() is None, self.server.log_tail()
        assert self.digest_all(self.sentinels) == self.digests

    # --- cases ---------------------------------------------------------------------------

    def new_key(self):
        self.n += 1
        return f"fz:{self.n}"

    def restore(self, kind, payload, what):
        key = self.new_key()
        try:
            self.r.restore(key, 0, payload)
        except redis.ResponseError:
            assert self.r.exists(key) == 0, (kind, payload)
            self.count(kind, False)
            return
        self.check(key, what)
        self.count(kind, True)
        self.keep(key)

    def dump_case(self, kind, src, how):
        value, version, _, _ = self.frames[src]
        body = how(self.rng, value + version)
        self.restore(kind, seal(body), "conv" if "conv" in kind else "cache")

    def frame_case(self, kind, src):
        """One inner string mutated, the frame around it right: the module's own decoder
        (and, for a cold session, the archive check) sees the damage."""
        value, version, prefix, strings = self.frames[src]
        strings = list(strings)
        i = self.rng.randrange(len(strings))
        if src == "src:cold" and i == 1 and self.rng.random() < 0.5:
            segs = archive_segments(strings[1])
            strings[1] = fix_archive_crcs(mutate(self.rng, strings[1]), segs)
        else:
            strings[i] = (truncate if self.rng.random() < 0.2 else mutate)(self.rng, strings[i])
        self.restore(kind, dump_of(prefix, strings, version), "conv" if "conv" in kind else "cache")

    def load_case(self, kind, src, command):
        """_LOAD of a mutated whole value, or a mutated continuation of a good one (which must
        then be refused as a whole or applied as a whole)."""
        _, _, _, strings = self.frames[src]
        strings = [s for s in strings if s[:4] != b"CCAR"]  # the session payload only
        key = self.new_key()
        what = "conv" if command == "CONV._LOAD" else "cache"
        if len(strings) > 1 and self.rng.random() < 0.5:
            # Semcache: the header, then its entry chunk mutated.
            self.r.execute_command(command, key, strings[0])
            before = self.r.execute_command("DEBUG", "DIGEST-VALUE", key)
            payload, first = mutate(self.rng, strings[1]), False
        elif src == "src:cold" and self.rng.random() < 0.4:
            # A cold session's header, then its archived turns (what AOF rewrite and slot
            # migration send), mutated.
            self.r.execute_command(command, key, strings[0])
            before = self.r.execute_command("DEBUG", "DIGEST-VALUE", key)
            payload, first = mutate(self.rng, archived_payload(self.cold_turns)), False
        elif command == "CONV._LOAD" and self.rng.random() < 0.5:
            # A session's first turns, then the rest as a continuation (as AOF rewrite
            # emits a big session), the continuation mutated.
            split = self.rng.randrange(len(self.hot_turns) + 1)
            self.r.execute_command(command, key, session_payload(
                self.hot_turns[:split], next_seq=len(self.hot_turns) + 1))
            before = self.r.execute_command("DEBUG", "DIGEST-VALUE", key)
            payload, first = mutate(self.rng, more_payload(self.hot_turns[split:])), False
        else:
            payload, first, before = mutate(self.rng, strings[0]), True, None
        try:
            self.r.execute_command(command, key, payload)
        except redis.ResponseError:
            if first:
                assert self.r.exists(key) == 0
            else:
                assert self.r.execute_command("DEBUG", "DIGEST-VALUE", key) == before
            self.count(kind, False)
            self.r.delete(key)
            return
        self.check(key, what, loaded=True)
        self.count(kind, True)
        self.keep(key)

    def archive_case(self, kind):
        data = self.cold_bytes
        roll = self.rng.random()
        if roll < 0.1:
            # A torn append after the archived turns: reads must not mind.
            data += bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 60)))
        elif roll < 0.25:
            data = truncate(self.rng, data)
        elif roll < 0.6:
            data = fix_archive_crcs(mutate(self.rng, data), self.cold_segments)
        else:
            data = mutate(self.rng, data)
        with open(self.cold_file, "wb") as f:
            f.write(data)
        ok = True
        for cmd in (["CONV.HISTORY", "src:cold", "FORMAT", "full"],
                    ["CONV.SEARCH", "src:cold", "TEXT", "fox", "RECENT", 0],
                    ["CONV.HISTORY", "src:cold", "FROM", 3, "TO", 5, "FORMAT", "full"]):
            try:
                json_of(self.r.execute_command(*cmd))
            except redis.ResponseError as e:
                assert "archive" in str(e), str(e)
                ok = False
        with open(self.cold_file, "wb") as f:
            f.write(self.cold_bytes)
        self.count(kind, ok)

    # --- run -----------------------------------------------------------------------------

    def kinds(self):
        return {
            "dump conv truncated": lambda: self.dump_case("dump conv truncated", self.rng.choice(["src:hot", "src:cold"]), truncate),
            "dump conv edited": lambda: self.dump_case("dump conv edited", self.rng.choice(["src:hot", "src:cold"]), mutate),
            "dump semcache truncated": lambda: self.dump_case("dump semcache truncated", self.rng.choice(["src:sc", "src:sc1", "src:sc8"]), truncate),
            "dump semcache edited": lambda: self.dump_case("dump semcache edited", self.rng.choice(["src:sc", "src:sc1", "src:sc8"]), mutate),
            "dump conv payload": lambda: self.frame_case("dump conv payload", self.rng.choice(["src:hot", "src:cold"])),
            "dump semcache payload": lambda: self.frame_case("dump semcache payload", self.rng.choice(["src:sc", "src:sc1", "src:sc8"])),
            "_LOAD conv": lambda: self.load_case("_LOAD conv", self.rng.choice(["src:hot", "src:cold"]), "CONV._LOAD"),
            "_LOAD semcache": lambda: self.load_case("_LOAD semcache", self.rng.choice(["src:sc", "src:sc1", "src:sc8"]), "SEMCACHE._LOAD"),
            "archive file": lambda: self.archive_case("archive file"),
        }

    def run(self):
        kinds = self.kinds()
        deadline = time.time() + SECONDS
        done = {k: 0 for k in kinds}
        while time.time() < deadline and min(done.values()) < CASES:
            for name, case in kinds.items():
                if done[name] >= CASES:
                    continue
                case()
                self.after_case()
                done[name] += 1
        # Every accepted value survives a save and load as it was.
        kept = [k for k in self.accepted if self.r.exists(k)]
        before = self.digest_all(kept + self.sentinels)
        self.r.execute_command("DEBUG", "RELOAD")
        assert self.digest_all(kept + self.sentinels) == before
        for k in kept:
            self.check(k, "cache" if self.r.type(k) == b"semcachev" else "conv", loaded=True)
        return done


def test_fuzz_decoders_through_the_server(kind, servers, capsys):
    server = servers(kind, module_args=COLD)
    fuzz = Fuzz(server)
    fuzz.setup()
    started = time.time()
    done = fuzz.run()
    took = time.time() - started
    assert server.proc.poll() is None
    total = sum(done.values())
    assert min(done.values()) >= min(CASES, 20), done  # every kind got real coverage
    with capsys.disabled():
        print(f"\nfuzz {kind} (seed {SEED}, {total} cases in {took:.1f} s):")
        for name, (acc, ref) in fuzz.counts.items():
            print(f"  {name:26} accepted {acc:6}  refused {ref:6}")
