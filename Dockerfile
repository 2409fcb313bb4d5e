# syntax=docker/dockerfile:1
#
# The pod-webhook-tracker container image.
#
#   docker build -t ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
#
# Final stage: FROM scratch, holding a static musl build and nothing else. The binary links no C
# library at all (musl, statically; TLS through rustls, no OpenSSL), runs as the numeric user
# 65532 (the manifests ask for the same with runAsNonRoot), and needs no file of the image: in a
# cluster the API server's CA comes from the service account's ca.crt, and a kubeconfig that
# points at another server names its `certificate-authority` (the image has no CA bundle and no
# /etc/passwd; mount them if a publicly signed server is used without a CA in the kubeconfig).
# No shell, no package manager, nothing to scan but the binary.
#
# The release does not run this file: `make image-push` (.github/workflows/release.yml)
# assembles the same image with crane from the release's tarballs, and tests/release.rs holds
# its user, entrypoint, command, ports and paths equal to this final stage.

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

FROM scratch
LABEL org.opencontainers.image.title="pod-webhook-tracker" \
      org.opencontainers.image.description="Counts running jobs in a pod label so that busy pods are not evicted" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/pod-webhook-tracker/pod-webhook-tracker"
COPY --from=build /out/pod-webhook-tracker /pod-webhook-tracker
COPY LICENSE /usr/share/doc/pod-webhook-tracker/LICENSE
USER 65532:65532
# 8080: the counting API (loopback only in a sidecar). 9090: --admin-address, by convention.
EXPOSE 8080/tcp 9090/tcp
# `docker run IMAGE` serves; `docker run IMAGE version` (or help, completion) runs the other
# subcommands. The Kubernetes manifests set command and args, starting with `serve`.
ENTRYPOINT ["/pod-webhook-tracker"]
CMD ["serve"]
