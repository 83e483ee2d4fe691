"""webhook.certs: a fresh CA, an existing CA loaded again (rotation keeps the caBundle), and the
checks that refuse a pair that is not a usable CA."""

from __future__ import annotations

import datetime
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from webhook.certs import (
    CA_DAYS,
    CertificateAuthority,
    CertificateError,
    issue,
    key_pem,
)

DNS = ["fluxwarden.fluxwarden-system.svc"]


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _self_signed(
    *, ca: bool, days: int = 30, start: datetime.datetime | None = None, key_cert_sign: bool = True
) -> tuple[bytes, bytes]:
    """A self-signed RSA certificate built by hand, for the shapes CertificateAuthority never
    makes itself."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand-made")])
    start = start or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def test_a_fresh_ca_outlives_many_serving_certificates() -> None:
    issued = issue(dns_names=DNS, ip_addresses=[], days=90)
    ca, leaf = _load(issued.ca_cert), _load(issued.tls_cert)
    assert issued.new_ca
    assert ca.not_valid_after_utc - leaf.not_valid_after_utc > datetime.timedelta(days=CA_DAYS - 91)
    leaf.verify_directly_issued_by(ca)


def test_a_loaded_ca_signs_with_the_same_ca_certificate() -> None:
    first = issue(dns_names=DNS, ip_addresses=["127.0.0.1"], days=30)
    ca = CertificateAuthority.from_pem(first.ca_cert, first.ca_key)
    second = issue(dns_names=DNS, ip_addresses=["127.0.0.1"], days=30, ca=ca)
    assert not second.new_ca
    assert second.ca_cert == first.ca_cert
    assert second.ca_key == first.ca_key
    assert second.ca_bundle == first.ca_bundle
    assert second.tls_cert != first.tls_cert
    assert second.tls_key != first.tls_key
    ca_cert, leaf = _load(first.ca_cert), _load(second.tls_cert)
    leaf.verify_directly_issued_by(ca_cert)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_a_hand_made_rsa_ca_is_accepted() -> None:
    cert_pem, private_key_pem = _self_signed(ca=True, days=400)
    ca = CertificateAuthority.from_pem(cert_pem, private_key_pem)
    issued = issue(dns_names=DNS, ip_addresses=[], days=30, ca=ca)
    assert issued.ca_cert == cert_pem
    _load(issued.tls_cert).verify_directly_issued_by(_load(cert_pem))


def test_writing_with_a_reused_ca_leaves_the_ca_files_alone(tmp_path: Path) -> None:
    first = issue(dns_names=DNS, ip_addresses=[], days=30)
    assert set(first.write(tmp_path)) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    ca = CertificateAuthority.from_pem(
        (tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes()
    )
    second = issue(dns_names=DNS, ip_addresses=[], days=30, ca=ca)
    assert set(second.write(tmp_path)) == {"tls.crt", "tls.key"}
    assert (tmp_path / "ca.crt").stat().st_mtime_ns == before["ca.crt"]
    assert (tmp_path / "tls.crt").read_bytes() == second.tls_cert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def _other_ca() -> CertificateAuthority:
    return CertificateAuthority("other", days=30)


def _leaf() -> tuple[bytes, bytes]:
    return _other_ca().issue("leaf", days=10, dns_names=["leaf"], server=True)


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        (lambda: (b"not a certificate", _other_ca().key_pem), "not a PEM certificate"),
        (lambda: (_other_ca().cert_pem, b"not a key"), "not an unencrypted PEM private key"),
        (lambda: (_other_ca().cert_pem, _other_ca().key_pem), "does not match"),
        (_leaf, "not a CA"),
        (lambda: _self_signed(ca=False), "not a CA"),
        (lambda: _self_signed(ca=True, key_cert_sign=False), "no keyCertSign"),
        (
            lambda: _self_signed(
                ca=True, start=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
            ),
            "not valid now",
        ),
    ],
    ids=["garbage-cert", "garbage-key", "mismatched", "leaf", "no-ca-flag", "no-sign", "expired"],
)
def test_an_unusable_pair_is_refused(
    pair: Callable[[], tuple[bytes, bytes]], fragment: str
) -> None:
    cert_pem, private_key_pem = pair()
    with pytest.raises(CertificateError, match=fragment):
        CertificateAuthority.from_pem(cert_pem, private_key_pem)


def test_an_encrypted_ca_key_is_refused() -> None:
    ca = _other_ca()
    encrypted = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(CertificateError, match="unencrypted"):
        CertificateAuthority.from_pem(ca.cert_pem, encrypted)


def test_a_ca_expiring_before_the_serving_certificate_is_refused() -> None:
    ca = CertificateAuthority("short", days=10)
    loaded = CertificateAuthority.from_pem(ca.cert_pem, ca.key_pem)
    with pytest.raises(CertificateError, match="expires on"):
        issue(dns_names=DNS, ip_addresses=[], days=30, ca=loaded)


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = CertificateAuthority("short", days=10)
    cert, _ = ca.issue("leaf", days=30, dns_names=["leaf"], server=True)
    assert _load(cert).not_valid_after_utc <= ca.cert.not_valid_after_utc
