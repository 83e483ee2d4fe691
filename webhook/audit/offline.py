"""`fluxwarden audit PATH...`: the policies over what Flux would apply, lookups from that set.

The evaluation stage of the audit and fix pipeline: `inventory.collect` gathers the objects (a
directory rendered as Flux renders it, cluster by cluster; files no Flux Kustomization reaches,
single files and stdin as they are), and each object is evaluated here with its cluster's lookups.
`fix` plans from the same inventory (`plan.py`).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..engine import (
    Decision,
    JsonObject,
    Lookups,
    PolicySet,
    Webhook,
    evaluate,
    request_for,
)
from ..engine.policies import ALL_POLICIES
from ..lookups.offline import OfflineLookups
from .audit_object import AuditObject
from .documents import Document
from .findings import AuditReport, Finding, ObjectLocation
from .inventory import Inventory, collect, objects_of
from .mapped_sources import MappedInputs
from .patch_sources import setting_patch
from .redaction import secret_data, without_secrets
from .sources import field_line
from .workers import jobs_for, ordered_map, paused_gc


def evaluate_object(
    obj: JsonObject,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
    webhook: Webhook = "all",
) -> Decision:
    """The one place the audit and fix call the engine: `obj` as a CREATE."""
    return evaluate(
        obj,
        request=request_for(obj),
        policy_set=policy_set,
        lookups=lookups,
        webhook=webhook,
    )


def audit_documents(
    documents: Iterable[Document], *, policy_set: PolicySet, jobs: int | None = None
) -> AuditReport:
    """Evaluate every Kubernetes object in `documents` as a CREATE through both webhooks; many
    objects are evaluated by `jobs` processes (None: one per CPU), with the same report."""
    with paused_gc():
        report = AuditReport()
        objects = objects_of(documents, report)
        lookups = OfflineLookups(o.obj for o in objects)
        return _evaluate_all(objects, report, policy_set=policy_set, lookups=lookups, jobs=jobs)


def _evaluate_all(
    objects: Sequence[AuditObject],
    report: AuditReport,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
    jobs: int | None = 1,
) -> AuditReport:
    progress = _Progress(len(objects))

    def findings_of(items: Sequence[AuditObject]) -> list[Finding]:
        return [f for i in items for f in _findings(i, policy_set=policy_set, lookups=lookups)]

    done = 0
    progress.show(done)
    workers = jobs_for(len(objects), jobs)
    for count, findings in ordered_map(
        findings_of, objects, jobs=workers, encode=_as_fields, decode=_from_fields
    ):
        report.findings += findings
        done += count
        progress.show(done)
    report.objects += len(objects)
    progress.done()
    return report


def _as_fields(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """Findings as plain tuples (a worker sends them back by marshal, far faster than pickled
    dataclasses); the findings of one object share their location tuple."""
    locations: dict[int, tuple[Any, ...]] = {}
    fields: list[Any] = []
    for f in findings:
        where = f.location
        location = locations.get(id(where))
        if location is None:
            location = locations[id(where)] = (
                where.source,
                where.line,
                where.api_version,
                where.kind,
                where.namespace,
                where.name,
            )
        fields.append((location, f.policy, f.mode, f.result, f.action, f.messages))
    return fields


def _from_fields(fields: list[tuple[Any, ...]]) -> list[Finding]:
    locations: dict[tuple[Any, ...], ObjectLocation] = {}
    findings: list[Finding] = []
    for location, policy, mode, result, action, messages in fields:
        where = locations.get(location)
        if where is None:
            where = locations[location] = ObjectLocation(*location)
        findings.append(Finding(where, policy, mode, result, action, tuple(messages)))
    return findings


def _findings(item: AuditObject, *, policy_set: PolicySet, lookups: Lookups) -> list[Finding]:
    """One object's findings, each at the line it is about."""
    decision = evaluate_object(item.obj, policy_set=policy_set, lookups=lookups)
    mutating = [r for r in decision.results if r.result == "fail" and r.action == "mutated"]
    findings: list[Finding] = []
    for result in decision.results:
        location = item.location
        if len(mutating) == 1 and result is mutating[0]:
            location = _field_location(item, [str(op.get("path", "")) for op in decision.patch])
        elif result.result in ("fail", "warn") and (named := _named_field(result.messages)):
            location = _field_location(item, [named])
        finding = Finding.of(location, result)
        if item.unknown and finding.result in ("fail", "warn", "error"):
            finding = _unknown(finding, item, decision)
        if item.note and finding.result in ("fail", "warn", "error"):
            finding = dataclasses.replace(finding, messages=(*finding.messages, item.note))
        findings.append(finding)
    secrets = (*item.secrets, *secret_data(item.obj))
    return [without_secrets(f, secrets) for f in findings] if secrets else findings


def _named_field(messages: Sequence[str]) -> str | None:
    """The JSON pointer of the field a message starts with (`spec.interval 12h is ...`)."""
    first = messages[0].split(" ", 1)[0] if messages else ""
    if not re.fullmatch(r"spec(\.[A-Za-z][A-Za-z0-9]*)+", first):
        return None
    return "/" + first.replace(".", "/")


def _field_location(item: AuditObject, paths: list[str]) -> ObjectLocation:
    """Where the mutated field is written: the patch that set it, else the field's line in
    the object's own file."""
    by_patch = setting_patch(item.patches, item.obj, paths)
    if by_patch is not None:
        return dataclasses.replace(item.location, source=by_patch[0], line=by_patch[1])
    if item.document is not None:
        return dataclasses.replace(item.location, line=field_line(item.document, paths))
    return item.location


def _unknown(finding: Finding, item: AuditObject, decision: Decision) -> Finding:
    """A finding that depends on a `${VAR}` Flux substitutes from a source not in the repo
    is reported as unknown (skip), never as a violation."""
    placeholders = _placeholder_paths(item.obj)
    touched = [str(op.get("path", "")) for op in decision.patch]
    depends = any("${" in m for m in finding.messages) or any(
        p.startswith(t) or t.startswith(p) for p in placeholders for t in touched
    )
    if not depends:
        return finding
    names = ", ".join(f"${{{v}}}" for v in item.unknown)
    message = f"unknown offline: depends on {names}, substituted by Flux from outside the repo"
    return Finding(
        finding.location, finding.policy, finding.mode, "skip", "none", (message, *finding.messages)
    )


def _placeholder_paths(obj: Any, prefix: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _placeholder_paths(v, f"{prefix}/{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _placeholder_paths(v, f"{prefix}/{i}")]
    return [prefix] if isinstance(obj, str) and "${" in obj else []


class _Progress:
    """`audited N/M objects` on stderr, only on a terminal and only for long runs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = total >= 2000 and sys.stderr.isatty()

    def show(self, number: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\rfluxwarden: audited {number}/{self.total} objects")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


def audit_paths(
    paths: Sequence[str],
    *,
    policy_set: PolicySet,
    exclude: Sequence[str] = (),
    render: bool = True,
    kustomize: str | None = None,
    jobs: int | None = None,
    allow_remote: bool = False,
    audit_unreached: bool = False,
    mapped: MappedInputs | None = None,
) -> AuditReport:
    """Audit files, directories and `-`: each directory rendered as Flux applies it (files no
    cluster applies only with `audit_unreached`). Many files and objects are parsed and
    evaluated by `jobs` processes (None: one per CPU). Remote bases are fetched only when
    `allow_remote`. `mapped` sources (--source) render from their directories."""
    with paused_gc():
        inventory = collect(
            paths,
            exclude=exclude,
            render=render,
            kustomize=kustomize,
            jobs=jobs,
            allow_remote=allow_remote,
            audit_unreached=audit_unreached,
            mapped=mapped,
        )
        return evaluate_inventory(inventory, policy_set=policy_set, jobs=jobs)


def evaluate_inventory(
    inventory: Inventory, *, policy_set: PolicySet, jobs: int | None = None
) -> AuditReport:
    """The audit's report of an inventory: its problems and unreached files, and every object
    evaluated with its cluster's lookups."""
    report = AuditReport(
        problems=list(inventory.problems),
        unreached=list(inventory.unreached),
        not_audited=list(inventory.not_audited),
    )
    return _evaluate_clusters(inventory, report, policy_set=policy_set, jobs=jobs)


def _evaluate_clusters(
    inventory: Inventory,
    report: AuditReport,
    *,
    policy_set: PolicySet,
    jobs: int | None,
) -> AuditReport:
    """Each cluster's objects evaluated with that cluster's lookups (names repeat across
    clusters); a finding several clusters share is one finding naming them all."""
    by_cluster = inventory.clusters()
    if set(by_cluster) <= {""}:
        lookups = inventory.lookups("")
        objects = inventory.objects
        return _evaluate_all(objects, report, policy_set=policy_set, lookups=lookups, jobs=jobs)
    merged: dict[Finding, list[str]] = {}
    for cluster, items in by_cluster.items():
        lookups = inventory.lookups(cluster)
        part = _evaluate_all(
            items, AuditReport(), policy_set=policy_set, lookups=lookups, jobs=jobs
        )
        report.objects += part.objects
        for finding in part.findings:
            merged.setdefault(finding, []).extend([cluster] if cluster else [])
    report.findings += [
        dataclasses.replace(f, clusters=tuple(sorted(set(names)))) for f, names in merged.items()
    ]
    return report


def rule_descriptions() -> dict[str, str]:
    """policy name -> one-line summary, for outputs that describe their rules (SARIF)."""
    return {name: policy.summary for name, policy in ALL_POLICIES.items()}
