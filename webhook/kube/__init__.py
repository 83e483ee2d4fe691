"""All Kubernetes API I/O: client set-up, admission-time lookups, the cluster lister and the
report store. The only package that imports the `kubernetes` client (an import-linter contract).

The client is imported only where it is used (the cluster audit, reports, `ApiClient` below):
`fluxwarden serve` reads the API with `rest.py` and never loads it (~22 MiB per pod)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["ApiClient"]


def __getattr__(name: str) -> Any:
    if name == "ApiClient":
        from kubernetes.client import ApiClient

        return ApiClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
