"""Clients that cannot starve admissions: hostile connections (idle TLS, slow headers, silent
TCP), worker restarts with a bad policy file, bodies no client should be able to 5xx with.

Loopback only, bounded in count and time; each server is stopped at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.fuzz import exchange, fuzzed_request
from bench.hostile import SLOW_BODY_HEAD, hostile_connections, timed_admissions
from tests.conftest import IRC_DEPLOYMENT, admission_review
from tests.server.test_server_process import Server, _write_certs, running_server
from webhook.cli import SHIPPED_POLICIES


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    _write_certs(tmp_path)
    return tmp_path


def _review() -> bytes:
    return json.dumps(admission_review(IRC_DEPLOYMENT)).encode()


def test_admissions_answered_within_a_second_with_256_hostile_connections(certs: Path) -> None:
    # 2 workers x 128 connections: the 256 hostile ones alone would fill the cap, so this also
    # checks that waiting connections are closed to make room.
    with running_server(certs, "--workers", "2", "--connections", "128") as server:
        with hostile_connections(
            "127.0.0.1", server.port, server.context(), count=256, duration=60
        ) as hostiles:
            assert len(hostiles.conns) == 256
            latencies, failures = timed_admissions(
                "127.0.0.1", server.port, server.context(), _review, count=200
            )
        assert failures == 0
        slow = [round(t, 3) for t in latencies if t > 1.0]
        assert slow == [], f"{len(slow)} of 200 admissions took more than 1 s: {slow}"
        assert server.process.poll() is None


def test_idle_and_silent_connections_are_closed_by_the_server(certs: Path) -> None:
    with running_server(certs, "--workers", "1") as server:
        silent = socket.create_connection(("127.0.0.1", server.port))
        idle = server.context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.port)), server_hostname="127.0.0.1"
        )
        started = time.monotonic()
        for sock in (silent, idle):
            sock.settimeout(15)  # longer than the server's limits: its close ends the wait
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
            sock.close()
        assert time.monotonic() - started < 12


BODY_TIMEOUT = 5.0  # the server's total time to receive a request body (webhook.server.app)
MARGIN = 2.5  # for a loaded machine


@dataclass
class _SlowBody:
    sock: ssl.SSLSocket
    chunked: bool
    reply: bytes = b""
    closed_after: float | None = None  # seconds from the request head to the server's close


def _open_slow_body(server: Server, *, chunked: bool) -> _SlowBody:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    tls = server.context().wrap_socket(raw, server_hostname="127.0.0.1")
    if chunked:
        tls.sendall(SLOW_BODY_HEAD.replace(b"Content-Length: 65536", b"Transfer-Encoding: chunked"))
    else:
        tls.sendall(SLOW_BODY_HEAD)
    tls.setblocking(False)
    return _SlowBody(tls, chunked)


def _dribble(conns: list[_SlowBody], *, started: float, give_up: float) -> None:
    """One body byte a second on each connection until the server closes it (or `give_up`
    seconds); records what the server answered and when it closed."""
    next_byte = started
    while time.monotonic() - started < give_up:
        open_ = [c for c in conns if c.closed_after is None]
        if not open_:
            return
        if time.monotonic() >= next_byte:
            for conn in open_:
                with contextlib.suppress(OSError):  # closed under us: the read below sees it
                    conn.sock.send(b"1\r\n \r\n" if conn.chunked else b" ")
            next_byte += 1.0
        readable, _, _ = select.select([c.sock for c in open_], [], [], 0.1)
        for conn in open_:
            if conn.sock not in readable and not conn.sock.pending():
                continue
            try:
                data = conn.sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                data = b""
            conn.reply += data
            if not data:
                conn.closed_after = time.monotonic() - started


def test_a_body_sent_a_byte_a_second_is_answered_4xx_and_closed_by_the_deadline(
    certs: Path,
) -> None:
    """The whole body is read under one deadline, however steadily the bytes trickle in (each
    read returns before the per-read timeout, so only a total deadline ends it)."""
    with running_server(certs, "--workers", "1") as server:
        conns = [_open_slow_body(server, chunked=chunked) for chunked in (False, True)]
        _dribble(conns, started=time.monotonic(), give_up=BODY_TIMEOUT + 3 * MARGIN)
        for conn in conns:
            conn.sock.close()
            kind = "chunked" if conn.chunked else "Content-Length"
            assert conn.closed_after is not None, f"{kind}: still open, reply {conn.reply!r}"
            assert conn.closed_after < BODY_TIMEOUT + MARGIN, (kind, conn.closed_after)
            head, _, body = conn.reply.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert 400 <= status < 500, conn.reply
            assert b"\n" not in body.strip(), conn.reply  # one line
            assert "error" in json.loads(body), conn.reply
        assert server.post("/mutate", _review())[0] == 200
        assert "Traceback" not in server.log.read_text()


def test_connections_dribbling_a_body_are_evicted_to_admit_new_ones(certs: Path) -> None:
    # One worker, 16 connections: 16 slow bodies alone would fill the cap (and a full pool
    # accepts nothing), so only evicting them leaves room for admissions.
    with running_server(certs, "--workers", "1", "--connections", "16") as server:
        with hostile_connections(
            "127.0.0.1", server.port, server.context(), count=16, duration=30, kinds=("slow-body",)
        ) as hostiles:
            assert len(hostiles.conns) == 16
            latencies, failures = timed_admissions(
                "127.0.0.1", server.port, server.context(), _review, count=20, timeout=3,
                give_up_after=2,
            )  # fmt: skip
            answers = dict(hostiles.answers["slow-body"])
        assert failures == 0, f"{failures} admissions failed while slow bodies held the pool"
        assert max(latencies) < 2.0, latencies
        # Evicted mid-body while the client can still read: a 4xx answer, never a 5xx.
        assert answers, "no slow-body connection was answered"
        assert all(status.startswith("4") for status in answers), answers
        assert server.process.poll() is None


def _worker_pids(server: Server) -> set[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


def test_a_worker_restarted_while_the_policy_file_is_invalid_serves_the_last_good_set(
    certs: Path,
) -> None:
    policies = certs / "policies.yaml"
    policies.write_text(SHIPPED_POLICIES.read_text())
    metrics_dir = certs / "metrics"
    with running_server(
        certs,
        "--workers",
        "2",
        policies=policies,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    ) as server:
        policies.write_text("apiVersion: fluxwarden.io/v1alpha1\nkind: PolicySet\nspec: [\n")
        time.sleep(2.5)  # past the store's check interval
        for _ in range(10):  # make both workers notice the bad file
            server.post("/mutate", _review())
        before = _worker_pids(server)
        for pid in before:
            os.kill(pid, signal.SIGKILL)  # as an OOM kill would
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = _worker_pids(server)
            if len(pids) == 2 and not pids & before:
                break
            time.sleep(0.2)
        assert server.process.poll() is None, server.log.read_text()[-2000:]
        for _ in range(20):  # new connections: both new workers answer
            status, body = server.post("/mutate", _review())
            assert status == 200
            assert body["response"]["patchType"] == "JSONPatch"  # the last good set enforces
        ready = json.loads(server.get("/readyz"))
        assert ready["status"] == "ready"
        assert "lastReloadError" in ready
        errors = [
            float(line.split()[1])
            for line in server.get("/metrics").splitlines()
            if line.startswith("fluxwarden_policy_load_errors_total ")
        ]
        assert errors == [1.0], "one bad file counts once, however many workers read it"


def _follows_warn_set(reply: dict[str, object]) -> bool:
    """The IRC review answered by set B (spec.mode warn): warned about, not patched."""
    response = reply["response"]
    assert isinstance(response, dict)
    return "patchType" not in response and bool(response.get("warnings"))


def test_a_worker_started_after_the_file_went_bad_serves_the_last_good_set_not_the_first(
    certs: Path,
) -> None:
    """Start with A (enforce), edit the file to a valid B (warn), then to an invalid file, then
    kill one worker: its replacement serves B, not the A the master loaded at start-up."""
    policies = certs / "policies.yaml"
    set_a = SHIPPED_POLICIES.read_text()
    set_b = set_a.replace("  mode: enforce\n  exclude", "  mode: warn\n  exclude", 1)
    assert set_b != set_a
    policies.write_text(set_a)
    with running_server(certs, "--workers", "2", policies=policies) as server:
        policies.write_text(set_b)
        time.sleep(2.5)  # past the store's check interval
        answers = [server.post("/mutate", _review())[1] for _ in range(10)]
        assert any(_follows_warn_set(a) for a in answers), "set B was never loaded"
        policies.write_text("apiVersion: fluxwarden.io/v1alpha1\nkind: PolicySet\nspec: [\n")
        time.sleep(2.5)
        for _ in range(10):
            server.post("/mutate", _review())
        before = _worker_pids(server)
        os.kill(min(before), signal.SIGKILL)  # as an OOM kill would
        deadline = time.monotonic() + 30
        while len(_worker_pids(server) - before) < 1 or len(_worker_pids(server)) < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(0.5)  # the new worker is serving
        answers = [server.post("/mutate", _review())[1] for _ in range(20)]
        followed_a = sum(not _follows_warn_set(a) for a in answers)
        assert followed_a == 0, f"{followed_a} of 20 answers followed the start-up set A"


def test_the_server_does_not_start_without_a_good_policy_set(certs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: PolicySet\n")
    with pytest.raises(AssertionError), running_server(certs, policies=bad):
        pass


def _raw(server: Server, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    context = server.context()
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < reply.index(b"\r\n\r\n") + 4 + _length(
            reply
        ):
            chunk = tls.recv(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply.split(b"\r\n\r\n", 1)[1]


def _length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_no_client_input_gets_a_5xx(certs: Path) -> None:
    with running_server(certs, "--workers", "1") as server:
        # A lone surrogate (valid JSON, not UTF-8) in a dependsOn name: reaches the warnings.
        hr = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "a", "namespace": "flux-system"},
            "spec": {"interval": "10s", "dependsOn": [{"name": "\ud800"}, {"name": "a"}]},
        }
        body = json.dumps(admission_review(hr)).encode()  # ensure_ascii: "\\ud800" escaped
        for path in ("/mutate", "/validate"):
            status, reply = server.post(path, body)
            assert status == 200, reply
        # Chunked, over the 4 MiB limit: 413, not 400 or 500.
        big = b"x" * (5 * 1024 * 1024)
        chunked = b"".join(
            f"{len(big[i : i + 65536]):x}\r\n".encode() + big[i : i + 65536] + b"\r\n"
            for i in range(0, len(big), 65536)
        )
        status, reply = _raw(
            server,
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
        )
        assert status == 413, reply
        assert "error" in json.loads(reply)
        # Declared too large, and a body longer than its Content-Length says is cut there.
        status, reply = _raw(
            server,
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4194305\r\n\r\n" + b"{" * 1024,
        )
        assert status == 413, reply
        # Chunked encoding that lies: 400 (the bytes are wrong, not late: not 408).
        status, reply = _raw(
            server,
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        assert status == 400, reply
        assert "malformed" in json.loads(reply)["error"]
        # Seeded random mutations of the review and of the request around it (bench.fuzz).
        rng = random.Random(19)
        requests = [
            fuzzed_request(lambda: admission_review(IRC_DEPLOYMENT), rng) for _ in range(150)
        ]
        answers = [(m, exchange(server.port, server.context(), r)) for m, r in requests]
        assert [a for a in answers if not (a[1].isdigit() and int(a[1]) < 500)] == []
        assert server.post("/mutate", _review())[0] == 200
        assert "Traceback" not in server.log.read_text()
