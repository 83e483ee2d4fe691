"""A Flux Kustomization is built from what its sourceRef gives it: this repo, an ArtifactGenerator's
copy of it, or nothing (a notice naming the source)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.audit.flux_sources import SourceMap
from webhook.cli import main

ARTIFACTS = Path(__file__).parent / "repos" / "artifacts"


def _ks(name: str, kind: str, source: str, path: str = "./") -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"path": path, "sourceRef": {"kind": kind, "name": source}},
    }


def _git(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"url": url},
    }


def _generator(*rules: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "source.extensions.fluxcd.io/v1beta1",
        "kind": "ArtifactGenerator",
        "metadata": {"name": "gen", "namespace": "flux-system"},
        "spec": {
            "sources": [{"alias": "repo", "kind": "GitRepository", "name": "flux-system"}],
            "artifacts": [{"name": "apps", "copy": [{"from": f, "to": t} for f, t in rules]}],
        },
    }


ENTRY = _ks("flux-system", "GitRepository", "flux-system", "./clusters/a")


def test_an_artifact_that_mirrors_a_directory_is_built_from_it() -> None:
    generator = _generator(
        ("@repo/apps/base/**", "@artifact/base/"), ("@repo/apps/a/**", "@artifact/a/")
    )
    sources = SourceMap.of([generator], [ENTRY])
    resolved = sources.resolve(_ks("apps", "ExternalArtifact", "apps", "./a"))
    assert resolved.kustomization is not None
    assert resolved.kustomization["spec"]["path"] == "apps/a"
    whole = SourceMap.of([_generator(("@repo/infrastructure/**", "@artifact/"))], [ENTRY])
    built = whole.resolve(_ks("infra", "ExternalArtifact", "apps", "./controllers"))
    assert built.kustomization is not None
    assert built.kustomization["spec"]["path"] == "infrastructure/controllers"


def test_an_artifact_with_another_layout_or_no_generator_is_said() -> None:
    moved = _generator(("@repo/apps/base/**", "@artifact/common/"))
    resolved = SourceMap.of([moved], [ENTRY]).resolve(_ks("apps", "ExternalArtifact", "apps"))
    assert resolved.kustomization is None
    assert "copy rules do not keep a directory" in str(resolved.notice)
    missing = SourceMap.of([], [ENTRY]).resolve(_ks("apps", "ExternalArtifact", "apps"))
    assert "no ArtifactGenerator" in str(missing.notice)


def test_other_sources_are_not_audited_unless_they_are_this_repo() -> None:
    repo_url = "ssh://git@example.com/fleet"
    objects = [_git("flux-system", repo_url), _git("same", repo_url), _git("other", "https://x/y")]
    sources = SourceMap.of(objects, [ENTRY, _ks("t", "GitRepository", "other")])
    assert sources.resolve(_ks("a", "GitRepository", "same")).kustomization is not None
    other = sources.resolve(_ks("t", "GitRepository", "other"))
    assert other.kustomization is None
    assert other.notice == "not audited: GitRepository/flux-system/other https://x/y"
    # no flux-system source anywhere: every source the Kustomizations name is this repo
    custom = SourceMap.of(objects, [_ks("t", "GitRepository", "other")])
    assert custom.resolve(_ks("t", "GitRepository", "other")).kustomization is not None


def test_a_repo_with_an_artifact_and_a_tenant_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))
    repo = tmp_path / "artifacts"
    shutil.copytree(ARTIFACTS, repo)
    code = main(["audit", "-o", "json", str(repo)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    failing = [
        (f["name"], f["source"].removeprefix(f"{repo}/"))
        for f in report["findings"]
        if f["result"] == "fail"
    ]
    # reached through the ExternalArtifact, once (the tenant repo's ./apps is not this repo's)
    assert failing == [("podinfo", "apps/base/podinfo/release.yaml")]
    assert "unreached" not in report
    assert [p["message"] for p in report["problems"]] == [
        "Flux Kustomization flux-system/tenant-a: not audited: "
        "GitRepository/flux-system/tenant-a https://example.com/tenant-a.git"
    ]


def test_an_artifact_of_the_flux_system_source_is_this_repo_without_a_sync_in_git() -> None:
    """flux2-kustomize-helm-example: gotk-sync.yaml is a placeholder, every Kustomization of the
    cluster reads an ExternalArtifact of the `flux-system` GitRepository."""
    generator = _generator(("@repo/apps/base/**", "@artifact/base/"))
    entries = [_ks("apps", "ExternalArtifact", "apps", "./base")]
    resolved = SourceMap.of([generator], entries).resolve(entries[0])
    assert resolved.kustomization is not None
    assert resolved.kustomization["spec"]["path"] == "apps/base"
