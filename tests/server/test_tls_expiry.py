"""The serving certificate's notAfter, read without `cryptography` (the server does not load it):
the same dates as `cryptography` reads, in both ASN.1 time encodings."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhook.server.tls import certificate_expiry, not_after

UTC = datetime.UTC


def _certificate(not_valid_after: datetime.datetime, *, issuer: str, serial: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, part) for part in issuer.split()]
        + [x509.NameAttribute(NameOID.COMMON_NAME, "fluxwarden")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(not_valid_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "expiry",
    [
        datetime.datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC),
        datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # last UTCTime year
        datetime.datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC),  # GeneralizedTime from here
        datetime.datetime(2199, 6, 30, 12, 0, 0, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize(
    "issuer", ["ca", " ".join(["a-long-issuer-unit"] * 8)]
)  # long-form lengths
def test_not_after_matches_cryptography(expiry: datetime.datetime, issuer: str) -> None:
    der = _certificate(expiry, issuer=issuer, serial=x509.random_serial_number())
    assert not_after(der) == expiry
    assert not_after(der) == x509.load_der_x509_certificate(der).not_valid_after_utc


@pytest.mark.parametrize("attempt", range(40))  # ECDSA signatures vary in length, so do the PEMs
def test_expiry_of_a_pem_file_with_a_chain_is_the_first_certificate(
    tmp_path: Path, attempt: int
) -> None:
    """cert-manager's tls.crt: leaf then CA. Reading the whole file as one PEM block failed
    with a base64 error for 1 to 4 in 12 random chains."""
    leaf = _certificate(datetime.datetime(2027, 2, 3, tzinfo=UTC), issuer="ca", serial=7)
    ca = _certificate(datetime.datetime(2036, 2, 3, tzinfo=UTC), issuer="ca", serial=1)
    pem = b"".join(
        x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
        for d in (leaf, ca)
    )
    (tmp_path / "tls.crt").write_bytes(pem)
    assert certificate_expiry(tmp_path / "tls.crt") == datetime.datetime(2027, 2, 3, tzinfo=UTC)


def test_a_file_without_a_certificate_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_expiry(tmp_path / "tls.crt")


@pytest.mark.parametrize(
    "data", [b"", b"\x30\x82\xff\xff\x30", b"\x04\x03abc", b"\x30\x03\x02\x01\x01"]
)
def test_not_a_certificate_is_an_error(data: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        not_after(data)
