"""kustomization-safety's Namespace takeover on the real API server: which Flux Kustomization
applies a Namespace is read from the labels kustomize-controller puts on it, and that
Kustomization is looked up through the API (the webhook) or the cluster audit's listing.

A Namespace labelled as applied by a pruning Kustomization that lives in it, with that namespace
as its targetNamespace (what kustomize's renaming makes of any Namespace in its build,
fluxcd/flux2#3949), is warned at apply time and found by `audit --cluster`; one labelled by a
Kustomization that targets it from elsewhere (the Flux docs' app pattern) never reaches the
webhook, and one marked `kustomize.toolkit.fluxcd.io/prune: disabled` passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import REPO, WebhookServer, apply_objects, ensure_namespaces

pytestmark = pytest.mark.e2e

OWN = "takeover-e2e"  # the Kustomization's own namespace, and its targetNamespace
APP = "takeover-e2e-app"  # targeted by a Kustomization that lives in OWN
TAKEOVER = (
    f"fluxwarden: kustomization-safety: would deny: targetNamespace of Flux Kustomization "
    f"{OWN}/apps renamed this Namespace to its own namespace"
)
AUDIT = (sys.executable, "-m", "webhook", "audit", "--cluster", "--kubeconfig")
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "kustomize.toolkit.fluxcd.io/namespace")


def _kustomization(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": OWN},
        "spec": {
            "interval": "10m",
            "path": f"./{name}",
            "prune": True,
            "wait": True,
            "targetNamespace": target,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        },
    }


def _label(cluster: ControlPlane, namespace: str, *labels: str) -> subprocess.CompletedProcess[str]:
    """`kubectl label --overwrite`: an UPDATE of the Namespace, as Flux's apply makes one."""
    return cluster.kubectl("label", "namespace", namespace, "--overwrite", *labels)


def _applied_by(kustomization: str) -> tuple[str, str]:
    return (f"{FLUX_LABELS[0]}={kustomization}", f"{FLUX_LABELS[1]}={OWN}")


@pytest.fixture(scope="module")
def owned(cluster: ControlPlane, fluxwarden: WebhookServer) -> Iterator[ControlPlane]:
    ensure_namespaces(cluster, OWN, APP)
    apply_objects(cluster, [_kustomization("apps", OWN), _kustomization("podinfo", APP)])
    try:
        yield cluster
    finally:  # no namespace controller here: the namespaces stay, unlabelled
        for namespace in (OWN, APP):
            unlabel = [f"{key}-" for key in (*FLUX_LABELS, "kustomize.toolkit.fluxcd.io/prune")]
            cluster.kubectl("label", "namespace", namespace, *unlabel, check=False)
        cluster.kubectl("delete", "kustomization", "-n", OWN, "apps", "podinfo", check=False)


def test_a_kustomizations_own_namespace_is_warned_when_it_applies_it(
    owned: ControlPlane, fluxwarden: WebhookServer
) -> None:
    result = _label(owned, OWN, *_applied_by("apps"))
    assert TAKEOVER in result.stderr


def test_a_namespace_marked_prune_disabled_passes(
    owned: ControlPlane, fluxwarden: WebhookServer
) -> None:
    result = _label(owned, OWN, *_applied_by("apps"), "kustomize.toolkit.fluxcd.io/prune=disabled")
    assert "kustomization-safety" not in result.stderr
    owned.kubectl("label", "namespace", OWN, "kustomize.toolkit.fluxcd.io/prune-")


def test_an_app_namespace_targeted_from_elsewhere_never_reaches_the_webhook(
    owned: ControlPlane, fluxwarden: WebhookServer
) -> None:
    before = fluxwarden.metric_total("fluxwarden_admission_requests_total")
    result = _label(owned, APP, *_applied_by("podinfo"))
    assert "fluxwarden" not in result.stderr
    # the matchCondition keeps it away: only a Namespace named as its Kustomization's namespace
    assert fluxwarden.metric_total("fluxwarden_admission_requests_total") == before


def test_the_cluster_audit_finds_the_takeover(owned: ControlPlane) -> None:
    _label(owned, OWN, *_applied_by("apps"))
    _label(owned, APP, *_applied_by("podinfo"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXWARDEN_")}
    result = subprocess.run(
        [*AUDIT, str(owned.kubeconfig_path), "-o", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout[-3000:]
    findings = sorted(
        (f["name"], f["policy"], f["result"])
        for f in json.loads(result.stdout)["findings"]
        if f["kind"] == "Namespace" and f["name"] in (OWN, APP)
    )
    assert findings == [
        (OWN, "kustomization-safety", "fail"),
        (APP, "kustomization-safety", "pass"),  # a Kustomization elsewhere targets it
    ]
