"""Fixtures for the Python package's tests: real servers from the repository's
tests/harness.py (Valkey 9.1 and Redis 7.0 with the module loaded), no mocks."""
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests"))
from harness import SERVERS, Server, servers  # noqa: E402,F401


def pytest_generate_tests(metafunc):
    # Every test taking `kind` runs against both servers; `protocol` against RESP2 and RESP3.
    if "kind" in metafunc.fixturenames:
        metafunc.parametrize("kind", [k for k, path in SERVERS.items() if path])
    if "protocol" in metafunc.fixturenames:
        metafunc.parametrize("protocol", [2, 3])


@pytest.fixture
def server(kind, servers):
    return servers(kind, module_args=["window", "5", "archive-batch", "1000000"])


@pytest.fixture
def r(server, protocol):
    c = server.client(protocol=protocol)
    yield c
    c.close()


class PlainServer(Server):
    """The same server binary without the module (what lix-open-cache runs on, and what a
    client sees when the module is missing)."""

    def start(self, wait=True):
        import subprocess
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--logfile", os.path.join(self.dir, "server.log"), *self.extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self


@pytest.fixture
def plain_server():
    started = []

    def start(kind, extra=()):
        s = PlainServer(kind, extra=extra).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.cleanup()
