"""`fluxwarden audit --cluster`: the policies over the live cluster, page by page, same engine path.

Only the kinds the configured policies target are listed, and only in the namespaces those
policies look at (Deployments in flux-system, Pods in the Fleet namespaces...). Lists are
paginated (`limit` + `continue`) and each page is evaluated and dropped before the next is
fetched, so memory follows the findings, not the size of the cluster. The one thing kept for
the whole run is the dependsOn graph (references only), which answers the dependency walks
without a GET per object visited.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from ..engine import JsonObject, Lookups, ObjectRef, PolicySet, evaluate, request_for
from ..engine.model import (
    Applier,
    ApplierLookup,
    DependencyKind,
    DependentsLookup,
    NamespaceLookup,
    applier_labels,
    applier_of,
)
from ..engine.policies.kustomization_dependencies import depends_on
from ..engine.resources import HELMRELEASES, KUSTOMIZATIONS, ResourceKind
from ..engine.scope import listing_plan
from ..kube import ApiClient
from ..kube.lister import ApiUnreachable, Lister, ListFailed, NotServed
from ..kube.lookups import KubeLookups
from ..kube.reports import ClusterObjectLocation, ReportWriteError, write_reports
from .findings import AuditReport, Finding, InputProblem

__all__ = [
    "ClusterObjectLocation",
    "DependencyGraph",
    "ReportWriteError",
    "audit_cluster",
    "listing_plan",
    "write_reports",
]

LOOKUP_TTL = 300.0  # a batch audit may reuse a looked-up object for its whole run
SOURCE = "cluster"
DEPENDENCY_POLICY = "kustomization-dependencies"  # the policy whose lookups walk dependsOn


class _Progress:
    """A one-line counter (a bar when the API server says how many remain) on stderr."""

    WIDTH = 30

    def __init__(self, label: str, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.label, self.enabled = label, enabled
        self.stream = stream or sys.stderr
        self.done = 0

    def page(self, count: int, remaining: object) -> None:
        self.done += count
        if not self.enabled:
            return
        line = f"{self.label}: {self.done}"
        if isinstance(remaining, int) and remaining > 0:
            total = self.done + remaining
            filled = self.WIDTH * self.done // total
            line = (
                f"{self.label}: [{'#' * filled}{' ' * (self.WIDTH - filled)}] {self.done}/{total}"
            )
        self.stream.write(f"\r\033[K{line}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write(f"\r\033[K{self.label}: {self.done} objects\n")
            self.stream.flush()


def _location(kind: ResourceKind, version: str, obj: JsonObject) -> ClusterObjectLocation:
    meta = obj.get("metadata") or {}
    return ClusterObjectLocation(
        SOURCE,
        0,
        f"{kind.group}/{version}" if kind.group else version,
        kind.kind,
        meta.get("namespace") or "",
        meta.get("name") or "",
        uid=meta.get("uid") or "",
    )


def _problem(message: str, *, error: bool) -> InputProblem:
    return InputProblem(SOURCE, 0, message, error)


class DependencyGraph:
    """The `dependsOn` edges of every Kustomization and HelmRelease, from one paginated LIST each.

    Answers the dependency walks of a batch audit from memory (references only, a few hundred
    bytes per Flux object) instead of one GET per object visited: thousands of requests on a
    large cluster. Namespaces the LISTs did not cover (excluded ones, others than `-n`'s) and
    kinds that could not be listed are asked through `fallback`.
    """

    def __init__(self, fallback: Lookups) -> None:
        self._fallback = fallback
        self._edges: dict[tuple[str, ObjectRef], tuple[ObjectRef, ...]] = {}
        self._appliers: dict[ObjectRef, Applier] = {}  # the listed Kustomizations' pruning
        self._covers: dict[str, Callable[[str], bool]] = {}
        # dependents by (kind, dependency), built from the edges on first use
        self._reverse: dict[tuple[str, ObjectRef], list[ObjectRef]] | None = None

    def add(self, kind: DependencyKind, obj: JsonObject) -> None:
        self._reverse = None
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name")
        if isinstance(name, str):
            self._edges[(kind, ObjectRef(namespace, name))] = tuple(depends_on(obj, namespace))
            applier = applier_of(obj) if kind == "Kustomization" else None
            if applier is not None:
                self._appliers[ObjectRef(namespace, name)] = applier

    def cover(self, kind: DependencyKind, covers: Callable[[str], bool]) -> None:
        """Every `kind` object in the namespaces `covers` accepts has been added."""
        self._covers[kind] = covers

    def __len__(self) -> int:
        return len(self._edges)

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self._fallback.deployment(namespace, name)

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        return self._fallback.persistent_volume_claim(namespace, name)

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        """Who names `ref` in its dependsOn: from the listed edges where `ref`'s namespace was
        listed completely, else as the live lookups answer (None: unknown, not judged)."""
        covers = self._covers.get(kind)
        if covers is not None and covers(ref.namespace):
            if self._reverse is None:
                self._reverse = {}
                for (edge_kind, source), targets in self._edges.items():
                    for target in targets:
                        self._reverse.setdefault((edge_kind, target), []).append(source)
            return list(self._reverse.get((kind, ref), []))
        if isinstance(self._fallback, DependentsLookup):
            return self._fallback.dependents(kind, ref)
        return None

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        if isinstance(self._fallback, NamespaceLookup):
            return self._fallback.namespace_labels(name)
        return None

    def applier(self, obj: JsonObject) -> Applier | None:
        """The Kustomization `obj`'s kustomize-controller labels name: from the listed ones
        where its namespace was listed completely, else as the live lookups answer."""
        ref = applier_labels(obj)
        if ref is None:
            return None
        covers = self._covers.get("Kustomization")
        if covers is not None and covers(ref.namespace):
            return self._appliers.get(ref)
        if isinstance(self._fallback, ApplierLookup):
            return self._fallback.applier(obj)
        return None

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        edges = self._edges.get((kind, ref))
        if edges is not None:
            return list(edges)
        covers = self._covers.get(kind)
        if covers is not None and covers(ref.namespace):
            return None  # listed that namespace completely: the object does not exist
        return self._fallback.dependencies(kind, ref)


def _list_each(
    lister: Lister,
    kind: ResourceKind,
    where: tuple[str | None, ...],
    visit: Callable[[str, JsonObject], None],
    *,
    label: str,
    progress: bool,
) -> None:
    """Hand every object of `kind` in `where` to `visit(version, obj)`, one page at a time.

    Raises NotServed, ListFailed or ApiUnreachable.
    """
    counter = _Progress(label, enabled=progress)
    try:
        version, first = lister.served_version(kind, where[0])
        for index, ns in enumerate(where):
            for page in lister.pages(kind, version, ns, first if index == 0 else None):
                items = page.get("items") or []
                for obj in items:
                    if isinstance(obj, dict):
                        visit(version, obj)
                counter.page(len(items), (page.get("metadata") or {}).get("remainingItemCount"))
    finally:
        counter.finish()


def _needs_graph(policy_set: PolicySet) -> bool:
    configured = policy_set.configured(DEPENDENCY_POLICY)
    return configured is not None and policy_set.effective_mode(configured) != "off"


def _dependency_graph(
    lister: Lister,
    fallback: Lookups,
    *,
    namespace: str | None,
    excluded: frozenset[str],
    progress: bool,
) -> DependencyGraph:
    graph = DependencyGraph(fallback)
    if namespace in excluded:
        return graph
    for kind in (KUSTOMIZATIONS, HELMRELEASES):
        dependency_kind: DependencyKind = (
            "Kustomization" if kind is KUSTOMIZATIONS else "HelmRelease"
        )

        def add(version: str, obj: JsonObject, kind: DependencyKind = dependency_kind) -> None:
            graph.add(kind, obj)

        try:
            _list_each(
                lister,
                kind,
                (namespace,),
                add,
                label=f"{kind.resource} (dependsOn)",
                progress=progress,
            )
        except NotServed:
            pass  # no such objects at all: nothing to wait for, an empty graph is complete
        except (ListFailed, ApiUnreachable):
            continue  # the main pass reports it; lookups of this kind go to the API
        if namespace is None:
            graph.cover(dependency_kind, lambda ns: ns not in excluded)
        else:
            graph.cover(dependency_kind, lambda ns: ns == namespace)
    return graph


def audit_cluster(
    api_client: ApiClient,
    *,
    policy_set: PolicySet,
    namespace: str | None,
    progress: bool,
) -> AuditReport:
    """Evaluate every object the policies target, as an UPDATE through both webhooks.

    Kinds whose CRD is not installed are skipped with a notice; a kind that cannot be listed
    (forbidden, API error) is an input error (exit 2); an unreachable API server ends the audit.
    """
    report = AuditReport()
    plan, notices = listing_plan(policy_set, namespace)
    report.problems.extend(_problem(n, error=False) for n in notices)
    excluded = policy_set.excluded_namespaces
    lister = Lister(api_client, excluded=excluded)
    lookups: Lookups = KubeLookups(api_client, ttl=LOOKUP_TTL)
    if plan and _needs_graph(policy_set):
        lookups = _dependency_graph(
            lister, lookups, namespace=namespace, excluded=excluded, progress=progress
        )

    for listing in plan:
        kind = listing.kind

        def visit(version: str, obj: JsonObject, kind: ResourceKind = kind) -> None:
            _evaluate(
                report,
                kind,
                version,
                obj,
                policy_set=policy_set,
                lookups=lookups,
            )

        try:
            _list_each(
                lister, kind, listing.namespaces, visit, label=kind.resource, progress=progress
            )
        except NotServed:
            message = f"skipped {kind.resource}: not served by this cluster (CRD not installed)"
            report.problems.append(_problem(message, error=False))
            print(f"fluxwarden: {message}", file=sys.stderr)
        except ListFailed as error:
            report.problems.append(_problem(f"cannot list {kind.resource}: {error}", error=True))
        except ApiUnreachable as error:  # refused, TLS, timeouts: no point going on
            report.problems.append(
                _problem(
                    f"cannot reach the Kubernetes API listing {kind.resource}: {error}", error=True
                )
            )
            break
    report.problems.extend(_problem(n, error=False) for n in lister.notices)
    return report


def _evaluate(
    report: AuditReport,
    kind: ResourceKind,
    version: str,
    obj: JsonObject,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    # Items of a built-in List carry no apiVersion/kind; the webhook sees them, so set them.
    obj["apiVersion"] = f"{kind.group}/{version}" if kind.group else version
    obj["kind"] = kind.kind
    meta.pop("managedFields", None)  # no policy reads them; each policy deep-copies the object
    decision = evaluate(
        obj,
        request=request_for(obj, operation="UPDATE", resource=kind.plural),
        policy_set=policy_set,
        lookups=lookups,
        webhook="all",
    )
    report.objects += 1
    location = _location(kind, version, obj)
    report.findings.extend(Finding.of(location, result) for result in decision.results)
