"""Rendered audit benchmark: `fluxwarden audit` of a real Flux repo, every Flux Kustomization
built with kustomize, in a fresh child process.

    python -m bench.rendered_audit [PATH]

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

from bench.report import markdown_table

DEFAULT_REPO = "/tmp/render/home-ops"
TARGET_S = 5.0


def kubectl() -> str | None:
    from tests.controlplane.cluster import default_bin_dir

    built = default_bin_dir() / "kubectl"
    return str(built) if built.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
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
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "audit", "-o", "json", str(repo)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        print(f"rendered audit: failed (exit {done.returncode}): {done.stderr.strip()[:300]}")
        return 1
    import json

    summary = json.loads(done.stdout)["summary"]
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
