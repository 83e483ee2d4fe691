"""Which patch set a rendered field: a finding then points at that patch's line, not the resource.

Patches are where a Flux user wrote them: a kustomization.yaml's `patches`, a Flux Kustomization's
`spec.patches`, a FluxInstance's `spec.kustomize.patches` (inline `patch:` strings), or patch files.
Both kinds are understood: a JSON6902 list of operations and a strategic-merge mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..engine import JsonObject
from .documents import Document, load_yaml, parse_stream
from .sources import field_line

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_INDEX = re.compile(r"/(?:\d+|-)(?=/|$)")


@dataclass(frozen=True)
class PatchEntry:
    """One patch: the document it is written in, the JSON pointer of its `patch` string there
    ("" when the whole document is the patch, as in a patch file), its target and its body."""

    document: Document
    pointer: str
    target: dict[str, Any] | None
    body: Any
    text: str


def entries_of(document: Document, list_pointer: str, patches: Any) -> list[PatchEntry]:
    """The inline patches of the list at `list_pointer` (e.g. `/spec/patches`) in `document`
    (none when `list_pointer` is empty: the patches are not written in that document)."""
    if not list_pointer:
        return []
    found: list[PatchEntry] = []
    for index, entry in enumerate(patches if isinstance(patches, list) else []):
        if not isinstance(entry, dict) or not isinstance(entry.get("patch"), str):
            continue
        try:
            body = load_yaml(entry["patch"])
        except yaml.YAMLError:
            continue
        target = entry.get("target") if isinstance(entry.get("target"), dict) else None
        pointer = f"{list_pointer}/{index}/patch"
        found.append(PatchEntry(document, pointer, target, body, entry["patch"]))
    return found


def _file_documents(path: Path) -> tuple[Document, ...]:
    try:
        stat = path.stat()
    except OSError:
        return ()
    return _parsed(path, stat.st_mtime_ns, stat.st_size)


@cache
def _parsed(path: Path, _mtime: int, _size: int) -> tuple[Document, ...]:
    """A file's documents, read once per version of the file (many objects share it)."""
    try:
        return tuple(parse_stream(path.read_text(encoding="utf-8"), str(path)))
    except (OSError, UnicodeDecodeError):
        return ()


def kustomization_entries(directory: Path, display: str) -> list[PatchEntry]:
    """The patches of the kustomization.yaml in `directory` (inline ones and patch files);
    `display` is the directory as the user gave it (findings name files under it)."""
    file = next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
    if file is None:
        return []
    documents = _file_documents(file)
    if not documents or documents[0].obj is None:
        return []
    shown = Document(str(Path(display) / file.name), *_rest(documents[0]))
    data = documents[0].obj
    found = entries_of(shown, "/patches", data.get("patches"))
    files: list[tuple[str, dict[str, Any] | None]] = []
    for key in ("patches", "patchesJson6902"):
        for entry in data.get(key) or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                target = entry.get("target") if isinstance(entry.get("target"), dict) else None
                files.append((entry["path"], target))
    files += [(e, None) for e in data.get("patchesStrategicMerge") or [] if isinstance(e, str)]
    for relative, target in files:
        if "\n" in relative:
            continue
        for patch_document in _file_documents((directory / relative).resolve()):
            if patch_document.obj is None and not patch_document.text.strip().startswith("-"):
                continue
            body = patch_document.obj
            if body is None:
                try:
                    body = load_yaml(patch_document.text)
                except yaml.YAMLError:
                    continue
            shown_patch = Document(str(Path(display) / relative), *_rest(patch_document))
            found.append(PatchEntry(shown_patch, "", target, body, patch_document.text))
    return found


def _rest(document: Document) -> tuple[int, int, str, dict[str, Any] | None, str | None]:
    return document.line, document.index, document.text, document.obj, document.error


def _targets(entry: PatchEntry, obj: JsonObject) -> bool:
    meta = obj.get("metadata") or {}
    target = entry.target
    if target is None:  # a strategic-merge patch names its object
        if not isinstance(entry.body, dict):
            return False
        body_meta = entry.body.get("metadata") or {}
        return entry.body.get("kind") == obj.get("kind") and body_meta.get("name") == meta.get(
            "name"
        )
    group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
    actual = {
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "group": group,
        "version": version,
    }
    for key, selects in (("labelSelector", "labels"), ("annotationSelector", "annotations")):
        if isinstance(target.get(key), str) and not _selects(str(target[key]), meta.get(selects)):
            return False
    for key, wanted in target.items():
        if key not in actual or not isinstance(wanted, str) or not wanted:
            continue
        try:
            if re.fullmatch(wanted, str(actual[key] or "")) is None:
                return False
        except re.error:
            if wanted != actual[key]:
                return False
    return True


def _selects(selector: str, values: Any) -> bool:
    """A label selector's equality terms (`k=v`, `k==v`, `k!=v`, `k`, `!k`) against `values`;
    a set-based term (`k in (a,b)`) is taken as matching."""
    values = values if isinstance(values, dict) else {}
    for term in (t.strip() for t in re.split(r",(?![^(]*\))", selector) if t.strip()):
        if " in " in term or " notin " in term:
            continue
        if "!=" in term:
            key, _, value = term.partition("!=")
            if str(values.get(key.strip())) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if str(values.get(key.strip())) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in values:
                return False
        elif term not in values:
            return False
    return True


def _strip(path: str) -> str:
    return _INDEX.sub("", path)


def _related(written: str, mutated: str) -> bool:
    a, b = _strip(written), _strip(mutated)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _value_at(obj: Any, pointer: str) -> Any:
    node = obj
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _leaves(body: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path without list indices, value) of a strategic-merge patch's leaves; merge keys and
    metadata that only name the object are left out."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("apiVersion", "kind") and not prefix:
                continue
            if key == "name" and (
                prefix.endswith(("containers", "volumes")) or prefix == "/metadata"
            ):
                continue
            yield from _leaves(value, f"{prefix}/{key}")
    elif isinstance(body, list) and body and all(isinstance(i, dict) for i in body):
        for item in body:
            yield from _leaves(item, prefix)
    else:
        yield prefix, body


def _sets(written: str, value: Any, mutated: str, before: JsonObject) -> bool:
    if not _related(written, mutated):
        return False
    last = mutated.rsplit("/", 1)[-1]
    if last == "-":
        return False  # an element appended: nothing set it
    if last.isdigit():  # a list element: the patch must have written that very element
        old = _value_at(before, mutated)
        return old is not None and (old == value or (isinstance(value, list) and old in value))
    return True


def _line_in(entry: PatchEntry, needle: str, occurrence: int) -> int:
    """The line of the `occurrence`-th line of the patch text holding `needle`."""
    base = field_line(entry.document, [entry.pointer]) if entry.pointer else entry.document.line
    lines = entry.text.splitlines()
    hits = [number for number, line in enumerate(lines) if needle in line]
    if not hits:
        return base
    hit = hits[min(occurrence, len(hits) - 1)]
    if not entry.pointer:  # a patch file: the text is the document itself
        leading = len(entry.document.text.splitlines()) - len(lines)
        return entry.document.line + hit - max(leading, 0)
    return base + 1 + hit  # a block scalar starts on the line after `patch: |`


def setting_entry(
    entries: Sequence[PatchEntry], obj: JsonObject, mutated: str
) -> tuple[PatchEntry, int | None, str] | None:
    """The last patch in `entries` that wrote the field at `mutated` in `obj` (the rendered
    object before the mutation): (entry, index of the JSON6902 op or None for a strategic-merge
    patch, the key to find its line by), or None."""
    for entry in reversed(entries):  # later patches win
        if not _targets(entry, obj):
            continue
        if isinstance(entry.body, list):
            for number, op in enumerate(entry.body):
                if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "copy"):
                    continue
                if _sets(str(op.get("path", "")), op.get("value"), mutated, obj):
                    return entry, number, f"path: {op.get('path')}"
        elif isinstance(entry.body, dict):
            for leaf, value in _leaves(entry.body):
                if _sets(leaf, value, mutated, obj):
                    return entry, None, f"{leaf.rsplit('/', 1)[-1]}:"
    return None


def setting_patch(
    entries: Sequence[PatchEntry], obj: JsonObject, mutated_paths: Sequence[str]
) -> tuple[str, int] | None:
    """(file, line) of the patch that wrote the field at the first of `mutated_paths`."""
    if not mutated_paths:
        return None
    found = setting_entry(entries, obj, mutated_paths[0])
    if found is None:
        return None
    entry, number, needle = found
    earlier = 0
    if number is not None and isinstance(entry.body, list):
        path = entry.body[number].get("path")
        earlier = sum(
            1 for o in entry.body[:number] if isinstance(o, dict) and o.get("path") == path
        )
    return entry.document.source, _line_in(entry, needle, earlier)
