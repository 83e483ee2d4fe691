"""helmrelease-release-identity through the real kube-apiserver: the API server sends the stored
object as oldObject on UPDATE, the generated matchConditions let exactly these requests through,
and an update that would make helm-controller reinstall an installed release is denied until
the acknowledgement annotation names the new target."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import WebhookServer

pytestmark = pytest.mark.e2e

NAME = "identity"
# What helm-controller records once it installed the release (api/v2 Snapshot's required fields).
INSTALLED = {
    "storageNamespace": "apps",
    "history": [
        {
            "name": NAME,
            "namespace": "apps",
            "version": 1,
            "status": "deployed",
            "chartName": "podinfo",
            "chartVersion": "6.5.0",
            "configDigest": "sha256:0",
            "digest": "sha256:0",
            "firstDeployed": "2026-01-01T00:00:00Z",
            "lastDeployed": "2026-01-01T00:00:00Z",
        }
    ],
}


def _release(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": NAME, "namespace": "apps"},
        "spec": {
            "interval": "10m",
            "driftDetection": {"mode": "enabled"},
            "install": {"strategy": {"name": "RetryOnFailure"}},
            "upgrade": {"strategy": {"name": "RetryOnFailure"}},
            "chart": {
                "spec": {
                    "chart": "podinfo",
                    "sourceRef": {"kind": "HelmRepository", "name": "podinfo"},
                }
            },
            **spec,
        },
    }


def _kubectl(cluster: ControlPlane, *args: str, obj: dict[str, Any] | None = None) -> Any:
    return cluster.kubectl(*args, input=json.dumps(obj) if obj else None, check=False)


@pytest.fixture
def installed_release(cluster: ControlPlane, fluxwarden: WebhookServer) -> Any:
    """A HelmRelease whose status says helm-controller installed it (written through the status
    subresource, as the controller writes it)."""
    created = _kubectl(cluster, "create", "-f", "-", obj=_release())
    assert created.returncode == 0, created.stderr
    status = {"status": INSTALLED}
    patched = _kubectl(
        cluster, "patch", "helmrelease", NAME, "-n", "apps", "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    yield
    _kubectl(cluster, "delete", "helmrelease", NAME, "-n", "apps", "--ignore-not-found")


def _replace(cluster: ControlPlane, obj: dict[str, Any], *dry: str) -> Any:
    return _kubectl(cluster, "replace", "-o", "json", "-f", "-", *dry, obj=obj)


def test_a_release_name_change_is_denied_for_real_and_at_dry_run(
    cluster: ControlPlane, installed_release: None
) -> None:
    renamed = _release(releaseName="identity-v2")
    for dry in ([], ["--dry-run=server"]):
        result = _replace(cluster, renamed, *dry)
        assert result.returncode != 0, dry
        assert "fluxwarden denied the request: helmrelease-release-identity: " in result.stderr
        assert "release name identity -> identity-v2" in result.stderr
        assert 'fluxwarden.io/reinstall-release: "apps/apps/identity-v2/podinfo"' in result.stderr
    stored = json.loads(cluster.kubectl("get", "helmrelease", NAME, "-n", "apps", "-o",
                                        "json").stdout)  # fmt: skip
    assert "releaseName" not in stored["spec"]


def test_the_acknowledgement_naming_the_new_target_lets_it_through_with_a_warning(
    cluster: ControlPlane, installed_release: None
) -> None:
    moved = _release(targetNamespace="web")
    annotations = {"fluxwarden.io/reinstall-release": "apps/web/web-identity/podinfo"}
    moved["metadata"]["annotations"] = annotations
    result = _replace(cluster, moved)
    assert result.returncode == 0, result.stderr
    assert (
        "fluxwarden: helmrelease-release-identity: acknowledged: helm-controller will uninstall "
        "release apps/identity and install web/web-identity"
    ) in result.stderr
    assert json.loads(result.stdout)["spec"]["targetNamespace"] == "web"


def test_an_update_that_keeps_the_release_is_allowed_silently(
    cluster: ControlPlane, installed_release: None
) -> None:
    result = _replace(cluster, _release(values={"replicaCount": 2}))
    assert result.returncode == 0, result.stderr
    assert "helmrelease-release-identity" not in result.stderr


def test_a_release_never_installed_can_be_renamed(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    created = _kubectl(cluster, "create", "-f", "-", obj=_release())
    assert created.returncode == 0, created.stderr
    try:
        result = _replace(cluster, _release(releaseName="identity-v2"))
        assert result.returncode == 0, result.stderr
    finally:
        _kubectl(cluster, "delete", "helmrelease", NAME, "-n", "apps", "--ignore-not-found")
