"""Reconcile intervals of every Flux kind that has one (HelmReleases: `helmrelease-interval`).

Sources poll outside the cluster: a short interval hits the Git provider's or registry's rate
limits for every object, so sources get their own floor (1m by default, as for HelmReleases).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..match import GO_DURATION, Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import (
    BUCKETS,
    GITREPOSITORIES,
    HELMCHARTS,
    HELMREPOSITORIES,
    IMAGEREPOSITORIES,
    IMAGEUPDATEAUTOMATIONS,
    KUSTOMIZATIONS,
    OCIREPOSITORIES,
    SOURCE_GROUP,
    ResourceKind,
)
from ..units import parse_duration
from .base import Duration, Native, NativeFinding, Params, Policy, Report, dig, judge_interval

# Kinds with a spec.interval, by the name a policy set uses.
KINDS: dict[str, ResourceKind] = {
    k.kind: k
    for k in (
        GITREPOSITORIES,
        OCIREPOSITORIES,
        HELMREPOSITORIES,
        HELMCHARTS,
        BUCKETS,
        KUSTOMIZATIONS,
        IMAGEREPOSITORIES,
        IMAGEUPDATEAUTOMATIONS,
    )
}
IntervalKind = Literal[
    "GitRepository",
    "OCIRepository",
    "HelmRepository",
    "HelmChart",
    "Bucket",
    "Kustomization",
    "ImageRepository",
    "ImageUpdateAutomation",
]
SOURCE_TOO_SHORT = "every poll calls the provider, which rate-limits frequent fetches"
TOO_SHORT = "frequent reconciles load the API server and the controllers"
TOO_LONG = "changes and drift are picked up only that often"
INTERVAL = "object.spec.interval"


class FluxIntervalParams(Params):
    kinds: list[IntervalKind] = Field(default_factory=lambda: list(KINDS))  # type: ignore[arg-type]
    source_min_interval: Duration = Field(default="1m", alias="sourceMinInterval")
    source_max_interval: Duration | None = Field(default=None, alias="sourceMaxInterval")
    min_interval: Duration = Field(default="1m", alias="minInterval")
    max_interval: Duration | None = Field(default=None, alias="maxInterval")

    @model_validator(mode="after")
    def _ordered(self) -> FluxIntervalParams:
        for low, high, name in (
            (self.source_min_interval, self.source_max_interval, "sourceMinInterval"),
            (self.min_interval, self.max_interval, "minInterval"),
        ):
            if high is not None and parse_duration(low) > parse_duration(high):
                raise ValueError(f"{name} must not be greater than its maximum")
        return self

    def bounds(self, kind: ResourceKind) -> tuple[str, str | None]:
        if kind.group == SOURCE_GROUP:
            return self.source_min_interval, self.source_max_interval
        return self.min_interval, self.max_interval


class FluxIntervals(Policy[FluxIntervalParams]):
    name: ClassVar[str] = "flux-intervals"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "short source intervals hit provider rate limits and short reconcile intervals load the "
        "API server: warn when a Flux object's spec.interval is outside the configured range"
    )
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
    )
    params_model = FluxIntervalParams

    def _groups(
        self, params: FluxIntervalParams
    ) -> list[tuple[tuple[str, str | None, bool], list[ResourceKind]]]:
        """The configured kinds by what their findings share: bounds, and whether they are
        sources (worded differently)."""
        grouped: dict[tuple[str, str | None, bool], list[ResourceKind]] = {}
        for name in dict.fromkeys(params.kinds):
            kind = KINDS[name]
            key = (*params.bounds(kind), kind.group == SOURCE_GROUP)
            grouped.setdefault(key, []).append(kind)
        return list(grouped.items())

    def scope(self, params: FluxIntervalParams) -> tuple[Match, ...]:
        return tuple(
            Match(
                resources=tuple(ResourceMatch(k) for k in kinds),
                condition=_outside(low, high),
            )
            for (low, high, _), kinds in self._groups(params)
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: FluxIntervalParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        kind = KINDS.get(request.target.kind)
        if kind is None or kind.group != request.target.group:
            return
        low, high = params.bounds(kind)
        judge_interval(
            dig(obj, "spec", "interval"),
            path="spec.interval",
            minimum=low,
            maximum=high,
            too_short=SOURCE_TOO_SHORT if kind.group == SOURCE_GROUP else TOO_SHORT,
            too_long=TOO_LONG,
            report=report,
        )

    def native(self, params: FluxIntervalParams) -> Native:
        findings = [
            NativeFinding(
                "advisory",
                "variables.judged && !variables.valid",
                f"'spec.interval \\'' + {INTERVAL} + '\\' is not a duration'",
            )
        ]
        for (low, high, source), kinds in self._groups(params):
            names = ", ".join(cel_string(k.kind) for k in kinds)
            short = SOURCE_TOO_SHORT if source else TOO_SHORT
            ours = f"request.kind.kind in [{names}] && variables.valid"
            findings.append(
                NativeFinding(
                    "advisory",
                    f"{ours} && duration({INTERVAL}) < duration({cel_string(low)})",
                    f"'spec.interval ' + {INTERVAL} + "
                    + cel_string(f" is shorter than {low}: {short}"),
                )
            )
            if high is not None:
                findings.append(
                    NativeFinding(
                        "advisory",
                        f"{ours} && duration({INTERVAL}) >= duration({cel_string(low)}) && "
                        f"duration({INTERVAL}) > duration({cel_string(high)})",
                        f"'spec.interval ' + {INTERVAL} + "
                        + cel_string(f" is longer than {high}: {TOO_LONG}"),
                    )
                )
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                # Absent or ${VAR} (Flux substitutes it later): not judged, as in check().
                (
                    "judged",
                    f"has(object.spec) && has({INTERVAL}) && !string({INTERVAL}).contains('${{')",
                ),
                ("valid", f"variables.judged && {INTERVAL}.matches({cel_string(GO_DURATION)})"),
            ),
            findings=tuple(findings),
        )


def _outside(low: str, high: str | None) -> str:
    """CEL: spec.interval is not a Go duration or lies outside [low, high]."""
    beyond = f" || duration({INTERVAL}) > duration({cel_string(high)})" if high else ""
    return (
        f"has(object.spec) && has({INTERVAL}) && "
        f"(!{INTERVAL}.matches({cel_string(GO_DURATION)}) || "
        f"duration({INTERVAL}) < duration({cel_string(low)}){beyond})"
    )
