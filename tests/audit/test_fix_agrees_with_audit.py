"""`fix --check` exits 1 exactly when audit would change something, and after `fix --write`
neither has anything left to say: audit and fix share one inventory (issue 18, item 6). A fix
that cannot be written where its user keeps it is an error naming where (exit 2): see
tests/audit/test_flux_installs.py (a values ConfigMap written as a manifest)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import REPOS, kubectl_or_skip
from webhook.cli import main

# every repo shape but `batching`, where a Kustomization cannot be built on purpose (exit 2)
SHAPES = sorted(p.name for p in REPOS.iterdir() if p.is_dir() and p.name != "batching")


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _changes(capsys: pytest.CaptureFixture[str], repo: Path) -> list[str]:
    """What audit says a mutation would change (enforced, or `would ...` below enforce)."""
    code = main(["audit", "-o", "json", str(repo)])
    assert code in (0, 1)
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return [
        f"{f['source']}:{f['line']} {f['policy']}"
        for f in report["findings"]
        if f["action"] == "mutated"
        or (f["result"] == "fail" and any(m.startswith("would set") for m in f["messages"]))
    ]


def _check(capsys: pytest.CaptureFixture[str], repo: Path) -> int:
    code = main(["fix", "--check", str(repo)])
    capsys.readouterr()
    return code


@pytest.mark.parametrize("shape", SHAPES)
def test_fix_check_fails_exactly_when_audit_would_change_something(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / shape
    shutil.copytree(REPOS / shape, repo)
    changes = _changes(capsys, repo)
    assert _check(capsys, repo) == (1 if changes else 0), changes
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    assert _changes(capsys, repo) == []  # audit exits 0 or 1: every Flux Kustomization builds
    assert _check(capsys, repo) == 0
    for directory in _changed_kustomizations(REPOS / shape, repo):
        built = subprocess.run(
            [str(kubectl_or_skip()), "kustomize", str(directory)], capture_output=True, text=True
        )
        assert built.returncode == 0, (directory, built.stderr)


def _changed_kustomizations(original: Path, fixed: Path) -> list[Path]:
    """The directories of the files `fix --write` changed that are kustomizations."""
    changed = [
        f
        for f in fixed.rglob("*")
        if f.is_file() and f.read_bytes() != (original / f.relative_to(fixed)).read_bytes()
    ]
    names = ("kustomization.yaml", "kustomization.yml", "Kustomization")
    return sorted({f.parent for f in changed if any((f.parent / n).is_file() for n in names)})
