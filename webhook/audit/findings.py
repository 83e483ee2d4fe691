"""The audit's result model: what every output format (table, json, sarif, junit) renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..engine import Mode, PolicyResult

Severity = Literal["fail", "warn", "none"]
FAIL_ON_LEVELS: tuple[Severity, ...] = ("fail", "warn", "none")


@dataclass(frozen=True)
class ObjectLocation:
    """Where an object came from: a file and line, or the cluster (source "cluster")."""

    source: str
    line: int
    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def display_name(self) -> str:
        scope = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{scope}{self.name}"


@dataclass(frozen=True)
class Finding:
    """One policy's result on one object."""

    location: ObjectLocation
    policy: str
    mode: Mode
    result: str  # pass | fail | warn | error | skip
    action: str
    messages: tuple[str, ...]
    clusters: tuple[str, ...] = ()  # the clusters that apply the object (fleet repos)

    @classmethod
    def of(cls, location: ObjectLocation, result: PolicyResult) -> Finding:
        return cls(
            location,
            result.policy,
            result.mode,
            result.result,
            result.action,
            tuple(result.messages),
        )


@dataclass(frozen=True)
class InputProblem:
    """A document that could not be audited, or was skipped, with file and line."""

    source: str
    line: int
    message: str
    error: bool  # True: broken input (exit 2); False: a notice (not Kubernetes, untargeted kind)


@dataclass(frozen=True)
class NotAudited:
    """A Flux Kustomization fluxwarden does not audit by design (its source is not this repo and
    not mapped with --source, a remote base is not fetched) and the files under it that no
    cluster applies otherwise: not judged, and not "applied by no cluster" either."""

    kustomization: str  # namespace/name
    source: str  # the file it is written in
    why: str  # e.g. "OCIRepository/flux-system/apps oci://…", "… uses the remote reference …"
    clusters: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    objects: int = 0  # Kubernetes objects evaluated
    # files with Kubernetes objects that no cluster applies: not judged (--audit-unreached does)
    unreached: list[str] = field(default_factory=list)
    # Flux Kustomizations not audited by design, with the files under them (see NotAudited)
    not_audited: list[NotAudited] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        totals = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
        for finding in self.findings:
            totals[finding.result] = totals.get(finding.result, 0) + 1
        return totals

    @property
    def input_errors(self) -> list[InputProblem]:
        return [p for p in self.problems if p.error]

    def exceeds(self, fail_on: Severity) -> bool:
        """Whether any finding is at or above `fail_on` (fail: would change or deny)."""
        if fail_on == "none":
            return False
        levels = {"fail"} if fail_on == "fail" else {"fail", "warn", "error"}
        return any(f.result in levels for f in self.findings)

    def exit_code(self, fail_on: Severity) -> int:
        if self.input_errors:
            return 2
        return 1 if self.exceeds(fail_on) else 0
