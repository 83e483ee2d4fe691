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
from ..engine.resources import HELMRELEASES, KUSTOMIZATIONS, ResourceKind

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
    """In-cluster config when running in a pod, else the kubeconfig (like kubectl).

    `retries=0` for admission-time lookups: urllib3 retries a timed-out request three times
    by default, which would turn a 2 s lookup timeout into 8 s, past the webhook's 5 s.
    """
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


class KubeLookups:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        ttl: float = 1.0,
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
            cause = getattr(error, "reason", None) or error  # urllib3's MaxRetryError wraps it
            raise LookupUnavailable(
                f"Kubernetes API unreachable: {type(cause).__name__}"
            ) from error
        with self._lock:
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()  # crude but bounded: a full cache only costs a few GETs
            self._cache[key] = (self._clock(), value)
        return value

    def _mark_down(self) -> None:
        with self._lock:
            self._down_until = self._clock() + self._backoff

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        def fetch() -> JsonObject | None:
            try:
                found: Any = self._apps.read_namespaced_deployment(
                    name, namespace, _request_timeout=self._timeout
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            plain: JsonObject = self._apps.api_client.sanitize_for_serialization(found)
            return {"metadata": plain.get("metadata", {}), "spec": plain.get("spec", {})}

        return self._cached(("deployment", namespace, name), fetch)

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        # One GET per visited object, cached only briefly: a graph cached for long would miss an
        # object created a moment ago (a missed cycle) or keep an edge already removed (a false
        # denial). Dependency walks are short, and the short cache absorbs `kubectl apply` bursts.
        return self._cached(("dependsOn", kind, ref), lambda: self._depends_on(kind, ref))

    def _depends_on(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        api = DEPENDENCY_APIS[kind]
        for version in api.versions:
            try:
                obj: Any = self._custom.get_namespaced_custom_object(
                    api.group,
                    version,
                    ref.namespace,
                    api.plural,
                    ref.name,
                    _request_timeout=self._timeout,
                )
            except ApiException as error:
                if error.status == 404:
                    continue  # not found, or this version is not served: try the next
                raise
            return depends_on(obj, ref.namespace)
        return None
