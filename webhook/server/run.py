"""`fluxwarden serve`: the Flask app under gunicorn with TLS that follows certificate rotation.

gunicorn with our gevent worker (`worker.py`) was chosen by measurement (see bench/README.md):
hostile connections cost a greenlet each and every phase of a connection is bounded in time; the
worker hands every new connection the current TLS context (rotation without a restart); the
gunicorn master restarts dead workers and drains on SIGTERM. The app is loaded once, in the master
(preload), and the workers share its memory (bench/README.md, "Memory of a serve pod").
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from ..engine import Lookups, Mode
from .decisionlog import configure_logging

log = logging.getLogger("fluxwarden.server")

# Connection phases, in seconds. The API server sends a request right after connecting and reuses
# idle connections within its own idle timeout; nothing legitimate is slower than these.
HANDSHAKE_TIMEOUT = 5.0
HEADER_TIMEOUT = 5.0
IDLE_TIMEOUT = 30
IO_TIMEOUT = 5.0


@dataclass
class ServeOptions:
    policies: Path
    cert_file: Path | None
    key_file: Path | None
    host: str = "0.0.0.0"
    port: int = 8443
    workers: int = 1  # gevent: one process serves many connections
    connections: int = 1000  # per worker
    ceiling: Mode | None = None  # --mode / FLUXWARDEN_MODE
    kubeconfig: str | None = None
    context: str | None = None
    lookups: str = "auto"  # auto | kube | none
    log_level: str = "INFO"
    client_ca_file: Path | None = None
    deadline: float = 2.5  # seconds per admission request, lookups included
    state_dir: Path | None = None  # last good policy set, shared by the workers


def _make_lookups(options: ServeOptions) -> Lookups:
    from ..engine import NoLookups

    if options.lookups == "none":
        return NoLookups()
    from ..kube.lookups import KubeLookups
    from ..kube.rest import load_reader

    try:
        # Plain urllib3, not the kubernetes client: ~22 MiB less per pod (bench/README.md).
        return KubeLookups(load_reader(options.kubeconfig, options.context))
    except Exception as error:
        if options.lookups == "kube":
            raise
        log.warning("no Kubernetes API configured, lookups disabled: %s", error)
        return NoLookups()


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServeOptions, state_dir: Path) -> None:
        self.options, self.state_dir = options, state_dir
        super().__init__()

    def load_config(self) -> None:
        from .app import BODY_TIMEOUT
        from .worker import worker_class

        o = self.options
        tls = (
            _tls_holder(o.cert_file, o.key_file, o.client_ca_file)
            if o.cert_file and o.key_file
            else None
        )
        settings: dict[str, Any] = {
            "bind": [f"[{o.host}]:{o.port}" if ":" in o.host else f"{o.host}:{o.port}"],
            "workers": o.workers,
            # TLS is done by the worker (current context per connection), not by gunicorn.
            "worker_class": worker_class(
                tls.current if tls else None,
                handshake_timeout=HANDSHAKE_TIMEOUT,
                header_timeout=HEADER_TIMEOUT,
                idle_timeout=IDLE_TIMEOUT,
                io_timeout=IO_TIMEOUT,
                body_timeout=BODY_TIMEOUT,
            ),
            "worker_connections": o.connections,
            "keepalive": IDLE_TIMEOUT,
            "graceful_timeout": 20,
            # A worker whose hub is blocked this long (a runaway request) is restarted.
            "timeout": 30,
            "accesslog": None,
            "control_socket_disable": True,  # a read-only root filesystem has nowhere to put it
            "loglevel": o.log_level.lower(),
            "child_exit": _child_exit,
            "post_worker_init": lambda worker: configure_logging(o.log_level),
            # The app (and every module it imports) is loaded once in the master and shared by
            # the workers' copy-on-write pages; frozen, the garbage collector leaves them shared.
            "preload_app": True,
            "pre_fork": _freeze_before_fork,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import ServerConfig, create_app
        from .policystore import PolicyStore

        store = PolicyStore(
            self.options.policies, state_dir=self.state_dir, ceiling=self.options.ceiling
        )
        config = ServerConfig(
            policies=store,
            lookups=_make_lookups(self.options),
            deadline=self.options.deadline,
            require_client_cert=self.options.client_ca_file is not None,
        )
        return create_app(config)


class _TLSHolder:
    """Creates the reloading TLS context lazily, once per worker process (after gevent's
    monkey patching, so that the context makes cooperative sockets)."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._tls: Any = None
        self._pid = 0

    def current(self) -> ssl.SSLContext:
        if self._tls is None or self._pid != os.getpid():
            from . import metrics
            from .tls import ReloadingTLS

            self._tls = ReloadingTLS(
                self.cert_file,
                self.key_file,
                client_ca_file=self.client_ca_file,
                on_load=lambda expiry: metrics.CERT_EXPIRY.set(expiry.timestamp()),
            )
            self._pid = os.getpid()
        context: ssl.SSLContext = self._tls.current()
        return context


def _tls_holder(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> _TLSHolder:
    # Fail at start-up, not at the first connection, when the files do not load.
    from .tls import ReloadingTLS

    ReloadingTLS(cert_file, key_file, client_ca_file=client_ca_file)
    return _TLSHolder(cert_file, key_file, client_ca_file)


def _freeze_before_fork(server: Any, worker: Any) -> None:
    import gc

    gc.collect()
    gc.freeze()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(options: ServeOptions) -> None:
    """Run until SIGTERM; gunicorn drains in-flight requests on shutdown."""
    # The workers share the app the master loads (preload): patch before it is imported, so
    # its locks and sockets are gevent's.
    from gevent import monkey

    monkey.patch_all()
    configure_logging(options.log_level)
    # Multiprocess metrics need a shared directory set before prometheus_client is imported.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # The directory may not exist yet (a fresh emptyDir) or hold files of a previous run
        # (a restarted container keeps its emptyDir): both would break or skew the metrics.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    # Directories made here are removed when the master exits (not when a worker does: forked
    # workers unwind through the same frames), so restarts do not pile them up in /tmp.
    made: list[str] = []
    master = os.getpid()
    try:
        if not metrics_dir:
            made.append(tempfile.mkdtemp(prefix="fluxwarden-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = made[-1]
        # Start only with a good policy set: the last good set the workers fall back to.
        from .policystore import LastGood, load_policy_file

        state_dir = options.state_dir
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="fluxwarden-state-"))
            made.append(str(state_dir))
        load_policy_file(options.policies)
        LastGood(state_dir).save(options.policies.read_text(encoding="utf-8"))
        _Server(options, state_dir).run()
    finally:
        if os.getpid() == master:
            for directory in made:
                shutil.rmtree(directory, ignore_errors=True)
