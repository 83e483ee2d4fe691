"""Hostile clients on loopback: connections that hold the server's attention and send nothing
useful, kept open (reopened when the server closes them) while admissions are timed.

Kinds: `idle-tls` (handshake done, no request), `slow-headers` (handshake, then one header byte
every 0.5 s, never finishing), `silent-tcp` (connected, no TLS handshake), and on request
`slow-body` (a whole request head, then one body byte every 0.5 s, never finishing). Used by
`python -m bench.hostile` (every server of `bench.servers`) and by `tests/server/test_hostile_clients.py`. Bounded: `count`
connections, `duration` seconds at most, everything closed on exit.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

KINDS = ("idle-tls", "slow-headers", "silent-tcp")
ALL_KINDS = (*KINDS, "slow-body")
SLOW_BODY_HEAD = (
    b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 65536\r\n\r\n"
)
DRIBBLED = ("slow-headers", "slow-body")  # the kinds fed a byte every 0.5 s
LOOPBACK = ("127.0.0.1", "::1", "localhost")
HOST = "127.0.0.1"


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    next_byte: float = 0.0


@dataclass
class Hostiles:
    """The hostile connections; `reopened` counts those the server closed (and we reopened)."""

    host: str
    port: int
    context: ssl.SSLContext
    conns: list[_Conn] = field(default_factory=list)
    reopened: int = 0
    failed_opens: int = 0
    closed_by_server: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_KINDS, 0))
    # Status codes of what the server answered before closing, per kind (e.g. {"408": 3}).
    answers: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {} for kind in ALL_KINDS}
    )

    def open(self, kind: str) -> _Conn | None:
        raw = socket.create_connection((self.host, self.port), timeout=5)
        try:
            if kind == "silent-tcp":
                return _Conn(kind, raw)
            tls = self.context.wrap_socket(raw, server_hostname=self.host)
            if kind == "slow-headers":
                tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
            if kind == "slow-body":
                tls.sendall(SLOW_BODY_HEAD)
            return _Conn(kind, tls, time.monotonic() + 0.5)
        except (OSError, ssl.SSLError):
            raw.close()
            self.failed_opens += 1
            return None

    def tend(self) -> None:
        """One round: reopen connections the server closed, feed the slow ones a byte."""
        readable, _, _ = select.select([c.sock for c in self.conns], [], [], 0.1)
        closed = set()
        kind_of = {c.sock: c.kind for c in self.conns}
        for sock in readable:
            try:
                sock.setblocking(False)
                data = sock.recv(65536)
                if not data:
                    closed.add(sock)
                elif data.startswith(b"HTTP/1.1 "):
                    counts = self.answers[kind_of[sock]]
                    status = data[9:12].decode(errors="replace")
                    counts[status] = counts.get(status, 0) + 1
            except ssl.SSLWantReadError:
                pass
            except OSError:
                closed.add(sock)
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(True)
        now = time.monotonic()
        for index, conn in enumerate(self.conns):
            if conn.kind in DRIBBLED and conn.sock not in closed and now >= conn.next_byte:
                try:
                    conn.sock.sendall(b"X" if conn.kind == "slow-headers" else b" ")
                    conn.next_byte = now + 0.5
                except OSError:
                    closed.add(conn.sock)
            if conn.sock in closed:
                self.closed_by_server[conn.kind] += 1
                conn.sock.close()
                again = self.open(conn.kind)
                if again is not None:
                    self.conns[index] = again
                    self.reopened += 1

    def close(self) -> None:
        for conn in self.conns:
            conn.sock.close()
        self.conns.clear()


@contextlib.contextmanager
def hostile_connections(
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    count: int,
    duration: float,
    kinds: tuple[str, ...] = KINDS,
) -> Iterator[Hostiles]:
    """`count` hostile connections (`kinds` in turn), tended by a thread for at most `duration`."""
    if host not in LOOPBACK:
        raise ValueError(f"hostile clients target loopback only, not {host}")
    if unknown := set(kinds) - set(ALL_KINDS):
        raise ValueError(f"unknown hostile kinds {sorted(unknown)}, known: {ALL_KINDS}")
    hostiles = Hostiles(host, port, context)
    for index in range(count):
        conn = hostiles.open(kinds[index % len(kinds)])
        if conn is not None:
            hostiles.conns.append(conn)
    stop = threading.Event()
    ends = time.monotonic() + duration

    def tend() -> None:
        while not stop.is_set() and time.monotonic() < ends and hostiles.conns:
            hostiles.tend()

    tender = threading.Thread(target=tend, daemon=True)
    tender.start()
    try:
        time.sleep(0.5)  # let the server take them all in
        yield hostiles
    finally:
        stop.set()
        tender.join(timeout=5)
        hostiles.close()


def timed_admissions(
    host: str,
    port: int,
    context: ssl.SSLContext,
    body: Callable[[], bytes],
    *,
    count: int,
    timeout: float = 5.0,
    give_up_after: int | None = None,
) -> tuple[list[float], int]:
    """`count` admissions, each on a new TLS connection: (seconds each, failures). With
    `give_up_after`, stops at that many failures (a starved server would take count x timeout)."""
    latencies: list[float] = []
    failures = 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
            conn.request("POST", "/mutate", body(), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            conn.close()
            if reply.status != 200:
                failures += 1
        except OSError:
            failures += 1
        latencies.append(time.perf_counter() - started)
        if give_up_after is not None and failures >= give_up_after:
            break
    return latencies, failures


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    """`python -m bench.hostile [--servers a,b] [--count N] [--admissions M] [--rounds R]`:
    admission latency on new TLS connections, alone and with N hostile connections open, for
    each server (2 workers each, the same Flask app), servers interleaved in rounds."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from tests.conftest import IRC_DEPLOYMENT, admission_review

    from .servers import KINDS as SERVER_KINDS
    from .servers import Server, issue_certs

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--servers", default="gunicorn", help=f"comma-separated, from {list(SERVER_KINDS)}"
    )
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated hostile kinds, in turn, from {list(ALL_KINDS)}",
    )
    parser.add_argument("--admissions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--give-up-after", type=int, default=10, help="failed admissions before a run stops"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=12.0,
        help="seconds the hostile connections stay open at least (to see which the server closes)",
    )
    options = parser.parse_args()
    if not 0 <= options.count <= 1024 or not 1 <= options.admissions <= 1000:
        raise SystemExit("--count 0..1024, --admissions 1..1000")
    kinds = [SERVER_KINDS[name] for name in options.servers.split(",")]
    hostile_kinds = tuple(options.kinds.split(","))

    def body() -> bytes:
        return json.dumps(admission_review(IRC_DEPLOYMENT)).encode()

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fluxwarden-hostile-") as tmp:
        certs = issue_certs(Path(tmp))
        context = ssl.create_default_context(cafile=str(certs.ca))
        for round_index in range(options.rounds):
            shift = round_index % len(kinds)
            for kind in [*kinds[shift:], *kinds[:shift]]:
                with Server(kind, certs, Path(tmp)) as server:
                    runs = [("0", *timed_admissions(HOST, server.port, context, body,
                             count=options.admissions, give_up_after=options.give_up_after))]  # fmt: skip
                    with hostile_connections(
                        HOST,
                        server.port,
                        context,
                        count=options.count,
                        duration=300,
                        kinds=hostile_kinds,
                    ) as hostiles:
                        opened, opened_at = len(hostiles.conns), time.monotonic()
                        loud = timed_admissions(
                            HOST, server.port, context, body, count=options.admissions,
                            give_up_after=options.give_up_after,
                        )  # fmt: skip
                        time.sleep(max(0.0, options.hold - (time.monotonic() - opened_at)))
                        closed = ", ".join(
                            f"{kind}: {n}" + (f" {answers}" if answers else "")
                            for kind, n in hostiles.closed_by_server.items()
                            if kind in hostile_kinds
                            for answers in [hostiles.answers[kind]]
                        )
                    runs.append((str(options.count), *loud))
                for hostile, values, failures in runs:
                    rows.append(
                        f"| {kind.name} | {hostile} | {_percentile(values, 0.5) * 1000:.1f} | "
                        f"{_percentile(values, 0.99) * 1000:.1f} | {max(values) * 1000:.1f} | "
                        f"{sum(v > 1 for v in values)} of {len(values)} | {failures} | "
                        + (
                            f"{opened} open; closed by the server: {closed} |"
                            if hostile != "0"
                            else "|"
                        )
                    )
                print(rows[-2], rows[-1], sep="\n", flush=True)
    print(
        f"\n| server | hostile | p50 ms | p99 ms | max ms | over 1 s | failed "
        f"| hostile connections (held {options.hold:.0f} s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
