"""Kyverno, the peer fluxwarden's speed claims are measured against (issue 22).

Kyverno v1.19.1 is built from its Go module by `tests/controlplane/kyverno/build.sh` into the
shared cache: the admission controller (`cmd/kyverno`) and the CLI (`kubectl-kyverno`), with
the module's CRDs (`config/crds`). The ClusterPolicies equivalent to fluxwarden's shipped
policy set are data: `bench/kyverno/flux-best-practices.yaml` (no lookups: also what the CLI
applies) and `bench/kyverno/lookups.yaml` (the policies that read other objects).

`AdmissionController` runs `kyverno` as a local process against the bench's API server, out of
cluster the way Kyverno's DEVELOPMENT.md describes: `--serverIP=127.0.0.1:PORT` makes it
register its webhooks at `https://127.0.0.1:PORT/...` with a certificate for that IP, which it
issues itself (its CA and serving pair are Secrets in the `kyverno` namespace).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import ControlPlane

from .servers import ROOT, free_port

JsonObject = dict[str, Any]
VERSION = "v1.19.1"  # as tests/controlplane/kyverno/build.sh builds it
BUILD_SCRIPT = ROOT / "tests" / "controlplane" / "kyverno" / "build.sh"
POLICY_DIR = ROOT / "bench" / "kyverno"
POLICIES = POLICY_DIR / "flux-best-practices.yaml"
LOOKUP_POLICIES = POLICY_DIR / "lookups.yaml"
NAMESPACE = "kyverno"
# Kyverno's own names for its TLS Secrets, as its Helm chart and DEVELOPMENT.md pass them.
CA_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
TLS_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-pair"
WEBHOOK_LABEL = "webhook.kyverno.io/managed-by=kyverno"
# What the Helm chart's values.yaml configures by default (config.resourceFilters, the generic
# part; config.webhooks; config.excludeGroups), minus what only names chart-made objects.
RESOURCE_FILTERS = (
    "[Event,*,*][*/*,kube-system,*][*/*,kube-public,*][*/*,kube-node-lease,*][Node,*,*]"
    "[Node/?*,*,*][APIService,*,*][APIService/?*,*,*][TokenReview,*,*][SubjectAccessReview,*,*]"
    "[SelfSubjectAccessReview,*,*][Binding,*,*][Pod/binding,*,*][ReplicaSet,*,*]"
    "[ReplicaSet/?*,*,*][EphemeralReport,*,*][ClusterEphemeralReport,*,*][*/*,kyverno,*]"
)
WEBHOOKS = (
    '{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", '
    '"operator": "NotIn", "values": ["kube-system", "kyverno"]}]}}'
)


def build_dir() -> Path:
    """Where build.sh puts (or has put) the binaries; builds nothing."""
    done = subprocess.run(
        [str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def missing() -> list[str]:
    """The Kyverno build's outputs that are not there yet."""
    directory = build_dir()
    wanted = ("kyverno", "kubectl-kyverno", "crds/.complete")
    return [name for name in wanted if not (directory / name).exists()]


def crd_paths() -> list[Path]:
    return sorted((build_dir() / "crds").glob("*.yaml"))


def policy_documents(*paths: Path) -> list[JsonObject]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def configuration_objects() -> list[JsonObject]:
    """Kyverno's namespace and its configuration ConfigMap (the chart's defaults)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kyverno", "namespace": NAMESPACE},
            "data": {
                "enableDefaultRegistryMutation": "true",
                "defaultRegistry": "docker.io",
                "generateSuccessEvents": "false",
                "excludeGroups": "system:nodes",
                "resourceFilters": RESOURCE_FILTERS,
                "webhooks": WEBHOOKS,
            },
        },
    ]


class AdmissionController:
    """`kyverno` (the admission controller) on 127.0.0.1 against `cluster`, its log in
    `workdir`. Each start is a new "pod" (its own name, a fresh leader election)."""

    def __init__(self, cluster: ControlPlane, workdir: Path) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"kyverno-{self.starts}.log"

    def argv(self) -> list[str]:
        loopback = "127.0.0.1"
        return [
            str(build_dir() / "kyverno"),
            f"--kubeconfig={self.cluster.kubeconfig_path}",
            f"--serverIP={loopback}:{self.port}",
            f"--webhookServerHost={loopback}",
            f"--webhookServerPort={self.port}",
            f"--caSecretName={CA_SECRET}",
            f"--tlsSecretName={TLS_SECRET}",
            "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
            "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller",
            # Its two metrics servers stay on (as installed) but on loopback.
            f"--metricsHost={loopback}",
            f"--metricsPort={free_port()}",
            f"--controllerRuntimeMetricsAddress={loopback}:{free_port()}",
            "--disableLogColor",
        ]

    def environment(self) -> dict[str, str]:
        return {
            **self.cluster.kubectl_env(),
            "KYVERNO_NAMESPACE": NAMESPACE,
            "KYVERNO_SERVICEACCOUNT_NAME": "kyverno-admission-controller",
            "KYVERNO_ROLE_NAME": "kyverno:admission-controller",
            "KYVERNO_DEPLOYMENT": "kyverno-admission-controller",
            "KYVERNO_SVC": "kyverno-svc",
            "KYVERNO_POD_NAME": f"kyverno-bench-{self.starts}",
            "INIT_CONFIG": "kyverno",
            "METRICS_CONFIG": "kyverno-metrics",
        }

    def start(self) -> AdmissionController:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.port = free_port()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"kyverno exited ({self.log}):\n{tail}")

    def stop(self) -> None:
        """SIGTERM, as the kubelet stops a pod; SIGKILL after 20 s."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def remove_leftovers(self) -> None:
        """What Kyverno leaves in the cluster when its process ends: its webhook
        configurations, its leader-election leases and the admission reports no reports
        controller aggregated (a real install's reports controller deletes them)."""
        kubectl = self.cluster.kubectl
        kubectl(
            "delete", "mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-l", WEBHOOK_LABEL, "--ignore-not-found", "--wait=false",
        )  # fmt: skip
        kubectl("delete", "leases", "--all", "-n", NAMESPACE, "--ignore-not-found")
        kubectl("delete", "ephemeralreports", "--all", "-A", "--ignore-not-found", "--wait=false")


def install(cluster: ControlPlane) -> None:
    """Kyverno's CRDs, namespace and configuration (once per bench run)."""
    for path in crd_paths():
        cluster.kubectl("apply", "--server-side", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(configuration_objects()))


def apply_policies(cluster: ControlPlane, controller: AdmissionController, timeout: float) -> None:
    """The ClusterPolicies, once Kyverno's policy webhook admits them (it validates them;
    until it runs the API server refuses them), then until every one reports Ready."""
    text = yaml.safe_dump_all(policy_documents(POLICIES, LOOKUP_POLICIES))
    deadline = time.monotonic() + timeout
    while True:
        controller.check_running()
        try:
            cluster.kubectl("apply", "-f", "-", input=text)
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    remaining = max(5, round(deadline - time.monotonic()))
    cluster.kubectl(
        "wait", "--for=condition=Ready", "clusterpolicies", "--all", f"--timeout={remaining}s"
    )


def delete_policies(cluster: ControlPlane) -> None:
    cluster.kubectl("delete", "clusterpolicies", "--all", "--ignore-not-found")
