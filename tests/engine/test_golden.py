"""Every golden case: the engine's decision and patched object match the files under review."""

from __future__ import annotations

import jsonpatch
import pytest
import yaml

from tests.golden import Case, expected_files, load_cases
from webhook.engine.policies import ALL_POLICIES

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision_matches_golden_files(case: Case) -> None:
    decision = case.decide()
    for name, text in expected_files(case, decision).items():
        path = case.path / name
        if text is None:
            assert not path.exists(), f"{path} exists but the decision has no patch"
        else:
            assert yaml.safe_load(path.read_text()) == yaml.safe_load(text), f"{path} differs"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_patch_applies_and_is_idempotent(case: Case) -> None:
    decision = case.decide()
    if not decision.patch:
        return
    patched = jsonpatch.apply_patch(case.obj, decision.patch)
    again = case.__class__(case.path, {**case.spec, "object": patched}).decide()
    assert again.patch == [], "a compliant (already patched) object must yield no patch"


def test_every_policy_has_golden_cases() -> None:
    covered = {c.path.parent.name for c in CASES}
    assert covered >= set(ALL_POLICIES), f"no golden cases for {set(ALL_POLICIES) - covered}"
