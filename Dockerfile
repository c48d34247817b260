# syntax=docker/dockerfile:1
# keyward: build with cargo, ship only the binary on debian slim.

FROM rust:1-bookworm AS build
WORKDIR /src
# The source is bind-mounted (read-only), not COPYed: nothing of the build
# context (and never ./secrets) ends up in an image layer. The cargo registry
# and target dir are BuildKit cache mounts, so rebuilds only recompile what
# changed, dependencies included.
RUN --mount=type=bind,target=/src,readonly \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cargo-target \
    CARGO_TARGET_DIR=/cargo-target cargo build --release --locked --bin keyward \
 && install -m 0755 /cargo-target/release/keyward /usr/local/bin/keyward

FROM debian:bookworm-slim
# ca-certificates: for rediss:// (TLS) Redis URLs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 keyward \
 && useradd --uid 10001 --gid keyward --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin keyward
COPY --from=build /usr/local/bin/keyward /usr/local/bin/keyward
# Numeric, so orchestrators can verify runAsNonRoot.
USER 10001:10001
ENV KEYWARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# No curl in the image: the binary checks its own /health (at KEYWARD_LISTEN;
# over HTTPS when KEYWARD_TLS_CERT_FILE is set; an mTLS listener also needs
# KEYWARD_URL_CERT_FILE and KEYWARD_URL_KEY_FILE, a client certificate from
# KEYWARD_TLS_CLIENT_CA_FILE's CA, in the container's environment).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["keyward", "healthcheck"]
ENTRYPOINT ["keyward"]
CMD ["serve"]
