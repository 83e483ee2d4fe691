"""The gate confines kustomize as Flux does: where Flux's own build library (fluxcd/pkg
`kustomize.SecureBuild`, in tests/fluxbuild) refuses a Kustomization, fluxwarden renders nothing
from it; where Flux builds it (a file elsewhere in the repo, not only below the kustomization's
directory), fluxwarden renders the same objects.

Remote resources are not compared: Flux's build (`SecureBuild(root, dir, false)`) still fetches
an `http(s)://` resource (kustomize's HTTP loader bypasses the secure file system); the gate
fetches nothing unless told to (test_gate_confinement.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit.test_gate_confinement import (
    FLUX_KS,
    _escaping,
    _outside_token,
    _write,
)
from tests.controlplane.cluster import default_bin_dir
from tests.fluxbuild.differential import compare, fluxbuild_binary


def _compare(repo: Path) -> list[str]:
    binary = fluxbuild_binary()
    kubectl = default_bin_dir() / "kubectl"
    if binary is None or not kubectl.is_file():
        pytest.skip("Flux's build library or kubectl is not built: run `make controlplane`")
    command = [str(kubectl), "kustomize", "--load-restrictor", "LoadRestrictionsNone"]
    return compare(repo, binary, command)


def _app(repo: Path, kustomization: dict[str, object]) -> Path:
    """A repo whose Flux Kustomization `app` builds ./apps/app with `kustomization`."""
    ks = {
        "apiVersion": FLUX_KS,
        "kind": "Kustomization",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": "./apps/app",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        },
    }
    _write(repo / "clusters/prod/app.yaml", [ks])
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}}
    _write(repo / "apps/app/cm.yaml", [config])
    _write(repo / "apps/app/kustomization.yaml", [kustomization])
    return repo


def _generator(file: str) -> dict[str, object]:
    return {
        "resources": ["cm.yaml"],
        "configMapGenerator": [{"name": "vars", "files": [f"token={file}"]}],
    }


def test_a_file_elsewhere_in_the_repo_builds_as_in_flux(tmp_path: Path) -> None:
    repo = _app(tmp_path / "repo", _generator("../../shared/token.txt"))
    _write(repo / "shared/token.txt", "in-repo")
    assert _compare(repo) == []


@pytest.mark.parametrize("form", ["relative", "absolute", "symlink"])
def test_what_flux_refuses_renders_nothing(tmp_path: Path, form: str) -> None:
    secret = _outside_token(tmp_path)
    reference = {"relative": _escaping(secret), "absolute": str(secret), "symlink": "token"}[form]
    repo = _app(tmp_path / "repo", _generator(reference))
    if form == "symlink":
        (repo / "apps/app/token").symlink_to(secret)
    assert _compare(repo) == []
