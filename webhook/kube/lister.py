"""Paginated LISTs by each resource's real API path, returning plain JSON as the API stores it.

Errors leave this module as its own exceptions, so the cluster audit needs no Kubernetes types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError

from ..engine import JsonObject
from ..engine.resources import ResourceKind

PAGE_SIZE = 500
LIST_TIMEOUT = (10, 120)  # (connect, read) seconds per page


class NotServed(Exception):
    """None of a kind's versions is served (its CRD is not installed)."""


class ListFailed(Exception):
    """The API server refused a list (forbidden, server error): `status` and `reason` say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class ApiUnreachable(Exception):
    """Connection refused, TLS failure, timeout: no point listing anything else."""


class Lister:
    """LISTs of one resource at a time, page by page (`limit` + `continue`)."""

    def __init__(
        self, api_client: client.ApiClient, *, excluded: frozenset[str], page_size: int = PAGE_SIZE
    ) -> None:
        self._api = api_client
        self._excluded = excluded
        self._page_size = page_size
        self.notices: list[str] = []

    def _page(
        self, kind: ResourceKind, version: str, namespace: str | None, token: str | None
    ) -> JsonObject:
        query: list[tuple[str, Any]] = [("limit", self._page_size)]
        if token:
            query.append(("continue", token))
        if namespace is None and self._excluded:
            # A Namespace has no namespace: an excluded namespace's own object is left out, as
            # the webhooks' namespaceSelector leaves it out.
            field = "metadata.namespace" if kind.namespaced else "metadata.name"
            selector = ",".join(f"{field}!={ns}" for ns in sorted(self._excluded))
            query.append(("fieldSelector", selector))
        method, url, headers, _, _ = self._api.param_serialize(
            "GET",
            kind.list_path(version, namespace),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method, url, header_params=headers, _request_timeout=LIST_TIMEOUT
            )
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except ApiException as error:
            if error.status:
                raise
            raise ApiUnreachable(str(error.reason)) from error  # status 0: TLS and the like
        except (TransportError, OSError) as error:
            raise ApiUnreachable(f"{type(error).__name__}: {error}") from error
        if not 200 <= response.status <= 299:
            raise ApiException(
                status=response.status, reason=response.reason, body=data.decode(errors="replace")
            )
        body: JsonObject = json.loads(data)
        return body

    def served_version(self, kind: ResourceKind, namespace: str | None) -> tuple[str, JsonObject]:
        """The first served version and its first page. Raises NotServed, ListFailed."""
        for version in kind.versions:
            try:
                return version, self._page(kind, version, namespace, None)
            except ApiException as error:
                if error.status != 404:
                    raise ListFailed(error.status or 0, str(error.reason)) from error
        raise NotServed(kind.resource)

    def pages(
        self,
        kind: ResourceKind,
        version: str,
        namespace: str | None,
        first: JsonObject | None = None,
    ) -> Iterator[JsonObject]:
        """Every page of `kind` in `namespace` (None: all). Raises ListFailed, ApiUnreachable."""
        try:
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
        except ApiException as error:
            raise ListFailed(error.status or 0, str(error.reason)) from error

    def _resume(
        self, error: ApiException, kind: ResourceKind, version: str, namespace: str | None
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
