"""The Flask app factory: HTTP in and out around `admission.review`. No policy logic here."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..admission import BadRequest, parse_json, review
from ..engine import Decision, Lookups, Mode, PolicyResult
from ..engine.scope import known_kinds
from . import metrics
from .decisionlog import log_decision
from .policystore import PolicyStore

log = logging.getLogger("fluxwarden.server")

# The API server caps objects at ~1.5 MiB in etcd; a review carries object and oldObject.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServerConfig:
    policies: PolicyStore
    lookups: Lookups
    mode_override: Mode | None = None
    max_body_bytes: int = MAX_BODY_BYTES


def _json(payload: object, status: int) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status, mimetype="application/json")


def _error(message: str, status: int) -> Response:
    metrics.BAD_REQUESTS.labels(str(status)).inc()
    return _json({"error": " ".join(message.split()), "status": status}, status)


def _outcome(decision: Decision) -> str:
    if not decision.allowed:
        return "denied"
    return "patched" if decision.patch else "allowed"


# Label values come from the request, which any client can send: only known kinds are labels.
_METRIC_KINDS = known_kinds()


def metric_kind(kind: str) -> str:
    return kind if kind in _METRIC_KINDS else "other"


def _count_results(results: list[PolicyResult]) -> None:
    for r in results:
        metrics.POLICY_RESULTS.labels(r.policy, r.mode, r.result, r.action).inc()


def create_app(config: ServerConfig) -> Flask:
    app = Flask("fluxwarden")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes

    def admit(webhook: str) -> Response:
        started = time.perf_counter()
        if request.mimetype != "application/json":
            return _error(f"content type must be application/json, got {request.mimetype!r}", 415)
        try:
            payload = parse_json(request.get_data(cache=False))
            policy_set = config.policies.current().with_ceiling(config.mode_override)
            response, admission, decision = review(
                payload,
                policy_set=policy_set,
                lookups=config.lookups,
                webhook="mutate" if webhook == "mutate" else "validate",
            )
        except BadRequest as error:
            return _error(str(error), error.status)
        duration = time.perf_counter() - started
        target = admission.request.target
        labels = (
            webhook,
            admission.request.operation,
            metric_kind(target.kind),
            _outcome(decision),
        )
        metrics.REQUESTS.labels(*labels).inc()
        metrics.LATENCY.labels(*labels).observe(duration)
        _count_results(decision.results)
        log_decision(webhook=webhook, admission=admission, decision=decision, duration=duration)
        return _json(response, 200)

    @app.post("/mutate")
    def mutate() -> Response:
        return admit("mutate")

    @app.post("/validate")
    def validate() -> Response:
        return admit("validate")

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        policy_set = config.policies.current()
        body = {
            "status": "ready",
            "policySet": policy_set.name,
            "policies": len(policy_set.policies),
        }
        if config.policies.last_error:
            body["lastReloadError"] = config.policies.last_error
        return _json(body, 200)

    @app.get("/metrics")
    def prometheus() -> Response:
        text, content_type = metrics.render()
        return Response(text, 200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if code >= 500:  # our fault, not the client's: logged, not counted as a bad request
            log.error("server error: %s", error.description or error.name)
            return _json({"error": "internal server error", "status": code}, code)
        return _error(error.description or error.name, code)

    return app
