"""Self-test of the local control plane: start, use, stop, nothing left behind."""

from __future__ import annotations

import json
import os

import pytest

from .cluster import ControlPlane, default_bin_dir, k8s_version, missing_binaries


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
