# syntax=docker/dockerfile:1

# percache: the server image. It also carries the mock upstream (`mock-upstream`)
# so that compose.yaml can run the mock from the same image.
#
#   docker build -t percache .
#   docker run --rm -p 8080:8080 percache
#
# The final stage is FROM scratch: the binaries, the libraries they load, a CA
# bundle and a passwd file, and nothing else (no shell, no package manager).
# bash scripts/container-check.sh builds it and runs it against Redis.
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


# The runtime's files, gathered from Debian bookworm (the builder's glibc)
# into /rootfs: the shared libraries the two binaries load, found by ldd so a
# new one cannot be forgotten (the build fails on a missing one); Debian's CA
# bundle for https upstreams and rediss://; a passwd and group naming uid
# 10001; /tmp. Nothing else of Debian (no shell, no apt) reaches the image.
FROM debian:bookworm-slim AS rootfs
COPY --from=builder /usr/local/bin/percache /usr/local/bin/mock-upstream /usr/local/bin/
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp; \
    chmod 1777 /rootfs/tmp; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    cp /etc/nsswitch.conf /rootfs/etc/; \
    for bin in /usr/local/bin/percache /usr/local/bin/mock-upstream; do \
        if ldd "$bin" | grep 'not found'; then exit 1; fi; \
        ldd "$bin" | grep -o '/[^ ]*' | xargs cp --parents -L -t /rootfs; \
    done; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\npercache:x:10001:10001:percache:/app:/sbin/nologin\n' \
        > /rootfs/etc/passwd; \
    printf 'root:x:0:\npercache:x:10001:\n' > /rootfs/etc/group


# The image: no shell, no package manager, nothing but the two binaries, the
# libraries they load and the files above (a distroless-style image).
FROM scratch AS runtime
COPY --from=rootfs /rootfs/ /
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

# The binary probes itself (`percache healthcheck`): no curl, no shell needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["percache", "healthcheck", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["percache"]
