"""The AdmissionReviews the benchmark sends: a no-op baseline and one typical object per policy.

Objects are modelled on the manifests users actually apply (Flux's `gotk-components.yaml`, the
Fleet chart), so JSON parsing and patch diffing cost what they cost in a real cluster.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

JsonObject = dict[str, Any]
UID_MARK = "@@UID@@"

FLUX_VERSION = "v2.6.4"
FLUX_ARGS = [
    "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
    "--watch-all-namespaces=true",
    "--log-level=info",
    "--log-encoding=json",
    "--enable-leader-election",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Literal["/mutate", "/validate"]
    policy: str | None  # the policy the object must trigger; None for the baseline
    description: str
    review: JsonObject

    def body_parts(self) -> tuple[bytes, bytes]:
        """The serialized review split around the uid, so each request gets its own uid cheaply."""
        text = json.dumps(self.review, separators=(",", ":"))
        head, tail = text.split(UID_MARK)
        return head.encode(), tail.encode()

    def body(self, uid: str) -> bytes:
        head, tail = self.body_parts()
        return head + uid.encode() + tail


def _plural(kind: str) -> str:
    return kind.lower() + ("es" if kind.endswith("s") else "s")


def admission_review(obj: JsonObject, *, group: str, version: str) -> JsonObject:
    """A CREATE AdmissionReview as the API server sends it (admission.k8s.io/v1)."""
    kind = obj["kind"]
    meta = obj["metadata"]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": _plural(kind)}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID_MARK,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:flux-system:kustomize-controller",
                "uid": "0d3f7a1e-5b7c-4a53-9d4e-2f6a0c1b9e77",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:flux-system",
                    "system:authenticated",
                ],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "CreateOptions",
                "fieldManager": "kustomize-controller",
            },
        },
    }


def _flux_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": "flux-system",
        "app.kubernetes.io/part-of": "flux",
        "app.kubernetes.io/version": FLUX_VERSION,
        "control-plane": "controller",
        "kustomize.toolkit.fluxcd.io/name": "flux-system",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }


def flux_controller(
    name: str,
    *,
    replicas: int = 1,
    args: list[str] | None = None,
    memory_limit: str = "1Gi",
    volumes: list[tuple[str, str, JsonObject]] | None = None,
) -> JsonObject:
    """A Flux controller Deployment shaped like the one in gotk-components.yaml."""
    volumes = volumes if volumes is not None else [("temp", "/tmp", {"emptyDir": {}})]
    container: JsonObject = {
        "name": "manager",
        "image": f"ghcr.io/fluxcd/{name}:v1.6.0",
        "imagePullPolicy": "IfNotPresent",
        "args": list(FLUX_ARGS if args is None else args),
        "env": [
            {
                "name": "RUNTIME_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {
                "name": "GOMAXPROCS",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": "manager", "resource": "limits.cpu"}
                },
            },
            {
                "name": "GOMEMLIMIT",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": "manager", "resource": "limits.memory"}
                },
            },
        ],
        "ports": [
            {"containerPort": 8080, "name": "http-prom", "protocol": "TCP"},
            {"containerPort": 9440, "name": "healthz", "protocol": "TCP"},
        ],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "healthz"}},
        "resources": {
            "limits": {"cpu": "1000m", "memory": memory_limit},
            "requests": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"mountPath": path, "name": vol} for vol, path, _ in volumes],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "flux-system",
            "labels": _flux_labels(name),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "annotations": {"prometheus.io/port": "8080", "prometheus.io/scrape": "true"},
                    "labels": {"app": name},
                },
                "spec": {
                    "containers": [container],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {"fsGroup": 1337},
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 10,
                    "volumes": [{"name": vol, **source} for vol, _, source in volumes],
                },
            },
        },
    }


def helm_release(*, interval: str, drift: bool) -> JsonObject:
    spec: JsonObject = {
        "interval": interval,
        "releaseName": "podinfo",
        "chart": {
            "spec": {
                "chart": "podinfo",
                "version": "6.7.x",
                "sourceRef": {
                    "kind": "HelmRepository",
                    "name": "podinfo",
                    "namespace": "flux-system",
                },
                "interval": "12h",
            }
        },
        "install": {"remediation": {"retries": 3}},
        "upgrade": {"remediation": {"retries": 3, "remediateLastFailure": True}},
        "values": {"replicaCount": 2, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
    }
    if drift:
        spec["driftDetection"] = {"mode": "enabled"}
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "podinfo", "namespace": "apps"},
        "spec": spec,
    }


def fleet_cleanup_job() -> JsonObject:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "fleet-cleanup-clusterregistrations",
            "namespace": "cattle-fleet-system",
            "annotations": {
                "helm.sh/hook": "post-install, post-upgrade",
                "helm.sh/hook-delete-policy": "hook-succeeded,before-hook-creation",
            },
        },
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": {"app": "fleet-job"}},
                "spec": {
                    "serviceAccountName": "fleet-controller",
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                    },
                    "containers": [
                        {
                            "name": "cleanup",
                            "image": "rancher/fleet:v0.12.3",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["fleet", "cleanup", "clusterregistration"],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {
                            "key": "cattle.io/os",
                            "operator": "Equal",
                            "value": "linux",
                            "effect": "NoSchedule",
                        }
                    ],
                },
            },
        },
    }


def kustomization_with_dependencies() -> JsonObject:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "retryInterval": "1m",
            "timeout": "5m",
            "path": "./apps/production",
            "prune": True,
            "wait": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            "dependsOn": [
                {"name": "infra-controllers"},
                {"name": "infra-configs"},
                {"name": "cert-manager", "namespace": "cert-manager"},
            ],
        },
    }


def config_map() -> JsonObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "podinfo-config",
            "namespace": "apps",
            "labels": {
                "app.kubernetes.io/name": "podinfo",
                "kustomize.toolkit.fluxcd.io/name": "apps",
            },
        },
        "data": {
            "PODINFO_UI_COLOR": "#34577c",
            "PODINFO_UI_MESSAGE": "greetings from fluxwarden's benchmark",
            "config.yaml": "level: info\nport: 9898\nbackend: http://backend:9898/echo\n" * 8,
        },
    }


def _scenarios() -> list[Scenario]:
    source_volumes: list[tuple[str, str, JsonObject]] = [
        ("data", "/data", {"emptyDir": {}}),
        ("tmp", "/tmp", {"emptyDir": {}}),
    ]
    source_args = [
        *FLUX_ARGS,
        "--storage-path=/data",
        "--storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local.",
    ]
    return [
        Scenario(
            "baseline",
            "/mutate",
            None,
            "ConfigMap no policy touches",
            admission_review(config_map(), group="", version="v1"),
        ),
        Scenario(
            "irc-single-replica",
            "/mutate",
            "irc-single-replica",
            "IRC Deployment, replicas 2, 1Gi",
            admission_review(
                flux_controller("image-reflector-controller", replicas=2, memory_limit="1Gi"),
                group="apps",
                version="v1",
            ),
        ),
        Scenario(
            "helmrelease-drift-detection",
            "/mutate",
            "helmrelease-drift-detection",
            "HelmRelease v2, no driftDetection",
            admission_review(
                helm_release(interval="10m", drift=False),
                group="helm.toolkit.fluxcd.io",
                version="v2",
            ),
        ),
        Scenario(
            "fleet-job-tolerations",
            "/mutate",
            "fleet-job-tolerations",
            "Fleet cleanup Job, cattle-fleet-system",
            admission_review(fleet_cleanup_job(), group="batch", version="v1"),
        ),
        Scenario(
            "helmrelease-interval",
            "/validate",
            "helmrelease-interval",
            "HelmRelease, interval 10s",
            admission_review(
                helm_release(interval="10s", drift=True),
                group="helm.toolkit.fluxcd.io",
                version="v2",
            ),
        ),
        Scenario(
            "source-controller-storage",
            "/mutate",
            "source-controller-storage",
            "source-controller, emptyDir /data and /tmp",
            admission_review(
                flux_controller("source-controller", args=source_args, volumes=source_volumes),
                group="apps",
                version="v1",
            ),
        ),
        Scenario(
            "controller-requeue-dependency",
            "/mutate",
            "controller-requeue-dependency",
            "kustomize-controller, shipped Flux args",
            admission_review(flux_controller("kustomize-controller"), group="apps", version="v1"),
        ),
        Scenario(
            "kustomization-dependencies",
            "/validate",
            "kustomization-dependencies",
            "Kustomization, dependsOn x3",
            admission_review(
                kustomization_with_dependencies(),
                group="kustomize.toolkit.fluxcd.io",
                version="v1",
            ),
        ),
    ]


SCENARIOS: list[Scenario] = _scenarios()


def by_name(names: list[str]) -> list[Scenario]:
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {list(known)}")
    chosen = [known[n] for n in names]
    if chosen[0].name != "baseline":
        chosen = [known["baseline"], *[s for s in chosen if s.name != "baseline"]]
    return [copy.deepcopy(s) for s in chosen]
