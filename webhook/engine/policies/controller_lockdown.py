"""Controller lockdown on multi-tenant clusters: Flux's multi-tenancy lockdown runs the controllers
with `--no-cross-namespace-refs=true` (tenants cannot use another namespace's sources),
`--no-remote-bases=true` (kustomize-controller builds only what the source holds) and
`--default-service-account` (kustomize/helm-controller impersonate a tenant account when an
object names none). Without them, per-object policies are all that isolates tenants.

Only warned, never denied: a denied controller Deployment would stop Flux itself.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import FluxInstanceLookup, JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS
from .base import (
    MANAGER,
    Native,
    NativeFinding,
    Params,
    Policy,
    Report,
    container_index,
    dig,
    named_container,
)

NO_CROSS_NAMESPACE_REFS = "--no-cross-namespace-refs"
NO_REMOTE_BASES = "--no-remote-bases"
DEFAULT_SERVICE_ACCOUNT = "--default-service-account"
# The controllers each flag belongs on (fluxcd.io/flux/installation/configuration/multitenancy).
BOOLEAN_FLAGS: dict[str, tuple[str, ...]] = {
    NO_CROSS_NAMESPACE_REFS: (
        "kustomize-controller",
        "helm-controller",
        "notification-controller",
        "image-reflector-controller",
        "image-automation-controller",
    ),
    NO_REMOTE_BASES: ("kustomize-controller",),
}
ACCOUNT_CONTROLLERS = ("kustomize-controller", "helm-controller")
# Every flag with the controllers it belongs on, in the order findings are reported.
FLAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *BOOLEAN_FLAGS.items(),
    (DEFAULT_SERVICE_ACCOUNT, ACCOUNT_CONTROLLERS),
)
CONTROLLERS = tuple(
    sorted({*ACCOUNT_CONTROLLERS, *(c for cs in BOOLEAN_FLAGS.values() for c in cs)})
)
# What Go's flag package reads as true.
TRUE = ("1", "t", "T", "true", "TRUE", "True")
WHY = {
    NO_CROSS_NAMESPACE_REFS: "a tenant can use another namespace's sources and dependencies",
    NO_REMOTE_BASES: "a tenant's kustomization.yaml can pull remote bases from anywhere",
    DEFAULT_SERVICE_ACCOUNT: (
        "a tenant's object without serviceAccountName is applied with the controller's "
        "cluster-wide permissions"
    ),
}


class ControllerLockdownParams(Params):
    multi_tenant: bool = Field(
        default=False,
        alias="multiTenant",
        description="The cluster is multi-tenant: judge the controllers. False: judged only "
        "where a FluxInstance in controllerNamespace sets cluster.multitenant: true (the "
        "audited files; the webhook does not look FluxInstances up).",
    )
    namespaces: list[str] = Field(
        default_factory=lambda: ["flux-system"],
        description="Where the Flux controllers run.",
    )


def _manager_args(obj: JsonObject) -> list[str]:
    manager = named_container(dig(obj, "spec", "template", "spec"), "manager")
    args = (manager or {}).get("args")
    return [a for a in args if isinstance(a, str)] if isinstance(args, list) else []


def _last_value(args: list[str], flag: str) -> str | None:
    """The value the last occurrence of `flag` gives ('' for a bare `--flag`); None: absent."""
    value = None
    for arg in args:
        if arg == flag:
            value = ""
        elif arg.startswith(f"{flag}="):
            value = arg.split("=", 1)[1]
    return value


def missing_flags(name: str, args: list[str]) -> list[str]:
    """The lockdown flags controller `name` runs without, in a fixed order."""
    missing = []
    for flag, controllers in BOOLEAN_FLAGS.items():
        if name in controllers and _last_value(args, flag) not in ("", *TRUE):
            missing.append(f"{flag}=true")
    if name in ACCOUNT_CONTROLLERS and not _last_value(args, DEFAULT_SERVICE_ACCOUNT):
        missing.append(f"{DEFAULT_SERVICE_ACCOUNT}=<account>")
    return missing


def _message(name: str, flag: str) -> str:
    """`name` '': the text after the name (native findings put the object's name first)."""
    bare = flag.split("=", 1)[0]
    return f"{name} runs without {flag} on a multi-tenant cluster: {WHY[bare]}"


class ControllerLockdown(Policy[ControllerLockdownParams]):
    name: ClassVar[str] = "controller-lockdown"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "on a multi-tenant cluster, Flux controllers without --no-cross-namespace-refs, "
        "--no-remote-bases and --default-service-account let tenants reach outside their "
        "namespace: warn (never deny a controller)"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://fluxcd.io/flux/installation/configuration/multitenancy/",
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "security-audit.md",
    )
    params_model = ControllerLockdownParams

    def scope(self, params: ControllerLockdownParams) -> tuple[Match, ...]:
        # No CEL condition: a handful of controller Deployments, which reach the Deployments
        # webhook anyway (controller-requeue-dependency); the flags are judged in check().
        return (
            Match(
                resources=(ResourceMatch(DEPLOYMENTS),),
                namespaces=frozenset(params.namespaces),
                names=frozenset(CONTROLLERS),
            ),
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: ControllerLockdownParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        if not (params.multi_tenant or _instance_multitenant(lookups, request.target.namespace)):
            return
        name = request.target.name or dig(obj, "metadata", "name") or ""
        for flag in missing_flags(name, _manager_args(obj)):
            report.advise(_message(name, flag))

    def native(self, params: ControllerLockdownParams) -> Native:
        if not params.multi_tenant:
            return Native(
                covers=(),
                webhook=self.scope(params),
                keeps="everything: multi-tenancy is read from a FluxInstance (a lookup); "
                "set multiTenant: true to decide natively",
            )
        # One finding per flag, in check()'s order, naming the Deployment from the object.
        findings = tuple(
            NativeFinding(
                "advisory",
                f"object.metadata.name in [{', '.join(cel_string(c) for c in controllers)}] && "
                f"!variables.{_variable(flag)}",
                f"object.metadata.name + {cel_string(_message('', _shown(flag)))}",
            )
            for flag, controllers in FLAGS
        )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the Deployment alone decides",
            variables=(
                container_index("manager"),
                (
                    "args",
                    f"variables.index >= 0 && has({MANAGER}.args) ? {MANAGER}.args : []",
                ),
                *((_variable(flag), _flag_set(flag)) for flag, _ in FLAGS),
            ),
            findings=findings,
        )


def _variable(flag: str) -> str:
    """The CEL variable that says `flag` is set (`noCrossNamespaceRefs`)."""
    words = flag.removeprefix("--").split("-")
    return words[0] + "".join(w.capitalize() for w in words[1:])


def _shown(flag: str) -> str:
    return f"{flag}=<account>" if flag == DEFAULT_SERVICE_ACCOUNT else f"{flag}=true"


def _flag_set(flag: str) -> str:
    """CEL: the last occurrence of `flag` in `variables.args` sets it (boolean flags: to true;
    the service account: to a non-empty name), as missing_flags() decides."""
    given = (
        f"variables.args.filter(a, a == {cel_string(flag)} || "
        f"a.startsWith({cel_string(flag + '=')}))"
    )
    last = f"{given}[size({given}) - 1]"
    if flag == DEFAULT_SERVICE_ACCOUNT:
        prefix = cel_string(f"{flag}=")
        return f"size({given}) > 0 && {last}.startsWith({prefix}) && size({last}) > size({prefix})"
    values = ", ".join(cel_string(v) for v in (flag, *(f"{flag}={t}" for t in TRUE)))
    return f"size({given}) > 0 && {last} in [{values}]"


def _instance_multitenant(lookups: Lookups, namespace: str) -> bool:
    """A FluxInstance of `namespace` sets cluster.multitenant: true (where lookups know them)."""
    if not isinstance(lookups, FluxInstanceLookup):
        return False
    instance = lookups.flux_instance(namespace)
    return dig(instance, "spec", "cluster", "multitenant") is True
