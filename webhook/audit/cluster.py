"""`fluxwarden audit --cluster`: the policies over the live cluster, page by page, same engine path.

Only the kinds the configured policies target are listed, and only in the namespaces those
policies look at (Deployments in flux-system, Pods in the Fleet namespaces...). Lists are
paginated (`limit` + `continue`) and each page is evaluated and dropped before the next is
fetched, so memory follows the findings, not the size of the cluster. The one thing kept for
the whole run is the dependsOn graph (references only), which answers the dependency walks
without a GET per object visited.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError

from ..engine import JsonObject, Lookups, Mode, ObjectRef, PolicySet, Request, Target, evaluate
from ..engine.model import DependencyKind
from ..engine.policies.kustomization_dependencies import depends_on
from ..engine.resources import HELMRELEASES, KUSTOMIZATIONS, LISTING_ORDER, ResourceKind
from ..lookups.kube import KubeLookups
from .findings import AuditReport, Finding, InputProblem
from .reports import ClusterObjectLocation, ReportWriteError, write_reports

__all__ = [
    "ClusterObjectLocation",
    "DependencyGraph",
    "Kind",
    "ReportWriteError",
    "audit_cluster",
    "listing_plan",
    "write_reports",
]

PAGE_SIZE = 500
LOOKUP_TTL = 300.0  # a batch audit may reuse a looked-up object for its whole run
LIST_TIMEOUT = (10, 120)  # (connect, read) seconds per page
SOURCE = "cluster"
DEPENDENCY_POLICY = "kustomization-dependencies"  # the policy whose lookups walk dependsOn

Scope = frozenset[str] | None  # namespaces to list; None: every namespace


Kind = ResourceKind  # the name the lister and the benchmarks use


def _union(first: Scope, second: Scope) -> Scope:
    return None if first is None or second is None else first | second


def listing_plan(
    policy_set: PolicySet, namespace: str | None
) -> tuple[list[tuple[Kind, list[str | None]]], list[str]]:
    """(kind, namespaces to list it in — None meaning all at once) in a fixed order, and notices.

    Excluded namespaces and namespaces no policy looks at are never listed.
    """
    scopes: dict[Kind, Scope] = {}
    notices = []
    for configured in policy_set.policies:
        scope = configured.policy.target_namespaces(configured.params)
        for kind in configured.policy.targets:
            scopes[kind] = _union(scopes[kind], scope) if kind in scopes else scope
    excluded = policy_set.excluded_namespaces
    plan: list[tuple[Kind, list[str | None]]] = []
    for kind in LISTING_ORDER:
        if kind not in scopes:
            continue
        scope = scopes[kind]
        where: list[str | None]
        if namespace is not None:
            where = [namespace] if scope is None or namespace in scope else []
        elif scope is None:
            where = [None]
        else:
            where = [*sorted(scope)]
        where = [ns for ns in where if ns not in excluded]
        if where:
            plan.append((kind, where))
    if namespace is not None and namespace in excluded:
        notices.append(f"namespace {namespace} is excluded by the policy set, nothing audited")
    return plan, notices


class NotServed(Exception):
    """None of a kind's versions is served (its CRD is not installed)."""


class _Lister:
    """Paginated LISTs returning plain JSON, exactly as the API server stores the objects."""

    def __init__(self, api_client: client.ApiClient, *, excluded: frozenset[str]) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._excluded = excluded
        self.notices: list[str] = []

    def _page(
        self, kind: Kind, version: str, namespace: str | None, token: str | None
    ) -> JsonObject:
        options: dict[str, Any] = {
            "limit": PAGE_SIZE,
            "_preload_content": False,
            "_request_timeout": LIST_TIMEOUT,
        }
        if token:
            options["_continue"] = token
        if namespace is None and self._excluded:
            options["field_selector"] = ",".join(
                f"metadata.namespace!={ns}" for ns in sorted(self._excluded)
            )
        response: Any
        if not kind.group:  # the core group lives under /api, not /apis
            if namespace is None:
                response = self._core.list_pod_for_all_namespaces(**options)
            else:
                response = self._core.list_namespaced_pod(namespace, **options)
        elif namespace is None:
            response = self._custom.list_cluster_custom_object(
                kind.group, version, kind.plural, **options
            )
        else:
            response = self._custom.list_namespaced_custom_object(
                kind.group, version, namespace, kind.plural, **options
            )
        body: JsonObject = json.loads(response.data)
        return body

    def served_version(self, kind: Kind, namespace: str | None) -> tuple[str, JsonObject]:
        """The first served version and its first page. Raises NotServed."""
        for version in kind.versions:
            try:
                return version, self._page(kind, version, namespace, None)
            except ApiException as error:
                if error.status != 404:
                    raise
        raise NotServed(kind.resource)

    def pages(
        self, kind: Kind, version: str, namespace: str | None, first: JsonObject | None = None
    ) -> Iterator[JsonObject]:
        page = first if first is not None else self._page(kind, version, namespace, None)
        while True:
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            try:
                page = self._page(kind, version, namespace, token)
            except ApiException as error:
                page = self._resume(error, kind, version, namespace)

    def _resume(
        self, error: ApiException, kind: Kind, version: str, namespace: str | None
    ) -> JsonObject:
        """An expired continue token (410): go on from the next key in a newer snapshot."""
        if error.status != 410:
            raise error
        try:
            token = (json.loads(error.body or "{}").get("metadata") or {}).get("continue")
        except ValueError:
            token = None
        if not token:
            raise error
        self.notices.append(
            f"listing {kind.resource} took longer than the API server keeps a snapshot: "
            "continued from a newer one, objects changed meanwhile may be missed"
        )
        return self._page(kind, version, namespace, token)


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


def _location(kind: Kind, version: str, obj: JsonObject) -> ClusterObjectLocation:
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
        self._covers: dict[str, Callable[[str], bool]] = {}

    def add(self, kind: DependencyKind, obj: JsonObject) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name")
        if isinstance(name, str):
            self._edges[(kind, ObjectRef(namespace, name))] = tuple(depends_on(obj, namespace))

    def cover(self, kind: DependencyKind, covers: Callable[[str], bool]) -> None:
        """Every `kind` object in the namespaces `covers` accepts has been added."""
        self._covers[kind] = covers

    def __len__(self) -> int:
        return len(self._edges)

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self._fallback.deployment(namespace, name)

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        edges = self._edges.get((kind, ref))
        if edges is not None:
            return list(edges)
        covers = self._covers.get(kind)
        if covers is not None and covers(ref.namespace):
            return None  # listed that namespace completely: the object does not exist
        return self._fallback.dependencies(kind, ref)


def _list_each(
    lister: _Lister,
    kind: Kind,
    where: list[str | None],
    visit: Callable[[str, JsonObject], None],
    *,
    label: str,
    progress: bool,
) -> None:
    """Hand every object of `kind` in `where` to `visit(version, obj)`, one page at a time.

    Raises NotServed, ApiException, or a transport error.
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


def _needs_graph(policy_set: PolicySet, mode_override: Mode | None) -> bool:
    return any(
        p.policy.name == DEPENDENCY_POLICY and policy_set.effective_mode(p, mode_override) != "off"
        for p in policy_set.policies
    )


def _dependency_graph(
    lister: _Lister,
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
                [namespace],
                add,
                label=f"{kind.resource} (dependsOn)",
                progress=progress,
            )
        except NotServed:
            pass  # no such objects at all: nothing to wait for, an empty graph is complete
        except (ApiException, TransportError, OSError):
            continue  # the main pass reports it; lookups of this kind go to the API
        if namespace is None:
            graph.cover(dependency_kind, lambda ns: ns not in excluded)
        else:
            graph.cover(dependency_kind, lambda ns: ns == namespace)
    return graph


def audit_cluster(
    api_client: client.ApiClient,
    *,
    policy_set: PolicySet,
    namespace: str | None,
    mode_override: Mode | None,
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
    lister = _Lister(api_client, excluded=excluded)
    lookups: Lookups = KubeLookups(api_client, ttl=LOOKUP_TTL)
    if plan and _needs_graph(policy_set, mode_override):
        lookups = _dependency_graph(
            lister, lookups, namespace=namespace, excluded=excluded, progress=progress
        )

    for kind, where in plan:

        def visit(version: str, obj: JsonObject, kind: Kind = kind) -> None:
            _evaluate(
                report,
                kind,
                version,
                obj,
                policy_set=policy_set,
                lookups=lookups,
                mode_override=mode_override,
                excluded=excluded,
            )

        try:
            _list_each(lister, kind, where, visit, label=kind.resource, progress=progress)
        except NotServed:
            message = f"skipped {kind.resource}: not served by this cluster (CRD not installed)"
            report.problems.append(_problem(message, error=False))
            print(f"fluxwarden: {message}", file=sys.stderr)
        except ApiException as error:
            report.problems.append(
                _problem(f"cannot list {kind.resource}: {error.status} {error.reason}", error=True)
            )
        except (TransportError, OSError) as error:  # refused, TLS, timeouts: no point going on
            report.problems.append(
                _problem(
                    f"cannot reach the Kubernetes API listing {kind.resource}: "
                    f"{type(error).__name__}: {error}",
                    error=True,
                )
            )
            break
    report.problems.extend(_problem(n, error=False) for n in lister.notices)
    return report


def _evaluate(
    report: AuditReport,
    kind: Kind,
    version: str,
    obj: JsonObject,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
    mode_override: Mode | None,
    excluded: frozenset[str],
) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or meta.get("namespace") in excluded:
        return
    # Items of a built-in List carry no apiVersion/kind; the webhook sees them, so set them.
    obj["apiVersion"] = f"{kind.group}/{version}" if kind.group else version
    obj["kind"] = kind.kind
    meta.pop("managedFields", None)  # no policy reads them; each policy deep-copies the object
    target = Target(
        group=kind.group,
        version=version,
        kind=kind.kind,
        resource=kind.plural,
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
    )
    decision = evaluate(
        obj,
        request=Request(target=target, operation="UPDATE"),
        policy_set=policy_set,
        lookups=lookups,
        webhook="all",
        mode_override=mode_override,
    )
    report.objects += 1
    location = _location(kind, version, obj)
    report.findings.extend(Finding.of(location, result) for result in decision.results)
