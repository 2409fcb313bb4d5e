# syntax=docker/dockerfile:1
#
# The pod-webhook-tracker container image.
#
#   docker build -t ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
#
# Final stage: gcr.io/distroless/static-debian12:nonroot, holding a static musl build.
# The binary links no C library at all (musl, statically; TLS through rustls, no OpenSSL), so
# the image needs no libc - "static" is the smallest distroless variant. Over `scratch` it
# still brings what even a static program may want, maintained and scanned upstream: CA
# certificates (a kubeconfig may point at a publicly signed API server), an /etc/passwd
# entry for the `nonroot` user 65532, and tzdata; and, like scratch, no shell or package
# manager. With scratch these files would have to be assembled here by hand.

ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
# Set by BuildKit for the platform being built; a plain `docker build` builds the host's.
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Each platform builds natively for its own musl target (under emulation when it is not the
# builder's). ring compiles some C, with musl-gcc from musl-tools.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "no Rust target for architecture $arch" >&2; exit 1 ;; \
    esac; \
    rustup target add "$target"; \
    export "CC_$(echo "$target" | tr - _)=musl-gcc"; \
    cargo build --release --locked --target "$target"; \
    install -D "target/$target/release/pod-webhook-tracker" /out/pod-webhook-tracker

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="pod-webhook-tracker" \
      org.opencontainers.image.description="Counts running jobs in a pod label so that busy pods are not evicted" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pod-webhook-tracker /pod-webhook-tracker
COPY LICENSE /usr/share/doc/pod-webhook-tracker/LICENSE
# The distroless `nonroot` user; the manifests ask for the same with runAsUser: 65532.
USER 65532:65532
# 8080: the counting API (loopback only in a sidecar). 9090: --admin-address, by convention.
EXPOSE 8080 9090
# `docker run IMAGE` serves; `docker run IMAGE version` (or help, completion) runs the other
# subcommands. The Kubernetes manifests set command and args, starting with `serve`.
ENTRYPOINT ["/pod-webhook-tracker"]
CMD ["serve"]
