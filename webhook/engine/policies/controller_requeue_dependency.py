"""kustomize-controller and helm-controller: a short --requeue-dependency so dependsOn chains move."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS
from ..units import parse_duration
from .base import (
    MANAGER,
    Duration,
    Native,
    NativeFinding,
    NativeMutation,
    Params,
    Policy,
    Report,
    container_index,
    dig,
    named_container,
)

FLAG = "--requeue-dependency"
# What the controllers wait when the flag is absent (their flag default).
CONTROLLER_DEFAULT = "30s"
UNSET = f"unset, the controllers' default {CONTROLLER_DEFAULT}"
# What units.parse_duration accepts, so that CEL's duration() is only called where check() parses.
PARSED_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$"


class RequeueParams(Params):
    interval: Duration = Field(default="5s", description="what a missing or too long flag becomes")
    ceiling: Duration = Field(
        default="10s",
        description="the longest value kept as it is (the Flux Operator's `cluster.size: small` "
        "profile sets 10s); below `interval` it counts as `interval`",
    )
    deployments: list[str] = Field(
        default_factory=lambda: ["kustomize-controller", "helm-controller"]
    )
    container: str = "manager"
    namespaces: list[str] = Field(default_factory=lambda: ["flux-system"])

    @model_validator(mode="after")
    def _ceiling_not_below_interval(self) -> RequeueParams:
        if parse_duration(self.ceiling) < parse_duration(self.interval):
            return self.model_copy(update={"ceiling": self.interval})
        return self


def _find_flag(args: list[object]) -> tuple[int, int, str | None]:
    """(index, number of list items the flag spans, value) of the flag's LAST occurrence, which
    is the one Go's flag parsing keeps; index -1 when absent."""
    found: tuple[int, int, str | None] = (-1, 0, None)
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            continue
        if arg.startswith(FLAG + "="):
            found = (index, 1, arg.split("=", 1)[1])
        elif arg == FLAG:
            value = args[index + 1] if index + 1 < len(args) else None
            found = (index, 2, value if isinstance(value, str) else None)
    return found


class ControllerRequeueDependency(Policy[RequeueParams]):
    name: ClassVar[str] = "controller-requeue-dependency"
    sources: ClassVar[tuple[str, ...]] = (
        "https://fluxcd.io/flux/components/kustomize/options/",
        "https://fluxcd.io/flux/components/helm/options/",
    )
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "each dependsOn hop waits the requeue interval before it is retried"
    summary: ClassVar[str] = (
        "long dependsOn chains wait the default 30s --requeue-dependency per hop: set a short "
        "one on kustomize-controller and helm-controller"
    )
    params_model = RequeueParams

    def scope(self, params: RequeueParams) -> tuple[Match, ...]:
        return (
            Match(
                resources=(ResourceMatch(DEPLOYMENTS),),
                namespaces=frozenset(params.namespaces),
                names=frozenset(params.deployments),
            ),
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: RequeueParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        container = named_container(dig(obj, "spec", "template", "spec"), params.container)
        if container is None:
            report.advise(f"no container named {params.container!r}; {FLAG} not checked")
            return
        args = container.get("args")
        args = list(args) if isinstance(args, list) else []
        index, span, value = _find_flag(args)
        wanted = f"{FLAG}={params.interval}"
        if index >= 0 and value is not None and "$(" not in value and "${" not in value:
            try:
                # 0 would mean "no requeue": the chain then waits for the next full interval.
                if 0 < parse_duration(value) <= parse_duration(params.ceiling):
                    return
            except ValueError:
                report.advise(f"{FLAG} value {value!r} is not a duration; replacing it")
        elif index >= 0 and value is not None:
            return  # $(ENV) or ${VAR}: the value is not known until the pod or Flux expands it
        if index >= 0:
            args[index : index + span] = [wanted]
        else:
            args.append(wanted)
        container["args"] = args
        report.changed(
            f"containers[{params.container}].args {FLAG}",
            UNSET if value is None else value,
            params.interval,
        )

    def native(self, params: RequeueParams) -> Native:
        flag, wanted = cel_string(FLAG), cel_string(f"{FLAG}={params.interval}")
        args = "variables.args"
        at = "variables.at"
        path = "'/spec/template/spec/containers/' + string(variables.index) + '/args'"
        rewrite = (
            f"!has({MANAGER}.args) ? [JSONPatch{{op: 'add', path: {path}, value: [{wanted}]}}] : "
            f"{at} < 0 ? [JSONPatch{{op: 'add', path: {path} + '/-', value: {wanted}}}] : "
            f"[JSONPatch{{op: 'replace', path: {path} + '/' + string({at}), value: {wanted}}}] + "
            f"(variables.span == 2 ? [JSONPatch{{op: 'remove', path: {path} + '/' + "
            f"string({at} + 1)}}] : [])"
        )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                container_index(params.container),
                (
                    "args",
                    f"variables.index >= 0 && has({MANAGER}.args) ? {MANAGER}.args : []",
                ),
                # The last occurrence is the one Go's flag parsing keeps.
                (
                    "at",
                    f"{args}.map(a, a == {flag} || a.startsWith({flag} + '=')).lastIndexOf(true)",
                ),
                (
                    "span",
                    f"{at} < 0 ? 0 : {args}[{at}] != {flag} ? 1 : {at} + 1 < size({args}) ? 2 : 1",
                ),
                ("hasValue", f"{at} >= 0 && ({args}[{at}] != {flag} || variables.span == 2)"),
                (
                    "value",
                    f"!variables.hasValue ? '' : {args}[{at}] == {flag} ? {args}[{at} + 1] : "
                    f"{args}[{at}].substring({len(FLAG) + 1})",
                ),
                (
                    "expanded",
                    "variables.hasValue && "
                    "(variables.value.contains('$(') || variables.value.contains('${'))",
                ),
                (
                    "parsed",
                    f"variables.hasValue && variables.value.matches({cel_string(PARSED_DURATION)})",
                ),
                (
                    "rewrite",
                    "variables.index >= 0 && !variables.expanded && !(variables.parsed && "
                    "duration(variables.value) > duration('0s') && "
                    f"duration(variables.value) <= duration({cel_string(params.ceiling)}))",
                ),
            ),
            findings=(
                NativeFinding(
                    "advisory",
                    "variables.index < 0",
                    cel_string(f"no container named {params.container!r}; {FLAG} not checked"),
                ),
                NativeFinding(
                    "change",
                    "variables.rewrite",
                    cel_string(
                        f"set containers[{params.container}].args {FLAG} to {params.interval} (was "
                    )
                    + f" + (variables.hasValue ? variables.value : {cel_string(UNSET)}) + ')'",
                ),
                NativeFinding(
                    "advisory",
                    "variables.rewrite && variables.hasValue && !variables.parsed",
                    cel_string(f"{FLAG} value ")
                    + " + '\\'' + variables.value + '\\'' + "
                    + cel_string(" is not a duration; replacing it"),
                ),
            ),
            mutations=(NativeMutation(f"variables.rewrite ? ({rewrite}) : []"),),
        )
