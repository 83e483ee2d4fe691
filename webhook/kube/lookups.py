"""Lookups against the live cluster: cached, bounded in time.

The only module that reads the API at request time, through an `ApiReader` (`rest.py`: plain
urllib3 for `fluxwarden serve`, or the `kubernetes` client the cluster audit already has). A slow
or unreachable API server turns into `LookupUnavailable` (a warning), never a hang or a denial;
after a failure the API is not asked again for `backoff` seconds so a dead API server does not
slow every admission request. Each admission request has a deadline and a number of API calls
shared by all its lookups (`for_request`); identical lookups of concurrent requests are made
once; dependsOn graphs are read one namespace list at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..engine import JsonObject, LookupUnavailable, ObjectRef
from ..engine.model import Applier, DependencyKind, applier_labels, applier_of
from ..engine.policies.kustomization_dependencies import depends_on
from ..engine.resources import HELMRELEASES, KUSTOMIZATIONS, ResourceKind
from .rest import ApiError, ApiReader, ClientReader, api_path

if TYPE_CHECKING:
    from kubernetes import client

T = TypeVar("T")
MAX_CACHE_ENTRIES = 4096

# The versions to list, newest first: older clusters may serve only the beta version.
DEPENDENCY_APIS: dict[DependencyKind, ResourceKind] = {
    "Kustomization": KUSTOMIZATIONS,
    "HelmRelease": HELMRELEASES,
}


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, *, retries: int | None = None
) -> client.ApiClient:
    """The `kubernetes` client (the cluster audit, `review`): in-cluster config when running in
    a pod, else the kubeconfig (like kubectl). `fluxwarden serve` reads with `rest.load_reader`.

    `retries=0` for admission-time lookups: urllib3 retries a timed-out request three times
    by default, which would turn a 2 s lookup timeout into 8 s, past the webhook's 5 s.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    loaded = False
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            loaded = True
        except config.ConfigException:
            pass
    if not loaded:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    configuration.retries = retries
    return client.ApiClient(configuration)


# Per admission request: API calls at most (a list page or a GET each). With namespace listing a
# dependsOn graph costs one call per namespace it spans, so this is generous.
MAX_CALLS_PER_REQUEST = 16
LIST_PAGE = 500
MIN_TIMEOUT = 0.05  # less time than this left: do not start a call


class Budget:
    """One admission request's share of the API: a deadline and a number of calls."""

    def __init__(
        self, deadline: float, *, max_calls: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.deadline, self.max_calls, self._clock = deadline, max_calls, clock
        self.started = clock()
        self.calls = 0

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def spend(self) -> float:
        """Take one call; the seconds it may last. LookupUnavailable when nothing is left."""
        left = self.remaining()
        if left < MIN_TIMEOUT:
            raise LookupUnavailable("request deadline reached before the Kubernetes API answered")
        if self.calls >= self.max_calls:
            raise LookupUnavailable(
                f"more than {self.max_calls} Kubernetes API calls needed for one request"
            )
        self.calls += 1
        return left


class _Flight:
    """One fetch in progress; identical concurrent lookups wait for it instead of asking again."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.value: Any = None
        self.error: LookupUnavailable | None = None


class _Forbidden(Exception):
    """Listing is not allowed (RBAC): look objects up one by one instead."""


class KubeLookups:
    """Shared by all requests of a process: cache, back-off, coalescing of identical lookups.

    `for_request(deadline)` gives the view one admission request uses: every lookup it makes
    shares that deadline and `max_calls`, so a request is answered in time whatever the API does.
    """

    def __init__(
        self,
        api: ApiReader | client.ApiClient,
        *,
        ttl: float = 1.0,
        timeout: float = 2.0,
        backoff: float = 10.0,
        max_calls: int = MAX_CALLS_PER_REQUEST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # An `ApiReader`, or a kubernetes ApiClient (the cluster audit's) read through one.
        self._api: ApiReader = api if hasattr(api, "get") else ClientReader(api)
        self._ttl, self._timeout, self._backoff, self._clock = ttl, timeout, backoff, clock
        self._max_calls = max_calls
        self._cache: dict[object, tuple[float, Any]] = {}
        self._flights: dict[object, _Flight] = {}
        self._down_until = 0.0
        self._list_forbidden_until = 0.0
        self._lock = threading.Lock()
        # (kind, namespace) -> (the listed graph, name -> names whose dependsOn names it), so
        # that every request within the list's TTL reads its dependents from one reversal.
        self._reversed: dict[tuple[str, str], tuple[object, dict[str, list[str]]]] = {}

    def for_request(self, deadline: float) -> RequestLookups:
        return RequestLookups(self, Budget(deadline, max_calls=self._max_calls, clock=self._clock))

    def _budget(self) -> Budget:
        # Not a request's: each call may take the whole timeout.
        deadline = self._clock() + 2 * self._timeout
        return Budget(deadline, max_calls=self._max_calls, clock=self._clock)

    # The Lookups protocol, for callers without a request (each call gets the plain timeout).
    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self.deployment_within(namespace, name, self._budget())

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return self.dependencies_within(kind, ref, self._budget())

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        return self.persistent_volume_claim_within(namespace, name, self._budget())

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return self.dependents_within(kind, ref, self._budget())

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        return self.namespace_labels_within(name, self._budget())

    def applier(self, obj: JsonObject) -> Applier | None:
        return self.applier_within(obj, self._budget())

    def _cached(
        self,
        key: object,
        fetch: Callable[[float], T],
        budget: Budget,
        *,
        fresher_than: float | None = None,
    ) -> T:
        """`fetch`'s answer, from the cache while it is younger than the TTL (and, with
        `fresher_than`, fetched at or after that time), else fetched once for all callers."""
        now = self._clock()
        oldest = now - self._ttl if fresher_than is None else max(now - self._ttl, fresher_than)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] >= oldest and now - hit[0] < self._ttl:
                return hit[1]  # type: ignore[no-any-return]
            if now < self._down_until:
                raise LookupUnavailable("Kubernetes API unavailable (recent failure, backing off)")
            flight = self._flights.get(key)
            if flight is not None and flight.started < oldest:
                flight = None  # began too early to see what this caller needs: fetch anew
        if flight is not None:  # the same lookup is in progress for another request: share it
            if not flight.done.wait(max(budget.remaining(), 0)):
                raise LookupUnavailable("request deadline reached waiting for the Kubernetes API")
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[no-any-return]
        left = budget.spend()
        timeout = min(self._timeout, left)
        flight = _Flight(self._clock())
        with self._lock:
            self._flights[key] = flight
        try:
            flight.value = self._fetch(fetch, timeout, cut_short=left < self._timeout)
        except LookupUnavailable as error:
            flight.error = error
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()
        with self._lock:
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()  # crude but bounded: a full cache only costs a few GETs
            # Stamped with when the fetch began: the answer may predate anything created since.
            # A fetch overtaken by a fresher one (`fresher_than`) leaves the fresher answer.
            current = self._cache.get(key)
            if current is None or current[0] <= flight.started:
                self._cache[key] = (flight.started, flight.value)
        return flight.value  # type: ignore[no-any-return]

    def _fetch(self, fetch: Callable[[float], T], timeout: float, *, cut_short: bool) -> T:
        try:
            return fetch(timeout)
        except (LookupUnavailable, _Forbidden):
            raise
        except ApiError as error:
            self._mark_down()
            raise LookupUnavailable(
                f"Kubernetes API error {error.status}: {error.reason}"
            ) from error
        except Exception as error:  # urllib3 timeouts, refused connections, TLS errors
            # A call cut short by this request's deadline says nothing about the API's health.
            if cut_short:
                raise LookupUnavailable(
                    "request deadline reached before the Kubernetes API answered"
                ) from error
            self._mark_down()
            cause = getattr(error, "reason", None) or error  # urllib3's MaxRetryError wraps it
            raise LookupUnavailable(
                f"Kubernetes API unreachable: {type(cause).__name__}"
            ) from error

    def _mark_down(self) -> None:
        with self._lock:
            self._down_until = self._clock() + self._backoff

    def _get(self, path: str, timeout: float) -> Any:
        """The object at `path`, None when it does not exist."""
        try:
            return self._api.get(path, timeout=timeout)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def deployment_within(self, namespace: str, name: str, budget: Budget) -> JsonObject | None:
        path = api_path("apis", "apps", "v1", "namespaces", namespace, "deployments", name)

        def fetch(timeout: float) -> JsonObject | None:
            found = self._get(path, timeout)
            if not isinstance(found, dict):
                return None
            return {"metadata": found.get("metadata") or {}, "spec": found.get("spec") or {}}

        return self._cached(("deployment", namespace, name), fetch, budget)

    def persistent_volume_claim_within(
        self, namespace: str, name: str, budget: Budget
    ) -> JsonObject | None:
        """One GET (the generated ClusterRole grants exactly that on the claim's name)."""
        path = api_path("api", "v1", "namespaces", namespace, "persistentvolumeclaims", name)

        def fetch(timeout: float) -> JsonObject | None:
            found = self._get(path, timeout)
            if not isinstance(found, dict):
                return None
            return {key: found.get(key) or {} for key in ("metadata", "spec", "status")}

        return self._cached(("persistentvolumeclaim", namespace, name), fetch, budget)

    def dependencies_within(
        self, kind: DependencyKind, ref: ObjectRef, budget: Budget
    ) -> list[ObjectRef] | None:
        # Cached only briefly: a graph cached for long would miss an object created a moment
        # ago (a missed cycle) or keep an edge already removed (a false denial).
        # One list of the namespace's objects answers every name in it (a 199-name dependsOn
        # is one call, not 199); where RBAC does not allow listing, one GET per object.
        # A name the list lacks is read on its own, in an answer no older than this request:
        # Flux applies a Kustomization and its dependencies moments apart, within one TTL, and
        # one GET costs far less than listing a namespace of hundreds again.
        one_key: object = ("dependsOn", kind, ref)

        def got(timeout: float) -> list[ObjectRef] | None:
            return self._depends_on(kind, ref, timeout)

        if self._clock() >= self._list_forbidden_until:
            try:
                version, graph = self._cached(
                    ("dependsOn-list", kind, ref.namespace),
                    lambda timeout: self._list_depends_on(kind, ref.namespace, budget, timeout),
                    budget,
                )
                if ref.name in graph:
                    return graph[ref.name]
                # The version that listed serves every object of the kind: one GET, not one
                # per version (a missing name is read on every request that names it).
                versions = (version,) if version else ()
                return self._cached(
                    one_key,
                    lambda timeout: self._depends_on(kind, ref, timeout, versions=versions),
                    budget,
                    fresher_than=budget.started,
                )
            except _Forbidden:
                with self._lock:
                    self._list_forbidden_until = self._clock() + 300
        found = self._cached(one_key, got, budget)
        if found is None:
            found = self._cached(one_key, got, budget, fresher_than=budget.started)
        return found

    def namespace_labels_within(self, name: str, budget: Budget) -> dict[str, str] | None:
        """One GET of the Namespace, cached like the other named reads."""
        path = api_path("api", "v1", "namespaces", name)

        def fetch(timeout: float) -> dict[str, str] | None:
            found = self._get(path, timeout)
            if not isinstance(found, dict):
                return None
            labels = (found.get("metadata") or {}).get("labels")
            return {str(k): str(v) for k, v in (labels or {}).items()}

        return self._cached(("namespace", name), fetch, budget)

    def applier_within(self, obj: JsonObject, budget: Budget) -> Applier | None:
        """The Flux Kustomization kustomize-controller's labels on `obj` name: one GET of it,
        cached like the other named reads (None: unlabelled, or it does not exist)."""
        ref = applier_labels(obj)
        if ref is None:
            return None
        api = KUSTOMIZATIONS

        def fetch(timeout: float) -> Applier | None:
            for version in api.versions:  # an older cluster may serve only a beta
                path = api_path(
                    "apis", api.group, version, "namespaces", ref.namespace, api.plural, ref.name
                )
                found = self._get(path, timeout)
                if isinstance(found, dict):
                    return applier_of(found)
            return None

        return self._cached(("applier", ref.namespace, ref.name), fetch, budget)

    def dependents_within(
        self, kind: DependencyKind, ref: ObjectRef, budget: Budget
    ) -> list[ObjectRef] | None:
        """The objects of `ref`'s namespace whose dependsOn names it, from the same cached list
        of the namespace the dependency walks read (dependents in other namespaces are not
        listed: None, unknown, when the namespace cannot be listed)."""
        if self._clock() < self._list_forbidden_until:
            return None
        try:
            _, graph = self._cached(
                ("dependsOn-list", kind, ref.namespace),
                lambda timeout: self._list_depends_on(kind, ref.namespace, budget, timeout),
                budget,
            )
        except _Forbidden:
            with self._lock:
                self._list_forbidden_until = self._clock() + 300
            return None
        key = (kind, ref.namespace)
        with self._lock:
            known = self._reversed.get(key)
        if known is None or known[0] is not graph:
            reverse: dict[str, list[str]] = {}
            for name, edges in graph.items():
                for edge in edges:
                    if edge.namespace == ref.namespace:
                        reverse.setdefault(edge.name, []).append(name)
            known = (graph, reverse)
            with self._lock:
                if len(self._reversed) >= MAX_CACHE_ENTRIES:
                    self._reversed.clear()
                self._reversed[key] = known
        return [ObjectRef(ref.namespace, name) for name in known[1].get(ref.name, ())]

    def _list_depends_on(
        self, kind: DependencyKind, namespace: str, budget: Budget, timeout: float
    ) -> tuple[str, dict[str, list[ObjectRef]]]:
        """(the served version that answered, name -> dependsOn); ("", {}) when none is served."""
        api = DEPENDENCY_APIS[kind]
        for version in api.versions:
            path = api_path("apis", api.group, version, "namespaces", namespace, api.plural)
            graph: dict[str, list[ObjectRef]] = {}
            query = {"limit": str(LIST_PAGE)}
            try:
                while True:
                    page: Any = self._api.get(path, query=query, timeout=timeout)
                    for obj in page.get("items") or []:
                        name = (obj.get("metadata") or {}).get("name")
                        if isinstance(name, str):
                            graph[name] = depends_on(obj, namespace)
                    token = (page.get("metadata") or {}).get("continue")
                    if not token:
                        return version, graph
                    query = {"limit": str(LIST_PAGE), "continue": token}
                    timeout = min(self._timeout, budget.spend())  # each page is a call
            except ApiError as error:
                if error.status == 404:
                    continue  # this version is not served: try the next
                if error.status == 403:
                    raise _Forbidden from error
                raise
        return "", {}

    def _depends_on(
        self,
        kind: DependencyKind,
        ref: ObjectRef,
        timeout: float,
        *,
        versions: tuple[str, ...] | None = None,
    ) -> list[ObjectRef] | None:
        api = DEPENDENCY_APIS[kind]
        for version in api.versions if versions is None else versions:
            path = api_path(
                "apis", api.group, version, "namespaces", ref.namespace, api.plural, ref.name
            )
            obj = self._get(path, timeout)  # None: not found, or this version is not served
            if isinstance(obj, dict):
                return depends_on(obj, ref.namespace)
        return None


class RequestLookups:
    """The lookups of one admission request: all share its `Budget`."""

    def __init__(self, shared: KubeLookups, budget: Budget) -> None:
        self.shared, self.budget = shared, budget

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self.shared.deployment_within(namespace, name, self.budget)

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return self.shared.dependencies_within(kind, ref, self.budget)

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        return self.shared.persistent_volume_claim_within(namespace, name, self.budget)

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return self.shared.dependents_within(kind, ref, self.budget)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        return self.shared.namespace_labels_within(name, self.budget)

    def applier(self, obj: JsonObject) -> Applier | None:
        return self.shared.applier_within(obj, self.budget)
