"""Self-test of the local control plane: start, use, stop, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .cluster import (
    BINARIES,
    NODE_BINARIES,
    SCHEDULING_BINARIES,
    ControlPlane,
    default_bin_dir,
    k8s_version,
    missing_binaries,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_control_plane_lifecycle() -> None:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {default_bin_dir()}: run `make controlplane`")

    with ControlPlane() as cp:
        assert cp.server_url.startswith("https://127.0.0.1:")
        assert cp.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
        pids = [p.popen.pid for p in (cp._etcd, cp._apiserver) if p is not None]
        workdir = cp.workdir

        version = json.loads(cp.kubectl("version", "-o", "json").stdout)
        assert version["clientVersion"]["gitVersion"] == k8s_version()
        assert version["serverVersion"]["gitVersion"] == k8s_version()

        namespaces = cp.kubectl("get", "ns", "-o", "name").stdout.split()
        assert "namespace/default" in namespaces
        assert "namespace/kube-system" in namespaces

        cp.kubectl("create", "configmap", "x", "--from-literal=a=b")
        data = json.loads(cp.kubectl("get", "configmap", "x", "-o", "json").stdout)["data"]
        assert data == {"a": "b"}

        assert cp.kubectl("get", "configmap", "nope", check=False).returncode != 0

    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    assert not workdir.exists()


BUILD = Path(__file__).resolve().parent / "build.sh"


def _build_without_go(cache: Path) -> subprocess.CompletedProcess[str]:
    """build.sh with `go` off the PATH: it can only succeed without compiling anything."""
    no_go = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "go").exists()
    )
    env = {**os.environ, "FLUXWARDEN_CACHE": str(cache), "PATH": no_go}
    return subprocess.run([str(BUILD)], capture_output=True, text=True, env=env, check=False)


@pytest.mark.e2e
def test_the_build_check_rebuilds_nothing_that_exists_and_only_what_is_missing(
    tmp_path: Path,
) -> None:
    missing = missing_binaries(node=True)
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {default_bin_dir()}: run `make controlplane`")
    cached = tmp_path / "controlplane" / k8s_version()
    cached.mkdir(parents=True)
    for name in (*BINARIES, *SCHEDULING_BINARIES, *NODE_BINARIES):
        (cached / name).symlink_to(default_bin_dir() / name)
    complete = _build_without_go(tmp_path)
    assert complete.returncode == 0, complete.stderr
    assert complete.stdout.strip() == str(cached)
    assert "already built" in complete.stderr
    # Negative control: with kube-scheduler gone the same check goes on to build (and, without
    # `go`, fails saying so) - the pass above is not a script that never builds.
    (cached / "kube-scheduler").unlink()
    partial = _build_without_go(tmp_path)
    assert partial.returncode != 0
    assert "'go' not found" in partial.stderr
