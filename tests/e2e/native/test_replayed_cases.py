"""The golden cases the plain comparisons (test_native.py, test_hybrid.py) leave out - those
with their own policy set (`policyOverrides`, `ceiling`, `mode`), lookup objects, a request
other than CREATE, or a HelmRelease version Flux v2.9.5's CRD no longer serves (v2beta1,
v2beta2) - replayed on three real API servers (see replay.py for how). Their HelmRelease CRD is
the test-only one generated from helm-controller's API module v1.3.0 (Flux v2.6: v2, v2beta2 and
v2beta1 served, no conversion webhook, `tests/controlplane/helm-v2beta/build.sh`); every other
CRD is Flux v2.9.5's, as everywhere else. The webhook
side answers as the engine decides the case (warnings, denial, the patched fields), the native
policies generated from the case's own policy set answer as the webhook does for every case a
native policy decides, the hybrid install for every case, and nothing the native objects decide
reaches fluxwarden. Dry-run answers equal real ones on every side. `UNREPLAYABLE` lists the cases
that are not replayed, with the reason; a test asserts it is exactly the set `plan` refuses."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import (
    HAND_WRITTEN_CRDS,
    REPO,
    ensure_namespaces,
    generated_crds,
    install_crds,
)
from tests.e2e.native.differential import (
    Answer,
    by_policy,
    differences,
    natively_decided,
    settled,
)
from tests.e2e.native.replay import (
    Side,
    lookups_present,
    plan,
    policy_set_of,
    policy_text,
    replay,
    replayed_object,
    strategy_in,
)
from tests.e2e.native.test_hybrid import _policy_results
from tests.e2e.native.test_native import DEFAULT_POD_TOLERATIONS
from tests.e2e.test_golden_parity import (
    CASES,
    NO_CRD_BUILT,
    NOT_SERVED_BY_THE_GENERATED_CRDS,
    SERVED_CASES,
)
from tests.golden import Case, load_cases
from webhook.engine import PolicySet, evaluate

pytestmark = [pytest.mark.native]

OPERATIONS = ("CREATE", "UPDATE", "SCALE", "DELETE")
HELMRELEASE_CRD = "helm.toolkit.fluxcd.io_helmreleases.yaml"
ALL_CASES = load_cases()
# Not a plain CREATE with the shipped set, or not served by Flux v2.9.5's CRDs.
LEFT_OUT = [c for c in ALL_CASES if c not in SERVED_CASES and c.id not in NO_CRD_BUILT]
OLDER_HELMRELEASE_BUILD = REPO / "tests" / "controlplane" / "helm-v2beta" / "build.sh"
UNREPLAYABLE = {
    "fleet-job-tolerations/lookup-unavailable": "lookups unavailable",
    "kustomization-dependencies/lookups-unavailable-self-reference-denied": "lookups unavailable",
    "kustomization-dependencies/lookups-unavailable-warned": "lookups unavailable",
    "source-controller-storage/data-claim-lookup-unavailable": "lookups unavailable",
    "kustomization-dependencies/mutate-webhook-cycle-not-run": "decides what /mutate alone",
    "tenant-service-account/lookup-unavailable-warned": "lookups unavailable",
    "helmrelease-remediation/gate-lookup-unavailable": "lookups unavailable",
    "kustomization-safety/lookup-unavailable": "lookups unavailable",
    **{
        f"controller-lockdown/{name}": "a FluxInstance marks the cluster multi-tenant"
        for name in ("fluxinstance-multitenant-warned", "fluxinstance-not-multitenant-pass")
    },
    "tenant-service-account/namespace-lookup-unavailable": "lookups unavailable",
    "kustomization-safety/applier-lookup-unavailable": "lookups unavailable",
    **{
        c.id: "a Namespace as the case's object"
        for c in ALL_CASES
        if c.obj.get("kind") == "Namespace" and not c.spec.get("lookups", {}).get("unavailable")
    },
    **{
        c.id: "spec.install/upgrade.strategy: the replays' HelmRelease CRD"
        for c in ALL_CASES
        if c not in SERVED_CASES and strategy_in(c)
    },
    **{
        c.id: "an old object with the status helm-controller writes"
        for c in ALL_CASES
        if c.spec.get("request", {}).get("oldObject") is not None
    },
}
# Cases a native policy decides in part while a policy that stays in the webhook (lookups)
# denies or changes the rest (its warnings alone are left out of the native comparison): a native-only install gives that rest up by design (README), so only the
# hybrid side is compared with the webhook for them.
NATIVE_ONLY_SKIPPED = {
    "kustomization-dependencies/helmrelease-cycle-denied": (
        "kustomization-dependencies denies the dependsOn cycle through another HelmRelease "
        "(a lookup); natively only drift detection and the interval check run"
    ),
    **{
        f"kustomization-dependencies/{name}": (
            "kustomization-dependencies walks the dependsOn graph (a lookup); natively only "
            "flux-intervals and flux-api-versions look at the Kustomization"
        )
        for name in ("cycle-three-denied",)
    },
    # The tenant policies are webhook-only (no CEL yet): natively only the default set's run.
    **{
        f"tenant-service-account/{name}": "tenant-service-account is webhook-only"
        for name in (
            "helmrelease-without-service-account-denied",
            "kustomization-without-service-account-denied",
            "other-controller-default-not-enough",
        )
    },
    **{
        f"tenant-cross-namespace-refs/{name}": "tenant-cross-namespace-refs is webhook-only"
        for name in (
            "depends-on-and-health-checks-elsewhere-denied",
            "helmrelease-chart-ref-elsewhere-denied",
            "helmrelease-chart-source-elsewhere-denied",
            "kustomization-source-elsewhere-denied",
            "labelled-namespace-denied",
        )
    },
    **{
        f"tenant-service-account/{name}": "tenant-service-account is webhook-only"
        for name in ("labelled-namespace-denied", "param-other-tenant-label")
    },
    "helmrelease-remediation/old-controller-retries-set": (
        "helmrelease-remediation reads helm-controller's version (a lookup) to choose strategy or "
        "retries: it stays in the webhook"
    ),
    "kustomization-safety/force-denied-in-enforce": (
        "kustomization-safety stays in the webhook with waitForDependents (a lookup); natively "
        "only flux-intervals and flux-api-versions look at the Kustomization"
    ),
}
# Sorted by policy set: each side switches sets once per group.
REPLAYED = sorted(
    (c for c in LEFT_OUT if plan(c) in OPERATIONS), key=lambda c: (policy_text(c), c.id)
)


def _decided_in_the_webhook_too(case: Case) -> list[str]:
    """The policies outside the natively decided ones that find something in the case."""
    policy_set = policy_set_of(policy_text(case))
    natively = natively_decided(policy_set, case.obj, hybrid=False)
    if not natively:
        return []
    obj = case.obj if plan(case) == "SCALE" else replayed_object(case)
    decision = evaluate(
        obj, request=case.request(), policy_set=policy_set, lookups=case.lookups(), webhook="all"
    )
    # What a native-only install gives up: denials and changes (warnings alone are left out of
    # the comparison, `differences(native_only=True)`).
    return [
        r.policy
        for r in decision.results
        if r.policy not in natively and r.action in ("denied", "mutated")
    ]


def test_native_only_skipped_is_exactly_the_cases_a_webhook_policy_also_decides() -> None:
    found = {c.id for c in REPLAYED if _decided_in_the_webhook_too(c)}
    assert found == set(NATIVE_ONLY_SKIPPED)


def test_unreplayable_is_exactly_what_plan_refuses() -> None:
    refused = {c.id: plan(c) for c in LEFT_OUT if plan(c) not in OPERATIONS}
    assert set(refused) == set(UNREPLAYABLE)
    for case_id, reason in UNREPLAYABLE.items():
        assert refused[case_id].startswith(reason), (case_id, refused[case_id])
    # Every golden case is compared somewhere: the plain ones by test_native/test_hybrid, the
    # rest here (the v2beta ones too), or listed above.
    assert {c.id for c in ALL_CASES} == {c.id for c in [*SERVED_CASES, *REPLAYED]} | set(
        UNREPLAYABLE
    ) | set(NO_CRD_BUILT)
    assert set(NOT_SERVED_BY_THE_GENERATED_CRDS) <= {c.id for c in REPLAYED}
    assert all(c in CASES for c in SERVED_CASES)


def older_helmrelease_crds() -> list[Path]:
    """Flux v2.9.5's CRDs with the HelmRelease one from helm-controller's API v1.3.0."""
    everything = generated_crds()  # controller-gen comes with them (`make controlplane`)
    built = subprocess.run(
        [str(OLDER_HELMRELEASE_BUILD)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    older = Path(built.stdout.strip().splitlines()[-1]) / "crds" / HELMRELEASE_CRD
    generated = [p for p in everything if p.name != HELMRELEASE_CRD]
    assert len(generated) == len(everything) - 1
    return [*generated, older, *HAND_WRITTEN_CRDS]


def _namespaces() -> list[str]:
    found = set()
    for case in ALL_CASES:
        for obj in [case.spec["object"], *case.spec.get("lookups", {}).get("objects", [])]:
            found.add(obj["metadata"].get("namespace", "default"))
    return sorted(found)


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side, Side]]:
    crds = older_helmrelease_crds()
    clusters = [ControlPlane(default_bin_dir()) for _ in range(3)]
    made: list[Side] = []
    try:
        for cluster in clusters:
            cluster.start()
            install_crds(cluster, *crds)
            ensure_namespaces(cluster, *_namespaces())
        for cluster, kind in zip(clusters, ("webhook", "native", "hybrid"), strict=True):
            made.append(Side(cluster, kind, tmp_path_factory.mktemp(kind)))  # type: ignore[arg-type]
        yield made[0], made[1], made[2]
    finally:
        for side in made:
            side.stop()
        for cluster in clusters:
            cluster.stop()


def _value(obj: Any, pointer: str) -> Any:
    return jsonpatch.JsonPointer(pointer).resolve(obj, None)


def engine_differences(case: Case, policy_set: PolicySet, answer: Answer) -> list[str]:
    """How the webhook side's answer differs from what the engine decides for the case."""
    request = case.request()
    obj = case.obj if plan(case) == "SCALE" else replayed_object(case)
    decision = evaluate(
        obj, request=request, policy_set=policy_set, lookups=case.lookups(), webhook="all"
    )
    found = []
    if by_policy(answer.warnings) != by_policy(decision.warnings):
        found.append(f"warnings: engine {decision.warnings}, API server {answer.warnings}")
    if answer.allowed != decision.allowed:
        found.append(f"allowed: engine {decision.allowed}, API server {answer.allowed}")
    elif not decision.allowed:
        found += [f"reason missing: {r}" for r in decision.deny_reasons if r not in answer.error]
    elif answer.stored is not None and decision.patch:
        wanted = jsonpatch.apply_patch(obj, decision.patch)
        for operation in decision.patch:
            stored = _value(answer.stored, operation["path"])
            if obj["kind"] == "Pod" and operation["path"].endswith("/tolerations"):
                expected = _value(wanted, operation["path"])
                stored = [t for t in stored if t in expected or not _defaulted(t)]
            if stored != _value(wanted, operation["path"]):
                found.append(f"not patched as the engine does: {operation}")
    return found


def _defaulted(toleration: dict[str, Any]) -> bool:
    """The DefaultTolerationSeconds admission plugin gives every Pod these before any webhook
    or policy sees it (fluxwarden then appends to them)."""
    return toleration.get("key") in DEFAULT_POD_TOLERATIONS


@pytest.mark.parametrize("case", REPLAYED, ids=[c.id for c in REPLAYED])
def test_replayed_case_decides_alike_everywhere(sides: tuple[Side, Side, Side], case: Case) -> None:
    text = policy_text(case)
    policy_set = policy_set_of(text)
    assert policy_set.policies == case.full_policy_set().policies
    assert policy_set.mode == case.full_policy_set().mode
    for side in sides:
        side.use(text)
    with contextlib.ExitStack() as stack:
        for side in sides:
            stack.enter_context(lookups_present(side.cluster, case))
        _decide_alike(sides, case, policy_set)


def _decide_alike(sides: tuple[Side, Side, Side], case: Case, policy_set: PolicySet) -> None:
    webhook, native, hybrid = sides
    seen: list[Answer] = []

    def as_the_engine() -> list[str]:
        seen.append(replay(webhook.cluster, case, dry_run=True))
        return engine_differences(case, policy_set, seen[-1])

    assert settled(as_the_engine) == [], "webhook side"
    webhook_dry = seen[-1]
    assert replay(webhook.cluster, case, dry_run=False) == webhook_dry, "webhook: dry-run != real"

    natively = natively_decided(policy_set, case.obj, hybrid=False)
    if natively and case.id not in NATIVE_ONLY_SKIPPED:
        _compare(native, case, webhook_dry, natively, policy_set, native_only=True)
    in_hybrid = natively_decided(policy_set, case.obj, hybrid=True)
    assert hybrid.server is not None
    before = _policy_results(hybrid.server, in_hybrid)
    _compare(hybrid, case, webhook_dry, in_hybrid, policy_set)
    assert _policy_results(hybrid.server, in_hybrid) == before, (
        f"{in_hybrid}: decided natively, yet by fluxwarden too"
    )


def _compare(
    side: Side,
    case: Case,
    webhook_dry: Answer,
    natively: list[str],
    policy_set: PolicySet,
    *,
    native_only: bool = False,
) -> None:
    seen: list[Answer] = []

    def compare() -> list[str]:
        seen.append(replay(side.cluster, case, dry_run=True))
        return differences(
            webhook_dry, seen[-1], native=natively, policy_set=policy_set, native_only=native_only
        )

    assert settled(compare) == [], side.kind
    assert replay(side.cluster, case, dry_run=False) == seen[-1], f"{side.kind}: dry-run != real"


def test_a_case_replayed_under_another_policy_set_is_told_apart(
    sides: tuple[Side, Side, Side],
) -> None:
    """Negative control for the per-case policy sets: IRC at warn (the case's set) against the
    native side left at the shipped set (IRC enforced) differs."""
    webhook, native, _ = sides
    case = next(
        c for c in REPLAYED if c.id == "irc-single-replica/policy-mode-warn-under-enforce-ceiling"
    )
    shipped = next(policy_text(c) for c in ALL_CASES if c in SERVED_CASES)
    policy_set = policy_set_of(policy_text(case))
    webhook.use(policy_text(case))
    native.use(shipped)
    webhook_dry = replay(webhook.cluster, case, dry_run=True)
    native_dry = replay(native.cluster, case, dry_run=True)
    found = differences(
        webhook_dry, native_dry, native=["irc-single-replica"], policy_set=policy_set
    )
    assert found, "the other policy set went unnoticed"
    assert "stored objects differ" in found[0], found
