"""Archives and RDBs written by older releases stay readable: tests/fixtures/v1 holds an RDB
(hot, mixed and cold sessions) and the archive files the module of main fd408e9 wrote
(CCH1 Huffman segments, RDB type encoding 2); see tests/fixtures/v1/make_fixtures.py."""
import json
import os
import shutil
import struct
import tempfile

import pytest

from test_archive import ARCHIVE_DIR, cold_args, conv_info, history, seqs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v1")
EXPECTED = json.load(open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8"))


# The fixtures' sessions keep the last-access time they had when they were made; idle
# archival must not move them while the test reads them, however old the fixture is.
NEVER_IDLE = 10 * 365 * 86400


def with_estimates(turns):
    """Turns stored before token counts existed read back with the `estimate` count."""
    return [{**t, "tokens": -(-len(t["content"].encode()) // 4)} for t in turns]


def start_from_fixture(servers, kind, with_files, fixtures=FIXTURES, **args):
    args.setdefault("idle", NEVER_IDLE)
    d = tempfile.mkdtemp(prefix=f"convcache-fixture-{kind}-")
    shutil.copy(os.path.join(fixtures, kind, "dump.rdb"), os.path.join(d, "dump.rdb"))
    if with_files:
        shutil.copytree(os.path.join(fixtures, kind, ARCHIVE_DIR), os.path.join(d, ARCHIVE_DIR))
    return servers(kind, module_args=cold_args(batch=2, **args), workdir=d)


@pytest.mark.parametrize("with_files", [True, False], ids=["rdb+files", "rdb-only"])
def test_v1_rdb_and_archive_files_read_back_exactly(servers, kind, with_files):
    s = start_from_fixture(servers, kind, with_files)
    r = s.client()
    assert sorted(k.decode() for k in r.keys("*")) == sorted(EXPECTED)
    assert (conv_info(r, "cold")["hot"], conv_info(r, "cold")["archived"]) == (0, 12)
    assert (conv_info(r, "mixed")["hot"], conv_info(r, "mixed")["archived"]) == (5, 9)
    for key, want in EXPECTED.items():
        assert history(r, key) == with_estimates(want), key
    # Embeddings came back too: the exact vector of turn 4 finds turn 4 first.
    got = r.execute_command("CONV.SEARCH", "cold", "EMB", struct.pack("<3f", 4, 1.0, -2.5),
                            "K", 1, "RECENT", 0)
    assert [m["seq"] for m in json.loads(got)["relevant"]] == [4]
    # An old file takes new turns: appending after v1 segments keeps the whole history.
    r.execute_command("CONV.ADD", "cold", "user", "new turn", "TS", 1_800_000_000_000)
    assert r.execute_command("CONV.FLUSH", "cold") == 1
    assert seqs(history(r, "cold")) == list(range(1, 14))
    assert history(r, "cold")[:12] == with_estimates(EXPECTED["cold"])
    r.save()
    s.restart()
    assert history(s.client(), "cold")[:12] == with_estimates(EXPECTED["cold"])


FIXTURES_V3 = os.path.join(os.path.dirname(__file__), "fixtures", "v3")
EXPECTED_V3 = json.load(open(os.path.join(FIXTURES_V3, "expected.json"), encoding="utf-8"))


@pytest.mark.parametrize("with_files", [True, False], ids=["rdb+files", "rdb-only"])
def test_v3_rdb_and_archive_files_load_with_estimated_counts(servers, kind, with_files):
    """tests/fixtures/v3: what main 96b6692 wrote (session codec 3, SEG2 zstd and SEG1 Huffman
    segments, no token counts or tool fields) loads with tokenizer `estimate`, estimated
    counts, the archived turns' tokens counted from the files, and takes new turns."""
    s = start_from_fixture(servers, kind, with_files, fixtures=FIXTURES_V3)
    r = s.client()
    assert sorted(k.decode() for k in r.keys("*")) == sorted(EXPECTED_V3)
    for key, want in EXPECTED_V3.items():
        want = with_estimates(want)
        assert history(r, key) == want, key
        info = conv_info(r, key)
        assert info["tokenizer"] == b"estimate"
        if with_files or info["archived"] == 0:
            assert info["tokens"] == sum(t["tokens"] for t in want), key
    # A v3 session takes a new turn with a tool field, and keeps its tokenizer.
    r.execute_command("CONV.ADD", "cold_huff", "tool", "ok", "TOOL_CALL_ID", "c1")
    with pytest.raises(Exception, match="differs from the session's tokenizer estimate"):
        r.execute_command("CONV.ADD", "hot", "user", "x", "TOKENIZER", "cl100k_base")
    r.save()
    s.restart()
    r = s.client()
    got = history(r, "cold_huff")
    assert got[:-1] == with_estimates(EXPECTED_V3["cold_huff"])
    assert (got[-1]["tool_call_id"], got[-1]["tokens"]) == ("c1", 1)
