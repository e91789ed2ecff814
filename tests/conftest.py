import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import SERVERS, Server, servers  # noqa: E402,F401


def pytest_generate_tests(metafunc):
    # Every test taking `kind` runs against both servers.
    if "kind" in metafunc.fixturenames:
        kinds = [k for k, path in SERVERS.items() if path]
        metafunc.parametrize("kind", kinds)


# In-memory behaviour: the archiver stays out of the way (no overflow batch is ever reached).
MEMORY_ONLY = ["window", "5", "archive-batch", "1000000"]


@pytest.fixture
def server(kind, servers):
    return servers(kind, module_args=MEMORY_ONLY)


@pytest.fixture
def r(server):
    return server.client()
