"""kustomize-controller (Flux v2.9.5, built from its Go module) applies a repo through
fluxwarden: the stored objects carry the mutations and later reconciliations change nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.cluster import ControlPlane, default_bin_dir, missing_binaries
from tests.e2e.flux.harness import (
    ArtifactServer,
    KustomizeController,
    dump,
    missing,
    wait_for,
)
from tests.e2e.harness import (
    WebhookServer,
    ensure_namespaces,
    install_crds,
    register,
    wait_for_webhook,
)

pytestmark = [pytest.mark.flux]

NS = "flux-system"
RECONCILIATIONS = 5

IRC: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "image-reflector-controller", "namespace": NS},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "image-reflector-controller"}},
        "template": {
            "metadata": {"labels": {"app": "image-reflector-controller"}},
            "spec": {
                "containers": [
                    {
                        "name": "manager",
                        "image": "ghcr.io/fluxcd/image-reflector-controller:v1.2.5",
                        "resources": {"limits": {"memory": "1Gi"}},
                    }
                ]
            },
        },
    },
}
HELMRELEASE: dict[str, Any] = {
    "apiVersion": "helm.toolkit.fluxcd.io/v2",
    "kind": "HelmRelease",
    "metadata": {"name": "podinfo", "namespace": NS},
    "spec": {
        "interval": "10m",
        "chart": {
            "spec": {
                "chart": "podinfo",
                "sourceRef": {"kind": "HelmRepository", "name": "podinfo"},
            }
        },
    },
}
REPO_FILES = {"irc.yaml": dump(IRC), "helmrelease.yaml": dump(HELMRELEASE)}


def kustomization(name: str, *, interval: str = "2s") -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "interval": interval,
            "path": "./",
            "prune": True,
            "sourceRef": {"kind": "ExternalArtifact", "name": name},
        },
    }


@pytest.fixture(scope="module")
def flux_cluster() -> Iterator[ControlPlane]:
    """Its own control plane with the generated CRDs (other modules' objects stay apart)."""
    absent = missing_binaries(default_bin_dir()) + missing()
    if absent:
        pytest.fail(f"missing {absent}: run `make controlplane`", pytrace=False)
    with ControlPlane() as cp:
        install_crds(cp)
        ensure_namespaces(cp, NS, "cattle-fleet-system")
        yield cp


def _reconcile_and_watch(
    cluster: ControlPlane, tmp: Path, *, name: str
) -> tuple[list[dict[str, str]], list[str], dict[str, Any]]:
    with ArtifactServer(tmp / "artifacts") as artifacts:
        artifacts.publish(cluster, name=name, namespace=NS, files=REPO_FILES)
        controller = KustomizeController(cluster, tmp / "kc").start()
        try:
            cluster.kubectl("apply", "-f", "-", input=json.dumps(kustomization(name)))

            def irc() -> dict[str, Any]:
                got = cluster.kubectl(
                    "get", "deploy", IRC["metadata"]["name"], "-n", NS, "-o", "json"
                )
                stored: dict[str, Any] = json.loads(got.stdout)
                return stored

            wait_for("2 applies", lambda: len(controller.apply_outputs(name)) >= 2, timeout=90)
            versions = [irc()["metadata"]["resourceVersion"]]
            wait_for(
                f"{RECONCILIATIONS + 1} applies",
                lambda: len(controller.apply_outputs(name)) >= RECONCILIATIONS + 1,
                timeout=90,
            )
            stored = irc()
            versions.append(stored["metadata"]["resourceVersion"])
            outputs = controller.apply_outputs(name)
        finally:
            controller.stop()
            cluster.kubectl("delete", "kustomization", name, "-n", NS, "--wait=false", check=False)
    return outputs, versions, stored


def test_flux_applies_mutations_and_then_changes_nothing(
    flux_cluster: ControlPlane, tmp_path: Path
) -> None:
    server = WebhookServer(flux_cluster, tmp_path / "fw").start()
    try:
        register(flux_cluster, server)
        wait_for_webhook(flux_cluster, server)
        outputs, versions, stored = _reconcile_and_watch(flux_cluster, tmp_path, name="nodrift")
    finally:
        server.stop()
    # Stored after the second apply and after the sixth: the same object, not rewritten.
    assert versions[0] == versions[1], versions
    assert stored["spec"]["replicas"] == 1
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "2Gi"
    hr = json.loads(
        flux_cluster.kubectl("get", "helmrelease", "podinfo", "-n", NS, "-o", "json").stdout
    )
    assert hr["spec"]["driftDetection"]["mode"] == "enabled"
    # The first apply creates; every later reconciliation applies nothing.
    later = outputs[1:]
    assert len(later) >= RECONCILIATIONS
    for output in later:
        assert set(output.values()) == {"unchanged"}, output


def test_negative_control_dry_run_without_mutation_is_perpetual_drift(
    flux_cluster: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the test-only switch (no patch on dry-run) kustomize-controller sees a diff and
    re-applies on every reconciliation: the assertion of the test above fails here."""
    monkeypatch.setenv("FLUXWARDEN_TEST_SKIP_DRYRUN_MUTATION", "1")
    server = WebhookServer(flux_cluster, tmp_path / "fw").start()
    try:
        register(flux_cluster, server)
        wait_for_webhook(flux_cluster, server)
        outputs, _, _ = _reconcile_and_watch(flux_cluster, tmp_path, name="drift")
    finally:
        server.stop()
    irc = f"Deployment/{NS}/image-reflector-controller"
    later = outputs[1:]
    assert len(later) >= RECONCILIATIONS
    assert all(output.get(irc) == "configured" for output in later), later


def _ks_child(name: str, depends_on: str) -> dict[str, Any]:
    child = kustomization(name, interval="10m")
    child["spec"]["dependsOn"] = [{"name": depends_on}]
    child["spec"]["sourceRef"] = {"kind": "ExternalArtifact", "name": "unused"}
    return child


def test_dependson_cycle_in_the_repo_is_denied_and_shown_on_the_kustomization(
    flux_cluster: ControlPlane, tmp_path: Path
) -> None:
    server = WebhookServer(flux_cluster, tmp_path / "fw").start()
    files = {"cycle.yaml": dump(_ks_child("cycle-a", "cycle-b"), _ks_child("cycle-b", "cycle-a"))}
    try:
        register(flux_cluster, server)
        wait_for_webhook(flux_cluster, server)
        with ArtifactServer(tmp_path / "artifacts") as artifacts:
            artifacts.publish(flux_cluster, name="cycle", namespace=NS, files=files)
            controller = KustomizeController(flux_cluster, tmp_path / "kc").start()
            try:
                flux_cluster.kubectl("apply", "-f", "-", input=json.dumps(kustomization("cycle")))

                def ready_message() -> str:
                    got = json.loads(
                        flux_cluster.kubectl(
                            "get", "kustomization", "cycle", "-n", NS, "-o", "json"
                        ).stdout
                    )
                    for condition in got.get("status", {}).get("conditions", []):
                        if condition["type"] == "Ready" and condition["status"] == "False":
                            return str(condition["message"])
                    return ""

                message = wait_for("Ready=False", ready_message, timeout=90)
            finally:
                controller.stop()
    finally:
        server.stop()
    assert "fluxwarden denied the request" in message, message
    assert "kustomization-dependencies" in message or "cycle" in message, message


def test_outage_heals_on_the_next_reconciliation(
    flux_cluster: ControlPlane, tmp_path: Path
) -> None:
    """fluxwarden down (failurePolicy Ignore): Flux stores an unfixed HelmRelease; once
    fluxwarden is back the next reconciliation stores the fixed one."""
    release = json.loads(json.dumps(HELMRELEASE))
    release["metadata"]["name"] = "heal"

    def drift_mode() -> str | None:
        got = flux_cluster.kubectl(
            "get", "helmrelease", "heal", "-n", NS, "-o", "json", check=False
        )
        if got.returncode != 0:
            return None
        mode: str | None = json.loads(got.stdout)["spec"].get("driftDetection", {}).get("mode")
        return mode or "absent"

    down = WebhookServer(flux_cluster, tmp_path / "fw-down").start()
    register(flux_cluster, down, failure_policy="Ignore")
    wait_for_webhook(flux_cluster, down)
    down.stop()
    with ArtifactServer(tmp_path / "artifacts") as artifacts:
        artifacts.publish(flux_cluster, name="heal", namespace=NS, files={"hr.yaml": dump(release)})
        controller = KustomizeController(flux_cluster, tmp_path / "kc").start()
        try:
            flux_cluster.kubectl("apply", "-f", "-", input=json.dumps(kustomization("heal")))
            assert wait_for("the unfixed HelmRelease", drift_mode, timeout=90) == "absent"
            up = WebhookServer(flux_cluster, tmp_path / "fw-up").start()
            try:
                register(flux_cluster, up, failure_policy="Ignore")
                started = time.monotonic()
                wait_for("the fix", lambda: drift_mode() == "enabled", timeout=90)
                healed = time.monotonic() - started
            finally:
                up.stop()
        finally:
            controller.stop()
    print(f"\nfluxwarden back -> fixed object stored in {healed:.1f}s (Kustomization interval 2s)")
    assert healed < 60
