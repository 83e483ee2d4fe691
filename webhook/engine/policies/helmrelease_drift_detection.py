"""HelmRelease drift detection: without it manual edits to Helm-managed objects are never reverted.

`spec.driftDetection.mode` defaults to `disabled` in helm-controller.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import HELMRELEASES
from .base import Native, NativeFinding, NativeMutation, Params, Policy, Report, dig, ensure_dict

HELM_GROUP = HELMRELEASES.group
SUPPORTED_VERSIONS = ("v2", "v2beta2")


class DriftParams(Params):
    drift_mode: Literal["enabled", "warn"] = Field(default="enabled", alias="driftMode")
    override_disabled: bool = Field(
        default=False,
        alias="overrideDisabled",
        description="Also replace an explicit `disabled` (otherwise it is kept and warned about).",
    )


class HelmReleaseDriftDetection(Policy[DriftParams]):
    name: ClassVar[str] = "helmrelease-drift-detection"
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
        "https://github.com/fluxcd/helm-controller/blob/main/api/v2/helmrelease_types.go",
    )
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "without it manual edits to the release's objects are never reverted"
    summary: ClassVar[str] = (
        "HelmRelease drift detection defaults to disabled, so manual edits are never reverted: "
        "set spec.driftDetection.mode"
    )
    params_model = DriftParams

    def scope(self, params: DriftParams) -> tuple[Match, ...]:
        versions = ", ".join(cel_string(v) for v in SUPPORTED_VERSIONS)
        # Only releases without drift detection (or in a version that ignores it) need anything.
        needs = (
            f"!(request.kind.version in [{versions}]) || !has(object.spec) || "
            "!has(object.spec.driftDetection) || !has(object.spec.driftDetection.mode) || "
            "object.spec.driftDetection.mode == 'disabled'"
        )
        return (Match(resources=(ResourceMatch(HELMRELEASES),), condition=needs),)

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: DriftParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        version = request.target.version
        if version not in SUPPORTED_VERSIONS:
            report.advise(
                f"{HELM_GROUP}/{version} does not honour spec.driftDetection (removed in Flux 2.7); "
                f"migrate to {HELM_GROUP}/v2"
            )
            return
        mode = dig(obj, "spec", "driftDetection", "mode")
        if mode == "disabled" and not params.override_disabled:
            report.advise(
                "spec.driftDetection.mode is explicitly disabled: manual edits to this release's "
                "objects will not be reverted"
            )
            return
        if mode in (None, "disabled"):
            spec = ensure_dict(obj, "spec")
            ensure_dict(spec, "driftDetection")["mode"] = params.drift_mode
            report.changed("spec.driftDetection.mode", mode, params.drift_mode)

    def native(self, params: DriftParams) -> Native:
        versions = ", ".join(cel_string(v) for v in SUPPORTED_VERSIONS)
        drift = "object.spec.driftDetection"
        mode = cel_string(params.drift_mode)
        replaced = "['disabled']" if params.override_disabled else "[]"
        set_mode = (
            f"!has(object.spec) ? [JSONPatch{{op: 'add', path: '/spec', "
            f"value: {{'driftDetection': {{'mode': {mode}}}}}}}] : "
            f"!has({drift}) ? [JSONPatch{{op: 'add', path: '/spec/driftDetection', "
            f"value: {{'mode': {mode}}}}}] : "
            f"[JSONPatch{{op: 'add', path: '/spec/driftDetection/mode', value: {mode}}}]"
        )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                ("supported", f"request.kind.version in [{versions}]"),
                (
                    "mode",
                    f"has(object.spec) && has({drift}) && has({drift}.mode) "
                    f"? string({drift}.mode) : ''",
                ),
                (
                    "change",
                    f"variables.supported && (variables.mode == '' || "
                    f"variables.mode in {replaced})",
                ),
            ),
            findings=(
                NativeFinding(
                    "change",
                    "variables.change",
                    f"'set spec.driftDetection.mode to ' + {mode} + ' (was ' + "
                    "(variables.mode == '' ? 'unset' : variables.mode) + ')'",
                ),
                NativeFinding(
                    "advisory",
                    "!variables.supported",
                    f"{cel_string(HELM_GROUP + '/')} + request.kind.version + "
                    + cel_string(
                        " does not honour spec.driftDetection (removed in Flux 2.7); "
                        f"migrate to {HELM_GROUP}/v2"
                    ),
                ),
                NativeFinding(
                    "advisory",
                    "variables.supported && variables.mode == 'disabled' && "
                    f"!(variables.mode in {replaced})",
                    cel_string(
                        "spec.driftDetection.mode is explicitly disabled: manual edits to this "
                        "release's objects will not be reverted"
                    ),
                ),
            ),
            mutations=(NativeMutation(f"variables.change ? ({set_mode}) : []"),),
        )
