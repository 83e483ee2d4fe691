"""The README's coverage tables (issue 21) name only policies that exist, and cover every item
of what they compare with: all 36 of Kubewarden's `Flux*` policies, and every policy of the
library is named at least once (a policy nobody maps to an upstream item would be a policy
without a reason)."""

from __future__ import annotations

import re
from pathlib import Path

from webhook.engine.policies import ALL_POLICIES

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str, text: str) -> str:
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _rows(table_text: str) -> list[list[str]]:
    rows = [line for line in table_text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def _named_policies(text: str) -> set[str]:
    return {m for m in re.findall(r"`([a-z][a-z0-9-]+)`", text) if "-" in m}


COVERAGE = _section("## Coverage, item by item", README.read_text())


def test_kubewarden_table_lists_all_36_flux_policies_once() -> None:
    kubewarden = COVERAGE[COVERAGE.index("### Kubewarden's Flux policies") :]
    names = [row[0] for row in _rows(kubewarden) if row[0].startswith("Flux")]
    assert len(names) == 36
    assert len(set(names)) == 36


PROFILES = {"multi-tenancy"}  # named in backticks too: the profiles, not policies


def test_every_policy_named_in_the_tables_exists() -> None:
    assert sorted(_named_policies(COVERAGE) - set(ALL_POLICIES) - PROFILES) == []


def test_every_policy_of_the_library_is_in_the_readme_tables() -> None:
    """Each policy is in the README's policy or profile table, or mapped in the coverage."""
    text = README.read_text()
    introduction = text[: text.index("\n## Two commands")]
    assert sorted(set(ALL_POLICIES) - _named_policies(introduction + COVERAGE)) == []
