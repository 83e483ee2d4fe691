#!/usr/bin/env bash
# Generate a test-only HelmRelease CRD that serves v2, v2beta2 and v2beta1 (helm-controller's
# API module v1.3.0, Flux v2.6, the last to serve the betas) with the controller-gen that
# ../flux/build.sh builds, into the per-machine cache next to the control plane. Flux v2.9.5's
# CRD serves v2 only; the native and webhook answers for the older versions are checked on a
# control plane with this one (tests/e2e/native/test_replayed_cases.py). No conversion
# webhook: controller-gen writes no `conversion`, i.e. `strategy: None` (the API server only
# rewrites apiVersion), which is all those tests need. Idempotent like ../build.sh: exits at
# once when the CRD is there. Progress on stderr; the last line on stdout is the output dir.
#
#   tests/controlplane/helm-v2beta/build.sh              build if needed, print the dir
#   tests/controlplane/helm-v2beta/build.sh --print-dir  print the dir, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
API=github.com/fluxcd/helm-controller/api
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
VERSION=$(sed -n "s|^require $API \(v[^ ]*\)$|\1|p" "$HERE/helm-v2beta/go.mod")
OUT="$CACHE_ROOT/controlplane/helm-controller-api-$VERSION"
CRD=helm.toolkit.fluxcd.io_helmreleases.yaml

log() { printf '[helm-v2beta] %s\n' "$*" >&2; }

# shellcheck source=../lib.sh
source "$HERE/lib.sh"
build_arguments "$@"

outputs_ok() {
	[[ -f $1/crds/$CRD && -f $1/crds/.complete ]]
}

if outputs_ok "$OUT"; then
	log "HelmRelease CRD of $API $VERSION already generated"
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26)"
	exit 1
}
# controller-gen comes from the Flux build, which runs this script when it is done.
FLUX_OUT=$("$HERE/flux/build.sh" --print-dir)
[[ -x $FLUX_OUT/controller-gen ]] || {
	log "error: no controller-gen in $FLUX_OUT: run tests/controlplane/flux/build.sh (make controlplane)"
	exit 1
}
lock_build helm-v2beta
stage_build helm-v2beta

log "step 1/1: CRD from $API $VERSION (downloads the module on first run)"
mkdir -p "$STAGE/out/crds"
(cd "$HERE/helm-v2beta" && timed controller-gen "$FLUX_OUT/controller-gen" crd:crdVersions=v1 \
	paths="$API/..." output:crd:artifacts:config="$STAGE/out/crds")
served=$(grep -c '^    served: true' "$STAGE/out/crds/$CRD" || true)
[[ $served == 3 ]] || {
	log "error: expected 3 served versions in $CRD, found $served"
	exit 1
}
touch "$STAGE/out/crds/.complete"
rm -rf "$OUT"
mv "$STAGE/out" "$OUT"
echo "$OUT"
