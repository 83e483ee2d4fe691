"""The Flask app through its test client: admission answers, bad input, metrics, policy reload."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import IRC_DEPLOYMENT
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import NoLookups
from webhook.server.app import ServerConfig, create_app
from webhook.server.policystore import PolicyStore, load_policy_file

Review = Callable[..., dict[str, Any]]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    shutil.copy(SHIPPED_POLICIES, path)
    return path


@pytest.fixture
def store(policy_file: Path) -> PolicyStore:
    return PolicyStore(policy_file, interval=0)


@pytest.fixture
def app(store: PolicyStore) -> Flask:
    return create_app(ServerConfig(policies=store, lookups=NoLookups(), max_body_bytes=64 * 1024))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _post(client: FlaskClient, path: str, payload: Any) -> Any:
    return client.post(path, data=json.dumps(payload), content_type="application/json")


def _patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    encoded = response["response"].get("patch")
    return json.loads(base64.b64decode(encoded)) if encoded else []


def test_mutate_returns_patch_warnings_and_echoes_uid(
    client: FlaskClient, review_of: Review
) -> None:
    review = review_of(IRC_DEPLOYMENT)
    reply = _post(client, "/mutate", review)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    answer = body["response"]
    assert answer["uid"] == review["request"]["uid"]
    assert answer["allowed"] is True
    assert answer["patchType"] == "JSONPatch"
    assert _patch(body) == [
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/resources/limits/memory",
            "value": "2Gi",
        },
    ]
    assert [w.split(":")[1].strip() for w in answer["warnings"]] == ["irc-single-replica"] * 2


def test_dry_run_gets_the_same_patch(client: FlaskClient, review_of: Review) -> None:
    real = _post(client, "/mutate", review_of(IRC_DEPLOYMENT)).get_json()
    dry = _post(client, "/mutate", review_of(IRC_DEPLOYMENT, dry_run=True)).get_json()
    assert _patch(dry) == _patch(real) != []
    assert dry["response"]["warnings"] == real["response"]["warnings"]


def test_v1beta1_is_answered_in_kind(client: FlaskClient, review_of: Review) -> None:
    body = _post(
        client, "/mutate", review_of(IRC_DEPLOYMENT, api_version="admission.k8s.io/v1beta1")
    ).get_json()
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"


def test_delete_is_allowed_untouched(client: FlaskClient, review_of: Review) -> None:
    review = review_of(None, operation="DELETE")
    body = _post(client, "/validate", review).get_json()
    assert body["response"] == {"uid": review["request"]["uid"], "allowed": True}


def test_validate_denies_a_self_reference_with_403(client: FlaskClient, review_of: Review) -> None:
    obj = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"dependsOn": [{"name": "apps"}]},
    }
    answer = _post(client, "/validate", review_of(obj)).get_json()["response"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert "depends on itself" in answer["status"]["message"]
    # The mutating webhook does not run validating policies.
    assert _post(client, "/mutate", review_of(obj)).get_json()["response"]["allowed"] is True


def _bad(
    client: FlaskClient, path: str, data: bytes | str, content_type: str = "application/json"
) -> Any:
    reply = client.post(path, data=data, content_type=content_type)
    assert 400 <= reply.status_code < 500, reply.data
    body = reply.get_json()
    assert set(body) == {"error", "status"}
    assert "\n" not in body["error"]
    return reply.status_code, body["error"]


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"kind": "ConfigMap"}', 400, "expected kind AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', 400, "no request"),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}',
            400,
            "request.uid",
        ),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1",'
            b'"request":{"uid":"x","operation":"PATCH","kind":{}}}',
            400,
            "request.operation",
        ),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1",'
            b'"request":{"uid":"x","operation":"CREATE","kind":{"version":"v1","kind":"Pod"},"object":7}}',
            400,
            "request.object",
        ),
        (b"[" * 50_000, 400, "not valid JSON"),
    ],
)
def test_malformed_bodies_get_a_4xx_json_error(
    client: FlaskClient, data: bytes, status: int, fragment: str
) -> None:
    code, error = _bad(client, "/mutate", data)
    assert code == status
    assert fragment in error


def test_wrong_content_type_is_415(client: FlaskClient, review_of: Review) -> None:
    code, error = _bad(client, "/validate", json.dumps(review_of(IRC_DEPLOYMENT)), "text/plain")
    assert code == 415
    assert "application/json" in error


def test_too_large_is_413(client: FlaskClient) -> None:
    code, _ = _bad(client, "/mutate", b"{" + b" " * (65 * 1024) + b"}")
    assert code == 413


def test_unknown_path_and_method_are_json_errors(client: FlaskClient) -> None:
    assert client.get("/nope").get_json()["status"] == 404
    assert client.get("/mutate").get_json()["status"] == 405


def test_metrics_count_requests_results_and_bad_requests(
    client: FlaskClient, review_of: Review
) -> None:
    def sample(name: str, **labels: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    labels = {"webhook": "mutate", "operation": "CREATE", "kind": "Deployment", "result": "patched"}
    before = sample("fluxwarden_admission_requests_total", **labels)
    results_before = sample(
        "fluxwarden_policy_results_total", policy="irc-single-replica", action="mutated"
    )
    bad_before = sample("fluxwarden_bad_requests_total", status="400")
    _post(client, "/mutate", review_of(IRC_DEPLOYMENT))
    client.post("/mutate", data=b"{", content_type="application/json")
    assert sample("fluxwarden_admission_requests_total", **labels) == before + 1
    assert sample("fluxwarden_admission_duration_seconds_count", **labels) >= before + 1
    assert sample(
        "fluxwarden_policy_results_total", policy="irc-single-replica", action="mutated"
    ) == (results_before + 1)
    assert sample("fluxwarden_bad_requests_total", status="400") == bad_before + 1


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    shipped = load_policy_file(SHIPPED_POLICIES)
    assert ready.get_json()["policies"] == len(shipped.policies) > 0


def test_policy_file_reload_and_invalid_file_keeps_old_set(
    client: FlaskClient, policy_file: Path, review_of: Review
) -> None:
    text = policy_file.read_text()
    policy_file.write_text(text.replace("mode: enforce\n  exclude", "mode: audit\n  exclude"))
    audited = _post(client, "/mutate", review_of(IRC_DEPLOYMENT)).get_json()["response"]
    assert "patch" not in audited
    assert "irc-single-replica" in audited["auditAnnotations"]

    def load_errors() -> float:
        for line in client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith("fluxwarden_policy_load_errors_total "):
                return float(line.split()[1])
        raise AssertionError("no fluxwarden_policy_load_errors_total")

    errors_before = load_errors()
    policy_file.write_text(text.replace("memoryLimit: 2Gi", "memoryLimit: plenty"))
    still = _post(client, "/mutate", review_of(IRC_DEPLOYMENT)).get_json()["response"]
    assert "patch" not in still  # the audit-mode set stays in force
    ready = client.get("/readyz").get_json()
    assert "memoryLimit" in ready["lastReloadError"]
    assert load_errors() == errors_before + 1

    policy_file.write_text(text)
    restored = _post(client, "/mutate", review_of(IRC_DEPLOYMENT)).get_json()["response"]
    assert restored["patchType"] == "JSONPatch"


def test_metric_labels_stay_bounded_whatever_kinds_clients_send(
    client: FlaskClient, review_of: Review
) -> None:
    for index in range(20):
        review = review_of(
            None, operation="DELETE", kind={"group": "x", "version": "v1", "kind": f"Made{index}"}
        )
        assert _post(client, "/validate", review).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert "Made" not in text
    assert 'kind="other"' in text


def test_a_lone_surrogate_in_a_dependency_name_is_answered_not_500(
    store: PolicyStore, review_of: Review
) -> None:
    from webhook.lookups.offline import OfflineLookups

    client = create_app(ServerConfig(policies=store, lookups=OfflineLookups([]))).test_client()
    hr = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {"interval": "5m", "dependsOn": [{"name": "\ud800"}]},
    }
    reply = _post(client, "/validate", review_of(hr))  # json.dumps escapes it as \\ud800
    assert reply.status_code == 200
    warnings = reply.get_json()["response"]["warnings"]
    assert any("not found: flux-system/?" in w for w in warnings), warnings


def test_a_store_that_missed_a_good_version_falls_back_to_the_newest_good_copy(
    policy_file: Path, tmp_path: Path, review_of: Review
) -> None:
    """Two processes sharing the last good copy: one made at start-up (as gunicorn's master makes
    the store a restarted worker inherits), one that loaded the next good version. When the file
    goes bad, the first serves that version, not its start-up set."""
    text = policy_file.read_text()
    state = tmp_path / "state"
    inherited = PolicyStore(policy_file, interval=0, state_dir=state)
    policy_file.write_text(text.replace("mode: enforce\n  exclude", "mode: audit\n  exclude"))
    assert PolicyStore(policy_file, interval=0, state_dir=state).current().mode == "audit"
    policy_file.write_text(text.replace("memoryLimit: 2Gi", "memoryLimit: plenty"))
    assert inherited.current().mode == "audit"
    assert "memoryLimit" in (inherited.last_error or "")
    client = create_app(ServerConfig(policies=inherited, lookups=NoLookups())).test_client()
    answer = _post(client, "/mutate", review_of(IRC_DEPLOYMENT)).get_json()["response"]
    assert "patch" not in answer  # the audit-mode set, not the enforcing start-up one
