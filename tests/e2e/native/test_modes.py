"""Modes map to native actions as the webhook behaves: under a `warn` ceiling the native
ValidatingAdmissionPolicies (`validationActions: [Warn]`) show the webhook's "would ..." warnings
word for word and nothing changes; under `audit` (`[Audit]`) the user sees nothing; under both the audit
event carries the same finding text as the webhook's audit annotation (keys differ by design:
`<webhook>/<policy>` vs `fluxwarden-<policy>/finding`; exemptions are not recorded natively)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import apply_objects, serving, wait_until
from tests.e2e.native.differential import (
    Answer,
    a_webhook_only_policy_finds_something,
    admit,
    differences,
    natively_decided,
    prepare,
    settled,
)
from tests.e2e.test_golden_parity import REFUSED_BY_THE_API_SERVER, SERVED_CASES, _complete
from tests.golden import Case
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet, parse_mode
from webhook.native import AUDIT_KEY, PREFIX, generate
from webhook.server.policystore import load_policy_file

pytestmark = [pytest.mark.native]

POLICY_SET: PolicySet = load_policy_file(SHIPPED_POLICIES)
CEILINGS = ("warn", "audit")
PROBE = "irc-single-replica/two-replicas-1gi"


def _cases(ceiling: str) -> list[Case]:
    policy_set = POLICY_SET.with_ceiling(parse_mode(ceiling))
    return [
        c
        for c in SERVED_CASES
        if c.id not in REFUSED_BY_THE_API_SERVER
        and natively_decided(policy_set, c.obj, hybrid=False)
        and not a_webhook_only_policy_finds_something(policy_set, c)
        and c.spec["object"]["metadata"].get("name")  # audit events are found by name
    ]


class Side:
    """One cluster and where its audit log was read up to."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster

    def admit(self, obj: dict[str, Any]) -> tuple[Answer, dict[str, str]]:
        """A dry-run create, and fluxwarden's audit annotations by policy from its audit event."""
        seen = len(self.cluster.audit_log.read_text().splitlines())
        answer = admit(self.cluster, obj, dry_run=True)
        events: list[dict[str, Any]] = []

        def logged() -> bool:
            for line in self.cluster.audit_log.read_text().splitlines()[seen:]:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if (
                    event.get("verb") == "create"
                    and event.get("stage") == "ResponseComplete"
                    and ref.get("name") == obj["metadata"]["name"]
                ):
                    events.append(event)
            return bool(events)

        wait_until("the audit event", logged, timeout=10)
        return answer, _by_policy(events[-1].get("annotations") or {})


def _by_policy(annotations: dict[str, str]) -> dict[str, str]:
    found = {}
    for key, value in annotations.items():
        if key.startswith(PREFIX) and key.endswith(f"/{AUDIT_KEY}"):
            found[key.removeprefix(PREFIX).removesuffix(f"/{AUDIT_KEY}")] = value
        elif ".fluxwarden.io/" in key and not value.startswith("exempt:"):
            found[key.rsplit("/", 1)[1]] = value
    return found


@pytest.fixture(scope="module", params=CEILINGS)
def sides(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Side, Side]]:
    ceiling: str = request.param
    webhook, native = ControlPlane(default_bin_dir()), ControlPlane(default_bin_dir())
    try:
        webhook.start()
        native.start()
        prepare(webhook)
        prepare(native)
        with serving(webhook, Path(tmp_path_factory.mktemp(ceiling)), mode=ceiling):
            apply_objects(native, generate(POLICY_SET.with_ceiling(parse_mode(ceiling))))
            probe = _complete(next(c for c in SERVED_CASES if c.id == PROBE).obj)
            native_side = Side(native)

            def active() -> bool:
                answer, annotations = native_side.admit(probe)
                return bool(answer.warnings if ceiling == "warn" else annotations)

            wait_until("the native policies", active)
            yield ceiling, Side(webhook), native_side
    finally:
        webhook.stop()
        native.stop()


@pytest.mark.parametrize("case_id", sorted({c.id for m in CEILINGS for c in _cases(m)}))
def test_native_actions_follow_the_mode(sides: tuple[str, Side, Side], case_id: str) -> None:
    ceiling, webhook, native = sides
    case = next(c for c in SERVED_CASES if c.id == case_id)
    if case not in _cases(ceiling):
        pytest.skip(f"not decided natively under a {ceiling} ceiling")
    obj = _complete(case.obj)
    webhook_answer, webhook_annotations = webhook.admit(obj)
    policy_set = POLICY_SET.with_ceiling(parse_mode(ceiling))
    native_policies = natively_decided(policy_set, case.obj, hybrid=False)
    expected = {p: v for p, v in webhook_annotations.items() if p in native_policies}

    def compare() -> list[str]:
        native_answer, native_annotations = native.admit(obj)
        found = differences(
            webhook_answer,
            native_answer,
            native=native_policies,
            policy_set=policy_set,
            native_only=True,
        )
        if ceiling == "audit" and native_answer.warnings:
            found.append(f"audit mode showed warnings: {native_answer.warnings}")
        if expected != native_annotations:
            found.append(f"audit annotations: webhook {expected}, native {native_annotations}")
        return found

    assert settled(compare) == []
