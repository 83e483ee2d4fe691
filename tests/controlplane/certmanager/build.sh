#!/usr/bin/env bash
# Build cert-manager's controllers and cainjector (main.go: one process, from cert-manager's main
# module) into the per-machine cache next to the control plane, for the node tests.  Idempotent
# like ../build.sh: exits at once when the binary is there.  Progress on stderr; the last line on
# stdout is the output directory.  Its CRDs come from ../flux/build.sh (controller-gen).
#
#   tests/controlplane/certmanager/build.sh              build if needed, print the dir
#   tests/controlplane/certmanager/build.sh --print-dir  print the dir, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
# The version comes from go.mod; bumping it builds into a new directory.
VERSION=$(awk '$1 == "github.com/cert-manager/cert-manager" {print $2; exit}' "$HERE/certmanager/go.mod")
OUT="$CACHE_ROOT/controlplane/cert-manager-$VERSION"

log() { printf '[cert-manager] %s\n' "$*" >&2; }

# shellcheck source=../lib.sh
source "$HERE/lib.sh"
build_arguments "$@"

outputs_ok() {
	local dir=$1
	[[ -x $dir/cert-manager ]] || return 1
	"$dir/cert-manager" --help >/dev/null 2>&1 || [[ $? == 2 ]]
}

if outputs_ok "$OUT"; then
	log "cert-manager $VERSION controllers already built"
	echo "$OUT"
	exit 0
fi
command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26)"
	exit 1
}
lock_build cert-manager
stage_build cert-manager
log "go: $(go version)"
log "step 1/1: cert-manager $VERSION controllers + cainjector (downloads modules on first run)"
(cd "$HERE/certmanager" && timed cert-manager go build -trimpath -ldflags "-s -w" \
	-o "$STAGE/bin/cert-manager" .)
rm -rf "$OUT"
mv "$STAGE/bin" "$OUT"
echo "$OUT"
