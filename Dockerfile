# Valkey 9.1 with convcache preloaded (docs/docker.md).
#   docker build -t convcache .
#   docker run -d --name convcache -p 6379:6379 -v convcache-data:/data convcache
#
# The base images are build arguments so that `make docker-test` can build this same file on a
# machine without Docker Hub, from local stand-ins of the same shape (tests/docker/standin/).
# Works with BuildKit and with the legacy builder (no RUN --mount, no COPY --chmod).
ARG RUST_IMAGE=rust:1-bookworm
ARG VALKEY_IMAGE=valkey/valkey:9.1

FROM ${RUST_IMAGE} AS build
# bindgen (redis-module's build script) needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole build context (what .dockerignore leaves): the crate, its workspace members and
# whatever else the build reads, without listing them here.
COPY . .
# The repository's release profile keeps line tables for profiling; the image's module has no
# debug info (85 MB -> 53 MB; what stays is mostly the tokenizer vocabularies).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/libconvcache.so /out/libconvcache.so

FROM ${VALKEY_IMAGE}
COPY --from=build /out/libconvcache.so /usr/local/lib/valkey/libconvcache.so
COPY docker/convcache.conf /etc/valkey/convcache.conf
COPY docker/entrypoint.sh /usr/local/bin/convcache-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/convcache-healthcheck
# /data holds the RDB, the AOF and the module's archives; /run/valkey the server's unix socket
# (the health check's way in, whatever port or bind the server was given).
RUN chmod 0755 /usr/local/bin/convcache-entrypoint /usr/local/bin/convcache-healthcheck \
 && chmod 0644 /etc/valkey/convcache.conf \
 && mkdir -p /data /run/valkey \
 && chown valkey:valkey /data /run/valkey \
 && chmod 1777 /run/valkey \
 && valkey-server --version
WORKDIR /data
VOLUME /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD ["convcache-healthcheck"]
# Starts as root only to hand /data to the valkey user, then runs the server as valkey.
ENTRYPOINT ["convcache-entrypoint"]
# Server arguments after the image name come after the config file and so win:
#   docker run ... convcache --convcache.window 30 --maxmemory 2gb
CMD ["valkey-server", "/etc/valkey/convcache.conf"]
