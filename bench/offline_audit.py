"""Offline audit benchmark: generated Flux manifests through `audit_documents`.

    python -m bench.offline_audit [--objects 10000] [--baseline CHECKOUT [--rounds N]]
    python -m bench.offline_audit --peer kyverno [--releases 10000] [--rounds N]

Writes the manifests into a temporary directory (one file per object, a directory per
namespace, like a fleet repository), then audits it in a fresh child process so the peak RSS
is the audit's own: once plain (wall time, peak RSS) and once under tracemalloc (peak Python
heap). The object mix is shared with `bench.cluster_audit`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.report import markdown_table

Obj = dict[str, Any]
DEFAULT_OBJECTS = 10_000
NAMESPACES = 50
FLUX_CONTROLLERS = (
    "image-reflector-controller",
    "source-controller",
    "kustomize-controller",
    "helm-controller",
)


def namespace_of(index: int) -> str:
    return f"team-{index % NAMESPACES:02}"


def _deployment(name: str, namespace: str, args: list[str], replicas: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "manager",
                            "image": f"ghcr.io/example/{name}:v1",
                            "args": args,
                            "resources": {"limits": {"memory": "1Gi"}},
                        }
                    ]
                },
            },
        },
    }


def _depends_on(prefix: str, index: int) -> list[Obj]:
    # Chains two hops deep across namespaces: X-i -> X-(i-10) -> X-(i-20).
    if index < 20 or (index // 10) % 3 == 0:
        return []
    return [{"name": f"{prefix}-{index - 10}", "namespace": namespace_of(index - 10)}]


def manifests(count: int) -> Iterator[Obj]:
    """`count` objects: the Flux controllers, then 50% HelmReleases (a quarter without drift
    detection), 40% Kustomizations (a third with dependsOn) and 10% Deployments no policy targets,
    spread over 50 namespaces."""
    for index, name in enumerate(FLUX_CONTROLLERS[: min(count, len(FLUX_CONTROLLERS))]):
        yield _deployment(name, "flux-system", ["--log-level=info"], 2 if index == 0 else 1)
    for index in range(len(FLUX_CONTROLLERS), count):
        namespace, slot = namespace_of(index), index % 10
        if slot < 5:
            spec: Obj = {
                "interval": "10m",
                "chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository"}}},
                "values": {"replicaCount": 2, "ingress": {"enabled": True}},
            }
            if index % 4:
                spec["driftDetection"] = {"mode": "enabled"}
            if dependencies := _depends_on("hr", index):
                spec["dependsOn"] = dependencies
            yield {
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": f"hr-{index}", "namespace": namespace},
                "spec": spec,
            }
        elif slot < 9:
            spec = {
                "interval": "10m",
                "path": f"./apps/{index}",
                "prune": True,
                "sourceRef": {"kind": "GitRepository", "name": "fleet", "namespace": "flux-system"},
            }
            if dependencies := _depends_on("ks", index):
                spec["dependsOn"] = dependencies
            yield {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": f"ks-{index}", "namespace": namespace},
                "spec": spec,
            }
        else:
            yield _deployment(f"web-{index}", namespace, [], 3)


def write_tree(root: Path, count: int) -> int:
    for obj in manifests(count):
        meta = obj["metadata"]
        directory = root / meta["namespace"]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{obj['kind'].lower()}-{meta['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return count


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(root: str, *, traced: bool) -> dict[str, Any]:
    from webhook.audit.documents import load
    from webhook.audit.offline import audit_documents
    from webhook.cli import SHIPPED_POLICIES
    from webhook.server.policystore import load_policy_file

    policy_set = load_policy_file(SHIPPED_POLICIES)
    baseline = peak_rss_mib()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    # As `fluxwarden audit` runs: parsed and evaluated by one process per CPU.
    report = audit_documents(load([root], jobs=None), policy_set=policy_set, jobs=None)
    wall = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else 0.0
    return {
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "traced_peak_mib": traced_peak,
        "objects": report.objects,
        "results": len(report.findings),
        "counts": report.counts(),
    }


def measure_in_child(module: str, *args: str, tree: str | None = None) -> dict[str, Any]:
    """Run `python -m <module> --measure ...` and return the JSON it prints; with `tree`, the
    code (webhook and bench) of that checkout instead of this one."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tree or None,
    )
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "objects",
        "results",
        "wall s",
        "objects/s",
        "peak RSS MiB",
        "RSS before MiB",
        "tracemalloc peak MiB",
    ]
    cells = [
        [
            f"{row['objects']}",
            f"{row['results']}",
            f"{row['wall_s']:.2f}",
            f"{row['objects'] / row['wall_s']:.0f}",
            f"{row['peak_rss_mib']:.0f}",
            f"{row['baseline_rss_mib']:.0f}",
            f"{row['traced_peak_mib']:.0f}",
        ]
        for row in rows
    ]
    return markdown_table(header, cells, text_columns=0)


def compare(baseline: str, *, objects: int, rounds: int) -> int:
    """This tree against `baseline`, alternating child processes (so both see the same machine
    load), on the same generated manifests; the counts must be identical."""
    with tempfile.TemporaryDirectory(prefix="fluxwarden-bench-") as tmp:
        write_tree(Path(tmp), objects)
        walls: dict[str, list[float]] = {"baseline": [], "this tree": []}
        cpus: dict[str, list[float]] = {"baseline": [], "this tree": []}
        counts: dict[str, Any] = {}
        for _ in range(rounds):
            for name, tree in (("baseline", baseline), ("this tree", None)):
                before = _children_cpu()
                row = measure_in_child("bench.offline_audit", "--measure", tmp, tree=tree)
                cpus[name].append(_children_cpu() - before)
                walls[name].append(row["wall_s"])
                counts[name] = row["counts"]
    if counts["baseline"] != counts["this tree"]:
        print(f"different results: {counts}")
        return 1
    base, this = statistics.median(walls["baseline"]), statistics.median(walls["this tree"])
    print(f"offline audit of {objects} manifests, {rounds} interleaved rounds, same counts")
    rows = [
        [
            name,
            " ".join(f"{w:.2f}" for w in ws),
            f"{statistics.median(ws):.2f}",
            f"{statistics.median(cpus[name]):.2f}",
        ]
        for name, ws in walls.items()
    ]
    cpu_ratio = statistics.median(cpus["baseline"]) / statistics.median(cpus["this tree"])
    rows.append(["baseline / this tree", "", f"{base / this:.2f}x", f"{cpu_ratio:.2f}x"])
    header = ["code", "wall s per round", "median s", "CPU s (median)"]
    print(markdown_table(header, rows, text_columns=1))
    print(
        "CPU s: the whole child process (imports included) and its workers, user + system; "
        "wall s: the audit alone. On a loaded machine only CPU s is steady."
    )
    return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.offline_audit", description=__doc__)
    parser.add_argument("--objects", type=int, default=DEFAULT_OBJECTS)
    parser.add_argument("--measure", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time another checkout (e.g. a `git worktree` of main), interleaved round by "
        "round with this one, and report the ratio of the medians",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds with --baseline or --peer")
    parser.add_argument(
        "--peer",
        choices=["kyverno"],
        help="instead: fluxwarden's audit and fix against `kubectl-kyverno apply` on "
        "--releases HelmReleases and the Flux controllers (bench/offline_peer.py)",
    )
    parser.add_argument("--releases", type=int, default=10_000, help="HelmReleases with --peer")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(args.measure, traced=args.traced)))
        return 0
    if args.peer:
        if not 1 <= args.rounds <= 20 or not 1 <= args.releases <= 100_000:
            raise SystemExit("--rounds 1..20, --releases 1..100000")
        from bench import offline_peer

        return offline_peer.main(releases=args.releases, rounds=args.rounds)
    if args.baseline:
        return compare(args.baseline, objects=args.objects, rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="fluxwarden-bench-") as tmp:
        started = time.perf_counter()
        write_tree(Path(tmp), args.objects)
        print(
            f"wrote {args.objects} manifests in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        plain = measure_in_child("bench.offline_audit", "--measure", tmp)
        traced = measure_in_child("bench.offline_audit", "--measure", tmp, "--traced")
    plain["traced_peak_mib"] = traced["traced_peak_mib"]
    print(f"offline audit (audit_documents: parse + evaluate), counts {plain['counts']}")
    print(table([plain]))
    from bench import rendered_audit  # `make bench` runs this module: report both audits

    return rendered_audit.main([])


if __name__ == "__main__":
    sys.exit(main())
