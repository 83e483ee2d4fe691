"""source-controller's /data on a PersistentVolumeClaim, on the real API server.

fluxwarden runs with a policy set that sets `dataVolumeClaim` and as a ServiceAccount bound to
the ClusterRole `fluxwarden manifests` generates from that set (so the claim is read with
exactly the GET it grants). With the claim present the /data emptyDir is replaced; with it
absent, or unreadable (a role without the claim's rule: the negative control for the generated
RBAC), the Deployment is stored as applied and `kubectl apply` shows why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import (
    REPO,
    WebhookServer,
    apply_objects,
    ensure_namespaces,
    register,
    registered,
    wait_for_webhook,
    wait_until,
)
from webhook.cli import SHIPPED_POLICIES

pytestmark = pytest.mark.e2e

CLAIM_NAME = "source-controller-data"
NAMESPACE = "flux-system"
CLAIM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": CLAIM_NAME, "namespace": NAMESPACE},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
}
# As Flux ships it, /tmp already bounded: whatever changes is /data's doing.
SOURCE_CONTROLLER: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "source-controller", "namespace": NAMESPACE},
    "spec": {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": {"app": "source-controller"}},
        "template": {
            "metadata": {"labels": {"app": "source-controller"}},
            "spec": {
                "containers": [
                    {
                        "name": "manager",
                        "image": "ghcr.io/fluxcd/source-controller:v1.9.5",
                        "args": ["--storage-path=/data"],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                ],
            },
        },
    },
}
MISSING = f"PersistentVolumeClaim {NAMESPACE}/{CLAIM_NAME} does not exist"
UNREADABLE = f"could not look up PersistentVolumeClaim {NAMESPACE}/{CLAIM_NAME}"


def _fluxwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


@pytest.fixture(scope="module")
def claim_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = SHIPPED_POLICIES.read_text()
    assert 'dataVolumeClaim: ""' in text
    path = tmp_path_factory.mktemp("pvc-policies") / "policies.yaml"
    path.write_text(text.replace('dataVolumeClaim: ""', f"dataVolumeClaim: {CLAIM_NAME}"))
    return path


def _lookups_role(policies: Path) -> dict[str, Any]:
    generated = _fluxwarden("manifests", "--policies", str(policies))
    assert generated.returncode == 0, generated.stderr
    role: dict[str, Any] = next(
        doc
        for doc in yaml.safe_load_all(generated.stdout)
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "fluxwarden-lookups"
    )
    return role


class _AsServiceAccount:
    """What WebhookServer needs of a cluster: a kubeconfig, here one with a token."""

    def __init__(self, kubeconfig_path: Path) -> None:
        self.kubeconfig_path = kubeconfig_path


def _server_as(
    cluster: ControlPlane, role: dict[str, Any], *, account: str, workdir: Path, policies: Path
) -> WebhookServer:
    """fluxwarden serving `policies` as ServiceAccount `account` bound to (a copy of) `role`."""
    role = {**role, "metadata": {"name": f"{account}-lookups"}}
    apply_objects(
        cluster,
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": "fluxwarden-system"},
            },
            role,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{account}-lookups"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{account}-lookups",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": account, "namespace": "fluxwarden-system"}
                ],
            },
        ],
    )
    token = cluster.kubectl("create", "token", account, "-n", "fluxwarden-system").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig_path.read_text())
    admin["users"] = [{"name": account, "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = account
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin))
    kubeconfig.chmod(0o600)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLUXWARDEN_POLICIES", str(policies))  # `serve --policies` defaults to it
        view = cast(ControlPlane, _AsServiceAccount(kubeconfig))
        return WebhookServer(view, workdir).start()


@pytest.fixture(scope="module")
def pvc_cluster(cluster: ControlPlane, fluxwarden_server: WebhookServer) -> Iterator[ControlPlane]:
    """Leaves the webhooks pointed at the shared server, and no claim behind."""
    ensure_namespaces(cluster, "fluxwarden-system", NAMESPACE)
    try:
        yield cluster
    finally:
        _remove(cluster, "deployment", "source-controller")
        _remove(cluster, "pvc", CLAIM_NAME)
        register(cluster, fluxwarden_server)
        wait_for_webhook(cluster, fluxwarden_server)


@pytest.fixture
def with_generated_role(
    pvc_cluster: ControlPlane, claim_policies: Path, tmp_path: Path
) -> Iterator[WebhookServer]:
    role = _lookups_role(claim_policies)
    server = _server_as(
        pvc_cluster, role, account="pvc-e2e", workdir=tmp_path, policies=claim_policies
    )
    with registered(pvc_cluster, server) as serving:
        yield serving


@pytest.fixture
def without_the_claim_rule(
    pvc_cluster: ControlPlane, claim_policies: Path, tmp_path: Path
) -> Iterator[WebhookServer]:
    """The shipped set's role (no claim rule) under the claim-reading policy set."""
    role = _lookups_role(SHIPPED_POLICIES)
    server = _server_as(
        pvc_cluster, role, account="pvc-e2e-norule", workdir=tmp_path, policies=claim_policies
    )
    with registered(pvc_cluster, server) as serving:
        yield serving


def _remove(cluster: ControlPlane, kind: str, name: str) -> None:
    # No controller-manager here: nothing would remove the pvc-protection finalizer.
    if kind == "pvc":
        cluster.kubectl(
            "patch", kind, name, "-n", NAMESPACE, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
    cluster.kubectl("delete", kind, name, "-n", NAMESPACE, "--ignore-not-found", "--wait=false")


def _apply(cluster: ControlPlane, *extra: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", *extra, "-o", "json", "-f", "-", input=json.dumps(SOURCE_CONTROLLER)
    )


def _warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.removeprefix("Warning: ")
        for line in result.stderr.splitlines()
        if line.startswith("Warning: ")
    ]


def _data_volume(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    stored = json.loads(result.stdout)
    volumes = stored["spec"]["template"]["spec"]["volumes"]
    found: dict[str, Any] = next(v for v in volumes if v["name"] == "data")
    return found


def _once_lookups_see(cluster: ControlPlane, expected: str) -> None:
    """The lookups cache a claim for a second: wait until a dry run answers `expected`."""
    wait_until(
        f"a dry run warning {expected!r}",
        lambda: any(expected in w for w in _warnings(_apply(cluster, "--dry-run=server"))),
        timeout=15,
    )


def test_the_generated_role_grants_exactly_get_on_the_claim(claim_policies: Path) -> None:
    claim_rules = [
        rule
        for rule in _lookups_role(claim_policies)["rules"]
        if "persistentvolumeclaims" in rule["resources"]
    ]
    assert claim_rules == [
        {
            "apiGroups": [""],
            "resources": ["persistentvolumeclaims"],
            "resourceNames": [CLAIM_NAME],
            "verbs": ["get"],
        }
    ]
    shipped = _lookups_role(SHIPPED_POLICIES)["rules"]
    assert not [r for r in shipped if "persistentvolumeclaims" in r["resources"]]


def test_policies_command_loads_a_set_with_data_volume_claim(claim_policies: Path) -> None:
    listed = _fluxwarden("policies", "--policies", str(claim_policies), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    storage = next(p for p in json.loads(listed.stdout) if p["name"] == "source-controller-storage")
    assert storage["params"]["dataVolumeClaim"] == CLAIM_NAME
    assert storage["mode"] == "enforce"
    text = _fluxwarden("policies", "--policies", str(claim_policies))
    assert text.returncode == 0, text.stderr
    assert "source-controller-storage" in text.stdout


def test_claim_absent_deployment_stored_as_applied_with_a_warning(
    pvc_cluster: ControlPlane, with_generated_role: WebhookServer
) -> None:
    _remove(pvc_cluster, "pvc", CLAIM_NAME)
    _remove(pvc_cluster, "deployment", "source-controller")
    _once_lookups_see(pvc_cluster, MISSING)
    result = _apply(pvc_cluster)
    assert any(
        w.startswith(
            f"fluxwarden: source-controller-storage: {MISSING}: /data left on its emptyDir"
        )
        for w in _warnings(result)
    ), result.stderr
    assert _data_volume(result) == {"name": "data", "emptyDir": {}}


def _can(cluster: ControlPlane, account: str, verb: str) -> str:
    """`kubectl auth can-i` for the ServiceAccount on the claim: "yes" or "no"."""
    return cluster.kubectl(
        "auth", "can-i", verb, f"persistentvolumeclaims/{CLAIM_NAME}", "-n", NAMESPACE,
        f"--as=system:serviceaccount:fluxwarden-system:{account}", check=False,
    ).stdout.strip()  # fmt: skip


def test_claim_present_data_moves_to_the_claim(
    pvc_cluster: ControlPlane, with_generated_role: WebhookServer
) -> None:
    # What the generated role grants: GET on the claim, nothing else.
    assert [_can(pvc_cluster, "pvc-e2e", v) for v in ("get", "list", "watch", "update")] == [
        "yes",
        "no",
        "no",
        "no",
    ]
    _remove(pvc_cluster, "deployment", "source-controller")
    apply_objects(pvc_cluster, [CLAIM])
    changed = f"set volumes[data] to persistentVolumeClaim {CLAIM_NAME} (was emptyDir)"
    _once_lookups_see(pvc_cluster, changed)
    dry_run = _apply(pvc_cluster, "--dry-run=server")
    result = _apply(pvc_cluster)
    assert any(changed in w for w in _warnings(result)), result.stderr
    assert _data_volume(result) == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": CLAIM_NAME},
    }
    assert _data_volume(dry_run) == _data_volume(result)  # Flux's dry run sees the same
    again = _apply(pvc_cluster)  # Git still says emptyDir: the claim stays, no new change
    assert _data_volume(again) == _data_volume(result)


def test_claim_unreadable_without_the_generated_rule_left_as_is(
    pvc_cluster: ControlPlane, without_the_claim_rule: WebhookServer
) -> None:
    _remove(pvc_cluster, "deployment", "source-controller")
    apply_objects(pvc_cluster, [CLAIM])
    assert _can(pvc_cluster, "pvc-e2e-norule", "get") == "no"
    result = _apply(pvc_cluster)
    # The reason is the 403, or the deadline when a loaded machine answers late: either way
    # the claim could not be read, and that is what the user is told.
    assert any(
        w.startswith(f"fluxwarden: source-controller-storage: {UNREADABLE}")
        for w in _warnings(result)
    ), result.stderr
    assert _data_volume(result) == {"name": "data", "emptyDir": {}}
