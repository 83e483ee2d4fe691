"""HelmRelease failure handling: by default a failed install or upgrade is not retried (the
release stays failed until its spec changes).

helm-controller (api/v2 `Install`/`Upgrade`): `strategy.name` defaults to `RemediateOnFailure`
with `remediation.retries` 0; `RetryOnFailure` (Flux 2.7+) retries every `retryInterval`;
`upgrade.remediation.remediateLastFailure` defaults to true only when retries > 0. The
`strategy` field exists since helm-controller v1.4.0: where the looked-up controller is older,
remediation.retries is set instead.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS, HELMRELEASES
from .base import (
    Native,
    NativeFinding,
    NativeMutation,
    Params,
    Policy,
    Read,
    Report,
    dig,
    ensure_dict,
    named_container,
)

ACTIONS = ("install", "upgrade")
# helm-controller v1.4.0 (Flux 2.7) added install/upgrade `strategy`; older ones drop the field
# (the CRD prunes it), so there the remedy is remediation.retries.
STRATEGY_SINCE = (1, 4, 0)
_TAG = re.compile(r":v?(\d+)\.(\d+)\.(\d+)(?:[-+@][^/]*)?$")
GATE = "DefaultToRetryOnFailure"  # helm-controller: an unset strategy means RetryOnFailure
HELM_CONTROLLER = "helm-controller"
RETRY = "RetryOnFailure"
# Releases in helm.toolkit.fluxcd.io/v2beta2 know remediation.retries but not strategy.
STRATEGY_VERSIONS = ("v2",)


class RemediationParams(Params):
    set_default: Literal["RetryOnFailure", "retries", "none"] = Field(
        default="RetryOnFailure",
        alias="setDefault",
        description="What is set on an action with no failure handling: strategy RetryOnFailure "
        "(Flux 2.7+), remediation.retries (older Flux), or nothing (a warning says what is "
        "missing).",
    )
    retries: int = Field(
        default=3, ge=1, description="remediation.retries when setDefault: retries"
    )
    default_to_retry_on_failure: Literal["lookup", "enabled", "disabled"] = Field(
        default="lookup",
        alias="defaultToRetryOnFailure",
        description="Whether helm-controller runs with --feature-gates=DefaultToRetryOnFailure="
        "true (an unset strategy then retries): read from its Deployment (lookup; webhook "
        "only), or stated here (decided natively too).",
    )
    controller_namespace: str = Field(default="flux-system", alias="controllerNamespace")
    remediate_last_failure: bool = Field(
        default=True,
        alias="remediateLastFailure",
        description="Warn when upgrade retries are set but the last failure is explicitly left "
        "unremediated.",
    )


def _retries(remediation: Any) -> Any:
    return remediation.get("retries") if isinstance(remediation, dict) else None


def retries_by_default(deployment: JsonObject | None) -> bool:
    """helm-controller's manager runs with the DefaultToRetryOnFailure feature gate on (the
    last mention wins, as flags are parsed)."""
    manager = named_container(dig(deployment, "spec", "template", "spec"), "manager")
    enabled = False
    for arg in (manager or {}).get("args") or []:
        if isinstance(arg, str) and arg.startswith("--feature-gates="):
            for gate in arg.split("=", 1)[1].split(","):
                name, _, value = gate.partition("=")
                if name.strip() == GATE:
                    enabled = value.strip().lower() == "true"
    return enabled


def knows_strategy(deployment: JsonObject | None) -> bool:
    """helm-controller's manager image is v1.4.0 or later (or its version is unknown: a
    digest, a ${VAR}, no image), so HelmReleases may set `strategy`."""
    manager = named_container(dig(deployment, "spec", "template", "spec"), "manager")
    found = _TAG.search(str((manager or {}).get("image") or "").split("@", 1)[0])
    return found is None or tuple(map(int, found.groups())) >= STRATEGY_SINCE


def handled(action: Any) -> bool:
    """The action retries on failure: RetryOnFailure, or remediation retries other than 0
    (negative: unlimited; a ${VAR} is trusted, Flux substitutes it later)."""
    if not isinstance(action, dict):
        return False
    if dig(action, "strategy", "name") == RETRY:
        return True
    retries = _retries(action.get("remediation"))
    return retries is not None and retries != 0


class HelmReleaseRemediation(Policy[RemediationParams]):
    name: ClassVar[str] = "helmrelease-remediation"
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "otherwise a failed install or upgrade is never retried"
    summary: ClassVar[str] = (
        "a HelmRelease install or upgrade that fails is not retried by default: set "
        "strategy RetryOnFailure (or remediation retries) where neither is configured"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
        "https://github.com/fluxcd/helm-controller/blob/main/api/v2/helmrelease_types.go",
        "https://fluxcd.io/flux/components/helm/helmreleases/#install-strategy",
    )
    params_model = RemediationParams

    def scope(self, params: RemediationParams) -> tuple[Match, ...]:
        return (Match(resources=(ResourceMatch(HELMRELEASES),), condition=_needs(params)),)

    def reads(self, params: RemediationParams) -> tuple[Read, ...]:
        if params.default_to_retry_on_failure != "lookup":
            return ()
        return (Read(DEPLOYMENTS, frozenset({HELM_CONTROLLER})),)

    def _gate(self, params: RemediationParams, lookups: Lookups) -> bool:
        """An unset strategy retries: the feature gate is on, or (lookup) helm-controller is not
        found where it should be, so the gate is unknown and nothing is claimed."""
        if params.default_to_retry_on_failure != "lookup":
            return params.default_to_retry_on_failure == "enabled"
        controller = lookups.deployment(params.controller_namespace, HELM_CONTROLLER)
        return controller is None or retries_by_default(controller)

    def _knows_strategy(self, params: RemediationParams, lookups: Lookups) -> bool:
        """helm-controller (lookup) is recent enough for `strategy`; unknown counts as yes."""
        if params.default_to_retry_on_failure != "lookup":
            return True
        return knows_strategy(lookups.deployment(params.controller_namespace, HELM_CONTROLLER))

    def _strategy_pruned(self, action: Any, params: RemediationParams, lookups: Lookups) -> bool:
        """The action's only failure handling is `strategy: RetryOnFailure`, which the looked-up
        helm-controller predates: its CRD prunes the field, so nothing is retried."""
        retries = _retries(action.get("remediation")) if isinstance(action, dict) else None
        return (
            dig(action, "strategy", "name") == RETRY
            and retries in (None, 0)
            and not self._knows_strategy(params, lookups)
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: RemediationParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        spec = dig(obj, "spec")
        gate: bool | None = None  # looked up once, and only when an action needs it
        for action in ACTIONS:
            current = dig(spec, action)
            if handled(current) and not self._strategy_pruned(current, params, lookups):
                continue
            if dig(current, "strategy", "name") is None:
                gate = self._gate(params, lookups) if gate is None else gate
                if gate:
                    continue  # helm-controller retries an unset strategy
            self._check_action(obj, action, current, request, params, lookups, report)
        if params.remediate_last_failure:
            remediation = dig(spec, "upgrade", "remediation")
            retries = _retries(remediation)
            if (
                isinstance(retries, int)
                and retries > 0
                and remediation.get("remediateLastFailure") is False
            ):
                report.advise(
                    "spec.upgrade.remediation.remediateLastFailure is false: after the last "
                    "retry the failed upgrade is left in place instead of rolled back"
                )

    def _check_action(
        self,
        obj: JsonObject,
        action: str,
        current: Any,
        request: Request,
        params: RemediationParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        strategy = dig(current, "strategy", "name")
        if strategy == RETRY:  # here only where helm-controller predates the field
            report.advise(
                f"spec.{action}.strategy is unknown to the helm-controller found (before "
                f"v1.4.0): its CRD prunes the field, so a failed {action} is not retried"
            )
            strategy = None
        if strategy is not None:
            # An explicit choice (RemediateOnFailure without retries) is kept and warned about.
            report.advise(
                f"spec.{action}.strategy.name is {strategy} without remediation.retries: a "
                f"failed {action} is not retried"
            )
            return
        setting = params.set_default
        if setting == RETRY and request.target.version not in STRATEGY_VERSIONS:
            setting = "none"  # the version has no strategy field: say what to do instead
        elif setting == RETRY and not self._knows_strategy(params, lookups):
            setting = "retries"  # the controller predates strategy: retries is its remedy
        if setting == "none":
            report.advise(
                f"spec.{action} has neither strategy.name {RETRY} nor remediation.retries: a "
                f"failed {action} is not retried"
            )
            return
        spec = ensure_dict(obj, "spec")
        section = ensure_dict(spec, action)
        if setting == RETRY:
            ensure_dict(section, "strategy")["name"] = RETRY
            report.changed(f"spec.{action}.strategy.name", None, RETRY)
        else:
            remediation = ensure_dict(section, "remediation")
            was = remediation.get("retries")
            remediation["retries"] = params.retries
            report.changed(f"spec.{action}.remediation.retries", was, params.retries)

    def native(self, params: RemediationParams) -> Native:
        if params.default_to_retry_on_failure == "lookup":
            return Native(
                covers=(),
                webhook=self.scope(params),
                keeps=(
                    f"everything: helm-controller's {GATE} feature gate is read from its "
                    "Deployment (a lookup); set defaultToRetryOnFailure to enabled or disabled "
                    "to decide natively"
                ),
            )
        variables: list[tuple[str, str]] = []
        findings: list[NativeFinding] = []
        for action in ACTIONS:
            variables += _action_variables(action, params)
            findings += _action_findings(action, params)
        if params.remediate_last_failure:
            remediation = "object.spec.upgrade.remediation"
            findings.append(
                NativeFinding(
                    "advisory",
                    f"has(object.spec) && has(object.spec.upgrade) && has({remediation}) && "
                    f"has({remediation}.retries) && {remediation}.retries > 0 && "
                    f"has({remediation}.remediateLastFailure) && "
                    f"{remediation}.remediateLastFailure == false",
                    cel_string(
                        "spec.upgrade.remediation.remediateLastFailure is false: after the last "
                        "retry the failed upgrade is left in place instead of rolled back"
                    ),
                )
            )
        changing = " || ".join(f"variables.{action}Change" for action in ACTIONS)
        patch = " + ".join(
            [
                f"(({changing}) && !has(object.spec) ? "
                "[JSONPatch{op: 'add', path: '/spec', value: {}}] : [])",
                *(_action_patch(action, params) for action in ACTIONS),
            ]
        )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=tuple(variables),
            findings=tuple(findings),
            mutations=(NativeMutation(patch),),
        )


def _action_variables(action: str, params: RemediationParams) -> list[tuple[str, str]]:
    """CEL variables `<action>Strategy`, `<action>Retries` (as text, '' when unset) and
    `<action>Change`/`<action>Missing`: what check() decides for the action."""
    section = f"object.spec.{action}"
    present = f"has(object.spec) && has({section})"
    strategy = f"{present} && has({section}.strategy) && has({section}.strategy.name)"
    retries = f"{present} && has({section}.remediation) && has({section}.remediation.retries)"
    setting = params.set_default
    sets = {
        RETRY: "request.kind.version in [" + ", ".join(map(cel_string, STRATEGY_VERSIONS)) + "]",
        "retries": "true",
        "none": "false",
    }[setting]
    gate = "true" if params.default_to_retry_on_failure == "enabled" else "false"
    open_ = (
        f"!(has(object.spec) && {_handled_cel(action)}) && variables.{action}Strategy == '' "
        f"&& !{gate}"
    )
    return [
        (f"{action}Strategy", f"{strategy} ? string({section}.strategy.name) : ''"),
        (f"{action}Retries", f"{retries} ? string({section}.remediation.retries) : ''"),
        (f"{action}Change", f"{open_} && {sets}"),
        (f"{action}Missing", f"{open_} && !({sets})"),
    ]


def _action_findings(action: str, params: RemediationParams) -> list[NativeFinding]:
    if params.set_default == RETRY:
        change = cel_string(f"set spec.{action}.strategy.name to {RETRY} (was unset)")
    else:
        change = (
            f"{cel_string(f'set spec.{action}.remediation.retries to {params.retries} (was ')} + "
            f"(variables.{action}Retries == '' ? 'unset' : variables.{action}Retries) + ')'"
        )
    return [
        NativeFinding(
            "advisory",
            f"!(has(object.spec) && {_handled_cel(action)}) && variables.{action}Strategy != ''",
            f"{cel_string(f'spec.{action}.strategy.name is ')} + variables.{action}Strategy + "
            + cel_string(f" without remediation.retries: a failed {action} is not retried"),
        ),
        NativeFinding("change", f"variables.{action}Change", change),
        NativeFinding(
            "advisory",
            f"variables.{action}Missing",
            cel_string(
                f"spec.{action} has neither strategy.name {RETRY} nor remediation.retries: a "
                f"failed {action} is not retried"
            ),
        ),
    ]


def _action_patch(action: str, params: RemediationParams) -> str:
    """CEL: the JSONPatch operations that set the action's default (after /spec exists)."""
    section = f"object.spec.{action}"
    path = f"/spec/{action}"
    if params.set_default == RETRY:
        leaf, inner, value = "strategy", "name", cel_string(RETRY)
    else:
        leaf, inner, value = "remediation", "retries", str(params.retries)
    deepest = f"[JSONPatch{{op: 'add', path: '{path}/{leaf}/{inner}', value: {value}}}]"
    middle = f"[JSONPatch{{op: 'add', path: '{path}/{leaf}', value: {{'{inner}': {value}}}}}]"
    outer = f"[JSONPatch{{op: 'add', path: '{path}', value: {{'{leaf}': {{'{inner}': {value}}}}}}}]"
    return (
        f"(variables.{action}Change ? (has(object.spec) && has({section}) ? "
        f"(has({section}.{leaf}) ? {deepest} : {middle}) : {outer}) : [])"
    )


def _handled_cel(action: str) -> str:
    section = f"object.spec.{action}"
    return (
        f"has({section}) && ((has({section}.strategy) && has({section}.strategy.name) && "
        f"{section}.strategy.name == 'RetryOnFailure') || (has({section}.remediation) && "
        f"has({section}.remediation.retries) && {section}.remediation.retries != 0))"
    )


def _needs(params: RemediationParams) -> str:
    """CEL: some action is not handled, or (when checked) the last upgrade failure is kept."""
    unhandled = " || ".join(f"!({_handled_cel(a)})" for a in ACTIONS)
    condition = f"!has(object.spec) || {unhandled}"
    if params.remediate_last_failure:
        remediation = "object.spec.upgrade.remediation"
        condition += (
            f" || (has(object.spec.upgrade) && has({remediation}) && "
            f"has({remediation}.remediateLastFailure) && "
            f"{remediation}.remediateLastFailure == false)"
        )
    return condition
