"""`fluxwarden serve`: the Flask app under gunicorn with TLS that follows certificate rotation.

gunicorn was chosen by measurement over granian (see bench/README.md): it lets us hand every new
connection the current TLS context, which is what rotation without a restart needs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from ..engine import Lookups, Mode
from .decisionlog import configure_logging

log = logging.getLogger("fluxwarden.server")


@dataclass
class ServeOptions:
    policies: Path
    cert_file: Path | None
    key_file: Path | None
    host: str = "0.0.0.0"
    port: int = 8443
    workers: int = 2
    threads: int = 4
    mode_override: Mode | None = None
    kubeconfig: str | None = None
    context: str | None = None
    lookups: str = "auto"  # auto | kube | none
    log_level: str = "INFO"


def _make_lookups(options: ServeOptions) -> Lookups:
    from ..engine import NoLookups

    if options.lookups == "none":
        return NoLookups()
    from ..lookups.kube import KubeLookups, load_api_client

    try:
        return KubeLookups(load_api_client(options.kubeconfig, options.context, retries=0))
    except Exception as error:
        if options.lookups == "kube":
            raise
        log.warning("no Kubernetes API configured, lookups disabled: %s", error)
        return NoLookups()


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        o = self.options
        settings: dict[str, Any] = {
            "bind": [f"[{o.host}]:{o.port}" if ":" in o.host else f"{o.host}:{o.port}"],
            "workers": o.workers,
            "worker_class": "gthread",
            "threads": o.threads,
            "graceful_timeout": 20,
            "keepalive": 30,
            "accesslog": None,
            "control_socket_disable": True,  # a read-only root filesystem has nowhere to put it
            "loglevel": o.log_level.lower(),
            "child_exit": _child_exit,
            "post_worker_init": lambda worker: configure_logging(o.log_level),
        }
        if o.cert_file and o.key_file:
            tls = _tls_holder(o.cert_file, o.key_file)
            settings |= {
                "certfile": str(o.cert_file),
                "keyfile": str(o.key_file),
                "ssl_context": lambda conf, default_factory: tls.current(),
            }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import ServerConfig, create_app
        from .policystore import PolicyStore

        store = PolicyStore(self.options.policies)
        config = ServerConfig(
            policies=store,
            lookups=_make_lookups(self.options),
            mode_override=self.options.mode_override,
        )
        return create_app(config)


class _TLSHolder:
    """Creates the reloading TLS context lazily, once per worker process."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._tls: Any = None
        self._pid = 0

    def current(self) -> Any:
        if self._tls is None or self._pid != os.getpid():
            from . import metrics
            from .tls import ReloadingTLS

            self._tls = ReloadingTLS(
                self.cert_file,
                self.key_file,
                on_load=lambda expiry: metrics.CERT_EXPIRY.set(expiry.timestamp()),
            )
            self._pid = os.getpid()
        return self._tls.current()


def _tls_holder(cert_file: Path, key_file: Path) -> _TLSHolder:
    # Fail at start-up, not at the first connection, when the pair does not load.
    from .tls import ReloadingTLS

    ReloadingTLS(cert_file, key_file)
    return _TLSHolder(cert_file, key_file)


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(options: ServeOptions) -> None:
    """Run until SIGTERM; gunicorn drains in-flight requests on shutdown."""
    configure_logging(options.log_level)
    # Multiprocess metrics need a shared directory set before prometheus_client is imported.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # The directory may not exist yet (a fresh emptyDir) or hold files of a previous run
        # (a restarted container keeps its emptyDir): both would break or skew the metrics.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fluxwarden-metrics-")
    # Fail fast on a bad policy file before forking workers.
    from .policystore import load_policy_file

    load_policy_file(options.policies)
    _Server(options).run()
