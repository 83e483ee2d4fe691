"""A JSONPatch written straight into a YAML document's lines, every other byte kept.

The common fixes are small: a key added to a block mapping (`driftDetection`, a `sizeLimit`), a
scalar replaced (`replicas`, a memory limit, one flag), an item appended to a sequence (a flag, a
toleration). Those are spliced into the text at the lines the parser's node marks give, indented
like their siblings; nothing else is re-emitted, so flow mappings, comments and odd list items
stay as written. Anything else (removes, moves, multi-line strings, tags, anchors, a place where
the marks are not plain) is `None`, and the caller round-trips the document instead. The caller
also checks that the result parses to exactly the patched object: this module only proposes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..engine import JsonObject
from .documents import FastManifestLoader

_STR_TAG = "tag:yaml.org,2002:str"
# A string written plain only when it is this simple (and the YAML 1.1 resolver reads it as a str).
_PLAIN = re.compile(r"[A-Za-z0-9_./~=+-][A-Za-z0-9_./~=+@:-]*")
_OTHER_BREAKS = re.compile("[\r\x85\u2028\u2029]")  # line breaks PyYAML counts and `\n` splits miss
_resolve_tag: Callable[..., str] = yaml.resolver.Resolver().resolve


class _Unsure(Exception):
    """The op is not one this module writes for certain: round-trip the document instead."""


def spliced(text: str, patch: list[JsonObject]) -> str | None:
    """`text` (one YAML document, `\\n` line ends) with each op of `patch` written into its
    lines, or None when an op is not a plain add/replace this module can place."""
    if _OTHER_BREAKS.search(text):
        return None
    try:
        for op in patch:
            text = _applied(text, op)
    except _Unsure:
        return None
    return text


def _applied(text: str, op: JsonObject) -> str:
    kind, parts = op.get("op"), _pointer(op.get("path"))
    if kind not in ("add", "replace") or not parts or "value" not in op:
        raise _Unsure
    root, aliases = _compose(text)
    lines = text.splitlines(keepends=True)
    parent, last, value = _walk(root, parts[:-1], aliases), parts[-1], op["value"]
    if isinstance(parent, MappingNode):
        current = _value_node(parent, last)
        if current is not None:
            return _replace_scalar(lines, current, value)
        if kind == "replace":
            raise _Unsure
        if parent.flow_style:
            return _add_to_flow(lines, parent, _key(last) + ": ", value, aliases)
        column = int(parent.value[0][0].start_mark.column)
        new = _entry_lines(last, value, column, _Style(root, aliases))
        end = _last_line(lines, parent, aliases)
        return _inserted(lines, new, after=end, column=column)
    if isinstance(parent, SequenceNode):
        index = len(parent.value) if last == "-" else _index(last)
        if kind == "replace" and index < len(parent.value):
            return _replace_scalar(lines, parent.value[index], value)
        if kind == "replace" or index != len(parent.value) or not parent.value:
            raise _Unsure  # only appends: an insert would need the comments above an item
        if parent.flow_style:
            return _add_to_flow(lines, parent, "", value, aliases)
        new = _appended_item(lines, parent, value, _Style(root, aliases))
        end = _last_line(lines, parent, aliases)
        return _inserted(lines, new, after=end, column=_dash(parent))
    raise _Unsure


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise _Unsure
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(part: str) -> int:
    if not part.isdigit():
        raise _Unsure
    return int(part)


Slot = tuple[int, int]  # (id of a collection node, index of an entry in it)


def _compose(text: str) -> tuple[Node, set[Slot]]:
    """The document's node tree, and the entries written as aliases (`*name`): the composer
    gives an alias the anchor's very node, with the anchor's marks, so those places are unknown."""
    loader = FastManifestLoader(text)
    try:
        node = loader.get_single_node()
    except (yaml.YAMLError, RecursionError) as error:
        raise _Unsure from error
    finally:
        loader.dispose()
    if not isinstance(node, (MappingNode, SequenceNode)):
        raise _Unsure
    aliases: set[Slot] = set()
    if "*" in text:
        _find_aliases(node, {id(node)}, aliases)
    return node, aliases


def _find_aliases(node: Node, seen: set[int], aliases: set[Slot]) -> None:
    """In document order: a node met again is an alias of the anchor met first."""
    if isinstance(node, MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    else:
        return
    for position, child in enumerate(children):
        slot = position // 2 if isinstance(node, MappingNode) else position
        if id(child) in seen:
            aliases.add((id(node), slot))
            continue
        seen.add(id(child))
        _find_aliases(child, seen, aliases)


def _walk(node: Node, parts: list[str], aliases: set[Slot]) -> Node:
    for part in parts:
        if isinstance(node, MappingNode):
            index = _slot_of(node, part)
        elif isinstance(node, SequenceNode):
            index = _index(part)
        else:
            raise _Unsure
        if index >= len(node.value) or (id(node), index) in aliases:
            raise _Unsure
        entry = node.value[index]
        node = entry[1] if isinstance(node, MappingNode) else entry
    return node


def _slot_of(mapping: MappingNode, key: str) -> int:
    _value_node(mapping, key)  # unsure where keys repeat or merge
    keys = [k.value if isinstance(k, ScalarNode) else None for k, _ in mapping.value]
    return keys.index(key) if key in keys else len(keys)


def _value_node(mapping: MappingNode, key: str) -> Node | None:
    """The value of `key` written in `mapping`; unsure where keys merge (`<<`) or repeat
    (the audit reads the last of duplicates, other tools refuse them: not for a guess)."""
    keys = [k.value if isinstance(k, ScalarNode) else id(k) for k, _ in mapping.value]
    if len(set(keys)) < len(keys) or "<<" in keys:
        raise _Unsure
    found = [v for k, v in mapping.value if isinstance(k, ScalarNode) and k.value == key]
    if _resolve_tag(ScalarNode, key, (True, False)) != _STR_TAG:
        raise _Unsure  # `on:`, `1:`: the object's key is not this string
    return found[0] if found else None


# --- replacing a scalar in place ---


def _replace_scalar(lines: list[str], node: Node, value: Any) -> str:
    """The scalar's characters replaced, in its quoting style; what follows on its line stays."""
    start, end = node.start_mark, node.end_mark
    if not isinstance(node, ScalarNode) or start.line != end.line or node.style in ("|", ">"):
        raise _Unsure
    line = lines[start.line]
    written = line[start.column : end.column]
    if not written or written[0] in "!&*":  # a tag or anchor here, or an alias to elsewhere
        raise _Unsure
    lines[start.line] = line[: start.column] + _scalar(value, like=node.style) + line[end.column :]
    return "".join(lines)


def _scalar(value: Any, *, like: str | None = None) -> str:
    """`value` as a one-line YAML scalar: quoted as `like` when it is a string and `like`
    is a quote, else plain when the audit's YAML 1.1 parser reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or "\n" in value:
        raise _Unsure  # floats, multi-line text: ruamel writes them as the file would
    if like == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if like == '"' or not _plain_string(value):
        return json.dumps(value, ensure_ascii=False)
    return value


def _plain_string(value: str) -> bool:
    return (
        bool(_PLAIN.fullmatch(value))
        and _resolve_tag(ScalarNode, value, (True, False)) == _STR_TAG
        and not value.endswith(":")
    )


def _key(key: str) -> str:
    return key if _plain_string(key) else json.dumps(key, ensure_ascii=False)


# --- adding to a flow collection on one line ---


def _add_to_flow(lines: list[str], node: Node, prefix: str, value: Any, aliases: set[Slot]) -> str:
    """`, key: value` after the last entry of a one-line `{...}` or `[...]`; `{key: value}` in
    an empty one. New mappings inside are padded like this one (`{ a: 1 }`)."""
    start, end = node.start_mark, node.end_mark
    line = lines[start.line]
    if start.line != end.line or line[end.column - 1 : end.column] not in ("}", "]"):
        raise _Unsure
    pad = " " if line[start.column + 1 : start.column + 2] == " " else ""
    entry = prefix + _flow(value, pad)
    entries = node.value
    if (id(node), len(entries) - 1) in aliases:
        raise _Unsure
    if not entries:
        at, entry = end.column - 1, pad + entry + pad
    else:
        last = entries[-1][1] if isinstance(node, MappingNode) else entries[-1]
        if last.end_mark.line != start.line:
            raise _Unsure
        at, entry = last.end_mark.column, ", " + entry
    lines[start.line] = line[:at] + entry + line[at:]
    return "".join(lines)


def _flow(value: Any, pad: str = "") -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ", ".join(f"{_key(str(k))}: {_flow(v, pad)}" for k, v in value.items())
        return "{" + pad + inner + pad + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v, pad) for v in value) + "]"
    return _scalar(value)


# --- inserting block lines ---


class _Style:
    """The document's block indentation: how far a nested mapping's keys move right, and how
    far a sequence's dashes sit right of their key (0 for `key:\\n- item`)."""

    def __init__(self, root: Node, aliases: set[Slot]) -> None:
        steps: list[int] = []
        offsets: list[int] = []
        _measure(root, steps, offsets, aliases)
        self.step = max(set(steps), key=steps.count) if steps else 2
        self.offset = max(set(offsets), key=offsets.count) if offsets else 2


def _measure(node: Node, steps: list[int], offsets: list[int], aliases: set[Slot]) -> None:
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            if (id(node), index) not in aliases:
                _measure(item, steps, offsets, aliases)
    if not isinstance(node, MappingNode) or node.flow_style:
        return
    for index, (key, value) in enumerate(node.value):
        if (id(node), index) in aliases:
            continue
        if isinstance(value, MappingNode) and not value.flow_style and value.value:
            steps.append(value.start_mark.column - key.start_mark.column)
        elif isinstance(value, SequenceNode) and not value.flow_style and value.value:
            offsets.append(value.start_mark.column - key.start_mark.column)
        _measure(value, steps, offsets, aliases)


def _dash(seq: SequenceNode) -> int:
    return int(seq.start_mark.column)  # a block sequence starts at its first dash


def _entry_lines(key: str, value: Any, column: int, style: _Style) -> list[str]:
    head = " " * column + _key(str(key)) + ":"
    if isinstance(value, dict) and value:
        step = column + style.step
        return [head] + [line for k, v in value.items() for line in _entry_lines(k, v, step, style)]
    if isinstance(value, list) and value:
        dash = column + style.offset
        return [head] + [line for item in value for line in _item_lines(item, dash, style)]
    return [head + " " + _flow(value)]


def _item_lines(item: Any, dash: int, style: _Style, *, flow_pad: str | None = None) -> list[str]:
    if flow_pad is not None or not isinstance(item, (dict, list)) or not item:
        return [" " * dash + "- " + _flow(item, flow_pad or "")]
    if isinstance(item, list):
        raise _Unsure  # `- - x`: rare enough to leave to ruamel
    lines = [line for k, v in item.items() for line in _entry_lines(k, v, dash + 2, style)]
    lines[0] = " " * dash + "- " + lines[0][dash + 2 :]
    return lines


def _appended_item(lines: list[str], seq: SequenceNode, value: Any, style: _Style) -> list[str]:
    """The lines of a new last item at the dashes' column: a mapping in flow style when the
    last item is one (padded alike), a string quoted as the last item is."""
    last, dash = seq.value[-1], _dash(seq)
    if isinstance(last, MappingNode) and last.flow_style and isinstance(value, dict):
        line, column = lines[last.start_mark.line], last.start_mark.column
        pad = " " if line[column + 1 : column + 2] == " " else ""
        return _item_lines(value, dash, style, flow_pad=pad)
    if isinstance(last, ScalarNode) and isinstance(value, str) and last.style in ("'", '"'):
        return [" " * dash + "- " + _scalar(value, like=last.style)]
    return _item_lines(value, dash, style)


def _last_line(lines: list[str], node: Node, aliases: set[Slot]) -> int:
    """The last line holding `node`'s content (its last entry's, all the way down); an alias
    as the last value of a mapping is on its key's line (`key: *name`)."""
    holder = node.start_mark.line
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        if (id(node), len(node.value) - 1) in aliases:
            if not isinstance(node, MappingNode):
                raise _Unsure
            return int(last[0].end_mark.line)
        holder = (last[0] if isinstance(node, MappingNode) else last).start_mark.line
        node = last[1] if isinstance(node, MappingNode) else last
    end = node.end_mark
    line = min(end.line if end.column > 0 else end.line - 1, len(lines) - 1)
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        while line > holder and not lines[line].strip():  # a block scalar's mark ends past blanks
            line -= 1
    return line


def _inserted(lines: list[str], new: list[str], *, after: int, column: int) -> str:
    """`new` lines after line `after` and the comments indented deeper than `column` that
    follow it (a commented-out part of the last entry stays with that entry)."""
    at = probe = after + 1
    while probe < len(lines):
        stripped = lines[probe].strip()
        if stripped.startswith("#") and len(lines[probe]) - len(lines[probe].lstrip(" ")) > column:
            at = probe + 1
        elif stripped:
            break
        probe += 1
    block = "".join(line + "\n" for line in new)
    if at == len(lines) and not lines[-1].endswith("\n"):  # the file has no final newline
        return "".join(lines) + "\n" + block[:-1]
    return "".join(lines[:at]) + block + "".join(lines[at:])
