"""The resources the policies can target, as the API server serves them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceKind:
    """A namespaced resource; `versions` newest first (older clusters may serve only a beta).

    `pod_template` is where the kind keeps its pod's metadata and spec: `()` for a Pod itself,
    None for kinds that run no pods.
    """

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    pod_template: tuple[str, ...] | None = None

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def list_path(self, version: str, namespace: str | None) -> str:
        """The API path that lists this resource (core kinds live under /api, others /apis)."""
        root = f"/apis/{self.group}/{version}" if self.group else f"/api/{version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{root}{where}/{self.plural}"


DEPLOYMENTS = ResourceKind("apps", ("v1",), "deployments", "Deployment", ("spec", "template"))
HPAS = ResourceKind(
    "autoscaling", ("v2", "v1"), "horizontalpodautoscalers", "HorizontalPodAutoscaler"
)
JOBS = ResourceKind("batch", ("v1",), "jobs", "Job", ("spec", "template"))
CRONJOBS = ResourceKind(
    "batch", ("v1",), "cronjobs", "CronJob", ("spec", "jobTemplate", "spec", "template")
)
PODS = ResourceKind("", ("v1",), "pods", "Pod", ())
PERSISTENT_VOLUME_CLAIMS = ResourceKind(
    "", ("v1",), "persistentvolumeclaims", "PersistentVolumeClaim"
)
# v2beta1 is listed so that releases still written in it are warned about (it was removed in
# Flux 2.7 and never honoured driftDetection).
HELMRELEASES = ResourceKind(
    "helm.toolkit.fluxcd.io", ("v2", "v2beta2", "v2beta1"), "helmreleases", "HelmRelease"
)
KUSTOMIZATIONS = ResourceKind(
    "kustomize.toolkit.fluxcd.io", ("v1", "v1beta2"), "kustomizations", "Kustomization"
)
