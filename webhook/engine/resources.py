"""The resources the policies can target, as the API server serves them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceKind:
    """A resource as served (namespaced unless said); `versions` newest first (older clusters may serve only a beta).

    `pod_template` is where the kind keeps its pod's metadata and spec: `()` for a Pod itself,
    None for kinds that run no pods.
    """

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    pod_template: tuple[str, ...] | None = None
    namespaced: bool = True  # False: cluster-scoped (Namespaces)

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
# Cluster-scoped: read by name only (tenant namespaces are chosen by their labels).
NAMESPACES = ResourceKind("", ("v1",), "namespaces", "Namespace", namespaced=False)
PERSISTENT_VOLUME_CLAIMS = ResourceKind(
    "", ("v1",), "persistentvolumeclaims", "PersistentVolumeClaim"
)
# v2beta1 is listed so that releases still written in it are warned about (it was removed in
# Flux 2.7 and never honoured driftDetection).
HELMRELEASES = ResourceKind(
    "helm.toolkit.fluxcd.io", ("v2", "v2beta2", "v2beta1"), "helmreleases", "HelmRelease"
)
# v1beta1 is listed so that Kustomizations still written in it reach flux-api-versions (rules
# name versions exactly: with matchPolicy Equivalent an unlisted version arrives converted).
KUSTOMIZATIONS = ResourceKind(
    "kustomize.toolkit.fluxcd.io", ("v1", "v1beta2", "v1beta1"), "kustomizations", "Kustomization"
)

# The other Flux kinds, each with the beta versions Flux served before (newest first), so that
# objects written in them are seen and warned about.
SOURCE_GROUP = "source.toolkit.fluxcd.io"
GITREPOSITORIES = ResourceKind(
    SOURCE_GROUP, ("v1", "v1beta2", "v1beta1"), "gitrepositories", "GitRepository"
)
OCIREPOSITORIES = ResourceKind(SOURCE_GROUP, ("v1", "v1beta2"), "ocirepositories", "OCIRepository")
HELMREPOSITORIES = ResourceKind(
    SOURCE_GROUP, ("v1", "v1beta2", "v1beta1"), "helmrepositories", "HelmRepository"
)
HELMCHARTS = ResourceKind(SOURCE_GROUP, ("v1", "v1beta2", "v1beta1"), "helmcharts", "HelmChart")
BUCKETS = ResourceKind(SOURCE_GROUP, ("v1", "v1beta2", "v1beta1"), "buckets", "Bucket")
IMAGE_GROUP = "image.toolkit.fluxcd.io"
IMAGEREPOSITORIES = ResourceKind(
    IMAGE_GROUP, ("v1", "v1beta2", "v1beta1"), "imagerepositories", "ImageRepository"
)
IMAGEPOLICIES = ResourceKind(
    IMAGE_GROUP, ("v1", "v1beta2", "v1beta1"), "imagepolicies", "ImagePolicy"
)
IMAGEUPDATEAUTOMATIONS = ResourceKind(
    IMAGE_GROUP, ("v1", "v1beta2", "v1beta1"), "imageupdateautomations", "ImageUpdateAutomation"
)
NOTIFICATION_GROUP = "notification.toolkit.fluxcd.io"
ALERTS = ResourceKind(NOTIFICATION_GROUP, ("v1beta3", "v1beta2", "v1beta1"), "alerts", "Alert")
PROVIDERS = ResourceKind(
    NOTIFICATION_GROUP, ("v1beta3", "v1beta2", "v1beta1"), "providers", "Provider"
)
RECEIVERS = ResourceKind(NOTIFICATION_GROUP, ("v1", "v1beta2", "v1beta1"), "receivers", "Receiver")
