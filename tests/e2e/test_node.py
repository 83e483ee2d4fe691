"""fluxwarden installed as it ships, on a real node: the image `make image` builds, pulled from
the node's containerd by a kubelet, behind its Service, called by the API server with TLS
verified.  The node lives in network and mount namespaces of its own (tests/controlplane/node.py);
nothing here dials a node, pod or Service address from the host."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from image import build
from tests.controlplane.cluster import ControlPlane
from tests.controlplane.node import node_links, routes_off_the_machine, why_no_node
from tests.e2e.harness import REPO, wait_until
from tests.e2e.node_cluster import NAMESPACE, cert_manager_binary
from tests.e2e.node_cluster import node_cluster as start_node_cluster

WHY_NOT = why_no_node()
pytestmark = [pytest.mark.node, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "runs")]
IRC = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "image-reflector-controller", "namespace": "flux-system"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "irc"}},
        "template": {
            "metadata": {"labels": {"app": "irc"}},
            "spec": {
                "containers": [
                    {
                        "name": "manager",
                        "image": "irc",
                        "resources": {"limits": {"memory": "1Gi"}},
                    }
                ]
            },
        },
    },
}


@pytest.fixture(scope="module")
def node_cluster() -> Iterator[ControlPlane]:
    """The control plane with a real node running the image `make image` builds, and
    cert-manager's controllers (tests/controlplane/certmanager) with its CRDs."""
    if not cert_manager_binary().exists():
        pytest.fail(f"{cert_manager_binary()} missing: run `make controlplane`")
    with start_node_cluster() as cluster:
        yield cluster


def _json(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _ready_pods(cluster: ControlPlane) -> list[str]:
    pods = _json(
        cluster, "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=webhook"
    )
    return [
        pod["metadata"]["name"]
        for pod in pods["items"]
        if pod["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
    ]


def test_the_node_has_no_route_off_the_machine(node_cluster: ControlPlane) -> None:
    pid = node_cluster.node_processes.namespaces.pid
    assert routes_off_the_machine(pid) == []
    kinds = {line.split()[1] for line in node_links(pid)}
    assert kinds <= {"-", "bridge", "veth"}, node_links(pid)
    unreachable = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "route", "get", "192.0.2.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unreachable.returncode != 0, unreachable.stdout
    assert "unreachable" in unreachable.stderr.lower()


def _certificate_ready(cluster: ControlPlane, name: str) -> bool:
    certificate = _json(cluster, "-n", NAMESPACE, "get", "certificate", name)
    conditions = certificate.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _ca_bundles(cluster: ControlPlane) -> list[str]:
    bundles = []
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        config = _json(cluster, "get", kind, "fluxwarden")
        bundles += [hook["clientConfig"].get("caBundle", "") for hook in config["webhooks"]]
    return bundles


def test_the_shipped_base_runs_the_image_behind_its_service_with_cert_manager(
    node_cluster: ControlPlane,
) -> None:
    """`kubectl apply -k manifests/base` as shipped (its image is the one the build names):
    cert-manager issues the serving certificate, the cainjector fills both caBundles, 2 pods
    are Ready under the Deployment's securityContext, and the API server admits through the
    Service, verifying the certificate with the injected CA."""
    node_cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base"))
    wait_until(
        "Certificate fluxwarden-tls Ready",
        lambda: _certificate_ready(node_cluster, "fluxwarden-tls"),
        120,
    )
    secret = _json(node_cluster, "-n", NAMESPACE, "get", "secret", "fluxwarden-tls")
    ca = secret["data"]["ca.crt"]
    wait_until("caBundles injected", lambda: set(_ca_bundles(node_cluster)) == {ca}, 60)
    wait_until("2 fluxwarden pods Ready", lambda: len(_ready_pods(node_cluster)) == 2, 180)
    pod = _json(node_cluster, "-n", NAMESPACE, "get", "pod", _ready_pods(node_cluster)[0])
    container = pod["spec"]["containers"][0]
    assert container["image"] == build.image_name(REPO)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    applied = node_cluster.kubectl("apply", "-f", "-", input=json.dumps(IRC))
    assert "fluxwarden: irc-single-replica:" in applied.stderr, applied.stderr
    stored = _json(
        node_cluster, "-n", "flux-system", "get", "deployment", "image-reflector-controller"
    )
    assert stored["spec"]["replicas"] == 1
