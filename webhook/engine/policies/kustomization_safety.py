"""Kustomization safety: settings that make a Flux Kustomization destructive, stuck or
misleading.

- `spec.force: true` recreates every object whose immutable fields changed (Jobs, Services,
  PVC-backed workloads): the kustomize-controller docs mean it as a temporary switch
  (fluxcd/flux2#4392 shows it deleting what it recreates).
- `spec.timeout` above `spec.interval`: a reconcile that may run longer than its interval.
- `spec.prune` not true: objects removed from Git stay in the cluster.
- A Kustomization others `dependsOn` is Ready as soon as it applied unless it waits for its
  objects (`wait: true`) or checks their health: the dependents start before it works.

And on the objects a Kustomization applies (which one: the lookups, `ApplierLookup`):
- kustomize's namespace transformer renames every Namespace of a build to `targetNamespace`
  (two Namespaces are a build error). When that is the namespace the Kustomization itself lives
  in, it now owns it: removing that manifest, or deleting the Kustomization, deletes the
  namespace with the Kustomization and everything else in it (fluxcd/flux2#3949, #4570: Flux's
  own flux-system). Not judged: a Namespace renamed to another namespace (the Flux docs' own
  pattern: a Namespace manifest in an app's overlay takes the targetNamespace's name).
- `pruneProtection`: Namespaces and PersistentVolumeClaims a pruning Kustomization deletes with
  their data, unless marked `kustomize.toolkit.fluxcd.io/prune: disabled` (the Flux
  maintainers' advice for those kinds; opt-in: the production profile).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..match import GO_DURATION, Match, ResourceMatch, cel_string
from ..model import (
    FLUX_NAME_LABEL,
    FLUX_NAMESPACE_LABEL,
    Applier,
    ApplierLookup,
    DependentsLookup,
    JsonObject,
    Lookups,
    ObjectRef,
    Request,
)
from ..resources import KUSTOMIZATIONS, NAMESPACES, PERSISTENT_VOLUME_CLAIMS, ResourceKind
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


ProtectedKind = Literal["Namespace", "PersistentVolumeClaim"]
PROTECTED_KINDS: dict[str, ResourceKind] = {
    "Namespace": NAMESPACES,
    "PersistentVolumeClaim": PERSISTENT_VOLUME_CLAIMS,
}
PRUNE_KEY = "kustomize.toolkit.fluxcd.io/prune"
# What kustomize-controller's garbage collection skips (label or annotation, any case).
KEPT = {
    PRUNE_KEY: "disabled",
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "kustomize.toolkit.fluxcd.io/ssa": "ignore",
}
APPLIED = f"has(object.metadata.labels) && {cel_string(FLUX_NAME_LABEL)} in object.metadata.labels"
OWN_NAMESPACE = (
    f"{APPLIED} && {cel_string(FLUX_NAMESPACE_LABEL)} in object.metadata.labels && "
    f"object.metadata.labels[{cel_string(FLUX_NAMESPACE_LABEL)}] == object.metadata.name"
)
TAKEOVER_MESSAGE = (
    "targetNamespace of Flux Kustomization {applier} renamed this Namespace to its own "
    "namespace: its garbage collection deletes both (flux2#3949); label it "
    f"{PRUNE_KEY}: disabled"
)
PROTECTION_MESSAGE = "{kind} of Flux Kustomization {applier}: {how} deletes it{what}; label it " + (
    f"{PRUNE_KEY}: disabled"
)
LOST_WITH = {
    "Namespace": " and all it holds",
    "PersistentVolumeClaim": " and, under a Delete reclaim policy, its volume",
}


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
    target_namespace_takeover: bool = Field(
        default=True,
        alias="targetNamespaceTakeover",
        description="Judge a Namespace that a Kustomization's targetNamespace renames to the "
        "Kustomization's own namespace, which its pruning would then delete (a violation; looks "
        "up the Kustomization that applies it).",
    )
    prune_protection: list[ProtectedKind] = Field(
        default_factory=list,
        alias="pruneProtection",
        description="Kinds (Namespace, PersistentVolumeClaim) to warn about when a pruning "
        "Kustomization applies them without kustomize.toolkit.fluxcd.io/prune: disabled.",
    )


class KustomizationSafety(Policy[KustomizationSafetyParams]):
    name: ClassVar[str] = "kustomization-safety"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "force recreates objects, no prune leaves removed ones behind, a timeout above the "
        "interval overlaps reconciles, dependents of a Kustomization that does not wait start "
        "too early, a Namespace its targetNamespace renames to its own namespace is deleted by "
        "its pruning: deny force and that Namespace, warn on the others"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://fluxcd.io/flux/components/kustomize/kustomizations/#force",
        "https://github.com/fluxcd/flux2/issues/4392",
        "https://github.com/fluxcd/flux2/issues/3949",
        "https://github.com/fluxcd/flux2/issues/4570",
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

    def _kustomization_matches(self, params: KustomizationSafetyParams) -> tuple[Match, ...]:
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

    def _applied_matches(self, params: KustomizationSafetyParams) -> tuple[Match, ...]:
        """The objects a Kustomization applies that these params judge: only those carrying
        kustomize-controller's labels reach the webhook (files are judged from their render)."""
        matches = []
        protected = tuple(dict.fromkeys(PROTECTED_KINDS[k] for k in params.prune_protection))
        if protected:
            resources = tuple(ResourceMatch(kind) for kind in protected)
            matches.append(Match(resources=resources, condition=APPLIED))
        if params.target_namespace_takeover and NAMESPACES not in protected:
            matches.append(Match(resources=(ResourceMatch(NAMESPACES),), condition=OWN_NAMESPACE))
        return tuple(matches)

    def scope(self, params: KustomizationSafetyParams) -> tuple[Match, ...]:
        return self._kustomization_matches(params) + self._applied_matches(params)

    def reads(self, params: KustomizationSafetyParams) -> tuple[Read, ...]:
        looks_up = params.wait_for_dependents or self._applied_matches(params)
        return (Read(KUSTOMIZATIONS),) if looks_up else ()

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: KustomizationSafetyParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        if request.target.kind != "Kustomization":
            _judge_applied(obj, request=request, params=params, lookups=lookups, report=report)
            return
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
        applied = self._applied_matches(params)
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
            covers=self._kustomization_matches(params),
            webhook=applied,
            keeps=(
                "Namespaces and claims: which Kustomization applies them and whether it prunes "
                "is a lookup"
                if applied
                else "nothing: the object alone decides"
            ),
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


def _judge_applied(
    obj: JsonObject,
    *,
    request: Request,
    params: KustomizationSafetyParams,
    lookups: Lookups,
    report: Report,
) -> None:
    """A Namespace or claim: what the garbage collection of the Kustomization that applies it
    would delete."""
    if _kept_from_deletion(obj) or not isinstance(lookups, ApplierLookup):
        return
    kind, name = request.target.kind, request.target.name or dig(obj, "metadata", "name") or ""
    applier = lookups.applier(obj)
    if applier is None or not (applier.prune or applier.deletes_when_deleted):
        return
    if (
        params.target_namespace_takeover
        and kind == "Namespace"
        and applier.target_namespace
        and name == applier.namespace == applier.target_namespace
    ):
        report.violation(TAKEOVER_MESSAGE.format(applier=applier))
    elif kind in params.prune_protection:
        what = LOST_WITH.get(kind, "")
        report.advise(
            PROTECTION_MESSAGE.format(kind=kind, applier=applier, how=_how(applier), what=what)
        )


def _how(applier: Applier) -> str:
    removed = "removing it from Git"
    deleted = f"deleting {applier}"
    if applier.prune and applier.deletes_when_deleted:
        return f"{removed} or {deleted}"
    return removed if applier.prune else deleted


def _kept_from_deletion(obj: JsonObject) -> bool:
    """kustomize-controller skips it when garbage collecting (a label or an annotation)."""
    for where in ("labels", "annotations"):
        values = dig(obj, "metadata", where)
        if not isinstance(values, dict):
            continue
        for key, value in KEPT.items():
            found = values.get(key)
            if isinstance(found, str) and found.lower() == value:
                return True
    return False
