"""SIGTERM drains: the request in flight is answered, new connections are refused, idle
keep-alive connections do not hold the exit. The real `fluxwarden serve` over TLS; SIGKILL is the
negative control (an abrupt stop loses the request, and the test sees it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IRC_DEPLOYMENT, admission_review
from tests.server.test_server_process import Server, _write_certs, running_server

REFUSED_WITHIN = 5.0  # seconds after the signal by which a new connection must be refused


@dataclass
class Drain:
    answer: bytes  # what the in-flight request got (b"" when the connection died)
    refused_after: float | None  # seconds from the signal to the first refused connection
    idle_closed: bool  # the idle keep-alive connection was closed by the server
    exited_after: float  # seconds from the signal to the master's exit


def _request_head(body: bytes) -> bytes:
    return (
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )


def _read_reply(tls: ssl.SSLSocket) -> bytes:
    """Until the JSON body is complete or the connection ends."""
    data = b""
    with contextlib.suppress(OSError):
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            if rest and head.startswith(b"HTTP/1.1"):
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) >= length:
                    break
    return data


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _stop_with_request_in_flight(server: Server, sig: signal.Signals) -> Drain:
    context = server.context()
    body = json.dumps(admission_review(IRC_DEPLOYMENT)).encode()

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    idle = connect()  # like the API server's pooled connection: one answer, then idle
    idle.sendall(_request_head(body) + body)
    assert b" 200 " in _read_reply(idle).split(b"\r\n", 1)[0]
    in_flight = connect()
    in_flight.sendall(_request_head(body) + body[: len(body) // 2])
    time.sleep(0.3)  # the worker is reading the body now

    signalled = time.monotonic()
    if sig == signal.SIGKILL:
        os.killpg(server.process.pid, sig)  # everything at once, as an OOM kill of the pod
    else:
        os.kill(server.process.pid, sig)  # PID 1 only, as the kubelet does
    refused_after = None
    while time.monotonic() - signalled < REFUSED_WITHIN:
        if _refused(server.port):
            refused_after = time.monotonic() - signalled
            break
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        in_flight.sendall(body[len(body) // 2 :])
    answer = _read_reply(in_flight)
    idle.settimeout(15)
    idle_closed = False
    with contextlib.suppress(OSError):
        idle_closed = idle.recv(1) == b""
    server.process.wait(30)
    exited_after = time.monotonic() - signalled
    in_flight.close()
    idle.close()
    return Drain(answer, refused_after, idle_closed, exited_after)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    _write_certs(tmp_path)
    return tmp_path


def test_sigterm_answers_the_request_in_flight_and_refuses_new_connections(certs: Path) -> None:
    with running_server(certs, "--workers", "2") as server:
        drain = _stop_with_request_in_flight(server, signal.SIGTERM)
    status_line, _, rest = drain.answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), drain.answer[:300]
    reply = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert reply["response"]["allowed"] is True
    assert reply["response"]["patchType"] == "JSONPatch"  # the real answer, not an error
    assert drain.refused_after is not None, "new connections were still accepted after SIGTERM"
    assert drain.idle_closed
    # Idle keep-alive connections do not hold the drain until the 20 s graceful timeout.
    assert drain.exited_after < 10, drain


def test_an_abrupt_stop_loses_the_request_in_flight(certs: Path) -> None:
    # Negative control: the same steps with SIGKILL, and the check above would fail.
    with running_server(certs, "--workers", "2", expected_exit=-signal.SIGKILL) as server:
        drain = _stop_with_request_in_flight(server, signal.SIGKILL)
    assert not drain.answer.startswith(b"HTTP/1.1 200"), drain.answer[:300]
