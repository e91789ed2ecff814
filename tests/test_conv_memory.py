"""What sessions cost: MEMORY USAGE tells the truth (the INFO used_memory a server pays for
them, within 10%), on both servers and their allocators (Redis: jemalloc; this Valkey build:
the C library's malloc), for sessions filling up, sliding past their window, with metadata,
embeddings, their own roles."""
import struct
import time

import pytest

from conftest import MEMORY_ONLY

SESSIONS = 300


def used_memory(r):
    return r.info("memory")["used_memory"]


def fill(r, prefix, turns, window, content, extra=lambda i, t: []):
    p = r.pipeline(transaction=False)
    for i in range(SESSIONS):
        for t in range(turns):
            role = ("user", "assistant", "tool", f"agent-{i % 3}")[t % 4]
            p.execute_command("CONV.ADD", f"{prefix}:{i:05d}", role, content(i, t),
                              "WINDOW", window, *extra(i, t))
        p.execute()


def hot(r, key):
    info = r.execute_command("CONV.INFO", key)
    if isinstance(info, list):
        info = dict(zip(info[::2], info[1::2]))
    return info[b"hot"]


def total_usage(r, prefix):
    return sum(r.memory_usage(f"{prefix}:{i:05d}", samples=0) for i in range(SESSIONS))


CASES = {
    # 20 turns of ~200 bytes, the bench's shape.
    "chat": (20, 20, lambda i, t: f"{i} {t} " + "words of a chat turn " * 10, lambda i, t: []),
    # Contents of very different sizes, every few turns with META.
    "mixed": (13, 50, lambda i, t: "x" * ((i * 37 + t * 101) % 1500),
              lambda i, t: ["META", '{"k":%d}' % t] if t % 3 == 0 else []),
    # 384-dimension embeddings.
    "emb": (8, 8, lambda i, t: f"turn {t}",
            lambda i, t: ["EMB", struct.pack("<384f", *([0.5] * 384))]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_memory_usage_is_within_ten_percent_of_used_memory(servers, kind, case):
    turns, window, content, extra = CASES[case]
    r = servers(kind, module_args=MEMORY_ONLY).client()
    before = used_memory(r)
    fill(r, case, turns, window, content, extra)
    truth = used_memory(r) - before
    reported = total_usage(r, case)
    print(f"{kind}: MEMORY USAGE {reported}, used_memory delta {truth}")
    assert abs(reported - truth) <= 0.10 * truth, (reported, truth)


def test_memory_usage_follows_a_sliding_window(servers, kind):
    """Turns past the window go to the archive and leave memory; what stays is counted."""
    # No zstd dictionary: the server-wide memory it takes is no session's.
    args = ["window", "10", "archive-batch", "5", "archive-codec", "huffman",
            "archive-dict-min-bytes", "0"]
    r = servers(kind, module_args=args).client()
    before = used_memory(r)
    fill(r, "slide", 40, 10, lambda i, t: "y" * (100 + t * 7))
    deadline = time.time() + 30
    while any(hot(r, f"slide:{i:05d}") >= 15 for i in range(SESSIONS)):
        assert time.time() < deadline, "the overflow was not archived"
        time.sleep(0.2)
    time.sleep(0.5)  # the last completions' buffers are freed
    truth = used_memory(r) - before
    reported = total_usage(r, "slide")
    print(f"{kind}: MEMORY USAGE {reported}, used_memory delta {truth}")
    assert abs(reported - truth) <= 0.10 * truth, (reported, truth)
