#!/usr/bin/env bash
# Build kube-apiserver, kubectl, etcd, kube-scheduler, kube-controller-manager, kubelet and kube-proxy
# from Go modules into a per-machine cache, envtest-style.  Idempotent: exits at
# once when the binaries exist and run; builds only the ones missing (adding
# the scheduler to a cache that has the apiserver does not rebuild the
# apiserver).  Progress goes to stderr; the last (only) line on stdout is the
# binaries directory.
#
#   tests/controlplane/build.sh              build if needed, print the dir
#   tests/controlplane/build.sh --print-dir  print the dir, build nothing
#
# The Kubernetes version lives in tests/controlplane/VERSION (also read by
# cluster.py); the etcd version is the one k8s.io/kubernetes pins in go.mod.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=$(tr -d '[:space:]' <"$HERE/VERSION")
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
OUT="$CACHE_ROOT/controlplane/$K8S_VERSION"

log() { printf '[controlplane] %s\n' "$*" >&2; }

usage() {
	echo "usage: $0 [--print-dir]" >&2
	exit 2
}

case "${1:-}" in
"") ;;
--print-dir)
	echo "$OUT"
	exit 0
	;;
-h | --help) usage ;;
*) usage ;;
esac

# Binary name -> main package.  etcd's main package is its server module.
NAMES=(kube-apiserver kubectl etcd kube-scheduler kube-controller-manager kubelet kube-proxy)
declare -A PACKAGE=(
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
	[etcd]=go.etcd.io/etcd/server/v3
	[kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	# The node of ControlPlane(node=True): tests/controlplane/node.py.
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
)

# Succeeds when binary $2 in dir $1 exists, runs, and reports the pinned
# Kubernetes version.
binary_ok() {
	local dir=$1 name=$2 out
	[[ -x $dir/$name ]] || return 1
	# Capture, don't pipe into `grep -q`: with pipefail an early-exiting grep
	# can SIGPIPE the binary and make a good build look broken.
	case $name in
	kubectl)
		out=$("$dir/kubectl" version --client 2>/dev/null) || return 1
		[[ $out == *"Client Version: $K8S_VERSION"* ]]
		;;
	etcd) "$dir/etcd" --version >/dev/null 2>&1 ;;
	*)
		out=$("$dir/$name" --version 2>/dev/null) || return 1
		[[ $out == "Kubernetes $K8S_VERSION" ]]
		;;
	esac
}

# Prints the names of the binaries in $1 that are missing or broken.
missing_in() {
	local name
	for name in "${NAMES[@]}"; do
		binary_ok "$1" "$name" || echo "$name"
	done
}

mapfile -t TO_BUILD < <(missing_in "$OUT")
if ((${#TO_BUILD[@]} == 0)); then
	log "binaries for $K8S_VERSION already built"
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26)"
	exit 1
}

mkdir -p "$CACHE_ROOT/controlplane"

# One build at a time per cache dir; a second caller waits, then finds the
# binaries ready.
if command -v flock >/dev/null; then
	exec 9>"$CACHE_ROOT/controlplane/.build.lock"
	if ! flock -n 9; then
		log "another build is running; waiting for it"
		flock 9
		mapfile -t TO_BUILD < <(missing_in "$OUT")
		if ((${#TO_BUILD[@]} == 0)); then
			echo "$OUT"
			exit 0
		fi
	fi
fi

STAGE=$(mktemp -d "$CACHE_ROOT/controlplane/.build-$K8S_VERSION.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

cd "$HERE"
export CGO_ENABLED=0
case " ${GOFLAGS:-} " in
*" -buildvcs=false "*) ;;
*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" ;;
esac

PKGS=()
for name in "${TO_BUILD[@]}"; do
	PKGS+=("${PACKAGE[$name]}")
done

start=$(date +%s)
log "go: $(go version)"
log "step 1/3: resolving packages (downloads modules on first run)"
ETCD_VERSION=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
total=$(go list -deps "${PKGS[@]}" | wc -l)
log "  kubernetes $K8S_VERSION, etcd $ETCD_VERSION; building ${TO_BUILD[*]} ($total packages)"

# Version stamping as in kubernetes' hack/lib/version.sh.  buildDate is the
# release time of the k8s.io/kubernetes module so builds are reproducible.
build_date=$(go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "k8s.io/kubernetes")
[[ -n $build_date ]] || build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ver=${K8S_VERSION#v}
major=${ver%%.*}
minor=${ver#*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$K8S_VERSION"
	ldflags+=" -X $pkg.gitMajor=$major"
	ldflags+=" -X $pkg.gitMinor=$minor"
	# The module proxy does not carry the release commit; override if known.
	ldflags+=" -X $pkg.gitCommit=${KUBE_GIT_COMMIT:-}"
	ldflags+=" -X $pkg.gitTreeState=clean"
	ldflags+=" -X $pkg.buildDate=$build_date"
done
ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION"

log "step 2/3: compiling ${TO_BUILD[*]} (CGO_ENABLED=0; a cold build takes several minutes)"
timer=()
if [[ -x /usr/bin/time ]]; then
	timer=(/usr/bin/time -v -o "$STAGE/time.txt")
fi
# `go build -v` names each package as it is compiled; show a running count
# instead of ~2000 lines, but pass anything else (errors) through.
show_progress() {
	local n=0 line
	while IFS= read -r line; do
		if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
			n=$((n + 1))
			if ((n % 100 == 0)); then
				log "  compiled $n packages (of at most $total), $(($(date +%s) - start))s"
			fi
		else
			printf '%s\n' "$line" >&2
		fi
	done
	log "  compiled $n packages (the rest came from the Go build cache)"
}
"${timer[@]}" go build -v -trimpath -ldflags "$ldflags" -o "$STAGE/bin/" "${PKGS[@]}" 2>&1 | show_progress

# A main package at module path .../server/v3 is named after "server".
if [[ -e $STAGE/bin/server ]]; then
	mv "$STAGE/bin/server" "$STAGE/bin/etcd"
fi

log "step 3/3: checking the binaries"
for name in "${TO_BUILD[@]}"; do
	binary_ok "$STAGE/bin" "$name" || {
		log "error: built $name does not run or reports the wrong version"
		exit 1
	}
done

# Rename each binary into place (atomic per file): processes already running
# the binaries that were there keep them.
mkdir -p "$OUT"
for name in "${TO_BUILD[@]}"; do
	mv -f "$STAGE/bin/$name" "$OUT/$name"
done

elapsed=$(($(date +%s) - start))
log "built in ${elapsed}s ($(du -sh "$OUT" | cut -f1) in $OUT)"
if [[ -f $STAGE/time.txt ]]; then
	rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$STAGE/time.txt")
	log "peak RSS of the largest build process: $((rss_kb / 1024)) MiB"
fi
echo "$OUT"
