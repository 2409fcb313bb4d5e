#!/usr/bin/env bash
# Builds the test-time tools from their published Go modules (declared in go/*/go.mod, nothing of
# theirs copied here) into a cache outside the work tree, once per version, and prints the path of
# each binary asked for. Used by the test harness (crates/testenv), `make test-tools` and .ci/run.
#
#   crates/testenv/tools.sh NAME...      build (or reuse) these tools; one path per line
#   crates/testenv/tools.sh --all        every tool
#   crates/testenv/tools.sh --list       the names, with their module and version
#
# The cache is $POD_WEBHOOK_TRACKER_TOOLS, else ${XDG_CACHE_HOME:-$HOME/.cache}/pod-webhook-tracker/tools.
# A build's folder is named after the tool, its version and a hash of everything that decides the
# binary (go.mod, go.sum, our main, the Go version, the flags), so a change of any of them builds
# anew and an unchanged one is reused. Concurrent callers wait for each other (flock).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${POD_WEBHOOK_TRACKER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pod-webhook-tracker/tools}

# name | module folder under go/ | package to build | version (for the folder name and -ldflags)
table() {
	cat <<'EOF'
kube-apiserver|kube|./cmd/kube-apiserver|v1.37.2
kube-controller-manager|kube|./cmd/kube-controller-manager|v1.37.2
kubectl|kube|./cmd/kubectl|v1.37.2
etcd|etcd|.|v3.7.3
kustomize|tools/kustomize|sigs.k8s.io/kustomize/kustomize/v5|v5.8.2
helm|tools/helm|helm.sh/helm/v4/cmd/helm|v4.3.2
promtool|tools/promtool|github.com/prometheus/prometheus/cmd/promtool|v0.316.0
actionlint|tools/actionlint|github.com/rhysd/actionlint/cmd/actionlint|v1.7.12
crane|tools/crane|github.com/google/go-containerregistry/cmd/crane|v0.22.1
syft|tools/syft|github.com/anchore/syft/cmd/syft|v1.57.2
EOF
}

die() {
	echo "testenv/tools.sh: $*" >&2
	exit 1
}

ldflags_for() {
	local name=$1 version=$2
	case $name in
	kube-apiserver | kube-controller-manager | kubectl)
		# Without these, /version and `kubectl version` say v0.0.0-master.
		local v=k8s.io/component-base/version minor
		minor=${version#v1.}
		minor=${minor%%.*}
		echo "-s -w -X $v.gitVersion=$version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version"
		;;
	helm)
		echo "-s -w -X helm.sh/helm/v4/internal/version.version=$version"
		;;
	crane)
		echo "-s -w -X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$version"
		;;
	syft)
		echo "-s -w -X main.version=$version"
		;;
	*)
		echo "-s -w"
		;;
	esac
}

build_one() {
	local name=$1 row folder package version module key dir binary lock started
	row=$(table | grep "^$name|") || die "unknown tool $name (known: $(table | cut -d'|' -f1 | tr '\n' ' '))"
	IFS='|' read -r _ folder package version <<<"$row"
	module=$here/go/$folder
	command -v go >/dev/null 2>&1 ||
		die "cannot build $name: the Go toolchain ('go', 1.26 or newer) is not installed; the tests run a real kube-apiserver, etcd and other tools built from their Go modules (see README, Testing)"
	local flags
	flags=$(ldflags_for "$name" "$version")
	key=$(
		{
			echo "$name $package $flags"
			go env GOVERSION GOOS GOARCH
			cat "$module/go.mod" "$module/go.sum"
			find "$module" -name '*.go' -print0 | sort -z | xargs -0 -r cat
		} | sha256sum | cut -c1-16
	)
	dir=$cache/$name-$version-$key
	binary=$dir/$name
	if [ ! -x "$binary" ]; then
		mkdir -p "$cache"
		lock=$cache/.$name.lock
		exec 9>"$lock"
		flock 9
		if [ ! -x "$binary" ]; then
			started=$(date +%s)
			echo "testenv/tools.sh: building $name $version from its Go module (once; cached in $dir)" >&2
			rm -rf "$dir.partial"
			mkdir -p "$dir.partial"
			(
				cd "$module"
				CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
					go build -trimpath -ldflags "$flags" -o "$dir.partial/$name" "$package"
			) >&2 || die "building $name failed (see above)"
			rm -rf "$dir"
			mv "$dir.partial" "$dir"
			echo "testenv/tools.sh: built $name in $(($(date +%s) - started)) s, $(du -h "$binary" | cut -f1)" >&2
		fi
		exec 9>&-
	fi
	echo "$binary"
}

case ${1:-} in
"" | -h | --help)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
--list)
	table | while IFS='|' read -r name folder package version; do
		printf '%-24s %-8s %s (go/%s)\n' "$name" "$version" "$package" "$folder"
	done
	exit 0
	;;
--all)
	set -- $(table | cut -d'|' -f1)
	;;
esac
for name in "$@"; do
	build_one "$name"
done
