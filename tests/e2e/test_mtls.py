"""mTLS on the real API server: started with `--admission-control-config-file`, it presents a
client certificate (AdmissionConfiguration -> kubeConfigFile) to `fluxwarden serve
--client-ca-file`; admissions work, a direct client without a certificate is refused."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import IRC_DEPLOYMENT, admission_review
from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import (
    apply_objects,
    dry_run_probe,
    ensure_namespaces,
    free_port,
    wait_until,
    webhook_configurations,
)
from tests.server.test_server_process import Server, _write_certs, running_server
from webhook.certs import CertificateAuthority

pytestmark = pytest.mark.e2e


def admission_config(directory: Path, *, port: int, cert: bytes, key: bytes) -> Path:
    """The API server's AdmissionConfiguration: a client certificate for the webhook's host."""
    kubeconfig = directory / "webhook-client.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "users": [
                    {
                        "name": f"127.0.0.1:{port}",  # host:port of the webhook URL
                        "user": {
                            "client-certificate-data": base64.b64encode(cert).decode(),
                            "client-key-data": base64.b64encode(key).decode(),
                        },
                    }
                ],
            }
        )
    )
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(kubeconfig),
    }
    config = directory / "admission.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {"name": "MutatingAdmissionWebhook", "configuration": plugin},
                    {"name": "ValidatingAdmissionWebhook", "configuration": plugin},
                ],
            }
        )
    )
    return config


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Server, Path]]:
    directory = tmp_path_factory.mktemp("mtls")
    _write_certs(directory)  # serving pair + its CA
    client_ca = CertificateAuthority("fluxwarden-webhook-clients", days=2)
    cert, key = client_ca.issue("kube-apiserver", days=2)
    (directory / "client-ca.crt").write_bytes(client_ca.cert_pem)
    (directory / "client.crt").write_bytes(cert)
    (directory / "client.key").write_bytes(key)
    port = free_port()
    config = admission_config(directory, port=port, cert=cert, key=key)
    cluster = ControlPlane(extra_apiserver_args=[f"--admission-control-config-file={config}"])
    cluster.start()
    try:
        ensure_namespaces(cluster, "flux-system")
        client_ca_arg = ("--client-ca-file", str(directory / "client-ca.crt"))
        with running_server(directory, "--workers", "1", *client_ca_arg, port=port) as server:
            ca_bundle = base64.b64encode((directory / "ca.crt").read_bytes()).decode()
            apply_objects(
                cluster,
                webhook_configurations(
                    cluster, url=f"https://127.0.0.1:{port}", ca_bundle=ca_bundle
                ),
            )
            yield cluster, server, directory
    finally:
        cluster.stop()


def _post(port: int, context: ssl.SSLContext, body: bytes) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    return reply.status


def test_the_api_server_presents_its_certificate_and_admissions_work(
    mtls: tuple[ControlPlane, Server, Path],
) -> None:
    cluster, _, _ = mtls

    def mutated() -> bool:
        done = dry_run_probe(cluster)
        return done.returncode == 0 and json.loads(done.stdout)["spec"]["replicas"] == 1

    wait_until("the API server's admission through mTLS", mutated, timeout=30)


def test_a_client_without_a_certificate_is_refused(
    mtls: tuple[ControlPlane, Server, Path],
) -> None:
    _, server, directory = mtls
    review = json.dumps(admission_review(IRC_DEPLOYMENT)).encode()
    status, reply = server.post("/mutate", review)  # no client certificate
    assert status == 403
    assert "client certificate" in reply["error"]
    assert json.loads(server.get("/readyz"))["status"] == "ready"  # probes need no certificate
    with_cert = server.context()
    with_cert.load_cert_chain(directory / "client.crt", directory / "client.key")
    assert _post(server.port, with_cert, review) == 200


def test_a_certificate_from_another_ca_fails_the_handshake(
    mtls: tuple[ControlPlane, Server, Path],
) -> None:
    _, server, directory = mtls
    stranger = CertificateAuthority("someone-else", days=2)
    cert, key = stranger.issue("intruder", days=2)
    (directory / "stranger.crt").write_bytes(cert)
    (directory / "stranger.key").write_bytes(key)
    context = server.context()
    context.load_cert_chain(directory / "stranger.crt", directory / "stranger.key")
    with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: seen at the first read
        _post(server.port, context, b"{}")
