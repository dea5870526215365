# syntax=docker/dockerfile:1
# The evalstream image: the single `evalstream` binary. It needs nothing else at run time: the
# Avro schemas (schemas/) and the topology (topology/topology.toml) are compiled into it.
#
#   docker build -t evalstream:dev .
#   docker run --rm evalstream:dev run totals          # KAFKA_BOOTSTRAP_SERVERS=... etc.
#
# Not built on our CI machines (no Docker engine there): deploy/check.sh lints this file with
# hadolint; see deploy/README.md for what is and is not verified.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ── build: the Rust toolchain and what librdkafka's build needs (rdkafka-sys compiles it from
# source with TLS and zlib: the same packages .ci/run installs).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# Unpinned on purpose: Debian's security updates within the release are what we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config make perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds (BuildKit).
# Stripped (`install -s`): the release profile keeps line tables for profiling (171 MB); the
# image needs none of it (22 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p evalstream \
    && install -s -m 0755 target/release/evalstream /usr/local/bin/evalstream

# ── runtime: Debian slim, not distroless: the binary links libssl3 and zlib (not in
# distroless/cc), and the nightly audit-verify CronJob uses the shell to compute yesterday's date.
FROM debian:${DEBIAN_RELEASE}-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 evalstream \
    && useradd --system --uid 10001 --gid evalstream --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin evalstream \
    && mkdir -p /var/lib/evalstream \
    && chown 10001:10001 /var/lib/evalstream
COPY --from=build /usr/local/bin/evalstream /usr/local/bin/evalstream
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /health, /ready, /metrics (ops_listen).
EXPOSE 8080
ENTRYPOINT ["evalstream"]
CMD ["--help"]
