"""Clients that cannot starve admissions: hostile connections (idle TLS, slow headers, silent
TCP), worker restarts with a bad policy file, bodies no client should be able to 5xx with.

Loopback only, bounded in count and time; each server is stopped at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from bench.hostile import hostile_connections, timed_admissions
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
        # Chunked encoding that lies: 4xx.
        status, reply = _raw(
            server,
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        assert 400 <= status < 500, reply
        assert server.post("/mutate", _review())[0] == 200
        assert "Traceback" not in server.log.read_text()
