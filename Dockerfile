# syntax=docker/dockerfile:1

# percache: the server image. It also carries the mock upstream (`mock-upstream`)
# so that compose.yaml can run the mock from the same image.
#
#   docker build -t percache .
#   docker run --rm -p 8080:8080 percache
#
# tests/container.rs checks this file against the repository (COPY sources,
# binary names, ports, health route, env var names, non-root user).

# Pin the toolchain with e.g. --build-arg RUST_VERSION=1.95
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# What cargo needs to build the two binaries: the workspace manifest and lock
# file, every member (the root package, mock_upstream/ and testkit/, the
# test-support crate cargo must see to load the workspace), assets/ (which
# src/routes/assets.rs embeds with include_bytes!), widgets.example.toml, and benches/, because
# Cargo.toml declares a [[bench]] target and cargo refuses a manifest whose
# declared targets are missing. tests/ holds only auto-discovered targets, which
# cargo does not need to see; a [[test]] declared in Cargo.toml would need it.
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY mock_upstream/ mock_upstream/
COPY testkit/ testkit/
COPY assets/ assets/
COPY benches/ benches/
# The built-in widgets file is src/widget/builtin.toml; this copy of it is read
# by a unit test (which checks the two are identical).
COPY widgets.example.toml ./

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p percache -p mock_upstream \
    && install -m 0755 target/release/percache target/release/mock-upstream /usr/local/bin/


FROM debian:bookworm-slim AS runtime

# ca-certificates for https upstreams (the HEALTHCHECK is the binary itself).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 percache \
    && useradd --system --uid 10001 --gid percache --home-dir /app \
       --no-create-home --shell /usr/sbin/nologin percache

COPY --from=builder /usr/local/bin/percache /usr/local/bin/mock-upstream /usr/local/bin/

WORKDIR /app
# The binary embeds these; they are shipped beside it for reference, with the
# example widgets file to start a --widgets file from.
COPY assets/ /app/assets/
COPY widgets.example.toml /app/

ENV PERCACHE_BIND=0.0.0.0:8080 \
    LOG_FORMAT=json

USER 10001:10001
EXPOSE 8080

# The binary probes itself (`percache healthcheck`): no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["percache", "healthcheck", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["percache"]
