"""Wires fluxwarden into the local control plane: certificates from `fluxwarden certs`, a
`fluxwarden serve` process on loopback, the webhook configurations derived from
`manifests/base` (pointed at that process by URL), and the CRDs: Flux's, cert-manager's and
openreports' as controller-gen generates them from their API modules
(`tests/controlplane/flux/build.sh`), plus the one hand-written file for what no Go module on
the proxy serves (wgpolicyk8s.io PolicyReports). Used by the e2e tests and by `make demo`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
FLUX_BUILD = REPO / "tests" / "controlplane" / "flux" / "build.sh"
# Hand-written only because kubernetes-sigs/wg-policy-prototypes is not on the module proxy.
HAND_WRITTEN_CRDS = (Path(__file__).parent / "crds" / "policyreports.yaml",)
BASE = REPO / "manifests" / "base"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class WebhookServer:
    """`fluxwarden serve` on 127.0.0.1 with its own certificates, reading the control plane."""

    def __init__(
        self, cluster: ControlPlane, workdir: Path, *, mode: str | None = None, workers: int = 1
    ) -> None:
        self.cluster, self.workdir, self.mode, self.workers = cluster, workdir, mode, workers
        self.port = free_port()
        self.certs = workdir / "certs"
        self.log = workdir / "fluxwarden.log"
        self.ca_bundle = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> WebhookServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fluxwarden = [sys.executable, "-m", "webhook"]
        issued = subprocess.run(
            [
                *fluxwarden,
                "certs",
                "--out",
                str(self.certs),
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.ca_bundle = issued.stdout.strip()
        args = [
            *fluxwarden,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--cert-file",
            str(self.certs / "tls.crt"),
            "--key-file",
            str(self.certs / "tls.key"),
            "--kubeconfig",
            str(self.cluster.kubeconfig_path),
            "--lookups",
            "kube",
        ]
        if self.mode:
            args += ["--mode", self.mode]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PROMETHEUS_MULTIPROC_DIR", "FLUXWARDEN_MODE")
        }
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            start_new_session=True,
            env=env,
        )
        wait_until("fluxwarden /readyz", self._ready)
        return self

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs / "ca.crt"))

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"fluxwarden serve exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=self._context(), timeout=2):
                return True
        except OSError:
            return False

    def metric_total(self, name: str) -> float:
        """The sum of a metric over all label sets."""
        with urllib.request.urlopen(
            f"{self.url}/metrics", context=self._context(), timeout=5
        ) as reply:
            text = reply.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def rendered(cluster: ControlPlane, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a manifests directory, with the kubectl built for the tests."""
    text = cluster.kubectl("kustomize", str(directory)).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def webhook_configurations(
    cluster: ControlPlane,
    *,
    url: str,
    ca_bundle: str,
    failure_policy: str | None = None,
    overlay: Path = BASE,
) -> list[dict[str, Any]]:
    """The shipped webhook configurations, pointed at `url` instead of the in-cluster Service."""
    configs = []
    for doc in rendered(cluster, overlay):
        if doc["kind"] not in WEBHOOK_KINDS:
            continue
        config = copy.deepcopy(doc)
        config["metadata"].pop("annotations", None)  # no cert-manager here: caBundle is set below
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca_bundle}
            if failure_policy:
                hook["failurePolicy"] = failure_policy
        configs.append(config)
    return configs


def apply_objects(cluster: ControlPlane, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def register(
    cluster: ControlPlane,
    server: WebhookServer,
    *,
    failure_policy: str | None = None,
    overlay: Path = BASE,
) -> None:
    apply_objects(
        cluster,
        webhook_configurations(
            cluster,
            url=server.url,
            ca_bundle=server.ca_bundle,
            failure_policy=failure_policy,
            overlay=overlay,
        ),
    )


def flux_dir() -> Path:
    """Where flux/build.sh puts kustomize-controller, controller-gen and crds/."""
    out = subprocess.run(
        [str(FLUX_BUILD), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


class MissingCRDsError(RuntimeError):
    """The generated CRDs are not built: `make controlplane` builds them."""


def generated_crds() -> list[Path]:
    """The Flux, cert-manager and openreports CRDs controller-gen generated (16 files)."""
    directory = flux_dir() / "crds"
    if not (directory / ".complete").exists():
        raise MissingCRDsError(f"no generated CRDs in {directory}: run `make controlplane`")
    return sorted(directory.glob("*.yaml"))


def install_crds(cluster: ControlPlane, *paths: Path) -> None:
    """Install `paths`, by default every CRD the e2e tests use (generated + hand-written)."""
    for path in paths or (*generated_crds(), *HAND_WRITTEN_CRDS):
        # Server-side: the generated CRDs are too large for the last-applied annotation.
        cluster.kubectl("apply", "--server-side", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def ensure_namespaces(cluster: ControlPlane, *names: str) -> None:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    apply_objects(cluster, docs)


PROBE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "image-reflector-controller", "namespace": "flux-system"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "probe"}},
        "template": {
            "metadata": {"labels": {"app": "probe"}},
            "spec": {"containers": [{"name": "manager", "image": "probe"}]},
        },
    },
}


def dry_run_probe(cluster: ControlPlane) -> subprocess.CompletedProcess[str]:
    """A server-side dry-run create of an IRC Deployment with 2 replicas (stores nothing)."""
    return cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(PROBE), check=False
    )


def wait_for_webhook(cluster: ControlPlane, server: WebhookServer) -> None:
    """Until the API server calls `server` (it picks up new configurations asynchronously)."""

    def answered() -> bool:
        before = server.metric_total("fluxwarden_admission_requests_total")
        dry_run_probe(
            cluster
        )  # admission runs before the AlreadyExists check, so any answer counts
        return server.metric_total("fluxwarden_admission_requests_total") > before

    wait_until("the API server to call fluxwarden", answered)


@contextlib.contextmanager
def serving(
    cluster: ControlPlane, workdir: Path, *, mode: str | None = None
) -> Iterator[WebhookServer]:
    """fluxwarden started in `workdir`, registered with the shipped webhook configurations and
    answering the API server; stopped on exit."""
    with registered(cluster, WebhookServer(cluster, workdir, mode=mode).start()) as server:
        yield server


@contextlib.contextmanager
def registered(cluster: ControlPlane, server: WebhookServer) -> Iterator[WebhookServer]:
    """A started `server`, registered with the shipped webhook configurations and answering
    the API server; stopped on exit."""
    try:
        register(cluster, server)
        wait_for_webhook(cluster, server)
        yield server
    finally:
        server.stop()
