"""HelmRelease drift detection: without it manual edits to Helm-managed objects are never reverted.

`spec.driftDetection.mode` defaults to `disabled` in helm-controller.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import HELMRELEASES
from .base import Params, Policy, Report, dig, ensure_dict

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
