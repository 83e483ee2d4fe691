"""Serving TLS that picks up rotated certificate files without a restart.

cert-manager rewrites the mounted Secret; each new connection asks `current()`, which checks (at
most once a second) whether the files changed and, if so, loads a fresh context. Connections
already established keep theirs, so in-flight requests never fail. A half-written pair that does
not load is ignored until the next check. With a client CA file (mTLS), that file is followed
the same way.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

log = logging.getLogger("fluxwarden.tls")


def certificate_expiry(cert_file: Path) -> datetime.datetime:
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return certificate.not_valid_after_utc


def _stamp(*paths: Path) -> tuple[tuple[int, int], ...] | None:
    try:
        return tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    except OSError:
        return None


class ReloadingTLS:
    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        client_ca_file: Path | None = None,
        interval: float = 1.0,
        on_load: Callable[[datetime.datetime], None] = lambda expiry: None,
    ) -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._interval, self._on_load = interval, on_load
        self._lock = threading.Lock()
        self._files = (cert_file, key_file, *([client_ca_file] if client_ca_file else []))
        self._stamp = _stamp(*self._files)
        self._checked = time.monotonic()
        self.context = self._load()  # the first load must succeed

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            # mTLS: a certificate, when presented, must come from this CA. Optional at the TLS
            # layer so that kubelet probes (no client certificate) still reach /healthz and
            # /readyz; the app refuses admissions from clients without one (`app.py`).
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(self.client_ca_file))
        self._on_load(certificate_expiry(self.cert_file))
        return context

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, reloaded first if the files changed."""
        self.refresh()
        return self.context

    def refresh(self) -> None:
        """Reload the pair if the files changed since the last check."""
        now = time.monotonic()
        if now - self._checked < self._interval:
            return
        with self._lock:
            self._checked = now
            stamp = _stamp(*self._files)
            if stamp is None or stamp == self._stamp:
                return
            try:
                context = self._load()
            except (OSError, ssl.SSLError, ValueError) as error:
                log.warning("rotated certificate not loaded yet, keeping the old one: %s", error)
                return
            self._stamp, self.context = stamp, context
            log.info("serving certificate reloaded from %s", self.cert_file)
