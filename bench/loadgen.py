"""A bounded, loopback-only HTTPS load generator: keep-alive connections in a process pool.

Each client process runs `connections` threads, one keep-alive `http.client` connection each,
closed-loop (next request when the previous answer is read). All processes start on the same
wall-clock instant, warm up (TLS handshakes, server caches) and then measure for a fixed time.
Every connection also stops after `max_requests`, so a run is bounded in time and in count.
"""

from __future__ import annotations

import http.client
import ipaddress
import multiprocessing
import multiprocessing.pool
import resource
import ssl
import threading
import time
from dataclasses import dataclass, field

LOOPBACK = ("127.0.0.1", "::1", "localhost")
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    ca_file: str
    path: str
    head: bytes  # body before the uid
    tail: bytes  # body after the uid
    uid_prefix: str  # measured requests get `<uid_prefix><proc>-<conn>-<n>`
    warmup_prefix: str
    connections: int  # per process
    start_at: float  # time.time() at which all processes begin (warm-up)
    warmup: float
    duration: float
    max_requests: int  # per connection, warm-up included


@dataclass
class ConnectionResult:
    latencies: list[float] = field(default_factory=list)  # seconds, measured window only
    errors: int = 0
    error_sample: str = ""


@dataclass
class ProcessResult:
    latencies: list[float]
    errors: int
    error_sample: str
    cpu_seconds: float  # user + system CPU this client process spent in the task


@dataclass
class LoadResult:
    latencies: list[float]
    errors: int
    error_sample: str
    duration: float
    client_cpu_seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


def check_loopback(host: str) -> None:
    if host in LOOPBACK:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the benchmark only targets loopback addresses, not {host!r}")


def _context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _connection(spec: LoadSpec, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        spec.host, spec.port, context=context, timeout=REQUEST_TIMEOUT
    )


def _drive(spec: LoadSpec, proc: int, index: int, out: ConnectionResult) -> None:
    context = _context(spec.ca_file)
    conn = _connection(spec, context)
    headers = {"Content-Type": "application/json"}
    measure_from = spec.start_at + spec.warmup
    stop_at = measure_from + spec.duration
    delay = spec.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    try:
        for n in range(spec.max_requests):
            now = time.time()
            if now >= stop_at:
                break
            measured = now >= measure_from
            prefix = spec.uid_prefix if measured else spec.warmup_prefix
            body = spec.head + f"{prefix}{proc}-{index}-{n}".encode() + spec.tail
            started = time.perf_counter()
            try:
                conn.request("POST", spec.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if not ok and not out.error_sample:
                    out.error_sample = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as error:
                ok = False
                if not out.error_sample:
                    out.error_sample = f"{type(error).__name__}: {error}"
                conn.close()
                conn = _connection(spec, context)
            elapsed = time.perf_counter() - started
            if measured:
                if ok:
                    out.latencies.append(elapsed)
                else:
                    out.errors += 1
    finally:
        conn.close()


def run_in_process(spec: LoadSpec, proc: int) -> ProcessResult:
    """One client process: `spec.connections` threads, one connection each."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    results = [ConnectionResult() for _ in range(spec.connections)]
    threads = [
        threading.Thread(target=_drive, args=(spec, proc, i, results[i]), daemon=True)
        for i in range(spec.connections)
    ]
    for thread in threads:
        thread.start()
    deadline = spec.start_at + spec.warmup + spec.duration + REQUEST_TIMEOUT + 5
    for thread in threads:
        thread.join(max(0.0, deadline - time.time()))
    after = resource.getrusage(resource.RUSAGE_SELF)
    latencies = [x for r in results for x in r.latencies]
    errors = sum(r.errors for r in results)
    errors += sum(1 for t in threads if t.is_alive())  # a hung connection counts as an error
    sample = next((r.error_sample for r in results if r.error_sample), "")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ProcessResult(latencies, errors, sample, cpu)


class LoadGenerator:
    """A pool of client processes, reused for every scenario of a run."""

    def __init__(self, processes: int, connections: int) -> None:
        if processes < 1 or connections < processes:
            raise ValueError("need at least one process and one connection per process")
        self.processes = processes
        self.per_process = [connections // processes] * processes
        for i in range(connections % processes):
            self.per_process[i] += 1
        self._pool: multiprocessing.pool.Pool | None = None

    def __enter__(self) -> LoadGenerator:
        self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def run(self, spec: LoadSpec) -> LoadResult:
        check_loopback(spec.host)
        assert self._pool is not None, "use LoadGenerator as a context manager"
        specs = [
            (LoadSpec(**{**spec.__dict__, "connections": n}), proc)
            for proc, n in enumerate(self.per_process)
        ]
        pending = self._pool.starmap_async(run_in_process, specs)
        limit = spec.start_at - time.time() + spec.warmup + spec.duration + REQUEST_TIMEOUT + 15
        parts: list[ProcessResult] = pending.get(timeout=max(1.0, limit))
        return LoadResult(
            latencies=[x for p in parts for x in p.latencies],
            errors=sum(p.errors for p in parts),
            error_sample=next((p.error_sample for p in parts if p.error_sample), ""),
            duration=spec.duration,
            client_cpu_seconds=sum(p.cpu_seconds for p in parts),
        )
