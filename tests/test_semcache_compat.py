"""Semantic-cache values written by older releases stay readable: tests/fixtures/semcache_v2
holds an RDB per server and the DUMP payloads of two buckets written by the module of main
96b6692 (semcache codec version 2: tags, prompts, renewals, LRU eviction, an HNSW index);
see tests/fixtures/semcache_v2/make_fixtures.py. They load into today's module and answer
exactly as they did."""
import json
import os
import shutil
import sys
import tempfile

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "semcache_v2")
EXPECTED = json.load(open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8"))
sys.path.insert(0, FIXTURES)
from make_fixtures import ARGS, answers, answers_filter, info_of, queries, vectors  # noqa: E402

VECS = vectors()
QUERIES = queries(VECS)


def check_buckets(r):
    assert answers(r, "sc:small", QUERIES[:4]) == EXPECTED["small"]
    assert answers(r, "sc:indexed", QUERIES) == EXPECTED["indexed"]
    assert r.execute_command("SEMCACHE.GET", "sc:small", VECS[0].tobytes(),
                             "PROMPT", "prompt 4").decode() == EXPECTED["prompt"]
    assert answers_filter(r, QUERIES[:4]) == EXPECTED["filter"]
    assert [r.execute_command("SEMCACHE.LEN", k)
            for k in ("sc:small", "sc:indexed")] == EXPECTED["lens"]
    assert [info_of(r, k)[b"next_id"] for k in ("sc:small", "sc:indexed")] == EXPECTED["next_ids"]
    info = info_of(r, "sc:indexed")
    assert (info[b"index"], info[b"index_pending"], info[b"quant"]) == (b"hnsw", 0, b"float32")
    assert info_of(r, "sc:small")[b"evict"] == b"lru"


def test_v2_rdb_loads_and_answers_as_before(servers, kind):
    d = tempfile.mkdtemp(prefix=f"convcache-semv2-{kind}-")
    shutil.copy(os.path.join(FIXTURES, kind, "dump.rdb"), os.path.join(d, "dump.rdb"))
    s = servers(kind, module_args=ARGS, workdir=d)
    r = s.client(protocol=2)
    check_buckets(r)
    # New entries go on after the old ids, and the value saves in today's encoding.
    new_id = r.execute_command("SEMCACHE.SET", "sc:indexed", VECS[5].tobytes(), "new")
    assert new_id == EXPECTED["next_ids"][1]
    r.execute_command("DEBUG", "RELOAD")
    assert r.execute_command("SEMCACHE.GET", "sc:indexed", VECS[5].tobytes(), "MINSIM", 0.999,
                             "WITHIDS")[0] == new_id


def test_v2_dump_payloads_restore(servers, kind):
    dumps = json.load(open(os.path.join(FIXTURES, kind, "dumps.json")))
    s = servers(kind, module_args=ARGS)
    r = s.client(protocol=2)
    for key, payload in dumps.items():
        assert r.restore(key, 0, bytes.fromhex(payload)) in (True, b"OK")
    check_buckets(r)
