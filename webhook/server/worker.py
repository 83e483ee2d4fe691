"""The gunicorn worker `fluxwarden serve` runs: gevent, so a silent connection costs a greenlet,
not a thread, with every phase of a connection bounded in time.

gunicorn's own gevent worker lets a client that never finishes the TLS handshake hold its slot
forever and wraps every connection with the context it made at start-up (no certificate
rotation). This worker does the TLS itself, with the reloading context, and bounds:

- the TLS handshake (`handshake_timeout`, total),
- the first request's headers (`header_timeout`, total) and the idle time between keep-alive
  requests (`idle_timeout`),
- every single socket read or write (`io_timeout`), and the whole request body (`body_timeout`
  from the request head: one deadline for all its reads, so a body sent a byte at a time, each
  within `io_timeout`, cannot hold the connection longer; the app answers 408 and the connection
  is closed),
- the number of connections (`worker_connections`): when the pool is nearly full, the
  connections that have been waiting longest for a handshake, a request line or the rest of a
  body are closed first (a body cut short is answered 408), so hostile clients cannot fill it; a
  request being answered is never cut.

On SIGTERM it stops accepting, answers the requests in flight (bodies still arriving included)
and closes the waiting ones.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

# Fraction of `worker_connections` in use above which waiting connections are closed.
HIGH_WATER = 0.75


@dataclass
class Wait:
    """A connection waiting for its client: evictable, oldest `since` first."""

    since: float
    timeout: gevent.Timeout  # raised in the connection's greenlet to end the wait
    in_request: bool  # mid-body: evicted when crowded, but a drain lets the request finish
    active: bool = True  # false once the connection has left the wait
    ending: bool = False  # end_wait was called


def end_wait(greenlet: Any, wait: Wait) -> None:
    """End `wait` as if its timeout had fired, if the connection is still in it when the event
    loop gets to it. (`Greenlet.kill` throws into whatever the greenlet does by then: one that its
    client had just woken would take the timeout in the middle of its request, a 5xx.)"""
    wait.ending = True

    def throw() -> None:
        if wait.active and not greenlet.dead:
            greenlet.throw(wait.timeout)

    gevent.get_hub().loop.run_callback(throw)


class _Waiting:
    """A phase in which the client owes us bytes (handshake, request headers): bounded in time
    and, while it lasts, evictable by a new connection."""

    def __init__(self, worker: HardenedWorker, seconds: float) -> None:
        self.worker, self.timeout = worker, gevent.Timeout(seconds, False)
        self.greenlet = gevent.getcurrent()

    def __enter__(self) -> _Waiting:
        self.timeout.start()
        self.wait = Wait(time.monotonic(), self.timeout, in_request=False)
        self.worker.waiting[self.greenlet] = self.wait
        self._socket_timeout(None)  # this phase has its own total limit
        return self

    def __exit__(self, *exc: object) -> bool | None:
        self.wait.active = False
        self.worker.waiting.pop(self.greenlet, None)
        self._socket_timeout(self.worker.io_timeout)
        return self.timeout.__exit__(*exc)  # type: ignore[no-any-return]

    def _socket_timeout(self, seconds: float | None) -> None:
        sock = self.worker.sockets_of.get(self.greenlet)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(seconds)


class _DeadlineBody:
    """gunicorn's request body with every read under one deadline: a read that blocks cannot
    outlive it, and while a read waits the connection is evictable. Past the deadline (or
    evicted) a read raises TimeoutError, which the app answers 408."""

    def __init__(self, worker: HardenedWorker, body: Any, seconds: float) -> None:
        self.worker, self.body = worker, body
        self.since = time.monotonic()
        self.deadline = self.since + seconds
        self.timed_out = False

    @property
    def failed(self) -> bool:
        """gunicorn's parser reads this before draining an unread rest: true closes the
        connection instead (where the next request starts is unknown)."""
        return self.timed_out or getattr(self.body, "failed", False) is True

    def read(self, size: int | None = None) -> bytes:
        return self._within_deadline(self.body.read, size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = None) -> bytes:
        return self._within_deadline(self.body.readline, size)  # type: ignore[no-any-return]

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self._within_deadline(self.body.readlines, size)  # type: ignore[no-any-return]

    def __iter__(self) -> _DeadlineBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _within_deadline(self, read: Callable[[int | None], Any], size: int | None) -> Any:
        remaining = self.deadline - time.monotonic()
        if self.timed_out or remaining <= 0:
            self.timed_out = True
            raise TimeoutError("request body not received in time")
        me = gevent.getcurrent()
        timeout = gevent.Timeout(remaining)
        # Draining an unread rest happens inside the wait for the next request: that wait stays.
        outer = self.worker.waiting.get(me)
        wait = self.worker.waiting[me] = Wait(self.since, timeout, in_request=outer is None)
        timeout.start()
        try:
            return read(size)
        except gevent.Timeout as fired:
            if fired is not timeout:
                raise
            self.timed_out = True
            raise TimeoutError("request body not received in time") from None
        finally:
            wait.active = False
            timeout.close()
            if outer is None:
                self.worker.waiting.pop(me, None)
            else:
                self.worker.waiting[me] = outer


class HardenedWorker(GeventWorker):  # type: ignore[misc]
    """Set by `worker_class()`: the TLS context source (None = plain HTTP) and the limits."""

    tls_context: Callable[[], ssl.SSLContext] | None = None
    handshake_timeout = 5.0
    header_timeout = 5.0
    idle_timeout = 30.0
    io_timeout = 5.0
    body_timeout = 5.0
    sockets: list[Any]  # gunicorn's listeners (set by the base class)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: dict[Any, Wait] = {}
        self.served: dict[Any, int] = {}
        self.sockets_of: dict[Any, Any] = {}

    def patch(self) -> None:
        """gunicorn's patch, minus a second `patch_all` when the master already patched:
        patching again walks every object (`gc.get_objects`), which writes to the pages the
        preloaded app shares with the master and makes them this worker's own."""
        import socket

        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            monkey.patch_all()
        self.sockets = [
            socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets
        ]

    def timeout_ctx(self) -> _Waiting:
        """Around each wait for request headers: the first one, then the keep-alive idle time."""
        me = gevent.getcurrent()
        first = self.served.get(me, 0) == 0
        self.served[me] = self.served.get(me, 0) + 1
        return _Waiting(self, self.header_timeout if first else self.idle_timeout)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        from . import metrics

        me = gevent.getcurrent()
        metrics.CONNECTIONS.inc()
        try:
            self._evict_if_crowded()
            client.settimeout(self.io_timeout)
            self.sockets_of[me] = client
            if self.tls_context is not None:
                with _Waiting(self, self.handshake_timeout):
                    client = self.tls_context().wrap_socket(
                        client, server_side=True, do_handshake_on_connect=False
                    )
                    client.do_handshake()
                    self.sockets_of[me] = client
                if not _handshake_done(client):
                    client.close()
                    return
            AsyncWorker.handle(self, listener, client, addr)
        except (OSError, ssl.SSLError):
            client.close()  # a failed or abandoned handshake: nothing to answer
        finally:
            self.served.pop(me, None)
            self.waiting.pop(me, None)
            self.sockets_of.pop(me, None)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        body = req.body = (
            _DeadlineBody(self, req.body, self.body_timeout) if req.body is not None else None
        )
        super().handle_request(listener_name, req, sock, addr)
        if body is not None and body.timed_out:
            raise StopIteration  # answered (408); the rest of the body is unknown: close

    def _evict_if_crowded(self) -> None:
        pool = getattr(self, "_pool", None)
        size = self.worker_connections
        in_use = len(self.served) + len(self.waiting)
        if pool is not None:
            in_use = pool.size - pool.free_count()
        evictable = [item for item in self.waiting.items() if not item[1].ending]
        # Connections already being ended still hold their slots until the loop ends them.
        excess = in_use - int(size * HIGH_WATER) - (len(self.waiting) - len(evictable))
        if excess <= 0 or not evictable:
            return
        for greenlet, wait in sorted(evictable, key=lambda item: item[1].since)[:excess]:
            end_wait(greenlet, wait)

    def run(self) -> None:
        # Keep a handle on the pool(s) gunicorn creates, to know how full they are.
        from gevent import pool as gevent_pool

        original = gevent_pool.Pool
        worker = self

        class _Pool(original):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                worker._pool = self

        import gunicorn.workers.ggevent as ggevent

        ggevent.Pool = _Pool
        gevent.spawn(self._end_waits_when_stopping)
        try:
            super().run()
        finally:
            ggevent.Pool = original

    def _end_waits_when_stopping(self) -> None:
        """After SIGTERM, close the connections that have no request in flight (waiting for a
        handshake or for a request, idle keep-alives included): the drain then waits only for
        requests being received or answered (each bounded), not for the API server's pooled idle
        connections to time out."""
        while self.alive:
            gevent.sleep(0.1)
        while True:  # until the worker exits: a connection may go idle after its last answer
            for greenlet, wait in list(self.waiting.items()):
                if not wait.in_request and not wait.ending:
                    end_wait(greenlet, wait)
            gevent.sleep(0.1)


def _handshake_done(sock: Any) -> bool:
    try:
        return sock.version() is not None  # None until the handshake completed
    except (OSError, ValueError):
        return False


def worker_class(
    tls_context: Callable[[], ssl.SSLContext] | None,
    *,
    handshake_timeout: float,
    header_timeout: float,
    idle_timeout: float,
    io_timeout: float,
    body_timeout: float,
) -> type[HardenedWorker]:
    """A worker class bound to these settings (gunicorn instantiates it in each worker)."""
    return type(
        "FluxwardenWorker",
        (HardenedWorker,),
        {
            "tls_context": staticmethod(tls_context) if tls_context else None,
            "handshake_timeout": handshake_timeout,
            "header_timeout": header_timeout,
            "idle_timeout": idle_timeout,
            "io_timeout": io_timeout,
            "body_timeout": body_timeout,
        },
    )
