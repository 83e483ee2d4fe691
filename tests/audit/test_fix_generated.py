"""fix of a generated gotk-components.yaml: by value in the including kustomization.yaml's
patches, never by the position a flag happens to have in the rendered list (issue 18, item 5)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import KUBE_SYSTEM_POLICIES, REPOS, kubectl_or_skip
from webhook.cli import main

WHOLE_ARGS_PATCH = """\
patches:
  # the team's own argument list for kustomize-controller
  - patch: |
      - op: replace
        path: /spec/template/spec/containers/0/args
        value:
          - --events-addr=http://notification-controller.flux-system.svc.cluster.local./
          - --watch-all-namespaces=true
          - --log-level=info
          - --log-encoding=json
          - --enable-leader-election
          - --requeue-dependency=30s
          - --concurrent=8
    target:
      kind: Deployment
      name: kustomize-controller
"""


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _built_args(flux_system: Path) -> dict[str, list[str]]:
    built = subprocess.run(
        [str(kubectl_or_skip()), "kustomize", str(flux_system)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    deployments: list[Any] = [
        d for d in yaml.safe_load_all(built) if d and d["kind"] == "Deployment"
    ]
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in deployments
    }


def test_a_flag_inside_a_patched_argument_list_is_edited_in_that_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The patch that set `--requeue-dependency=30s` wrote the whole list: fix edits that item
    of the list (the other flags and their order kept), and appends the flag for
    helm-controller, whose args no patch writes."""
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    flux_system = repo / "clusters/prod/flux-system"
    kustomization = flux_system / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().split("patches:")[0] + WHOLE_ARGS_PATCH)
    before = _built_args(flux_system)["kustomize-controller"]
    policies = ["--policies", str(KUBE_SYSTEM_POLICIES)]
    assert main(["fix", *policies, "--check", str(repo)]) == 1
    assert main(["fix", *policies, "--write", str(repo)]) == 0
    assert main(["fix", *policies, "--check", str(repo)]) == 0
    capsys.readouterr()
    fixed = kustomization.read_text()
    assert "# the team's own argument list for kustomize-controller" in fixed
    args = _built_args(flux_system)
    assert args["kustomize-controller"] == [
        "--requeue-dependency=5s" if a.startswith("--requeue-dependency") else a for a in before
    ]
    helm = [a for a in args["helm-controller"] if a.startswith("--requeue-dependency")]
    assert helm == ["--requeue-dependency=5s"]
    assert main(["audit", *policies, str(repo)]) == 0
    capsys.readouterr()


def test_a_kustomization_file_without_api_version_and_kind_gets_the_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kustomize defaults apiVersion and kind, so many kustomization.yaml files leave them
    out: the patch for the generated file's controllers is still written there."""
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    flux_system = repo / "clusters/prod/flux-system"
    kustomization = flux_system / "kustomization.yaml"
    text = kustomization.read_text().split("patches:")[0]
    kustomization.write_text(
        text.replace("apiVersion: kustomize.config.k8s.io/v1beta1\n", "").replace(
            "kind: Kustomization\n", ""
        )
    )
    policies = ["--policies", str(KUBE_SYSTEM_POLICIES)]
    assert main(["fix", *policies, "--write", str(repo)]) == 0
    assert main(["fix", *policies, "--check", str(repo)]) == 0
    capsys.readouterr()
    assert kustomization.read_text().startswith("resources:\n")
    args = _built_args(flux_system)
    for name in ("kustomize-controller", "helm-controller"):
        assert [a for a in args[name] if "requeue" in a] == ["--requeue-dependency=5s"]
