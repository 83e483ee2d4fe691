"""`fix` with `dataVolumeClaim`: source-controller of a generated gotk-components.yaml gets its
/data on the claim through a patch in the including kustomization.yaml, only when the repo
defines the claim (the offline lookups are the repo's objects)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import REPOS, kubectl_or_skip
from webhook.cli import main

CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "source-controller-data", "namespace": "flux-system"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
}


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _policies(tmp_path: Path) -> Path:
    raw = yaml.safe_load((REPOS / "policies-kube-system.yaml").read_text())
    for entry in raw["spec"]["policies"]:
        if entry["name"] == "source-controller-storage":
            entry["params"]["dataVolumeClaim"] = "source-controller-data"
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _repo(tmp_path: Path, *, with_claim: bool) -> Path:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    if with_claim:
        flux_system = repo / "clusters/prod/flux-system"
        (flux_system / "data-claim.yaml").write_text(yaml.safe_dump(CLAIM))
        kustomization = flux_system / "kustomization.yaml"
        text = kustomization.read_text()
        kustomization.write_text(
            text.replace("  - gotk-sync.yaml\n", "  - gotk-sync.yaml\n  - data-claim.yaml\n")
        )
    return repo


def _source_controller_volumes(repo: Path) -> dict[str, Any]:
    built = subprocess.run(
        [str(kubectl_or_skip()), "kustomize", str(repo / "clusters/prod/flux-system")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    source = next(
        d
        for d in yaml.safe_load_all(built)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "source-controller"
    )
    return {v["name"]: v for v in source["spec"]["template"]["spec"]["volumes"]}


def test_claim_in_the_repo_fix_patches_the_kustomization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = _policies(tmp_path)
    repo = _repo(tmp_path, with_claim=True)
    generated = repo / "clusters/prod/flux-system/gotk-components.yaml"
    before = generated.read_bytes()
    assert main(["fix", "--policies", str(policies), "--write", str(repo)]) == 0
    assert main(["fix", "--policies", str(policies), "--check", str(repo)]) == 0  # idempotent
    capsys.readouterr()
    assert generated.read_bytes() == before
    volumes = _source_controller_volumes(repo)
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "source-controller-data"},
    }
    assert volumes["temp"] == {"name": "temp", "emptyDir": {"sizeLimit": "2Gi"}}


def test_no_claim_in_the_repo_data_stays_an_emptydir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = _policies(tmp_path)
    repo = _repo(tmp_path, with_claim=False)
    assert main(["fix", "--policies", str(policies), "--write", str(repo)]) == 0
    capsys.readouterr()
    volumes = _source_controller_volumes(repo)
    assert volumes["data"] == {"name": "data", "emptyDir": {}}  # neither moved nor bounded
    assert volumes["temp"] == {"name": "temp", "emptyDir": {"sizeLimit": "2Gi"}}
    code = main(["audit", "-o", "json", "--policies", str(policies), str(repo)])
    assert code == 0  # the claim advice is a warning, not a failing finding
    assert "PersistentVolumeClaim flux-system/source-controller-data does not exist" in (
        capsys.readouterr().out
    )
