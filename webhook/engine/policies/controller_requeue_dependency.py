"""kustomize-controller and helm-controller: a short --requeue-dependency so dependsOn chains move."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch
from ..model import JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS
from ..units import parse_duration
from .base import Duration, Params, Policy, Report, dig, named_container

FLAG = "--requeue-dependency"


class RequeueParams(Params):
    interval: Duration = "5s"
    deployments: list[str] = Field(
        default_factory=lambda: ["kustomize-controller", "helm-controller"]
    )
    container: str = "manager"
    namespaces: list[str] = Field(default_factory=lambda: ["flux-system"])


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
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "each dependsOn hop otherwise waits the default 30s"
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
                if 0 < parse_duration(value) <= parse_duration(params.interval):
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
        report.changed(f"containers[{params.container}].args {FLAG}", value, params.interval)
