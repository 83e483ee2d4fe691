"""Golden cases that are not a plain CREATE with the shipped set, replayed on a real API server:
each with its own policy set (the case's `policyOverrides`, `ceiling` and `mode`, as
`Case.full_policy_set` builds it) on both sides, its `lookups.objects` created first, and its
request made the way a user makes it:

- CREATE: `kubectl create` (as the plain cases);
- UPDATE: the object is created first with `fluxwarden.io/exempt: all` (so no policy touches the
  old object: a Job's pod template, for one, cannot change afterwards), then `kubectl replace`d
  with the case's object: the request's object is the case's, as in the golden case (golden
  cases have no oldObject, so the old object decides nothing);
- UPDATE of deployments/scale: the Deployment (the case's lookup, else a minimal one) exists,
  then the case's Scale is PUT to its scale subresource (`kubectl replace --raw`);
- DELETE: created, then deleted.

`UNREPLAYABLE` (test_replayed_cases.py) lists, with the reason, the cases `plan` cannot replay.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import WebhookServer, apply_objects, wait_until
from tests.e2e.native.differential import VAP_PREFIX, Answer, _normalised
from tests.e2e.test_golden_parity import _complete
from tests.golden import Case
from webhook.engine import PolicySet, parse_policy_set
from webhook.engine.model import EXEMPT_ANNOTATION
from webhook.manifests import Scopes, webhook_configurations
from webhook.native import generate, webhook_scope

Operation = Literal["CREATE", "UPDATE", "SCALE", "DELETE"]
NATIVE_RESOURCES = (
    "mutatingadmissionpolicies,mutatingadmissionpolicybindings,"
    "validatingadmissionpolicies,validatingadmissionpolicybindings"
)
HOLD_FINALIZER = "fluxwarden.io/test-hold"
MARKER = "fluxwarden-test-generation"


def plan(case: Case) -> Operation | str:
    """How `case` is replayed, or why it cannot be."""
    spec = case.spec
    if spec.get("lookups", {}).get("unavailable"):
        return (
            "lookups unavailable: fluxwarden answers so when it cannot read the API server, and "
            "the e2e harness's `fluxwarden serve` always reads it (--lookups kube)"
        )
    if case.webhook != "all":
        return (
            f"decides what /{case.webhook} alone answers; the API server calls both webhooks "
            "for the same write, so no request reaches only one"
        )
    if strategy_in(case):
        return (
            "spec.install/upgrade.strategy: the replays' HelmRelease CRD (helm-controller API "
            "v1.3.0, for the v2beta cases) has no such field; test_native/test_hybrid run the "
            "plain cases on Flux v2.9.5's CRDs"
        )
    if any(o.get("kind") == "FluxInstance" for o in spec.get("lookups", {}).get("objects", [])):
        return (
            "a FluxInstance marks the cluster multi-tenant: only the audits read it (the webhook "
            "does not look FluxInstances up, and the replays have no Flux Operator CRD)"
        )
    if case.obj.get("kind") == "Namespace":
        return (
            "a Namespace as the case's object: without a namespace controller one created here is "
            "never gone, and flux-system exists; tests/e2e/test_namespace_takeover.py applies "
            "such Namespaces through the real API server as label updates"
        )
    if spec.get("request", {}).get("oldObject") is not None:
        return (
            "an old object with the status helm-controller writes: the API server sends the "
            "stored object, tests/e2e/test_release_identity.py replays such updates"
        )
    operation = spec.get("request", {}).get("operation", "CREATE")
    if spec.get("request", {}).get("subResource") == "scale":
        return "SCALE"
    return (
        str(operation) if operation in ("CREATE", "UPDATE", "DELETE") else f"operation {operation}"
    )


def strategy_in(case: Case) -> bool:
    """The case's HelmRelease has, or is patched to have, an install/upgrade strategy."""
    if case.obj.get("kind") != "HelmRelease":
        return False
    patched = case.path / "patched.yaml"
    written = json.dumps(case.spec["object"]) + (patched.read_text() if patched.exists() else "")
    return '"strategy"' in written or "strategy:" in written


def policy_text(case: Case) -> str:
    """The case's full policy set as a file (`mode`, which --mode sets, written as spec.mode:
    the same ceiling)."""
    raw = yaml.safe_load(case.profile.read_text())
    ceiling = case.spec.get("mode", case.spec.get("ceiling"))
    if ceiling is not None:
        raw["spec"]["mode"] = "off" if ceiling is False else ceiling
    for entry in raw["spec"]["policies"]:
        override = case.spec.get("policyOverrides", {}).get(entry["name"], {})
        entry["mode"] = override.get("mode", entry["mode"])
        entry["params"] = {**entry.get("params", {}), **override.get("params", {})}
    return yaml.safe_dump(raw, sort_keys=False)


def policy_set_of(text: str) -> PolicySet:
    return parse_policy_set(text, source="replayed case")


def replayed_object(case: Case) -> dict[str, Any]:
    """The case's object as the API server accepts it (`_complete`). A Job that is updated
    keeps a selector of its own (`manualSelector`, its labels on the pods: fields no policy
    reads): one the API server generated at create would be missing from the update."""
    obj = _complete(case.obj)
    if obj["kind"] == "Job" and plan(case) == "UPDATE":
        selector = obj["spec"].setdefault(
            "selector", {"matchLabels": {"fluxwarden.io/replayed": obj["metadata"]["name"]}}
        )
        obj["spec"]["manualSelector"] = True
        labels = obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
        labels.update(selector.get("matchLabels", {}))
    return obj


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", "default"))


def _warnings(stderr: str) -> list[str]:
    found = [
        VAP_PREFIX.sub("", line.removeprefix("Warning: "))
        for line in stderr.splitlines()
        if line.startswith("Warning: ")
    ]
    return [w for w in found if w.startswith("fluxwarden")]


def _answer(result: Any, *, stored: bool = True) -> Answer:
    warnings = _warnings(result.stderr)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if not line.startswith("Warning: ")]
        return Answer(False, None, warnings, "\n".join(errors))
    if not stored:
        return Answer(True, None, warnings)
    obj = json.loads(result.stdout)
    return Answer(True, _normalised(obj), warnings, name=obj["metadata"].get("name", ""))


def _exempt(obj: dict[str, Any]) -> dict[str, Any]:
    exempt = copy.deepcopy(obj)
    exempt["metadata"].setdefault("annotations", {})[EXEMPT_ANNOTATION] = "all"
    return exempt


LABELLER = "replay-lookups"  # the field manager of the labels a case puts on a namespace


def _kubectl(cluster: ControlPlane, *args: str, obj: dict[str, Any] | None = None) -> Any:
    text = json.dumps(obj) if obj is not None else None
    return cluster.kubectl(*args, input=text, check=False)


def _delete(cluster: ControlPlane, obj: dict[str, Any]) -> None:
    name = obj["metadata"].get("name")
    if not name:
        return
    _kubectl(cluster, "patch", obj["kind"], name, "-n", _namespace(obj), "--type=merge",
             "-p", '{"metadata": {"finalizers": null}}')  # fmt: skip
    _kubectl(cluster, "delete", obj["kind"], name, "-n", _namespace(obj), "--grace-period=0",
             "--force", "--wait=true", "--ignore-not-found")  # fmt: skip


@contextmanager
def lookups_present(cluster: ControlPlane, case: Case) -> Iterator[None]:
    """The case's lookup objects exist while the case is replayed (one with a deletionTimestamp
    is created with a finalizer and deleted: it stays, being deleted)."""
    objects = [_complete(o) for o in case.spec.get("lookups", {}).get("objects", [])]
    # Namespaces (their labels choose tenants) are labelled, not created: the replays' namespaces
    # exist already, and without a namespace controller a deleted one is never gone.
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    objects = [o for o in objects if o["kind"] != "Namespace"]
    try:
        for namespace in namespaces:
            result = _kubectl(cluster, "apply", "--server-side", f"--field-manager={LABELLER}",
                              "-f", "-", obj=namespace)  # fmt: skip
            assert result.returncode == 0, result.stderr
        for obj in objects:
            deleting = obj["metadata"].pop("deletionTimestamp", None)
            if deleting:
                obj["metadata"].setdefault("finalizers", []).append(HOLD_FINALIZER)
            result = _kubectl(cluster, "create", "-f", "-", obj=obj)
            assert result.returncode == 0, result.stderr
            if deleting:
                _kubectl(cluster, "delete", obj["kind"], obj["metadata"]["name"], "-n",
                         _namespace(obj), "--wait=false")  # fmt: skip
        yield
    finally:
        for obj in reversed(objects):
            _delete(cluster, obj)
        for namespace in namespaces:  # the labels this manager set are removed again
            bare = {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace["metadata"]["name"]}}  # fmt: skip
            _kubectl(cluster, "apply", "--server-side", f"--field-manager={LABELLER}",
                     "-f", "-", obj=bare)  # fmt: skip


def _scaled_deployment(case: Case) -> dict[str, Any]:
    for obj in case.spec.get("lookups", {}).get("objects", []):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == case.obj["metadata"]["name"]:
            return _complete(obj)
    return _complete(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": dict(case.obj["metadata"]),
            "spec": {"replicas": 1},
        }
    )


def replay(cluster: ControlPlane, case: Case, *, dry_run: bool) -> Answer:
    """The API server's answer to the case's request (dry-run or real); what a real request
    created is removed again. Call it within `lookups_present` for a case with lookup objects:
    created just before the request, fluxwarden's lookup cache (1 s) could still miss them."""
    operation = plan(case)
    obj = replayed_object(case)
    dry = ["--dry-run=server"] if dry_run else []
    if operation == "CREATE":
        answer = _answer(_kubectl(cluster, "create", "-o", "json", "-f", "-", *dry, obj=obj))
        if answer.allowed and not dry_run:
            _delete(cluster, {**obj, "metadata": {**obj["metadata"], "name": answer.name}})
        return answer
    if operation == "SCALE":
        deployment = _scaled_deployment(case)
        lookup_names = {o["metadata"]["name"] for o in case.spec.get("lookups", {}).get(
            "objects", [])}  # fmt: skip
        created = deployment["metadata"]["name"] not in lookup_names
        if created:
            assert _kubectl(cluster, "create", "-f", "-", obj=deployment).returncode == 0
        try:
            meta = case.obj["metadata"]
            path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"
            query = "?dryRun=All" if dry_run else ""
            result = _kubectl(cluster, "replace", "--raw", f"{path}/scale{query}", "-f", "-",
                              obj=case.obj)  # fmt: skip
            return _answer(result)
        finally:
            if created:
                _delete(cluster, deployment)
    created = _kubectl(cluster, "create", "-f", "-", obj=_exempt(obj))
    assert created.returncode == 0, created.stderr
    try:
        if operation == "DELETE":
            result = _kubectl(cluster, "delete", obj["kind"], obj["metadata"]["name"], "-n",
                              _namespace(obj), *dry)  # fmt: skip
            return _answer(result, stored=False)
        return _answer(_kubectl(cluster, "replace", "-o", "json", "-f", "-", *dry, obj=obj))
    finally:
        _delete(cluster, obj)


# --------------------------------------------------------------------------- sides


def marker_objects(generation: int) -> list[dict[str, Any]]:
    """A Mutating- and a ValidatingAdmissionPolicy (+ bindings selecting by a label) that
    change with every policy set: applied after the set's objects, seen in effect only once the
    API server's four policy and binding informers have seen everything applied before."""
    label = {"matchLabels": {MARKER: str(generation)}}
    constraints = {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
            }
        ]
    }
    api = "admissionregistration.k8s.io/v1"
    patch = (
        "[JSONPatch{op: 'add', path: '/data', value: {'generation': '" + str(generation) + "'}}]"
    )
    return [
        {
            "apiVersion": api,
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": MARKER},
            "spec": {
                "matchConstraints": constraints,
                "reinvocationPolicy": "Never",
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": patch}}],
            },
        },
        {
            "apiVersion": api,
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": MARKER},
            "spec": {"policyName": MARKER, "matchResources": {"objectSelector": label}},
        },
        {
            "apiVersion": api,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": MARKER},
            "spec": {
                "matchConstraints": constraints,
                "validations": [
                    {"expression": "false", "message": f"fluxwarden-marker {generation}"}
                ],
            },
        },
        {
            "apiVersion": api,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": MARKER},
            "spec": {
                "policyName": MARKER,
                "validationActions": ["Warn"],
                "matchResources": {"objectSelector": label},
            },
        },
    ]


def _marker_seen(cluster: ControlPlane, generation: int) -> bool:
    probe = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": MARKER, "namespace": "default", "labels": {MARKER: str(generation)}},
    }
    result = _kubectl(cluster, "create", "--dry-run=server", "-o", "json", "-f", "-", obj=probe)
    if result.returncode != 0:
        return False
    data = json.loads(result.stdout).get("data") or {}
    warned = f"fluxwarden-marker {generation}" in result.stderr
    return data.get("generation") == str(generation) and warned


def _point_at(configs: list[dict[str, Any]], server: WebhookServer) -> list[dict[str, Any]]:
    for config in configs:
        config["metadata"].pop("annotations", None)
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{server.url}{path}", "caBundle": server.ca_bundle}
    return configs


@dataclass
class Side:
    """One control plane whose admission is switched from one policy set to the next:
    `webhook` (fluxwarden and its webhooks), `native` (the native objects) or `hybrid`."""

    cluster: ControlPlane
    kind: Literal["webhook", "native", "hybrid"]
    workdir: Path
    server: WebhookServer | None = None
    generation: int = 0
    current: str = ""

    def use(self, text: str) -> None:
        """Switch to the policy set `text` (nothing to do when it is in force already)."""
        if text == self.current:
            return
        self.generation += 1
        policy_set = policy_set_of(text)
        if self.kind != "native":
            self._serve(text, policy_set)
        if self.kind != "webhook":
            self._native(policy_set)
        self.current = text

    def _serve(self, text: str, policy_set: PolicySet) -> None:
        if self.server is not None:
            self.server.stop()
        workdir = self.workdir / f"set-{self.generation}"
        workdir.mkdir(parents=True)
        policies = workdir / "policies.yaml"
        policies.write_text(text)
        server = WebhookServer(self.cluster, workdir)
        with _environment("FLUXWARDEN_POLICIES", str(policies)):
            server.start()
        self.server = server
        scopes: Scopes | None = (
            webhook_scope(policy_set, "hybrid") if self.kind == "hybrid" else None
        )
        configs = _point_at(webhook_configurations(policy_set, scopes=scopes), server)
        # Each configuration named as the generated one: replaced whole.
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                             input=yaml.safe_dump_all(configs))  # fmt: skip

    def _native(self, policy_set: PolicySet) -> None:
        objects = generate(policy_set, hybrid=self.kind == "hybrid")
        wanted = {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objects}
        listed = self.cluster.kubectl("get", NATIVE_RESOURCES, "-o", "json").stdout
        for item in json.loads(listed)["items"]:
            name = item["metadata"]["name"]
            key = f"{item['kind'].lower()}/{name}"
            if name.startswith("fluxwarden-") and name != MARKER and key not in wanted:
                self.cluster.kubectl("delete", item["kind"], name)
        if objects:
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                                 input=yaml.safe_dump_all(objects))  # fmt: skip
        apply_objects(self.cluster, marker_objects(self.generation))
        generation = self.generation
        wait_until(
            f"policy set {generation} in force", lambda: _marker_seen(self.cluster, generation)
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    import os

    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
