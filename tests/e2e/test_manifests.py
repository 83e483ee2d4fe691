"""The install manifests: every overlay renders and the real API server accepts every object;
the webhook configurations are narrow, and their matchConditions are evaluated by the API server
itself (not re-implemented here) to admit exactly the objects the policies target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import REPO, WebhookServer, install_crds, rendered

OVERLAYS = sorted(p.name for p in (REPO / "manifests" / "overlays").iterdir() if p.is_dir())
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ and policies/ with certificates for the no-cert-manager overlay."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "manifests", root / "manifests", ignore=shutil.ignore_patterns("certs"))
    shutil.copytree(REPO / "policies", root / "policies")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            "--out",
            str(root / "manifests/overlays/no-cert-manager/certs"),
            "--dns",
            "fluxwarden.fluxwarden-system.svc",
        ],
        check=True,
        capture_output=True,
    )
    return root / "manifests"


@pytest.fixture(scope="module")
def crds(cluster: ControlPlane) -> None:
    install_crds(cluster)


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_renders_and_the_api_server_accepts_every_object(
    cluster: ControlPlane, crds: None, manifests: Path, directory: str
) -> None:
    docs = rendered(cluster, manifests / directory)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ServiceAccount", *WEBHOOK_KINDS}
    # Server-side dry-run does not create the namespace the other objects need: create it first.
    cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(next(d for d in docs if d["kind"] == "Namespace"))
    )
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. PodSecurity "restricted" violations


def test_flux_install_example_is_accepted(cluster: ControlPlane, crds: None) -> None:
    cluster.kubectl("create", "namespace", "flux-system", check=False)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(REPO / "manifests/flux/fluxwarden.yaml")
    )
    assert "created (server dry run)" in result.stdout


def _webhooks(
    cluster: ControlPlane, manifests: Path, directory: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (doc, hook)
        for doc in rendered(cluster, manifests / directory)
        if doc["kind"] in WEBHOOK_KINDS
        for hook in doc["webhooks"]
    ]


def test_webhook_configurations_are_narrow(cluster: ControlPlane, manifests: Path) -> None:
    pairs = _webhooks(cluster, manifests, "base")
    # Jobs have their own: gitjob's Jobs are matched in any namespace. The Flux sources, image
    # and notification kinds: one webhook per set of policies that look at them. Namespaces: the
    # kustomization-safety takeover (cluster-scoped rules).
    assert len(pairs) == 13
    for config, hook in pairs:
        assert (
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "fluxwarden-system/fluxwarden-tls"
        )
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] <= 5
        assert hook["failurePolicy"] == "Ignore"
        expression = hook["namespaceSelector"]["matchExpressions"][0]
        assert expression["key"] == "kubernetes.io/metadata.name"
        if expression["operator"] == "NotIn":  # kube-system is checked: only our own is excluded
            assert expression["values"] == ["fluxwarden-system"]
        else:  # an allow-list of the namespaces the policies look at (flux-system, Fleet's)
            assert expression["operator"] == "In"
            assert "fluxwarden-system" not in expression["values"]
        for rule in hook["rules"]:
            assert "*" not in rule["resources"]
            assert "DELETE" not in rule["operations"]
        assert hook["matchConditions"], hook["name"]
    strict = {
        hook["name"]: hook["failurePolicy"]
        for _, hook in _webhooks(cluster, manifests, "overlays/strict")
    }
    assert (
        strict["kustomizations.validate.fluxwarden.io"]
        == strict["helmreleases.validate.fluxwarden.io"]
        == "Fail"
    )
    assert strict["deployments.mutate.fluxwarden.io"] == "Ignore"
    for _, hook in _webhooks(cluster, manifests, "overlays/no-cert-manager"):
        assert hook["clientConfig"]["caBundle"]


def _deployment(name: str, namespace: str = "flux-system") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "manager", "image": "x"}]},
            },
        },
    }


def _job(
    name: str, labels: dict[str, str], namespace: str = "cattle-fleet-system"
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]},
            }
        },
    }


def _gitrepo_job(namespace: str) -> dict[str, Any]:
    """As Fleet's gitjob labels the Job it creates per GitRepo."""
    job = _job("simple-2f5a1", {}, namespace)
    job["metadata"]["labels"] = {"fleet.cattle.io/gitrepo-generation": "1"}
    return job


def _helmrelease(
    name: str,
    drift: str | None,
    namespace: str = "apps",
    *,
    interval: str = "5m",
    retry: bool = True,
) -> dict[str, Any]:
    chart = {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "x"}}
    spec: dict[str, Any] = {"interval": interval, "chart": {"spec": chart}}
    if retry:  # helmrelease-remediation has nothing to say
        spec["install"] = spec["upgrade"] = {"strategy": {"name": "RetryOnFailure"}}
    if drift:
        spec["driftDetection"] = {"mode": drift}
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _source(
    name: str, kind: str, interval: str, *, insecure: bool = False, type_: str = ""
) -> dict[str, Any]:
    url = {"GitRepository": "https://example.com/x", "HelmRepository": "https://example.com"}
    spec: dict[str, Any] = {"interval": interval, "url": url.get(kind, "oci://example.com/x")}
    if insecure:
        spec["insecure"] = True
    if type_:
        spec["type"] = type_
        spec["url"] = "oci://example.com/charts"
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "apps"},
        "spec": spec,
    }


def _kustomization(name: str, depends: list[str], *, wait: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "5m",
        "prune": True,
        "wait": wait,
        "sourceRef": {"kind": "GitRepository", "name": "x"},
    }
    if depends:
        spec["dependsOn"] = [{"name": d} for d in depends]
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


def _hpa(target: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"hpa-{target}", "namespace": "flux-system"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }


def _pod(
    namespace: str, *, generate_name: str = "", name: str = "", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "labels": labels or {}}
    if generate_name:
        meta["generateName"] = generate_name
    else:
        meta["name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


# (description, object, whether the API server must call fluxwarden for it)
ADMISSION_CASES = [
    ("IRC Deployment", _deployment("image-reflector-controller"), True),
    ("source-controller", _deployment("source-controller"), True),
    ("helm-controller", _deployment("helm-controller"), True),
    ("another Flux Deployment", _deployment("notification-controller"), False),
    (
        "IRC-named Deployment in kube-system",
        _deployment("image-reflector-controller", "kube-system"),
        False,
    ),
    (
        "IRC-named Deployment in another namespace",
        _deployment("image-reflector-controller", "matchtest"),
        False,
    ),
    ("HPA on IRC", _hpa("image-reflector-controller"), True),
    ("HPA on something else", _hpa("podinfo"), False),
    ("HelmRelease without driftDetection", _helmrelease("plain", None), True),
    ("HelmRelease with driftDetection disabled", _helmrelease("off", "disabled"), True),
    ("HelmRelease in kube-system", _helmrelease("cilium-match", None, "kube-system"), True),
    (
        "HelmRelease with drift detection and a good interval",
        _helmrelease("fine", "enabled"),
        False,
    ),
    (
        "HelmRelease with drift detection, 10s interval",
        _helmrelease("fast", "enabled", interval="10s"),
        True,
    ),
    (
        "HelmRelease without install/upgrade failure handling",
        _helmrelease("no-retry", "enabled", retry=False),
        True,
    ),
    ("GitRepository polled every 5m", _source("calm", "GitRepository", "5m"), False),
    ("GitRepository polled every 10s", _source("eager", "GitRepository", "10s"), True),
    ("OCIRepository over plain HTTP", _source("plain", "OCIRepository", "5m", insecure=True), True),
    ("HelmRepository of type oci", _source("legacy", "HelmRepository", "1h", type_="oci"), True),
    ("Kustomization with dependsOn", _kustomization("with-deps", ["infra"]), True),
    ("Kustomization without dependsOn", _kustomization("no-deps", []), False),
    # kustomization-safety: others may depend on it (a lookup decides)
    ("Kustomization that does not wait", _kustomization("no-wait", [], wait=False), True),
    ("Fleet cleanup Job by name", _job("fleet-cleanup-clusterregistrations", {}), True),
    ("Job labelled app: fleet-job", _job("some-fleet-job", {"app": "fleet-job"}), True),
    ("other Job in cattle-fleet-system", _job("unrelated", {"app": "other"}), False),
    ("fleet-job-labelled Job elsewhere", _job("elsewhere", {"app": "fleet-job"}, "apps"), False),
    ("helm-operation-named Job elsewhere", _job("helm-operation-x", {}, "apps"), False),
    ("gitjob's GitRepo Job in any namespace", _gitrepo_job("apps"), True),
    ("fleet-agent Deployment", _deployment("fleet-agent", "cattle-fleet-system"), True),
    (
        "other Deployment in cattle-fleet-system",
        _deployment("gitjob", "cattle-fleet-system"),
        False,
    ),
    (
        "helm-operation Pod by generateName",
        _pod("cattle-system", generate_name="helm-operation-"),
        True,
    ),
    ("other Pod in cattle-system", _pod("cattle-system", name="rancher-xyz"), False),
]


def _dry_run_write(cluster: ControlPlane, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """A server-side dry-run create, or an update when another test left an object of that name
    (its own spec, so immutable fields stay): either way one admission request, nothing stored."""
    meta = obj["metadata"]
    existing = None
    if meta.get("name"):
        found = cluster.kubectl(
            "get", obj["kind"], meta["name"], "-n", meta["namespace"], "-o", "json", check=False
        )
        existing = json.loads(found.stdout) if found.returncode == 0 else None
    if existing is None:
        return cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False
        )
    existing.pop("status", None)
    for key in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
        existing["metadata"].pop(key, None)
    existing["metadata"].setdefault("labels", {})["fluxwarden-test/touched"] = "yes"
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=matchtest",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(existing),
        check=False,
    )


@pytest.mark.parametrize(
    ("description", "obj", "reaches"), ADMISSION_CASES, ids=[c[0] for c in ADMISSION_CASES]
)
def test_match_conditions_admit_exactly_the_targeted_objects(
    cluster: ControlPlane,
    fluxwarden: WebhookServer,
    description: str,
    obj: dict[str, Any],
    reaches: bool,
) -> None:
    cluster.kubectl("create", "namespace", obj["metadata"]["namespace"], check=False)
    before = fluxwarden.metric_total("fluxwarden_admission_requests_total")
    result = _dry_run_write(cluster, obj)
    assert result.returncode == 0, result.stderr
    calls = fluxwarden.metric_total("fluxwarden_admission_requests_total") - before
    assert (calls > 0) == reaches, f"{description}: {calls} webhook calls"


def test_scale_subresource_reaches_the_webhook(
    cluster: ControlPlane, fluxwarden: WebhookServer
) -> None:
    cluster.kubectl("create", "namespace", "flux-system", check=False)
    # Another test may have created it already (with another selector): either one will do.
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(_deployment("image-reflector-controller")),
        check=False,
    )
    before = fluxwarden.metric_total("fluxwarden_admission_requests_total")
    cluster.kubectl(
        "scale", "deployment/image-reflector-controller", "-n", "flux-system", "--replicas=4"
    )
    assert fluxwarden.metric_total("fluxwarden_admission_requests_total") > before
