"""fluxwarden's renderer and Flux's build library give the same objects on the fixture repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controlplane.cluster import default_bin_dir
from tests.fluxbuild.differential import compare, fluxbuild_binary

REPOS = Path(__file__).resolve().parents[1] / "audit" / "repos"


def test_bootstrap_repo_renders_as_flux_builds_it() -> None:
    binary = fluxbuild_binary()
    kubectl = default_bin_dir() / "kubectl"
    if binary is None or not kubectl.is_file():
        pytest.fail("Flux's build library or kubectl is not built: run `make controlplane`")
    assert (
        compare(
            REPOS / "bootstrap",
            binary,
            [str(kubectl), "kustomize", "--load-restrictor", "LoadRestrictionsNone"],
        )
        == []
    )
