"""Tenant service accounts: a tenant's Kustomization or HelmRelease without
`spec.serviceAccountName` is applied with the controller's own (cluster-wide) permissions.

Flux's multi-tenancy lockdown runs the controllers with `--default-service-account`, which
covers objects that leave it out; that flag is looked up on the controller Deployments.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch
from ..model import JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS, HELMRELEASES, KUSTOMIZATIONS, NAMESPACES
from .base import TENANT_LABEL, Params, Policy, Read, Report, dig, named_container, tenant_matches

# The controller that applies each kind, whose --default-service-account covers it.
CONTROLLERS = {"Kustomization": "kustomize-controller", "HelmRelease": "helm-controller"}
FLAG = "--default-service-account"


class TenantServiceAccountParams(Params):
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
    controller_namespace: str = Field(
        default="flux-system",
        alias="controllerNamespace",
        description="Where the Flux controllers run, to look up --default-service-account.",
    )


def default_service_account(deployment: JsonObject | None) -> str:
    """The controller's --default-service-account value ('' when not set)."""
    manager = named_container(dig(deployment, "spec", "template", "spec"), "manager")
    value = ""
    for arg in (manager or {}).get("args") or []:
        if isinstance(arg, str) and arg.startswith(f"{FLAG}="):
            value = arg.split("=", 1)[1]  # the last one wins, as for any Go flag
    return value


class TenantServiceAccount(Policy[TenantServiceAccountParams]):
    name: ClassVar[str] = "tenant-service-account"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "a tenant's Kustomization or HelmRelease without serviceAccountName runs with the "
        "controller's cluster-wide permissions: deny it unless the controller sets a default"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "security-audit.md",
        "https://fluxcd.io/flux/installation/configuration/multitenancy/",
    )
    params_model = TenantServiceAccountParams

    def scope(self, params: TenantServiceAccountParams) -> tuple[Match, ...]:
        return tenant_matches(
            (ResourceMatch(KUSTOMIZATIONS), ResourceMatch(HELMRELEASES)),
            namespaces=params.tenant_namespaces,
            label=params.tenant_label,
            condition="!has(object.spec) || !has(object.spec.serviceAccountName)",
        )

    def reads(self, params: TenantServiceAccountParams) -> tuple[Read, ...]:
        deployments = Read(DEPLOYMENTS, frozenset(CONTROLLERS.values()))
        return (deployments, Read(NAMESPACES)) if params.tenant_label else (deployments,)

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: TenantServiceAccountParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        kind = request.target.kind
        account = dig(obj, "spec", "serviceAccountName")
        if kind not in CONTROLLERS or (isinstance(account, str) and account):
            return
        controller = CONTROLLERS[kind]
        deployment = lookups.deployment(params.controller_namespace, controller)
        if default_service_account(deployment):
            return
        report.violation(
            f"{kind} in tenant namespace {request.target.namespace} has no "
            f"spec.serviceAccountName and {controller} sets no {FLAG}: it is applied with "
            "the controller's cluster-wide permissions"
        )
