#!/usr/bin/env bash
# Build the test-only fluxbuild binary (Flux's build library, pinned in go.mod) into the
# per-machine cache; print its path. Idempotent.  --print-path: print, build nothing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}/fluxbuild/$(cat "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)
if [[ ${1:-} == --print-path ]]; then echo "$OUT/fluxbuild"; exit 0; fi
if [[ ! -x $OUT/fluxbuild ]]; then
	mkdir -p "$OUT"
	(cd "$HERE" && go build -o "$OUT/fluxbuild" .)
fi
echo "$OUT/fluxbuild"
