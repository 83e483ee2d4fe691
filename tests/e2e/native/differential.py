"""One object through two admission set-ups on real API servers, and how their answers compare.

The webhook side is the shipped install (`fluxwarden serve` behind the generated webhook
configurations, as in tests/e2e/test_golden_parity.py); the other side is the native admission
policies alone (`fluxwarden manifests --native`) or the hybrid install (`manifests/overlays/native`:
native policies plus webhooks narrowed to the rest).

Where the answers may differ, by design (README "Native admission policies"):
- MutatingAdmissionPolicies cannot warn: an enforced change made natively comes without its
  `fluxwarden: <policy>: set ... (was ...): why` warning. Every other warning is the same text;
  the API server prefixes a ValidatingAdmissionPolicy's with "Validation failed for
  ValidatingAdmissionPolicy '<name>' with binding '<name>': ", which `admit` removes.
- Warning order: the same within a policy, not across policies (webhooks and policies are
  called in the API server's order), so warnings are compared per policy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import ensure_namespaces, install_crds
from tests.e2e.test_golden_parity import SERVED_CASES, _complete
from tests.golden import Case
from webhook.engine import NoLookups, PolicySet, evaluate, request_for
from webhook.engine.match import any_match
from webhook.native import split

VAP_PREFIX = re.compile(
    r"^Validation failed for ValidatingAdmissionPolicy '[^']*' with binding '[^']*': "
)
VOLATILE = ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation")
NAMESPACES = sorted(
    {c.spec["object"]["metadata"].get("namespace", "default") for c in SERVED_CASES}
)


@dataclass
class Answer:
    """What `kubectl create` showed: refused or not, the stored object, fluxwarden's warnings."""

    allowed: bool
    stored: dict[str, Any] | None
    warnings: list[str]
    error: str = ""
    name: str = field(default="", compare=False)


def prepare(cluster: ControlPlane) -> None:
    install_crds(cluster)
    ensure_namespaces(cluster, *NAMESPACES)


def admit(cluster: ControlPlane, obj: dict[str, Any], *, dry_run: bool) -> Answer:
    """Create `obj` (server-side dry-run or for real) and read the answer."""
    args = ["create", "-o", "json", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    result = cluster.kubectl(*args, input=json.dumps(obj), check=False)
    warnings = [
        VAP_PREFIX.sub("", line.removeprefix("Warning: "))
        for line in result.stderr.splitlines()
        if line.startswith("Warning: ")
    ]
    warnings = [w for w in warnings if w.startswith("fluxwarden")]
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if not line.startswith("Warning: ")]
        return Answer(False, None, warnings, "\n".join(errors))
    stored = json.loads(result.stdout)
    return Answer(True, _normalised(stored), warnings, name=stored["metadata"]["name"])


def delete(cluster: ControlPlane, obj: dict[str, Any], name: str) -> None:
    """Remove what `admit(dry_run=False)` created (no kubelet: Pods are removed by force)."""
    cluster.kubectl(
        "delete",
        obj["kind"],
        name,
        "-n",
        obj["metadata"].get("namespace", "default"),
        "--grace-period=0",
        "--force",
        "--wait=true",
        check=False,
    )


def _normalised(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    uid = meta.get("uid")
    if uid:  # a Job's selector and labels carry its new uid
        obj = json.loads(json.dumps(obj).replace(uid, "<uid>"))
        meta = obj["metadata"]
    for key in VOLATILE:
        meta.pop(key, None)
    if "generateName" in meta:
        meta.pop("name", None)  # generated anew on every create
    obj.pop("status", None)
    return obj


def by_policy(warnings: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for warning in warnings:
        policy = warning.split(": ", 2)[1] if warning.count(": ") >= 2 else ""
        grouped.setdefault(policy, []).append(warning)
    return grouped


def natively_decided(policy_set: PolicySet, obj: dict[str, Any], *, hybrid: bool) -> list[str]:
    """The policies whose native objects (not the webhook) decide `obj`."""
    target = request_for(obj).target
    return [
        part.name
        for part in split(policy_set, hybrid=hybrid)
        if part.mode != "off" and any_match(part.native.covers, target, obj)
    ]


def a_webhook_only_policy_finds_something(policy_set: PolicySet, case: Case) -> bool:
    """A policy native objects do not cover (lookups, oldObject) also denies or changes the
    case's object: a native-only install gives that up by design; test_hybrid.py compares
    those. (Its warnings alone are left out of the comparison: `differences(native_only=)`.)"""
    natively = natively_decided(policy_set, case.obj, hybrid=False)
    decision = evaluate(
        _complete(case.obj), request=request_for(case.obj), policy_set=policy_set,
        lookups=NoLookups(),
    )  # fmt: skip
    return any(
        r.policy not in natively and r.action in ("denied", "mutated") for r in decision.results
    )


def differences(
    webhook: Answer,
    other: Answer,
    *,
    native: list[str],
    policy_set: PolicySet,
    native_only: bool = False,
) -> list[str]:
    """How `other` differs from the webhook's answer, beyond the differences by design."""
    found = []
    if webhook.allowed != other.allowed:
        found.append(f"allowed: webhook {webhook.allowed}, other {other.allowed}: {other.error}")
    if webhook.stored != other.stored:
        found.append(
            "stored objects differ:\n"
            f"webhook {json.dumps(webhook.stored, sort_keys=True)}\n"
            f"other   {json.dumps(other.stored, sort_keys=True)}"
        )
    enforced = {
        c.policy.name for c in policy_set.policies if policy_set.effective_mode(c) == "enforce"
    }
    expected = [
        w
        for w in webhook.warnings
        if not any(w.startswith(f"fluxwarden: {p}: set ") for p in native if p in enforced)
        and (not native_only or any(w.startswith(f"fluxwarden: {p}: ") for p in native))
    ]
    if by_policy(expected) != by_policy(other.warnings):
        found.append(f"warnings: webhook {expected}, other {other.warnings}")
    return found


def settled(compare: Callable[[], list[str]], *, timeout: float = 10.0) -> list[str]:
    """The API server loads new policies asynchronously (each on its own): repeat `compare`
    until it finds no difference or `timeout` passes; the last differences found."""
    deadline = time.monotonic() + timeout
    while True:
        found = compare()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
