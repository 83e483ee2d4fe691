"""KubeLookups under a slow, a dead and a healthy API endpoint on loopback: it caches, and a
slow or dead API becomes a warning within the timeout, never a hang or a denial."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from webhook.engine import LookupUnavailable, ObjectRef, PolicySet, evaluate, request_for
from webhook.lookups.kube import KubeLookups, load_api_client


def api_client(port: int, tmp_path: Path) -> client.ApiClient:
    """Through load_api_client, as `fluxwarden serve` builds it (retries=0), from a kubeconfig."""
    kubeconfig = tmp_path / f"kubeconfig-{port}"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "t", "user": {"token": "x"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            }
        )
    )
    return load_api_client(str(kubeconfig), retries=0)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers: a hung API server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


class _FakeAPI(BaseHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012 - shared by the handler instances on purpose
    objects: dict[str, Any] = {}  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = self.objects.get(self.path)
        payload = json.dumps(body or {"kind": "Status", "code": 404, "reason": "NotFound"}).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[int, type[_FakeAPI]]]:
    handler = type("Handler", (_FakeAPI,), {"requests": [], "objects": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()


FLEET_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "fleet-cleanup-clusterregistrations", "namespace": "cattle-fleet-system"},
    "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}},
}


def test_a_hung_api_is_a_warning_within_the_timeout_then_backs_off(
    silent_port: int, shipped_policies: PolicySet, tmp_path: Path
) -> None:
    lookups = KubeLookups(api_client(silent_port, tmp_path), timeout=0.5, backoff=30)
    started = time.monotonic()
    decision = evaluate(
        FLEET_JOB,
        request=request_for(FLEET_JOB),
        policy_set=shipped_policies,
        lookups=lookups,
    )
    assert time.monotonic() - started < 1.5  # one 0.5 s attempt, no urllib3 retries
    assert decision.allowed
    assert decision.patch == []
    assert decision.warnings == [
        "fluxwarden: fleet-job-tolerations: could not read tolerations of Deployment "
        "cattle-fleet-system/fleet-controller: Kubernetes API unreachable: ReadTimeoutError"
    ]
    started = time.monotonic()
    with pytest.raises(LookupUnavailable, match="backing off"):
        lookups.dependencies("Kustomization", ObjectRef("flux-system", "apps"))
    assert time.monotonic() - started < 0.1  # no second wait while the API is known to be down


def test_a_dead_api_is_a_warning_not_a_denial(
    dead_port: int, shipped_policies: PolicySet, tmp_path: Path
) -> None:
    ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"dependsOn": [{"name": "infra"}]},
    }
    decision = evaluate(
        ks,
        request=request_for(ks),
        policy_set=shipped_policies,
        lookups=KubeLookups(api_client(dead_port, tmp_path), timeout=0.5),
    )
    assert decision.allowed
    assert decision.warnings[0].startswith(
        "fluxwarden: kustomization-dependencies: could not check dependsOn for cycles: "
        "Kubernetes API unreachable"
    )


def test_answers_are_cached_and_missing_objects_are_none(
    fake_api: tuple[int, type[_FakeAPI]], tmp_path: Path
) -> None:
    port, handler = fake_api
    path = "/apis/apps/v1/namespaces/cattle-fleet-system/deployments/fleet-controller"
    handler.objects[path] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fleet-controller", "namespace": "cattle-fleet-system"},
        "spec": {
            "selector": {},
            "template": {
                "spec": {
                    "containers": [],
                    "tolerations": [
                        {
                            "key": "dedicated",
                            "operator": "Equal",
                            "value": "infra",
                            "effect": "NoSchedule",
                        }
                    ],
                }
            },
        },
    }
    clock = [0.0]
    lookups = KubeLookups(api_client(port, tmp_path), ttl=5, clock=lambda: clock[0])
    expected = [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]

    def tolerations() -> object:
        found = lookups.deployment("cattle-fleet-system", "fleet-controller")
        assert found is not None
        return found["spec"]["template"]["spec"]["tolerations"]

    assert tolerations() == expected
    assert tolerations() == expected
    assert handler.requests == [path]
    clock[0] = 6.0  # past the TTL: asked again
    tolerations()
    assert handler.requests == [path, path]
    assert lookups.deployment("cattle-fleet-system", "absent") is None
    # A Kustomization not found in any served version is unknown (None), not an error.
    assert lookups.dependencies("Kustomization", ObjectRef("flux-system", "nope")) is None
