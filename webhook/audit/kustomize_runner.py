"""Runs the real kustomize, bounded in time and memory.

kustomize expands every YAML alias of the files it loads, and not every file it loads is one
fluxwarden parses first (a resource without a .yaml suffix, a patch file): a few hundred bytes of
aliases in a pull request ask it for tens of gigabytes. Each run gets an address-space limit
(`ulimit -v`, through the POSIX shell, so no Python code runs between fork and exec) and a
timeout; a run that hits the limit is reported as such, not as a Go stack dump.

A build is a short Go process whose heap is mostly garbage it never needs back (kustomize parses
its OpenAPI schema in every process): its collector runs at GOGC=400 instead of Go's 100, a
fifth less CPU per build for about 30 MiB more memory (measured on a 13-member batch, 0.27 ->
0.21 CPU s). No GOMEMLIMIT: near a soft limit Go collects without end, and an alias bomb took
37 s instead of seconds to reach the hard one. A GOGC the user set is kept.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

MEMORY_LIMIT_MIB = 4096  # address space of one run; at a 2048 limit Go had only ~760 MiB in use
_OUT_OF_MEMORY = ("fatal error: out of memory", "runtime: out of memory")
GO_COLLECTOR = {"GOGC": "400"}


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
        env={**GO_COLLECTOR, **os.environ},
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
