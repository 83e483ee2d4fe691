"""Lookups against the live cluster through the `kubernetes` client: cached, bounded in time.

The only module that imports `kubernetes` at request time. A slow or unreachable API server turns
into `LookupUnavailable` (a warning), never a hang or a denial; after a failure the API is not
asked again for `backoff` seconds so a dead API server does not slow every admission request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..engine import JsonObject, LookupUnavailable, ObjectRef
from ..engine.model import DependencyKind
from ..engine.policies.kustomization_dependencies import depends_on

T = TypeVar("T")

# The versions to list, newest first: older clusters may serve only the beta version.
DEPENDENCY_APIS: dict[DependencyKind, tuple[str, tuple[str, ...], str]] = {
    "Kustomization": ("kustomize.toolkit.fluxcd.io", ("v1", "v1beta2"), "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", ("v2", "v2beta2"), "helmreleases"),
}


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (like kubectl)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return client.ApiClient(configuration)


class KubeLookups:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        ttl: float = 30.0,
        timeout: float = 2.0,
        backoff: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._ttl, self._timeout, self._backoff, self._clock = ttl, timeout, backoff, clock
        self._cache: dict[object, tuple[float, Any]] = {}
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _cached(self, key: object, fetch: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]  # type: ignore[no-any-return]
            if now < self._down_until:
                raise LookupUnavailable("Kubernetes API unavailable (recent failure, backing off)")
        try:
            value = fetch()
        except ApiException as error:
            self._mark_down()
            raise LookupUnavailable(
                f"Kubernetes API error {error.status}: {error.reason}"
            ) from error
        except Exception as error:  # urllib3 timeouts, refused connections, TLS errors
            self._mark_down()
            raise LookupUnavailable(
                f"Kubernetes API unreachable: {type(error).__name__}"
            ) from error
        with self._lock:
            self._cache[key] = (self._clock(), value)
        return value

    def _mark_down(self) -> None:
        with self._lock:
            self._down_until = self._clock() + self._backoff

    def deployment_tolerations(self, namespace: str, name: str) -> list[JsonObject] | None:
        def fetch() -> list[JsonObject] | None:
            try:
                deployment = self._apps.read_namespaced_deployment(
                    name, namespace, _request_timeout=self._timeout
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            pod_spec = deployment.spec.template.spec if deployment.spec else None
            tolerations = (pod_spec.tolerations if pod_spec else None) or []
            api = self._apps.api_client
            return [api.sanitize_for_serialization(t) for t in tolerations]

        return self._cached(("tolerations", namespace, name), fetch)

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        return self._cached(("graph", kind), lambda: self._graph(kind)).get(ref)

    def _graph(self, kind: DependencyKind) -> dict[ObjectRef, list[ObjectRef]]:
        """Every object of the kind with its dependsOn, from one cluster-wide list."""
        group, versions, plural = DEPENDENCY_APIS[kind]
        for version in versions:
            try:
                listing = self._list_all(group, version, plural)
            except ApiException as error:
                if error.status == 404:
                    continue  # this version (or the CRD) is not served
                raise
            graph: dict[ObjectRef, list[ObjectRef]] = {}
            for item in listing:
                meta = item.get("metadata") or {}
                namespace = meta.get("namespace", "")
                graph[ObjectRef(namespace, meta.get("name", ""))] = depends_on(item, namespace)
            return graph
        return {}

    def _list_all(self, group: str, version: str, plural: str) -> list[JsonObject]:
        items: list[JsonObject] = []
        token: str | None = None
        while True:
            page: Any = self._custom.list_cluster_custom_object(
                group, version, plural, limit=500, _continue=token, _request_timeout=self._timeout
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
