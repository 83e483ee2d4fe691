"""KubeLookups under a slow, a dead and a healthy API endpoint on loopback: it caches, and a
slow or dead API becomes a warning within the timeout, never a hang or a denial."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.engine import LookupUnavailable, ObjectRef, PolicySet, evaluate, request_for
from webhook.kube.lookups import KubeLookups, load_api_client
from webhook.kube.rest import load_reader

Api = Callable[[int], Any]  # port -> what KubeLookups reads the API through


def _kubeconfig(port: int, tmp_path: Path) -> Path:
    kubeconfig = tmp_path / f"kubeconfig-{port}"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "t", "user": {"token": "x"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            }
        )
    )
    return kubeconfig


@pytest.fixture(params=["serve", "kubernetes-client"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Api:
    """From a kubeconfig, as `fluxwarden serve` reads the API (urllib3, `load_reader`) and as
    the cluster audit does (the kubernetes client, `load_api_client(retries=0)`)."""
    if request.param == "serve":
        return lambda port: load_reader(str(_kubeconfig(port, tmp_path)))
    return lambda port: load_api_client(str(_kubeconfig(port, tmp_path)), retries=0)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers: a hung API server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


class _FakeAPI(BaseHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012 - shared by the handler instances on purpose
    objects: dict[str, Any] = {}  # noqa: RUF012

    delay = 0.0
    forbidden: set[str] = set()  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        time.sleep(self.delay)
        path = self.path.split("?")[0]
        body = self.objects.get(path)
        status = 403 if path in self.forbidden else 200 if body else 404
        payload = json.dumps(
            body if status == 200 else {"kind": "Status", "code": status, "reason": "No"}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[int, type[_FakeAPI]]]:
    handler = type("Handler", (_FakeAPI,), {"requests": [], "objects": {}, "forbidden": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()


FLEET_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "fleet-cleanup-clusterregistrations", "namespace": "cattle-fleet-system"},
    "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}},
}


def test_a_hung_api_is_a_warning_within_the_timeout_then_backs_off(
    silent_port: int, shipped_policies: PolicySet, api: Api
) -> None:
    lookups = KubeLookups(api(silent_port), timeout=0.5, backoff=30)
    started = time.monotonic()
    decision = evaluate(
        FLEET_JOB,
        request=request_for(FLEET_JOB),
        policy_set=shipped_policies,
        lookups=lookups,
    )
    assert time.monotonic() - started < 1.5  # one 0.5 s attempt, no urllib3 retries
    assert decision.allowed
    assert decision.patch == []
    assert decision.warnings == [
        "fluxwarden: fleet-job-tolerations: could not read tolerations of Deployment "
        "cattle-fleet-system/fleet-controller: Kubernetes API unreachable: ReadTimeoutError"
    ]
    started = time.monotonic()
    with pytest.raises(LookupUnavailable, match="backing off"):
        lookups.dependencies("Kustomization", ObjectRef("flux-system", "apps"))
    assert time.monotonic() - started < 0.1  # no second wait while the API is known to be down


def test_a_dead_api_is_a_warning_not_a_denial(
    dead_port: int, shipped_policies: PolicySet, api: Api
) -> None:
    ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"dependsOn": [{"name": "infra"}]},
    }
    decision = evaluate(
        ks,
        request=request_for(ks),
        policy_set=shipped_policies,
        lookups=KubeLookups(api(dead_port), timeout=0.5),
    )
    assert decision.allowed
    assert decision.warnings[0].startswith(
        "fluxwarden: kustomization-dependencies: could not check dependsOn for cycles: "
        "Kubernetes API unreachable"
    )


def test_answers_are_cached_and_missing_objects_are_none(
    fake_api: tuple[int, type[_FakeAPI]], api: Api
) -> None:
    port, handler = fake_api
    path = "/apis/apps/v1/namespaces/cattle-fleet-system/deployments/fleet-controller"
    handler.objects[path] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fleet-controller", "namespace": "cattle-fleet-system"},
        "spec": {
            "selector": {},
            "template": {
                "spec": {
                    "containers": [],
                    "tolerations": [
                        {
                            "key": "dedicated",
                            "operator": "Equal",
                            "value": "infra",
                            "effect": "NoSchedule",
                        }
                    ],
                }
            },
        },
    }
    clock = [0.0]
    lookups = KubeLookups(api(port), ttl=5, clock=lambda: clock[0])
    expected = [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]

    def tolerations() -> object:
        found = lookups.deployment("cattle-fleet-system", "fleet-controller")
        assert found is not None
        return found["spec"]["template"]["spec"]["tolerations"]

    assert tolerations() == expected
    assert tolerations() == expected
    assert handler.requests == [path]
    clock[0] = 6.0  # past the TTL: asked again
    tolerations()
    assert handler.requests == [path, path]
    assert lookups.deployment("cattle-fleet-system", "absent") is None
    # A Kustomization not found in any served version is unknown (None), not an error.
    assert lookups.dependencies("Kustomization", ObjectRef("flux-system", "nope")) is None


KS_API = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces"


def _ks(name: str, namespace: str, *deps: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        # prune and wait: nothing for kustomization-safety to say or look up
        "spec": {
            "prune": True,
            "wait": True,
            "dependsOn": [{"name": n, "namespace": ns} for ns, n in deps],
        },
    }


def _serve_kustomizations(handler: type[_FakeAPI], objects: list[dict[str, Any]]) -> None:
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        by_namespace.setdefault(namespace, []).append(obj)
        handler.objects[f"{KS_API}/{namespace}/kustomizations/{name}"] = obj
    for namespace, items in by_namespace.items():
        handler.objects[f"{KS_API}/{namespace}/kustomizations"] = {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "KustomizationList",
            "metadata": {},
            "items": items,
        }


def _decide(obj: dict[str, Any], policies: PolicySet, lookups: Any) -> Any:
    return evaluate(obj, request=request_for(obj), policy_set=policies, lookups=lookups)


def test_a_namespace_of_dependencies_is_one_list_not_one_get_per_name(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    names = [f"dep-{i}" for i in range(199)]
    _serve_kustomizations(handler, [_ks(n, "flux-system") for n in names])
    me = _ks("apps", "flux-system", *[("flux-system", n) for n in names])
    lookups = KubeLookups(api(port)).for_request(time.monotonic() + 2.5)
    decision = _decide(me, shipped_policies, lookups)
    assert decision.allowed
    assert decision.warnings == []
    assert [r.split("?")[0] for r in handler.requests] == [f"{KS_API}/flux-system/kustomizations"]


def test_a_cycle_across_namespaces_is_still_found(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    _serve_kustomizations(
        handler, [_ks("b", "team-b", ("team-c", "c")), _ks("c", "team-c", ("team-a", "a"))]
    )
    me = _ks("a", "team-a", ("team-b", "b"))
    decision = _decide(me, shipped_policies, KubeLookups(api(port)))
    assert not decision.allowed
    assert "team-a/a -> team-b/b -> team-c/c -> team-a/a" in decision.deny_reasons[0]


def test_where_listing_is_forbidden_objects_are_read_one_by_one(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    _serve_kustomizations(handler, [_ks("b", "flux-system", ("flux-system", "a"))])
    handler.forbidden.add(f"{KS_API}/flux-system/kustomizations")
    me = _ks("a", "flux-system", ("flux-system", "b"))
    decision = _decide(me, shipped_policies, KubeLookups(api(port)))
    assert not decision.allowed
    assert handler.requests[-1] == f"{KS_API}/flux-system/kustomizations/b"


def test_a_slow_api_costs_one_request_deadline_not_one_timeout_per_lookup(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    handler.delay = 0.3  # every answer; each lookup alone is well within its 2 s timeout
    chain = [_ks(f"k{i}", f"ns-{i}", (f"ns-{i + 1}", f"k{i + 1}")) for i in range(1, 12)]
    _serve_kustomizations(handler, chain)
    me = _ks("k0", "ns-0", ("ns-1", "k1"))
    lookups = KubeLookups(api(port), timeout=2.0)
    started = time.monotonic()
    decision = _decide(me, shipped_policies, lookups.for_request(started + 1.0))
    elapsed = time.monotonic() - started
    assert decision.allowed
    assert decision.warnings == [
        "fluxwarden: kustomization-dependencies: could not check dependsOn for cycles: "
        "request deadline reached before the Kubernetes API answered"
    ]
    assert elapsed < 1.5  # the deadline, plus one answer in flight (bounded, not a benchmark)
    assert len(handler.requests) <= 4


def test_a_hung_api_is_given_no_more_than_the_request_deadline(
    silent_port: int, shipped_policies: PolicySet, api: Api
) -> None:
    lookups = KubeLookups(api(silent_port), timeout=2.0)
    started = time.monotonic()
    decision = _decide(
        _ks("apps", "flux-system", ("flux-system", "infra")),
        shipped_policies,
        lookups.for_request(started + 0.5),
    )
    assert time.monotonic() - started < 1.2
    assert decision.allowed
    assert "could not check dependsOn for cycles" in decision.warnings[0]
    # Cut short by the request's deadline: not a verdict on the API, the next request asks again.
    with pytest.raises(LookupUnavailable, match="deadline reached"):
        lookups.for_request(time.monotonic() + 0.3).dependencies(
            "Kustomization", ObjectRef("flux-system", "infra")
        )


def test_fan_out_is_capped_per_request(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    spread = [_ks(f"k{i}", f"ns-{i}") for i in range(30)]
    _serve_kustomizations(handler, spread)
    me = _ks("apps", "flux-system", *[(f"ns-{i}", f"k{i}") for i in range(30)])
    lookups = KubeLookups(api(port), max_calls=8)
    decision = _decide(me, shipped_policies, lookups.for_request(time.monotonic() + 2.5))
    assert decision.allowed
    assert decision.warnings == [
        "fluxwarden: kustomization-dependencies: could not check dependsOn for cycles: "
        "more than 8 Kubernetes API calls needed for one request"
    ]
    assert len(handler.requests) == 8


def test_identical_concurrent_lookups_are_made_once(
    fake_api: tuple[int, type[_FakeAPI]], api: Api
) -> None:
    port, handler = fake_api
    handler.delay = 0.3
    path = "/apis/apps/v1/namespaces/cattle-fleet-system/deployments/fleet-controller"
    spec: dict[str, Any] = {"selector": {}, "template": {"spec": {"containers": []}}}
    handler.objects[path] = {"metadata": {"name": "fleet-controller"}, "spec": spec}
    lookups = KubeLookups(api(port))
    answers: list[object] = []

    def ask() -> None:
        view = lookups.for_request(time.monotonic() + 2.5)
        answers.append(view.deployment("cattle-fleet-system", "fleet-controller"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == 8
    assert all(a == {"metadata": {"name": "fleet-controller"}, "spec": spec} for a in answers)
    assert handler.requests == [path]


def test_a_dependency_created_after_the_namespace_was_listed_is_found(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    """Flux applies a Kustomization and its dependency moments apart: a name missing from the
    cached list is read on its own (a GET, not a new list of the namespace), so the dependency
    is not reported missing (and a cycle closed within the TTL is denied, below)."""
    port, handler = fake_api
    clock = [0.0]
    lookups = KubeLookups(api(port), ttl=5, clock=lambda: clock[0])

    def decide(obj: dict[str, Any]) -> Any:
        return _decide(obj, shipped_policies, lookups.for_request(clock[0] + 2.5))

    def calls() -> list[str]:
        return [r.split("?")[0] for r in handler.requests]

    listing = f"{KS_API}/flux-system/kustomizations"
    _serve_kustomizations(handler, [_ks("infra", "flux-system")])
    first = decide(_ks("apps", "flux-system", ("flux-system", "infra")))
    assert first.allowed
    assert first.warnings == []
    assert calls() == [listing]

    clock[0] = 0.5  # within the TTL: "configs" is created after the list above was made
    _serve_kustomizations(handler, [_ks("infra", "flux-system"), _ks("configs", "flux-system")])
    second = decide(_ks("apps", "flux-system", ("flux-system", "configs")))
    assert second.warnings == []
    assert calls() == [listing, f"{listing}/configs"]

    clock[0] = 0.6  # every name in the cached list, or read in this request's window: no call
    third = decide(_ks("apps", "flux-system", ("flux-system", "infra")))
    assert third.warnings == []
    assert len(calls()) == 2

    clock[0] = 0.7  # really missing: one GET in the version that listed, then the warning
    fourth = decide(_ks("apps", "flux-system", ("flux-system", "nope")))
    assert any("nope" in w for w in fourth.warnings), fourth.warnings
    assert calls()[2:] == [f"{listing}/nope"]


def test_a_cycle_closed_within_the_ttl_is_denied(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    port, handler = fake_api
    clock = [0.0]
    lookups = KubeLookups(api(port), ttl=5, clock=lambda: clock[0])
    _serve_kustomizations(handler, [_ks("other", "flux-system")])
    a = _ks("a", "flux-system", ("flux-system", "b"))
    first = _decide(a, shipped_policies, lookups.for_request(clock[0] + 2.5))
    assert first.allowed  # b does not exist yet: a warning, no cycle
    clock[0] = 0.2
    _serve_kustomizations(handler, [_ks("other", "flux-system"), a])
    b = _ks("b", "flux-system", ("flux-system", "a"))
    second = _decide(b, shipped_policies, lookups.for_request(clock[0] + 2.5))
    assert not second.allowed
    assert "flux-system/b -> flux-system/a -> flux-system/b" in second.deny_reasons[0]


def test_dependents_are_read_from_the_namespace_list_the_walk_makes(
    fake_api: tuple[int, type[_FakeAPI]], shipped_policies: PolicySet, api: Api
) -> None:
    """kustomization-safety: infra neither waits nor checks health, and apps dependsOn it."""
    port, handler = fake_api
    infra = _ks("infra", "flux-system", ("flux-system", "crds"))
    infra["spec"]["wait"] = False
    _serve_kustomizations(
        handler,
        [_ks("crds", "flux-system"), infra, _ks("apps", "flux-system", ("flux-system", "infra"))],
    )
    lookups = KubeLookups(api(port)).for_request(time.monotonic() + 2.5)
    decision = _decide(infra, shipped_policies, lookups)
    assert decision.allowed
    assert [w for w in decision.warnings if "in the dependsOn of flux-system/apps" in w]
    assert [r.split("?")[0] for r in handler.requests] == [f"{KS_API}/flux-system/kustomizations"]
    waiting = {**infra, "spec": {**infra["spec"], "wait": True}}
    assert not _decide(waiting, shipped_policies, lookups).warnings


def test_namespace_labels_are_one_cached_get(
    fake_api: tuple[int, type[_FakeAPI]], api: Api
) -> None:
    port, handler = fake_api
    handler.objects["/api/v1/namespaces/team-b"] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-b", "labels": {"toolkit.fluxcd.io/tenant": "team-b"}},
    }
    lookups = KubeLookups(api(port), ttl=5)
    assert lookups.namespace_labels("team-b") == {"toolkit.fluxcd.io/tenant": "team-b"}
    assert lookups.namespace_labels("team-b") == {"toolkit.fluxcd.io/tenant": "team-b"}
    assert lookups.namespace_labels("absent") is None
    assert handler.requests == ["/api/v1/namespaces/team-b", "/api/v1/namespaces/absent"]


def test_the_applier_is_one_cached_get_of_the_kustomization_its_labels_name(
    fake_api: tuple[int, type[_FakeAPI]], api: Api
) -> None:
    port, handler = fake_api
    handler.objects[f"{KS_API}/flux-system/kustomizations/apps"] = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"prune": True, "targetNamespace": "flux-system", "deletionPolicy": "Orphan"},
    }
    lookups = KubeLookups(api(port), ttl=5)

    def labelled(name: str) -> dict[str, Any]:
        labels = {
            "kustomize.toolkit.fluxcd.io/name": name,
            "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
        }
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": labels}}

    applier = lookups.applier(labelled("apps"))
    assert applier is not None
    assert (applier.prune, applier.target_namespace, applier.deletes_when_deleted) == (
        True,
        "flux-system",
        False,  # Orphan
    )
    assert lookups.applier(labelled("apps")) == applier
    assert lookups.applier({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}) is None
    assert handler.requests == [f"{KS_API}/flux-system/kustomizations/apps"]
    # gone: not found in any served version
    assert lookups.applier(labelled("gone")) is None
