"""Rendered audit benchmark: `fluxwarden audit` of a real Flux repo, every Flux Kustomization
built with kustomize, in a fresh child process.

    python -m bench.rendered_audit [PATH] [--baseline CHECKOUT [--rounds N] [--fix-check]]

With --fix-check the interleaved runs are `fluxwarden fix --check PATH` (the diff it prints and
its exit code compared between the trees) instead of the audit.

PATH defaults to $FLUXWARDEN_BENCH_REPO, else /tmp/render/home-ops. Bring onedr0p/home-ops
there yourself (this script never fetches anything); without it the benchmark is skipped with
a message, as in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import markdown_table

DEFAULT_REPO = "/tmp/render/home-ops"
TARGET_S = 5.0
CPU: list[float] = []  # CPU seconds of each timed run, in order


def kubectl() -> str | None:
    from tests.controlplane.cluster import default_bin_dir

    built = default_bin_dir() / "kubectl"
    return str(built) if built.is_file() else None


def _timed_audit(
    repo: Path, env: dict[str, str], tree: str | None, *, fix_check: bool = False
) -> tuple[float, str]:
    run_env = {**env, "PYTHONPATH": tree} if tree else {**env, **_server_env()}
    command = ["fix", "--check"] if fix_check else ["audit", "-o", "json"]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", *command, str(repo)],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=tree or None,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run and its kustomize processes
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise SystemExit(f"rendered audit failed (exit {done.returncode}): {done.stderr[:300]}")
    if fix_check:  # what fix --check says: its exit code, the files and the diff
        import hashlib

        digest = hashlib.sha256(done.stdout.encode()).hexdigest()[:16]
        would = done.stderr.count("would fix ")
        return (
            wall,
            f'{{"summary": {{"exit": {done.returncode}, "wouldFix": {would}, "diff": "{digest}"}}}}',
        )
    return wall, done.stdout


def _server_env() -> dict[str, str]:
    """This tree renders through its kustomize-server when built (`make setup`), as `make demo`
    does; $FLUXWARDEN_KUSTOMIZE_SERVER (e.g. "off") overrides. A baseline tree ignores it."""
    if "FLUXWARDEN_KUSTOMIZE_SERVER" in os.environ:
        return {}
    from webhook.audit.render import checkout_server

    server = checkout_server()
    return {"FLUXWARDEN_KUSTOMIZE_SERVER": server} if server else {}


def compare(
    repo: Path, env: dict[str, str], baseline: str, rounds: int, *, fix_check: bool = False
) -> int:
    """This tree against `baseline` (another checkout), alternating runs; summaries compared."""
    import json
    import statistics

    walls: dict[str, list[float]] = {"baseline": [], "this tree": []}
    cpus: dict[str, list[float]] = {"baseline": [], "this tree": []}
    summaries: dict[str, Any] = {}
    outputs: dict[str, set[str]] = {"baseline": set(), "this tree": set()}
    print(f"load average at start {os.getloadavg()}, this tree's server: {_server_env()}")
    for _ in range(rounds):
        for name, tree in (("baseline", baseline), ("this tree", None)):
            wall, out = _timed_audit(repo, env, tree, fix_check=fix_check)
            walls[name].append(wall)
            cpus[name].append(CPU[-1])
            summaries[name] = json.loads(out)["summary"]
            outputs[name].add(out)
    same = len(outputs["baseline"] | outputs["this tree"]) == 1
    base, this = statistics.median(walls["baseline"]), statistics.median(walls["this tree"])
    what = "fix --check" if fix_check else "rendered audit"
    print(f"{what} of {repo}, {rounds} interleaved rounds, load average {os.getloadavg()}")
    print(f"summaries: {summaries}")
    print(f"outputs identical across trees and rounds: {same}")
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
    headers = ["code", "wall s per round", "median s", "median CPU s"]
    print(markdown_table(headers, rows, text_columns=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`[PATH] [--baseline CHECKOUT [--rounds N]]`"""
    args = list(sys.argv[1:] if argv is None else argv)
    baseline, rounds = None, 3
    fix_check = "--fix-check" in args
    if fix_check:
        args.remove("--fix-check")
    if "--baseline" in args:
        at = args.index("--baseline")
        baseline = args[at + 1]
        del args[at : at + 2]
    if "--rounds" in args:
        at = args.index("--rounds")
        rounds = int(args[at + 1])
        del args[at : at + 2]
    repo = Path(args[0] if args else os.environ.get("FLUXWARDEN_BENCH_REPO") or DEFAULT_REPO)
    if not repo.is_dir():
        print(
            f"rendered audit: skipped, no repo at {repo} (clone onedr0p/home-ops there or set "
            "FLUXWARDEN_BENCH_REPO; the benchmark never fetches)"
        )
        return 0
    env = dict(os.environ)
    binary = kubectl()
    if binary and "FLUXWARDEN_KUSTOMIZE" not in env:
        env["FLUXWARDEN_KUSTOMIZE"] = binary
    if baseline:
        return compare(repo, env, baseline, rounds, fix_check=fix_check)
    wall, out = _timed_audit(repo, env, None)  # exits with the error when the audit fails
    import json

    summary = json.loads(out)["summary"]
    print(f"rendered audit of {repo} (target <= {TARGET_S:.0f} s)")
    print(
        markdown_table(
            ["repo", "objects", "fail", "input errors", "wall s"],
            [
                [
                    repo.name,
                    str(summary["objects"]),
                    str(summary["fail"]),
                    str(summary["inputErrors"]),
                    f"{wall:.2f}",
                ]
            ],
            text_columns=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
