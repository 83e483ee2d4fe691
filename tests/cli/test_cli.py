"""The `fluxwarden` command line, run as a user runs it (a subprocess of the console script)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.conftest import IRC_DEPLOYMENT, admission_review
from webhook.cli import SHIPPED_POLICIES
from webhook.server.policystore import load_policy_file

FLUXWARDEN = [sys.executable, "-m", "webhook"]


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLUXWARDEN, *args], input=stdin, capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def irc_review(tmp_path: Path) -> Path:
    path = tmp_path / "review.json"
    path.write_text(json.dumps(admission_review(IRC_DEPLOYMENT)))
    return path


def _response(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["kind"] == "AdmissionReview"
    response: dict[str, Any] = body["response"]
    return response


def test_review_irc_sets_replicas_and_memory_and_says_so(irc_review: Path) -> None:
    response = _response(run("review", str(irc_review)))
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {"op": "replace", "path": "/spec/replicas", "value": 1} in patch
    assert {
        "op": "replace",
        "path": "/spec/template/spec/containers/0/resources/limits/memory",
        "value": "2Gi",
    } in patch
    assert any("spec.replicas to 1 (was 2)" in w for w in response["warnings"])
    assert any("limits.memory to 2Gi (was 1Gi)" in w for w in response["warnings"])


def test_review_in_audit_mode_only_annotates(irc_review: Path) -> None:
    response = _response(run("review", str(irc_review), "--mode", "audit"))
    assert "patch" not in response
    assert "warnings" not in response
    assert response["auditAnnotations"]["irc-single-replica"].startswith("audited: would set")


def test_review_mode_from_environment(irc_review: Path) -> None:
    import os

    response = _response(
        run("review", str(irc_review), env={**os.environ, "FLUXWARDEN_MODE": "warn"})
    )
    assert "patch" not in response
    assert all(
        w.startswith("fluxwarden: irc-single-replica: would set") for w in response["warnings"]
    )


def test_review_reads_stdin_and_webhook_flag(irc_review: Path) -> None:
    text = irc_review.read_text()
    assert "patch" in _response(run("review", "-", stdin=text))
    assert "patch" not in _response(run("review", "-", "--webhook", "validate", stdin=text))


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (["review", "/no/such/file"], None, "cannot read /no/such/file"),
        (["review", "-"], "{not json", "not valid JSON"),
        (["review", "-"], '{"kind": "Pod"}', "expected kind AdmissionReview"),
        (["review", "-", "--mode", "loud"], "{}", "invalid choice"),
        (["policies", "--policies", "/no/such.yaml"], None, "cannot read"),
        (["certs", "--out", "/tmp/x"], None, "at least one DNS name or IP"),
        (["certs", "--out", "/tmp/x", "--ip", "not-an-ip"], None, "not an IP address"),
        (["serve", "--cert-file", "a.crt"], None, "--cert-file and --key-file go together"),
        (
            ["review", "-", "--kubeconfig", "/nonexistent"],
            "{}",
            "cannot load Kubernetes config from /nonexistent",
        ),
        (
            ["audit", "--cluster", "--kubeconfig", "/nonexistent"],
            None,
            "cannot load Kubernetes config from /nonexistent",
        ),
        (
            ["serve", "--lookups", "kube", "--kubeconfig", "/nonexistent"],
            None,
            "cannot load Kubernetes config from /nonexistent",
        ),
        (["frobnicate"], None, "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], stdin: str | None, fragment: str) -> None:
    result = run(*args, stdin=stdin)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_policy_file_is_a_usage_error(tmp_path: Path, irc_review: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "apiVersion: fluxwarden.io/v1alpha1\nkind: PolicySet\nmetadata: {name: x}\n"
        "spec:\n  policies:\n  - name: irc-single-replica\n    params: {memoryLimit: lots}\n"
    )
    result = run("review", str(irc_review), "--policies", str(bad))
    assert result.returncode == 2
    assert f"{bad}: policy irc-single-replica: params field memoryLimit" in result.stderr


def test_certs_writes_a_usable_pair_and_prints_the_ca_bundle(tmp_path: Path) -> None:
    result = run(
        "certs",
        "--out",
        str(tmp_path),
        "--dns",
        "fluxwarden.fluxwarden-system.svc",
        "--ip",
        "127.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    ca = (tmp_path / "ca.crt").read_bytes()
    assert base64.b64decode(result.stdout.strip()) == ca
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fluxwarden.fluxwarden-system.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca_cert = x509.load_pem_x509_certificate(ca)
    cert.verify_directly_issued_by(ca_cert)
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_review_with_a_broken_kubeconfig_is_a_usage_error(tmp_path: Path, irc_review: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nclusters: [\n")
    result = run("review", str(irc_review), "--kubeconfig", str(kubeconfig))
    assert result.returncode == 2
    assert f"cannot load Kubernetes config from {kubeconfig}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


CERTS_DNS = ("--dns", "fluxwarden.fluxwarden-system.svc")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_certs_again_reuses_the_ca_and_issues_a_new_serving_certificate(tmp_path: Path) -> None:
    first = run("certs", "--out", str(tmp_path), *CERTS_DNS)
    assert first.returncode == 0, first.stderr
    before = _files(tmp_path)
    second = run("certs", "--out", str(tmp_path), *CERTS_DNS)
    assert second.returncode == 0, second.stderr
    assert "reusing the CA" in second.stderr
    after = _files(tmp_path)
    assert after["ca.crt"] == before["ca.crt"]  # byte for byte: the caBundle stays
    assert after["ca.key"] == before["ca.key"]
    assert second.stdout == first.stdout
    assert after["tls.crt"] != before["tls.crt"]
    assert after["tls.key"] != before["tls.key"]
    ca = x509.load_pem_x509_certificate(after["ca.crt"])
    x509.load_pem_x509_certificate(after["tls.crt"]).verify_directly_issued_by(ca)

    renewed = run("certs", "--out", str(tmp_path), *CERTS_DNS, "--new-ca")
    assert renewed.returncode == 0, renewed.stderr
    fresh = _files(tmp_path)
    assert fresh["ca.crt"] != after["ca.crt"]
    assert fresh["ca.key"] != after["ca.key"]
    assert base64.b64decode(renewed.stdout.strip()) == fresh["ca.crt"]
    new_ca = x509.load_pem_x509_certificate(fresh["ca.crt"])
    x509.load_pem_x509_certificate(fresh["tls.crt"]).verify_directly_issued_by(new_ca)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (
            {"ca.key": b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"},
            "not an unencrypted PEM private key",
        ),
        ({"ca.crt": b"not a certificate"}, "not a PEM certificate"),
        ("tls-as-ca", "not a CA"),
        ("other-ca-key", "does not match"),
        ("no-ca-key", "has ca.crt but no ca.key"),
    ],
    ids=["corrupt-key", "corrupt-cert", "leaf-as-ca", "mismatched", "missing-key"],
)
def test_certs_with_an_unusable_ca_is_a_usage_error(
    tmp_path: Path, damage: dict[str, bytes] | str, fragment: str
) -> None:
    out, other = tmp_path / "out", tmp_path / "other"
    for directory in (out, other):
        assert run("certs", "--out", str(directory), *CERTS_DNS).returncode == 0
    if damage == "tls-as-ca":
        damage = {
            "ca.crt": (out / "tls.crt").read_bytes(),
            "ca.key": (out / "tls.key").read_bytes(),
        }
    elif damage == "other-ca-key":
        damage = {"ca.key": (other / "ca.key").read_bytes()}
    elif damage == "no-ca-key":
        (out / "ca.key").unlink()
        damage = {}
    assert isinstance(damage, dict)
    for name, data in damage.items():
        (out / name).write_bytes(data)
    before = _files(out)
    result = run("certs", "--out", str(out), *CERTS_DNS)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "--new-ca" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _files(out) == before  # nothing written
    assert run("certs", "--out", str(out), *CERTS_DNS, "--new-ca").returncode == 0


def test_policies_lists_effective_modes() -> None:
    result = run("policies", "--mode", "audit")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "(ceiling: audit)" in lines[0]
    policies = [line for line in lines[1:] if not line.split()[0].startswith("source:")]
    rows = {line.split()[0]: line.split()[1] for line in policies}
    assert rows["irc-single-replica"] == "audit"
    shipped = load_policy_file(SHIPPED_POLICIES)
    assert list(rows) == [p.policy.name for p in shipped.policies]
    as_json = json.loads(run("policies", "-o", "json").stdout)
    interval = next(p for p in as_json if p["name"] == "helmrelease-interval")
    assert interval["mode"] == "warn"
    assert interval["params"]["minInterval"] == "1m"
    # every shipped policy cites where its practice comes from, in both outputs
    assert all(
        p["sources"] and all(s.startswith("https://") for s in p["sources"]) for p in as_json
    )
    cited = [line.split()[1] for line in lines[1:] if line.split()[0] == "source:"]
    assert cited == [s for p in as_json for s in p["sources"]]
