"""kustomize as a library in long-lived processes: the run's pool of kustomize-servers.

A `kubectl kustomize` process spends ~0.04 CPU s starting and ~0.1 s parsing kustomize's
OpenAPI schema at its first strategic-merge patch, more than most builds take. kustomize-server
(tools/kustomize-server: krusty, the library kubectl v1.36.4 embeds, as kustomize-controller
runs it) builds one directory per request, so that cost is paid once per server. A pool holds
one server per concurrent build for the run and stops them when the run ends (`close_pools`,
called by the CLI on every exit and at interpreter exit).

Every guarantee of the CLI path holds per build: each server runs under the same address-space
limit and GOGC (the caller's `prefix` and `env`); a build that kills its server (out of memory)
is answered like the CLI's (the server's stderr, its exit status) after one more try on a fresh
server when the dead one had built before (its memory then was not all this build's); a build
over its time is a `TimeoutExpired` and its server is killed; the next build gets a new one.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

SERVER_NAME = "kustomize-server"
SERVE = "serve"
_STDERR_KEPT = 64 << 10  # the tail of a dead server's stderr read back (Go's stack dump is long)


def is_server_command(command: Sequence[str]) -> bool:
    return len(command) == 2 and command[1] == SERVE and Path(command[0]).name.endswith(SERVER_NAME)


class ServerDied(Exception):
    """The server exited while building (its exit status and stderr say why)."""


class KustomizeServer:
    """One kustomize-server process (one build at a time)."""

    def __init__(self, binary: str, prefix: Sequence[str], env: dict[str, str]) -> None:
        self.binary = binary
        self.builds = 0
        # a file, not a pipe: a dying server's stack dump must never block on a full pipe
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="fluxwarden-kustomize-")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [*prefix, binary, SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        self._pending = b""

    def build(self, directory: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """kubectl kustomize's stdout and stderr for `directory`; raises `ServerDied` or
        `subprocess.TimeoutExpired` (the server is then stopped)."""
        deadline = time.monotonic() + timeout
        args = [self.binary, SERVE, str(directory)]
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(str(directory)) + "\n").encode("utf-8"))
        except (BrokenPipeError, OSError):
            raise ServerDied from None
        try:
            status, _, size = self._read_line(deadline, args, timeout).partition(b" ")
            payload = self._read_exact(int(size), deadline, args, timeout)
        except ValueError:  # not an answer: treated as its death
            raise ServerDied from None
        self.builds += 1
        text = _as_text(payload)
        if status == b"ok":
            return subprocess.CompletedProcess(args, 0, text, "")
        return subprocess.CompletedProcess(args, 1, "", text)

    def _read_line(self, deadline: float, args: list[str], timeout: float) -> bytes:
        while b"\n" not in self._pending:
            self._read_more(deadline, args, timeout)
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _read_exact(self, size: int, deadline: float, args: list[str], timeout: float) -> bytes:
        while len(self._pending) < size:
            self._read_more(deadline, args, timeout)
        payload, self._pending = self._pending[:size], self._pending[size:]
        return payload

    def _read_more(self, deadline: float, args: list[str], timeout: float) -> None:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        remaining = deadline - time.monotonic()
        ready = select.select([descriptor], [], [], max(0.0, remaining))[0] if remaining > 0 else []
        if not ready:
            self.stop()
            raise subprocess.TimeoutExpired(args, timeout)
        chunk = os.read(descriptor, 1 << 20)
        if not chunk:
            raise ServerDied
        self._pending += chunk

    def death(self) -> subprocess.CompletedProcess[str]:
        """What the dead server left: its exit status and the tail of its stderr."""
        code = self._end()
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - _STDERR_KEPT))
        stderr = _as_text(self._stderr.read())
        self._stderr.close()
        return subprocess.CompletedProcess([self.binary, SERVE], code or 1, "", stderr)

    def stop(self) -> None:
        """End the process and close its pipes and stderr file."""
        self._end()
        self._stderr.close()

    def _end(self) -> int:
        """EOF on its stdin (it exits), a kill when it does not within 2 s; its exit status."""
        process = self.process
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        try:
            return process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def _as_text(data: bytes) -> str:
    """As `subprocess.run(text=True)` reads a pipe: the locale's encoding, universal newlines."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class ServerPool:
    """The servers of one binary for the run: an idle one is reused, else one is started."""

    def __init__(self, binary: str, prefix: Sequence[str], env: dict[str, str]) -> None:
        self.binary = binary
        self._prefix = list(prefix)
        self._env = env
        self._idle: list[KustomizeServer] = []
        self._all: set[KustomizeServer] = set()
        self._lock = threading.Lock()
        self.started = 0  # servers started (tests, bench)

    def _take(self) -> KustomizeServer:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            server = KustomizeServer(self.binary, self._prefix, self._env)
            self._all.add(server)
            self.started += 1
            return server

    def _give_back(self, server: KustomizeServer, alive: bool) -> None:
        with self._lock:
            if alive:
                self._idle.append(server)
            else:
                self._all.discard(server)

    def build(self, directory: Path, *, timeout: float) -> subprocess.CompletedProcess[str]:
        """One build, as `kubectl kustomize DIRECTORY` answers it."""
        for attempt in (1, 2):
            server = self._take()
            try:
                built = server.build(directory, timeout)
            except ServerDied:
                self._give_back(server, alive=False)
                died = server.death()
                if server.builds == 0 or attempt == 2:
                    return died
                continue  # it had built before: try the build alone on a new server
            except BaseException:
                self._give_back(server, alive=False)  # timed out (stopped) or interrupted
                server.stop()
                raise
            self._give_back(server, alive=True)
            return built
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            servers, self._all, self._idle = list(self._all), set(), []
        for server in servers:
            server.stop()

    def running(self) -> list[int]:
        """The process ids of its live servers."""
        with self._lock:
            return [s.process.pid for s in self._all if s.process.poll() is None]


_POOLS: dict[str, ServerPool] = {}
_POOLS_LOCK = threading.Lock()


def server_pool(binary: str, prefix: Sequence[str], env: dict[str, str]) -> ServerPool:
    """The run's pool for `binary` (started on first use, stopped by `close_pools`)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(binary)
        if pool is None:
            pool = _POOLS[binary] = ServerPool(binary, prefix, env)
        return pool


def close_pools() -> None:
    """Stop every server of the run (the CLI calls it when a command ends, however it ends)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)
