"""The webhook side of the differential tests, shared by the native and hybrid modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.cluster import ControlPlane, default_bin_dir
from tests.e2e.harness import serving
from tests.e2e.native.differential import prepare


@pytest.fixture(scope="package")
def webhook_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The shipped install: fluxwarden behind the generated webhook configurations."""
    cluster = ControlPlane(default_bin_dir())
    cluster.start()
    try:
        prepare(cluster)
        with serving(cluster, Path(tmp_path_factory.mktemp("webhook"))):
            yield cluster
    finally:
        cluster.stop()
