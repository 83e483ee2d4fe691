"""The `controller-requeue-dependency` seed as a benchmark: a 4-level `dependsOn` chain of
Kustomizations (`wait: true`), reconciled by the real kustomize-controller (Flux v2.9.5 from its
Go module) once with its default `--requeue-dependency` (30s) and once with the args fluxwarden
left on the stored kustomize-controller Deployment, read back from the API server.

    python -m bench.flux_chain [--rounds 2] [--levels 4]

One control plane, fluxwarden registered; `examples/flux-system.yaml` (Flux's controllers) is
applied through it and the stored kustomize-controller args are what the second setting runs
with, minus what points at the missing cluster (`--events-addr`: no notification-controller;
`--enable-leader-election`: one controller per run). Each level holds a ConfigMap, which is
healthy as soon as it exists (no kubelet here). The settings alternate run by run; each run has
its own namespace, artifact and controller process, and is timed from applying the four
Kustomizations to the last level's Ready=True.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.report import markdown_table

FLUX_NS = "flux-system"
# The args a local run cannot use as stored: they point at the cluster that is not there.
DROPPED_PREFIXES = ("--events-addr", "--enable-leader-election")


def stored_controller_args(cluster: Any) -> list[str]:
    """The kustomize-controller container's args as the API server stores them."""
    found = cluster.kubectl(
        "get", "deployment", "kustomize-controller", "-n", FLUX_NS, "-o", "json"
    ).stdout
    containers = json.loads(found)["spec"]["template"]["spec"]["containers"]
    manager = next(c for c in containers if c["name"] == "manager")
    return list(manager.get("args", []))


def chain_files(levels: int) -> dict[str, str]:
    files = {}
    for level in range(1, levels + 1):
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"level-{level}"},
            "data": {"level": str(level)},
        }
        files[f"level-{level}/configmap.yaml"] = yaml.safe_dump(config_map)
    return files


def chain(namespace: str, levels: int) -> list[dict[str, Any]]:
    kustomizations = []
    for level in range(1, levels + 1):
        spec: dict[str, Any] = {
            "interval": "10m",  # the chain moves by dependency requeues, not by the interval
            "path": f"./level-{level}",
            "prune": False,
            "wait": True,
            "targetNamespace": namespace,
            "timeout": "2m",
            "sourceRef": {"kind": "ExternalArtifact", "name": "chain"},
        }
        if level > 1:
            spec["dependsOn"] = [{"name": f"level-{level - 1}"}]
        kustomizations.append(
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": f"level-{level}", "namespace": namespace},
                "spec": spec,
            }
        )
    return kustomizations


FAILED_REASONS = {"ReconciliationFailed", "BuildFailed", "HealthCheckFailed", "ArtifactFailed"}


def ready(cluster: Any, namespace: str, name: str) -> bool:
    """Whether Kustomization `name` is Ready; raises when any level of the chain failed (a
    broken run should stop, not wait out the timeout)."""
    found = cluster.kubectl("get", "kustomizations", "-n", namespace, "-o", "json")
    for item in json.loads(found.stdout)["items"]:
        for condition in item.get("status", {}).get("conditions", []):
            if condition["type"] != "Ready":
                continue
            if condition["reason"] in FAILED_REASONS:
                level = item["metadata"]["name"]
                raise RuntimeError(f"{level}: {condition['reason']}: {condition['message']}")
            if item["metadata"]["name"] == name and condition["status"] == "True":
                return True
    return False


def run_once(
    cluster: Any,
    artifacts: Any,
    workdir: Path,
    *,
    run: int,
    levels: int,
    args: list[str],
    timeout: float,
) -> float:
    """Seconds from applying the chain to its last level's Ready=True."""
    from tests.e2e.flux.harness import KustomizeController
    from tests.e2e.harness import apply_objects, ensure_namespaces, wait_until

    namespace = f"chain-{run}"
    ensure_namespaces(cluster, namespace)
    artifacts.publish(cluster, name="chain", namespace=namespace, files=chain_files(levels))
    controller = KustomizeController(cluster, workdir / f"run-{run}", args=args).start()
    try:
        time.sleep(2)  # past the controller's start-up (cache sync) before the clock starts
        started = time.monotonic()
        apply_objects(cluster, chain(namespace, levels))
        wait_until(
            f"level-{levels} Ready in {namespace}",
            lambda: ready(cluster, namespace, f"level-{levels}"),
            timeout=timeout,
        )
        elapsed = time.monotonic() - started
        # Remove the chain while the controller can still clear its finalizers.
        cluster.kubectl("delete", "kustomizations", "--all", "-n", namespace, "--timeout=60s")
        return elapsed
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flux_chain", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting (alternated)")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    options = parser.parse_args(argv)

    from tests.controlplane.cluster import ControlPlane
    from tests.e2e.flux.harness import ArtifactServer, missing
    from tests.e2e.harness import (
        REPO,
        ensure_namespaces,
        install_crds,
        serving,
    )

    absent = missing()
    if absent:
        print(f"missing {absent}: run `make controlplane`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fluxwarden-chain-") as tmp, ControlPlane() as cluster:
        workdir = Path(tmp)
        install_crds(cluster)
        ensure_namespaces(cluster, FLUX_NS)
        with serving(cluster, workdir / "fluxwarden"):
            cluster.kubectl("apply", "-f", str(REPO / "examples" / "flux-system.yaml"))
            stored = stored_controller_args(cluster)
        fixed = [a for a in stored if not a.startswith(DROPPED_PREFIXES)]
        settings: dict[str, list[str]] = {"default (30s)": [], "as fluxwarden stored it": fixed}
        print(f"stored kustomize-controller args: {' '.join(stored)}", file=sys.stderr)
        print(f"run with: {' '.join(fixed)}", file=sys.stderr)
        times: dict[str, list[float]] = {name: [] for name in settings}
        run = 0
        with ArtifactServer(workdir / "artifacts") as artifacts:
            for _ in range(options.rounds):
                for name, args in settings.items():
                    run += 1
                    seconds = run_once(
                        cluster,
                        artifacts,
                        workdir,
                        run=run,
                        levels=options.levels,
                        args=args,
                        timeout=options.timeout,
                    )
                    times[name].append(seconds)
                    print(f"  run {run}: {name}: {seconds:.1f}s", file=sys.stderr)
    baseline = statistics.median(times["default (30s)"])
    rows = [
        [
            name,
            " / ".join(f"{t:.1f}" for t in values),
            f"{statistics.median(values):.1f}",
            f"{statistics.median(values) / baseline:.2f}",
        ]
        for name, values in times.items()
    ]
    print(
        f"\n## dependsOn chain: {options.levels} Kustomizations (wait: true), "
        "time to the last level Ready\n"
    )
    print(
        markdown_table(
            ["kustomize-controller --requeue-dependency", "runs (s)", "median (s)", "ratio"],
            rows,
            text_columns=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
