"""The Flask app factory: HTTP in and out around `admission.review`. No policy logic here."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from ..admission import BadRequest, parse_json, review
from ..engine import Decision, Lookups, PolicyResult
from ..engine.scope import known_kinds
from . import metrics
from .decisionlog import log_decision
from .policystore import PolicyStore

log = logging.getLogger("fluxwarden.server")

# The API server caps objects at ~1.5 MiB in etcd; a review carries object and oldObject.
MAX_BODY_BYTES = 4 * 1024 * 1024


# Total time to receive a body: the API server sends it at once; a client dribbling it is not.
BODY_TIMEOUT = 5.0
CHUNK = 64 * 1024


class RequestScoped(Protocol):
    """Lookups that can hand out a per-request view sharing one deadline (`KubeLookups`)."""

    def for_request(self, deadline: float) -> Lookups: ...


@dataclass
class ServerConfig:
    policies: PolicyStore
    lookups: Lookups
    max_body_bytes: int = MAX_BODY_BYTES
    # Seconds from receipt to answer, lookups included (below the webhook's timeout).
    deadline: float = 2.5
    body_timeout: float = BODY_TIMEOUT
    # mTLS: admissions only from clients that presented a certificate the TLS layer verified.
    require_client_cert: bool = False

    def lookups_for(self, deadline: float) -> Lookups:
        scoped = getattr(self.lookups, "for_request", None)
        return cast("RequestScoped", self.lookups).for_request(deadline) if scoped else self.lookups


def read_body(stream: IO[bytes], *, limit: int, deadline: float) -> bytes:
    """At most `limit` bytes within `deadline` (monotonic), chunked or not.

    BadRequest 413 past the limit, 408 when the client is too slow or goes away mid-body, 400
    when the body's framing is broken (chunk sizes that lie).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise BadRequest("request body not received in time", 408)
        try:
            chunk = stream.read(min(CHUNK, limit + 1 - size))
        except RequestEntityTooLarge as error:
            raise BadRequest(f"request body larger than {limit} bytes", 413) from error
        except Exception as error:  # timeouts, resets, broken chunking (each server its own type)
            raise _unreadable(error, deadline) from error
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body larger than {limit} bytes", 413)
        chunks.append(chunk)


def _unreadable(error: Exception, deadline: float) -> BadRequest:
    """What a failed body read says to the client: the connection failed (408) or the bytes did."""
    if time.monotonic() > deadline or _caused_by(error, (TimeoutError,)):
        return BadRequest("request body not received in time", 408)
    if _caused_by(error, (OSError, ClientDisconnected)):
        return BadRequest(f"request body not received: {type(error).__name__}", 408)
    return BadRequest(f"request body malformed: {type(error).__name__}", 400)


def _caused_by(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """`error` or what it was raised from / while handling (werkzeug turns a read's TimeoutError
    into ClientDisconnected)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None or isinstance(seen, kinds):
            return seen is not None
        seen = seen.__cause__ or seen.__context__
    return False


def _has_client_cert(environ: dict[str, Any]) -> bool:
    sock = environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    try:
        return bool(getpeercert and getpeercert())  # {} unless a certificate was verified
    except (OSError, ValueError):
        return False


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
        received = time.monotonic()
        if config.require_client_cert and not _has_client_cert(request.environ):
            return _error("a client certificate is required", 403)
        if request.mimetype != "application/json":
            return _error(f"content type must be application/json, got {request.mimetype!r}", 415)
        try:
            body = read_body(
                request.stream,
                limit=config.max_body_bytes,
                deadline=received + config.body_timeout,
            )
            payload = parse_json(body)
            del body  # the parsed review is what we need now; do not hold both
            policy_set = config.policies.current()
            response, admission, decision = review(
                payload,
                policy_set=policy_set,
                lookups=config.lookups_for(received + config.deadline),
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
