"""`make demo`: fluxwarden in front of a real kube-apiserver, as a `kubectl` user sees it.

Starts the local control plane (etcd + kube-apiserver built from source), starts fluxwarden,
registers the shipped webhook configurations, applies `examples/` and shows the warnings, a
denial and the stored objects' fixed fields. Stops everything at the end, or with --keep keeps
it running and prints the KUBECONFIG to use.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from tests.controlplane.cluster import ControlPlane, ControlPlaneError, missing_binaries
from tests.e2e.harness import (
    REPO,
    WebhookServer,
    ensure_namespaces,
    install_crds,
    register,
    wait_for_webhook,
)

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


def run_demo(cluster: ControlPlane, workdir: Path) -> WebhookServer:
    print(f"{DIM}installing test CRDs (HelmRelease, Kustomization) and namespaces...{RESET}")
    install_crds(cluster)
    ensure_namespaces(cluster, "flux-system", "cattle-fleet-system", "cattle-system", "apps")
    server = WebhookServer(cluster, workdir).start()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep running; print the KUBECONFIG")
    args = parser.parse_args(argv)
    missing = missing_binaries()
    if missing:
        print(f"missing control-plane binaries {missing}: run `make controlplane`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fluxwarden-demo-") as tmp, ControlPlane() as cluster:
        server = None
        try:
            server = run_demo(cluster, Path(tmp))
            if args.keep:
                print(f"\n{BOLD}Running.{RESET} export KUBECONFIG={cluster.kubeconfig_path}")
                print(f"fluxwarden log: {server.log}   (Ctrl-C stops everything)")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except (ControlPlaneError, TimeoutError, RuntimeError) as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
        finally:
            if server is not None:
                server.stop()
    print(f"\n{DIM}stopped the control plane and fluxwarden.{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
