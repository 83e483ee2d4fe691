"""Flux installed from the `flux-instance` chart's values or from the `flux-manifests` OCI
artifact is audited as the controllers it installs, and fixed in the user's patches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.audit.test_render import kubectl_or_skip
from webhook.audit.flux_installs import flux_install, source_index, written_ops
from webhook.audit.fluxinstance import materialise
from webhook.cli import main

REPOS = Path(__file__).parent / "repos"
CHART_FILE = "clusters/prod/flux-instance.yaml"
MANIFESTS_FILE = "clusters/prod/flux.yaml"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _copy(tmp_path: Path, name: str) -> Path:
    shutil.copytree(REPOS / name, tmp_path / name)
    return tmp_path / name


def _audit(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["audit", "-o", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def _failing(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {
        (f["policy"], f["name"]): f["line"]
        for f in report["findings"]
        if f["result"] in ("fail", "warn")
    }


def _line(path: Path, text: str, after: int = 0) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if i >= after and text in line)


def test_the_chart_values_are_audited_as_the_controllers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "chart-instance")
    code, report = _audit(capsys, repo)
    assert code == 1
    file = repo / CHART_FILE
    requeue = _line(file, "--requeue-dependency=30s") - 1  # the op's path line
    assert _failing(report) == {
        # the values' own patch set 30s: the findings point at it
        ("controller-requeue-dependency", "kustomize-controller"): requeue,
        ("controller-requeue-dependency", "helm-controller"): requeue,
        # chart defaults (no components in the values): the instance section's line
        ("source-controller-storage", "source-controller"): _line(file, "instance:"),
        # the release itself sets no install/upgrade strategy, and the chart's helm-controller
        # runs without the DefaultToRetryOnFailure gate
        ("helmrelease-remediation", "flux-instance"): _line(file, "kind: HelmRelease") - 1,
    }
    notes = [
        f["messages"][-1]
        for f in report["findings"]
        if f["result"] == "fail" and f["kind"] == "Deployment"
    ]
    assert all("HelmRelease flux-system/flux-instance (flux-instance chart" in n for n in notes)


def test_the_chart_values_are_fixed_by_value_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "chart-instance")
    file = repo / CHART_FILE
    before = file.read_text()
    assert main(["fix", "--write", str(repo)]) == 0
    after = file.read_text()
    # the value of the op that set it, not an op on an args index; comments kept
    assert "--requeue-dependency=5s" in after
    assert "30s" not in after
    assert "# a slow dependency requeue" in after
    assert after.startswith(before.split("--requeue-dependency=30s")[0])
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()
    assert _audit(capsys, repo)[0] == 0


def test_chart_values_without_patches_get_the_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "chart-instance")
    file = repo / CHART_FILE
    documents = list(yaml.safe_load_all(file.read_text()))
    del documents[1]["spec"]["values"]["instance"]["kustomize"]
    file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    values = list(yaml.safe_load_all(file.read_text()))[1]["spec"]["values"]["instance"]
    assert sorted(p["target"]["name"] for p in values["kustomize"]["patches"]) == [
        "helm-controller",
        "kustomize-controller",
        "source-controller",
    ]
    assert _audit(capsys, repo)[0] == 0


def test_flux_manifests_are_audited_not_built_from_the_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "flux-manifests")
    code, report = _audit(capsys, repo)
    assert code == 1
    file = repo / MANIFESTS_FILE
    assert _failing(report) == {
        # upstream v2.7.3: /data and /tmp unbounded; at the Kustomization (nothing written)
        ("source-controller-storage", "source-controller"): _line(file, "kind: Kustomization") - 1,
        # the Kustomization's patch set 1536Mi
        ("irc-single-replica", "image-reflector-controller"): _line(file, "value: 1536Mi") - 1,
    }
    kinds = [(f["kind"], f["name"]) for f in report["findings"]]
    # the requeue patch applied: both controllers pass; the repo is rendered once
    assert ("Deployment", "kustomize-controller") in kinds
    assert len(kinds) == len(
        {(f["policy"], k) for f, k in zip(report["findings"], kinds, strict=True)}
    )
    assert report["problems"] == []


def test_flux_manifests_are_fixed_in_the_kustomization_patches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "flux-manifests")
    assert main(["fix", "--write", str(repo)]) == 0
    patches = list(yaml.safe_load_all((repo / MANIFESTS_FILE).read_text()))[1]["spec"]["patches"]
    assert yaml.safe_load(patches[1]["patch"])[0]["value"] == "2Gi"
    assert patches[2]["target"] == {"kind": "Deployment", "name": "source-controller"}
    assert main(["fix", "--check", str(repo)]) == 0
    capsys.readouterr()
    assert _audit(capsys, repo)[0] == 0


def test_an_unrecorded_flux_manifests_tag_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _copy(tmp_path, "flux-manifests")
    file = repo / MANIFESTS_FILE
    file.write_text(file.read_text().replace("tag: v2.7.3", "tag: v3.1.0"))
    code, report = _audit(capsys, repo)
    assert code == 0
    messages = [p["message"] for p in report["problems"]]
    assert any("flux-manifests" in m and "not recorded" in m for m in messages), messages


RELEASE: dict[str, Any] = {
    "apiVersion": "helm.toolkit.fluxcd.io/v2",
    "kind": "HelmRelease",
    "metadata": {"name": "flux", "namespace": "flux-system"},
    "spec": {
        "targetNamespace": "gitops",
        "chart": {"spec": {"chart": "flux-instance", "sourceRef": {"kind": "HelmRepository"}}},
        "values": {"instance": {"cluster": {"size": "small"}, "components": ["helm-controller"]}},
    },
}


def test_the_chart_instance_merges_values_over_the_chart_defaults() -> None:
    install = flux_install(RELEASE, {})
    assert install is not None
    assert install.instance["metadata"] == {"name": "flux", "namespace": "gitops"}
    spec = install.instance["spec"]
    assert spec["distribution"] == {"version": "2.x", "registry": "ghcr.io/fluxcd"}
    assert spec["components"] == ["helm-controller"]  # a list replaces the default
    assert spec["cluster"]["size"] == "small"
    assert spec["cluster"]["multitenant"] is False
    assert "storage" not in spec  # the template omits them
    assert "sharding" not in spec
    assert install.pointer("/spec/components/0") == "/spec/values/instance/components/0"
    other = {**RELEASE, "spec": {**RELEASE["spec"], "chart": {"spec": {"chart": "podinfo"}}}}
    assert flux_install(other, {}) is None


def test_a_fix_creates_the_missing_sections_of_the_values() -> None:
    install = flux_install(RELEASE, {})
    assert install is not None
    entry = {"target": {"kind": "Deployment", "name": "x"}, "patch": "[]"}
    ops = [{"op": "add", "path": "/spec/kustomize/patches/-", "value": entry}]
    assert written_ops(install, RELEASE, ops) == [
        {"op": "add", "path": "/spec/values/instance/kustomize", "value": {"patches": [entry]}}
    ]


def test_chart_ref_names_the_chart_through_its_oci_repository() -> None:
    source = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": "fi", "namespace": "flux-system"},
        "spec": {"url": "oci://ghcr.io/controlplaneio-fluxcd/charts/flux-instance"},
    }
    release = {**RELEASE, "spec": {"chartRef": {"kind": "OCIRepository", "name": "fi"}}}
    assert flux_install(release, source_index([source])) is not None
    assert flux_install(release, {}) is None


VALUES_FROM = "chart-values-from"
VALUES_FROM_RELEASE = "kubernetes/apps/flux-system/flux-instance/app/helmrelease.yaml"


def _chart_sources(repo: str) -> dict[tuple[str, str, str], Any]:
    """The chart's OCIRepository (in the release's namespace), for `chartRef`."""
    app = REPOS / repo / "kubernetes/apps/flux-system/flux-instance/app"
    source = yaml.safe_load((app / "ocirepository.yaml").read_text())
    source["metadata"]["namespace"] = "flux-system"
    return source_index([source])


def _chart_release(repo: str) -> dict[str, Any]:
    release = yaml.safe_load((REPOS / repo / VALUES_FROM_RELEASE).read_text())
    release["metadata"]["namespace"] = "flux-system"
    return cast(dict[str, Any], release)


def test_chart_values_from_a_generated_configmap_are_the_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helm-controller reads `valuesFrom` before `values`: the version and the requeue patch of
    the values file are the instance's, not the chart's defaults (auricom/home-ops shape)."""
    repo = _copy(tmp_path, VALUES_FROM)
    code, report = _audit(capsys, repo)
    assert code == 1
    file = repo / VALUES_FROM_RELEASE
    # the values file sets --requeue-dependency=5s: only the storage finding is true
    assert _failing(report) == {
        ("source-controller-storage", "source-controller"): _line(file, "spec:"),
    }
    notes = [
        f["messages"][-1]
        for f in report["findings"]
        if f["kind"] == "Deployment" and f["result"] == "fail"
    ]
    assert notes == [
        "from HelmRelease flux-system/flux-instance (flux-instance chart values) "
        "(Flux '2.7.0' controller defaults, its patches applied)"
    ]


def test_chart_values_from_a_configmap_are_not_overwritten_by_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Helm replaces lists: a patch list written into `spec.values` would drop the values
    file's patches, so the release is left as it is."""
    repo = _copy(tmp_path, VALUES_FROM)
    release = (repo / VALUES_FROM_RELEASE).read_text()
    main(["fix", "--write", str(repo)])
    capsys.readouterr()
    assert (repo / VALUES_FROM_RELEASE).read_text() == release


VALUES_FILE = "kubernetes/apps/flux-system/flux-instance/app/helm/values.yaml"


def test_chart_values_from_a_generated_configmap_are_fixed_in_their_values_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The patch list the instance was built with is the values file's (the ConfigMap is
    generated from it next to the release): the storage fix is appended there, the written
    patches kept as they are, and the next audit has nothing to fix."""
    repo = _copy(tmp_path, VALUES_FROM)
    before = (repo / VALUES_FILE).read_text()
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    after = (repo / VALUES_FILE).read_text()
    assert after.startswith(before)  # appended: nothing written is touched
    patches = yaml.safe_load(after)["instance"]["kustomize"]["patches"]
    assert len(patches) == 2
    assert patches[1]["target"] == {"kind": "Deployment", "name": "source-controller"}
    assert "sizeLimit" in patches[1]["patch"]
    code, report = _audit(capsys, repo)
    assert code == 0, _failing(report)


def test_chart_values_from_a_written_configmap_are_not_fixed_but_said_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A values ConfigMap written as a manifest holds its values as a string: fix does not edit
    YAML inside a string, and says where the patches go (exit 2, never `--check` 0 while the
    audit fails)."""
    repo = _copy(tmp_path, VALUES_FROM)
    app = repo / "kubernetes/apps/flux-system/flux-instance/app"
    values = (app / "helm/values.yaml").read_text()
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "flux-instance-values"},
        "data": {"values.yaml": values},
    }
    (app / "configmap.yaml").write_text(yaml.safe_dump(configmap))
    (app / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        "  - ./ocirepository.yaml\n  - ./helmrelease.yaml\n  - ./configmap.yaml\n"
    )
    assert main(["fix", "--check", str(repo)]) == 2
    assert "its instance.kustomize.patches come from spec.valuesFrom" in capsys.readouterr().err
    assert (app / "helm/values.yaml").read_text() == values


def test_chart_values_from_a_secret_are_not_guessed() -> None:
    release = _chart_release(VALUES_FROM)
    release["spec"]["valuesFrom"] = [{"kind": "Secret", "name": "flux-values"}]
    install = flux_install(release, _chart_sources(VALUES_FROM))
    assert install is not None
    materialised = materialise(install.instance, [])
    assert materialised.deployments == []
    assert materialised.problem == (
        "not audited: its values come from Secret flux-system/flux-values, not read"
    )


def test_chart_values_from_an_optional_missing_configmap_are_skipped() -> None:
    release = _chart_release(VALUES_FROM)
    release["spec"]["valuesFrom"] = [{"kind": "ConfigMap", "name": "gone", "optional": True}]
    install = flux_install(release, _chart_sources(VALUES_FROM))
    assert install is not None
    assert materialise(install.instance, []).problem is None


def test_the_chart_sync_in_the_values_is_the_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chart renders `instance.sync` (onedr0p/home-ops shape): the directory it syncs is
    applied, so its Kustomization is audited, not listed as applied by no cluster."""
    repo = _copy(tmp_path, "chart-sync")
    code, report = _audit(capsys, repo)
    assert code == 1
    assert "unreached" not in report
    entry = repo / "kubernetes/flux/cluster/ks.yaml"
    assert _failing(report) == {
        ("flux-intervals", "cluster-apps"): _line(entry, "interval: 30s"),
        ("source-controller-storage", "source-controller"): _line(
            repo / "kubernetes/apps/flux-system/flux-instance/app/helmrelease.yaml", "instance:"
        ),
    }


def test_the_chart_instance_renders_the_sync_of_the_values() -> None:
    install = flux_install(_chart_release("chart-sync"), _chart_sources("chart-sync"))
    assert install is not None
    assert install.instance["spec"]["sync"] == {
        "kind": "GitRepository",
        "interval": "1m",  # the chart's default
        "url": "https://example.com/fleet/home-ops",
        "ref": "refs/heads/main",
        "path": "kubernetes/flux/cluster",
    }
