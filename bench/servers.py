"""Start and stop the servers under test, each in its own process group, and read their logs."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_POLICIES = ROOT / "policies" / "flux-best-practices.yaml"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def issue_certs(directory: Path) -> Certs:
    """`fluxwarden certs` for 127.0.0.1 / localhost."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            "--out",
            str(directory),
            "--ip",
            HOST,
            "--dns",
            "localhost",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        raise RuntimeError(f"fluxwarden certs failed: {done.stderr.strip()}")
    return Certs(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@dataclass(frozen=True)
class ServerKind:
    """How to launch one server flavour; `argv` gets (certs, port, policies)."""

    name: str
    label: str  # for the report

    def argv(self, certs: Certs, port: int, policies: Path) -> list[str]:
        bin_dir = Path(sys.executable).parent
        if self.name == "gunicorn":
            return [
                sys.executable, "-m", "webhook", "serve",
                "--policies", str(policies),
                "--cert-file", str(certs.cert), "--key-file", str(certs.key),
                "--host", HOST, "--port", str(port),
                "--workers", "2",
                "--lookups", "none",
            ]  # fmt: skip
        if self.name.startswith("granian"):
            argv = [
                str(bin_dir / "granian"),
                "--interface", "wsgi", "--factory", "bench.granian_app:create_app",
                "--host", HOST, "--port", str(port),
                "--workers", "2",
                "--ssl-certificate", str(certs.cert), "--ssl-keyfile", str(certs.key),
                "--no-access-log", "--log-level", "warning",
                "--working-dir", str(ROOT),
            ]  # fmt: skip
            if self.name == "granian-4t":
                argv += ["--blocking-threads", "4"]
            return argv
        if self.name == "uvicorn":
            return [
                str(bin_dir / "uvicorn"), "--factory", "bench.asgi_app:create_app",
                "--host", HOST, "--port", str(port), "--workers", "2",
                "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key),
                "--timeout-keep-alive", "30", "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        if self.name == "hypercorn":
            return [
                str(bin_dir / "hypercorn"), "bench.asgi_app:create_app()",
                "--bind", f"{HOST}:{port}", "--workers", "2",
                "--certfile", str(certs.cert), "--keyfile", str(certs.key),
                "--keep-alive", "30", "--read-timeout", "5", "--log-level", "warning",
            ]  # fmt: skip
        raise ValueError(self.name)


GUNICORN = ServerKind(
    "gunicorn", "gunicorn + fluxwarden's gevent worker, 2 workers (fluxwarden serve)"
)
GRANIAN = ServerKind("granian", "granian wsgi 2w (default blocking threads)")
GRANIAN_4T = ServerKind("granian-4t", "granian wsgi 2w x 4 blocking threads")
UVICORN = ServerKind("uvicorn", "uvicorn 2w + a2wsgi (ASGI server, WSGI adapter)")
HYPERCORN = ServerKind("hypercorn", "hypercorn 2w (asyncio) + a2wsgi")
KINDS = {k.name: k for k in (GUNICORN, GRANIAN, GRANIAN_4T, UVICORN, HYPERCORN)}


@dataclass
class Server:
    kind: ServerKind
    certs: Certs
    workdir: Path
    policies: Path = SHIPPED_POLICIES
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    _log_offset: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.kind.name}.log"

    def start(self) -> None:
        self.port = free_port()
        metrics_dir = self.workdir / f"metrics-{self.kind.name}"
        metrics_dir.mkdir(exist_ok=True)
        env = {
            **os.environ,
            # Both servers run several workers, so both pay for multiprocess metrics.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "FLUXWARDEN_POLICIES": str(self.policies),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        env.pop("FLUXWARDEN_MODE", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.kind.argv(self.certs, self.port, self.policies),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: stop() ends workers too
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited at start-up:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPSConnection(HOST, self.port, context=context, timeout=2)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind.name} not ready after {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left; the port must be free after."""
        process, self.process = self.process, None
        if process is None:
            return
        pgid = process.pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            process.wait(5)
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)  # stragglers (workers that ignored SIGTERM)
        if self.port and port_in_use(self.port):
            raise RuntimeError(f"port {self.port} still in use after stopping {self.kind.name}")

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        """user + system CPU of every live process in the server's process group."""
        if self.process is None:
            return 0.0
        return _group_cpu(self.process.pid)

    def skip_log(self) -> None:
        self._log_offset = self.log_path.stat().st_size

    def new_log_records(self) -> Iterator[dict[str, Any]]:
        """Decision-log JSON records written since the last call."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].splitlines():
            if b'"durationMs"' not in line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[2] the process group
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _group_alive(pgid: int) -> bool:
    return bool(_group_pids(pgid))


def _group_cpu(pgid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU-seconds every core of the machine has spent busy since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
