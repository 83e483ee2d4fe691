"""Scope is stated once: the webhook configurations, RBAC, the cluster audit's listing plan and the
engine all follow each policy's declared Match, and the committed install files are the
generator's output for the shipped policy set."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml
from kubernetes import client

from tests.e2e.harness import REPO
from webhook.engine import PolicySet, evaluate, parse_policy_set, request_for
from webhook.engine.match import Match, ResourceMatch
from webhook.engine.policies import Params, Policy, Report
from webhook.engine.policies.base import Read
from webhook.engine.policyset import ConfiguredPolicy
from webhook.engine.resources import ResourceKind
from webhook.engine.scope import listing_plan
from webhook.kube.lister import Lister
from webhook.manifests import generate, render

GENERATED = REPO / "manifests" / "base" / "generated.yaml"
SHIPPED_TEXT = (REPO / "policies" / "flux-best-practices.yaml").read_text()


def _hooks(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        hook["name"]: hook
        for obj in objects
        if obj["kind"].endswith("WebhookConfiguration")
        for hook in obj["webhooks"]
    }


def test_committed_install_files_are_what_the_shipped_policy_set_generates(
    shipped_policies: PolicySet,
) -> None:
    assert GENERATED.read_text() == render(shipped_policies), (
        "manifests/base/generated.yaml is stale: run `make generate` and commit the result"
    )


def test_a_renamed_controller_changes_the_generated_match_conditions() -> None:
    edited = SHIPPED_TEXT.replace(
        "deployments: [kustomize-controller, helm-controller]",
        "deployments: [kustomize-controller, my-helm-controller]",
    )
    assert edited != SHIPPED_TEXT
    expression = _hooks(generate(parse_policy_set(edited, source="edited")))[
        "deployments.mutate.fluxwarden.io"
    ]["matchConditions"][0]["expression"]
    assert "'my-helm-controller'" in expression
    assert "'helm-controller'" not in expression


def test_flux_in_another_namespace_moves_the_namespace_selector() -> None:
    edited = SHIPPED_TEXT.replace("namespaces: [flux-system]", "namespaces: [flux]")
    hooks = _hooks(generate(parse_policy_set(edited, source="edited")))
    selector = hooks["deployments.mutate.fluxwarden.io"]["namespaceSelector"]
    assert selector["matchExpressions"][0] == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        # fleet-agent shares the Deployments webhook; flux-system itself has moved
        "values": ["cattle-fleet-local-system", "cattle-fleet-system", "flux"],
    }


def test_kube_system_is_checked_and_only_fluxwarden_system_is_always_excluded(
    shipped_policies: PolicySet,
) -> None:
    assert shipped_policies.excluded_namespaces == {"fluxwarden-system"}
    hooks = _hooks(generate(shipped_policies))
    selector = hooks["helmreleases.mutate.fluxwarden.io"]["namespaceSelector"]
    assert selector["matchExpressions"][0]["values"] == ["fluxwarden-system"]
    edited = SHIPPED_TEXT.replace("namespaces: []", "namespaces: [kube-system]")
    user_excluded = parse_policy_set(edited, source="edited")
    selector = _hooks(generate(user_excluded))["helmreleases.mutate.fluxwarden.io"][
        "namespaceSelector"
    ]
    assert selector["matchExpressions"][0]["values"] == ["fluxwarden-system", "kube-system"]


def test_the_lookups_role_grants_exactly_the_reads() -> None:
    edited = SHIPPED_TEXT.replace(
        "inheritFromDeployment: fleet-controller", "inheritFromDeployment: rancher/my-fleet"
    )
    role = next(
        o for o in generate(parse_policy_set(edited, source="x")) if o["kind"] == "ClusterRole"
    )
    assert role["metadata"]["name"] == "fluxwarden-lookups"
    assert role["rules"][0] == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": ["helm-controller", "image-reflector-controller", "my-fleet"],
        "verbs": ["get"],
    }
    # The dependsOn walk lists one namespace at a time; named reads are GETs only.
    assert [rule["verbs"] for rule in role["rules"][1:]] == [["get", "list"], ["get", "list"]]


CONFIGMAPS = ResourceKind("", ("v1",), "configmaps", "ConfigMap")


class _ThrowawayPolicy(Policy[Params]):
    """A policy the shipped set does not have: registering it is all it takes."""

    name: ClassVar[str] = "throwaway"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = "flags ConfigMaps named bad-*"
    params_model = Params

    def scope(self, params: Params) -> tuple[Match, ...]:
        return (
            Match(
                resources=(ResourceMatch(CONFIGMAPS),),
                namespaces=frozenset({"team-a"}),
                name_prefixes=("bad-",),
            ),
        )

    def reads(self, params: Params) -> tuple[Read, ...]:
        return (Read(CONFIGMAPS, frozenset({"settings"})),)

    def check(self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report) -> None:
        report.advise("bad name")


@pytest.fixture
def with_throwaway(shipped_policies: PolicySet) -> PolicySet:
    extra = ConfiguredPolicy.of(_ThrowawayPolicy(), mode="enforce", params=Params())
    return replace(shipped_policies, policies=(*shipped_policies.policies, extra))


def test_a_new_policy_appears_in_webhooks_rbac_listing_and_engine(
    with_throwaway: PolicySet,
) -> None:
    objects = generate(with_throwaway)
    hook = _hooks(objects)["configmaps.validate.fluxwarden.io"]
    assert hook["rules"][0]["resources"] == ["configmaps"]
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]
    assert "object.metadata.name.startsWith('bad-')" in hook["matchConditions"][0]["expression"]
    lookups, audit = (o for o in objects if o["kind"] == "ClusterRole")
    assert {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["settings"],
        "verbs": ["get"],
    } in lookups["rules"]
    assert {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]} in audit[
        "rules"
    ]
    plan, _ = listing_plan(with_throwaway, None)
    assert [
        (listing.kind, listing.namespaces) for listing in plan if listing.kind == CONFIGMAPS
    ] == [(CONFIGMAPS, ("team-a",))]
    matched = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bad-1", "namespace": "team-a"},
    }
    other = {**matched, "metadata": {"name": "good", "namespace": "team-a"}}
    for obj, expected in ((matched, ["throwaway"]), (other, [])):
        decision = evaluate(
            obj, request=request_for(obj), policy_set=with_throwaway, lookups=_NoReads()
        )
        assert [r.policy for r in decision.results] == expected


class _NoReads:
    def deployment(self, namespace: str, name: str) -> None:
        return None

    def dependencies(self, kind: Any, ref: Any) -> None:
        return None

    def persistent_volume_claim(self, namespace: str, name: str) -> None:
        return None


class _RecordingAPI(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path.split("?")[0])
        body = json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recording_api() -> Iterator[client.ApiClient]:
    _RecordingAPI.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield client.ApiClient(configuration)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("kind", "namespace", "path"),
    [
        (CONFIGMAPS, "team-a", "/api/v1/namespaces/team-a/configmaps"),
        (CONFIGMAPS, None, "/api/v1/configmaps"),
        (
            ResourceKind("helm.toolkit.fluxcd.io", ("v2",), "helmreleases", "HelmRelease"),
            None,
            "/apis/helm.toolkit.fluxcd.io/v2/helmreleases",
        ),
        (
            ResourceKind("batch", ("v1",), "jobs", "Job"),
            "cattle-system",
            "/apis/batch/v1/namespaces/cattle-system/jobs",
        ),
    ],
)
def test_the_lister_lists_each_resource_by_its_own_api_path(
    recording_api: client.ApiClient, kind: ResourceKind, namespace: str | None, path: str
) -> None:
    """A core-group kind other than Pods must not be listed as Pods (the old lister did)."""
    lister = Lister(recording_api, excluded=frozenset({"fluxwarden-system"}))
    version, first = lister.served_version(kind, namespace)
    assert (version, list(lister.pages(kind, version, namespace, first))) == (
        "v1" if not kind.group or kind.group == "batch" else "v2",
        [first],
    )
    assert _RecordingAPI.paths == [path]


def test_the_generated_files_are_valid_yaml_documents() -> None:
    documents = [d for d in yaml.safe_load_all(GENERATED.read_text()) if d]
    assert [d["kind"] for d in documents] == [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ClusterRole",
        "ClusterRole",
    ]
    assert Path(GENERATED).read_text().startswith("# DO NOT EDIT")


def test_fluxwarden_audit_reports_a_kube_system_helmrelease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webhook.cli import main

    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "cilium", "namespace": "kube-system"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "cilium"}}},
    }
    (tmp_path / "cilium.yaml").write_text(yaml.safe_dump(release))
    assert main(["audit", str(tmp_path / "cilium.yaml"), "-o", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["policy"], f["result"]) for f in findings if f["result"] == "fail"] == [
        ("helmrelease-drift-detection", "fail"),
    ]


def _tenants_only(text: str) -> PolicySet:
    """The multi-tenancy profile with only the tenant policies (no other Kustomization policy
    shares their webhook)."""
    raw = yaml.safe_load(text)
    raw["spec"]["policies"] = [
        p for p in raw["spec"]["policies"] if p["name"].startswith("tenant-")
    ]
    return parse_policy_set(yaml.safe_dump(raw), source="tenants")


MULTI_TENANCY_TEXT = (REPO / "policies" / "multi-tenancy.yaml").read_text()


def test_tenant_namespaces_by_label_become_the_webhooks_namespace_selector() -> None:
    hooks = _hooks(generate(_tenants_only(MULTI_TENANCY_TEXT)))
    selectors = [hook["namespaceSelector"]["matchExpressions"] for hook in hooks.values()]
    assert selectors
    assert all(
        expressions[0] == {"key": "toolkit.fluxcd.io/tenant", "operator": "Exists"}
        and expressions[1]["operator"] == "NotIn"
        for expressions in selectors
    )
    # Negative control: with a listed namespace too, the selector cannot say "listed or
    # labelled" and selects every namespace but the excluded ones (the engine decides).
    listed = MULTI_TENANCY_TEXT.replace("tenantNamespaces: []", "tenantNamespaces: [team-a]")
    hooks = _hooks(generate(_tenants_only(listed)))
    assert all(
        hook["namespaceSelector"]["matchExpressions"][0]["operator"] == "NotIn"
        for hook in hooks.values()
    )


def test_the_engine_reads_a_namespaces_labels_once_per_request() -> None:
    from webhook.lookups.offline import OfflineLookups

    policy_set = _tenants_only(MULTI_TENANCY_TEXT)
    read: list[str] = []

    class Counting(OfflineLookups):
        def namespace_labels(self, name: str) -> dict[str, str] | None:
            read.append(name)
            return super().namespace_labels(name)

    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-b", "labels": {"toolkit.fluxcd.io/tenant": "team-b"}},
    }
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "app", "namespace": "team-b"},
        "spec": {"chartRef": {"kind": "OCIRepository", "name": "app", "namespace": "shared"}},
    }
    decision = evaluate(
        release,
        request=request_for(release),
        policy_set=policy_set,
        lookups=Counting([namespace]),
    )
    assert {r.policy for r in decision.results if r.result == "fail"} == {
        "tenant-service-account",
        "tenant-cross-namespace-refs",
    }
    assert read == ["team-b"]
