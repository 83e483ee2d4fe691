#!/usr/bin/env bash
# Build Kyverno v1.19.1 from its Go module: the admission controller (cmd/kyverno, run by
# `python -m bench.apiserver --configurations kyverno`) and the CLI (cmd/cli/kubectl-kyverno,
# run by `python -m bench.offline_audit --peer kyverno`), with the module's CRDs
# (config/crds), into the per-machine cache next to the control plane.  Idempotent like
# ../build.sh: exits at once when everything is there.  Progress on stderr; the last line on
# stdout is the output directory (kyverno, kubectl-kyverno, crds/).
#
#   tests/controlplane/kyverno/build.sh              build if needed, print the dir
#   tests/controlplane/kyverno/build.sh --print-dir  print the dir, build nothing
#
# Measured on 2 shared cores: see bench/README.md (the CLI alone: ~5 min, 3.2 GiB peak RSS).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KYVERNO_VERSION=v1.19.1
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
OUT="$CACHE_ROOT/controlplane/kyverno-$KYVERNO_VERSION"
MODULE=github.com/kyverno/kyverno

log() { printf '[kyverno] %s\n' "$*" >&2; }

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
build_arguments "$@"

outputs_ok() {
	local dir=$1 out
	[[ -x $dir/kyverno && -x $dir/kubectl-kyverno && -f $dir/crds/.complete ]] || return 1
	# Capture, don't pipe into `grep -q` (pipefail + SIGPIPE, see ../build.sh).
	out=$("$dir/kubectl-kyverno" version 2>&1) || return 1
	[[ $out == *"Version: ${KYVERNO_VERSION#v}"* ]] || return 1
}

if outputs_ok "$OUT"; then
	log "kyverno and kubectl-kyverno $KYVERNO_VERSION already built"
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26.6)"
	exit 1
}
lock_build kyverno
stage_build kyverno

log "go: $(go version)"
# The version stamp `kubectl-kyverno version` prints, as Kyverno's Makefile sets it.
LDFLAGS="-s -w -X $MODULE/pkg/version.BuildVersion=${KYVERNO_VERSION#v}"
log "step 1/3: kubectl-kyverno $KYVERNO_VERSION (downloads modules on first run)"
(cd "$HERE" && timed kubectl-kyverno go build -trimpath -ldflags "$LDFLAGS" \
	-o "$STAGE/bin/kubectl-kyverno" "$MODULE/cmd/cli/kubectl-kyverno")
log "step 2/3: kyverno (admission controller) $KYVERNO_VERSION"
(cd "$HERE" && timed kyverno go build -trimpath -ldflags "$LDFLAGS" \
	-o "$STAGE/bin/kyverno" "$MODULE/cmd/kyverno")
log "step 3/3: CRDs from the module's config/crds"
SOURCE=$(cd "$HERE" && go list -m -f '{{.Dir}}' "$MODULE")
mkdir -p "$STAGE/bin/crds"
cp "$SOURCE"/config/crds/*/*.yaml "$STAGE/bin/crds/"
chmod u+w "$STAGE"/bin/crds/*.yaml # the module cache is read-only
touch "$STAGE/bin/crds/.complete"
log "  $(find "$STAGE/bin/crds" -name '*.yaml' | wc -l) CRDs"
rm -rf "$OUT"
mv "$STAGE/bin" "$OUT"
echo "$OUT"
