"""The resources the policies target, as the API serves them (for listing in cluster audits)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceKind:
    """A listable resource; `versions` newest first (older clusters may serve only a beta)."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = ResourceKind("apps", ("v1",), "deployments", "Deployment")
HPAS = ResourceKind("autoscaling", ("v2",), "horizontalpodautoscalers", "HorizontalPodAutoscaler")
JOBS = ResourceKind("batch", ("v1",), "jobs", "Job")
CRONJOBS = ResourceKind("batch", ("v1",), "cronjobs", "CronJob")
PODS = ResourceKind("", ("v1",), "pods", "Pod")
HELMRELEASES = ResourceKind(
    "helm.toolkit.fluxcd.io", ("v2", "v2beta2"), "helmreleases", "HelmRelease"
)
KUSTOMIZATIONS = ResourceKind(
    "kustomize.toolkit.fluxcd.io", ("v1", "v1beta2"), "kustomizations", "Kustomization"
)
# The order a cluster audit lists them in: dependencies' sources last.
LISTING_ORDER = (DEPLOYMENTS, HPAS, JOBS, CRONJOBS, PODS, HELMRELEASES, KUSTOMIZATIONS)
