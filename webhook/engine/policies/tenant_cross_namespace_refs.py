"""Tenant isolation: a tenant's Flux object that references another namespace's source,
dependency or health check reaches outside the tenant (what `--no-cross-namespace-refs`
forbids cluster-wide); shared objects can be allowed by (namespace, name)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..match import Match, ResourceMatch
from ..model import JsonObject, Lookups, Request
from ..resources import ALERTS, HELMRELEASES, KUSTOMIZATIONS, NAMESPACES
from .base import TENANT_LABEL, Params, Policy, Read, Report, dig, tenant_matches


class AllowedRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    namespace: str
    name: str = Field(default="*", description="'*': any object of that namespace")


class CrossNamespaceParams(Params):
    tenant_namespaces: list[str] = Field(
        default_factory=list,
        alias="tenantNamespaces",
        description="The tenants' namespaces, besides those labelled tenantLabel.",
    )
    tenant_label: str = Field(
        default=TENANT_LABEL,
        alias="tenantLabel",
        description="Namespaces carrying this label (any value) are tenants' (looked up; the "
        "webhook's namespaceSelector selects them); '' for the list only.",
    )
    allowed: list[AllowedRef] = Field(
        default_factory=list,
        description="Objects of other namespaces tenants may reference (e.g. a shared "
        "HelmRepository).",
    )


def _ref(path: str, value: Any) -> Iterator[tuple[str, str, str]]:
    """(path, namespace, name) of a reference that names a namespace."""
    if isinstance(value, dict) and isinstance(value.get("namespace"), str) and value["namespace"]:
        name = value.get("name")
        yield path, value["namespace"], name if isinstance(name, str) else ""


def _listed(path: str, values: Any) -> Iterator[tuple[str, str, str]]:
    for index, value in enumerate(values if isinstance(values, list) else []):
        yield from _ref(f"{path}[{index}]", value)


def references(kind: str, spec: Any) -> Iterator[tuple[str, str, str]]:
    """The namespaced references of a Kustomization, HelmRelease or Alert spec."""
    if kind == "Kustomization":
        yield from _ref("spec.sourceRef", dig(spec, "sourceRef"))
        yield from _listed("spec.dependsOn", dig(spec, "dependsOn"))
        yield from _listed("spec.healthChecks", dig(spec, "healthChecks"))
    elif kind == "HelmRelease":
        yield from _ref("spec.chart.spec.sourceRef", dig(spec, "chart", "spec", "sourceRef"))
        yield from _ref("spec.chartRef", dig(spec, "chartRef"))
        yield from _listed("spec.dependsOn", dig(spec, "dependsOn"))
    elif kind == "Alert":
        yield from _listed("spec.eventSources", dig(spec, "eventSources"))


class TenantCrossNamespaceRefs(Policy[CrossNamespaceParams]):
    name: ClassVar[str] = "tenant-cross-namespace-refs"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "a tenant's reference to another namespace's source, dependency or events reaches "
        "outside the tenant: deny it unless the referenced object is allowed"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "security-audit.md",
        "https://fluxcd.io/flux/installation/configuration/multitenancy/",
    )
    params_model = CrossNamespaceParams

    def scope(self, params: CrossNamespaceParams) -> tuple[Match, ...]:
        return tenant_matches(
            (ResourceMatch(KUSTOMIZATIONS), ResourceMatch(HELMRELEASES), ResourceMatch(ALERTS)),
            namespaces=params.tenant_namespaces,
            label=params.tenant_label,
            condition=_elsewhere(),
        )

    def reads(self, params: CrossNamespaceParams) -> tuple[Read, ...]:
        return (Read(NAMESPACES),) if params.tenant_label else ()

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: CrossNamespaceParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        own = request.target.namespace
        for path, namespace, name in references(request.target.kind, dig(obj, "spec")):
            if namespace == own or "${" in namespace:
                continue
            if any(a.namespace == namespace and a.name in ("*", name) for a in params.allowed):
                continue
            report.violation(
                f"{path} {namespace}/{name} is in another namespace: a tenant in {own} may "
                "reference only its own namespace's objects (or allowed shared ones)"
            )


def _elsewhere() -> str:
    """CEL: some reference names a namespace other than the request's."""

    def single(*path: str) -> str:
        steps = ["object.spec"]
        for part in path:
            steps.append(f"{steps[-1]}.{part}")
        present = " && ".join(f"has({step})" for step in steps[1:])
        return (
            f"(has(object.spec) && {present} && has({steps[-1]}.namespace) && "
            f"{steps[-1]}.namespace != request.namespace)"
        )

    def listed(field: str) -> str:
        return (
            f"(has(object.spec) && has(object.spec.{field}) && object.spec.{field}.exists(r, "
            "has(r.namespace) && r.namespace != request.namespace))"
        )

    return " || ".join(
        [
            single("sourceRef"),
            single("chart", "spec", "sourceRef"),
            single("chartRef"),
            *(listed(f) for f in ("dependsOn", "healthChecks", "eventSources")),
        ]
    )
