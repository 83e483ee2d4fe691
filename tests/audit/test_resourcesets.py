"""The objects a Flux Operator ResourceSet applies from entries without template actions are
audited at their entry and fixed there; templated entries are a notice (issue 18, item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import kubectl_or_skip
from webhook.audit.audit_object import AuditObject
from webhook.audit.documents import parse_stream
from webhook.audit.findings import AuditReport, ObjectLocation
from webhook.audit.resourcesets import (
    applied,
    has_template_action,
    resource_set_fix,
    with_resource_sets,
)
from webhook.audit.sources import field_line
from webhook.cli import main

REPO = Path(__file__).parent / "repos" / "resourceset"
OPERATOR_FILE = "clusters/prod/flux-system/flux-operator.yaml"
TENANTS_FILE = "tenants/apps.yaml"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO, tmp_path / "resourceset")
    return tmp_path / "resourceset"


def _audit(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["audit", "-o", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def _line(path: Path, text: str, after: int = 0) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if i >= after and text in line)


def test_a_static_release_in_a_resourceset_is_audited_at_its_entry(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _audit(capsys, repo)
    assert code == 1
    failing = [f for f in report["findings"] if f["result"] in ("fail", "warn")]
    expected = []
    for cluster in ("clusters/prod", "clusters/staging"):  # each cluster's own ResourceSet
        file = repo / cluster / "flux-system/flux-operator.yaml"
        # the mutated field's line: the entry's `spec:` (driftDetection goes there)
        spec = _line(file, "spec:", after=_line(file, "kind: HelmRelease"))
        expected.append((str(file), spec, "HelmRelease/flux-operator", "helmrelease-drift-detection",
                         "from ResourceSet flux-system/flux-operator", [cluster]))  # fmt: skip
    assert [
        (f["source"], f["line"], f"{f['kind']}/{f['name']}", f["policy"], f["messages"][-1],
         f["clusters"])
        for f in failing
    ] == expected  # fmt: skip
    # the other static entry is judged too, at its entry's line
    file = repo / OPERATOR_FILE
    judged = {(f["source"], f["kind"], f["line"]) for f in report["findings"]}
    assert (str(file), "OCIRepository", _line(file, "- apiVersion: source.toolkit")) in judged


def test_templated_entries_are_one_notice_and_never_judged(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _audit(capsys, repo)
    notices = [p for p in report["problems"] if "ResourceSet" in p["message"]]
    assert notices == [  # the tenants both clusters apply: said once
        {
            "source": str(repo / TENANTS_FILE),
            "line": _line(repo / TENANTS_FILE, "apiVersion:"),
            "message": "not audited: ResourceSet flux-system/apps templates 2 resource(s) "
            "from its inputs",
            "error": False,
        }
    ]
    # the templated podinfo release (no drift detection) is not judged; the static ConfigMap
    # of the same set is among the objects
    assert not [f for f in report["findings"] if f["name"] == "podinfo"]
    assert report["summary"]["objects"] == 18  # per cluster: 9


def test_fix_writes_into_the_entry(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = repo / OPERATOR_FILE
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    written = yaml.safe_load(file.read_text())
    release = written["spec"]["resources"][1]
    assert release["spec"]["driftDetection"] == {"mode": "enabled"}
    assert "# the release the operator applies as written" in file.read_text()  # comments kept
    code, report = _audit(capsys, repo)
    assert code == 0
    assert not [f for f in report["findings"] if f["result"] == "fail"]
    assert main(["fix", "--check", str(repo)]) == 0


def _resource_set_item(text: str) -> tuple[Any, AuditObject]:
    document = next(iter(parse_stream(text, "rs.yaml")))
    assert document.obj is not None
    location = ObjectLocation("rs.yaml", 1, "fluxcd.controlplane.io/v1", "ResourceSet", "ns", "rs")
    return document, AuditObject(document.obj, location, (), document, cluster="c")


RESOURCE_SET = """\
apiVersion: fluxcd.controlplane.io/v1
kind: ResourceSet
metadata:
  name: rs
  namespace: ns
spec:
  commonMetadata:
    annotations:
      example.com/acknowledged: "true"
  steps:
    - name: first
      resources:
        - apiVersion: v1
          kind: ConfigMap
          metadata:
            name: static
            namespace: ns
          data:
            key: value
        - apiVersion: v1
          kind: ConfigMap
          metadata:
            name: << inputs.name >>
"""


def test_step_entries_are_applied_with_the_operators_metadata() -> None:
    _, item = _resource_set_item(RESOURCE_SET)
    report = AuditReport()
    objects = with_resource_sets([item], report)
    assert [o.location.name for o in objects] == ["rs", "static"]
    embedded = objects[1]
    assert embedded.location.line == 13  # `- apiVersion: v1` of the step's first entry
    assert embedded.document is not None  # its own fields' lines, for findings at a field
    assert field_line(embedded.document, ["/data/key"]) == 19
    assert embedded.obj["metadata"]["annotations"] == {"example.com/acknowledged": "true"}
    assert embedded.obj["metadata"]["labels"] == {
        "resourceset.fluxcd.controlplane.io/name": "rs",
        "resourceset.fluxcd.controlplane.io/namespace": "ns",
    }
    assert [p.message for p in report.problems] == [
        "not audited: ResourceSet ns/rs templates 1 resource(s) from its inputs"
    ]


def test_a_fix_the_entry_cannot_take_is_an_error_naming_the_entry() -> None:
    document, item = _resource_set_item(RESOURCE_SET)
    objects = with_resource_sets([item], AuditReport())

    def ops_of(item: AuditObject) -> tuple[list[Any], str]:
        if item.obj["metadata"]["name"] != "static":
            return [], ""
        # the annotations are the operator's (commonMetadata): not written in the entry
        return [{"op": "replace", "path": "/metadata/annotations/x", "value": "y"}], "p"

    fix = resource_set_fix(document, objects, ops_of)
    assert fix.ops == []
    assert [(p.message, p.error) for p in fix.problems] == [
        (
            "ConfigMap not fixed: inside ResourceSet ns/rs (edit spec.steps[0].resources[0]): "
            "its fix edits a field the operator adds",
            True,
        )
    ]

    def data_ops(item: AuditObject) -> tuple[list[Any], str]:
        return [{"op": "add", "path": "/data/other", "value": "v"}], "p"

    fixed = resource_set_fix(document, objects, data_ops)
    assert fixed.ops == [
        {"op": "add", "path": "/spec/steps/0/resources/0/data/other", "value": "v"}
    ]


def test_template_actions_are_the_operators_delimiters() -> None:
    assert has_template_action({"name": "<< inputs.tenant >>"})
    assert has_template_action({"<< if inputs.x >>": 1})
    assert not has_template_action({"name": "{{ .Values.x }}", "n": 1})
    assert applied({"metadata": {"name": "rs", "namespace": "ns"}}, {"metadata": {}})["metadata"][
        "labels"
    ] == {
        "resourceset.fluxcd.controlplane.io/name": "rs",
        "resourceset.fluxcd.controlplane.io/namespace": "ns",
    }


INSTANCE_REPO = Path(__file__).parent / "repos" / "resourceset-instance"
INSTANCE_FILE = "clusters/prod/flux-system/flux.yaml"


def test_a_flux_instance_in_a_resourceset_is_installed_audited_and_fixed_in_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A static FluxInstance entry is the FluxInstance the operator applies: its controllers
    are materialised (source-controller's unbounded emptyDirs fail), and the fix is one more
    patch in the entry's `spec.kustomize.patches`, the written patch kept."""
    repo = tmp_path / "repo"
    shutil.copytree(INSTANCE_REPO, repo)
    code, report = _audit(capsys, repo)
    assert code == 1
    failing = [
        (f["kind"], f["name"], f["policy"], f["source"].removeprefix(f"{repo}/"))
        for f in report["findings"]
        if f["result"] == "fail"
    ]
    assert failing == [
        ("Deployment", "source-controller", "source-controller-storage", INSTANCE_FILE)
    ]
    written = (repo / INSTANCE_FILE).read_text()
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    fixed = (repo / INSTANCE_FILE).read_text()
    entry = yaml.safe_load(fixed)["spec"]["resources"][0]
    patches = entry["spec"]["kustomize"]["patches"]
    assert len(patches) == 2
    assert "--requeue-dependency=5s" in patches[0]["patch"]
    assert patches[1]["target"] == {"kind": "Deployment", "name": "source-controller"}
    assert fixed.startswith(written.rstrip("\n"))  # appended after the written patch
    assert _audit(capsys, repo)[0] == 0
