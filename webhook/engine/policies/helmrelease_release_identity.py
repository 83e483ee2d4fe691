"""HelmRelease release identity: changing where or under which name a release lives uninstalls it.

helm-controller compares the spec with the release it recorded (`action.ReleaseTargetChanged`):
a different storage namespace, release namespace (`targetNamespace`), release name
(`releaseName`, by default `[targetNamespace-]name`) or chart name uninstalls the release and
installs a new one (fluxcd/helm-controller#864) — everything it owns is deleted and recreated.
A chart name change is an upgrade only with `spec.upgrade.chartNameChangeStrategy:
InPlaceUpdate`. The check needs the previous object, so it runs on UPDATE admission requests
only; the acknowledgement annotation names the new target, so it covers that one change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch
from ..model import JsonObject, Lookups, Request
from ..resources import HELMRELEASES
from .base import Native, Params, Policy, Report, dig, metadata

ACKNOWLEDGE_ANNOTATION = "fluxwarden.io/reinstall-release"
IN_PLACE = "InPlaceUpdate"


@dataclass(frozen=True)
class ReleaseTarget:
    """Where helm-controller keeps a release: what `ReleaseTargetChanged` compares."""

    storage_namespace: str
    namespace: str
    name: str
    # None unless the object names it: a HelmRepository chart is its name, but a GitRepository
    # or Bucket chart is a path whose Chart.yaml names it (and chartRef's artifact does).
    chart: str | None

    def __str__(self) -> str:
        return f"{self.storage_namespace}/{self.namespace}/{self.name}/{self.chart or ''}"


def release_target(obj: JsonObject, namespace: str) -> ReleaseTarget:
    """The release an object describes (`namespace`: the HelmRelease's own)."""
    spec = dig(obj, "spec")
    target = _text(dig(spec, "targetNamespace"))
    name = _text(dig(metadata(obj), "name"))
    default_name = f"{target}-{name}" if target else name
    return ReleaseTarget(
        storage_namespace=_text(dig(spec, "storageNamespace")) or namespace,
        namespace=target or namespace,
        name=_text(dig(spec, "releaseName")) or default_name,
        chart=_chart_name(dig(spec, "chart", "spec")),
    )


def _chart_name(chart: Any) -> str | None:
    if dig(chart, "sourceRef", "kind") != "HelmRepository":
        return None
    return _text(dig(chart, "chart")) or None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def installed(obj: JsonObject | None) -> bool:
    """helm-controller has recorded a release for this object (it uninstalls only then)."""
    status = dig(obj, "status")
    history = dig(status, "history")
    return bool(dig(status, "storageNamespace")) and isinstance(history, list) and bool(history)


def changes(before: ReleaseTarget, after: ReleaseTarget, *, in_place_chart: bool) -> list[str]:
    """What differs, in helm-controller's words, with the values."""
    found = []
    for label, old, new in (
        ("storage namespace", before.storage_namespace, after.storage_namespace),
        ("release namespace", before.namespace, after.namespace),
        ("release name", before.name, after.name),
    ):
        if old != new:
            found.append(f"{label} {old} -> {new}")
    if before.chart and after.chart and before.chart != after.chart and not in_place_chart:
        found.append(f"chart name {before.chart} -> {after.chart}")
    return found


class IdentityParams(Params):
    warn_storage_namespace: bool = Field(
        default=True,
        alias="warnStorageNamespace",
        description="Warn when targetNamespace is set and storageNamespace differs from it.",
    )


class HelmReleaseReleaseIdentity(Policy[IdentityParams]):
    name: ClassVar[str] = "helmrelease-release-identity"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "changing a HelmRelease's releaseName, targetNamespace, storageNamespace or chart name "
        "uninstalls the release: deny such an update unless it is acknowledged"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/helm-controller/issues/864",
        "https://github.com/fluxcd/helm-controller/blob/main/internal/action/verify.go",
        "https://github.com/fluxcd/helm-controller/blob/main/api/v2/helmrelease_types.go",
    )
    params_model = IdentityParams

    def scope(self, params: IdentityParams) -> tuple[Match, ...]:
        spec = "object.spec"
        moved = (
            "request.operation == 'UPDATE' && oldObject != null && "
            "has(oldObject.status) && has(oldObject.status.history)"
        )
        split = (
            f"has({spec}) && has({spec}.targetNamespace) && has({spec}.storageNamespace) && "
            f"{spec}.storageNamespace != {spec}.targetNamespace"
        )
        condition = f"({moved}) || ({split})" if params.warn_storage_namespace else moved
        return (Match(resources=(ResourceMatch(HELMRELEASES),), condition=condition),)

    def native(self, params: IdentityParams) -> Native:
        return Native(
            covers=(),
            webhook=self.scope(params),
            keeps=(
                "everything: it compares an update with the release recorded in the previous "
                "object's status (not written in CEL yet)"
            ),
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: IdentityParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        namespace = request.target.namespace
        after = release_target(obj, namespace)
        if params.warn_storage_namespace:
            target = _text(dig(obj, "spec", "targetNamespace"))
            storage = _text(dig(obj, "spec", "storageNamespace"))
            if target and storage and storage != target:
                report.advise(
                    f"spec.storageNamespace {storage} differs from spec.targetNamespace "
                    f"{target}: Helm finds the release only with --namespace {storage}"
                )
        old = request.old_object
        if request.operation != "UPDATE" or old is None or not installed(old):
            return
        before = release_target(old, namespace)
        in_place = dig(obj, "spec", "upgrade", "chartNameChangeStrategy") == IN_PLACE
        changed = changes(before, after, in_place_chart=in_place)
        if not changed:
            return
        acknowledged = dig(metadata(obj), "annotations", ACKNOWLEDGE_ANNOTATION)
        if acknowledged == str(after):
            report.advise(
                f"acknowledged: helm-controller will uninstall release {before.namespace}/"
                f"{before.name} and install {after.namespace}/{after.name}"
            )
            return
        report.violation(
            f"helm-controller uninstalls release {before.namespace}/{before.name} and installs "
            f"a new one ({'; '.join(changed)}): to accept that, annotate "
            f'{ACKNOWLEDGE_ANNOTATION}: "{after}"'
        )
