# pod-webhook-tracker: build, package and release.
#
#   make binary      build for this machine; copies the binary to bin/pod-webhook-tracker
#   make build       binary + dist/pod-webhook-tracker-VERSION-OS-ARCH.tar.gz (binary, LICENSE,
#                    THIRD-PARTY-LICENSES) + the container image if docker or podman works
#   make build-all   static (musl) tarballs for linux/amd64 and linux/arm64
#   make release     build-all + dist/pod-webhook-tracker-VERSION-sha256sums.txt
#   make bench       the benchmark (docs/benchmarks.md) against the static musl build that the
#                    image and tarballs ship; BENCH_ARGS passes options, e.g. BENCH_ARGS=--check
#   make clean       remove bin/, dist/ and the local container image (not target/: cargo clean)
#
# Variables: VERSION (default v + Cargo.toml's version), IMAGE, CARGO, CARGO_BUILD, and for
# build-all CC_amd64 / CC_arm64 (C compilers for ring's C code; empty = do not set).

SHELL := /bin/sh
.DEFAULT_GOAL := build

NAME := pod-webhook-tracker
CARGO ?= cargo
# e.g. CARGO_BUILD="cargo zigbuild" for cross builds through zig.
CARGO_BUILD ?= $(CARGO) build
CARGO_VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
RUST_VERSION := $(shell sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
VERSION ?= v$(CARGO_VERSION)

OS := $(shell uname -s | tr '[:upper:]' '[:lower:]')
ARCH := $(shell uname -m | sed -e 's/^x86_64$$/amd64/' -e 's/^aarch64$$/arm64/')
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')

IMAGE ?= ghcr.io/pod-webhook-tracker/pod-webhook-tracker

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

.PHONY: help binary build tarball image build-all check-targets release clean bench

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

check-targets:
	@installed=$$(rustup target list --installed 2>/dev/null) || { \
		echo "build-all: rustup is not available, so the installed Rust targets cannot be checked."; \
		echo "build-all needs the targets: $(foreach a,$(ARCHES),$(RUST_TARGET_$(a)))"; \
		exit 1; }; \
	missing=""; \
	for target in $(foreach a,$(ARCHES),$(RUST_TARGET_$(a))); do \
		printf '%s\n' "$$installed" | grep -qx "$$target" || missing="$$missing $$target"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "build-all: missing Rust targets:$$missing"; \
		echo "add them with:"; \
		echo "    rustup target add$$missing"; \
		exit 1; \
	fi; \
	status=0; \
	for cc in $(foreach a,$(ARCHES),$(CC_$(a))); do \
		if ! command -v $$cc >/dev/null 2>&1; then \
			echo "build-all: C compiler $$cc not found (ring compiles C for each target)"; status=1; \
		fi; \
	done; \
	if [ $$status -ne 0 ]; then \
		echo "native musl: apt-get install musl-tools (musl-gcc); other architecture: a musl cross"; \
		echo "toolchain (e.g. aarch64-linux-musl-gcc), or make build-all CARGO_BUILD='cargo zigbuild' CC_amd64= CC_arm64="; \
		exit 1; \
	fi

build-all: check-targets
	@mkdir -p $(DIST)
	@set -e; for arch in $(ARCHES); do $(MAKE) --no-print-directory build-linux-$$arch; done

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

release:
	@if [ "$(VERSION)" != "v$(CARGO_VERSION)" ]; then \
		echo "warning: VERSION=$(VERSION) but Cargo.toml says $(CARGO_VERSION); 'pod-webhook-tracker version' prints v$(CARGO_VERSION)"; \
	fi
	@$(MAKE) --no-print-directory build-all
	cd $(DIST) && { if command -v sha256sum >/dev/null 2>&1; then sha256sum $(NAME)-$(VERSION)-*.tar.gz; \
		else shasum -a 256 $(NAME)-$(VERSION)-*.tar.gz; fi; } > $(NAME)-$(VERSION)-sha256sums.txt
	@echo "release $(VERSION):"; cd $(DIST) && cat $(NAME)-$(VERSION)-sha256sums.txt
	@echo "next: git tag -a $(VERSION) -m 'Release $(VERSION)' && git push origin $(VERSION), then upload $(DIST)/$(NAME)-$(VERSION)-* (e.g. gh release create $(VERSION) $(DIST)/$(NAME)-$(VERSION)-*)"

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
