"""fix uses audit's view of the repo: a Deployment as its kustomization.yaml patches leave it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.cli import main

REPO = Path(__file__).parent / "repos" / "fleet-tolerations"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def test_fleet_job_gets_the_tolerations_a_patch_gives_fleet_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The regression: audit failed the Job (the patched fleet-controller tolerates `dedicated`)
    while fix wrote nothing (its lookups held the unpatched Deployment): a CI deadlock."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    assert main(["audit", str(repo)]) == 1
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    job = (repo / "fleet/cleanup-job.yaml").read_text()
    assert "key: dedicated" in job
    assert "# the cleanup command" in job
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()


def test_a_kustomization_kustomize_cannot_build_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flux would fail to apply it too: exit 2 with kustomize's message, not a green run."""
    repo = tmp_path / "bootstrap"
    shutil.copytree(Path(__file__).parent / "repos" / "bootstrap", repo)
    (repo / "infrastructure/kustomization.yaml").write_text(
        "resources: [ingress/release.yaml, ingress/missing.yaml]\n"
    )
    assert main(["audit", str(repo)]) == 2
    out = capsys.readouterr().out
    assert "ERROR" in out
    assert "kustomize cannot build flux-system/infrastructure" in out
    assert "missing.yaml" in out
    assert main(["fix", "--check", str(repo)]) == 2
    capsys.readouterr()
