from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from webhook.audit.kustomize_server import close_pools
from webhook.audit.render import checkout_server
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet
from webhook.server.policystore import load_policy_file

_uids = itertools.count()
_E2E_DIRS = ("e2e", "controlplane")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e and tests/controlplane needs the local control plane."""
    for item in items:
        if any(part in _E2E_DIRS for part in item.path.parts[-3:-1]):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _kustomize_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Renders go through this checkout's kustomize-server when it is built (`make setup`),
    else through the kustomize CLI; FLUXWARDEN_TEST_KUSTOMIZE=cli runs every test on the CLI
    path. Never a server from the environment. Servers a test started are stopped after it."""
    server = None if os.environ.get("FLUXWARDEN_TEST_KUSTOMIZE") == "cli" else checkout_server()
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", server or "off")
    yield
    close_pools()


IRC_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "image-reflector-controller", "namespace": "flux-system"},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [{"name": "manager", "resources": {"limits": {"memory": "1Gi"}}}]
            }
        },
    },
}


def admission_review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    dry_run: bool = False,
    api_version: str = "admission.k8s.io/v1",
    sub_resource: str | None = None,
    kind: dict[str, str] | None = None,
    resource: str | None = None,
    resource_group: str | None = None,
    old_object: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it, derived from the object."""
    source = obj or IRC_DEPLOYMENT
    group, _, version = source["apiVersion"].rpartition("/")
    meta = source.get("metadata", {})
    request: dict[str, Any] = {
        "uid": f"uid-{next(_uids)}",
        "kind": kind or {"group": group, "version": version, "kind": source["kind"]},
        "resource": {
            "group": group if resource_group is None else resource_group,
            "version": version,
            "resource": resource or source["kind"].lower() + "s",
        },
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": copy.deepcopy(obj),
        "oldObject": copy.deepcopy(old_object),
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


@pytest.fixture(scope="session")
def shipped_policies() -> PolicySet:
    return load_policy_file(SHIPPED_POLICIES)


@pytest.fixture
def review_of() -> Callable[..., dict[str, Any]]:
    return admission_review
