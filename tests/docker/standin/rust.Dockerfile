# Stand-in for rust:1-bookworm, for `make docker-test` on a machine without Docker Hub: the
# Debian bookworm rootfs (mmdebstrap) with this machine's Rust toolchain copied in, laid out
# as the official image lays it out (rustup in /usr/local/cargo, toolchains in /usr/local/rustup).
# The context is made by tests/docker/check.py: rustup/, cargo/bin/, and local-ca/, the local
# CA certificates this machine trusts (/usr/local/share/ca-certificates), which cargo's TLS
# connections from here need as the host's own do.
ARG BASE
FROM ${BASE}
COPY local-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN cargo --version && rustc --version
