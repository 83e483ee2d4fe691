"""Session fixtures for the end-to-end tests: the real kube-apiserver with fluxwarden wired in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.cluster import ControlPlane
from tests.controlplane.fixtures import control_plane  # noqa: F401 - re-exported fixture
from tests.e2e.harness import (
    WebhookServer,
    ensure_namespaces,
    install_crds,
    register,
    wait_for_webhook,
)


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> ControlPlane:  # noqa: F811
    """The control plane with the generated Flux and cert-manager CRDs and the namespaces the
    policies target."""
    install_crds(control_plane)
    ensure_namespaces(control_plane, "flux-system", "cattle-fleet-system", "cattle-system", "apps")
    return control_plane


@pytest.fixture(scope="session")
def fluxwarden_server(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookServer]:
    """fluxwarden serving on loopback for the whole session."""
    server = WebhookServer(cluster, Path(tmp_path_factory.mktemp("fluxwarden"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fluxwarden(cluster: ControlPlane, fluxwarden_server: WebhookServer) -> WebhookServer:
    """The server, registered with the shipped webhook configurations for this module's tests
    (per module: a module may remove or repoint the configurations)."""
    register(cluster, fluxwarden_server)
    wait_for_webhook(cluster, fluxwarden_server)
    return fluxwarden_server
