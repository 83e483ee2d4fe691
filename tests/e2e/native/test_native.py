"""Native admission policies alone (`fluxwarden manifests --native`) decide as the webhook does:
every golden case a native policy covers is created on two real API servers, one with the
webhook, one with only the generated Mutating/ValidatingAdmissionPolicies; the stored objects
and the warnings are the same (see differential.py for the differences by design), and a
server-side dry-run stores exactly what a real create does on both. A deliberately broken
native policy makes the comparison fail (negative control)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import apply_objects, ensure_namespaces, wait_until
from tests.e2e.native.differential import (
    Answer,
    a_webhook_only_policy_finds_something,
    admit,
    delete,
    differences,
    natively_decided,
    prepare,
    settled,
)
from tests.e2e.test_golden_parity import REFUSED_BY_THE_API_SERVER, SERVED_CASES, _complete
from tests.golden import Case, load_cases
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import NoLookups, PolicySet, evaluate, parse_policy_set, request_for
from webhook.native import generate, render, split
from webhook.server.policystore import load_policy_file

pytestmark = [pytest.mark.native]

POLICY_SET: PolicySet = load_policy_file(SHIPPED_POLICIES)


NATIVE_CASES = [
    c
    for c in SERVED_CASES
    if natively_decided(POLICY_SET, c.obj, hybrid=False)
    and not a_webhook_only_policy_finds_something(POLICY_SET, c)
]
PROBE_CASE = "irc-single-replica/two-replicas-1gi"


def _probe(cluster: ControlPlane) -> Answer:
    case = next(c for c in SERVED_CASES if c.id == PROBE_CASE)
    return admit(cluster, _complete(case.obj), dry_run=True)


def _replicas(answer: Answer) -> int | None:
    return None if answer.stored is None else answer.stored["spec"].get("replicas")


@pytest.fixture(scope="module")
def native_cluster() -> Iterator[ControlPlane]:
    cluster = ControlPlane(default_bin_dir())
    cluster.start()
    try:
        prepare(cluster)
        apply_objects(cluster, generate(POLICY_SET))
        # The API server picks policies up asynchronously: until the probe is mutated.
        wait_until("the native policies", lambda: _replicas(_probe(cluster)) == 1)
        yield cluster
    finally:
        cluster.stop()


def _answers(cluster: ControlPlane, case: Case) -> tuple[Answer, Answer]:
    """(dry-run, real create) of the case's object; the real one is removed again."""
    obj = _complete(case.obj)
    dry_run = admit(cluster, obj, dry_run=True)
    real = admit(cluster, obj, dry_run=False)
    if real.allowed:
        delete(cluster, obj, real.name)
    return dry_run, real


def test_every_native_policy_has_golden_cases() -> None:
    native = {p.name for p in split(POLICY_SET, hybrid=False) if p.native.covers}
    # Cases of webhook-only policies are here too when the native ones decide their object
    # (a Kustomization without dependsOn: flux-intervals and flux-api-versions look at it).
    assert {c.policy for c in NATIVE_CASES} >= native


@pytest.mark.parametrize("case", NATIVE_CASES, ids=[c.id for c in NATIVE_CASES])
def test_native_policies_decide_as_the_webhook(
    webhook_cluster: ControlPlane, native_cluster: ControlPlane, case: Case
) -> None:
    webhook_dry, webhook_real = _answers(webhook_cluster, case)
    assert webhook_dry == webhook_real, "webhook: dry-run differs from a real create"
    native = natively_decided(POLICY_SET, case.obj, hybrid=False)
    answers: list[tuple[Answer, Answer]] = []

    def compare() -> list[str]:
        native_dry, native_real = _answers(native_cluster, case)
        answers.append((native_dry, native_real))
        if case.id in REFUSED_BY_THE_API_SERVER:
            return [] if not (webhook_dry.allowed or native_dry.allowed) else ["not refused"]
        return differences(
            webhook_dry, native_dry, native=native, policy_set=POLICY_SET, native_only=True
        )

    assert settled(compare) == []
    native_dry, native_real = answers[-1]
    assert native_dry == native_real, "native: dry-run differs from a real create"


def test_native_output_applies_with_server_side_dry_run(webhook_cluster: ControlPlane) -> None:
    """On a cluster without them (the webhook side), every object is created at dry-run."""
    for hybrid in (False, True):
        text = render(POLICY_SET, hybrid=hybrid)
        docs = [d for d in yaml.safe_load_all(text) if d]
        result = webhook_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
        created = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
        assert len(created) == len(docs), result.stdout
        native_kinds = {d["kind"] for d in docs if "AdmissionPolicy" in d["kind"]}
        assert native_kinds == {
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        }
        if not hybrid:
            assert all("created (server dry run)" in line for line in created), result.stdout
        assert ("MutatingWebhookConfiguration" in {d["kind"] for d in docs}) == hybrid
        assert "Warning" not in result.stderr, result.stderr


def test_a_broken_native_policy_fails_the_comparison(
    webhook_cluster: ControlPlane, native_cluster: ControlPlane
) -> None:
    """Negative control: the IRC mutation keeps 2 replicas instead of setting 1."""
    objects = generate(POLICY_SET)
    irc = next(
        o
        for o in objects
        if o["kind"] == "MutatingAdmissionPolicy"
        and o["metadata"]["name"].endswith("irc-single-replica")
    )
    broken = copy.deepcopy(irc)
    mutation = broken["spec"]["mutations"][0]["jsonPatch"]
    assert "path: '/spec/replicas', value: 1}" in mutation["expression"]
    mutation["expression"] = mutation["expression"].replace(
        "path: '/spec/replicas', value: 1}", "path: '/spec/replicas', value: 2}"
    )
    case = next(c for c in SERVED_CASES if c.id == PROBE_CASE)
    apply_objects(native_cluster, [broken])
    try:
        wait_until("the broken policy", lambda: _replicas(_probe(native_cluster)) == 2)
        webhook_dry, _ = _answers(webhook_cluster, case)
        native_dry, _ = _answers(native_cluster, case)
        found = differences(
            webhook_dry, native_dry, native=["irc-single-replica"], policy_set=POLICY_SET
        )
        assert found, "the broken policy went unnoticed"
        assert "stored objects differ" in found[0], json.dumps(found)
    finally:
        apply_objects(native_cluster, [irc])
        wait_until("the repaired policy", lambda: _replicas(_probe(native_cluster)) == 1)


STATIC_TOLERATIONS = [
    {"key": "dedicated", "operator": "Equal", "value": "fleet", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Equal", "value": "fleet", "effect": "NoSchedule"},
]
# job-update-running is an UPDATE of a started Job: its selector (set by the Job controller)
# makes a create invalid.
FLEET_CASES = [
    c
    for c in load_cases()
    if c.policy == "fleet-job-tolerations" and c.path.name != "job-update-running"
]
# The DefaultTolerationSeconds admission plugin gives every Pod these before any policy runs.
DEFAULT_POD_TOLERATIONS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _static_fleet_set() -> PolicySet:
    raw = yaml.safe_load(SHIPPED_POLICIES.read_text())
    for entry in raw["spec"]["policies"]:
        if entry["name"] == "fleet-job-tolerations":
            entry["params"].update(inheritFromDeployment="", tolerations=STATIC_TOLERATIONS)
    return parse_policy_set(yaml.safe_dump(raw), source="static-fleet")


@pytest.fixture(scope="module")
def static_fleet(native_cluster: ControlPlane) -> Iterator[PolicySet]:
    """The native cluster with the Fleet policy as `inheritFromDeployment: ""` makes it."""
    policy_set = _static_fleet_set()
    fleet = [
        o for o in generate(policy_set) if o["metadata"]["name"].endswith("fleet-job-tolerations")
    ]
    assert {o["kind"] for o in fleet} >= {"MutatingAdmissionPolicy", "ValidatingAdmissionPolicy"}
    ensure_namespaces(
        native_cluster, *sorted({c.obj["metadata"]["namespace"] for c in FLEET_CASES})
    )
    apply_objects(native_cluster, fleet)
    try:
        yield policy_set
    finally:
        native_cluster.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(fleet))


@pytest.mark.parametrize("case", FLEET_CASES, ids=[c.id for c in FLEET_CASES])
def test_static_fleet_tolerations_are_added_as_the_engine_adds_them(
    native_cluster: ControlPlane, static_fleet: PolicySet, case: Case
) -> None:
    """With `inheritFromDeployment: ""` the Fleet policy is native: every Fleet golden object
    gets the tolerations (merged, never duplicated) the engine adds, and its advisories."""
    obj = _complete(case.obj)
    decision = evaluate(obj, request=request_for(obj), policy_set=static_fleet, lookups=NoLookups())
    wanted = jsonpatch.apply_patch(obj, decision.patch)

    def compare() -> list[str]:
        answer = admit(native_cluster, obj, dry_run=True)
        if answer.stored is None:
            return [f"refused: {answer.error}"]
        found = []
        stored = [
            t
            for t in _tolerations(answer.stored) or []
            if t.get("key") not in DEFAULT_POD_TOLERATIONS or t in (_tolerations(wanted) or [])
        ]
        if stored != (_tolerations(wanted) or []):
            found.append(f"tolerations {stored} vs {_tolerations(wanted)}")
        shown = [w for w in decision.warnings if ": set " not in w]
        if shown != answer.warnings:
            found.append(f"warnings {decision.warnings} vs {answer.warnings}")
        return found

    assert settled(compare) == []


def _tolerations(obj: dict[str, Any]) -> Any:
    kind = obj["kind"]
    spec = (
        obj["spec"]
        if kind == "Pod"
        else obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if kind == "CronJob"
        else obj["spec"].get("template", {}).get("spec", {})
    )
    return spec.get("tolerations")
