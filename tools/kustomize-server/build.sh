#!/usr/bin/env bash
# Build kustomize-server (kustomize's library at the version kubectl v1.36.4 embeds, pinned in
# go.mod) into the per-machine cache; print its path. Idempotent.  --print-path: print, build
# nothing. Without Go, say so and exit 0: fluxwarden then runs kubectl kustomize per build.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}/kustomize-server/$(cat "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)
if [[ ${1:-} == --print-path ]]; then echo "$OUT/kustomize-server"; exit 0; fi
if [[ ! -x $OUT/kustomize-server ]]; then
	if ! command -v go > /dev/null; then
		echo "kustomize-server: no Go toolchain; not built (renders run kubectl kustomize per build)" >&2
		exit 0
	fi
	mkdir -p "$OUT"
	(cd "$HERE" && go build -trimpath -o "$OUT/kustomize-server.tmp" . && mv "$OUT/kustomize-server.tmp" "$OUT/kustomize-server")
fi
echo "$OUT/kustomize-server"
