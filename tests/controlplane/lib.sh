# shellcheck shell=bash
# Shared by the build scripts under tests/controlplane/: one build at a time per machine, a
# stage dir renamed into place (an interrupted build leaves nothing half-done), static Go
# binaries, the time and peak memory of each step, the scripts' arguments. Its functions use
# log(), outputs_ok(), CACHE_ROOT and OUT, which each script defines.

# build_arguments "$@": none builds (if needed); --print-dir prints $OUT and exits, building
# nothing; anything else is a usage error.
build_arguments() {
	case "${1:-}" in
	"") ;;
	--print-dir)
		echo "$OUT"
		exit 0
		;;
	*)
		echo "usage: $0 [--print-dir]" >&2
		exit 2
		;;
	esac
}

# lock_build NAME: wait for a build of NAME that another process is running; when that build
# produced everything, print $OUT and exit 0.
lock_build() {
	mkdir -p "$CACHE_ROOT/controlplane"
	command -v flock >/dev/null || return 0
	exec 9>"$CACHE_ROOT/controlplane/.build-$1.lock"
	flock -n 9 && return 0
	log "another build is running; waiting for it"
	flock 9
	if outputs_ok "$OUT"; then
		echo "$OUT"
		exit 0
	fi
}

# stage_build NAME: STAGE, a temporary dir in the cache (same filesystem as $OUT, so the final
# rename is atomic), removed on exit; Go set up for static, reproducible binaries.
stage_build() {
	STAGE=$(mktemp -d "$CACHE_ROOT/controlplane/.build-$1.XXXXXX")
	trap 'rm -rf "$STAGE"' EXIT
	export CGO_ENABLED=0
	case " ${GOFLAGS:-} " in
	*" -buildvcs=false "*) ;;
	*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" ;;
	esac
}

timed() { # timed NAME CMD...: run CMD under /usr/bin/time -v when available, log time and RSS
	local name=$1 start rss_kb
	shift
	start=$(date +%s)
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -v -o "$STAGE/time-$name.txt" "$@"
		rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$STAGE/time-$name.txt")
		log "  $name: $(($(date +%s) - start))s, peak RSS $((rss_kb / 1024)) MiB"
	else
		"$@"
		log "  $name: $(($(date +%s) - start))s"
	fi
}
