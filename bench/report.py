"""Exact percentiles and the result tables (Markdown, so they paste into bench/README.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile over all samples (no histogram buckets, no interpolation)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    server: str
    scenario: str
    path: str
    requests: int  # measured, answered 200
    errors: int
    error_sample: str
    server_samples: int  # decision-log lines matched to measured requests
    server_p50_ms: float
    server_p99_ms: float
    client_p50_ms: float
    client_p99_ms: float
    rate: float  # requests/s
    server_cpu_ms_per_request: float
    server_cores: float  # CPU-seconds per wall second during the scenario
    client_cores: float
    other_cores: float  # CPU used by anything else on the machine, per wall second

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _ratio(value: float, base: float) -> str:
    if not base or math.isnan(value) or math.isnan(base):
        return ""
    return f" ({value / base:.2f}x)"


def _cell(value: float, base: float, digits: int) -> str:
    return f"{value:.{digits}f}{_ratio(value, base)}"


def markdown_table(header: list[str], rows: list[list[str]], *, text_columns: int = 2) -> str:
    """A Markdown table; the first `text_columns` columns left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = [i >= text_columns for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def scenario_table(rows: list[Row]) -> str:
    """One server: every scenario with its ratio to the baseline (the first row)."""
    base = rows[0]
    header = [
        "scenario", "path",
        "server p50 ms", "server p99 ms", "client p50 ms", "client p99 ms",
        "req/s", "server CPU ms/req", "n", "errors", "other load",
    ]  # fmt: skip
    body = [
        [
            r.scenario,
            r.path,
            _cell(r.server_p50_ms, base.server_p50_ms, 3),
            _cell(r.server_p99_ms, base.server_p99_ms, 3),
            _cell(r.client_p50_ms, base.client_p50_ms, 2),
            _cell(r.client_p99_ms, base.client_p99_ms, 2),
            _cell(r.rate, base.rate, 0),
            _cell(r.server_cpu_ms_per_request, base.server_cpu_ms_per_request, 2),
            str(r.requests),
            str(r.errors),
            f"{r.other_cores:.2f}",
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def server_summary(by_server: dict[str, list[Row]]) -> str:
    """Servers side by side, averaged over the scenarios (same load, same objects)."""
    header = [
        "server", "label",
        "mean req/s", "min req/s", "mean client p50 ms", "max client p99 ms",
        "mean server p50 ms", "mean server CPU ms/req", "server cores used", "errors",
        "max other load",
    ]  # fmt: skip
    body = []
    for name, rows in by_server.items():
        body.append(
            [
                name,
                rows[0].server,
                f"{_mean([r.rate for r in rows]):.0f}",
                f"{min(r.rate for r in rows):.0f}",
                f"{_mean([r.client_p50_ms for r in rows]):.2f}",
                f"{max(r.client_p99_ms for r in rows):.2f}",
                f"{_mean([r.server_p50_ms for r in rows]):.3f}",
                f"{_mean([r.server_cpu_ms_per_request for r in rows]):.2f}",
                f"{_mean([r.server_cores for r in rows]):.2f}",
                str(sum(r.errors for r in rows)),
                f"{max(r.other_cores for r in rows):.2f}",
            ]
        )
    return markdown_table(header, body)


def rate_by_scenario(by_server: dict[str, list[Row]]) -> str:
    """req/s and client p99 per scenario, one column pair per server."""
    names = list(by_server)
    header = ["scenario", "path"]
    for name in names:
        header += [f"{name} req/s", f"{name} client p99 ms"]
    first = by_server[names[0]]
    body = []
    for i, row in enumerate(first):
        cells = [row.scenario, row.path]
        for name in names:
            other = by_server[name][i]
            cells += [f"{other.rate:.0f}", f"{other.client_p99_ms:.2f}"]
        body.append(cells)
    return markdown_table(header, body)
