"""The one evaluation path shared by the webhook, `fluxwarden review`, and both audits."""

from __future__ import annotations

import copy
from typing import Any

from .match import NamespaceLabels
from .model import (
    EXEMPT_ANNOTATION,
    Action,
    Decision,
    JsonObject,
    Lookups,
    LookupUnavailable,
    Mode,
    NamespaceLookup,
    PolicyResult,
    Request,
    Result,
    Webhook,
)
from .patch import make_patch
from .policies import Policy, Report
from .policyset import ConfiguredPolicy, PolicySet

WARNING_PREFIX = "fluxwarden"
MAX_WARNING = 256
MAX_WARNINGS_TOTAL = 4096
MAX_ANNOTATION = 1024


def evaluate(
    obj: JsonObject,
    *,
    request: Request,
    policy_set: PolicySet,
    lookups: Lookups,
    webhook: Webhook = "all",
) -> Decision:
    """Run the policies of `webhook` over `obj` and decide: patch, warnings, denial, findings.

    `all` answers as the API server would with both webhooks installed: the mutating policies,
    then the validating ones on the mutated object. Pure: the object is not modified, nothing is
    read but `lookups`.
    """
    if webhook == "all":
        mutated = _evaluate(
            obj, request=request, policy_set=policy_set, lookups=lookups, webhook="mutate"
        )
        validated = _evaluate(
            mutated.patched or obj,
            request=request,
            policy_set=policy_set,
            lookups=lookups,
            webhook="validate",
        )
        return _combine(mutated, validated)
    return _evaluate(obj, request=request, policy_set=policy_set, lookups=lookups, webhook=webhook)


def _combine(mutated: Decision, validated: Decision) -> Decision:
    allowed = mutated.allowed and validated.allowed
    return Decision(
        allowed=allowed,
        patch=mutated.patch if allowed else [],
        patched=mutated.patched if allowed else None,
        warnings=_bounded([*mutated.warnings, *validated.warnings]),
        audit_annotations={**mutated.audit_annotations, **validated.audit_annotations},
        deny_reasons=[*mutated.deny_reasons, *validated.deny_reasons],
        results=[*mutated.results, *validated.results],
    )


def _evaluate(
    obj: JsonObject,
    *,
    request: Request,
    policy_set: PolicySet,
    lookups: Lookups,
    webhook: Webhook,
) -> Decision:
    if request.operation not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return _allow_untouched()
    if request.target.namespace in policy_set.excluded_namespaces:
        return _allow_untouched()  # the one place excluded namespaces are applied
    exempt: set[str] | None = None  # read once a policy is in scope: it may need a lookup
    working = obj
    results: list[PolicyResult] = []
    warnings: list[str] = []
    deny_reasons: list[str] = []
    annotations: dict[str, str] = {}
    labels = _namespace_labels(lookups)
    for configured in policy_set.naming(webhook, request.target):
        policy = configured.policy
        failure: str | None = None
        unknown: str | None = None  # the namespace's labels could not be read
        try:
            applies = configured.matches(request.target, working, labels)
        except LookupUnavailable as error:
            applies, unknown = True, f"lookup unavailable, not checked: {error}"
        except Exception as exc:  # fail open per policy, like an error in check()
            applies, failure = True, _failure(exc)
        if not applies:
            continue
        mode = policy_set.effective_mode(configured)
        if mode == "off":
            results.append(PolicyResult(policy.name, mode, "skip", "off", ["mode off"]))
            continue
        if exempt is None:
            exempt = _exemptions(obj) | _inherited_exemptions(obj, request=request, lookups=lookups)
        if "all" in exempt or policy.name in exempt:
            results.append(PolicyResult(policy.name, mode, "skip", "exempted", [_EXEMPT_MESSAGE]))
            annotations[policy.name] = f"exempt: {_EXEMPT_MESSAGE}"
            continue
        candidate, report, problem = (
            (working, Report(), failure)
            if failure
            else (working, Report(advisories=[unknown]), None)
            if unknown
            else _run(configured, working, request=request, lookups=lookups)
        )
        if mode == "enforce" and report.changes:
            working = candidate
        result = _result(policy, mode, report, problem)
        results.append(result)
        _render(result, report, warnings=warnings, deny=deny_reasons, annotations=annotations)
    allowed = not deny_reasons
    patch: list[JsonObject] = []
    if allowed and working is not obj:
        try:
            patch = make_patch(obj, working)
        except Exception as error:  # e.g. RecursionError on absurdly deep objects: fail open
            warnings.append(
                f"{WARNING_PREFIX}: patch not computed, request allowed: {_failure(error)}"
            )
            working = obj
    return Decision(
        allowed=allowed,
        patch=patch,
        patched=working if patch else None,
        warnings=_bounded(warnings),
        audit_annotations=annotations,
        deny_reasons=deny_reasons,
        results=results,
    )


_EXEMPT_MESSAGE = f"exempted by the {EXEMPT_ANNOTATION} annotation"


def _allow_untouched() -> Decision:
    return Decision(True, [], None, [], {}, [], [])


def _exemptions(obj: Any) -> set[str]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(EXEMPT_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(value, str):
        return set()
    return {part.strip() for part in value.split(",") if part.strip()}


def _inherited_exemptions(obj: JsonObject, *, request: Request, lookups: Lookups) -> set[str]:
    """A Deployment's exemptions also cover what scales it: its scale subresource (a Scale has
    no annotations of its own) and an HPA that targets it."""
    target = request.target
    name = ""
    if target.resource == "deployments" and target.sub_resource == "scale":
        name = target.name
    elif target.kind == "HorizontalPodAutoscaler" and not target.sub_resource:
        spec = obj.get("spec")
        ref = spec.get("scaleTargetRef") if isinstance(spec, dict) else None
        if isinstance(ref, dict) and ref.get("kind") == "Deployment":
            name = str(ref.get("name") or "")
    if not name:
        return set()
    try:
        return _exemptions(lookups.deployment(target.namespace, name))
    except LookupUnavailable:
        return set()  # unknown: the policies run, as they would without the annotation


def _namespace_labels(lookups: Lookups) -> NamespaceLabels:
    """The namespace labels a Match may ask for, read once per namespace per request (None:
    these lookups do not know namespaces)."""
    known: dict[str, dict[str, str] | None] = {}

    def labels(name: str) -> dict[str, str] | None:
        if name not in known:
            found = lookups.namespace_labels(name) if isinstance(lookups, NamespaceLookup) else None
            known[name] = found
        return known[name]

    return labels


def _failure(error: Exception) -> str:
    return f"policy error, request allowed: {type(error).__name__}: {error}"[:200]


def _run(
    configured: ConfiguredPolicy, obj: JsonObject, *, request: Request, lookups: Lookups
) -> tuple[JsonObject, Report, str | None]:
    """Run one policy: a mutating one on a private copy (a policy that raises midway leaves
    nothing behind), a validating one on `obj` itself, which it only reads (the copy was most
    of the cost of a validation). A policy that raises fails open with an error."""
    report = Report()
    try:
        # Inside the try: a hostile depth fails this policy open.
        scratch = _copy_tree(obj) if configured.policy.webhook == "mutate" else obj
        configured.policy.check(
            scratch, request=request, params=configured.params, lookups=lookups, report=report
        )
    except LookupUnavailable as error:
        report.advise(f"lookup unavailable, not checked: {error}")
    except Exception as error:  # fail open per policy, as the contract says
        return obj, Report(), _failure(error)
    return scratch, report, None


def _copy_tree(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what admission and YAML give), several times faster
    than copy.deepcopy; anything else is copied by copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value  # immutable (bool is an int)
    return copy.deepcopy(value)


def _result(policy: Policy[Any], mode: Mode, report: Report, error: str | None) -> PolicyResult:
    if error is not None:
        return PolicyResult(policy.name, mode, "error", "none", [error])
    if not (report.changes or report.violations):
        result: Result = "warn" if report.advisories else "pass"
        action: Action = "none" if result == "pass" or mode != "audit" else "audited"
        if result == "warn" and mode in ("enforce", "warn"):
            action = "warned"
        return PolicyResult(policy.name, mode, result, action, list(report.advisories))
    if mode == "enforce":
        action = "denied" if report.violations else "mutated"
        changes = [
            f"{change}: {policy.reason}" if policy.reason else change for change in report.changes
        ]
    else:
        action = "warned" if mode == "warn" else "audited"
        changes = [f"would {change}" for change in report.changes]
    violations = (
        report.violations if mode == "enforce" else [f"would deny: {v}" for v in report.violations]
    )
    return PolicyResult(
        policy.name, mode, "fail", action, [*violations, *changes, *report.advisories]
    )


def _render(
    result: PolicyResult,
    report: Report,
    *,
    warnings: list[str],
    deny: list[str],
    annotations: dict[str, str],
) -> None:
    """Route a result's messages: deny reasons, warnings the user sees, audit annotations."""
    if result.action == "none" and result.result != "error":
        return
    label = "error" if result.result == "error" else result.action
    annotations[result.policy] = _cut(f"{label}: " + "; ".join(result.messages), MAX_ANNOTATION)
    if result.mode == "audit":
        return  # audit: the user sees nothing, not even a policy error (it is annotated)
    shown = result.messages
    if result.action == "denied":
        deny.extend(f"{result.policy}: {v}" for v in report.violations)
        shown = result.messages[len(report.violations) :]
    warnings.extend(f"{WARNING_PREFIX}: {result.policy}: {message}" for message in shown)


def _cut(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8 (the API server counts bytes), never a split character.

    Lone surrogates (valid in JSON strings, not in UTF-8) become "?"."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return data.decode()
    return data[: limit - 3].decode(errors="ignore") + "..."


def _bounded(warnings: list[str]) -> list[str]:
    """One line each, <= 256 bytes, <= 4 KiB in total (API server limits)."""
    kept: list[str] = []
    total = 0
    for index, warning in enumerate(warnings):
        line = _cut(" ".join(warning.split()), MAX_WARNING)
        if total + len(line.encode()) > MAX_WARNINGS_TOTAL - MAX_WARNING:
            kept.append(
                f"{WARNING_PREFIX}: *: {len(warnings) - index} more finding(s) in the audit annotations"
            )
            break
        kept.append(line)
        total += len(line.encode())
    return kept
