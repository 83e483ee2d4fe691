"""Certificates: a small CA and the leaves it signs, for installs without cert-manager, local
runs, and the local control plane's own serving and client certificates."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between machines


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
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
    """A self-signed CA (ECDSA P-256) that signs server and client certificates."""

    def __init__(self, common_name: str, *, days: int) -> None:
        self.key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

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
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if dns_names or ip_addresses:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


@dataclass(frozen=True)
class IssuedCertificates:
    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes

    @property
    def ca_bundle(self) -> str:
        """The base64 `caBundle` of a webhook configuration's clientConfig."""
        return base64.b64encode(self.ca_cert).decode()

    def write(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "ca.crt": self.ca_cert,
            "ca.key": self.ca_key,
            "tls.crt": self.tls_cert,
            "tls.key": self.tls_key,
        }
        written = {}
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            if name.endswith(".key"):
                path.chmod(0o600)
            written[name] = path
        return written


def issue(
    *, dns_names: list[str], ip_addresses: list[str], days: int = 365, common_name: str = ""
) -> IssuedCertificates:
    """A fresh CA and a serving certificate it signs for the given DNS names and IPs."""
    if not dns_names and not ip_addresses:
        raise ValueError("give at least one DNS name or IP address for the serving certificate")
    if days < 1:
        raise ValueError("days must be at least 1")
    for text in ip_addresses:
        try:
            ipaddress.ip_address(text)
        except ValueError as error:
            raise ValueError(f"not an IP address: {text!r}") from error
    ca = CertificateAuthority("fluxwarden-ca", days=days + 1)
    subject = common_name or (dns_names[0] if dns_names else ip_addresses[0])
    cert, key = ca.issue(
        subject, days=days, dns_names=dns_names, ip_addresses=ip_addresses, server=True
    )
    return IssuedCertificates(
        ca_cert=ca.cert_pem, ca_key=key_pem(ca.key), tls_cert=cert, tls_key=key
    )
