"""Starts real valkey-server / redis-server processes with the module loaded, on loopback
ports the test picks, and stops them by PID. No mocks."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import redis

SERVERS = {
    "valkey": os.environ.get("VALKEY_SERVER", ""),
    "redis": os.environ.get("REDIS_SERVER", shutil.which("redis-server") or ""),
}
MODULE_SO = os.environ.get(
    "MODULE_SO",
    os.path.join(os.path.dirname(__file__), "..", "target", "release", "libconvcache.so"),
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process. `module_args` go after the .so on --loadmodule."""

    def __init__(self, kind, module_args=(), extra=(), workdir=None, port=None):
        self.kind = kind
        self.binary = SERVERS[kind]
        self.module_args = list(module_args)
        self.extra = list(extra)
        self.dir = workdir or tempfile.mkdtemp(prefix=f"convcache-{kind}-")
        self.port = port or free_port()
        self.proc = None

    def start(self, wait=True):
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--enable-debug-command", "yes",
            "--loglevel", "notice",
            "--logfile", os.path.join(self.dir, "server.log"),
            "--loadmodule", os.path.abspath(MODULE_SO), *self.module_args,
            *self.extra,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.log_tail()}")
            try:
                if self.client().ping():
                    # Loading an RDB/AOF answers LOADING until done.
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready:\n{self.log_tail()}")

    def client(self, **kw):
        return redis.Redis(host="127.0.0.1", port=self.port, **{"socket_timeout": 30, **kw})

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        self.start()
        return self

    def cleanup(self):
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def servers():
    """`servers(kind, module_args, extra)` starts a server for one test; every server it
    started is stopped (by PID) and its directory removed after the test. Shared by the
    conftest.py files that import it."""
    started = []

    def start(kind, module_args=(), extra=(), **kw):
        s = Server(kind, module_args=module_args, extra=extra, **kw).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.cleanup()


def wait_for(pred, timeout=10, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def replica_of(start, primary, module_args=None):
    """A replica of `primary` of the same kind, started through the `servers` fixture, synced.
    `propagation-error-behavior panic` makes any divergence crash it loudly. `module_args`:
    the replica's own module config (default: the primary's)."""
    rep = start(primary.kind,
                module_args=primary.module_args if module_args is None else module_args,
                extra=["--replicaof", "127.0.0.1", str(primary.port),
                       "--propagation-error-behavior", "panic"])
    wait_for(lambda: rep.client().info("replication").get("master_link_status") == "up",
             timeout=20, what="replica link up")
    return rep


def wait_replica_caught_up(primary, replica, timeout=10):
    """Until the replica has applied everything the primary has sent."""
    def done():
        off = primary.client().info("replication")["master_repl_offset"]
        return replica.client().info("replication").get("slave_repl_offset", -1) >= off
    wait_for(done, timeout=timeout, what="replica offset")
