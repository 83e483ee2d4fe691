"""The JSONPatch between an object and its mutated copy, skipping equal subtrees.

`jsonpatch.make_patch` does the same job but indexes every value of both documents first (to
find moves), which costs far more than the policies themselves on a large object. Policies only
set, add and remove fields, so a plain recursive diff gives the same operations: dictionaries
by key, lists by position (changed items in place, then items added or removed at the end).

Equality is JSON equality: `1`, `1.0` and `true` differ (Python's `==` says they are equal).
"""

from __future__ import annotations

from typing import Any

from .model import JsonObject


def make_patch(original: Any, mutated: Any) -> list[JsonObject]:
    """Operations that turn `original` into `mutated` (`jsonpatch.apply_patch` agrees)."""
    ops: list[JsonObject] = []
    _diff(original, mutated, "", ops)
    return ops


def _pointer(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}/{key}"
    return path + "/" + key.replace("~", "~0").replace("/", "~1")


def _diff(old: Any, new: Any, path: str, ops: list[JsonObject]) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": _pointer(path, key)})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, _pointer(path, key), ops)
        return
    if isinstance(old, list) and isinstance(new, list):
        common = min(len(old), len(new))
        for index in range(common):
            _diff(old[index], new[index], _pointer(path, index), ops)
        for _ in range(common, len(old)):
            ops.append({"op": "remove", "path": _pointer(path, common)})
        for index in range(common, len(new)):
            ops.append({"op": "add", "path": _pointer(path, index), "value": new[index]})
        return
    if not json_equal(old, new):
        ops.append({"op": "replace", "path": path, "value": new})


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: types matter (`True != 1`), dict order does not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return type(a) is type(b) and a == b
    return type(a) is type(b) and bool(a == b)
