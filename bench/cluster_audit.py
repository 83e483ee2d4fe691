"""Cluster audit benchmark: `audit_cluster` over a local kube-apiserver holding 10,000 objects.

    python -m bench.cluster_audit [--objects 10000] [--steps 2500]

Starts the control plane from `make controlplane`, installs the test CRDs, and creates the
object mix of `bench.offline_audit` with `kubectl create` in batches of 500. At each step (2,500,
5,000, ... objects) it audits the cluster in a fresh child process, once plain (wall time, peak
RSS, then the time to write the PolicyReports) and once under tracemalloc (peak Python heap):
the lists are paginated, so the heap follows the findings, not the objects listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from typing import Any

import yaml

from bench.offline_audit import (
    DEFAULT_OBJECTS,
    NAMESPACES,
    manifests,
    measure_in_child,
    namespace_of,
    peak_rss_mib,
)
from bench.report import markdown_table

BATCH = 500


def _measure(kubeconfig: str, *, traced: bool, report: bool) -> dict[str, Any]:
    from webhook.audit.cluster import audit_cluster, write_reports
    from webhook.cli import SHIPPED_POLICIES
    from webhook.kube.lookups import load_api_client
    from webhook.server.policystore import load_policy_file

    policy_set = load_policy_file(SHIPPED_POLICIES)
    api_client = load_api_client(kubeconfig)
    baseline = peak_rss_mib()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    result = audit_cluster(api_client, policy_set=policy_set, namespace=None, progress=False)
    wall = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else 0.0
    audit_rss = peak_rss_mib()
    report_s = 0.0
    if report:
        started = time.perf_counter()
        write_reports(api_client, result, report_format="wgpolicyk8s", namespace=None)
        report_s = time.perf_counter() - started
    return {
        "wall_s": wall,
        "report_s": report_s,
        "peak_rss_mib": audit_rss,
        "report_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "traced_peak_mib": traced_peak,
        "objects": result.objects,
        "results": len(result.findings),
        "problems": [p.message for p in result.problems],
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "in cluster",
        "listed+evaluated",
        "results",
        "audit s",
        "objects/s",
        "reports s",
        "peak RSS MiB",
        "+ reports MiB",
        "RSS before MiB",
        "tracemalloc peak MiB",
    ]
    cells = [
        [
            f"{row['in_cluster']}",
            f"{row['objects']}",
            f"{row['results']}",
            f"{row['wall_s']:.2f}",
            f"{row['objects'] / row['wall_s']:.0f}",
            f"{row['report_s']:.2f}",
            f"{row['peak_rss_mib']:.0f}",
            f"{row['report_rss_mib']:.0f}",
            f"{row['baseline_rss_mib']:.0f}",
            f"{row['traced_peak_mib']:.0f}",
        ]
        for row in rows
    ]
    return markdown_table(header, cells, text_columns=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_audit", description=__doc__)
    parser.add_argument("--objects", type=int, default=DEFAULT_OBJECTS)
    parser.add_argument("--steps", type=int, default=2_500, help="audit every this many objects")
    parser.add_argument("--measure", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        result = _measure(args.measure, traced=args.traced, report=not args.traced)
        print(json.dumps(result))
        return 0

    from tests.controlplane.cluster import ControlPlane
    from tests.e2e.harness import ensure_namespaces, install_crds

    objects = list(manifests(args.objects))
    rows = []
    with ControlPlane() as cluster:
        install_crds(cluster)
        namespaces = ["flux-system", *(namespace_of(i) for i in range(NAMESPACES))]
        ensure_namespaces(cluster, *namespaces)
        kubeconfig = str(cluster.kubeconfig_path)
        created = 0
        while created < len(objects):
            target = min(len(objects), created + args.steps)
            started = time.perf_counter()
            for start in range(created, target, BATCH):
                batch = objects[start : min(start + BATCH, target)]
                cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(batch))
            print(
                f"created {target} objects ({time.perf_counter() - started:.1f}s for this step)",
                file=sys.stderr,
                flush=True,
            )
            created = target
            plain = measure_in_child("bench.cluster_audit", "--measure", kubeconfig)
            traced = measure_in_child("bench.cluster_audit", "--measure", kubeconfig, "--traced")
            plain["traced_peak_mib"] = traced["traced_peak_mib"]
            plain["in_cluster"] = created
            if plain["problems"]:
                print(f"problems: {plain['problems']}", file=sys.stderr)
            rows.append(plain)
    print("cluster audit (audit_cluster: paginated LISTs + evaluate + lookups; then write_reports)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
