"""How `fluxwarden serve` finds and authenticates to the API without the kubernetes client
(`webhook.kube.rest`): a kubeconfig with a client certificate or a token, a pod's ServiceAccount
(its token re-read when the kubelet rotates it), and the kubeconfigs only the client can load."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.certs import CertificateAuthority
from webhook.kube.rest import (
    TOKEN_REREAD,
    ApiError,
    ClientReader,
    ConfigError,
    RestReader,
    in_cluster_credentials,
    load_reader,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "/apis/apps/v1/namespaces/flux-system/deployments/kustomize-controller"


@dataclass
class TLSApi:
    """An HTTPS API on loopback that answers GETs for the client certificate `admin` or the
    bearer token in `tokens`, and records who asked."""

    port: int
    ca: CertificateAuthority
    dir: Path
    tokens: set[str]
    seen: list[str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[TLSApi]:
    ca = CertificateAuthority("test-ca", days=1)
    cert, key = ca.issue("api", days=1, ip_addresses=["127.0.0.1"], server=True)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    tokens: set[str] = set()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            peer = self.connection.getpeercert()
            subject = dict(x[0] for x in peer["subject"]) if peer else {}
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            who = subject.get("commonName") or (token if token in tokens else "")
            seen.append(who or "anonymous")
            status: int = 200
            body: dict[str, Any] = {"metadata": {"name": "kustomize-controller"}, "spec": {}}
            if not who:
                status, body = 401, {"kind": "Status", "code": 401}
            elif self.path != DEPLOYMENT:
                status, body = 404, {"kind": "Status", "code": 404}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, or a token
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield TLSApi(server.server_address[1], ca, tmp_path, tokens, seen)
    server.shutdown()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "here",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "here", "context": {"cluster": "c", "user": "u"}},
                    {"name": "other", "context": {"cluster": "c", "user": "nobody"}},
                ],
            }
        )
    )
    return path


def test_a_kubeconfig_with_a_client_certificate_as_the_e2e_control_plane_writes_it(
    tls_api: TLSApi,
) -> None:
    cert, key = tls_api.ca.issue("admin", days=1, organizations=["system:masters"])
    kubeconfig = _kubeconfig(
        tls_api.dir / "kubeconfig",
        {"server": tls_api.url, "certificate-authority-data": _b64(tls_api.ca.cert_pem)},
        {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
    )
    reader = load_reader(str(kubeconfig))
    assert isinstance(reader, RestReader)
    assert reader.get(DEPLOYMENT, timeout=5)["metadata"]["name"] == "kustomize-controller"
    with pytest.raises(ApiError) as missing:
        reader.get(DEPLOYMENT + "-absent", timeout=5)
    assert missing.value.status == 404
    assert tls_api.seen == ["admin", "admin"]


def test_a_kubeconfig_with_files_relative_to_it_and_a_token(tls_api: TLSApi) -> None:
    tls_api.tokens.add("sa-token")
    kubeconfig = _kubeconfig(
        tls_api.dir / "kubeconfig",
        {"server": tls_api.url, "certificate-authority": "ca.crt"},
        {"token": "sa-token"},
    )
    assert load_reader(str(kubeconfig)).get(DEPLOYMENT, timeout=5)["spec"] == {}
    assert tls_api.seen == ["sa-token"]


def test_the_server_certificate_is_verified_against_the_kubeconfig_ca(tls_api: TLSApi) -> None:
    other = CertificateAuthority("another-ca", days=1)
    kubeconfig = _kubeconfig(
        tls_api.dir / "kubeconfig",
        {"server": tls_api.url, "certificate-authority-data": _b64(other.cert_pem)},
        {"token": "sa-token"},
    )
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        load_reader(str(kubeconfig)).get(DEPLOYMENT, timeout=5)
    assert tls_api.seen == []


def test_in_a_pod_the_service_account_token_is_re_read_as_the_kubelet_rotates_it(
    tls_api: TLSApi,
) -> None:
    account = tls_api.dir / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(tls_api.ca.cert_pem)
    (account / "token").write_text("token-1\n")
    tls_api.tokens.update({"token-1", "token-2"})
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_api.port)}
    credentials = in_cluster_credentials(environ, account)
    assert credentials is not None
    clock = [0.0]
    reader = RestReader(credentials, clock=lambda: clock[0])
    reader.get(DEPLOYMENT, timeout=5)
    (account / "token").write_text("token-2\n")
    reader.get(DEPLOYMENT, timeout=5)  # within TOKEN_REREAD: the token read before
    clock[0] = TOKEN_REREAD
    reader.get(DEPLOYMENT, timeout=5)
    assert tls_api.seen == ["token-1", "token-1", "token-2"]
    assert in_cluster_credentials({}, account) is None  # not in a pod


def test_a_kubeconfig_only_the_kubernetes_client_can_load_goes_to_it(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(
        tmp_path / "kubeconfig",
        {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True},
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "true"}},
    )
    assert isinstance(load_reader(str(kubeconfig)), ClientReader)


def test_a_missing_or_broken_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig"):
        load_reader(str(tmp_path / "absent"))
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", {"server": "https://x"}, {"token": "t"})
    with pytest.raises(ConfigError, match="no user named 'nobody'"):
        load_reader(str(kubeconfig), "other")
    with pytest.raises(ConfigError, match="no context named 'gone'"):
        load_reader(str(kubeconfig), "gone")


def test_serve_with_kube_lookups_does_not_load_the_kubernetes_client(tmp_path: Path) -> None:
    """What saves ~22 MiB per pod (bench/README.md, "Memory of a serve pod")."""
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", {"server": "https://x"}, {"token": "t"})
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from webhook.server.run import ServeOptions, _make_lookups\n"
        f"options = ServeOptions(policies=Path('p'), cert_file=None, key_file=None,"
        f" lookups='kube', kubeconfig={str(kubeconfig)!r})\n"
        "print(type(_make_lookups(options)).__name__, 'kubernetes' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["KubeLookups", "False"]
