"""HelmRelease reconcile interval: too short loads the API server, too long delays drift correction."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..match import GO_DURATION, Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import HELMRELEASES
from ..units import parse_duration
from .base import Duration, Native, NativeFinding, Params, Policy, Report, dig


class IntervalParams(Params):
    min_interval: Duration = Field(default="1m", alias="minInterval")
    max_interval: Duration = Field(default="1h", alias="maxInterval")

    @model_validator(mode="after")
    def _ordered(self) -> IntervalParams:
        if parse_duration(self.min_interval) > parse_duration(self.max_interval):
            raise ValueError("minInterval must not be greater than maxInterval")
        return self


class HelmReleaseInterval(Policy[IntervalParams]):
    name: ClassVar[str] = "helmrelease-interval"
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
    )
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "very short HelmRelease intervals load the API server, very long ones slow drift "
        "correction: warn outside the configured range"
    )
    params_model = IntervalParams

    def scope(self, params: IntervalParams) -> tuple[Match, ...]:
        # Only an interval outside the range (or one that is not a Go duration) gets a warning.
        interval = "object.spec.interval"
        outside = (
            f"has(object.spec) && has({interval}) && "
            f"(!{interval}.matches({cel_string(GO_DURATION)}) || "
            f"duration({interval}) < duration({cel_string(params.min_interval)}) || "
            f"duration({interval}) > duration({cel_string(params.max_interval)}))"
        )
        return (Match(resources=(ResourceMatch(HELMRELEASES),), condition=outside),)

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: IntervalParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        interval = dig(obj, "spec", "interval")
        if interval is None or (isinstance(interval, str) and "${" in interval):
            # Absent: the CRD schema reports it. ${VAR}: Flux substitutes it later, judge it then.
            return
        try:
            seconds = parse_duration(interval)
        except ValueError:
            report.advise(f"spec.interval {interval!r} is not a duration")
            return
        if seconds < parse_duration(params.min_interval):
            report.advise(
                f"spec.interval {interval} is shorter than {params.min_interval}: "
                "frequent reconciles load the API server and the chart source"
            )
        elif seconds > parse_duration(params.max_interval):
            report.advise(
                f"spec.interval {interval} is longer than {params.max_interval}: "
                "drift is corrected only that often"
            )

    def native(self, params: IntervalParams) -> Native:
        interval = "object.spec.interval"
        low, high = cel_string(params.min_interval), cel_string(params.max_interval)
        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                # Absent or ${VAR} (Flux substitutes it later): not judged, as in check().
                (
                    "judged",
                    f"has(object.spec) && has({interval}) && !string({interval}).contains('${{')",
                ),
                ("valid", f"variables.judged && {interval}.matches({cel_string(GO_DURATION)})"),
            ),
            findings=(
                NativeFinding(
                    "advisory",
                    "variables.judged && !variables.valid",
                    f"'spec.interval \\'' + {interval} + '\\' is not a duration'",
                ),
                NativeFinding(
                    "advisory",
                    f"variables.valid && duration({interval}) < duration({low})",
                    f"'spec.interval ' + {interval} + ' is shorter than ' + {low} + "
                    + cel_string(": frequent reconciles load the API server and the chart source"),
                ),
                NativeFinding(
                    "advisory",
                    f"variables.valid && duration({interval}) > duration({high})",
                    f"'spec.interval ' + {interval} + ' is longer than ' + {high} + "
                    + cel_string(": drift is corrected only that often"),
                ),
            ),
        )
