"""`python -m bench.memory`: memory of a `fluxwarden serve` pod (master + `--workers`), idle and
after admissions, with and without the Kubernetes client loaded (`--lookups kube|none`).

PSS (proportional set size, from /proc/PID/smaps_rollup) is what a pod is charged fairly for
pages its processes share: the sum over the pod's processes counts each shared page once.
`--tree DIR` also runs another source tree (e.g. `git archive main | tar -x -C DIR`) with the
same venv; trees and lookup settings are interleaved in rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .hostile import timed_admissions
from .report import markdown_table
from .servers import HOST, ROOT, SHIPPED_POLICIES, Certs, free_port, issue_certs

# A kubeconfig whose API server nobody answers: `--lookups kube` builds its client at start-up
# and the idle pod never calls it.
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def memory_mib(pid: int) -> tuple[float, float]:
    """(PSS, RSS) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, *rest = line.split()
        if key in ("Pss:", "Rss:"):
            values[key] = int(rest[0]) / 1024
    return values["Pss:"], values["Rss:"]


def pod_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


@contextlib.contextmanager
def serving(
    tree: Path, lookups: str, certs: Certs, kubeconfig: Path, workers: int = 1
) -> Iterator[tuple[int, int]]:
    """`fluxwarden serve --workers N` from `tree` (its own `webhook` package); yields the
    master's pid and the port, stopped with SIGTERM (as the kubelet stops a pod) on exit."""
    port = free_port()
    argv = [
        sys.executable, "-m", "webhook", "serve",
        "--policies", str(SHIPPED_POLICIES),
        "--cert-file", str(certs.cert), "--key-file", str(certs.key),
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--lookups", lookups, "--kubeconfig", str(kubeconfig),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        argv, cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(certs.ca))
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fluxwarden serve from {tree} did not become ready")
            try:
                conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
        yield process.pid, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def measure(
    tree: Path, lookups: str, certs: Certs, kubeconfig: Path, admissions: int, workers: int
) -> dict[str, float]:
    from tests.conftest import IRC_DEPLOYMENT, admission_review

    with serving(tree, lookups, certs, kubeconfig, workers) as (master, port):
        time.sleep(2.0)  # idle: start-up done, nothing in flight
        idle = [memory_mib(pid) for pid in pod_pids(master)]
        timed_admissions(
            HOST,
            port,
            ssl.create_default_context(cafile=str(certs.ca)),
            lambda: json.dumps(admission_review(IRC_DEPLOYMENT)).encode(),
            count=admissions,
        )
        busy = [memory_mib(pid) for pid in pod_pids(master)]
    return {
        "idle_pss": sum(p for p, _ in idle),
        "master_pss": idle[0][0],
        "worker_pss": max(p for p, _ in idle[1:]),
        "master_rss": idle[0][1],
        "worker_rss": max(r for _, r in idle[1:]),
        "busy_pss": sum(p for p, _ in busy),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another tree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--admissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="as the Deployment: 1")
    args = parser.parse_args(argv)
    trees = [ROOT, *(t.resolve() for t in args.tree)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fluxwarden-memory-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        certs = issue_certs(Path(tmp))
        for round_index in range(args.rounds):
            order = [(tree, lookups) for tree in trees for lookups in ("none", "kube")]
            if round_index % 2:
                order.reverse()
            for tree, lookups in order:
                row = measure(tree, lookups, certs, kubeconfig, args.admissions, args.workers)
                results.setdefault((str(tree), lookups), []).append(row)
    header = ["tree", "lookups", "idle PSS pod MiB", "master PSS", "worker PSS (max)"]
    header += ["master RSS", "worker RSS (max)", f"PSS after {args.admissions} admissions"]
    keys = ("idle_pss", "master_pss", "worker_pss", "master_rss", "worker_rss", "busy_pss")
    rows = [
        [tree, lookups, *(" / ".join(f"{m[key]:.1f}" for m in measured) for key in keys)]
        for (tree, lookups), measured in results.items()
    ]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
