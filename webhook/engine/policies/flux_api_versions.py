"""Flux API versions: objects written in a deprecated beta version stop applying when a Flux
upgrade removes it, and HelmRepository `type: oci` is a legacy pattern.

The current versions are those `flux migrate` moves objects to (fluxcd/flux2
`cmd/flux/migrate.go`, `latestAPIVersions`): Flux 2.7 to 2.9 share one table, 2.6 differs in
the image automation kinds.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import (
    ALERTS,
    BUCKETS,
    GITREPOSITORIES,
    HELMCHARTS,
    HELMRELEASES,
    HELMREPOSITORIES,
    IMAGE_GROUP,
    IMAGEPOLICIES,
    IMAGEREPOSITORIES,
    IMAGEUPDATEAUTOMATIONS,
    KUSTOMIZATIONS,
    OCIREPOSITORIES,
    PROVIDERS,
    RECEIVERS,
    ResourceKind,
)
from .base import Native, NativeFinding, Params, Policy, Report, dig

FluxVersion = Literal["2.6", "2.7", "2.8", "2.9"]
KINDS: tuple[ResourceKind, ...] = (
    GITREPOSITORIES,
    OCIREPOSITORIES,
    HELMREPOSITORIES,
    HELMCHARTS,
    BUCKETS,
    KUSTOMIZATIONS,
    HELMRELEASES,
    ALERTS,
    PROVIDERS,
    RECEIVERS,
    IMAGEREPOSITORIES,
    IMAGEPOLICIES,
    IMAGEUPDATEAUTOMATIONS,
)
HELM_OCI = "has(object.spec) && has(object.spec.type) && object.spec.type == 'oci'"
HELM_OCI_ADVICE = (
    "spec.type oci is a legacy pattern: use an OCIRepository and the HelmRelease's "
    "spec.chartRef (signature verification, semver and layer selection)"
)


def current_version(kind: ResourceKind, flux: FluxVersion) -> str:
    """The version `flux migrate` writes for `kind` in that Flux minor version."""
    if kind.group == IMAGE_GROUP and flux == "2.6":
        return "v1beta2"
    return kind.versions[0]


def deprecated_message(group: str, version: str, kind: str, current: str, flux: str) -> str:
    return (
        f"{group}/{version} is not the current API version of {kind} in Flux {flux}: "
        f"use {group}/{current} (`flux migrate -f <path>` rewrites it)"
    )


class ApiVersionParams(Params):
    flux_version: FluxVersion = Field(
        default="2.7",
        alias="fluxVersion",
        description="The Flux minor version the cluster runs: its current API versions are kept.",
    )
    helm_repository_oci: bool = Field(
        default=True,
        alias="helmRepositoryOci",
        description="Also advise against HelmRepository spec.type oci.",
    )


class FluxApiVersions(Policy[ApiVersionParams]):
    name: ClassVar[str] = "flux-api-versions"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "Flux objects in deprecated beta API versions stop applying when an upgrade removes "
        "them: warn with the current version (and against HelmRepository type oci)"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/flux2/blob/main/cmd/flux/migrate.go",
        "https://fluxcd.io/flux/cmd/flux_migrate/",
        "https://github.com/fluxcd/source-controller/pull/1893",
    )
    params_model = ApiVersionParams

    def _outdated(self, params: ApiVersionParams) -> str:
        """CEL: the request names a version other than its kind's current one (the Match's
        rules name only KINDS)."""
        current = ", ".join(
            cel_string(f"{k.kind}/{current_version(k, params.flux_version)}") for k in KINDS
        )
        return f"!((request.kind.kind + '/' + request.kind.version) in [{current}])"

    def scope(self, params: ApiVersionParams) -> tuple[Match, ...]:
        outdated = Match(
            resources=tuple(ResourceMatch(kind) for kind in KINDS),
            condition=self._outdated(params),
        )
        if not params.helm_repository_oci:
            return (outdated,)
        return (outdated, Match(resources=(ResourceMatch(HELMREPOSITORIES),), condition=HELM_OCI))

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: ApiVersionParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        target = request.target
        kind = next((k for k in KINDS if k.group == target.group and k.kind == target.kind), None)
        if kind is None:
            return
        current = current_version(kind, params.flux_version)
        if target.version != current:
            report.advise(
                deprecated_message(
                    target.group, target.version, target.kind, current, params.flux_version
                )
            )
        if (
            params.helm_repository_oci
            and kind == HELMREPOSITORIES
            and dig(obj, "spec", "type") == "oci"
        ):
            report.advise(HELM_OCI_ADVICE)

    def native(self, params: ApiVersionParams) -> Native:
        table = ", ".join(
            f"{cel_string(k.kind)}: {cel_string(current_version(k, params.flux_version))}"
            for k in KINDS
        )
        outdated = NativeFinding(
            "advisory",
            self._outdated(params),
            "request.kind.group + '/' + request.kind.version + "
            "' is not the current API version of ' + request.kind.kind + ' in Flux ' + "
            f"{cel_string(params.flux_version)} + ': use ' + request.kind.group + '/' + "
            f"{{{table}}}[request.kind.kind] + "
            + cel_string(" (`flux migrate -f <path>` rewrites it)"),
        )
        oci = NativeFinding(
            "advisory",
            f"request.kind.kind == 'HelmRepository' && {HELM_OCI}",
            cel_string(HELM_OCI_ADVICE),
        )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the request alone decides",
            findings=(outdated, oci) if params.helm_repository_oci else (outdated,),
        )
