"""A real kube-apiserver + etcd on loopback, envtest-style, for tests and demos.

Binaries come from ``tests/controlplane/build.sh`` (``make controlplane``).

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")

CLI: ``python -m tests.controlplane.cluster up [--keep]`` prints the kubeconfig
path on stdout and serves until Ctrl-C / SIGTERM.

By default there is no controller-manager, scheduler or kubelet: objects are
stored and admitted (webhooks included), nothing reconciles them.  With
``ControlPlane(scheduling=True)`` kube-scheduler and kube-controller-manager run
too, and :class:`ReadyNodes` registers Node objects it keeps Ready (Lease and
status heartbeats): pods are created by the controllers and bound to nodes by
the scheduler, but never run (no kubelet).  The apiserver cannot
reach Service ClusterIPs, so admission webhooks must be registered with a
``url`` clientConfig (e.g. ``https://127.0.0.1:PORT/...``).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self, TypeVar

from cryptography.hazmat.primitives import serialization

from tests.controlplane.node import NODE_NAME, NodeProcesses
from webhook.certs import CertificateAuthority, key_pem, new_key

HERE = Path(__file__).resolve().parent
VERSION_FILE = HERE / "VERSION"
BINARIES = ("kube-apiserver", "kubectl", "etcd")
SCHEDULING_BINARIES = ("kube-scheduler", "kube-controller-manager")
NODE_BINARIES = ("kubelet", "kube-proxy")
NODE_MONITOR_GRACE_SECONDS = 15
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_STOP_GRACE_SECONDS = 5.0
_LOG_TAIL_LINES = 40

_T = TypeVar("_T")


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: Metadata
"""


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or has failed."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command exited non-zero; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"kubectl exited {self.returncode}: {cmd}\n{stderr}"


def k8s_version() -> str:
    """The pinned Kubernetes version (``tests/controlplane/VERSION``), e.g. ``v1.36.4``."""
    return VERSION_FILE.read_text().strip()


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries; mirrors ``build.sh --print-dir``."""
    cache = os.environ.get("FLUXWARDEN_CACHE") or str(Path.home() / ".cache" / "fluxwarden")
    return Path(cache) / "controlplane" / k8s_version()


def missing_binaries(
    bin_dir: Path | None = None, *, scheduling: bool = False, node: bool = False
) -> list[str]:
    """Names of the control-plane binaries absent from ``bin_dir`` (with ``scheduling``, also
    kube-scheduler and kube-controller-manager; with ``node``, those and kubelet, kube-proxy)."""
    directory = bin_dir or default_bin_dir()
    names = BINARIES + (SCHEDULING_BINARIES if scheduling or node else ())
    names += NODE_BINARIES if node else ()
    return [name for name in names if not os.access(directory / name, os.X_OK)]


# --------------------------------------------------------------------------- certificates


CERT_DAYS = 7


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child when its parent thread exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Process:
    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # PDEATHSIG fires when the *thread* that forked exits, so only use it
        # from the main thread (whose exit is the process's).
        on_main = threading.current_thread() is threading.main_thread()
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if on_main and sys.platform == "linux" else None,
        )

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        try:
            if self.popen.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.popen.wait(_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.popen.wait()
            # The group may hold stragglers even after the leader exited.
            self._signal(signal.SIGKILL)
        finally:
            self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1 with a fresh CA and an admin kubeconfig.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        keep: bool = False,
        startup_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
        scheduling: bool = False,
        node: bool = False,
        images: Sequence[Path] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        # A real node needs the controllers (Deployments, Endpoints) and the scheduler.
        self.scheduling = scheduling or node
        self.node = node
        self.images = list(images)
        self._node: NodeProcesses | None = None
        self._controllers: list[_Process] = []
        self.keep = keep
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.startup_seconds: float | None = None
        self._workdir: Path | None = None
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._server_url: str | None = None
        self._etcd_url = ""
        self._ca_pem: bytes | None = None

    # ---- public properties

    @property
    def audit_log(self) -> Path:
        """JSON audit events (Metadata level) for writes: they carry auditAnnotations."""
        return self.workdir / "audit.log"

    @property
    def workdir(self) -> Path:
        """Temporary directory with certificates, kubeconfig, etcd data and logs."""
        return self._require(self._workdir)

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:PORT`` of the kube-apiserver."""
        return self._require(self._server_url)

    @property
    def ca_pem(self) -> bytes:
        """PEM of the CA that signed the apiserver's serving cert and the admin cert."""
        return self._require(self._ca_pem)

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise ControlPlaneError("control plane is not started")
        return value

    # ---- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._workdir is not None:
            raise ControlPlaneError("control plane already started")
        missing = missing_binaries(self.bin_dir, scheduling=self.scheduling, node=self.node)
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(missing)} in {self.bin_dir}: run `make controlplane`"
            )
        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="fluxwarden-cp-"))
        atexit.register(self.stop)
        try:
            self._start_etcd()
            self._start_apiserver()
            if self.scheduling:
                self._start_scheduling()
            if self._node is not None:
                self._start_node(self._node)
        except ControlPlaneError as err:
            workdir = self._workdir
            self._stop(remove=False)
            raise ControlPlaneError(f"{err}\n(work dir kept for debugging: {workdir})") from None
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the apiserver, then etcd; remove the workdir unless ``keep``. Idempotent."""
        self._stop(remove=not self.keep)

    def _stop(self, *, remove: bool) -> None:
        atexit.unregister(self.stop)
        while self._controllers:
            self._controllers.pop().stop()
        if self._node is not None:
            self._node.stop()
            self._node = None
        for attr in ("_apiserver", "_etcd"):
            proc: _Process | None = getattr(self, attr)
            if proc is not None:
                setattr(self, attr, None)
                proc.stop()
        if self._workdir is not None and remove:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        self._server_url = None

    def running(self) -> bool:
        return all(p is not None and p.running() for p in self._processes())

    def _processes(self) -> list[_Process | None]:
        return [self._etcd, self._apiserver, *self._controllers]

    def check_running(self) -> None:
        """Raise :class:`ControlPlaneError` (with log tails) if a process has died."""
        for proc in self._processes():
            if proc is not None and not proc.running():
                raise ControlPlaneError(self._failure(f"{proc.name} exited"))

    # ---- kubectl

    def kubectl_env(self) -> dict[str, str]:
        """Environment that points kubectl / client libraries at this cluster only."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        env["KUBERC"] = "off"  # ignore the user's ~/.kube/kuberc preferences
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; output is captured as text."""
        cmd = [
            str(self.bin_dir / "kubectl"),
            "--kubeconfig",
            str(self.kubeconfig_path),
            "--cache-dir",
            str(self.workdir / "kubectl-cache"),
            *args,
        ]
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=self.kubectl_env(),
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def api(self, method: str, path: str, body: object = None, *, content_type: str = "") -> Any:
        """One REST call as the admin user; returns the decoded JSON answer.

        Raises :class:`ControlPlaneError` on a non-2xx answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        port = int(self.server_url.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=self._admin_ssl())
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise ControlPlaneError(f"{method} {path}: {response.status} {text[:500]}")
        return json.loads(text) if text else None

    def _admin_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        return context

    # ---- internals

    def _start_scheduling(self) -> None:
        """kube-scheduler and kube-controller-manager with the admin kubeconfig, no leader
        election, serving their health endpoints on loopback."""
        kubeconfig = str(self.kubeconfig_path)
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        scheduler_port, manager_port = _free_port(), _free_port()
        self._controllers.append(
            _Process(
                "kube-scheduler",
                [
                    str(self.bin_dir / "kube-scheduler"),
                    *common,
                    f"--secure-port={scheduler_port}",
                ],
                self.workdir / "kube-scheduler.log",
            )
        )
        self._controllers.append(
            _Process(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    *common,
                    f"--secure-port={manager_port}",
                    # Each controller uses the admin credentials: no token controller needed.
                    "--use-service-account-credentials=false",
                    f"--root-ca-file={self.workdir / 'ca.crt'}",
                    f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    # The HPA controller's default sync period is 15 s; tests wait for it.
                    "--horizontal-pod-autoscaler-sync-period=2s",
                    # A node silent for 15 s (default 50 s) is NotReady: short enough that a
                    # test module outlives it, so ReadyNodes' heartbeat is what keeps them Ready.
                    f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
                ],
                self.workdir / "kube-controller-manager.log",
            )
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of the two processes
        for name, port in (
            ("kube-scheduler", scheduler_port),
            ("kube-controller-manager", manager_port),
        ):
            healthy = functools.partial(self._http_ok, "127.0.0.1", port, "/healthz", insecure)
            self._wait(name, healthy)

    def _start_node(self, node: NodeProcesses) -> None:
        """containerd, kubelet and kube-proxy in the node's namespaces; wait for Node Ready."""
        port = int(self.server_url.rsplit(":", 1)[1])

        try:
            node.after_apiserver(
                port, self.kubeconfig_path, self.workdir / "ca.crt", self.run_process
            )
        except (RuntimeError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or ""
            raise ControlPlaneError(self._failure(f"node: {err} {detail}")) from None
        self._wait("node Ready", self._node_ready)

    def _node_ready(self) -> bool:
        try:
            status = self.api("GET", f"/api/v1/nodes/{NODE_NAME}")["status"]
        except ControlPlaneError:
            return False
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return conditions.get("Ready") == "True"

    def run_process(self, name: str, args: list[str]) -> None:
        """Start a process logged to ``<workdir>/<name>.log`` and stopped with the cluster."""
        self._controllers.append(_Process(name, args, self.workdir / f"{name}.log"))

    @property
    def node_processes(self) -> NodeProcesses:
        """The node of ``ControlPlane(node=True)``: its namespaces, containerd (``ctr``)."""
        return self._require(self._node)

    def _start_etcd(self) -> None:
        client_port, peer_port = _free_port(), _free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._etcd_url = client_url
        self._etcd = _Process(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.etcd_log,
        )
        self._wait("etcd", lambda: self._http_ok("127.0.0.1", client_port, "/health", None))

    def _start_apiserver(self) -> None:
        work = self.workdir
        ca = CertificateAuthority("fluxwarden-test-ca", days=CERT_DAYS)
        ca_pem = ca.cert_pem
        serving_cert, serving_key = ca.issue(
            "kube-apiserver",
            days=CERT_DAYS,
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", "10.0.0.1"],
            server=True,
        )
        admin_cert, admin_key = ca.issue("admin", days=CERT_DAYS, organizations=["system:masters"])
        sa_key = new_key()
        sa_pub = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        files = {
            "ca.crt": ca_pem,
            "apiserver.crt": serving_cert,
            "apiserver.key": serving_key,
            "admin.crt": admin_cert,
            "admin.key": admin_key,
            "sa.key": key_pem(sa_key),
            "sa.pub": sa_pub,
        }
        files["audit-policy.yaml"] = AUDIT_POLICY.encode()
        for name, data in files.items():
            path = work / name
            path.write_bytes(data)
            path.chmod(0o600)

        port = _free_port()
        self._ca_pem = ca_pem
        self._server_url = f"https://127.0.0.1:{port}"
        self._write_kubeconfig(admin_cert, admin_key)
        node_args: list[str] = []
        if self.node:
            self._node = NodeProcesses(work, self.bin_dir, self.images)
            node_args = self._node.before_apiserver(SERVICE_CLUSTER_IP_RANGE)
        self._apiserver = _Process(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self._etcd_url}",
                "--bind-address=127.0.0.1",
                # A node's pods reach the apiserver at the node's address (its args).
                *([] if self.node else ["--advertise-address=127.0.0.1"]),
                f"--secure-port={port}",
                f"--tls-cert-file={work / 'apiserver.crt'}",
                f"--tls-private-key-file={work / 'apiserver.key'}",
                f"--client-ca-file={work / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--authorization-mode=RBAC",
                # Pods on a real node need their ServiceAccount token; without one, no pods.
                *([] if self.node else ["--disable-admission-plugins=ServiceAccount"]),
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # No kubelets: the "kubernetes" Service's endpoints cannot be
                # the loopback address anyway (the node's args replace this).
                *([] if self.node else ["--endpoint-reconciler-type=none"]),
                "--profiling=false",
                # Audit events carry the webhooks' auditAnnotations: the e2e tests read them.
                f"--audit-policy-file={work / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                *node_args,
                *self.extra_apiserver_args,
            ],
            self.apiserver_log,
        )
        context = ssl.create_default_context(cadata=ca_pem.decode())
        context.load_cert_chain(work / "admin.crt", work / "admin.key")
        self._wait("kube-apiserver", lambda: self._http_ok("127.0.0.1", port, "/readyz", context))

    def _write_kubeconfig(self, cert: bytes, key: bytes) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        text = f"""\
apiVersion: v1
kind: Config
clusters:
- name: fluxwarden
  cluster:
    server: {self.server_url}
    certificate-authority-data: {b64(self.ca_pem)}
users:
- name: admin
  user:
    client-certificate-data: {b64(cert)}
    client-key-data: {b64(key)}
contexts:
- name: fluxwarden
  context:
    cluster: fluxwarden
    user: admin
    namespace: default
current-context: fluxwarden
"""
        self.kubeconfig_path.write_text(text)
        self.kubeconfig_path.chmod(0o600)

    @staticmethod
    def _http_ok(host: str, port: int, path: str, context: ssl.SSLContext | None) -> bool:
        conn: http.client.HTTPConnection
        if context is None:
            conn = http.client.HTTPConnection(host, port, timeout=2)
        else:
            conn = http.client.HTTPSConnection(host, port, timeout=2, context=context)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            self.check_running()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    self._failure(f"{what} not ready after {self.startup_timeout:.0f}s")
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _failure(self, headline: str) -> str:
        parts = [headline]
        for proc in reversed(self._processes()):
            if proc is None:
                continue
            status = "running" if proc.running() else f"exit code {proc.popen.returncode}"
            parts.append(
                f"--- last lines of {proc.log_path} ({proc.name}, {status}):\n{proc.tail()}"
            )
        return "\n".join(parts)


# --------------------------------------------------------------------------- nodes


def _now(micro: bool = False) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return f"{stamp}.000000Z" if micro else f"{stamp}Z"


class ReadyNodes:
    """Node objects with the given taints, kept Ready the way a kubelet keeps its node: a
    Lease in ``kube-node-lease`` renewed and the Ready condition's heartbeat refreshed every
    ``heartbeat`` seconds from a daemon thread (``None``: never, the node goes NotReady after
    the controller-manager's grace period).  No kubelet: pods are bound, never run.

        with ControlPlane(scheduling=True) as cp, ReadyNodes(cp, 2, taints=[...]):
            ...
    """

    def __init__(
        self,
        cluster: ControlPlane,
        count: int,
        *,
        taints: Sequence[dict[str, str]],
        heartbeat: float | None = 5.0,
        prefix: str = "node",
    ) -> None:
        self.cluster = cluster
        self.names = [f"{prefix}-{i}" for i in range(count)]
        self.taints = [dict(taint) for taint in taints]
        self.heartbeat = heartbeat
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        for name in self.names:
            self.cluster.api("POST", "/api/v1/nodes", self._node(name))
            self.cluster.api(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                self._lease(name),
            )
        if self.heartbeat is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _conditions(self) -> list[dict[str, str]]:
        now = _now()
        healthy = [
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs"),
        ]
        return [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for kind, status, reason, message in healthy
        ]

    def _node(self, name: str) -> dict[str, Any]:
        resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            },
            "spec": {"taints": self.taints},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": self._conditions(),
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            },
        }

    def _lease(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _now(True)},
        }

    def beat(self) -> None:
        """Renew every node's Lease and refresh its conditions (what the thread does)."""
        for name in self.names:
            self.cluster.api(
                "PATCH",
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                {"spec": {"renewTime": _now(True)}},
                content_type="application/merge-patch+json",
            )
            # Keep lastTransitionTime: only the heartbeat moves, as with a kubelet.
            node = self.cluster.api("GET", f"/api/v1/nodes/{name}")
            conditions = node["status"]["conditions"]
            for condition in conditions:
                condition["lastHeartbeatTime"] = _now()
            self.cluster.api(
                "PATCH",
                f"/api/v1/nodes/{name}/status",
                {"status": {"conditions": conditions}},
                content_type="application/merge-patch+json",
            )
        self.beats += 1

    def _run(self) -> None:
        assert self.heartbeat is not None
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(ControlPlaneError, OSError):
                self.beat()


# --------------------------------------------------------------------------- CLI


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` -> a Node taint."""
    key_value, _, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise argparse.ArgumentTypeError(f"not a taint (key=value:Effect): {text}")
    return {"key": key, **({"value": value} if value else {}), "effect": effect}


def _up(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
    cp = ControlPlane(keep=args.keep, startup_timeout=args.timeout, scheduling=args.nodes > 0)
    nodes: ReadyNodes | None = None
    try:
        cp.start()
        if args.nodes:
            nodes = ReadyNodes(cp, args.nodes, taints=[_taint(t) for t in args.taint]).__enter__()
        print(cp.kubeconfig_path, flush=True)
        print(
            f"control plane {k8s_version()} ready at {cp.server_url} "
            f"in {cp.startup_seconds:.1f}s\n"
            f"  export KUBECONFIG={cp.kubeconfig_path}\n"
            f"  logs: {cp.workdir}\n"
            "Ctrl-C or SIGTERM stops it.",
            file=sys.stderr,
            flush=True,
        )
        while True:
            cp.check_running()
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping control plane", file=sys.stderr, flush=True)
        return 0
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        workdir = cp._workdir
        if nodes is not None:
            nodes.__exit__()
        cp.stop()
        if args.keep and workdir is not None:
            print(f"kept {workdir}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.controlplane.cluster",
        description="Run a local kube-apiserver + etcd (built by `make controlplane`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start, print the kubeconfig path, serve until Ctrl-C")
    up.add_argument("--keep", action="store_true", help="keep the work dir (logs, etcd data)")
    up.add_argument("--timeout", type=float, default=60.0, help="startup timeout in seconds")
    up.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="also run kube-scheduler + kube-controller-manager and keep this many Nodes Ready",
    )
    up.add_argument("--taint", action="append", default=[], help="key=value:Effect on every node")
    sub.add_parser("bin-dir", help="print the binaries directory")
    args = parser.parse_args(argv)
    if args.command == "bin-dir":
        print(default_bin_dir())
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
