"""All Kubernetes API I/O: client set-up, admission-time lookups, the cluster lister and the
report store. The only package that imports the `kubernetes` client (an import-linter contract)."""

from kubernetes.client import ApiClient

__all__ = ["ApiClient"]
