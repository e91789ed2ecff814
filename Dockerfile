# Valkey 9 with convcache preloaded.
#   docker build -t convcache .
#   docker run -p 6379:6379 -v convcache-data:/data convcache
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release

FROM valkey/valkey:9
COPY --from=build /src/target/release/libconvcache.so /usr/lib/valkey/libconvcache.so
# Archives live next to the RDB/AOF in /data (the server's dir), so one volume keeps it all.
CMD ["valkey-server", "--dir", "/data", "--appendonly", "yes", \
     "--loadmodule", "/usr/lib/valkey/libconvcache.so", "archive-dir", "convcache-archive"]
