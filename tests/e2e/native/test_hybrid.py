"""The hybrid install (`manifests/overlays/native`: native policies for what CEL can express,
webhooks narrowed to the rest) decides every golden case as the webhook-only install does, and
nothing is decided twice: an object a native policy decides never reaches fluxwarden (its
request counter stays put), and a duplicate warning would fail the comparison."""

from __future__ import annotations

import copy
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.scenarios import flux_controller, helm_release
from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import (
    REPO,
    WEBHOOK_KINDS,
    WebhookServer,
    apply_objects,
    register,
    rendered,
    wait_until,
)
from tests.e2e.native.differential import (
    Answer,
    admit,
    delete,
    differences,
    natively_decided,
    prepare,
    settled,
)
from tests.e2e.test_golden_parity import REFUSED_BY_THE_API_SERVER, SERVED_CASES, _complete
from tests.golden import Case
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet
from webhook.server.policystore import load_policy_file

pytestmark = [pytest.mark.native]

POLICY_SET: PolicySet = load_policy_file(SHIPPED_POLICIES)
OVERLAY = REPO / "manifests" / "overlays" / "native"
NATIVE_KINDS = (
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
REQUESTS = "fluxwarden_admission_requests_total"


def _policy_results(server: WebhookServer, policies: list[str]) -> float:
    """How often fluxwarden evaluated these policies (its policy results counter)."""
    context = ssl.create_default_context(cafile=str(server.certs / "ca.crt"))
    with urllib.request.urlopen(f"{server.url}/metrics", context=context, timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fluxwarden_policy_results_total{")
        and any(f'policy="{p}"' in line for p in policies)
    )


def _case(case_id: str) -> Case:
    return next(c for c in SERVED_CASES if c.id == case_id)


@pytest.fixture(scope="module")
def hybrid(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ControlPlane, WebhookServer]]:
    cluster = ControlPlane(default_bin_dir())
    cluster.start()
    try:
        prepare(cluster)
        server = WebhookServer(cluster, Path(tmp_path_factory.mktemp("hybrid"))).start()
        try:
            apply_objects(
                cluster, [d for d in rendered(cluster, OVERLAY) if d["kind"] in NATIVE_KINDS]
            )
            register(cluster, server, overlay=OVERLAY)
            irc = _complete(_case("irc-single-replica/two-replicas-1gi").obj)
            hpa = _complete(_case("irc-single-replica/hpa-targeting-irc").obj)

            def ready() -> bool:
                before = server.metric_total(REQUESTS)
                admit(cluster, hpa, dry_run=True)
                called = server.metric_total(REQUESTS) > before
                stored = admit(cluster, irc, dry_run=True).stored
                return called and stored is not None and stored["spec"]["replicas"] == 1

            wait_until("the native policies and the narrowed webhooks", ready)
            yield cluster, server
        finally:
            server.stop()
    finally:
        cluster.stop()


def test_the_overlay_narrows_the_webhooks(hybrid: tuple[ControlPlane, WebhookServer]) -> None:
    docs = [d for d in rendered(hybrid[0], OVERLAY) if d["kind"] in WEBHOOK_KINDS]
    hooks = {h["name"]: h for d in docs for h in d["webhooks"]}
    deployments = str(hooks["deployments.mutate.fluxwarden.io"])
    scale = hooks["deployments-scale.mutate.fluxwarden.io"]
    assert [r["resources"] for r in scale["rules"]] == [["deployments/scale"]]  # IRC's scale
    assert "'image-reflector-controller'" in str(scale)
    for native in ("'source-controller'", "'kustomize-controller'", "'helm-controller'"):
        assert native not in deployments + str(scale)
    # The Deployments themselves: only fleet-agent's, never in flux-system.
    assert "flux-system" not in str(hooks["deployments.mutate.fluxwarden.io"]["namespaceSelector"])
    assert "deployments/scale" not in deployments
    # helmrelease-remediation reads helm-controller's feature gates (a lookup), so HelmReleases
    # without failure handling reach the mutating webhook, and drift detection stays with it.
    mutate = str(hooks["helmreleases.mutate.fluxwarden.io"]["matchConditions"])
    assert "RetryOnFailure" in mutate
    assert "driftDetection" in mutate


@pytest.mark.parametrize("case", SERVED_CASES, ids=[c.id for c in SERVED_CASES])
def test_hybrid_decides_as_the_webhook_and_nothing_twice(
    webhook_cluster: ControlPlane, hybrid: tuple[ControlPlane, WebhookServer], case: Case
) -> None:
    cluster, server = hybrid
    obj = _complete(case.obj)
    webhook_dry = admit(webhook_cluster, obj, dry_run=True)
    native = natively_decided(POLICY_SET, case.obj, hybrid=True)
    before = _policy_results(server, native)
    answers: list[Answer] = []

    def compare() -> list[str]:
        answers.append(admit(cluster, obj, dry_run=True))
        if case.id in REFUSED_BY_THE_API_SERVER:
            return [] if not (webhook_dry.allowed or answers[-1].allowed) else ["not refused"]
        return differences(webhook_dry, answers[-1], native=native, policy_set=POLICY_SET)

    assert settled(compare) == []
    hybrid_dry = answers[-1]
    assert _policy_results(server, native) == before, (
        f"{native}: decided natively, yet by fluxwarden too"
    )
    for side, dry_run in ((webhook_cluster, webhook_dry), (cluster, hybrid_dry)):
        real = admit(side, obj, dry_run=False)
        if real.allowed:
            delete(side, obj, real.name)
        assert dry_run == real, "dry-run differs from a real create"


def test_the_policy_counter_sees_what_the_webhook_decides(
    hybrid: tuple[ControlPlane, WebhookServer],
) -> None:
    """Control for the "nothing twice" check: an HPA on IRC stays in the webhook and is counted."""
    cluster, server = hybrid
    before = _policy_results(server, ["irc-single-replica"])
    admit(cluster, _complete(_case("irc-single-replica/hpa-targeting-irc").obj), dry_run=True)
    assert _policy_results(server, ["irc-single-replica"]) > before


WEBHOOK_CALLS = "apiserver_admission_webhook_admission_duration_seconds_count"
MATCH_CONDITIONS = "apiserver_admission_match_condition_evaluation_seconds_count"


def _apiserver_counts(cluster: ControlPlane, metric: str) -> dict[str, float]:
    """The API server's own counter per webhook (its `name` label), from its /metrics."""
    counts: dict[str, float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith(metric + "{") and 'name="' in line:
            name = line.split('name="', 1)[1].split('"', 1)[0]
            counts[name] = counts.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {n: v - before.get(n, 0.0) for n, v in after.items() if v != before.get(n, 0.0)}


def _bench_writes() -> dict[str, dict[str, Any]]:
    """The writes `bench.apiserver` times that native policies decide in hybrid mode."""
    release = helm_release(interval="10m", drift=False)
    release["metadata"]["name"] = "bench-podinfo"
    return {
        "helmrelease-create": release,
        "kustomize-controller-update": flux_controller("kustomize-controller"),
        "irc-update": flux_controller("image-reflector-controller", replicas=2),
    }


def _write_twice(cluster: ControlPlane, obj: dict[str, Any]) -> None:
    """A create, then an update (another annotation value), then the object is removed."""
    for seq in ("1", "2"):
        changed = copy.deepcopy(obj)
        changed["metadata"].setdefault("annotations", {})["bench/seq"] = seq
        cluster.kubectl("apply", "-f", "-", input=json.dumps(changed))
    cluster.kubectl("delete", "--wait=true", "-f", "-", input=json.dumps(obj))


def test_natively_decided_bench_writes_call_no_webhook(
    hybrid: tuple[ControlPlane, WebhookServer],
) -> None:
    """bench.apiserver's Flux controller Deployment updates are decided natively in hybrid mode
    (its HelmRelease create reaches only the mutating webhook, for helmrelease-remediation's
    feature-gate lookup): by the API server's own metrics no webhook is called for them, and
    for the Deployments no webhook's matchConditions are even evaluated (no rule selects them);
    the HelmRelease reaches the validating webhook's matchConditions (dependsOn, interval), which
    exclude it. Controls: those counters move for the HelmRelease and for an HPA on IRC."""
    cluster, server = hybrid
    writes = _bench_writes()
    for name, obj in writes.items():
        calls = _apiserver_counts(cluster, WEBHOOK_CALLS)
        conditions = _apiserver_counts(cluster, MATCH_CONDITIONS)
        requests = server.metric_total(REQUESTS)
        _write_twice(cluster, obj)
        moved = _moved(calls, _apiserver_counts(cluster, WEBHOOK_CALLS))
        if obj["kind"] == "HelmRelease":
            # helmrelease-remediation (a lookup) brings a release without failure handling to
            # the mutating webhook; nothing else reaches fluxwarden.
            assert set(moved) <= {"helmreleases.mutate.fluxwarden.io"}, (name, moved)
        else:
            assert moved == {}, name
            assert server.metric_total(REQUESTS) == requests, name
        evaluated = _moved(conditions, _apiserver_counts(cluster, MATCH_CONDITIONS))
        if obj["kind"] == "Deployment":
            assert not [n for n in evaluated if n.endswith(".fluxwarden.io")], (name, evaluated)
        else:  # control: the metric is read, and the HelmRelease's conditions were evaluated
            assert set(evaluated) >= {"helmreleases.validate.fluxwarden.io"}, evaluated
    calls = _apiserver_counts(cluster, WEBHOOK_CALLS)
    admit(cluster, _complete(_case("irc-single-replica/hpa-targeting-irc").obj), dry_run=True)
    assert "horizontalpodautoscalers.mutate.fluxwarden.io" in _moved(
        calls, _apiserver_counts(cluster, WEBHOOK_CALLS)
    )
