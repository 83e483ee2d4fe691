"""`make demo`: fluxwarden in front of a real kube-apiserver, as a `kubectl` user sees it.

Starts the local control plane (etcd + kube-apiserver built from source), starts fluxwarden,
registers the shipped webhook configurations, applies `examples/` and shows the warnings, a
denial and the stored objects' fixed fields. When Flux's kustomize-controller is built (`make
controlplane`), Flux then applies a repo served on loopback: fluxwarden mutates what it applies
and the next reconciliations change nothing. Stops everything at the end, or with --keep keeps
it running and prints the KUBECONFIG to use.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from tests.controlplane.cluster import ControlPlane, ControlPlaneError, missing_binaries
from tests.e2e.harness import (
    REPO,
    WebhookServer,
    ensure_namespaces,
    install_crds,
    register,
    wait_for_webhook,
)

FLUX_REPO = {
    "helmrelease.yaml": """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo-from-git, namespace: apps}
spec:
  interval: 10m
  chart:
    spec:
      chart: podinfo
      sourceRef: {kind: HelmRepository, name: podinfo, namespace: flux-system}
""",
    "fleet-job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata: {name: fleet-cleanup-clusterregistrations, namespace: cattle-fleet-system}
spec:
  backoffLimit: 1
  template:
    metadata: {labels: {app: fleet-job}}
    spec:
      restartPolicy: Never
      containers: [{name: cleanup, image: rancher/fleet:v0.12.3, args: [cleanup, clusterregistration]}]
""",
}
RECONCILES = 3

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

SHOW = [
    (
        "the IRC Deployment",
        [
            "get",
            "deployment",
            "image-reflector-controller",
            "-n",
            "flux-system",
            "-o",
            "custom-columns=REPLICAS:.spec.replicas,MEMORY_LIMIT:.spec.template.spec.containers[0].resources.limits.memory",
        ],
    ),
    (
        "source-controller's /tmp",
        [
            "get",
            "deployment",
            "source-controller",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={.spec.template.spec.volumes[?(@.name=='tmp')]}",
        ],
    ),
    (
        "kustomize-controller's args",
        [
            "get",
            "deployment",
            "kustomize-controller",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
    ),
    (
        "the HelmRelease",
        [
            "get",
            "helmrelease",
            "podinfo",
            "-n",
            "apps",
            "-o",
            "custom-columns=INTERVAL:.spec.interval,DRIFT_DETECTION:.spec.driftDetection.mode",
        ],
    ),
    (
        "the Fleet cleanup CronJob's tolerations",
        [
            "get",
            "cronjob",
            "fleet-cleanup-gitrepo-jobs",
            "-n",
            "cattle-fleet-system",
            "-o",
            "jsonpath={.spec.jobTemplate.spec.template.spec.tolerations}",
        ],
    ),
    (
        "infra-controllers after the denied update (no dependsOn)",
        [
            "get",
            "kustomization",
            "infra-controllers",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={.spec}",
        ],
    ),
]


def step(cluster: ControlPlane, title: str, args: list[str]) -> None:
    print(f"\n{BOLD}# {title}{RESET}\n{DIM}$ kubectl {shlex.join(args)}{RESET}")
    result = cluster.kubectl(*args, check=False)
    for line in (result.stderr + result.stdout).rstrip().splitlines():
        print(f"  {line}")


def run_demo(cluster: ControlPlane, workdir: Path, running: list[Stoppable]) -> WebhookServer:
    print(
        f"{DIM}installing the Flux and cert-manager CRDs (generated from their Go API modules) "
        f"and namespaces...{RESET}"
    )
    install_crds(cluster)
    ensure_namespaces(cluster, "flux-system", "cattle-fleet-system", "cattle-system", "apps")
    server = WebhookServer(cluster, workdir / "fluxwarden")
    running.append(server)
    server.start()
    register(cluster, server)
    wait_for_webhook(cluster, server)
    print(
        f"{DIM}fluxwarden serving on {server.url}, webhooks registered from manifests/base{RESET}"
    )
    for name in ("flux-system.yaml", "apps.yaml", "fleet.yaml"):
        step(cluster, f"apply {name}", ["apply", "-f", str(REPO / "examples" / name)])
    step(
        cluster,
        "apply a dependsOn cycle: denied",
        ["apply", "-f", str(REPO / "tests" / "e2e" / "manifests" / "denied-cycle.yaml")],
    )
    step(
        cluster,
        "kubectl scale image-reflector-controller to 3: held at 1",
        ["scale", "deployment/image-reflector-controller", "-n", "flux-system", "--replicas=3"],
    )
    for title, args in SHOW:
        step(cluster, f"stored: {title}", args)
    return server


class Stoppable(Protocol):
    def stop(self) -> None: ...


def run_flux_part(cluster: ControlPlane, workdir: Path, running: list[Stoppable]) -> None:
    """kustomize-controller applies FLUX_REPO (an ExternalArtifact served on 127.0.0.1)."""
    from tests.e2e.flux.harness import ArtifactServer, KustomizeController, wait_for

    print(
        f"\n{BOLD}# Flux: kustomize-controller (Flux v2.9.5, built from its Go module) applies "
        f"a repo served on 127.0.0.1{RESET}"
    )
    for path, text in FLUX_REPO.items():
        print(f"{DIM}--- repo: {path}{RESET}")
        for line in text.rstrip().splitlines():
            print(f"  {line}")
    artifacts = ArtifactServer(workdir / "artifacts").start()
    running.append(artifacts)
    artifacts.publish(cluster, name="demo-repo", namespace="flux-system", files=FLUX_REPO)
    controller = KustomizeController(cluster, workdir / "kustomize-controller").start()
    running.append(controller)
    kustomization = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "demo-repo", "namespace": "flux-system"},
        "spec": {
            "interval": "2s",
            "path": "./",
            "prune": True,
            "sourceRef": {"kind": "ExternalArtifact", "name": "demo-repo"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(kustomization))

    def reconciled() -> list[dict[str, str]] | None:
        outputs = controller.apply_outputs("demo-repo")
        return outputs[:RECONCILES] if len(outputs) >= RECONCILES else None

    outputs = wait_for(f"{RECONCILES} reconciliations", reconciled, timeout=120)
    print(f"{DIM}kustomize-controller's apply results (its log), interval 2s:{RESET}")
    for number, output in enumerate(outputs, 1):
        results = ", ".join(f"{obj} {action}" for obj, action in sorted(output.items()))
        print(f"  reconcile {number}: {results}")
    step(
        cluster,
        "stored: the HelmRelease Flux applied",
        [
            "get",
            "helmrelease",
            "podinfo-from-git",
            "-n",
            "apps",
            "-o",
            "custom-columns=DRIFT_DETECTION:.spec.driftDetection.mode,MANAGERS:.metadata.managedFields[*].manager",
        ],
    )
    step(
        cluster,
        "stored: the Fleet Job's tolerations (inherited from fleet-controller)",
        [
            "get",
            "job",
            "fleet-cleanup-clusterregistrations",
            "-n",
            "cattle-fleet-system",
            "-o",
            "jsonpath={.spec.template.spec.tolerations}",
        ],
    )
    step(
        cluster,
        "the Kustomization as Flux reports it",
        ["get", "kustomization", "demo-repo", "-n", "flux-system"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep running; print the KUBECONFIG")
    args = parser.parse_args(argv)
    missing = missing_binaries()
    if missing:
        print(f"missing control-plane binaries {missing}: run `make controlplane`", file=sys.stderr)
        return 2
    from tests.e2e.flux.harness import missing as missing_flux

    with tempfile.TemporaryDirectory(prefix="fluxwarden-demo-") as tmp, ControlPlane() as cluster:
        running: list[Stoppable] = []
        try:
            server = run_demo(cluster, Path(tmp), running)
            absent = missing_flux()
            if absent:
                print(
                    f"\n{DIM}(no Flux part: {', '.join(absent)} missing; `make controlplane`){RESET}"
                )
            else:
                run_flux_part(cluster, Path(tmp), running)
            if args.keep:
                print(f"\n{BOLD}Running.{RESET} export KUBECONFIG={cluster.kubeconfig_path}")
                print(f"fluxwarden log: {server.log}   (Ctrl-C stops everything)")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except (ControlPlaneError, TimeoutError, RuntimeError) as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
        finally:
            for process in reversed(running):
                process.stop()
    print(f"\n{DIM}stopped the control plane, fluxwarden and kustomize-controller.{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
