"""Certificates: a small CA and the leaves it signs, for installs without cert-manager, local
runs, and the local control plane's own serving and client certificates.

A CA written by an earlier run can be loaded again (`CertificateAuthority.from_pem`) so that a
new serving certificate keeps the webhooks' caBundle unchanged: rotation without failed requests.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between machines
CA_DAYS = 5 * 365  # a fresh CA outlives many serving certificates: rotation keeps the caBundle

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertificateError(ValueError):
    """A certificate or key that cannot be used as asked (unreadable, not a CA, mismatched)."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateAuthority:
    """A CA that signs server and client certificates: a fresh self-signed one (ECDSA P-256), or
    an existing one loaded from PEM."""

    key: SigningKey
    cert: x509.Certificate
    cert_pem: bytes  # as written (for a loaded CA: the bytes it was loaded from)
    key_pem: bytes

    def __init__(self, common_name: str, *, days: int) -> None:
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self.key, self.cert = key, cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key_pem(key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, private_key_pem: bytes) -> CertificateAuthority:
        """The CA in `cert_pem` (its first certificate) with its unencrypted key.

        Raises CertificateError unless the certificate is a CA (BasicConstraints ca=True, and
        keyCertSign if it has a KeyUsage), is currently valid, and the key is its key.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as error:
            raise CertificateError("the CA certificate is not a PEM certificate") from error
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:  # TypeError: encrypted
            raise CertificateError("the CA key is not an unencrypted PEM private key") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CertificateError("the CA key is neither ECDSA nor RSA")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateError("the CA certificate is not a CA (no BasicConstraints CA:TRUE)")
        try:
            usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(
                x509.KeyUsage
            ).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.key_cert_sign:
            raise CertificateError("the CA certificate may not sign certificates (no keyCertSign)")
        if _public_der(key.public_key()) != _public_der(cert.public_key()):
            raise CertificateError("the CA key does not match the CA certificate")
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertificateError(
                f"the CA certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d}"
                f" to {cert.not_valid_after_utc:%Y-%m-%d})"
            )
        ca = cls.__new__(cls)
        ca.key, ca.cert, ca.cert_pem, ca.key_pem = key, cert, cert_pem, private_key_pem
        return ca

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """Matches the CA's own SubjectKeyIdentifier, however that was computed."""
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def issue(
        self,
        common_name: str,
        *,
        days: int,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a leaf for server or client authentication."""
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            # never past the CA's own expiry: a leaf cannot usefully outlive its issuer
            .not_valid_after(
                min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if dns_names or ip_addresses:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class IssuedCertificates:
    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes
    new_ca: bool = True  # False: signed by an existing CA, whose files are left as they are

    @property
    def ca_bundle(self) -> str:
        """The base64 `caBundle` of a webhook configuration's clientConfig."""
        return base64.b64encode(self.ca_cert).decode()

    def write(self, directory: Path) -> dict[str, Path]:
        """Write the files (each through a temporary name and a rename, keys 0600), the CA's
        only if it is new; the paths of the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {"ca.crt": self.ca_cert, "ca.key": self.ca_key} if self.new_ca else {}
        files |= {"tls.crt": self.tls_cert, "tls.key": self.tls_key}
        written = {}
        for name, data in files.items():
            path = directory / name
            temporary = directory / f".{name}.tmp"
            temporary.unlink(missing_ok=True)
            mode = 0o600 if name.endswith(".key") else 0o644
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, mode)  # whatever the umask
            os.replace(temporary, path)
            written[name] = path
        return written


def check_request(*, dns_names: Sequence[str], ip_addresses: Sequence[str], days: int) -> None:
    """ValueError unless these make a serving certificate."""
    if not dns_names and not ip_addresses:
        raise ValueError("give at least one DNS name or IP address for the serving certificate")
    if days < 1:
        raise ValueError("days must be at least 1")
    for text in ip_addresses:
        try:
            ipaddress.ip_address(text)
        except ValueError as error:
            raise ValueError(f"not an IP address: {text!r}") from error


def issue(
    *,
    dns_names: list[str],
    ip_addresses: list[str],
    days: int = 365,
    common_name: str = "",
    ca: CertificateAuthority | None = None,
) -> IssuedCertificates:
    """A serving certificate for the given DNS names and IPs, signed by `ca`, else by a fresh
    CA (valid CA_DAYS, or longer if `days` asks for it)."""
    check_request(dns_names=dns_names, ip_addresses=ip_addresses, days=days)
    new_ca = ca is None
    if ca is None:
        ca = CertificateAuthority("fluxwarden-ca", days=max(days + 1, CA_DAYS))
    else:
        expiry = ca.cert.not_valid_after_utc
        if expiry < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days):
            raise CertificateError(
                f"the CA expires on {expiry:%Y-%m-%d}, before a {days}-day certificate would"
            )
    subject = common_name or (dns_names[0] if dns_names else ip_addresses[0])
    cert, key = ca.issue(
        subject, days=days, dns_names=dns_names, ip_addresses=ip_addresses, server=True
    )
    return IssuedCertificates(
        ca_cert=ca.cert_pem, ca_key=ca.key_pem, tls_cert=cert, tls_key=key, new_ca=new_ca
    )
