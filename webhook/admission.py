"""The AdmissionReview wire format: a request dict in, a response dict out. No HTTP here.

Like kopf's `serve_admission_request`: the web server only maps `BadRequest` to an HTTP status.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any, TypedDict

from .engine import (
    Decision,
    JsonObject,
    Lookups,
    PolicySet,
    Request,
    Webhook,
    evaluate,
    request_for,
)

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class BadRequest(ValueError):
    """A client mistake; `status` is the HTTP status to answer with (always 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


@dataclass(frozen=True)
class AdmissionRequest:
    api_version: str
    uid: str
    request: Request
    obj: JsonObject | None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # incl. decode errors, ints over 4300 digits
        raise BadRequest(f"body is not valid JSON: {error}".splitlines()[0]) from error


def _text(container: JsonObject, key: str, where: str, *, required: bool = False) -> str:
    value = container.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{where}.{key} must be a non-empty string")
    return value


def _mapping(value: Any) -> JsonObject:
    return value if isinstance(value, dict) else {}


def parse_admission_review(payload: Any) -> AdmissionRequest:
    """Validate the parts of an AdmissionReview the engine needs. Raises BadRequest."""
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object (an AdmissionReview)")
    kind, api_version = payload.get("kind"), payload.get("apiVersion")
    if kind != "AdmissionReview" or api_version not in API_VERSIONS:
        raise BadRequest(
            f"expected kind AdmissionReview with apiVersion in {list(API_VERSIONS)}, "
            f"got kind={kind!r} apiVersion={api_version!r}"
        )
    raw = payload.get("request")
    if not isinstance(raw, dict):
        raise BadRequest("AdmissionReview has no request object")
    uid = _text(raw, "uid", "request", required=True)
    operation = raw.get("operation")
    if operation not in OPERATIONS:
        raise BadRequest(f"request.operation must be one of {list(OPERATIONS)}, got {operation!r}")
    gvk = raw.get("kind")
    if not isinstance(gvk, dict):
        raise BadRequest("request.kind must be an object with group, version and kind")
    resource = _mapping(raw.get("resource"))
    user_info = _mapping(raw.get("userInfo"))
    obj = raw.get("object")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, dict):
        raise BadRequest(f"request.object must be an object for {operation}")
    old_obj = raw.get("oldObject")
    if old_obj is not None and not isinstance(old_obj, dict):
        raise BadRequest("request.oldObject must be an object or null")
    dry_run = raw.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("request.dryRun must be a boolean")
    request = request_for(
        obj,
        group=_text(gvk, "group", "request.kind"),
        version=_text(gvk, "version", "request.kind", required=True),
        kind=_text(gvk, "kind", "request.kind", required=True),
        resource=_text(resource, "resource", "request.resource"),
        resource_group=_text(resource, "group", "request.resource") if resource else None,
        sub_resource=_text(raw, "subResource", "request"),
        namespace=_text(raw, "namespace", "request"),
        name=_text(raw, "name", "request"),
        operation=operation,
        dry_run=dry_run,
        user=_text(user_info, "username", "request.userInfo"),
        old_object=old_obj if operation == "UPDATE" else None,
    )
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        request=request,
        obj=obj if isinstance(obj, dict) else None,
    )


# TEST-ONLY (tests/e2e/flux negative control): answer dry-run requests without the patch,
# the bug DESIGN.md forbids, to show the "never fights Flux" test can fail. Never set it.
_TEST_SKIP_DRYRUN_MUTATION = os.environ.get("FLUXWARDEN_TEST_SKIP_DRYRUN_MUTATION") == "1"


def build_response(admission: AdmissionRequest, decision: Decision) -> JsonObject:
    """The AdmissionReview the API server expects back (same apiVersion as the request)."""
    response: JsonObject = {"uid": admission.uid, "allowed": decision.allowed}
    if decision.patch and not (_TEST_SKIP_DRYRUN_MUTATION and admission.request.dry_run):
        encoded = json.dumps(decision.patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    if decision.warnings:
        response["warnings"] = decision.warnings
    if decision.audit_annotations:
        response["auditAnnotations"] = decision.audit_annotations
    if not decision.allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": "fluxwarden denied the request: " + "; ".join(decision.deny_reasons),
        }
    return {"apiVersion": admission.api_version, "kind": "AdmissionReview", "response": response}


ReviewOutcome = tuple[JsonObject, AdmissionRequest, Decision]


def review(
    payload: Any,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
    webhook: Webhook,
) -> ReviewOutcome:
    """Answer one AdmissionReview: shared by the server and `fluxwarden review`."""
    admission = parse_admission_review(payload)
    decision = evaluate(
        admission.obj or {},
        request=admission.request,
        policy_set=policy_set,
        lookups=lookups,
        webhook=webhook,
    )
    return build_response(admission, decision), admission, decision
