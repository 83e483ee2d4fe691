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


def _fleet_cluster(repo: Path, cluster: str, taint: str) -> None:
    """clusters/<cluster> applies fleet/<cluster>: the shared fleet-controller patched to
    tolerate `taint`, and that cluster's own cleanup Job."""
    flux_system = repo / "clusters" / cluster / "flux-system"
    shutil.copytree(REPO / "clusters/local/flux-system", flux_system)
    sync = flux_system / "gotk-sync.yaml"
    sync.write_text(sync.read_text().replace("./clusters/local", f"./clusters/{cluster}"))
    fleet = (REPO / "clusters/local/fleet.yaml").read_text()
    (repo / "clusters" / cluster / "fleet.yaml").write_text(
        fleet.replace("./fleet", f"./fleet/{cluster}")
    )
    overlay = repo / "fleet" / cluster
    overlay.mkdir(parents=True)
    shutil.copyfile(REPO / "fleet/cleanup-job.yaml", overlay / "cleanup-job.yaml")
    kustomization = (REPO / "fleet/kustomization.yaml").read_text()
    (overlay / "kustomization.yaml").write_text(
        kustomization.replace("  - controller.yaml\n", "  - ../base\n").replace(
            "key: dedicated", f"key: {taint}"
        )
    )


def test_each_cluster_s_job_gets_its_own_cluster_s_fleet_controller_tolerations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two clusters patch the same fleet-controller differently: fix looks each Job's
    Deployment up in the Job's own cluster, as audit does (a lookup over every cluster at once
    gave one cluster's Job the other's tolerations: audit still failed after fix --write)."""
    repo = tmp_path / "repo"
    (repo / "fleet/base").mkdir(parents=True)
    shutil.copyfile(REPO / "fleet/controller.yaml", repo / "fleet/base/controller.yaml")
    (repo / "fleet/base/kustomization.yaml").write_text("resources: [controller.yaml]\n")
    _fleet_cluster(repo, "east", "east-only")
    _fleet_cluster(repo, "west", "west-only")
    assert main(["audit", str(repo)]) == 1
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    east = (repo / "fleet/east/cleanup-job.yaml").read_text()
    west = (repo / "fleet/west/cleanup-job.yaml").read_text()
    assert "key: east-only" in east
    assert "west-only" not in east
    assert "key: west-only" in west
    assert "east-only" not in west
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()


IRC = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${irc}  # the name comes from the cluster's variables
  namespace: flux-system
spec:
  replicas: 2
  selector:
    matchLabels: {app: image-reflector-controller}
  template:
    metadata:
      labels: {app: image-reflector-controller}
    spec:
      containers:
        - name: manager
          image: ghcr.io/fluxcd/image-reflector-controller:v1.0.0
          resources:
            limits: {memory: 2Gi}
"""


def test_an_object_whose_name_flux_substitutes_is_fixed_as_audit_judged_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit judges the rendered image-reflector-controller; fix judged the written `${irc}`,
    which no policy selects, and wrote nothing (audit exit 1, fix --check exit 0)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "clusters", repo / "clusters")
    fleet = repo / "clusters/local/fleet.yaml"
    fleet.write_text(
        fleet.read_text().replace("./fleet", "./irc")
        + "  postBuild:\n    substitute:\n      irc: image-reflector-controller\n"
    )
    (repo / "irc").mkdir()
    (repo / "irc/deployment.yaml").write_text(IRC)
    (repo / "irc/kustomization.yaml").write_text("resources: [deployment.yaml]\n")
    assert main(["audit", str(repo)]) == 1
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    fixed = (repo / "irc/deployment.yaml").read_text()
    assert "replicas: 1" in fixed
    assert "name: ${irc}  # the name comes from the cluster's variables" in fixed
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()
