"""`fluxwarden audit PATH...`: the policies over manifests, lookups from the audited set itself."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine import PolicySet, evaluate, request_for, target_of
from ..engine.policies import ALL_POLICIES
from ..lookups.offline import OfflineLookups
from .documents import Document
from .findings import AuditReport, Finding, InputProblem, ObjectLocation


def location_of(document: Document) -> ObjectLocation:
    obj = document.obj or {}
    target = target_of(obj)
    return ObjectLocation(
        document.source,
        document.line,
        target.api_version,
        target.kind,
        target.namespace,
        target.name,
    )


def audit_documents(documents: Iterable[Document], *, policy_set: PolicySet) -> AuditReport:
    """Evaluate every Kubernetes object in `documents` as a CREATE through both webhooks."""
    report = AuditReport()
    objects: list[Document] = []
    for document in documents:
        if document.error is not None:
            report.problems.append(
                InputProblem(document.source, document.line, document.error, True)
            )
        elif not document.is_kubernetes_object:
            report.problems.append(
                InputProblem(
                    document.source,
                    document.line,
                    "skipped: not a Kubernetes object (no apiVersion/kind)",
                    False,
                )
            )
        else:
            objects.append(document)
    lookups = OfflineLookups(d.obj for d in objects if d.obj is not None)
    for document in objects:
        assert document.obj is not None
        report.objects += 1
        decision = evaluate(
            document.obj,
            request=request_for(document.obj),
            policy_set=policy_set,
            lookups=lookups,
        )
        location = location_of(document)
        report.findings.extend(Finding.of(location, result) for result in decision.results)
    return report


def rule_descriptions() -> dict[str, str]:
    """policy name -> one-line summary, for outputs that describe their rules (SARIF)."""
    return {name: policy.summary for name, policy in ALL_POLICIES.items()}
