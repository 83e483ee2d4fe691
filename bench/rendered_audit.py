"""Rendered audit benchmark: `fluxwarden audit` of a real Flux repo, every Flux Kustomization
built with kustomize, in a fresh child process.

    python -m bench.rendered_audit [PATH] [--baseline CHECKOUT [--rounds N]]

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


def kubectl() -> str | None:
    from tests.controlplane.cluster import default_bin_dir

    built = default_bin_dir() / "kubectl"
    return str(built) if built.is_file() else None


def _timed_audit(repo: Path, env: dict[str, str], tree: str | None) -> tuple[float, str]:
    run_env = {**env, "PYTHONPATH": tree} if tree else env
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "audit", "-o", "json", str(repo)],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=tree or None,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"rendered audit failed (exit {done.returncode}): {done.stderr[:300]}")
    return wall, done.stdout


def compare(repo: Path, env: dict[str, str], baseline: str, rounds: int) -> int:
    """This tree against `baseline` (another checkout), alternating runs; summaries compared."""
    import json
    import statistics

    walls: dict[str, list[float]] = {"baseline": [], "this tree": []}
    summaries: dict[str, Any] = {}
    for _ in range(rounds):
        for name, tree in (("baseline", baseline), ("this tree", None)):
            wall, out = _timed_audit(repo, env, tree)
            walls[name].append(wall)
            summaries[name] = json.loads(out)["summary"]
    base, this = statistics.median(walls["baseline"]), statistics.median(walls["this tree"])
    print(f"rendered audit of {repo}, {rounds} interleaved rounds")
    print(f"summaries: {summaries}")
    rows = [
        [name, " ".join(f"{w:.2f}" for w in ws), f"{statistics.median(ws):.2f}"]
        for name, ws in walls.items()
    ]
    rows.append(["baseline / this tree", "", f"{base / this:.2f}x"])
    print(markdown_table(["code", "wall s per round", "median s"], rows, text_columns=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`[PATH] [--baseline CHECKOUT [--rounds N]]`"""
    args = list(sys.argv[1:] if argv is None else argv)
    baseline, rounds = None, 3
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
        return compare(repo, env, baseline, rounds)
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
