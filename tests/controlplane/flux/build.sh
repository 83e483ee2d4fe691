#!/usr/bin/env bash
# Build kustomize-controller (Flux v2.9.5) and controller-gen from Go modules, and generate
# the Flux, cert-manager and openreports CRDs with controller-gen from their API packages,
# into the per-machine cache next to the control plane.  Idempotent like ../build.sh:
# exits at once when everything is there.  Progress on stderr; the last line on stdout is
# the output directory (binaries + crds/).
#
#   tests/controlplane/flux/build.sh              build if needed, print the dir
#   tests/controlplane/flux/build.sh --print-dir  print the dir, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLUX_VERSION=v2.9.5
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
OUT="$CACHE_ROOT/controlplane/flux-$FLUX_VERSION"

log() { printf '[flux] %s\n' "$*" >&2; }

# shellcheck source=../lib.sh
source "$HERE/lib.sh"
build_arguments "$@"

# API packages -> one CRD file each (controller-gen names them <group>_<plural>.yaml).
CRD_PATHS=(
	github.com/fluxcd/source-controller/api/...
	github.com/fluxcd/kustomize-controller/api/...
	github.com/fluxcd/helm-controller/api/...
	github.com/fluxcd/image-reflector-controller/api/...
	github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1
	github.com/openreports/reports-api/apis/openreports.io/v1alpha1
)

outputs_ok() {
	local dir=$1
	[[ -x $dir/kustomize-controller && -x $dir/controller-gen && -f $dir/crds/.complete ]] || return 1
	"$dir/kustomize-controller" --help >/dev/null 2>&1 || [[ $? == 0 || $? == 2 ]] || return 1
}

# The test-only HelmRelease CRD that still serves v2beta1/v2beta2, generated with this build's
# controller-gen (once per machine; at once when it is there).
older_helmrelease_crd() { "$HERE/helm-v2beta/build.sh" >/dev/null; }

if outputs_ok "$OUT"; then
	log "kustomize-controller and CRDs for Flux $FLUX_VERSION already built"
	older_helmrelease_crd
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26)"
	exit 1
}
lock_build flux
stage_build flux

log "go: $(go version)"
log "step 1/3: kustomize-controller $(cd "$HERE/flux" && go list -m -f '{{.Version}}' github.com/fluxcd/kustomize-controller) (downloads modules on first run)"
(cd "$HERE/flux" && timed kustomize-controller go build -trimpath -ldflags "-s -w" \
	-o "$STAGE/bin/kustomize-controller" github.com/fluxcd/kustomize-controller)
log "step 2/3: controller-gen $(cd "$HERE/crdgen" && go list -m -f '{{.Version}}' sigs.k8s.io/controller-tools)"
(cd "$HERE/crdgen" && timed controller-gen go build -trimpath -ldflags "-s -w" \
	-o "$STAGE/bin/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
log "step 3/3: CRDs"
mkdir -p "$STAGE/bin/crds"
for path in "${CRD_PATHS[@]}"; do
	(cd "$HERE/crdgen" && "$STAGE/bin/controller-gen" crd:crdVersions=v1 paths="$path" \
		output:crd:artifacts:config="$STAGE/bin/crds")
done
touch "$STAGE/bin/crds/.complete"
log "  $(find "$STAGE/bin/crds" -name '*.yaml' | wc -l) CRDs"
rm -rf "$OUT"
mv "$STAGE/bin" "$OUT"
older_helmrelease_crd
echo "$OUT"
