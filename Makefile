# pod-webhook-tracker: build, package and release.
#
#   make binary      build for this machine; copies the binary to bin/pod-webhook-tracker
#   make build       binary + dist/pod-webhook-tracker-VERSION-OS-ARCH.tar.gz (binary, LICENSE,
#                    THIRD-PARTY-LICENSES) + the container image if docker or podman works
#   make build-all   static (musl) tarballs for linux/amd64 and linux/arm64: builds those this
#                    machine has a toolchain for and names what is missing for the others
#                    (REQUIRE_ALL=1: a missing one is an error)
#   make release     check-version + every architecture + SBOMs + checksums (what the release
#                    workflow publishes, .github/workflows/release.yml)
#   make sbom        an SPDX SBOM (syft) of each built binary: dist/...-OS-ARCH.spdx.json
#   make checksums   dist/pod-webhook-tracker-VERSION-sha256sums.txt over every release file
#   make image-push  the multi-arch image, FROM scratch, assembled from the built binaries with
#                    crane and pushed to IMAGE:VERSION (one manifest per built architecture)
#   make chart       package charts/pod-webhook-tracker (version = Cargo.toml's, appVersion =
#                    VERSION) into dist/; make chart-push pushes it to CHART_REPO (oci://...)
#   make check-version  VERSION, Cargo.toml and the chart agree (the release workflow's first step)
#   make print-image the image reference IMAGE:VERSION (the injector's default --sidecar-image)
#   make test        every test (the README's test command): first what the tests need that a
#                    Rust toolchain lacks (test-prerequisites), then cargo test --workspace --locked
#   make test-prerequisites  the test-time tools built from their Go modules (crates/testenv/tools.sh,
#                    cached outside the work tree), the musl Rust target, Debian's musl-tools
#                    and shellcheck (installed as root with apt-get, else named)
#   make bench       the benchmark (docs/benchmarks.md) against the static musl build that the
#                    image and tarballs ship; BENCH_ARGS passes options, e.g. BENCH_ARGS=--check
#   make clean       remove bin/, dist/ and the local container image (not target/: cargo clean)
#
# Variables: VERSION (default v + Cargo.toml's version), IMAGE, CARGO, CARGO_BUILD, and for
# build-all CC_amd64 / CC_arm64 (C compilers for ring's C code; empty = do not set). For the
# release steps: CRANE, SYFT, HELM (the tools; tests build them from their Go modules with
# crates/testenv/tools.sh), CHART_REPO, CRANE_FLAGS / HELM_PUSH_FLAGS (e.g. --insecure /
# --plain-http for a registry on loopback), SOURCE_DATE_EPOCH (the image's file times).

SHELL := /bin/sh
.DEFAULT_GOAL := build

NAME := pod-webhook-tracker
CARGO ?= cargo
# e.g. CARGO_BUILD="cargo zigbuild" for cross builds through zig.
CARGO_BUILD ?= $(CARGO) build
CARGO_VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
RUST_VERSION := $(shell sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
VERSION ?= v$(CARGO_VERSION)
# A release tag names it: v1.2.3 (VERSION=1.2.3 means the same).
override VERSION := v$(patsubst v%,%,$(VERSION))

OS := $(shell uname -s | tr '[:upper:]' '[:lower:]')
ARCH := $(shell uname -m | sed -e 's/^x86_64$$/amd64/' -e 's/^aarch64$$/arm64/')
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')

# The image's repository: the injector's default --sidecar-image (src/config/inject.rs, with the
# tag v + Cargo.toml's version), which the manifests and the chart use too; tests/release.rs
# holds them all equal.
IMAGE ?= ghcr.io/pod-webhook-tracker/pod-webhook-tracker
CHART_DIR := charts/pod-webhook-tracker
CHART_VERSION := $(patsubst v%,%,$(VERSION))
CHART_REPO ?= oci://ghcr.io/pod-webhook-tracker/charts
CRANE ?= crane
SYFT ?= syft
HELM ?= helm
CRANE_FLAGS ?=
HELM_PUSH_FLAGS ?=
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# build-all: the Rust target of each architecture, and the C compiler ring needs for it
# (musl-gcc from musl-tools natively; a musl cross compiler for the other architecture).
ARCHES := amd64 arm64
RUST_TARGET_amd64 := x86_64-unknown-linux-musl
RUST_TARGET_arm64 := aarch64-unknown-linux-musl
ifeq ($(ARCH),arm64)
CC_amd64 ?= x86_64-linux-musl-gcc
CC_arm64 ?= musl-gcc
else
CC_amd64 ?= musl-gcc
CC_arm64 ?= aarch64-linux-musl-gcc
endif

DIST := dist
TARBALL = $(DIST)/$(NAME)-$(VERSION)-$(1).tar.gz

.PHONY: help binary build tarball image build-all check-targets release clean bench sbom checksums \
	test test-prerequisites \
	image-push chart chart-push check-version print-image print-chart

test: test-prerequisites
	$(CARGO) test --workspace --locked

# What the tests run besides the Rust toolchain: a real kube-apiserver, etcd, kubectl, kustomize,
# helm, promtool, actionlint, crane and syft (built once from their Go modules; Go 1.26 needed),
# and the static musl build of tests/release.rs. Each step names what is missing if it fails.
test-prerequisites:
	crates/testenv/tools.sh --all >/dev/null
	@if command -v rustup >/dev/null 2>&1; then rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true; fi
	@missing=""; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's$$missing (the static release build; actionlint's check of the workflows' scripts)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	if ! command -v musl-gcc >/dev/null 2>&1; then \
		echo "musl-gcc is missing: install Debian's musl-tools (tests/release.rs builds the static release binary)" >&2; exit 1; \
	fi; \
	command -v shellcheck >/dev/null 2>&1 || echo "note: without shellcheck, actionlint does not check the workflows' run: scripts" >&2

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

binary:
	$(CARGO) build --release --locked
	@mkdir -p bin
	cp "$(TARGET_DIR)/release/$(NAME)" bin/$(NAME)
	@echo "built bin/$(NAME) ($$(bin/$(NAME) version))"

build: binary tarball image

tarball: binary
	$(call package,bin/$(NAME),$(HOST_TRIPLE),$(OS)-$(ARCH))

# The image, when a container engine is installed AND answers (`docker info`): a docker
# client without a reachable daemon is skipped, not an error.
image:
	@engine=""; \
	if command -v timeout >/dev/null 2>&1; then limit="timeout 30"; else limit=""; fi; \
	for candidate in docker podman; do \
		if command -v $$candidate >/dev/null 2>&1 && $$limit $$candidate info >/dev/null 2>&1; then \
			engine=$$candidate; break; \
		fi; \
	done; \
	if [ -z "$$engine" ]; then \
		echo "container image: skipped (no working docker or podman: not installed, or 'docker info' / 'podman info' failed)"; \
	else \
		echo "$$engine build -t $(IMAGE):$(VERSION) ."; \
		$$engine build --build-arg RUST_VERSION=$(RUST_VERSION) \
			--label org.opencontainers.image.version=$(VERSION) \
			-t $(IMAGE):$(VERSION) . ; \
	fi

# What architecture $(1) lacks to be built here (empty: nothing), as one line per problem.
define missing_for
$(shell installed=$$(rustup target list --installed 2>/dev/null) || { echo "rustup is not available to list the installed Rust targets (needs $(RUST_TARGET_$(1)))"; exit 0; }; \
	printf '%s\n' "$$installed" | grep -qx "$(RUST_TARGET_$(1))" || echo "the Rust target $(RUST_TARGET_$(1)) is not installed: rustup target add $(RUST_TARGET_$(1));"; \
	if [ -n "$(CC_$(1))" ] && ! command -v "$(CC_$(1))" >/dev/null 2>&1; then \
		echo "the C compiler $(CC_$(1)) is not found (ring compiles C for each target): $(if $(filter $(1),$(ARCH)),apt-get install musl-tools,a musl cross toolchain for $(1)$(comma) or CARGO_BUILD='cargo zigbuild' CC_$(1)=);"; \
	fi)
endef
comma := ,

# Kept for scripts that called it: fails naming what any architecture lacks.
check-targets:
	@status=0; $(foreach a,$(ARCHES),$(if $(strip $(call missing_for,$(a))),echo "linux/$(a): $(strip $(call missing_for,$(a)))"; status=1;)) exit $$status

# Builds every architecture this machine can build and names what the others lack. With
# REQUIRE_ALL=1 (make release) an architecture that cannot be built is an error.
build-all:
	@mkdir -p $(DIST)
	@set -e; built=""; skipped=""; \
	$(foreach a,$(ARCHES),\
	if [ -z "$(strip $(call missing_for,$(a)))" ]; then \
		$(MAKE) --no-print-directory build-linux-$(a); built="$$built linux/$(a)"; \
	else \
		echo "build-all: cannot build linux/$(a) here: $(strip $(call missing_for,$(a)))"; skipped="$$skipped linux/$(a)"; \
	fi;) \
	echo "build-all: built:$${built:- nothing}; not built:$${skipped:- nothing}"; \
	if [ -n "$$skipped" ] && [ "$(REQUIRE_ALL)" = 1 ]; then \
		echo "build-all: REQUIRE_ALL=1 and$$skipped could not be built"; exit 1; \
	fi

# One static binary and its tarball per architecture.
build-linux-%:
	$(if $(RUST_TARGET_$*),,$(error no Rust target known for $*))
	$(if $(CC_$*),CC_$(subst -,_,$(RUST_TARGET_$*))=$(CC_$*) $(if $(filter $*,$(ARCH)),,CARGO_TARGET_$(shell echo $(RUST_TARGET_$*) | tr 'a-z-' 'A-Z_')_LINKER=$(CC_$*))) \
		$(CARGO_BUILD) --release --locked --target $(RUST_TARGET_$*)
	$(call package,$(TARGET_DIR)/$(RUST_TARGET_$*)/release/$(NAME),$(RUST_TARGET_$*),linux-$*)

# The footprint target is about the binary that runs in every pod: the static build.
bench:
	$(if $(RUST_TARGET_$(ARCH)),,$(error no static Rust target known for $(ARCH)))
	@rustup target list --installed 2>/dev/null | grep -qx "$(RUST_TARGET_$(ARCH))" || { \
		echo "make bench needs the Rust target $(RUST_TARGET_$(ARCH)): rustup target add $(RUST_TARGET_$(ARCH))"; \
		echo "(and musl-gcc, from the musl-tools package, for ring's C code)"; exit 1; }
	$(if $(CC_$(ARCH)),CC_$(subst -,_,$(RUST_TARGET_$(ARCH)))=$(CC_$(ARCH))) \
		$(CARGO) build --release --locked --target $(RUST_TARGET_$(ARCH))
	$(CARGO) run --release --locked --example bench -- \
		--binary $(TARGET_DIR)/$(RUST_TARGET_$(ARCH))/release/$(NAME) $(BENCH_ARGS)

# The release's files in dist/: every architecture (or fail), their SBOMs, the chart, the
# checksums. The workflow then pushes the image and the chart and signs them.
release: check-version
	@$(MAKE) --no-print-directory build-all REQUIRE_ALL=1
	@$(MAKE) --no-print-directory sbom chart
	@$(MAKE) --no-print-directory checksums
	@echo "release $(VERSION):"; cd $(DIST) && cat $(NAME)-$(VERSION)-sha256sums.txt

# VERSION is what the binary says it is (Cargo.toml) and what the chart says (Chart.yaml's
# version without the v, appVersion with it): the injector's default image is the tag v +
# Cargo.toml's version, so a release under another tag would point pods at an image that
# does not exist.
check-version:
	@status=0; \
	if [ "$(VERSION)" != "v$(CARGO_VERSION)" ]; then \
		echo "check-version: VERSION=$(VERSION) but Cargo.toml's version is $(CARGO_VERSION): tag v$(CARGO_VERSION), or change Cargo.toml first"; status=1; \
	fi; \
	if [ -f $(CHART_DIR)/Chart.yaml ]; then \
		chart=$$(sed -n 's/^version: *//p' $(CHART_DIR)/Chart.yaml); app=$$(sed -n 's/^appVersion: *//p' $(CHART_DIR)/Chart.yaml | tr -d '"'); \
		[ "$$chart" = "$(CHART_VERSION)" ] || { echo "check-version: $(CHART_DIR)/Chart.yaml has version $$chart, not $(CHART_VERSION)"; status=1; }; \
		[ "$$app" = "$(VERSION)" ] || { echo "check-version: $(CHART_DIR)/Chart.yaml has appVersion $$app, not $(VERSION)"; status=1; }; \
	fi; \
	[ $$status -eq 0 ] && echo "check-version: $(VERSION) (Cargo.toml $(CARGO_VERSION), chart $(CHART_VERSION))"; exit $$status

print-image:
	@echo "$(IMAGE):$(VERSION)"

# Where chart-push puts the chart (without oci://).
print-chart:
	@echo "$(patsubst oci://%,%,$(CHART_REPO))/$(NAME)"

# An SPDX SBOM of each built binary. syft reads the crates from the dependency list that
# `cargo auditable build` embeds (the release workflow builds with CARGO_BUILD="cargo auditable
# build"); a binary built without it lists no crates, which is an error here.
sbom:
	@set -e; found=0; for tarball in $(DIST)/$(NAME)-$(VERSION)-linux-*.tar.gz; do \
		[ -f "$$tarball" ] || continue; found=1; \
		platform=$${tarball#$(DIST)/$(NAME)-$(VERSION)-}; platform=$${platform%.tar.gz}; \
		stage=$(DIST)/.sbom-$$platform; rm -rf $$stage; mkdir -p $$stage; \
		tar -xzf $$tarball -C $$stage $(NAME); \
		$(SYFT) scan --quiet file:$$stage/$(NAME) --source-name $(NAME) --source-version $(VERSION) \
			-o spdx-json=$(DIST)/$(NAME)-$(VERSION)-$$platform.spdx.json; \
		rm -rf $$stage; \
		grep -q '"SPDXID": *"SPDXRef-Package-rust-crate-' $(DIST)/$(NAME)-$(VERSION)-$$platform.spdx.json || { \
			echo "sbom: syft found no crates in the $$platform binary: build it with CARGO_BUILD='cargo auditable build' (cargo install cargo-auditable)"; exit 1; }; \
		echo "sbom: $(DIST)/$(NAME)-$(VERSION)-$$platform.spdx.json"; \
	done; [ $$found = 1 ] || { echo "sbom: no tarball of $(VERSION) in $(DIST): make build-all first"; exit 1; }

# sha256 of every release file of VERSION in dist/ (tarballs, SBOMs, the chart).
checksums:
	@cd $(DIST) && ls $(NAME)-$(VERSION)-*.tar.gz $(NAME)-$(VERSION)-*.spdx.json $(NAME)-$(CHART_VERSION).tgz 2>/dev/null \
		| grep -v sha256sums | sort | xargs sha256sum > $(NAME)-$(VERSION)-sha256sums.txt
	@echo "checksums: $(DIST)/$(NAME)-$(VERSION)-sha256sums.txt"; cat $(DIST)/$(NAME)-$(VERSION)-sha256sums.txt

# The image, FROM scratch like the Dockerfile's final stage: one layer with the static binary
# at /pod-webhook-tracker and the licenses, the same user, entrypoint, command, ports and labels
# (tests/release.rs compares them with the Dockerfile). One manifest per built architecture,
# tagged VERSION-linux-ARCH, and the index of them all as VERSION. The file times are
# SOURCE_DATE_EPOCH, so the same binaries make the same image.
image-push:
	@set -e; manifests=""; for arch in $(ARCHES); do \
		tarball=$(call TARBALL,linux-$$arch); [ -f "$$tarball" ] || continue; \
		stage=$(DIST)/.image-$$arch; rm -rf $$stage; mkdir -p $$stage/root/usr/share/doc/$(NAME); \
		tar -xzf $$tarball -C $$stage; \
		install -m 0755 $$stage/$(NAME) $$stage/root/$(NAME); \
		install -m 0644 $$stage/LICENSE $$stage/THIRD-PARTY-LICENSES $$stage/root/usr/share/doc/$(NAME)/; \
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
			-cf $$stage/layer.tar -C $$stage/root $(NAME) usr; \
		ref=$(IMAGE):$(VERSION)-linux-$$arch; \
		$(CRANE) $(CRANE_FLAGS) append --oci-empty-base -f $$stage/layer.tar -t $$ref >/dev/null; \
		$(CRANE) $(CRANE_FLAGS) mutate $$ref --set-platform linux/$$arch \
			--entrypoint /$(NAME) --cmd serve --user 65532:65532 --exposed-ports 8080/tcp,9090/tcp \
			-l org.opencontainers.image.title=$(NAME) \
			-l org.opencontainers.image.version=$(VERSION) \
			-l org.opencontainers.image.licenses=Apache-2.0 \
			-l org.opencontainers.image.source=https://github.com/pod-webhook-tracker/pod-webhook-tracker \
			-l "org.opencontainers.image.description=Counts running jobs in a pod label so that busy pods are not evicted" \
			-t $$ref >/dev/null; \
		manifests="$$manifests -m $$ref"; rm -rf $$stage; echo "image-push: $$ref"; \
	done; \
	[ -n "$$manifests" ] || { echo "image-push: no tarball of $(VERSION) in $(DIST): make build-all first"; exit 1; }; \
	$(CRANE) $(CRANE_FLAGS) index append $$manifests -t $(IMAGE):$(VERSION) >/dev/null; \
	echo "image-push: $(IMAGE):$(VERSION)@$$($(CRANE) $(CRANE_FLAGS) digest $(IMAGE):$(VERSION))"

chart:
	@mkdir -p $(DIST)
	$(HELM) package $(CHART_DIR) --version $(CHART_VERSION) --app-version $(VERSION) -d $(DIST)

chart-push: chart
	$(HELM) push $(DIST)/$(NAME)-$(CHART_VERSION).tgz $(CHART_REPO) $(HELM_PUSH_FLAGS)

clean:
	rm -rf bin $(DIST)
	@for engine in docker podman; do \
		if command -v $$engine >/dev/null 2>&1; then $$engine image rm -f $(IMAGE):$(VERSION) >/dev/null 2>&1 || true; fi; \
	done

# $(call package,BINARY,RUST_TARGET,OS-ARCH): the release tarball of one binary.
define package
	@rm -rf $(DIST)/.stage-$(3) && mkdir -p $(DIST)/.stage-$(3)
	cp $(1) $(DIST)/.stage-$(3)/$(NAME)
	cp LICENSE $(DIST)/.stage-$(3)/LICENSE
	$(CARGO) metadata --format-version 1 --locked --filter-platform $(2) \
		| python3 -c "$$THIRD_PARTY_LICENSES_PY" $(NAME) $(VERSION) $(2) > $(DIST)/.stage-$(3)/THIRD-PARTY-LICENSES
	tar -czf $(call TARBALL,$(3)) -C $(DIST)/.stage-$(3) $(NAME) LICENSE THIRD-PARTY-LICENSES
	@rm -rf $(DIST)/.stage-$(3)
	@echo "packaged $(call TARBALL,$(3))"
endef

# Reads `cargo metadata` for one target platform and writes the name, version and license of
# every crate linked into the binary (normal dependencies, followed from the root package;
# not build scripts' or tests' dependencies, nor the workspace's own crates), then the license
# files those crates ship, each distinct text once.
define THIRD_PARTY_LICENSES_PY
import json, os, sys

name, version, target = sys.argv[1:4]
meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
ours = set(meta["workspace_members"])
linked, todo = set(), [meta["resolve"]["root"]]
while todo:
    current = todo.pop()
    if current in linked:
        continue
    linked.add(current)
    for dep in nodes[current]["deps"]:
        if any(kind["kind"] is None for kind in dep["dep_kinds"]):
            todo.append(dep["pkg"])
crates = sorted((packages[i] for i in linked - ours), key=lambda p: (p["name"], p["version"]))

def license_files(package):
    home = os.path.dirname(package["manifest_path"])
    found = []
    if package.get("license_file"):
        found.append(os.path.join(home, package["license_file"]))
    for entry in sorted(os.listdir(home)):
        if entry.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE", "UNLICENSE")):
            path = os.path.join(home, entry)
            if os.path.isfile(path) and path not in found:
                found.append(path)
    return found

texts = {}
out = sys.stdout
out.write(f"Third-party software in {name} {version} ({target})\n")
out.write(f"{len(crates)} crates, from Cargo.lock; their license files follow the list.\n\n")
width = max(len(f"{p['name']} {p['version']}") for p in crates)
for p in crates:
    crate = f"{p['name']} {p['version']}"
    where = p.get("repository") or ""
    out.write(f"{crate:<{width}}  {p.get('license') or 'see its license file'}  {where}\n".rstrip() + "\n")
    files = license_files(p)
    if not files:
        texts.setdefault(f"(no license file in the {p['name']} package; license: {p.get('license')})", []).append(crate)
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.setdefault(f.read().strip(), []).append(f"{crate}: {os.path.basename(path)}")
for text, users in texts.items():
    out.write("\n" + "=" * 78 + "\n")
    out.write("\n".join(users) + "\n")
    out.write("-" * 78 + "\n" + text + "\n")
endef
export THIRD_PARTY_LICENSES_PY
