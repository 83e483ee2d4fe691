"""Prometheus metrics, correct with several worker processes (prometheus_client multiprocess mode).

`PROMETHEUS_MULTIPROC_DIR` must be set before this module is first imported; `fluxwarden serve`
does that. Without it (tests, single process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "fluxwarden_admission_requests_total",
    "Admission requests answered, by webhook, operation, kind and result.",
    ["webhook", "operation", "kind", "result"],
)
LATENCY = Histogram(
    "fluxwarden_admission_duration_seconds",
    "Time to answer an admission request, by webhook, operation, kind and result.",
    ["webhook", "operation", "kind", "result"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POLICY_RESULTS = Counter(
    "fluxwarden_policy_results_total",
    "Policy results, by policy, effective mode, result (pass/fail/warn/error/skip) and action.",
    ["policy", "mode", "result", "action"],
)
BAD_REQUESTS = Counter(
    "fluxwarden_bad_requests_total", "Requests refused as client mistakes, by status.", ["status"]
)
POLICY_LOAD_ERRORS = Counter(
    "fluxwarden_policy_load_errors_total",
    "Policy set files that failed to load (the previous set stays in force).",
)
CONNECTIONS = Counter(
    "fluxwarden_connections_total",
    "Connections accepted (the API server keeps its connections open: a rate near the request "
    "rate means every request pays a TLS handshake).",
)
CERT_EXPIRY = Gauge(
    "fluxwarden_certificate_expiry_timestamp_seconds",
    "Unix time at which the serving certificate expires.",
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over all worker processes when running several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
