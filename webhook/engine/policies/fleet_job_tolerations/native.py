"""fleet-job-tolerations as native admission policies: the configured tolerations (no
inheritance), merged as `check` merges them, in CEL. Kept apart from the policy module so that
its native part adds a single method there."""

from __future__ import annotations

from typing import Any

from ...match import Match, cel_string
from ...model import JsonObject
from ..base import Native, NativeFinding, NativeMutation
from . import _describe, covers


def _cel_value(value: Any) -> str:
    if isinstance(value, str):
        return cel_string(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{cel_string(k)}: {_cel_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _covers_cel(wanted: JsonObject) -> str:
    """CEL over an existing toleration `t`: `covers(t, wanted)` for this constant `wanted`."""
    key, value = wanted.get("key"), wanted.get("value") or ""
    effect = cel_string(wanted.get("effect") or "")
    exists_key = "!has(t.key) || t.key == ''" + (f" || t.key == {cel_string(key)}" if key else "")
    equal_key = (
        f"(has(t.key) ? t.key : '') == {cel_string(key or '')} && "
        f"(has(t.value) ? t.value : '') == {cel_string(value)}"
        if (wanted.get("operator") or "Equal") == "Equal"
        else "false"
    )
    seconds = wanted.get("tolerationSeconds")
    lasts = "!has(t.tolerationSeconds)" + (
        f" || t.tolerationSeconds >= {seconds}" if seconds is not None else ""
    )
    return (
        f"(!has(t.effect) || t.effect == '' || t.effect == {effect}) && "
        f"(has(t.operator) && t.operator == 'Exists' ? ({exists_key}) : ({equal_key})) && "
        f"({lasts})"
    )


def native_static(scope: tuple[Match, ...], wanted: list[JsonObject]) -> Native:
    """Configured tolerations only: what check() adds is decided by the object alone."""
    # check() adds a wanted toleration unless an existing or an already added one covers it;
    # CEL cannot carry "already added" along, so the wanted ones an earlier wanted one covers
    # are dropped here, once. Same answer because `covers` is transitive: when an earlier w
    # covers a later w' and w is not added, some existing e covers w, hence w' too (effect:
    # e's is empty or w's, and w's is empty or w''s; key/operator: an Exists e with an empty
    # key covers all, else e's key is w's is w''s; seconds: e unbounded or e >= w >= w').
    # tests/engine/test_native.py checks transitivity over a grid, and that a covers that is not
    # transitive would make the two merges differ; the golden case
    # fleet-job-tolerations/static-covered-chain runs this natively.
    distinct: list[JsonObject] = []
    for toleration in wanted:
        if not any(covers(t, toleration) for t in distinct):
            distinct.append(toleration)
    indices = ", ".join(str(i) for i in range(len(distinct)))
    missing = " || ".join(
        f"(i == {i} && !variables.existing.exists(t, {_covers_cel(t)}))"
        for i, t in enumerate(distinct)
    )
    descriptions = ", ".join(cel_string(_describe(t)) for t in distinct)
    values = ", ".join(_cel_value(t) for t in distinct)
    kind = "request.kind.kind"
    described = f"variables.missing.map(i, [{descriptions}][i]).join(', ')"
    count = "string(size(variables.missing))"
    pod_path = (
        f"{kind} == 'Pod' ? '/spec' : {kind} == 'CronJob' ? '/spec/jobTemplate/spec/template/spec'"
        " : '/spec/template/spec'"
    )
    add = (
        "variables.hasTolerations ? variables.missing.map(i, JSONPatch{op: 'add', "
        f"path: variables.podPath + '/tolerations/-', value: [{values}][i]}}) : "
        "[JSONPatch{op: 'add', path: variables.podPath + '/tolerations', "
        f"value: variables.missing.map(i, [{values}][i])}}]"
    )
    return Native(
        covers=scope,
        keeps="nothing: only configured tolerations (inheritFromDeployment is off)",
        variables=(
            (
                "podSpec",
                f"{kind} == 'Pod' ? object.spec : {kind} == 'CronJob' "
                "? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec",
            ),
            ("podPath", pod_path),
            ("hasTolerations", "has(variables.podSpec.tolerations)"),
            (
                "existing",
                "variables.hasTolerations ? variables.podSpec.tolerations : []",
            ),
            ("missing", f"[{indices}].filter(i, {missing})"),
            # A started Job's pod template is immutable: patching it would fail the update.
            ("immutable", f"{kind} == 'Job' && request.operation == 'UPDATE'"),
        ),
        findings=(
            NativeFinding(
                "change",
                "size(variables.missing) > 0 && !variables.immutable",
                f"'set ' + ({kind} == 'Pod' ? 'spec.tolerations' : 'pod template tolerations') "
                f"+ ': +' + {count} + ' (' + {described} + ')'",
            ),
            NativeFinding(
                "advisory",
                "size(variables.missing) > 0 && variables.immutable",
                f"'missing ' + {count} + ' toleration(s) (' + {described} + "
                + cel_string(
                    "); a Job's pod template cannot change after creation: recreate it to add them"
                ),
            ),
        ),
        mutations=(
            NativeMutation(f"size(variables.missing) > 0 && !variables.immutable ? ({add}) : []"),
        ),
    )
