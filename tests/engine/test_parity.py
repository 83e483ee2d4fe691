"""One evaluation path: every golden case gets the same answer through the admission endpoint's
`review`, the offline audit and `fix` as the engine gives it directly (the e2e suite adds the real
API server). A case whose request cannot be derived from a file (subresources, DELETE, a chosen
webhook) is checked through `review` only."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonpatch
import pytest
import yaml

from tests.conftest import admission_review
from tests.golden import Case, load_cases
from webhook.admission import review
from webhook.audit.documents import parse_stream
from webhook.audit.offline import audit_documents
from webhook.audit.yaml_text import fix_text
from webhook.engine import Decision, evaluate

CASES = load_cases()


def _review_payload(case: Case) -> dict[str, object]:
    request = case.request()
    target = request.target
    return admission_review(
        case.obj,
        operation=request.operation,
        dry_run=request.dry_run,
        sub_resource=target.sub_resource or None,
        kind={"group": target.group, "version": target.version, "kind": target.kind},
        resource=target.resource,
        resource_group=target.resource_group,
        old_object=request.old_object,
    )


def _decision_dict(decision: Decision) -> dict[str, object]:
    return {
        "allowed": decision.allowed,
        "patch": decision.patch,
        "warnings": decision.warnings,
        "results": [(r.policy, r.result, r.action, r.messages) for r in decision.results],
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_review_answers_as_the_engine_decides(case: Case) -> None:
    expected = case.decide()
    _, admission, decision = review(
        _review_payload(case),
        policy_set=case.policy_set(),
        lookups=case.lookups(),
        webhook=case.webhook,
    )
    assert replace(admission.request, user="tester") == case.request()
    assert _decision_dict(decision) == _decision_dict(expected)


def _from_a_file(case: Case) -> bool:
    """The offline paths see objects in files: a CREATE of the whole object through both webhooks."""
    given = case.spec.get("request", {})
    unavailable = case.spec.get("lookups", {}).get("unavailable")  # files are always lookups
    return not given and not unavailable and case.webhook == "all"


FILE_CASES = [c for c in CASES if _from_a_file(c)]


def _stream(case: Case) -> str:
    """The case's object first, then the objects its lookups know (as other files of the repo)."""
    others = case.spec.get("lookups", {}).get("objects", [])
    return yaml.safe_dump_all([case.obj, *others], sort_keys=False)


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_the_offline_audit_finds_what_the_engine_decides(case: Case) -> None:
    expected = case.decide()
    report = audit_documents(parse_stream(_stream(case), "case.yaml"), policy_set=case.policy_set())
    meta = case.obj.get("metadata") or {}
    first = [
        f
        for f in report.findings
        if (f.location.kind, f.location.name) == (case.obj["kind"], meta.get("name", ""))
    ]
    assert [(f.policy, f.result, f.action, list(f.messages)) for f in first] == [
        (r.policy, r.result, r.action, r.messages) for r in expected.results
    ]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_fix_writes_what_the_mutating_webhook_would_patch(case: Case) -> None:
    from webhook.audit.fix import engine_patcher
    from webhook.lookups.offline import OfflineLookups

    policy_set = case.policy_set()
    text = _stream(case)
    documents = list(parse_stream(text, "case.yaml"))
    lookups = OfflineLookups(d.obj for d in documents if d.obj)
    fixed = fix_text(
        text, "case.yaml", patcher=engine_patcher(policy_set=policy_set, lookups=lookups)
    )
    mutated = evaluate(
        case.obj,
        request=case.request(),
        policy_set=policy_set,
        lookups=case.lookups(),
        webhook="mutate",
    )
    want = jsonpatch.apply_patch(case.obj, mutated.patch) if mutated.patch else case.obj
    got = next(yaml.safe_load_all(fixed.text))
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
