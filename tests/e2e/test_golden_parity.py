"""Every golden case a user could `kubectl create` goes through the real API server with the
generated webhook configurations in front of fluxwarden, and the API server's answer (stored
fields, warnings, denial) is what the engine decides for the same object. This also checks the
generated CEL matchConditions against the engine: an object they wrongly kept away would come
back without its patch or its warnings.

A fresh control plane of its own: golden objects reuse names (the Flux controllers) that other
e2e modules create, and a dry-run create needs them absent."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import ensure_namespaces, install_crds, serving
from tests.golden import Case, load_cases
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import evaluate, request_for
from webhook.lookups.offline import OfflineLookups
from webhook.server.policystore import load_policy_file


def _as_a_user_writes_it(case: Case) -> bool:
    """A CREATE of the object with the shipped (default) set and an empty cluster behind the
    lookups."""
    spec = case.spec
    plain = not any(k in spec for k in ("request", "lookups", "policyOverrides", "ceiling", "mode"))
    return plain and case.webhook == "all" and case.profile == SHIPPED_POLICIES


CASES = [c for c in load_cases() if _as_a_user_writes_it(c)]

# Objects the API server itself refuses before any webhook sees them (schema, decoding): the
# engine's answer for them only matters in Git, where the offline audit gives it.
REFUSED_BY_THE_API_SERVER = {
    "helmrelease-interval/not-a-duration": "the CRD's spec.interval pattern",
    "helmrelease-interval/substitution-skipped": "${VAR} is substituted by Flux before applying",
    "irc-single-replica/hpa-bad-target-ref": "scaleTargetRef must be an object",
    "irc-single-replica/substituted-memory": "${VAR} is not a quantity until Flux substitutes it",
    "flux-intervals/ocirepository-not-a-duration": "the CRD's spec.interval pattern",
    "flux-intervals/substitution-skipped": "${VAR} is substituted by Flux before applying",
    "kustomization-safety/timeout-substitution-skipped": "the CRD's spec.timeout pattern",
    "kustomization-safety/prune-unset-warned": "spec.prune is required by the v1 CRD",
}
# API versions the generated CRDs (Flux v2.9.5's helm-controller API serves HelmRelease v2
# only) do not serve: kubectl finds no such kind here. They run, through the webhook (checked
# against the engine as here) and natively, in tests/e2e/native/test_replayed_cases.py, on
# control planes whose HelmRelease CRD still serves v2beta1/v2beta2 (helm-controller API v1.3.0).
NOT_SERVED_BY_THE_GENERATED_CRDS = {
    "helmrelease-drift-detection/v2beta1-warned": "helm.toolkit.fluxcd.io/v2beta1",
    "helmrelease-drift-detection/v2beta2-mutated": "helm.toolkit.fluxcd.io/v2beta2",
}
NOT_SERVED_BY_THE_GENERATED_CRDS.update(
    {"flux-api-versions/helmrelease-v2beta2-warned": "helm.toolkit.fluxcd.io/v2beta2"}
)
# Kinds and versions no CRD built for the tests serves (Flux v2.9.5's serve source, kustomize
# and image kinds in v1 only, and no notification kinds): flux-api-versions judges them in Git
# (tests/engine/test_parity.py: review, offline audit, fix); here the API server refuses them.
NO_CRD_BUILT = {
    "flux-api-versions/kustomization-v1beta2-warned": "kustomize.toolkit.fluxcd.io/v1beta2",
    "flux-api-versions/gitrepository-v1beta2-warned": "source.toolkit.fluxcd.io/v1beta2",
    "flux-api-versions/exempt": "source.toolkit.fluxcd.io/v1beta2",
    "flux-api-versions/image-policy-v1beta2-warned": "image.toolkit.fluxcd.io/v1beta2",
    "flux-api-versions/alert-v1beta3-current": "notification.toolkit.fluxcd.io/v1beta3",
    # not plain CREATEs (a ceiling, a param): left out of the replays for the same reason
    "flux-api-versions/mode-audit": "kustomize.toolkit.fluxcd.io/v1beta2",
    "flux-api-versions/param-flux-2-6-image-v1beta2-current": "image.toolkit.fluxcd.io/v1beta2",
    "tenant-cross-namespace-refs/alert-event-sources-elsewhere-denied": (
        "notification.toolkit.fluxcd.io/v1beta3"
    ),
}
# The cases this API server can store: what the other end-to-end comparisons (native, hybrid) run.
SERVED_CASES = [
    c for c in CASES if c.id not in NOT_SERVED_BY_THE_GENERATED_CRDS and c.id not in NO_CRD_BUILT
]
# Where the answers may differ, and how: the API server canonicalises quantities before the
# webhook sees them, so "was 1.5Gi" reads "was 1536Mi" (same value; the patch is the same).
CANONICALISED_QUANTITIES = {"irc-single-replica/limit-1-5gi-raised": ("1.5Gi", "1536Mi")}


def _complete(obj: dict[str, Any]) -> dict[str, Any]:
    """Add what the API server requires and the golden objects leave out (selector, images...)
    without touching any field a policy reads."""
    obj = copy.deepcopy(obj)
    kind, name = obj["kind"], obj["metadata"].get("name") or "x"
    template = None
    if kind == "Deployment":
        obj["spec"].setdefault("selector", {"matchLabels": {"app": name}})
        template = obj["spec"].setdefault("template", {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(obj["spec"]["selector"]["matchLabels"])
    elif kind == "Job":
        template = obj["spec"].setdefault("template", {})
        template.setdefault("spec", {}).setdefault("restartPolicy", "Never")
    elif kind == "CronJob":
        obj["spec"].setdefault("schedule", "0 * * * *")
        template = obj["spec"]["jobTemplate"]["spec"].setdefault("template", {})
        template.setdefault("spec", {}).setdefault("restartPolicy", "Never")
    elif kind == "StatefulSet":
        obj["spec"].setdefault("selector", {"matchLabels": {"app": name}})
        template = obj["spec"].setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("labels", {}).update(
            obj["spec"]["selector"]["matchLabels"]
        )
    elif kind == "Pod":
        template = obj
    if template is not None:
        containers = template.setdefault("spec", {}).setdefault("containers", [{"name": "c"}])
        for container in containers:
            container.setdefault("image", "registry.example/app:1")
    return obj


@pytest.fixture(scope="module")
def parity_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cluster = ControlPlane(default_bin_dir())
    cluster.start()
    try:
        install_crds(cluster)
        namespaces = sorted(
            {c.spec["object"]["metadata"].get("namespace", "default") for c in CASES}
        )
        ensure_namespaces(cluster, *namespaces)
        with serving(cluster, Path(tmp_path_factory.mktemp("parity"))):
            yield cluster
    finally:
        cluster.stop()


def _value(obj: Any, pointer: str) -> Any:
    return jsonpatch.JsonPointer(pointer).resolve(obj, None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_api_server_stores_and_shows_what_the_engine_decides(
    parity_cluster: ControlPlane, case: Case
) -> None:
    obj = _complete(case.obj)
    decision = evaluate(
        obj,
        request=request_for(obj),
        policy_set=load_policy_file(SHIPPED_POLICIES),
        lookups=OfflineLookups([]),
    )
    result = parity_cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )
    unserved = {**NOT_SERVED_BY_THE_GENERATED_CRDS, **NO_CRD_BUILT}
    if case.id in unserved:
        assert result.returncode != 0
        assert "no matches for kind" in result.stderr, result.stderr
        assert unserved[case.id] == obj["apiVersion"]
        return
    if case.id in REFUSED_BY_THE_API_SERVER:
        assert result.returncode != 0
        # mutating webhooks run (and may warn) before the schema check refuses the object
        assert "fluxwarden denied" not in result.stderr, "refused by the API server"
        return
    shown = [
        line.removeprefix("Warning: ")
        for line in result.stderr.splitlines()
        if line.startswith("Warning: fluxwarden")
    ]
    written, canonical = CANONICALISED_QUANTITIES.get(case.id, ("", ""))
    assert shown == [w.replace(f"was {written})", f"was {canonical})") for w in decision.warnings]
    if not decision.allowed:
        assert result.returncode != 0
        for reason in decision.deny_reasons:
            assert reason in result.stderr
        return
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    wanted = jsonpatch.apply_patch(obj, decision.patch)
    for operation in decision.patch:
        assert _value(stored, operation["path"]) == _value(wanted, operation["path"]), operation
