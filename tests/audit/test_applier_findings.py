"""kustomization-safety on the objects a Flux Kustomization applies, offline: the inventory says
which Kustomization's build rendered each object (the files carry no kustomize-controller labels),
and the lookups answer from it, as the cluster answers from the labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.cli import SHIPPED_POLICIES, main

REPO = Path(__file__).parent / "repos" / "takeover"
PRODUCTION = SHIPPED_POLICIES.parent / "production.yaml"
TAKEOVER = (
    "would deny: targetNamespace of Flux Kustomization flux-system/workspace renamed this "
    "Namespace to its own namespace"
)


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _judged(capsys: pytest.CaptureFixture[str], *args: str) -> list[tuple[str, str, str, str]]:
    """(result, kind/name, file, first message) of kustomization-safety's non-passing findings
    on Namespaces and claims."""
    main(["audit", "-o", "json", *args])
    report = json.loads(capsys.readouterr().out)
    return sorted(
        (f["result"], f"{f['kind']}/{f['name']}", Path(f["source"]).name, f["messages"][0])
        for f in report["findings"]
        if f["policy"] == "kustomization-safety"
        and f["kind"] in ("Namespace", "PersistentVolumeClaim")
        and f["result"] != "pass"
    )


def test_a_namespace_renamed_to_its_kustomizations_own_namespace_is_found(
    capsys: pytest.CaptureFixture[str],
) -> None:
    judged = _judged(capsys, str(REPO))
    # develop-test, renamed flux-system by workspace's targetNamespace; podinfo's own Namespace
    # (targetNamespace podinfo, the Kustomization lives in flux-system) is the docs' pattern
    assert [(r, o, f) for r, o, f, _ in judged] == [
        ("fail", "Namespace/flux-system", "namespace.yaml")
    ]
    assert judged[0][3].startswith(TAKEOVER)


def test_the_production_profile_warns_namespaces_and_claims_a_pruning_kustomization_deletes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    judged = _judged(capsys, "--policies", str(PRODUCTION), str(REPO))
    assert [(r, o, f) for r, o, f, _ in judged] == [
        ("fail", "Namespace/flux-system", "namespace.yaml"),
        ("warn", "Namespace/podinfo", "namespace.yaml"),
        ("warn", "PersistentVolumeClaim/data", "data.yaml"),
    ]
    assert judged[2][3].startswith(
        "PersistentVolumeClaim of Flux Kustomization flux-system/podinfo: removing it from Git "
        "or deleting flux-system/podinfo deletes it"
    )


def test_marked_prune_disabled_nothing_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "takeover"
    shutil.copytree(REPO, repo)
    for path in ("workspace/namespace.yaml", "podinfo/namespace.yaml", "podinfo/data.yaml"):
        text = (repo / path).read_text()
        marked = "metadata:\n  labels:\n    kustomize.toolkit.fluxcd.io/prune: disabled\n"
        (repo / path).write_text(text.replace("metadata:\n", marked))
    assert _judged(capsys, "--policies", str(PRODUCTION), str(repo)) == []


def test_files_no_kustomization_renders_are_not_judged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without rendering no Kustomization is known to apply them (nor any rename)."""
    assert _judged(capsys, "--no-render", "--policies", str(PRODUCTION), str(REPO)) == []
