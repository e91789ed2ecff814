"""The examples the manual (README.md and docs/*.md) shows run as written (only the port
changes) against real servers: Python (redis-py, redis.asyncio, valkey-glide) and Node (ioredis
and valkey-glide); what the other clients wrote reads back through convcache's typed API. Plus:
the package installs with pip into a clean virtualenv."""
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from convcache import Conversations, EmbeddingCache, SemanticCache

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EXAMPLES = os.path.join(REPO, "examples")


def readme():
    """The manual: README.md, then every docs/*.md (the examples are in docs/python.md)."""
    pages = [os.path.join(REPO, "README.md"),
             *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
    return "\n".join(open(p, encoding="utf-8").read() for p in pages)


def run_python_example(name, port):
    code = open(os.path.join(EXAMPLES, "python", name), encoding="utf-8").read()
    assert "port=6379" in code
    code = code.replace("port=6379", f"port={port}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("name", ["quickstart.py", "async_quickstart.py"])
def test_readme_python_examples_run(server, name):
    code = open(os.path.join(EXAMPLES, "python", name), encoding="utf-8").read()
    assert code.strip() in readme(), f"the manual must show examples/python/{name} as it is"
    out = run_python_example(name, server.port)
    r = server.client()
    if name == "quickstart.py":
        assert out.splitlines()[0] == "2 22°C and sunny."
        assert re.search(r"Hit\(id=1, response='22°C and sunny.', score=0.99999\d*, meta=\{'model': 'gpt-4o'\}\)", out)
        assert out.splitlines()[-1] == "None"
        assert [m.role for m in Conversations(r).history("chat:42")] == ["user", "assistant"]
        assert SemanticCache(r).info("sc:weather").entries == 1
        assert EmbeddingCache(r).get("url:https://example.com").shape == (384,)
    else:
        assert out.strip() == "['hello']"


def test_readme_first_semantic_cache_runs(server):
    # The README's block, its `# value` comments turned into assertions of what each line answers.
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", text[text.index("## A first semantic cache"):],
                     flags=re.S).group(1)
    assert "port=6379" in code
    lines, checked = [], 0
    for line in code.replace("port=6379", f"port={server.port}").splitlines():
        m = re.match(r"(r\.execute_command\(.*\))\s+# (b'[^']*'|None)", line)
        if m:
            line, checked = f"assert {m.group(1)} == {m.group(2)}, {m.group(1)!r}", checked + 1
        lines.append(line)
    assert checked == 2, code
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert SemanticCache(server.client()).len("sc:weather") == 1


def test_glide_python_example(server):
    code = open(os.path.join(EXAMPLES, "python", "glide_example.py"), encoding="utf-8").read()
    body = code[code.index("async def main"):code.index('\n\nif __name__')]
    assert body.strip() in readme(), "the manual must show the glide example as it is"
    env = {**os.environ, "PORT": str(server.port)}
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "python", "glide_example.py")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # glide's own logger writes to stdout too (e.g. "WARN glide_logger: ... Response wait took
    # 246 ms" on a loaded machine): the example's output is every other line.
    printed = [line for line in out.stdout.splitlines() if "glide_logger" not in line]
    assert "\n".join(printed).strip() == "ok seq=1"
    r = server.client()
    assert EmbeddingCache(r, vector_type="list").get("glide:emb") == [0.25, -1.5, 3.0]
    assert Conversations(r).ctx("glide:chat")[0].meta == {"client": "glide"}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_example(server):
    node_dir = os.path.join(EXAMPLES, "node")
    assert os.path.isdir(os.path.join(node_dir, "node_modules", "ioredis")), \
        "run `npm install` in examples/node (make test does when node is present)"
    js = open(os.path.join(node_dir, "example.js"), encoding="utf-8").read()
    for fn in ("withIoredis", "withGlide"):
        body = js[js.index(f"async function {fn}"):]
        body = body[:body.index("\n}\n") + 2]
        assert body in readme(), f"the manual must show {fn} as it is"
    out = subprocess.run(["node", "example.js"], cwd=node_dir, capture_output=True, text=True,
                         env={**os.environ, "PORT": str(server.port)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok ioredis seq=1 glide seq=1"
    r = server.client()
    emb = EmbeddingCache(r, vector_type="list")
    assert emb.get("node:emb:ioredis") == [0.25, -1.5, 3.0]
    assert emb.get("node:emb:glide") == [1.0, 2.0, 3.5]
    assert [h.response for h in SemanticCache(r).lookup("node:sc", np.array([1, 1, 0]), count=2,
                                                         min_sim=0.5)] == ["Rome", "Paris"]
    assert Conversations(r).ctx("node:chat")[0].meta == {"client": "ioredis"}


def test_pip_install_into_a_clean_venv(tmp_path):
    """`pip install ./clients/python` on a fresh virtualenv (dependencies from the package
    index): the package imports, needs only redis, and names the extras it lacks."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # A copy of the source: building in place would leave build/ in the repository.
    src = shutil.copytree(os.path.join(REPO, "clients", "python"), tmp_path / "src",
                          ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    out = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    check = (
        "import importlib.metadata as md, convcache\n"
        "from convcache import Conversations, SemanticCache, EmbeddingCache\n"
        "print(md.version('convcache'), [q for q in md.requires('convcache') if 'extra' not in q])\n"
        "import numpy\n"
    )
    out = subprocess.run([py, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0.1.0 ['redis>=5']", out
    assert "No module named 'numpy'" in out.stderr  # numpy is optional
    for mod, extra in (("convcache.lix", "convcache[lix]"), ("convcache.langchain", "convcache[langchain]"),
                       ("convcache.langgraph", "convcache[langgraph]")):
        out = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and extra in out.stderr, out.stderr
