"""image-reflector-controller: one replica and enough memory, so an OOM kill cannot roll tags back.

IRC keeps scanned tags in a Badger DB on an emptyDir. With two replicas and a 1Gi limit an OOM kill
hands leadership to a standby with an empty DB, which re-scans and rolls image tags back
(fluxcd/flux2#4984). Maintainer advice: 1 replica, 2Gi limit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request, Target
from ..resources import DEPLOYMENTS, HPAS
from ..units import parse_quantity
from .base import (
    MANAGER,
    Native,
    NativeFinding,
    NativeMutation,
    Params,
    Policy,
    Quantity,
    Read,
    Report,
    container_index,
    dig,
    ensure_dict,
    named_container,
)


class IrcParams(Params):
    replicas: int = Field(default=1, ge=1)
    memory_limit: Quantity = Field(default="2Gi", alias="memoryLimit")
    deployment: str = "image-reflector-controller"
    container: str = "manager"
    namespaces: list[str] = Field(
        default_factory=lambda: ["flux-system"],
        description="Namespaces where Flux runs; empty means any namespace.",
    )


class IrcSingleReplica(Policy[IrcParams]):
    name: ClassVar[str] = "irc-single-replica"
    sources: ClassVar[tuple[str, ...]] = ("https://github.com/fluxcd/flux2/issues/4984",)
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = (
        "an OOM-killed IRC with a standby rolls image tags back (fluxcd/flux2#4984)"
    )
    summary: ClassVar[str] = (
        "image-reflector-controller with 2 replicas and 1Gi rolls image tags back after an OOM "
        "kill (fluxcd/flux2#4984): keep 1 replica and a 2Gi memory limit"
    )
    params_model = IrcParams

    def scope(self, params: IrcParams) -> tuple[Match, ...]:
        namespaces = frozenset(params.namespaces)
        targets_irc = (
            "has(object.spec.scaleTargetRef) && object.spec.scaleTargetRef.kind == 'Deployment' "
            f"&& object.spec.scaleTargetRef.name == {cel_string(params.deployment)}"
        )
        return (
            Match(
                resources=(ResourceMatch(DEPLOYMENTS, ("", "scale")),),
                namespaces=namespaces,
                names=frozenset({params.deployment}),
            ),
            Match(resources=(ResourceMatch(HPAS),), namespaces=namespaces, condition=targets_irc),
        )

    def reads(self, params: IrcParams) -> tuple[Read, ...]:
        # The engine reads the Deployment behind a scale request or an HPA: its exempt
        # annotation also covers what scales it.
        return (Read(DEPLOYMENTS, frozenset({params.deployment})),)

    def applies_to(self, target: Target, obj: JsonObject, params: IrcParams) -> bool:
        if target.kind != "HorizontalPodAutoscaler":
            return True
        ref = dig(obj, "spec", "scaleTargetRef")
        return (
            isinstance(ref, dict)
            and ref.get("kind") == "Deployment"
            and ref.get("name") == params.deployment
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: IrcParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if request.target.kind == "HorizontalPodAutoscaler":
            for key in ("minReplicas", "maxReplicas"):
                current = spec.get(key)
                if isinstance(current, int) and current > params.replicas:
                    spec[key] = params.replicas
                    report.changed(f"spec.{key}", current, params.replicas)
            return
        # A Deployment or its scale subresource: both carry spec.replicas (absent means 1).
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas > params.replicas:
            spec["replicas"] = params.replicas
            report.changed("spec.replicas", replicas, params.replicas)
        if request.target.sub_resource == "scale":
            return
        container = named_container(dig(spec, "template", "spec"), params.container)
        if container is None:
            report.advise(f"no container named {params.container!r}; memory limit not checked")
            return
        self._ensure_memory_limit(container, params=params, report=report)

    def _ensure_memory_limit(
        self, container: JsonObject, *, params: IrcParams, report: Report
    ) -> None:
        limit = dig(container, "resources", "limits", "memory")
        request = dig(container, "resources", "requests", "memory")
        try:
            current = None if limit is None else parse_quantity(limit)
            requested = None if request is None else parse_quantity(request)
        except ValueError:
            # e.g. ${IRC_MEMORY}: Flux substitutes it after this check could run.
            report.advise(f"memory {limit or request!r} is not a quantity yet; limit not checked")
            return
        wanted = params.memory_limit
        # Keep requests <= limit by raising the limit to the request rather than starving the pod.
        if requested is not None and requested > parse_quantity(wanted):
            wanted = str(request)
        if current is None or current < parse_quantity(wanted):
            ensure_dict(ensure_dict(container, "resources"), "limits")["memory"] = wanted
            path = f"containers[{container.get('name')}].resources.limits.memory"
            report.changed(path, limit, wanted)

    def native(self, params: IrcParams) -> Native:
        deployment, scaling = self.scope(params)
        replicas, wanted = str(params.replicas), cel_string(params.memory_limit)
        path = "'/spec/template/spec/containers/' + string(variables.index) + '/resources'"
        set_limit = (
            f"!has({MANAGER}.resources) ? [JSONPatch{{op: 'add', path: {path}, "
            "value: {'limits': {'memory': variables.wanted}}}] : "
            f"!has({MANAGER}.resources.limits) ? [JSONPatch{{op: 'add', path: {path} + "
            "'/limits', value: {'memory': variables.wanted}}] : "
            f"[JSONPatch{{op: 'add', path: {path} + '/limits/memory', value: variables.wanted}}]"
        )
        return Native(
            # The Deployment itself; its scale subresource and HPAs stay in the webhook.
            covers=(replace(deployment, resources=(ResourceMatch(DEPLOYMENTS),)),),
            webhook=(
                replace(deployment, resources=(ResourceMatch(DEPLOYMENTS, ("scale",)),)),
                scaling,
            ),
            keeps=(
                "deployments/scale and HPAs: the Deployment's exempt annotation also covers "
                "them, and reading it is a lookup"
            ),
            variables=(
                container_index(params.container),
                (
                    "limit",
                    f"variables.index >= 0 && has({MANAGER}.resources) && "
                    f"has({MANAGER}.resources.limits) && 'memory' in {MANAGER}.resources.limits "
                    f"? string({MANAGER}.resources.limits['memory']) : ''",
                ),
                (
                    "request",
                    f"variables.index >= 0 && has({MANAGER}.resources) && "
                    f"has({MANAGER}.resources.requests) && "
                    f"'memory' in {MANAGER}.resources.requests "
                    f"? string({MANAGER}.resources.requests['memory']) : ''",
                ),
                # Requests stay <= limit: a request above the wanted limit raises it further.
                (
                    "wanted",
                    f"variables.request != '' && "
                    f"quantity(variables.request).isGreaterThan(quantity({wanted})) "
                    f"? variables.request : {wanted}",
                ),
                (
                    "raiseLimit",
                    "variables.index >= 0 && (variables.limit == '' || "
                    "quantity(variables.limit).isLessThan(quantity(variables.wanted)))",
                ),
                (
                    "lowerReplicas",
                    f"has(object.spec.replicas) && object.spec.replicas > {replicas}",
                ),
            ),
            findings=(
                NativeFinding(
                    "change",
                    "variables.lowerReplicas",
                    f"'set spec.replicas to {replicas} (was ' + string(object.spec.replicas) + ')'",
                ),
                NativeFinding(
                    "advisory",
                    "variables.index < 0",
                    cel_string(
                        f"no container named {params.container!r}; memory limit not checked"
                    ),
                ),
                NativeFinding(
                    "change",
                    "variables.raiseLimit",
                    cel_string(f"set containers[{params.container}].resources.limits.memory to ")
                    + " + variables.wanted + ' (was ' + "
                    "(variables.limit == '' ? 'unset' : variables.limit) + ')'",
                ),
            ),
            mutations=(
                NativeMutation(
                    f"(variables.lowerReplicas ? [JSONPatch{{op: 'replace', path: '/spec/replicas', "
                    f"value: {replicas}}}] : []) + (variables.raiseLimit ? ({set_limit}) : [])"
                ),
            ),
        )
