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

log = logging.getLogger("fluxwarden.tls")

# The server reads one field of its certificate, notAfter (for the expiry metric). It does so
# with the standard library: importing `cryptography` would cost ~8 MiB in every process.
_SEQUENCE, _CONTEXT_0, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18


def certificate_expiry(cert_file: Path) -> datetime.datetime:
    """notAfter of the first certificate in a PEM file (the serving certificate)."""
    text = cert_file.read_text(encoding="ascii")
    # cert-manager's tls.crt holds the chain; PEM_cert_to_DER_cert takes everything between the
    # first header and the last footer, so it is given the first block only.
    first, footer, _ = text.partition(ssl.PEM_FOOTER)
    if not footer:
        raise ValueError(f"{cert_file}: no PEM certificate")
    return not_after(ssl.PEM_cert_to_DER_cert(first + footer))


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `offset`."""
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes are the length
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def not_after(der: bytes) -> datetime.datetime:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280)."""
    tag, start, _ = _tlv(der, 0)
    tag_tbs, offset, _ = _tlv(der, start)
    if tag != _SEQUENCE or tag_tbs != _SEQUENCE:
        raise ValueError("not an X.509 certificate")
    if der[offset] == _CONTEXT_0:
        offset = _tlv(der, offset)[2]
    for _ in range(3):  # serial, signature algorithm, issuer
        offset = _tlv(der, offset)[2]
    tag, validity, _ = _tlv(der, offset)
    if tag != _SEQUENCE:
        raise ValueError("no validity in the certificate")
    after = _tlv(der, _tlv(der, validity)[2])
    text = der[after[1] : after[2]].decode("ascii")
    if after[0] == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif after[0] != _GENERALIZED_TIME:
        raise ValueError("notAfter is neither UTCTime nor GeneralizedTime")
    return datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.UTC)


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
