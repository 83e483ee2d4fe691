"""`engine.patch.make_patch`: the patch applied with `jsonpatch` gives the mutated object, and on
the golden cases it is never longer than `jsonpatch.make_patch`'s."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.golden import load_cases
from webhook.engine.patch import json_equal, make_patch

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)
)
keys = st.sampled_from(["a", "b", "c", "a/b", "~0", "", "spec"]) | st.text(max_size=4)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


def _strict(value: Any) -> str:
    """JSON text with sorted keys: compares as JSON does (1, 1.0 and true differ)."""
    return json.dumps(value, sort_keys=True)


@settings(max_examples=400, deadline=None)
@given(json_values, json_values)
def test_applied_patch_gives_the_mutated_object(original: Any, mutated: Any) -> None:
    before = copy.deepcopy(original)
    patch = make_patch(original, mutated)
    assert _strict(jsonpatch.apply_patch(original, patch)) == _strict(mutated)
    assert _strict(original) == _strict(before), "the original is not modified"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=6), st.data())
def test_a_small_edit_gives_only_the_edited_paths(original: dict[str, Any], data: Any) -> None:
    mutated = copy.deepcopy(original)
    key = data.draw(keys)
    mutated[key] = data.draw(json_values)
    patch = make_patch(original, mutated)
    assert all(
        op["path"].startswith("/" + key.replace("~", "~0").replace("/", "~1")) for op in patch
    )
    assert _strict(jsonpatch.apply_patch(original, patch)) == _strict(mutated)
    assert make_patch(mutated, copy.deepcopy(mutated)) == []


def test_json_types_differ_where_python_equality_does_not() -> None:
    assert make_patch({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert make_patch([1.0], [1]) == [{"op": "replace", "path": "/0", "value": 1}]
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
    assert not json_equal({"a": 0}, {"a": False})


def test_lists_change_in_place_then_at_the_end() -> None:
    assert make_patch({"x": [1, 2, 3]}, {"x": [1, 9]}) == [
        {"op": "replace", "path": "/x/1", "value": 9},
        {"op": "remove", "path": "/x/2"},
    ]
    assert make_patch({"x": [1]}, {"x": [1, 2, 3]}) == [
        {"op": "add", "path": "/x/1", "value": 2},
        {"op": "add", "path": "/x/2", "value": 3},
    ]


CASES = [case for case in load_cases() if case.decide().patch]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden_patches_are_minimal(case: Any) -> None:
    decision = case.decide()
    assert decision.patched is not None
    reference = jsonpatch.make_patch(case.obj, decision.patched).patch
    assert len(decision.patch) <= len(reference)
    assert decision.patch == make_patch(case.obj, decision.patched)
    assert _strict(jsonpatch.apply_patch(case.obj, decision.patch)) == _strict(decision.patched)
