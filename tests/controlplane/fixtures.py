"""pytest fixtures for the local control plane.

Import into ``tests/conftest.py``::

    from tests.controlplane.fixtures import control_plane  # noqa: F401
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from .cluster import ControlPlane, ControlPlaneError, default_bin_dir, missing_binaries


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver shared by the whole session.

    Fails (never skips) when the binaries are missing: run `make controlplane`.
    """
    bin_dir = default_bin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        pytest.fail(
            f"control-plane binaries missing ({', '.join(missing)} in {bin_dir}): "
            "run `make controlplane`",
            pytrace=False,
        )
    # A SIGTERM to pytest (e.g. a CI timeout) would otherwise skip teardown;
    # turn it into KeyboardInterrupt so pytest finalizes fixtures.  The
    # children also get SIGKILL from the kernel if this process dies.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    cp = ControlPlane(bin_dir)
    try:
        try:
            cp.start()
        except ControlPlaneError as err:
            pytest.fail(f"control plane failed to start: {err}", pytrace=False)
        yield cp
    finally:
        cp.stop()
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
