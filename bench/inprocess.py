"""The engine alone: `admission.review` in this process, one thread, no HTTP, no TLS.

The noise-free floor under the server-side numbers: what parsing, policies and patch diffing
cost per object before any server, GIL contention or network is involved.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from webhook.admission import review
from webhook.engine import NoLookups, Webhook
from webhook.server.policystore import load_policy_file

from .report import percentile
from .scenarios import Scenario
from .servers import SHIPPED_POLICIES


@dataclass
class EngineRow:
    scenario: str
    path: str
    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


def measure_engine(scenarios: list[Scenario], seconds: float = 0.4) -> list[EngineRow]:
    policy_set = load_policy_file(SHIPPED_POLICIES)
    lookups = NoLookups()
    rows = []
    for scenario in scenarios:
        body = scenario.body("in-process")
        webhook: Webhook = "mutate" if scenario.path == "/mutate" else "validate"
        samples: list[float] = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop or len(samples) < 50:
            started = time.perf_counter()
            review(json.loads(body), policy_set=policy_set, lookups=lookups, webhook=webhook)
            samples.append((time.perf_counter() - started) * 1000)
        rows.append(
            EngineRow(
                scenario.name,
                scenario.path,
                len(samples),
                percentile(samples, 50),
                percentile(samples, 99),
                sum(samples) / len(samples),
            )
        )
    return rows


def engine_table(rows: list[EngineRow]) -> str:
    base = rows[0].p50_ms
    lines = [
        "| scenario | path | engine p50 ms | engine p99 ms | x baseline p50 | calls |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.path} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
            f"{r.p50_ms / base:.1f}x | {r.calls} |"
        )
    return "\n".join(lines)
