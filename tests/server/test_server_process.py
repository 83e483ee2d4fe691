"""The real `fluxwarden serve` process over TLS: answers, bad input, rotation, multi-worker metrics."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IRC_DEPLOYMENT, admission_review
from webhook.certs import issue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    port: int
    certs: Path
    process: subprocess.Popen[bytes]
    log: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs / "ca.crt"))

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context(), timeout=10
        )

    def post(
        self,
        path: str,
        body: bytes,
        conn: http.client.HTTPSConnection | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        conn = conn or self.connection()
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())

    def get(self, path: str) -> str:
        conn = self.connection()
        conn.request("GET", path)
        return conn.getresponse().read().decode()


def _write_certs(directory: Path) -> None:
    issued = issue(dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=2)
    # Write key and cert through temp names and renames, as a Secret volume update does.
    for name, data in (
        ("ca.crt", issued.ca_cert),
        ("tls.key", issued.tls_key),
        ("tls.crt", issued.tls_cert),
    ):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / name)


def _stale_metrics_dir(base: Path) -> Path:
    metrics = base / "metrics"
    (base / "metrics-stale").mkdir()
    (base / "metrics-stale" / "counter_1.db").write_bytes(b"stale")
    (base / "metrics-stale").rename(metrics)
    return metrics / "not-yet-created"


@contextlib.contextmanager
def running_server(
    certs: Path,
    *args: str,
    env: dict[str, str] | None = None,
    policies: Path | None = None,
    port: int | None = None,
    expected_exit: int = 0,
) -> Iterator[Server]:
    """`fluxwarden serve` on 127.0.0.1 in its own process group; stopped (SIGTERM) on exit,
    when the test has not stopped it; its exit code must be `expected_exit`."""
    port = port or free_port()
    log = certs / f"server-{port}.log"
    argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--lookups", "none", "--cert-file", str(certs / "tls.crt")]
    argv += ["--key-file", str(certs / "tls.key"), *args]
    if policies:
        argv += ["--policies", str(policies)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    running = Server(port, certs, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if '"ready"' in running.get("/readyz"):
                    break
            except OSError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == expected_exit, log.read_text()[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    certs = tmp_path_factory.mktemp("certs")
    _write_certs(certs)
    # As the shipped Deployment runs it: a metrics directory that does not exist yet, plus a
    # stale file a previous container left in the (surviving) emptyDir.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(_stale_metrics_dir(certs))}
    with running_server(certs, "--workers", "2", env=env) as running:
        yield running


def test_answers_over_tls_and_logs_one_json_line_per_decision(server: Server) -> None:
    review = admission_review(IRC_DEPLOYMENT)
    status, body = server.post("/mutate", json.dumps(review).encode())
    assert status == 200
    assert body["response"]["patchType"] == "JSONPatch"
    time.sleep(0.2)
    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    decision = next(line for line in lines if line.get("uid") == review["request"]["uid"])
    assert decision["kind"] == "apps/v1/Deployment"
    assert (decision["namespace"], decision["name"]) == (
        "flux-system",
        "image-reflector-controller",
    )
    assert decision["operation"] == "CREATE"
    assert decision["dryRun"] is False
    assert decision["results"] == [
        {"policy": "irc-single-replica", "mode": "enforce", "result": "fail", "action": "mutated"}
    ]
    assert decision["durationMs"] > 0


def test_malformed_bodies_get_4xx_and_the_server_stays_up(server: Server) -> None:
    bodies = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'{"kind":"AdmissionReview"}',
        b"\x00\xff" * 100,
        b"[" * 5000,
    ]
    for body in bodies:
        status, reply = server.post("/mutate", body)
        assert 400 <= status < 500
        assert "error" in reply
    status, reply = server.post("/validate", b"{}", content_type="text/yaml")
    assert status == 415
    # Refused from the Content-Length alone, before the body is read.
    conn = server.connection()
    conn.putrequest("POST", "/mutate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5 * 1024 * 1024))
    conn.endheaders()
    reply_413 = conn.getresponse()
    assert reply_413.status == 413
    assert "error" in json.loads(reply_413.read())
    assert server.process.poll() is None
    assert server.post("/mutate", json.dumps(admission_review(IRC_DEPLOYMENT)).encode())[0] == 200


def test_metrics_add_up_across_worker_processes(server: Server) -> None:
    def count() -> float:
        total = 0.0
        for line in server.get("/metrics").splitlines():
            if (
                line.startswith("fluxwarden_admission_requests_total{")
                and 'webhook="validate"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def serving_pids(uids: set[str]) -> set[int]:
        lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
        return {line["pid"] for line in lines if line.get("uid") in uids}

    before = count()
    uids: set[str] = set()
    # New connections until both workers have answered some (bounded).
    while len(uids) < 200 and (len(uids) < 20 or len(serving_pids(uids)) < 2):
        review = admission_review(IRC_DEPLOYMENT)
        uids.add(review["request"]["uid"])
        assert server.post("/validate", json.dumps(review).encode())[0] == 200
        time.sleep(0.01)
    assert len(serving_pids(uids)) == 2
    assert count() == before + len(uids)
    expiry = next(
        float(line.split()[1])
        for line in server.get("/metrics").splitlines()
        if line.startswith("fluxwarden_certificate_expiry_timestamp_seconds ")
    )
    assert time.time() + 86400 < expiry < time.time() + 3 * 86400  # the 2-day test certificate


def test_connections_are_counted_once_however_many_requests_they_carry(server: Server) -> None:
    def connections() -> float:
        metric = "fluxwarden_connections_total "
        text = server.get("/metrics")  # itself a new connection
        return next(float(x.split()[1]) for x in text.splitlines() if x.startswith(metric))

    before = connections()
    kept = server.connection()
    for _ in range(5):
        assert (
            server.post("/validate", json.dumps(admission_review(IRC_DEPLOYMENT)).encode(), kept)[0]
            == 200
        )
    kept.close()
    assert server.post("/validate", json.dumps(admission_review(IRC_DEPLOYMENT)).encode())[0] == 200
    # the keep-alive connection, the new one, and the second /metrics (counted on accept)
    assert connections() - before == 3


def test_rotated_certificate_is_served_without_restart_or_failed_requests(server: Server) -> None:
    review = json.dumps(admission_review(IRC_DEPLOYMENT)).encode()
    kept_open = server.connection()
    assert server.post("/mutate", review, conn=kept_open)[0] == 200
    old_ca = (server.certs / "ca.crt").read_bytes()
    pid = server.process.pid

    _write_certs(server.certs)  # a new CA and pair, as a rotation by cert-manager with a new issuer
    time.sleep(1.5)  # the server checks the files at most once a second

    assert server.post("/mutate", review, conn=kept_open)[0] == 200  # in flight: not broken
    new = ssl.create_default_context(cafile=str(server.certs / "ca.crt"))
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        new.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.getpeercert() is not None  # verified against the new CA
    stale = ssl.create_default_context(cadata=old_ca.decode())
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", server.port)) as raw,
    ):
        stale.wrap_socket(raw, server_hostname="127.0.0.1")
    assert server.process.pid == pid
    assert server.process.poll() is None


def test_serving_processes_do_not_load_cryptography(server: Server) -> None:
    # ~8 MiB per process (bench/README.md, idle memory): the server reads its certificate's
    # expiry with the standard library. /proc/PID/maps lists every shared object a process loaded.
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 2
    for pid in [master, *map(int, children)]:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "_ssl" in maps or "libssl" in maps  # the check reads the right thing
        assert "/cryptography/" not in maps, pid


def test_the_temporary_directories_it_made_are_gone_when_it_exits(tmp_path: Path) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR and --state-dir the server makes both in $TMPDIR; the
    master removes them on SIGTERM (its workers, which unwind through the same code, do not
    remove them from under it while it runs)."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _write_certs(certs)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["TMPDIR"] = str(scratch)
    argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(free_port()), "--lookups", "none", "--workers", "2"]
    argv += ["--cert-file", str(certs / "tls.crt"), "--key-file", str(certs / "tls.key")]
    process = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while sorted(p.name.rsplit("-", 1)[0] for p in scratch.iterdir()) != [
            "fluxwarden-metrics",
            "fluxwarden-state",
        ]:
            assert process.poll() is None
            assert time.monotonic() < deadline, list(scratch.iterdir())
            time.sleep(0.1)
        time.sleep(2)  # the workers are up
        # A worker that stops gracefully (SIGTERM: it unwinds through serve's frames) while the
        # master goes on; the master starts another.
        os.kill(sorted(_children(process.pid))[0], signal.SIGTERM)
        time.sleep(2)
        assert len(list(scratch.iterdir())) == 2, "a dying worker removed the master's dirs"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert list(scratch.iterdir()) == []


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found
