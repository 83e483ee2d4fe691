"""Large audits fanned out to forked worker processes, results in input order.

A worker is forked after the parent has set up what it works on (the files to read, or the
parsed objects and their lookups), so nothing is sent to it but the bounds of its slice; only
results come back. Small inputs, one core, or no `fork` (macOS, Windows) run in-process: the
function is the same, so the results are too.
"""

from __future__ import annotations

import gc
import marshal
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_all_start_methods, get_context
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

PARALLEL_MIN = 500  # below this many items a pool costs more than it saves
SLICES_PER_JOB = 8  # smaller slices: results stream back while others are still computed
SERIAL_SLICE = 500  # in-process, results still come in slices (a progress line can follow)

_MARSHAL, _PICKLE = b"m", b"p"
_work: tuple[Callable[[Sequence[Any]], Any], Sequence[Any], Callable[[Any], Any]] | None = None


JOBS_VARIABLE = "FLUXWARDEN_JOBS"  # how many processes when not given; 1: in-process


def available_cpus() -> int:
    """The CPUs this process may run on, bounded by a cgroup CPU quota (a CI container that
    sees 16 CPUs but may use 2), as Go's automaxprocs does."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, quota)) if quota else cpus


def _cgroup_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """Whole CPUs a cgroup quota allows (rounded up), None without a quota."""
    for quota_file, period_file in (
        (f"{root}/cpu.max", None),  # cgroup v2: "<quota> <period>" or "max <period>"
        (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us"),  # cgroup v1
    ):
        try:
            with open(quota_file, encoding="ascii") as file:
                fields = file.read().split()
            if period_file is not None:
                with open(period_file, encoding="ascii") as file:
                    fields = [fields[0], *file.read().split()]
            quota, period = fields[0], fields[1]
            if quota in ("max", "-1"):
                return None
            return -(-int(quota) // int(period))
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def jobs_for(count: int, jobs: int | None) -> int:
    """How many processes to use for `count` items: `jobs` (None: $FLUXWARDEN_JOBS, else one
    per available CPU), or 1 for small inputs (fewer than PARALLEL_MIN) and where processes
    cannot be forked."""
    if jobs is None and os.environ.get(JOBS_VARIABLE, "").strip().isdigit():
        jobs = int(os.environ[JOBS_VARIABLE])
    wanted = available_cpus() if jobs is None else jobs
    if wanted < 2 or count < max(PARALLEL_MIN, 2) or not _can_fork():
        return 1
    return min(wanted, count)


def _can_fork() -> bool:
    # macOS has fork but forking a process with system frameworks loaded is unsafe there.
    return sys.platform.startswith("linux") and "fork" in get_all_start_methods()


def ordered_map(
    function: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    *,
    jobs: int,
    encode: Callable[[list[R]], Any] = lambda result: result,
    decode: Callable[[Any], list[R]] = lambda data: data,
) -> Iterator[tuple[int, list[R]]]:
    """`(len(slice), function(slice))` for consecutive slices of `items`, in order, each
    computed in one of `jobs` forked processes (in-process with `jobs` 1). `function` must be
    pure: a slice whose worker died is computed again in-process. A worker sends back
    `encode(result)`, decoded by `decode` (e.g. dataclasses as plain tuples for marshal)."""
    if jobs < 2 or len(items) < 2:
        for start in range(0, len(items), SERIAL_SLICE):
            part = items[start : start + SERIAL_SLICE]
            yield len(part), function(part)
        return
    bounds = _slices(len(items), jobs * SLICES_PER_JOB)
    global _work
    _work = (function, items, encode)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork")) as pool:
            futures = [_submitted(pool, start, end) for start, end in bounds]
            for (start, end), future in zip(bounds, futures, strict=True):
                part = items[start:end]
                try:
                    if future is None:
                        raise BrokenProcessPool
                    payload = future.result()
                except BrokenProcessPool:  # a worker was killed (e.g. out of memory): do it here
                    yield len(part), function(part)
                    continue
                yield len(part), decode(_decoded(payload))
    finally:
        _work = None


def _submitted(pool: ProcessPoolExecutor, start: int, end: int) -> Future[bytes] | None:
    """The slice's future; None when a worker already died (the pool refuses new work then,
    and on a busy machine that can happen before every slice is submitted)."""
    try:
        return pool.submit(_run_slice, start, end)
    except BrokenProcessPool:
        return None


def _slices(count: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, count))
    edges = [count * part // parts for part in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i] < edges[i + 1]]


def _decoded(payload: bytes) -> Any:
    with paused_gc():
        if payload[:1] == _MARSHAL:
            return marshal.loads(payload[1:])
        return pickle.loads(payload[1:])


def _run_slice(start: int, end: int) -> bytes:
    """In a worker: compute one slice and encode it. marshal is several times faster than
    pickle for plain data (and keeps shared and recursive references, as YAML aliases make);
    anything it cannot take (timestamps, dataclasses) goes by pickle."""
    gc.disable()  # a short-lived worker building plain data: collections would find nothing
    assert _work is not None
    function, items, encode = _work
    result = encode(function(items[start:end]))
    try:
        return _MARSHAL + marshal.dumps(result)
    except ValueError:
        return _PICKLE + pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: building many containers that all stay alive
    (parsed manifests) otherwise triggers collections that walk every one of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
