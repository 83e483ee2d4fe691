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

The fast path (`kustomize_server.py`): kustomize's library in a few long-lived processes
(tools/kustomize-server), one build at a time each, so start-up and the OpenAPI schema are paid
once per process, not once per build. `run_kustomize` sends a build there when the command is a
server's (`[SERVER, "serve"]`), with the same limits and the same results as the CLI.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from .kustomize_server import close_pools, is_server_command, server_pool

MEMORY_LIMIT_MIB = 4096  # address space of one run; at a 2048 limit Go had only ~760 MiB in use
_OUT_OF_MEMORY = ("fatal error: out of memory", "runtime: out of memory")
GO_COLLECTOR = {"GOGC": "400"}


_chosen: list[str] = []  # the CLI's --kustomize-server, while its command runs


def chosen_server() -> str | None:
    return _chosen[-1] if _chosen else None


@contextlib.contextmanager
def kustomize_servers(binary: str | None) -> Iterator[None]:
    """One command's run: `--kustomize-server` (None: not given) chosen while it runs, and
    every kustomize-server it started stopped when it ends (returns, raises, Ctrl-C)."""
    if binary is not None:
        _chosen.append(binary)
    try:
        yield
    finally:
        if binary is not None:
            _chosen.pop()
        close_pools()


def run_kustomize(
    command: Sequence[str], directory: Path, *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`command DIRECTORY` (kustomize build, or kubectl kustomize) with its memory bounded;
    a server command's build runs in one of the run's servers (stdout and stderr as kubectl's)."""
    if is_server_command(command):
        pool = server_pool(command[0], bounded(), go_environment())
        return pool.build(directory, timeout=timeout)
    return subprocess.run(
        [*bounded(), *command, str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=go_environment(),
    )


def bounded() -> list[str]:
    """The prefix that runs a command under the address-space limit (no Python after fork)."""
    limit_kib = MEMORY_LIMIT_MIB * 1024
    return ["/bin/sh", "-c", f'ulimit -v {limit_kib} && exec "$@"', "kustomize"]


def go_environment() -> dict[str, str]:
    return {**GO_COLLECTOR, **os.environ}


def failure(stderr: str, *, work: Path | None = None) -> str:
    """kustomize's error in one line of at most 300 characters, without the temporary copy's
    path (`work`: names inside it read as the repo's own relative paths)."""
    if any(sign in stderr for sign in _OUT_OF_MEMORY):
        return f"it needs more than {MEMORY_LIMIT_MIB} MiB of memory (YAML aliases expanding?)"
    message = " ".join(stderr.split())
    if work is not None:
        message = message.replace(f"{work}/", "").replace(str(work), ".")
    return message[:300]
