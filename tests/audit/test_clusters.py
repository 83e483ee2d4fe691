"""A fleet repo: every cluster under clusters/ is rendered on its own, with its own variables and
patches; findings name their clusters, and fix leaves nothing that audit fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.audit.clusters import clusters_of, sync_kustomization
from webhook.audit.documents import load
from webhook.audit.render import is_flux_kustomization
from webhook.cli import main

FLEET = Path(__file__).parent / "repos" / "fleet"
SHARED = "apps/base/podinfo/release.yaml"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    shutil.copytree(FLEET, tmp_path / "fleet")
    return tmp_path / "fleet"


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["audit", "-o", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def _attention(report: dict[str, Any], root: Path) -> dict[tuple[str, str, str], list[str]]:
    return {
        (f["policy"], f["name"], f["source"].removeprefix(str(root) + "/")): f.get("clusters", [])
        for f in report["findings"]
        if f["result"] in ("fail", "warn")
    }


def test_each_cluster_is_rendered_with_its_own_variables_and_patches(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _audit(capsys, str(fleet))
    assert code == 1
    attention = _attention(report, fleet)
    # one shared file failing in both clusters: one finding naming both
    assert attention[("helmrelease-drift-detection", "podinfo", SHARED)] == [
        "clusters/production",
        "clusters/staging",
    ]
    # production's own variables: a 6h interval; staging's 30m passes
    assert attention[("helmrelease-interval", "podinfo", SHARED)] == ["clusters/production"]
    # the second cluster's gotk-components.yaml is rendered (staging's patch bounds its volumes)
    assert attention[
        (
            "source-controller-storage",
            "source-controller",
            "clusters/production/flux-system/gotk-components.yaml",
        )
    ] == ["clusters/production"]
    assert not any(p == "source-controller-storage" and "staging" in s for p, _, s in attention), (
        attention
    )
    # every rendered release was substituted: no ${VAR} left
    releases = [f for f in report["findings"] if f["name"] == "podinfo"]
    assert all("${" not in m for f in releases for m in f["messages"])


def test_the_table_and_sarif_name_the_clusters(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["audit", str(fleet)])
    table = capsys.readouterr().out
    assert "helmrelease-drift-detection (enforce)  [clusters/production, clusters/staging]" in table
    main(["audit", "-o", "sarif", str(fleet)])
    results = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert any(
        r["properties"].get("clusters") == ["clusters/production"]
        and r["ruleId"] == "helmrelease-interval"
        for r in results
    )


def test_fix_leaves_nothing_audit_fails_in_any_cluster(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fix", "--check", str(fleet)]) == 1
    assert main(["fix", "--write", str(fleet)]) == 0
    # production's flux-system kustomization.yaml gets the source-controller patch
    production = (fleet / "clusters/production/flux-system/kustomization.yaml").read_text()
    assert "name: source-controller" in production
    assert main(["fix", "--check", str(fleet)]) == 0
    capsys.readouterr()
    code, report = _audit(capsys, str(fleet))
    assert code == 0, _attention(report, fleet)


def test_clusters_are_the_directories_under_clusters_with_an_entry_point() -> None:
    documents = list(load([str(FLEET)]))
    found = clusters_of(FLEET, documents)
    assert [c.name for c in found] == ["clusters/production", "clusters/staging"]
    assert all(
        all("/clusters/" + c.name.split("/")[1] + "/" in d.source for d in c.documents)
        for c in found
    )
    # one cluster: unnamed as before, rendered from its entry point (the flux-system sync) only
    staging = [d for d in documents if "/clusters/production/" not in d.source]
    (single,) = clusters_of(FLEET, staging)
    assert single.name == ""
    assert [
        d.obj["metadata"]["name"]
        for d in single.documents
        if d.obj is not None and is_flux_kustomization(d.obj)
    ] == ["flux-system"]
    # no entry point in Git: the whole repo is rendered as before
    without_sync = [d for d in staging if not d.source.endswith("gotk-sync.yaml")]
    assert clusters_of(FLEET, without_sync) == []


def test_a_repo_of_one_cluster_applies_only_what_its_entry_point_reaches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An `.archive/` of old Flux Kustomizations is no entry point: its release is listed as
    applied by no cluster, never failed (auricom/home-ops shape: the sync is in a values file)."""
    repo = tmp_path / "repo"
    shutil.copytree(FLEET.parent / "chart-values-from", repo)
    code, report = _audit(capsys, "--show-unreached", str(repo))
    assert code == 1
    assert [u.removeprefix(str(repo) + "/") for u in report["unreached"]] == [
        ".archive/old-app/app/helmrelease.yaml",
        ".archive/old-app/ks.yaml",
    ]
    assert not any(".archive" in f["source"] for f in report["findings"])
    assert not any("old-app" in p["message"] for p in report["problems"])
    # the entry point itself is applied (by the sync of the chart's values file) and audited
    assert any(f["name"] == "apps" for f in report["findings"])


def test_a_flux_instance_sync_is_an_entry_point() -> None:
    instance = {
        "kind": "FluxInstance",
        "metadata": {"name": "flux", "namespace": "flux-system"},
        "spec": {"sync": {"kind": "OCIRepository", "path": "clusters/eu", "url": "oci://x"}},
    }
    synced = sync_kustomization(instance)
    assert synced is not None
    assert synced["metadata"] == {"name": "flux-system", "namespace": "flux-system"}
    assert synced["spec"]["path"] == "clusters/eu"
    assert synced["spec"]["sourceRef"] == {"kind": "OCIRepository", "name": "flux-system"}
    assert sync_kustomization({"spec": {}}) is None


def test_the_table_shows_notices_and_counts_them_by_kind() -> None:
    from webhook.audit.findings import AuditReport, InputProblem
    from webhook.audit.formats import render_table

    report = AuditReport(
        problems=[
            InputProblem(
                "a.yaml", 1, "skipped: not a Kubernetes object (no apiVersion/kind)", False
            ),
            InputProblem(
                "b.yaml",
                3,
                "FluxInstance x/y: spec.components not recorded, not audited: source-watcher",
                False,
            ),
            InputProblem("c.yaml", 0, "kustomize build failed: no such file", False),
        ]
    )
    text = render_table(report)
    assert "b.yaml:3" in text  # a part not audited is said without -v
    assert "c.yaml" in text
    assert "a.yaml" not in text  # a skipped non-Kubernetes document only with -v
    assert text.endswith(
        "0 input errors\nnotices: 1 skipped (not a Kubernetes object), 1 not audited (not recorded), "
        "1 render\n"
    ), text


def test_clusters_may_live_below_the_repo_root(tmp_path: Path) -> None:
    """home-ops repos keep them in kubernetes/clusters/<name>."""
    shutil.copytree(FLEET, tmp_path / "kubernetes")
    found = clusters_of(tmp_path, list(load([str(tmp_path)])))
    assert [c.name for c in found] == [
        "kubernetes/clusters/production",
        "kubernetes/clusters/staging",
    ]


STAGING_DEFAULTS = """\
  patches:
    - target:
        kind: HelmRelease
      patch: |
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: all
        spec:
          timeout: 10m
"""


def test_a_defaults_patch_counts_and_covers_its_own_cluster_only(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apps = fleet / "clusters/staging/apps.yaml"
    apps.write_text(apps.read_text() + STAGING_DEFAULTS)
    assert main(["fix", "--write", str(fleet)]) == 0
    notes = capsys.readouterr().err
    # staging's patch covers staging's release, not production's of the same name
    assert "one edit covers 1 HelmRelease(s)" in notes
    assert "driftDetection" in apps.read_text()
    assert main(["fix", "--check", str(fleet)]) == 0
    capsys.readouterr()
    code, report = _audit(capsys, str(fleet))
    assert code == 0, _attention(report, fleet)


PARENT = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: cluster-apps
  namespace: flux-system
spec:
  interval: 1h
  path: ./children
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
  patches:
    - patch: |-
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: not-used
        spec:
          patches:
            - patch: |-
                apiVersion: helm.toolkit.fluxcd.io/v2
                kind: HelmRelease
                metadata:
                  name: not-used
                spec:
                  timeout: 10m
              target:
                kind: HelmRelease
      target:
        kind: Kustomization
    - patch: |-
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: not-used
        spec:
          patches:
            - patch: |-
                apiVersion: helm.toolkit.fluxcd.io/v2
                kind: HelmRelease
                metadata:
                  name: other
                spec:
                  timeout: 5m
              target:
                kind: HelmRelease
      target:
        kind: Kustomization
        name: other
"""
CHILD = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 1h
  path: ./{path}
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""


def test_a_child_whose_patches_a_later_parent_patch_replaces_gets_its_own_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kustomize replaces a CRD's list: the second parent patch replaces the child's patches,
    so the defaults patch never reaches `other`; its release is fixed in its own file."""
    repo = tmp_path / "repo"
    shutil.copytree(FLEET / "clusters/staging/flux-system", repo / "clusters/one/flux-system")
    sync = repo / "clusters/one/flux-system/gotk-sync.yaml"
    sync.write_text(sync.read_text().replace("./clusters/staging", "./clusters/one"))
    (repo / "clusters/one/flux-system/kustomization.yaml").write_text(
        "resources: [gotk-sync.yaml]\n"
    )
    (repo / "clusters/one/apps.yaml").write_text(PARENT)
    (repo / "children").mkdir()
    for name in ("podinfo", "other"):
        (repo / f"children/{name}.yaml").write_text(CHILD.format(name=name, path=f"apps/{name}"))
        (repo / f"apps/{name}").mkdir(parents=True)
        release = (
            (FLEET / SHARED)
            .read_text()
            .replace("name: podinfo\n  namespace", f"name: {name}\n  namespace")
        )
        release = release.replace("${RELEASE_INTERVAL}", "30m").replace("-${CLUSTER_NAME}", "")
        (repo / f"apps/{name}/release.yaml").write_text(release)
    assert main(["fix", "--write", str(repo)]) == 0
    assert "one edit covers 1 HelmRelease(s)" in capsys.readouterr().err
    assert "driftDetection" in (repo / "apps/other/release.yaml").read_text()
    assert "driftDetection" not in (repo / "apps/podinfo/release.yaml").read_text()
    assert main(["audit", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()


def test_notes_name_a_kustomization_without_namespace_plainly() -> None:
    from webhook.audit.inventory import _named

    assert _named("/home-assistant") == "home-assistant (no namespace in its file)"
    assert _named("flux-system/apps") == "flux-system/apps"


def _flux_kustomization(name: str, path: str, source: str = "home-kubernetes") -> str:
    return (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        f"metadata: {{name: {name}, namespace: flux-system}}\n"
        f"spec:\n  interval: 30m\n  path: {path}\n  prune: true\n"
        f"  sourceRef: {{kind: GitRepository, name: {source}}}\n"
    )


def test_a_kustomization_that_applies_its_own_file_is_an_entry_point(tmp_path: Path) -> None:
    """The flux-cluster-template shape (Diaoul/home-ops 557e525): the bootstrap applies
    kubernetes/flux/config once, its `cluster` Kustomization then applies ./kubernetes/flux,
    itself included. A Kustomization of the repo root (a tenant's sync of another repo says
    `./` too) and one in `.archive/` are no entry points."""
    files = {
        "kubernetes/flux/config/cluster.yaml": _flux_kustomization("cluster", "./kubernetes/flux"),
        "kubernetes/flux/apps.yaml": _flux_kustomization("cluster-apps", "./kubernetes/apps"),
        ".archive/old/ks.yaml": _flux_kustomization("old", "./.archive/old/app"),
        "tenants/sync.yaml": _flux_kustomization("tenant", "./", source="tenant"),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    documents = list(load([str(tmp_path)]))
    (single,) = clusters_of(tmp_path, documents)
    assert single.name == ""
    assert [
        d.obj["metadata"]["name"]
        for d in single.documents
        if d.obj is not None and is_flux_kustomization(d.obj)
    ] == ["cluster"]
    # without it, no entry point is in Git: every Kustomization starts a render, as before
    rest = [d for d in documents if "config/cluster.yaml" not in d.source]
    assert clusters_of(tmp_path, rest) == []


def test_a_cluster_whose_sync_is_not_in_git_is_built_as_bootstrap_applies_it(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """flux2-multi-tenancy's shape: gotk-sync.yaml is bootstrap's placeholder comment, so no
    Kustomization in Git applies `clusters/X`; Flux's `flux-system` sync (kept in the cluster)
    builds it, so its flux-system/kustomization.yaml patches the controllers. Read as written,
    every controller the patches fix failed (a false positive per patched flag)."""
    _, before = _audit(capsys, str(fleet))
    for cluster in ("production", "staging"):
        sync = fleet / "clusters" / cluster / "flux-system" / "gotk-sync.yaml"
        sync.write_text("# This file will be generated automatically by flux boostrap.\n")
    code, after = _audit(capsys, str(fleet))
    assert code == 1

    def controllers(report: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
        return {
            (f["policy"], f["name"], tuple(f.get("clusters", [])))
            for f in report["findings"]
            if f["result"] == "fail" and f["kind"] == "Deployment"
        }

    assert controllers(after) == controllers(before)
    assert not any(
        f["policy"] == "controller-requeue-dependency"
        for f in after["findings"]
        if f["result"] == "fail"
    )
