"""fluxwarden installed as it ships, on a real node: the image `make image` builds, pulled from
the node's containerd by a kubelet, behind its Service, called by the API server with TLS
verified.  The node lives in network and mount namespaces of its own (tests/controlplane/node.py);
nothing here dials a node, pod or Service address from the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from image import build
from tests.controlplane.cluster import ControlPlane, ControlPlaneError
from tests.controlplane.node import node_links, routes_off_the_machine, why_no_node
from tests.e2e.flux.harness import ArtifactServer, KustomizeController
from tests.e2e.flux.harness import missing as flux_missing
from tests.e2e.harness import REPO, wait_until
from tests.e2e.node_cluster import NAMESPACE, cert_manager_binary, install_fluxwarden
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
        node = cluster.node_processes
        yield cluster
    # Nothing of the node is left on the machine: cgroups, mount points, mounts, processes.
    assert node.leftovers() == []


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
    # Ready pods are reached through the Service only once the endpoints and kube-proxy's rules
    # follow (asynchronously), and until then the Ignore webhook is skipped: wait for an answer
    wait_until(
        "the API server to call fluxwarden through its Service",
        lambda: (
            "fluxwarden: irc-single-replica:"
            in node_cluster.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=json.dumps(IRC)
            ).stderr
        ),
        60,
    )
    applied = node_cluster.kubectl("apply", "-f", "-", input=json.dumps(IRC))
    assert "fluxwarden: irc-single-replica:" in applied.stderr, applied.stderr
    stored = _json(
        node_cluster, "-n", "flux-system", "get", "deployment", "image-reflector-controller"
    )
    assert stored["spec"]["replicas"] == 1


# --------------------------------------------------------------------------- under load


class WriteLoad:
    """HelmRelease creates at ``rate`` per second through the API server (so through the
    webhook), each checked in the answer: failed (not 2xx, or no answer) or unenforced (stored
    without the drift-detection mutation: the webhook was not reached and failurePolicy Ignore
    let it through).  Bounded: stops at ``limit`` writes or on exit."""

    def __init__(self, cluster: ControlPlane, *, rate: float = 20, limit: int = 6000) -> None:
        self.cluster, self.rate, self.limit = cluster, rate, limit
        self.names: list[str] = []
        self.failed: list[str] = []
        self.unenforced: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-load", daemon=True)
        self._prefix = f"load-{int(time.time() * 1000) % 10**8}"

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        for index in range(self.limit):
            if self._stop.is_set():
                return
            self._write(f"{self._prefix}-{index}")
            pause = started + (index + 1) / self.rate - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)

    def _write(self, name: str) -> None:
        self.names.append(name)
        release = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {
                "interval": "10m",
                "chart": {
                    "spec": {
                        "chart": "podinfo",
                        "sourceRef": {"kind": "HelmRepository", "name": "x"},
                    }
                },
            },
        }
        try:
            stored = self.cluster.api(
                "POST", "/apis/helm.toolkit.fluxcd.io/v2/namespaces/apps/helmreleases", release
            )
        except (ControlPlaneError, OSError) as error:
            self.failed.append(f"{name}: {str(error)[:200]}")
            return
        if stored["spec"].get("driftDetection", {}).get("mode") != "enabled":
            self.unenforced.append(name)

    def summary(self) -> str:
        return (
            f"{len(self.names)} writes at {self.rate:.0f}/s: {len(self.failed)} failed, "
            f"{len(self.unenforced)} unenforced"
        )


@pytest.fixture
def installed(node_cluster: ControlPlane) -> ControlPlane:
    """fluxwarden as manifests/base ships it, 2 pods Ready (re-applied: a test may change it)."""
    install_fluxwarden(node_cluster)
    wait_until("2 fluxwarden pods Ready", lambda: len(_ready_pods(node_cluster)) == 2, 240)
    return node_cluster


def _rollout_under_load(cluster: ControlPlane) -> WriteLoad:
    with WriteLoad(cluster) as load:
        time.sleep(3)
        cluster.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/fluxwarden")
        cluster.kubectl(
            "-n", NAMESPACE, "rollout", "status", "deployment/fluxwarden", "--timeout=240s"
        )
        time.sleep(5)  # the last endpoint change reaches the API server
    return load


def test_a_rolling_update_under_load_fails_and_misses_no_write(installed: ControlPlane) -> None:
    load = _rollout_under_load(installed)
    print(f"\nrolling update: {load.summary()}")
    assert len(load.names) >= 200, load.summary()
    assert load.failed == [], load.failed[:5]
    assert load.unenforced == [], load.summary()


def test_negative_control_without_the_rollout_settings_writes_are_missed(
    installed: ControlPlane,
) -> None:
    """The same rollout without what the Deployment sets for it: maxUnavailable 100% and
    maxSurge 0 (every pod replaced at once) and no preStop sleep (the old pods stop serving at
    once, while kube-proxy would otherwise keep sending to them as terminating endpoints).
    Writes then reach no webhook and go through unenforced: the 0 above is the settings' doing."""
    strategy = {"rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}}
    patch = [
        {"op": "replace", "path": "/spec/strategy", "value": {"type": "RollingUpdate", **strategy}},
        {"op": "remove", "path": "/spec/template/spec/containers/0/lifecycle"},
    ]
    installed.kubectl(
        "-n", NAMESPACE, "patch", "deployment/fluxwarden", "--type=json", "-p", json.dumps(patch)
    )
    installed.kubectl(
        "-n", NAMESPACE, "rollout", "status", "deployment/fluxwarden", "--timeout=240s"
    )
    load = _rollout_under_load(installed)
    print(f"\nrolling update, maxUnavailable 100%, no preStop: {load.summary()}")
    assert load.unenforced, load.summary()
    # What slipped through is fixed by the next Flux reconcile (the pods are back by now).
    _reapply_as_flux(installed, load.unenforced)


def _container_pid(cluster: ControlPlane, pod_name: str) -> int:
    """The host PID of the pod's webhook container's first process (containerd's task)."""
    pod = _json(cluster, "-n", NAMESPACE, "get", "pod", pod_name)
    container_id = pod["status"]["containerStatuses"][0]["containerID"].partition("://")[2]
    for line in cluster.node_processes.ctr("tasks", "ls").splitlines()[1:]:
        task, pid, _status = line.split()
        if task == container_id:
            return int(pid)
    raise LookupError(f"no task for {pod_name}")


def _restarts(cluster: ControlPlane, pod_name: str) -> int:
    pod = _json(cluster, "-n", NAMESPACE, "get", "pod", pod_name)
    return int(pod["status"]["containerStatuses"][0]["restartCount"])


def test_a_killed_pod_fails_no_write_and_a_reconcile_heals_the_misses(
    installed: ControlPlane,
) -> None:
    """kill -9 of one pod's server under load: no write fails (failurePolicy Ignore); writes
    the API server could not get answered before the endpoint went away would be stored
    unenforced: they are counted, and the next Flux reconcile (a server-side apply of the same
    object, as kustomize-controller does) has the webhook fix each of them (checked on the
    negative control's misses, which always has some)."""
    victim = _ready_pods(installed)[0]
    with WriteLoad(installed) as load:
        time.sleep(3)
        os.kill(_container_pid(installed, victim), signal.SIGKILL)
        wait_until("the killed container restarted", lambda: _restarts(installed, victim) >= 1, 60)
        wait_until("2 pods Ready again", lambda: len(_ready_pods(installed)) == 2, 120)
        time.sleep(3)
    print(f"\nkill -9 of one pod: {load.summary()}")
    assert len(load.names) >= 100, load.summary()
    assert load.failed == [], load.failed[:5]
    _reapply_as_flux(installed, load.unenforced)


def _reapply_as_flux(cluster: ControlPlane, names: list[str]) -> None:
    """What the next Flux reconcile does to each object: a server-side apply of what Git holds
    (kustomize-controller's field manager); the webhook mutates it this time."""
    for name in names:
        path = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/apps/helmreleases/{name}"
        stored = cluster.api("GET", path)
        assert "driftDetection" not in stored["spec"], name
        applied = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": stored["spec"],
        }
        healed = cluster.api(
            "PATCH",
            f"{path}?fieldManager=kustomize-controller&force=true",
            applied,
            content_type="application/apply-patch+yaml",
        )
        assert healed["spec"]["driftDetection"]["mode"] == "enabled", name


def test_strict_overlay_never_locks_out_its_own_pods(installed: ControlPlane) -> None:
    """failurePolicy Fail: with no replica, dependsOn Kustomizations are refused (fail closed),
    yet the webhook's own pods and kube-system objects are admitted, and scaling back up
    recovers without a hand."""
    installed.kubectl("apply", "-k", str(REPO / "manifests" / "overlays" / "strict"))
    try:
        installed.kubectl("-n", NAMESPACE, "scale", "deployment/fluxwarden", "--replicas=0")
        wait_until("no fluxwarden pod", lambda: _pods(installed) == [], 120)
        refused = installed.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(_kustomization("strict-a", ["strict-b"])),
            check=False,
        )
        assert refused.returncode != 0, refused.stdout
        assert "fluxwarden" in refused.stderr, refused.stderr
        installed.kubectl("-n", "kube-system", "create", "configmap", "strict-probe")
        installed.kubectl("-n", NAMESPACE, "scale", "deployment/fluxwarden", "--replicas=2")
        wait_until("2 pods Ready after scale-up", lambda: len(_ready_pods(installed)) == 2, 180)
        wait_until(
            "the dependsOn Kustomization admitted again",
            lambda: (
                installed.kubectl(
                    "apply",
                    "-f",
                    "-",
                    input=json.dumps(_kustomization("strict-a", ["strict-b"])),
                    check=False,
                ).returncode
                == 0
            ),
            60,
        )
    finally:
        installed.kubectl("apply", "-k", str(REPO / "manifests" / "base"))


def _pods(cluster: ControlPlane) -> list[str]:
    pods = _json(
        cluster, "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=webhook"
    )
    return [pod["metadata"]["name"] for pod in pods["items"]]


def _kustomization(name: str, depends: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": "./",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            "dependsOn": [{"name": d} for d in depends],
        },
    }


def test_the_audit_cronjob_runs_as_a_job_and_writes_policy_reports(installed: ControlPlane) -> None:
    """The CronJob's template as a Job: its ServiceAccount reads the cluster through the
    `kubernetes` Service and writes a PolicyReport for a HelmRelease that keeps an explicit
    `driftDetection.mode: disabled` (admitted with a warning, reported by the audit)."""
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "audit-probe", "namespace": "apps"},
        "spec": {
            "interval": "10m",
            "driftDetection": {"mode": "disabled"},
            "chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "x"}}},
        },
    }
    installed.kubectl("apply", "-f", "-", input=json.dumps(release))
    installed.kubectl(
        "-n", NAMESPACE, "create", "job", "audit-now", "--from=cronjob/fluxwarden-audit"
    )

    def finished() -> bool:
        job = _json(installed, "-n", NAMESPACE, "get", "job", "audit-now")
        return bool(job["status"].get("succeeded") or job["status"].get("failed"))

    wait_until("the audit Job finished", finished, 240)
    job = _json(installed, "-n", NAMESPACE, "get", "job", "audit-now")
    logs = installed.kubectl("-n", NAMESPACE, "logs", "job/audit-now", check=False)
    assert job["status"].get("succeeded") == 1, logs.stdout[-2000:] + logs.stderr[-2000:]
    reports = _json(installed, "get", "policyreports.wgpolicyk8s.io", "-n", "apps")
    results = [result for report in reports["items"] for result in report.get("results", [])]
    names = {resource["name"] for result in results for resource in result.get("resources", [])}
    assert "audit-probe" in names, json.dumps(reports)[:2000]


def _revision(cluster: ControlPlane) -> int:
    certificate = _json(cluster, "-n", NAMESPACE, "get", "certificate", "fluxwarden-tls")
    return int(certificate.get("status", {}).get("revision", 0))


def test_certificate_renewals_under_load_fail_and_miss_no_admission(
    installed: ControlPlane,
) -> None:
    """A serving certificate renewed every few seconds (1h duration, renewBefore 59m50s) by
    cert-manager while writes go on: the kubelet refreshes the mounted Secret, the server
    reloads it, the caBundle (the CA) stays: no write fails, none goes unenforced."""
    first = _revision(installed)
    patch = {"spec": {"duration": "1h", "renewBefore": "59m50s"}}
    installed.kubectl(
        "-n",
        NAMESPACE,
        "patch",
        "certificate",
        "fluxwarden-tls",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    try:
        with WriteLoad(installed) as load:
            wait_until("3 renewals", lambda: _revision(installed) >= first + 3, 150)
            time.sleep(10)  # the kubelet's Secret refresh and the server's reload
    finally:
        installed.kubectl("apply", "-k", str(REPO / "manifests" / "base"))
    print(f"\n{_revision(installed) - first} renewals: {load.summary()}")
    assert load.failed == [], load.failed[:5]
    assert load.unenforced == [], load.summary()


def _memory_mib(cluster: ControlPlane, pod_name: str) -> tuple[float, float]:
    """(RSS, working set) of the pod's webhook container, from its memory cgroup."""
    pid = _container_pid(cluster, pod_name)
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            group = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            stats = {
                key: int(value)
                for key, value in (
                    row.split() for row in (group / "memory.stat").read_text().splitlines()
                )
            }
            usage = int((group / "memory.usage_in_bytes").read_text())
            working = usage - stats.get("total_inactive_file", 0)
            return stats["total_rss"] / 2**20, working / 2**20
    raise LookupError(f"no memory cgroup for {pod_name}")


def test_resource_figures_against_the_deployment_requests(installed: ControlPlane) -> None:
    """Idle and loaded memory per pod, against the Deployment's 128Mi request / 256Mi limit."""
    pods = _ready_pods(installed)
    idle = {pod: _memory_mib(installed, pod) for pod in pods}
    with WriteLoad(installed, rate=20, limit=400):
        time.sleep(15)
        loaded = {pod: _memory_mib(installed, pod) for pod in pods}
    for pod in pods:
        print(
            f"\n{pod}: idle RSS {idle[pod][0]:.0f} MiB (working set {idle[pod][1]:.0f}), "
            f"at 20 writes/s RSS {loaded[pod][0]:.0f} MiB (working set {loaded[pod][1]:.0f}); "
            "request 128Mi, limit 256Mi"
        )
        assert loaded[pod][1] < 256, "working set over the Deployment's memory limit"


def _repo_files() -> dict[str, str]:
    """manifests/ and policies/ as Flux would fetch them from this repository."""
    files = {}
    for top in ("manifests", "policies"):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "certs" not in path.parts:
                files[str(path.relative_to(REPO))] = path.read_text()
    return files


def test_flux_installs_fluxwarden_and_its_health_checks_pass(
    installed: ControlPlane, tmp_path: Path
) -> None:
    """manifests/flux/fluxwarden.yaml's Kustomization, applied by the real kustomize-controller
    from an artifact of this repository (an ExternalArtifact instead of the GitRepository, which
    would need the network), with `wait: true`: Ready once every object is healthy on the node."""
    if flux_missing():
        pytest.fail(f"missing {flux_missing()}: run `make controlplane`")
    shipped = [
        doc
        for doc in yaml.safe_load_all((REPO / "manifests/flux/fluxwarden.yaml").read_text())
        if doc
    ]
    kustomization = next(doc for doc in shipped if doc["kind"] == "Kustomization")
    assert kustomization["spec"]["wait"] is True
    kustomization["spec"]["sourceRef"] = {"kind": "ExternalArtifact", "name": "fluxwarden"}
    with ArtifactServer(tmp_path / "artifacts") as artifacts:
        artifacts.publish(
            installed, name="fluxwarden", namespace="flux-system", files=_repo_files()
        )
        controller = KustomizeController(installed, tmp_path / "kc").start()
        try:
            installed.kubectl("apply", "-f", "-", input=json.dumps(kustomization))

            def ready() -> bool:
                status = _json(installed, "-n", "flux-system", "get", "kustomization", "fluxwarden")
                conditions = status.get("status", {}).get("conditions", [])
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            wait_until("Kustomization fluxwarden Ready (health checks passed)", ready, 300)
        finally:
            controller.stop()
    status = _json(installed, "-n", "flux-system", "get", "kustomization", "fluxwarden")["status"]
    assert "Healthy" in json.dumps(status["conditions"]), status["conditions"]
