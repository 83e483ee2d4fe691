"""`make cluster`: the control plane with a real node (tests/controlplane/node.py) and
fluxwarden installed as it ships (`kubectl apply -k manifests/base`, the image `make image`
builds, cert-manager's controllers issuing its certificate), left running for a user to try:

    make cluster            # prints `export KUBECONFIG=...`; Ctrl-C stops and removes it all

The node tests (tests/e2e/test_node.py) start the same cluster through :func:`node_cluster`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from image import build
from tests.controlplane.cluster import ControlPlane, ControlPlaneError
from tests.e2e.harness import REPO, ensure_namespaces, install_crds

NAMESPACE = "fluxwarden-system"
CERT_MANAGER_BUILD = REPO / "tests" / "controlplane" / "certmanager" / "build.sh"


def cert_manager_binary() -> Path:
    """cert-manager's controllers as tests/controlplane/certmanager/build.sh builds them."""
    out = subprocess.run(
        [str(CERT_MANAGER_BUILD), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(out) / "cert-manager"


@contextlib.contextmanager
def node_cluster(*, keep: bool = False) -> Iterator[ControlPlane]:
    """The control plane with a real node holding the image, the CRDs, and cert-manager."""
    cert_manager = cert_manager_binary()
    if not cert_manager.exists():
        raise ControlPlaneError(f"{cert_manager} missing: run `make controlplane`")
    images = [build.build(REPO)]
    with ControlPlane(node=True, images=images, startup_timeout=120, keep=keep) as cluster:
        install_crds(cluster)
        ensure_namespaces(cluster, "flux-system", "cert-manager", "apps")
        kubeconfig = f"--kubeconfig={cluster.kubeconfig_path}"
        cluster.run_process("cert-manager", [str(cert_manager), kubeconfig])
        yield cluster


def install_fluxwarden(
    cluster: ControlPlane, directory: Path = REPO / "manifests" / "base"
) -> None:
    """`kubectl apply -k` the directory and wait for the rollout."""
    cluster.kubectl("apply", "-k", str(directory))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/fluxwarden", "--timeout=300s")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGINT too: a shell without job control starts background commands with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        with node_cluster() as cluster:
            install_fluxwarden(cluster)
            print(
                f"fluxwarden is running on a real node (kubelet + containerd).\n"
                f"  export KUBECONFIG={cluster.kubeconfig_path}\n"
                f"  kubectl -n {NAMESPACE} get pods,certificates\n"
                f"  logs: {cluster.workdir}\n"
                "Ctrl-C stops the cluster and removes the node.",
                flush=True,
            )
            while True:
                cluster.check_running()
                time.sleep(2)
    except KeyboardInterrupt:
        return 0
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
