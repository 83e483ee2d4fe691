"""The text splice of `fix`: common edits written into the lines, every other byte kept; what it
cannot place for certain is None (the round trip's job)."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from webhook.audit import workers, yaml_text
from webhook.audit.documents import load_yaml
from webhook.audit.yaml_splice import spliced
from webhook.audit.yaml_text import parses_to, rewrite_document


def _check(text: str, patch: list[dict[str, Any]], expected: str) -> None:
    result = spliced(text, patch)
    assert result == expected
    assert parses_to(result, jsonpatch.apply_patch(load_yaml(text), patch))


def test_a_replaced_scalar_keeps_its_quotes_and_what_follows_on_its_line() -> None:
    text = "a:\n  b: \"1Gi\"   # the limit\n  c: 'x'\n  d: { e: 1, f: 2 }\n"
    patch: list[dict[str, Any]] = [
        {"op": "replace", "path": "/a/b", "value": "2Gi"},
        {"op": "replace", "path": "/a/c", "value": "it's"},
        {"op": "replace", "path": "/a/d/f", "value": 3},
    ]
    _check(text, patch, "a:\n  b: \"2Gi\"   # the limit\n  c: 'it''s'\n  d: { e: 1, f: 3 }\n")


def test_an_added_block_goes_after_the_last_entry_and_its_deeper_comments() -> None:
    text = "spec:\n  values:\n    a: 1\n    # b: 2\n\n  # chart: {}\nnext: 1\n"
    patch = [{"op": "add", "path": "/spec/driftDetection", "value": {"mode": "enabled"}}]
    expected = (
        "spec:\n  values:\n    a: 1\n    # b: 2\n  driftDetection:\n    mode: enabled\n"
        "\n  # chart: {}\nnext: 1\n"
    )
    _check(text, patch, expected)


def test_indentation_and_quoting_follow_the_document() -> None:
    text = "spec:\n    list:\n    - a\n    m:\n        k: v\n"
    patch = [{"op": "add", "path": "/spec/new", "value": {"items": ["yes", "x"], "n": None}}]
    expected = (
        "spec:\n    list:\n    - a\n    m:\n        k: v\n"
        '    new:\n        items:\n        - "yes"\n        - x\n        n: null\n'
    )
    _check(text, patch, expected)


def test_appended_items_look_like_the_last_item() -> None:
    text = 'a:\n  - {key: x, effect: NoSchedule}\nb:\n- "--one"\nc:\n  - name: m\n    image: i\n'
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/a/-", "value": {"key": "y", "operator": "Exists"}},
        {"op": "add", "path": "/b/1", "value": "--two"},
        {"op": "add", "path": "/c/-", "value": {"name": "n", "args": ["--x"]}},
    ]
    expected = (
        'a:\n  - {key: x, effect: NoSchedule}\n  - {key: y, operator: Exists}\nb:\n- "--one"\n'
        '- "--two"\nc:\n  - name: m\n    image: i\n  - name: n\n    args:\n      - --x\n'
    )
    _check(text, patch, expected)


def test_flow_collections_get_the_entry_inside_their_brackets() -> None:
    text = "a: { b: 1 }\nc: {}\nd: [x]\n"
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/a/m", "value": {"n": 1}},
        {"op": "add", "path": "/c/sizeLimit", "value": "10Gi"},
        {"op": "add", "path": "/d/-", "value": "y z"},
    ]
    _check(text, patch, 'a: { b: 1, m: { n: 1 } }\nc: {sizeLimit: 10Gi}\nd: [x, "y z"]\n')


def test_after_a_block_scalar_and_without_a_final_newline() -> None:
    text = "a:\n  script: |\n    echo hi\n\n  # done\nb: 1"
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/a/x", "value": 1},
        {"op": "add", "path": "/c", "value": True},
    ]
    _check(text, patch, "a:\n  script: |\n    echo hi\n  x: 1\n\n  # done\nb: 1\nc: true")


def test_aliases_elsewhere_do_not_stop_an_edit() -> None:
    """`name: &app x` ... `fullnameOverride: *app` (home-ops repos write every release so): the
    alias as the last value is on its key's line, and the anchored value is left alone."""
    text = "metadata:\n  name: &app x\nspec:\n  values:\n    fullnameOverride: *app\n"
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/driftDetection", "value": {"mode": "enabled"}}
    ]
    _check(text, patch, text + "  driftDetection:\n    mode: enabled\n")


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("a: 1\n", {"op": "remove", "path": "/a"}),
        ("a: 1\n", {"op": "add", "path": "/b", "value": "two\nlines"}),
        ("a: 1\n", {"op": "add", "path": "/b", "value": 1.5}),
        ("a: &x 1\nb: *x\n", {"op": "replace", "path": "/b", "value": 2}),
        ("a: &m [1]\nb:\n- *m\n", {"op": "add", "path": "/b/-", "value": 2}),
        ("a: &m {k: 1}\nb: *m\n", {"op": "add", "path": "/b/j", "value": 2}),
        ("a: 1\na: 2\n", {"op": "add", "path": "/b", "value": 1}),
        ("a: !!str 1\n", {"op": "replace", "path": "/a", "value": "2"}),
        ("a: [x, y]\n", {"op": "add", "path": "/a/0", "value": "w"}),
        ("a: |\n  x\n", {"op": "replace", "path": "/a", "value": "y"}),
        ("a:\n  b: 1\n", {"op": "replace", "path": "/a", "value": {"b": 2}}),
        ("a: {b: 1,\n  c: 2}\n", {"op": "add", "path": "/a/d", "value": 3}),
        ("a: 1\r\n", {"op": "add", "path": "/b", "value": 1}),
        ("<<: {x: 1}\na: 1\n", {"op": "add", "path": "/b", "value": 1}),
    ],
)
def test_what_it_cannot_place_for_certain_is_left_to_the_round_trip(
    text: str, op: dict[str, Any]
) -> None:
    assert spliced(text, [op]) is None


def test_crlf_documents_stay_crlf() -> None:
    text = "a:\r\n  b: 1\r\n"
    patch = [{"op": "add", "path": "/a/c", "value": 2}]
    assert rewrite_document(text, load_yaml(text), patch) == "a:\r\n  b: 1\r\n  c: 2\r\n"


def test_fixed_texts_in_workers_equal_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many files fixed in forked workers give what one process gives, in input order, with
    each file's problems; files with nothing to change are not sent."""
    monkeypatch.setattr(workers, "PARALLEL_MIN", 2)
    sent: list[int] = []

    def spy(function: Any, items: Any, *, jobs: int, **kwargs: Any) -> Any:
        sent.append(len(items))
        assert jobs == 2
        return workers.ordered_map(function, items, jobs=jobs, **kwargs)

    monkeypatch.setattr(yaml_text, "ordered_map", spy)
    texts = [
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{n}}}\ndata:\n  n: '{n}'\n"
        + ("---\nbroken: [\n" if n % 7 == 0 else "")
        for n in range(40)
    ]

    def patcher(obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = obj["metadata"]["name"]
        return [] if name.endswith("3") else [{"op": "add", "path": "/data/x", "value": name}]

    edits = [yaml_text.planned_edit(t, f"f{n}.yaml", patcher=patcher) for n, t in enumerate(texts)]
    parallel = list(yaml_text.fixed_texts(edits, jobs=2))
    assert parallel == [yaml_text.fixed_text(edit) for edit in edits]
    assert sent == [36]  # c3, c13, c23, c33 need nothing
    assert parallel[1].text == texts[1] + "  x: c1\n"
    assert parallel[7].problems[0].source == "f7.yaml"
    assert parallel[7].fixed_documents == 1
