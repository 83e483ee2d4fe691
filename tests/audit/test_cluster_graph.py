"""The cluster audit answers dependency walks from its LISTs (`DependencyGraph`): it must also
answer what newer policies ask, or `audit --cluster` silently stops judging them."""

from __future__ import annotations

import pytest

from webhook.audit.cluster import DependencyGraph
from webhook.engine import LookupUnavailable, ObjectRef
from webhook.engine.model import (
    ApplierLookup,
    DependencyKind,
    DependentsLookup,
    NamespaceLookup,
    NoLookups,
)


def _ks(name: str, *depends: str) -> dict[str, object]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"dependsOn": [{"name": d} for d in depends]},
    }


class _Live(NoLookups):
    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return [ObjectRef(ref.namespace, "live")] if ref.namespace == "other" else None

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        return {"toolkit.fluxcd.io/tenant": "team"} if name == "team" else {}


def test_dependents_come_from_the_listed_edges() -> None:
    graph = DependencyGraph(_Live())
    for obj in (_ks("infra"), _ks("apps", "infra"), _ks("monitoring", "infra", "apps")):
        graph.add("Kustomization", obj)
    graph.cover("Kustomization", lambda namespace: True)
    assert isinstance(graph, DependentsLookup)
    assert sorted(
        r.name for r in graph.dependents("Kustomization", ObjectRef("apps", "infra")) or []
    ) == [
        "apps",
        "monitoring",
    ]
    assert graph.dependents("Kustomization", ObjectRef("apps", "monitoring")) == []
    graph.add("Kustomization", _ks("late", "monitoring"))  # an added object is seen
    assert [
        r.name for r in graph.dependents("Kustomization", ObjectRef("apps", "monitoring")) or []
    ] == ["late"]


def test_outside_the_listed_namespaces_the_live_lookups_answer() -> None:
    graph = DependencyGraph(_Live())
    graph.add("Kustomization", _ks("apps", "infra"))
    graph.cover("Kustomization", lambda namespace: namespace == "apps")
    assert [r.name for r in graph.dependents("Kustomization", ObjectRef("other", "x")) or []] == [
        "live"
    ]
    assert graph.dependents("Kustomization", ObjectRef("elsewhere", "x")) is None


def test_namespace_labels_are_the_live_lookups() -> None:
    graph = DependencyGraph(_Live())
    assert isinstance(graph, NamespaceLookup)
    assert graph.namespace_labels("team") == {"toolkit.fluxcd.io/tenant": "team"}


def test_the_applier_comes_from_the_listed_kustomizations() -> None:
    """Which Kustomization applies a Namespace: its labels, answered from the LIST where its
    namespace was listed completely, else by the live lookups."""
    graph = DependencyGraph(_Live())
    owner = _ks("apps")
    owner["spec"] = {"prune": True, "targetNamespace": "apps"}
    graph.add("Kustomization", owner)
    graph.cover("Kustomization", lambda namespace: namespace == "apps")
    assert isinstance(graph, ApplierLookup)

    def labelled(namespace: str, name: str) -> dict[str, object]:
        labels = {
            "kustomize.toolkit.fluxcd.io/name": name,
            "kustomize.toolkit.fluxcd.io/namespace": namespace,
        }
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": labels}}

    applier = graph.applier(labelled("apps", "apps"))
    assert applier is not None
    assert (applier.prune, applier.target_namespace) == (True, "apps")
    assert graph.applier(labelled("apps", "absent")) is None  # listed completely: none
    with pytest.raises(LookupUnavailable):  # elsewhere: the live lookups (here: none)
        graph.applier(labelled("other", "x"))
