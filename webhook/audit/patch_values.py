"""Fix ops that address a container's flags by value, never by list position.

A fix computed on a rendered Deployment says "replace args/7". In Git the args list is the sum of
upstream manifests, an installer's profiles and the user's patches, so position 7 there may be
another flag (the Flux Operator's multitenant profile appends `--default-service-account`,
`--no-cross-namespace-refs`, ...). A flag is therefore written where a user patch already sets it
(that op's value is edited), else appended (`args/-`): Flux's controllers parse flags with
spf13/pflag, where the last occurrence of a scalar flag wins (checked with pflag v1.0.9: `--x=10s
--x 7s --x=5s` gives 5s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..engine import JsonObject

_ARG = re.compile(r"^(/spec/template/spec/containers/\d+/args)/(\d+|-)$")
_VOLUME = re.compile(r"^/spec/template/spec/volumes/(\d+)((?:/[^/]+)*)$")


@dataclass
class ValuePlan:
    """What a fix becomes in a list of kustomize patches: new texts of existing patches (by
    their position in the list) and the ops left for a new or merged patch."""

    texts: dict[int, str] = field(default_factory=dict)
    ops: list[JsonObject] = field(default_factory=list)
    # volumes changed by name, as a strategic-merge patch's `spec.template.spec.volumes`
    volumes: list[dict[str, Any]] = field(default_factory=list)

    def merge_patch(self, obj: JsonObject) -> dict[str, Any] | None:
        """A strategic-merge patch of `obj` holding the volume changes (kustomize merges
        volumes by name), or None."""
        if not self.volumes:
            return None
        meta = obj.get("metadata") or {}
        return {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": {"name": meta.get("name")},
            "spec": {"template": {"spec": {"volumes": self.volumes}}},
        }


def flag_of(value: Any) -> str | None:
    """`--name` of a `--name=value` / `--name` argument, else None."""
    if isinstance(value, str) and value.startswith("--"):
        return value.split("=", 1)[0]
    return None


def target_matches(target: Any, obj: JsonObject) -> bool:
    """Whether a kustomize patch `target` selects `obj` by kind and name (kustomize reads both
    as anchored regular expressions; label and annotation selectors are not evaluated)."""
    if not isinstance(target, dict):
        return False
    meta = obj.get("metadata") or {}
    for key, actual in (("kind", obj.get("kind")), ("name", meta.get("name"))):
        wanted = target.get(key)
        if wanted is None:
            continue
        try:
            if re.fullmatch(str(wanted), str(actual or "")) is None:
                return False
        except re.error:
            if str(wanted) != str(actual):
                return False
    return True


def _ops_of(entry: Any) -> list[Any] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("patch"), str):
        return None
    try:
        ops = yaml.safe_load(entry["patch"])
    except yaml.YAMLError:
        return None
    return ops if isinstance(ops, list) else None


def _setter(
    patches: list[Any], texts: dict[int, str], obj: JsonObject, args_path: str, flag: str
) -> tuple[int, list[Any], int, int | None] | None:
    """The last op of a patch selecting `obj` that writes `flag=...` into `args_path`:
    (patch index, that patch's ops, op index, list position within the op's value or None)."""
    found: tuple[int, list[Any], int, int | None] | None = None
    for index, entry in enumerate(patches):
        ops = _ops_of({**entry, "patch": texts[index]} if index in texts else entry)
        if ops is None or not target_matches(entry.get("target"), obj):
            continue
        for at, op in enumerate(ops):
            if not isinstance(op, dict) or op.get("op") not in ("add", "replace"):
                continue
            path, value = str(op.get("path", "")), op.get("value")
            if _ARG.match(path) and path.startswith(args_path + "/"):
                if flag_of(value) == flag and value != flag:
                    found = (index, ops, at, None)
            elif path == args_path and isinstance(value, list):
                for position, item in enumerate(value):
                    if flag_of(item) == flag and item != flag:
                        found = (index, ops, at, position)
    return found


def _companion_removals(obj: JsonObject, ops: list[JsonObject]) -> set[int]:
    """Positions of `remove args/N+1` ops that drop the value of a two-item flag (`--x`, `30s`)
    being rewritten at N: an appended `--x=v` wins without them."""
    rewritten = {
        (m.group(1), int(m.group(2)))
        for op in ops
        if op.get("op") == "replace"
        and (m := _ARG.match(str(op.get("path", ""))))
        and m.group(2) != "-"
    }
    drop: set[int] = set()
    for position, op in enumerate(ops):
        found = _ARG.match(str(op.get("path", "")))
        if op.get("op") != "remove" or not found or found.group(2) == "-":
            continue
        if (found.group(1), int(found.group(2)) - 1) in rewritten:
            drop.add(position)
    return drop


def plan_by_value(patches: list[Any], obj: JsonObject, ops: list[JsonObject]) -> ValuePlan:
    """`ops` (a fix of the rendered `obj`) against the user's `patches`: every op that writes a
    flag into a container's args edits the op that set that flag, else appends; other ops stay."""
    plan = ValuePlan()
    drop = _companion_removals(obj, ops)
    for position, op in enumerate(ops):
        if _by_volume_name(obj, op, plan.volumes):
            continue
        found = _ARG.match(str(op.get("path", "")))
        flag = flag_of(op.get("value"))
        if position in drop:
            continue
        if op.get("op") not in ("add", "replace") or not found or flag is None:
            plan.ops.append(op)
            continue
        setter = _setter(patches, plan.texts, obj, found.group(1), flag)
        if setter is None:
            plan.ops.append({"op": "add", "path": found.group(1) + "/-", "value": op["value"]})
            continue
        index, setter_ops, at, item = setter
        if item is None:
            setter_ops[at]["value"] = op["value"]
        else:
            setter_ops[at]["value"][item] = op["value"]
        plan.texts[index] = yaml.safe_dump(setter_ops, sort_keys=False, default_flow_style=False)
    return plan


def _by_volume_name(obj: JsonObject, op: JsonObject, volumes: list[dict[str, Any]]) -> bool:
    """Record an add/replace inside `volumes/N` as a change of the volume named there (False
    when `op` is not one, or the volume has no name)."""
    found = _VOLUME.match(str(op.get("path", "")))
    if not found or op.get("op") not in ("add", "replace"):
        return False
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    current = pod.get("volumes") or []
    index = int(found.group(1))
    if index >= len(current) or not isinstance(current[index], dict):
        return False
    name = current[index].get("name")
    keys = [k.replace("~1", "/").replace("~0", "~") for k in found.group(2).split("/")[1:]]
    if not isinstance(name, str) or (not keys and not isinstance(op.get("value"), dict)):
        return False
    entry = next((v for v in volumes if v.get("name") == name), None)
    if entry is None:
        entry = {"name": name}
        volumes.append(entry)
    if not keys:
        entry.update(op["value"])
        return True
    node = entry
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = op.get("value")
    return True
