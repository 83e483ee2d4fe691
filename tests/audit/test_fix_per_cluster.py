"""fix plans a document several clusters share for all of them together (issue 18, item 1): what
every cluster needs in the shared file, each cluster's remainder where a Flux user writes a
per-cluster difference (its own Flux Kustomization's `spec.patches`), a problem naming the
clusters and their values when there is no such place; a defaults-patch count per cluster.

Fixture: `tests/audit/repos/percluster` (see its README.md). Golden diff:
`tests/audit/golden_fix/percluster.diff`; regenerate with
`python -m tests.audit.test_fix_per_cluster --regen` and read the diff in review."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import REPOS, kubectl_or_skip
from webhook.audit.inventory import collect
from webhook.audit.plan import plan_fixes
from webhook.cli import main
from webhook.engine import PolicySet

FIXTURE = REPOS / "percluster"
GOLDEN = Path(__file__).parent / "golden_fix" / "percluster.diff"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _copy(tmp_path: Path) -> Path:
    repo = tmp_path / "percluster"
    shutil.copytree(FIXTURE, repo)
    return repo


def _fix_diff(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, diff with the copy's directory written `percluster`, stderr)."""
    code = main(["fix", str(repo)])
    captured = capsys.readouterr()
    return code, captured.out.replace(str(repo.parent), ""), captured.err


def _releases(repo: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(cluster, name) -> the rendered HelmRelease's spec, as Flux applies it in each cluster."""
    inventory = collect([str(repo)])
    return {
        (o.cluster, o.obj["metadata"]["name"]): o.obj["spec"]
        for o in inventory.objects
        if o.obj.get("kind") == "HelmRelease"
    }


def test_fix_output_is_the_golden_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, diff, _ = _fix_diff(_copy(tmp_path), capsys)
    assert code == 0
    assert diff == GOLDEN.read_text()


def test_each_cluster_gets_its_own_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helm-controller v1.3.0 (test) drops `strategy`: its release gets remediation.retries,
    main's (v1.4.3) strategy RetryOnFailure; edge keeps the retries its own patch sets; every
    cluster gets driftDetection from the one edit of the shared file."""
    repo = _copy(tmp_path)
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    specs = _releases(repo)
    podinfo = {c: specs[(f"clusters/{c}", "podinfo")] for c in ("main", "test", "edge")}
    assert {c: s["install"] for c, s in podinfo.items()} == {
        "main": {"strategy": {"name": "RetryOnFailure"}},
        "test": {"remediation": {"retries": 3}},
        "edge": {"remediation": {"retries": 5}},
    }
    assert {c: s["driftDetection"] for c, s in podinfo.items()} == {
        c: {"mode": "enabled"} for c in podinfo
    }
    shared = yaml.safe_load((repo / "apps/base/podinfo/release.yaml").read_text())
    assert "install" not in shared["spec"]  # no cluster's remedy in the shared file


def test_after_fix_write_audit_and_fix_check_pass_and_overlays_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No CI deadlock: before, `fix --check` exited 0 while audit still failed in two clusters."""
    repo = _copy(tmp_path)
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()
    for overlay in ("clusters/main", "clusters/edge", "apps/main", "apps/test", "apps/edge"):
        subprocess.run(
            [str(kubectl_or_skip()), "kustomize", str(repo / overlay)],
            capture_output=True,
            check=True,
        )


def test_defaults_patch_count_is_per_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """shared/infra.yaml renders in main (3 releases: its path is patched) and edge (2)."""
    _copy(tmp_path)
    monkeypatch.chdir(tmp_path)  # a short path: the note is not shortened
    assert main(["fix", "percluster"]) == 0
    err = capsys.readouterr().err
    assert (
        "percluster/shared/infra.yaml:15: HelmRelease defaults patch: one edit covers "
        "2 HelmRelease(s) in clusters/edge, 3 in clusters/main" in err
    )


def test_edits_are_data_naming_their_clusters(tmp_path: Path, shipped_policies: PolicySet) -> None:
    repo = _copy(tmp_path)
    plan = plan_fixes(collect([str(repo)]), policy_set=shipped_policies)
    whys = {Path(e.path).relative_to(repo).as_posix(): e.why for e in plan.edits}
    base = repo / "apps/base/podinfo"
    both = f"(differs per cluster: {base / 'canary.yaml'}, {base / 'release.yaml'})"
    everywhere = "helmrelease-drift-detection for clusters/edge, clusters/main, clusters/test"
    policies = "helmrelease-remediation"  # the policy behind the ops in the patch
    assert whys == {
        "apps/base/podinfo/release.yaml": everywhere,
        "apps/base/podinfo/canary.yaml": everywhere,
        "clusters/edge/apps.yaml": "helmrelease-remediation for clusters/edge "
        f"(differs per cluster: {base / 'canary.yaml'})",
        "clusters/main/apps.yaml": f"{policies} for clusters/main {both}",
        "clusters/test/apps.yaml": f"{policies} for clusters/test {both}",
        "shared/infra.yaml": "HelmRelease defaults patch covering 2 HelmRelease(s) in "
        "clusters/edge, 3 in clusters/main",
    }


def test_a_cluster_overlay_with_patches_takes_that_clusters_remainder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where the user already writes a cluster's differences (flux2-kustomize-helm-example:
    `apps/staging/kustomization.yaml` patches), the cluster's remainder goes there."""
    repo = _copy(tmp_path)
    overlay = repo / "apps/test/kustomization.yaml"
    overlay.write_text(overlay.read_text() + TEST_OVERLAY_PATCHES)
    (repo / "apps/test/podinfo-values.yaml").write_text(PODINFO_VALUES)
    before = (repo / "clusters/test/apps.yaml").read_text()
    assert main(["fix", "--write", str(repo)]) == 0
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()
    assert (repo / "clusters/test/apps.yaml").read_text() == before
    built = subprocess.run(
        [str(kubectl_or_skip()), "kustomize", str(repo / "apps/test")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    release = next(d for d in yaml.safe_load_all(built) if d["kind"] == "HelmRelease")
    assert release["spec"]["install"] == {"remediation": {"retries": 3}}
    assert release["spec"]["values"] == {"replicaCount": 1}  # the user's patch still applies


TEST_OVERLAY_PATCHES = """\
patches:
  # test: one replica
  - path: podinfo-values.yaml
    target:
      kind: HelmRelease
      name: podinfo
"""
PODINFO_VALUES = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: podinfo
spec:
  values:
    replicaCount: 1
"""


def _share_apps(repo: Path) -> None:
    """main and test apply one `apps` Flux Kustomization file (home-ops style): no file only
    one of them applies holds a patch of the shared release."""
    shared = repo / "shared-apps"
    shared.mkdir()
    (repo / "clusters/main/apps.yaml").rename(shared / "apps.yaml")
    (repo / "clusters/test/apps.yaml").unlink()
    (shared / "kustomization.yaml").write_text("resources:\n  - apps.yaml\n")
    main_kustomization = repo / "clusters/main/kustomization.yaml"
    text = main_kustomization.read_text().replace("  - apps.yaml\n", "  - ../../shared-apps\n")
    main_kustomization.write_text(text)
    (repo / "clusters/test/kustomization.yaml").write_text(
        "resources:\n  - flux-system\n  - ../../shared-apps\n"
    )


def test_no_place_for_a_clusters_difference_is_a_problem_naming_clusters_and_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path)
    _share_apps(repo)
    assert main(["fix", "--check", str(repo)]) == 2
    err = capsys.readouterr().err
    problem = next(
        line for line in err.splitlines() if "release.yaml:2: HelmRelease/podinfo " in line
    )
    assert "percluster/apps/base/podinfo/release.yaml:2: HelmRelease/podinfo not fixed" in problem
    assert 'clusters/main: add /spec/install {"strategy":{"name":"RetryOnFailure"}}' in problem
    assert 'clusters/test: add /spec/install {"remediation":{"retries":3}}' in problem
    # what every cluster needs is still written; no cluster's own remedy goes to the shared file
    assert main(["fix", "--write", str(repo)]) == 2
    capsys.readouterr()
    shared = yaml.safe_load((repo / "apps/base/podinfo/release.yaml").read_text())
    assert shared["spec"]["driftDetection"] == {"mode": "enabled"}
    assert "install" not in shared["spec"]


def _regen() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fluxwarden-golden-") as scratch:
        repo = Path(scratch) / "percluster"
        shutil.copytree(FIXTURE, repo)
        done = subprocess.run(
            [".venv/bin/fluxwarden", "fix", str(repo)], capture_output=True, text=True
        )
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(done.stdout.replace(scratch, ""))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m tests.audit.test_fix_per_cluster", description="the per-cluster fix golden"
    )
    parser.add_argument("--regen", action="store_true")
    if not parser.parse_args().regen:
        parser.error("nothing to do: pass --regen to rewrite the golden diff")
    _regen()
