"""kustomize runs bounded: an alias bomb in a file only kustomize parses (a resource without a
.yaml suffix) stops at the memory limit, with a message saying so, in seconds."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from tests.audit.test_gate_confinement import _flux_ks, _write
from tests.audit.test_render import kubectl_or_skip
from webhook.audit.kustomize_runner import MEMORY_LIMIT_MIB, failure, run_kustomize

# Nine levels of nine aliases: 387 million nodes when expanded; kustomize took 23 GB unbounded.
_LEVELS = ['x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"x{n}: &x{n} [" + ",".join([f"*x{n - 1}"] * 9) + "]" for n in range(1, 9)
]
BOMB = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\n" + "\n".join(_LEVELS) + "\n"
# Each process of the CLI runs under this much address space (RLIMIT_AS is inherited): without
# the per-run limit kustomize dies here instead, later and with a Go stack dump.
OUTER_LIMIT = (MEMORY_LIMIT_MIB + 2048) << 20


def _bomb_repo(root: Path) -> Path:
    entry = root / "clusters/prod/flux-system"
    _write(entry / "sync.yaml", [_flux_ks("flux-system", "./clusters/prod")])
    _write(entry / "apps.yaml", [_flux_ks("apps", "./apps")])
    _write(entry / "kustomization.yaml", "resources: [sync.yaml, apps.yaml]\n")
    _write(root / "apps/kustomization.yaml", "resources: [lol.txt]\n")
    _write(root / "apps/lol.txt", BOMB)  # not .yaml: fluxwarden's own loader never reads it
    return root


def test_run_kustomize_stops_a_bomb_at_the_limit_and_says_so(tmp_path: Path) -> None:
    _write(tmp_path / "kustomization.yaml", "resources: [lol.txt]\n")
    _write(tmp_path / "lol.txt", BOMB)
    started = time.monotonic()
    built = run_kustomize([str(kubectl_or_skip()), "kustomize"], tmp_path, timeout=60)
    assert built.returncode != 0
    assert time.monotonic() - started < 30
    assert failure(built.stderr) == (
        f"it needs more than {MEMORY_LIMIT_MIB} MiB of memory (YAML aliases expanding?)"
    )


def test_failure_names_files_relative_to_the_copy() -> None:
    work = Path("/tmp/fluxwarden-render-x/repo-1")
    stderr = f"error: accumulating resources from 'y.yaml': {work}/apps/y.yaml: no such file"
    assert failure(stderr, work=work) == (
        "error: accumulating resources from 'y.yaml': apps/y.yaml: no such file"
    )


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (OUTER_LIMIT, OUTER_LIMIT))


def test_audit_of_a_repo_with_a_bomb_kustomize_loads_stays_bounded(tmp_path: Path) -> None:
    repo = _bomb_repo(tmp_path / "repo")
    env = {**os.environ, "FLUXWARDEN_KUSTOMIZE": str(kubectl_or_skip()), "FLUXWARDEN_JOBS": "1"}
    started = time.monotonic()
    audited = subprocess.run(
        [sys.executable, "-m", "webhook", "audit", "-o", "json", str(repo)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_bounded,  # the test's own single-threaded child, before exec
        timeout=120,
        check=False,
    )
    assert time.monotonic() - started < 60
    assert "Traceback" not in audited.stderr, audited.stderr
    problems = json.loads(audited.stdout)["problems"]
    said = [p["message"] for p in problems if "kustomize cannot build" in p["message"]]
    assert said == [
        "kustomize cannot build flux-system/apps (it needs more than "
        f"{MEMORY_LIMIT_MIB} MiB of memory (YAML aliases expanding?)): "
        "Flux cannot apply it either"
    ], problems
    assert audited.returncode == 2  # a build Flux would fail too is an input error
