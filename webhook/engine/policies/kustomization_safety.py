"""Kustomization safety: settings that make a Flux Kustomization destructive, stuck or
misleading.

- `spec.force: true` recreates every object whose immutable fields changed (Jobs, Services,
  PVC-backed workloads): the kustomize-controller docs mean it as a temporary switch
  (fluxcd/flux2#4392 shows it deleting what it recreates).
- `spec.timeout` above `spec.interval`: a reconcile that may run longer than its interval.
- `spec.prune` not true: objects removed from Git stay in the cluster.
- A Kustomization others `dependsOn` is Ready as soon as it applied unless it waits for its
  objects (`wait: true`) or checks their health: the dependents start before it works.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..match import GO_DURATION, Match, ResourceMatch, cel_string
from ..model import DependentsLookup, JsonObject, Lookups, ObjectRef, Request
from ..resources import KUSTOMIZATIONS
from ..units import parse_duration
from .base import Native, NativeFinding, Params, Policy, Read, Report, dig

FORCE_MESSAGE = (
    "spec.force is true: kustomize-controller deletes and recreates every object whose "
    "immutable fields changed; set it only for a one-off migration, then remove it"
)
PRUNE_MESSAGE = "spec.prune is not true: objects removed from Git stay in the cluster, unmanaged"
WAIT_MESSAGE = (
    "spec.wait is not true and there are no spec.healthChecks, but it is in the dependsOn of "
    "{dependents}: "
    "it is Ready once applied, before its objects work, and they start too early"
)
FORCE = "has(object.spec.force) && object.spec.force == true"
PRUNE = "!has(object.spec.prune) || object.spec.prune != true"
NO_WAIT = (
    "(!has(object.spec.wait) || object.spec.wait != true) && "
    "(!has(object.spec.healthChecks) || size(object.spec.healthChecks) == 0)"
)
TIMEOUT = "object.spec.timeout"
INTERVAL = "object.spec.interval"
# Both durations as Flux writes them (no ${VAR}): CEL's duration() parses them.
TIMEOUT_JUDGED = (
    f"has(object.spec.timeout) && has(object.spec.interval) && "
    f"string({TIMEOUT}).matches({cel_string(GO_DURATION)}) && "
    f"string({INTERVAL}).matches({cel_string(GO_DURATION)})"
)
TIMEOUT_ABOVE = f"{TIMEOUT_JUDGED} && duration({TIMEOUT}) > duration({INTERVAL})"
MAX_NAMED = 3  # dependents named in the warning


class KustomizationSafetyParams(Params):
    force: bool = Field(
        default=True, description="Judge spec.force: true (a violation: denied in enforce)."
    )
    timeout_within_interval: bool = Field(
        default=True,
        alias="timeoutWithinInterval",
        description="Warn when spec.timeout is longer than spec.interval.",
    )
    prune: bool = Field(default=True, description="Warn when spec.prune is not true.")
    wait_for_dependents: bool = Field(
        default=True,
        alias="waitForDependents",
        description="Warn when others dependsOn a Kustomization that neither waits nor checks "
        "health (looks up the dependents: the namespace's Kustomizations, or the audited files).",
    )


class KustomizationSafety(Policy[KustomizationSafetyParams]):
    name: ClassVar[str] = "kustomization-safety"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "force recreates objects, no prune leaves removed ones behind, a timeout above the "
        "interval overlaps reconciles, dependents of a Kustomization that does not wait start "
        "too early: deny force, warn on the others"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://fluxcd.io/flux/components/kustomize/kustomizations/#force",
        "https://github.com/fluxcd/flux2/issues/4392",
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
    )
    params_model = KustomizationSafetyParams

    def _conditions(self, params: KustomizationSafetyParams) -> list[str]:
        """CEL, one per judged setting: the object may need a finding for it."""
        conditions = []
        if params.force:
            conditions.append(FORCE)
        if params.timeout_within_interval:
            conditions.append("has(object.spec.timeout)")
        if params.prune:
            conditions.append(PRUNE)
        if params.wait_for_dependents:
            conditions.append(NO_WAIT)
        return conditions

    def scope(self, params: KustomizationSafetyParams) -> tuple[Match, ...]:
        conditions = self._conditions(params)
        if not conditions:
            return ()
        judged = " || ".join(f"({c})" for c in conditions)
        return (
            Match(
                resources=(ResourceMatch(KUSTOMIZATIONS),),
                condition=f"has(object.spec) && ({judged})",
            ),
        )

    def reads(self, params: KustomizationSafetyParams) -> tuple[Read, ...]:
        return (Read(KUSTOMIZATIONS),) if params.wait_for_dependents else ()

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: KustomizationSafetyParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        spec = dig(obj, "spec")
        if not isinstance(spec, dict):
            return
        if params.force and spec.get("force") is True:
            report.violation(FORCE_MESSAGE)
        if params.timeout_within_interval:
            _judge_timeout(spec.get("timeout"), spec.get("interval"), report)
        if params.prune and spec.get("prune") is not True:
            report.advise(PRUNE_MESSAGE)
        if params.wait_for_dependents and not _waits(spec):
            name = request.target.name or dig(obj, "metadata", "name") or ""
            _judge_dependents(ObjectRef(request.target.namespace, name), lookups, report)

    def native(self, params: KustomizationSafetyParams) -> Native:
        if params.wait_for_dependents:
            return Native(
                covers=(),
                webhook=self.scope(params),
                keeps=(
                    "everything: whether others dependsOn a Kustomization needs their objects "
                    "(a lookup); set waitForDependents: false to decide the rest natively"
                ),
            )
        findings = []
        if params.force:
            findings.append(NativeFinding("violation", FORCE, cel_string(FORCE_MESSAGE)))
        if params.timeout_within_interval:
            findings.append(
                NativeFinding(
                    "advisory",
                    TIMEOUT_ABOVE,
                    f"'spec.timeout ' + {TIMEOUT} + ' is longer than spec.interval ' + "
                    f"{INTERVAL} + {cel_string(': ' + TIMEOUT_REASON)}",
                )
            )
        if params.prune:
            findings.append(NativeFinding("advisory", PRUNE, cel_string(PRUNE_MESSAGE)))
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            findings=tuple(findings),
        )


TIMEOUT_REASON = "a reconcile may still run when the next one is due"


def _judge_timeout(timeout: Any, interval: Any, report: Report) -> None:
    """Advise when both are durations (no ${VAR}) and the timeout is the longer."""
    if not (isinstance(timeout, str) and isinstance(interval, str)):
        return
    try:
        longer = parse_duration(timeout) > parse_duration(interval)
    except ValueError:
        return  # not a duration (or ${VAR}): the CRD schema and flux-intervals say so
    if longer:
        report.advise(
            f"spec.timeout {timeout} is longer than spec.interval {interval}: {TIMEOUT_REASON}"
        )


def _waits(spec: JsonObject) -> bool:
    # healthCheckExprs only say how to judge custom kinds' health; they do not make it wait.
    return spec.get("wait") is True or bool(spec.get("healthChecks"))


def _judge_dependents(me: ObjectRef, lookups: Lookups, report: Report) -> None:
    if not isinstance(lookups, DependentsLookup):
        return  # these lookups cannot say who depends on it: not judged
    dependents = lookups.dependents("Kustomization", me)
    if not dependents:
        return
    names = sorted({_named(ref) for ref in dependents if ref != me})
    if not names:
        return
    shown = ", ".join(names[:MAX_NAMED])
    if len(names) > MAX_NAMED:
        shown += f" and {len(names) - MAX_NAMED} more"
    report.advise(WAIT_MESSAGE.format(dependents=shown))


def _named(ref: ObjectRef) -> str:
    return str(ref) if ref.namespace else ref.name
