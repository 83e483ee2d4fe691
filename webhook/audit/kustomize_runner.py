"""Runs the real kustomize, bounded in time and memory.

kustomize expands every YAML alias of the files it loads, and not every file it loads is one
fluxwarden parses first (a resource without a .yaml suffix, a patch file): a few hundred bytes of
aliases in a pull request ask it for tens of gigabytes. Each run gets an address-space limit
(`ulimit -v`, through the POSIX shell, so no Python code runs between fork and exec) and a
timeout; a run that hits the limit is reported as such, not as a Go stack dump.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

MEMORY_LIMIT_MIB = 4096  # address space of one run; at a 2048 limit Go had only ~760 MiB in use
_OUT_OF_MEMORY = ("fatal error: out of memory", "runtime: out of memory")


def run_kustomize(
    command: Sequence[str], directory: Path, *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`command DIRECTORY` (kustomize build, or kubectl kustomize) with its memory bounded."""
    limit_kib = MEMORY_LIMIT_MIB * 1024
    bounded = ["/bin/sh", "-c", f'ulimit -v {limit_kib} && exec "$@"', "kustomize"]
    return subprocess.run(
        [*bounded, *command, str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def failure(stderr: str, *, work: Path | None = None) -> str:
    """kustomize's error in one line of at most 300 characters, without the temporary copy's
    path (`work`: names inside it read as the repo's own relative paths)."""
    if any(sign in stderr for sign in _OUT_OF_MEMORY):
        return f"it needs more than {MEMORY_LIMIT_MIB} MiB of memory (YAML aliases expanding?)"
    message = " ".join(stderr.split())
    if work is not None:
        message = message.replace(f"{work}/", "").replace(str(work), ".")
    return message[:300]
