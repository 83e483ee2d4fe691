#!/usr/bin/env bash
# Build promtool (Prometheus v3.16.0, Go module v0.316.0) from its Go module and generate the
# prometheus-operator v0.95.2 monitoring CRDs (PrometheusRule among them) with controller-gen
# (the one ../flux/build.sh builds), into the per-machine cache next to the control plane.
# Idempotent like ../build.sh: exits at once when everything is there.  Progress on stderr;
# the last line on stdout is the output directory (promtool + crds/).
#
#   tests/controlplane/prometheus/build.sh              build if needed, print the dir
#   tests/controlplane/prometheus/build.sh --print-dir  print the dir, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROMETHEUS_VERSION=3.16.0 # what the Go module v0.316.0 is released as
CACHE_ROOT=${FLUXWARDEN_CACHE:-$HOME/.cache/fluxwarden}
OUT="$CACHE_ROOT/controlplane/prometheus-v$PROMETHEUS_VERSION"
CRD_PATH=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1

log() { printf '[prometheus] %s\n' "$*" >&2; }

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
build_arguments "$@"

outputs_ok() {
	local dir=$1 out
	[[ -x $dir/promtool && -f $dir/crds/.complete ]] || return 1
	[[ -f $dir/crds/monitoring.coreos.com_prometheusrules.yaml ]] || return 1
	# Capture, don't pipe into `grep -q` (pipefail + SIGPIPE, see ../build.sh).
	out=$("$dir/promtool" --version 2>&1) || return 1
	[[ $out == *"version $PROMETHEUS_VERSION "* ]] || return 1
}

if outputs_ok "$OUT"; then
	log "promtool $PROMETHEUS_VERSION and the monitoring CRDs already built"
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	log "error: 'go' not found in PATH (need Go >= 1.26.7)"
	exit 1
}
# controller-gen comes from the Flux build (built there if missing; a no-op when it is done).
CONTROLLER_GEN="$("$HERE/../flux/build.sh" | tail -n 1)/controller-gen"

lock_build prometheus
stage_build prometheus

log "go: $(go version)"
log "step 1/2: promtool $PROMETHEUS_VERSION (downloads modules on first run)"
# The version stamp promtool --version prints, as Prometheus' own release build sets it.
STAMP=github.com/prometheus/common/version
(cd "$HERE" && timed promtool go build -trimpath \
	-ldflags "-s -w -X $STAMP.Version=$PROMETHEUS_VERSION -X $STAMP.Branch=HEAD" \
	-o "$STAGE/bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
log "step 2/2: monitoring.coreos.com CRDs ($(cd "$HERE" && go list -m -f '{{.Version}}' github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring))"
mkdir -p "$STAGE/bin/crds"
(cd "$HERE" && "$CONTROLLER_GEN" crd:crdVersions=v1 paths="$CRD_PATH" \
	output:crd:artifacts:config="$STAGE/bin/crds")
touch "$STAGE/bin/crds/.complete"
log "  $(find "$STAGE/bin/crds" -name '*.yaml' | wc -l) CRDs"
rm -rf "$OUT"
mv "$STAGE/bin" "$OUT"
echo "$OUT"
