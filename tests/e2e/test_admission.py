"""fluxwarden behind the real kube-apiserver, driven with the real kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import REPO, WebhookServer, register, wait_for_webhook, wait_until

EXAMPLES = REPO / "examples"


def kubectl_json(cluster: ControlPlane, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return result


def warnings(stderr: str) -> list[str]:
    return [
        line.removeprefix("Warning: ")
        for line in stderr.splitlines()
        if line.startswith("Warning: ")
    ]


def container(deployment: dict[str, Any], name: str = "manager") -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    found: dict[str, Any] = next(c for c in spec["containers"] if c["name"] == name)
    return found


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """What a dry-run and a real write must agree on: everything but server bookkeeping."""
    meta = {
        k: v
        for k, v in obj["metadata"].items()
        if k not in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
    }
    return {**obj, "metadata": meta}


@pytest.fixture(scope="module")
def flux_controllers(cluster: ControlPlane, fluxwarden: WebhookServer) -> str:
    """`kubectl apply` of the Flux controllers example: its stderr is what the user sees."""
    return cluster.kubectl("apply", "-f", str(EXAMPLES / "flux-system.yaml")).stderr


def test_apply_shows_warnings_and_stores_the_fixed_irc(
    cluster: ControlPlane, flux_controllers: str
) -> None:
    shown = warnings(flux_controllers)
    assert (
        "fluxwarden: irc-single-replica: set spec.replicas to 1 (was 2): an OOM-killed IRC with a standby rolls image tags back (fluxcd/flux2#4984)"
        in shown
    )
    assert any(
        w.startswith(
            "fluxwarden: irc-single-replica: set containers[manager].resources.limits.memory to 2Gi (was 1Gi)"
        )
        for w in shown
    )
    irc = kubectl_json(
        cluster, "get", "deployment", "image-reflector-controller", "-n", "flux-system"
    )
    assert irc["spec"]["replicas"] == 1
    assert container(irc)["resources"]["limits"]["memory"] == "2Gi"
    assert container(irc)["resources"]["requests"]["memory"] == "64Mi"


def test_source_and_kustomize_controllers_are_fixed(
    cluster: ControlPlane, flux_controllers: str
) -> None:
    shown = warnings(flux_controllers)
    assert any(
        w.startswith(
            "fluxwarden: source-controller-storage: set volumes[tmp].emptyDir.sizeLimit to 2Gi"
        )
        for w in shown
    )
    assert any(
        w.startswith(
            "fluxwarden: controller-requeue-dependency: set containers[manager].args --requeue-dependency to 5s"
        )
        for w in shown
    )
    source = kubectl_json(cluster, "get", "deployment", "source-controller", "-n", "flux-system")
    tmp = next(v for v in source["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "2Gi"}
    kustomize = kubectl_json(
        cluster, "get", "deployment", "kustomize-controller", "-n", "flux-system"
    )
    assert container(kustomize)["args"][-1] == "--requeue-dependency=5s"


def test_reapplying_the_same_file_changes_nothing(
    cluster: ControlPlane, flux_controllers: str
) -> None:
    before = kubectl_json(
        cluster, "get", "deployment", "image-reflector-controller", "-n", "flux-system"
    )
    again = cluster.kubectl("apply", "-f", str(EXAMPLES / "flux-system.yaml"))
    after = kubectl_json(
        cluster, "get", "deployment", "image-reflector-controller", "-n", "flux-system"
    )
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    # Still told, because Git still says 2 replicas: the fix belongs in Git.
    assert any("irc-single-replica" in w for w in warnings(again.stderr))


def test_helmrelease_gets_drift_detection_and_an_interval_warning(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    result = cluster.kubectl("apply", "-f", str(EXAMPLES / "apps.yaml"))
    shown = warnings(result.stderr)
    assert any(
        w.startswith(
            "fluxwarden: helmrelease-drift-detection: set spec.driftDetection.mode to enabled (was unset)"
        )
        for w in shown
    )
    assert (
        "fluxwarden: helmrelease-interval: spec.interval 30s is shorter than 1m: frequent reconciles load the API server and the chart source"
        in shown
    )
    release = kubectl_json(cluster, "get", "helmrelease", "podinfo", "-n", "apps")
    assert release["spec"]["driftDetection"] == {"mode": "enabled"}
    assert release["spec"]["interval"] == "30s"  # warned, not changed


CILIUM = {
    "apiVersion": "helm.toolkit.fluxcd.io/v2",
    "kind": "HelmRelease",
    "metadata": {"name": "cilium", "namespace": "kube-system"},
    "spec": {
        "interval": "10m",
        "chart": {
            "spec": {"chart": "cilium", "sourceRef": {"kind": "HelmRepository", "name": "cilium"}}
        },
    },
}


def test_a_kube_system_helmrelease_is_checked_like_any_other(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    """Cilium, CoreDNS, metrics-server run in kube-system: they need drift detection too."""
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(CILIUM))
    assert any(
        w.startswith("fluxwarden: helmrelease-drift-detection: set spec.driftDetection.mode")
        for w in warnings(result.stderr)
    )
    release = kubectl_json(cluster, "get", "helmrelease", "cilium", "-n", "kube-system")
    assert release["spec"]["driftDetection"] == {"mode": "enabled"}


def test_fleet_cronjob_inherits_the_controllers_tolerations(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    result = cluster.kubectl("apply", "-f", str(EXAMPLES / "fleet.yaml"))
    assert any(
        w.startswith("fluxwarden: fleet-job-tolerations: set pod template tolerations: +2")
        for w in warnings(result.stderr)
    )
    cronjob = kubectl_json(
        cluster, "get", "cronjob", "fleet-cleanup-gitrepo-jobs", "-n", "cattle-fleet-system"
    )
    tolerations = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == [
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        },
        {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"},
    ]


def test_a_cycle_is_denied_and_not_stored(cluster: ControlPlane, fluxwarden: WebhookServer) -> None:
    cluster.kubectl("apply", "-f", str(EXAMPLES / "apps.yaml"))
    result = cluster.kubectl(
        "apply", "-f", str(REPO / "tests" / "e2e" / "manifests" / "denied-cycle.yaml"), check=False
    )
    assert result.returncode != 0
    assert (
        'admission webhook "kustomizations.validate.fluxwarden.io" denied the request: fluxwarden denied the request: '
        "kustomization-dependencies: dependsOn cycle never becomes ready: "
        "flux-system/infra-controllers -> flux-system/infra-configs -> flux-system/infra-controllers"
    ) in result.stderr
    stored = kubectl_json(cluster, "get", "kustomization", "infra-controllers", "-n", "flux-system")
    assert "dependsOn" not in stored["spec"]


def test_a_self_reference_is_denied_on_create(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    doc = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "loop", "namespace": "flux-system"},
        "spec": {
            "interval": "5m",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "x"},
            "dependsOn": [{"name": "loop"}],
        },
    }
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(doc), check=False)
    assert "Kustomization flux-system/loop depends on itself" in result.stderr
    assert (
        cluster.kubectl("get", "kustomization", "loop", "-n", "flux-system", check=False).returncode
        != 0
    )


@pytest.mark.parametrize(
    "apply_args", [["apply"], ["apply", "--server-side", "--field-manager=flux"]]
)
def test_dry_run_returns_exactly_what_a_real_apply_stores(
    cluster: ControlPlane, fluxwarden: WebhookServer, apply_args: list[str]
) -> None:
    """Flux detects drift with server-side dry-run: a mutation missing at dry-run is perpetual drift."""
    namespace = "flux-system"
    name = "source-controller"
    docs = list(yaml.safe_load_all((EXAMPLES / "flux-system.yaml").read_text()))
    source = next(d for d in docs if d["metadata"]["name"] == name)
    cluster.kubectl("delete", "deployment", name, "-n", namespace, "--ignore-not-found")
    text = json.dumps(source)
    dry = json.loads(
        cluster.kubectl(*apply_args, "--dry-run=server", "-o", "json", "-f", "-", input=text).stdout
    )
    real = json.loads(cluster.kubectl(*apply_args, "-o", "json", "-f", "-", input=text).stdout)
    assert comparable(dry) == comparable(real)
    assert next(v for v in dry["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")[
        "emptyDir"
    ] == {"sizeLimit": "2Gi"}
    # And a dry-run of the same Git content against the stored object shows no drift.
    again = json.loads(
        cluster.kubectl(*apply_args, "--dry-run=server", "-o", "json", "-f", "-", input=text).stdout
    )
    assert comparable(again) == comparable(real)


def test_kubectl_scale_of_irc_is_held_at_one(cluster: ControlPlane, flux_controllers: str) -> None:
    result = cluster.kubectl(
        "scale", "deployment/image-reflector-controller", "-n", "flux-system", "--replicas=3"
    )
    assert any(
        "irc-single-replica: set spec.replicas to 1 (was 3)" in w for w in warnings(result.stderr)
    )
    irc = kubectl_json(
        cluster, "get", "deployment", "image-reflector-controller", "-n", "flux-system"
    )
    assert irc["spec"]["replicas"] == 1


def test_an_hpa_on_irc_is_capped(cluster: ControlPlane, fluxwarden: WebhookServer) -> None:
    result = cluster.kubectl(
        "autoscale",
        "deployment/image-reflector-controller",
        "-n",
        "flux-system",
        "--min=1",
        "--max=5",
        "--cpu=80%",
    )
    assert any("set spec.maxReplicas to 1 (was 5)" in w for w in warnings(result.stderr))
    hpa = kubectl_json(cluster, "get", "hpa", "image-reflector-controller", "-n", "flux-system")
    assert hpa["spec"]["maxReplicas"] == 1


@pytest.fixture
def swap_server(cluster: ControlPlane, fluxwarden: WebhookServer) -> Iterator[list[WebhookServer]]:
    """Lets a test point the webhooks elsewhere; the shared server is re-registered afterwards."""
    started: list[WebhookServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()
        register(cluster, fluxwarden)
        wait_for_webhook(cluster, fluxwarden)


def _audit_events(cluster: ControlPlane, name: str) -> list[dict[str, Any]]:
    events = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("name") == name and event.get("stage") == "ResponseComplete":
            events.append(event)
    return events


def test_audit_mode_changes_nothing_and_annotations_reach_the_api_server(
    cluster: ControlPlane, swap_server: list[WebhookServer], tmp_path: Path
) -> None:
    auditor = WebhookServer(cluster, tmp_path, mode="audit").start()
    swap_server.append(auditor)
    register(cluster, auditor)
    wait_for_webhook(cluster, auditor)

    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "audited", "namespace": "apps"},
        "spec": {
            "interval": "5m",
            "chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "x"}}},
        },
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(release))
    assert warnings(result.stderr) == []
    stored = kubectl_json(cluster, "get", "helmrelease", "audited", "-n", "apps")
    assert "driftDetection" not in stored["spec"]

    def annotated() -> bool:
        return any(
            e.get("annotations", {})
            .get("helmreleases.mutate.fluxwarden.io/helmrelease-drift-detection", "")
            .startswith("audited: would set spec.driftDetection.mode to enabled")
            for e in _audit_events(cluster, "audited")
        )

    wait_until("the audit annotation in the API server's audit log", annotated, timeout=10)


def test_webhook_down_ignore_lets_writes_through_and_strict_fails_them(
    cluster: ControlPlane, swap_server: list[WebhookServer], tmp_path: Path
) -> None:
    gone = WebhookServer(cluster, tmp_path).start()
    swap_server.append(gone)
    register(cluster, gone)
    wait_for_webhook(cluster, gone)
    gone.stop()

    ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "while-down", "namespace": "flux-system"},
        "spec": {
            "interval": "5m",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "x"},
            "dependsOn": [{"name": "infra-configs"}],
        },
    }
    allowed = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(ks), check=False
    )
    assert allowed.returncode == 0, allowed.stderr

    register(cluster, gone, failure_policy="Fail")

    def refused() -> bool:
        result = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(ks), check=False
        )
        return result.returncode != 0 and "failed calling webhook" in result.stderr

    wait_until("failurePolicy Fail to refuse writes while fluxwarden is down", refused, timeout=15)


def test_objects_no_policy_targets_never_reach_the_webhook(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    cluster.kubectl("create", "namespace", "unrelated", check=False)
    before = fluxwarden.metric_total("fluxwarden_admission_requests_total")
    docs = []
    for index in range(100):
        namespace = "flux-system" if index % 2 else "unrelated"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"unrelated-{index}", "namespace": namespace},
                "data": {"a": "b"},
            }
        )
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"unrelated-{index}", "namespace": namespace},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "manager", "image": "x"}]},
                    },
                },
            }
        )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    assert fluxwarden.metric_total("fluxwarden_admission_requests_total") == before
    # ...while a targeted object in the same run does reach it.
    cluster.kubectl(
        "scale", "deployment/image-reflector-controller", "-n", "flux-system", "--replicas=2"
    )
    assert fluxwarden.metric_total("fluxwarden_admission_requests_total") > before


def test_an_exempt_deployment_can_be_scaled(cluster: ControlPlane, flux_controllers: str) -> None:
    """A Scale carries no annotations: the Deployment's exemption is looked up in the cluster."""
    args = ("-n", "flux-system")
    cluster.kubectl(
        "annotate",
        "deployment/image-reflector-controller",
        *args,
        "fluxwarden.io/exempt=irc-single-replica",
        "--overwrite",
    )
    try:
        time.sleep(1.2)  # past the lookup cache's TTL
        result = cluster.kubectl(
            "scale", "deployment/image-reflector-controller", *args, "--replicas=2"
        )
        assert warnings(result.stderr) == []
        irc = kubectl_json(cluster, "get", "deployment", "image-reflector-controller", *args)
        assert irc["spec"]["replicas"] == 2
    finally:
        cluster.kubectl(
            "annotate", "deployment/image-reflector-controller", *args, "fluxwarden.io/exempt-"
        )
        time.sleep(1.2)
        cluster.kubectl("scale", "deployment/image-reflector-controller", *args, "--replicas=1")
