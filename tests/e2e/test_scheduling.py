"""Real scheduling: kube-scheduler and kube-controller-manager (built from k8s.io/kubernetes like
the API server) in front of Node objects kept Ready, every one tainted. What a user of an
all-tainted cluster sees: the Fleet cleanup Job's pod stays Pending without fluxwarden and is
bound to a node with it; the IRC Deployment gets one Pod from the ReplicaSet controller, and
the HPA controller cannot raise it. Pods are bound, never run (no kubelet).

Its own control plane: the controllers would otherwise create ReplicaSets and Pods for the
objects other modules store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.cluster import (
    NODE_MONITOR_GRACE_SECONDS,
    ControlPlane,
    ReadyNodes,
    default_bin_dir,
    missing_binaries,
)
from tests.e2e.harness import (
    WEBHOOK_KINDS,
    WebhookServer,
    dry_run_probe,
    ensure_namespaces,
    register,
    wait_for_webhook,
    wait_until,
)

FLEET_NS, FLUX_NS = "cattle-fleet-system", "flux-system"
NODE_TAINT = {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}
NODES = 2
FLEET_IMAGE = "rancher/fleet:v0.12.3"

# Shaped like Fleet's chart (tests/cases/fleet-job-tolerations/): the controller tolerates the
# nodes' taint, its cleanup jobs do not (rancher/fleet#3180).
FLEET_CONTROLLER: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "fleet-controller", "namespace": FLEET_NS},
    "spec": {
        "selector": {"matchLabels": {"app": "fleet-controller"}},
        "template": {
            "metadata": {"labels": {"app": "fleet-controller"}},
            "spec": {
                "containers": [{"name": "fleet-controller", "image": FLEET_IMAGE}],
                "tolerations": [{"operator": "Equal", **NODE_TAINT}],
            },
        },
    },
}


def _cleanup_pod_spec(*args: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "fleet-job"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "cleanup", "image": FLEET_IMAGE, "command": ["fleet"], "args": list(args)}
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
    }


CLEANUP_JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "fleet-cleanup-clusterregistrations", "namespace": FLEET_NS},
    "spec": {"backoffLimit": 1, "template": _cleanup_pod_spec("cleanup", "clusterregistration")},
}
CLEANUP_CRONJOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "fleet-cleanup-gitrepo-jobs", "namespace": FLEET_NS},
    "spec": {
        "schedule": "@daily",
        "concurrencyPolicy": "Forbid",
        "jobTemplate": {
            "spec": {"backoffLimit": 1, "template": _cleanup_pod_spec("cleanup", "gitjob")}
        },
    },
}


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    """A controller Deployment that tolerates the nodes' taint (its Pods can be bound)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": FLUX_NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "manager",
                            "image": f"ghcr.io/fluxcd/{name}:v1",
                            "resources": {"limits": {"memory": "1Gi"}},
                        }
                    ],
                    "tolerations": [{"operator": "Equal", **NODE_TAINT}],
                },
            },
        },
    }


def _hpa(target: str, *, min_replicas: int, exempt: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": target, "namespace": FLUX_NS}
    if exempt:
        meta["annotations"] = {"fluxwarden.io/exempt": "irc-single-replica"}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def _json(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _apply(cluster: ControlPlane, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _pods(cluster: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = _json(cluster, "get", "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return pods


def _one_pod(cluster: ControlPlane, namespace: str, selector: str) -> dict[str, Any]:
    def created() -> bool:
        return len(_pods(cluster, namespace, selector)) == 1

    wait_until(f"a pod for {selector}", created, timeout=60)
    return _pods(cluster, namespace, selector)[0]


def _pod_scheduled(pod: dict[str, Any]) -> dict[str, Any]:
    conditions = pod.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "PodScheduled"), {})


def _failed_scheduling(cluster: ControlPlane, namespace: str, pod: str) -> list[str]:
    events = _json(
        cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={pod},reason=FailedScheduling",
    )["items"]
    return [event["message"] for event in events]


def _called(cluster: ControlPlane, server: WebhookServer) -> bool:
    """Whether the API server currently calls fluxwarden for a dry-run IRC Deployment."""
    before = server.metric_total("fluxwarden_admission_requests_total")
    dry_run_probe(cluster)  # admission runs before the AlreadyExists check
    return server.metric_total("fluxwarden_admission_requests_total") > before


@pytest.fixture(scope="module")
def scheduling_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = default_bin_dir()
    absent = missing_binaries(bin_dir, scheduling=True)
    if absent:
        pytest.fail(f"missing {absent} in {bin_dir}: run `make controlplane`", pytrace=False)
    with (
        ControlPlane(bin_dir, scheduling=True) as cluster,
        ReadyNodes(cluster, NODES, taints=[NODE_TAINT]),
    ):
        # the TaintNodesByCondition admission plugin taints a new Node not-ready; the node
        # lifecycle controller lifts it once it has seen the node Ready (asynchronously)
        wait_until(
            "the node controller to lift the not-ready taint",
            lambda: all(
                n["spec"].get("taints") == [NODE_TAINT]
                for n in _json(cluster, "get", "nodes")["items"]
            ),
            60,
        )
        ensure_namespaces(cluster, FLEET_NS, FLUX_NS)
        _apply(cluster, FLEET_CONTROLLER)
        yield cluster


@pytest.fixture(scope="module")
def server(
    scheduling_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookServer]:
    webhook = WebhookServer(scheduling_cluster, Path(tmp_path_factory.mktemp("sched"))).start()
    try:
        yield webhook
    finally:
        webhook.stop()


@pytest.fixture
def without_fluxwarden(scheduling_cluster: ControlPlane, server: WebhookServer) -> ControlPlane:
    for kind in WEBHOOK_KINDS:
        scheduling_cluster.kubectl("delete", kind.lower(), "--all")
    wait_until(
        "the API server to stop calling fluxwarden",
        lambda: not _called(scheduling_cluster, server),
    )
    return scheduling_cluster


@pytest.fixture
def with_fluxwarden(scheduling_cluster: ControlPlane, server: WebhookServer) -> ControlPlane:
    register(scheduling_cluster, server)
    wait_for_webhook(scheduling_cluster, server)
    return scheduling_cluster


@pytest.fixture
def cleanup_jobs(scheduling_cluster: ControlPlane) -> Iterator[None]:
    yield
    for kind in ("cronjob", "job"):
        scheduling_cluster.kubectl("delete", kind, "--all", "-n", FLEET_NS, "--cascade=orphan")
    # Bound pods wait for a kubelet to confirm a graceful delete: there is none.
    scheduling_cluster.kubectl(
        "delete", "pods", "-n", FLEET_NS, "-l", "app=fleet-job", "--grace-period=0", "--force"
    )


def test_nodes_are_ready_and_every_one_is_tainted(scheduling_cluster: ControlPlane) -> None:
    nodes = _json(scheduling_cluster, "get", "nodes")["items"]
    assert len(nodes) == NODES
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert node["spec"]["taints"] == [NODE_TAINT]  # none added by the node controller
    # The controller, to which Fleet's chart does give the tolerations, is bound: the
    # scheduler runs and the nodes are usable.
    wait_until(
        "fleet-controller's pod to be bound",
        lambda: bool(
            _one_pod(scheduling_cluster, FLEET_NS, "app=fleet-controller")["spec"].get("nodeName")
        ),
    )


def test_without_fluxwarden_the_fleet_cleanup_job_stays_pending_on_an_untolerated_taint(
    without_fluxwarden: ControlPlane, cleanup_jobs: None
) -> None:
    cluster = without_fluxwarden
    _apply(cluster, CLEANUP_JOB)
    pod = _one_pod(cluster, FLEET_NS, f"job-name={CLEANUP_JOB['metadata']['name']}")
    name = pod["metadata"]["name"]
    wait_until(
        "a FailedScheduling event",
        lambda: bool(_failed_scheduling(cluster, FLEET_NS, name)),
        timeout=60,
    )
    [message, *_] = _failed_scheduling(cluster, FLEET_NS, name)
    assert f"0/{NODES} nodes are available: {NODES} node(s) had untolerated taint" in message
    pod = _json(cluster, "get", "pod", name, "-n", FLEET_NS)
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]
    assert _pod_scheduled(pod) == {
        **_pod_scheduled(pod),
        "status": "False",
        "reason": "Unschedulable",
    }


def test_with_fluxwarden_the_fleet_cleanup_job_is_bound_to_a_node(
    with_fluxwarden: ControlPlane, cleanup_jobs: None
) -> None:
    cluster = with_fluxwarden
    _apply(cluster, CLEANUP_JOB)
    job = _json(cluster, "get", "job", CLEANUP_JOB["metadata"]["name"], "-n", FLEET_NS)
    # Inherited from the fleet-controller Deployment (the shipped policy set's setting).
    assert job["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Equal", **NODE_TAINT}]
    selector = f"job-name={CLEANUP_JOB['metadata']['name']}"
    wait_until(
        "the cleanup pod to be bound",
        lambda: bool(_one_pod(cluster, FLEET_NS, selector)["spec"].get("nodeName")),
        timeout=60,
    )
    pod = _one_pod(cluster, FLEET_NS, selector)
    assert pod["spec"]["nodeName"] in {f"node-{i}" for i in range(NODES)}
    assert _pod_scheduled(pod)["status"] == "True"


@pytest.mark.parametrize("fluxwarden_on", [False, True], ids=["without", "with"])
def test_a_job_made_from_the_fleet_cronjob_schedules_only_with_fluxwarden(
    request: pytest.FixtureRequest, cleanup_jobs: None, fluxwarden_on: bool
) -> None:
    """`kubectl create job --from=cronjob/...`: the Job gets the CronJob's stored template."""
    cluster: ControlPlane = request.getfixturevalue(
        "with_fluxwarden" if fluxwarden_on else "without_fluxwarden"
    )
    _apply(cluster, CLEANUP_CRONJOB)
    cluster.kubectl(
        "create",
        "job",
        "gitrepo-cleanup-now",
        "-n",
        FLEET_NS,
        "--from=cronjob/fleet-cleanup-gitrepo-jobs",
    )
    pod = _one_pod(cluster, FLEET_NS, "job-name=gitrepo-cleanup-now")
    name = pod["metadata"]["name"]

    def decided() -> dict[str, Any]:
        return _pod_scheduled(_json(cluster, "get", "pod", name, "-n", FLEET_NS))

    wait_until("the scheduler's decision", lambda: bool(decided()), timeout=60)
    assert decided()["status"] == ("True" if fluxwarden_on else "False")


def _settled_pods(cluster: ControlPlane, name: str) -> int:
    """Pods of Deployment `name` once its ReplicaSet controller has caught up."""

    def caught_up() -> bool:
        sets = _json(cluster, "get", "replicasets", "-n", FLUX_NS, "-l", f"app={name}")["items"]
        return bool(sets) and all(
            rs.get("status", {}).get("observedGeneration") == rs["metadata"]["generation"]
            and rs.get("status", {}).get("replicas", 0) == rs["spec"]["replicas"]
            for rs in sets
        )

    wait_until(f"{name}'s ReplicaSet", caught_up, timeout=60)
    return len(_pods(cluster, FLUX_NS, f"app={name}"))


def test_the_irc_deployment_applied_with_two_replicas_gets_one_pod(
    with_fluxwarden: ControlPlane,
) -> None:
    cluster = with_fluxwarden
    _apply(cluster, _deployment("image-reflector-controller", replicas=2))
    _apply(cluster, _deployment("source-controller", replicas=2))  # control: not IRC
    assert _settled_pods(cluster, "image-reflector-controller") == 1
    assert _settled_pods(cluster, "source-controller") == 2


def _scale_writes(cluster: ControlPlane, name: str) -> list[dict[str, Any]]:
    """The HPA controller's writes to Deployment `name`'s scale subresource (audit log)."""
    writes = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if (
            ref.get("resource") == "deployments"
            and ref.get("subresource") == "scale"
            and ref.get("name") == name
            and event.get("verb") == "update"
            and "horizontal-pod-autoscaler" in event.get("userAgent", "")
        ):
            writes.append(event)
    return writes


def test_an_hpa_cannot_raise_irc_through_the_real_controller_manager(
    with_fluxwarden: ControlPlane,
) -> None:
    """No metrics server here, but the HPA controller raises a Deployment below minReplicas
    before it reads metrics: the control Deployment goes to 3 Pods. For IRC, an HPA that
    fluxwarden admits is capped to 1; one exempted from the cap (as if it slipped past) makes
    the controller write 3 to the Deployment's scale subresource, and fluxwarden holds it at 1."""
    cluster = with_fluxwarden
    _apply(cluster, _deployment("image-reflector-controller", replicas=1))
    _apply(cluster, _deployment("notification-controller", replicas=1))
    _apply(cluster, _hpa("notification-controller", min_replicas=3))
    wait_until(
        "the HPA controller to raise the control Deployment",
        lambda: _settled_pods(cluster, "notification-controller") == 3,
        timeout=90,
    )

    _apply(cluster, _hpa("image-reflector-controller", min_replicas=3))
    capped = _json(cluster, "get", "hpa", "image-reflector-controller", "-n", FLUX_NS)
    assert (capped["spec"]["minReplicas"], capped["spec"]["maxReplicas"]) == (1, 1)

    _apply(cluster, _hpa("image-reflector-controller", min_replicas=3, exempt=True))
    exempted = _json(cluster, "get", "hpa", "image-reflector-controller", "-n", FLUX_NS)
    assert exempted["spec"]["minReplicas"] == 3
    wait_until(
        "the HPA controller to write the IRC scale",
        lambda: bool(_scale_writes(cluster, "image-reflector-controller")),
        timeout=90,
    )
    irc = _json(cluster, "get", "deployment", "image-reflector-controller", "-n", FLUX_NS)
    assert irc["spec"]["replicas"] == 1
    hpa = _json(cluster, "get", "hpa", "image-reflector-controller", "-n", FLUX_NS)
    assert hpa["status"].get("desiredReplicas") == 3  # what the controller asked for
    assert _settled_pods(cluster, "image-reflector-controller") == 1


def test_the_heartbeat_keeps_the_nodes_ready_while_a_silent_node_goes_not_ready(
    scheduling_cluster: ControlPlane,
) -> None:
    """Negative control for the Ready nodes above: the node lifecycle controller does mark a
    node nobody renews NotReady after the grace period; the heartbeat nodes stay Ready."""

    def ready_status(node: dict[str, Any]) -> str:
        return str(next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"])

    with ReadyNodes(scheduling_cluster, 1, taints=[NODE_TAINT], heartbeat=None, prefix="silent"):
        wait_until(
            "the silent node to go NotReady",
            lambda: ready_status(_json(scheduling_cluster, "get", "node", "silent-0")) != "True",
            timeout=NODE_MONITOR_GRACE_SECONDS * 4,
        )
        silent = _json(scheduling_cluster, "get", "node", "silent-0")
        assert ready_status(silent) == "Unknown"  # "Kubelet stopped posting node status"
        # The heartbeat nodes have now been up longer than the grace period.
        nodes = _json(scheduling_cluster, "get", "nodes")["items"]
        beating = [n for n in nodes if n["metadata"]["name"].startswith("node-")]
        assert len(beating) == NODES
        for node in beating:
            assert ready_status(node) == "True"
            assert node["spec"]["taints"] == [NODE_TAINT]
    scheduling_cluster.kubectl("delete", "node", "silent-0")
