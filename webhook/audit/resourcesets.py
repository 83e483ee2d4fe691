"""The objects a Flux Operator ResourceSet applies, audited where they are written.

A ResourceSet (`fluxcd.controlplane.io`, kind ResourceSet) lists objects in `spec.resources`
(or `spec.steps[].resources`); the operator renders each entry as a Go template with the
delimiters `<<` and `>>` over its inputs, so an entry with no action renders to itself
(controlplaneio-fluxcd/flux-operator `internal/builder/resourceset.go`: `newTemplate`,
`BuildResource`, commit 17c6aea). The controller then adds its owner labels
(`resourceset.fluxcd.controlplane.io/name` and `/namespace`) and `spec.commonMetadata`'s labels
and annotations (`resourceset_controller.go`: `SetOwnerLabels`, `SetCommonMetadata`); it sets no
namespace, so an entry is judged with the namespace it is written with.

Entries without actions are audited as those objects, each at its entry's line of the
ResourceSet's file, with "from ResourceSet NS/NAME"; entries with actions are not rendered here
(no Go templates): one notice per ResourceSet counts them. A fix of such an object is written
into its entry (`/spec/resources/i/...`); a FluxInstance entry is a Flux install like any
other (its controllers' fixes go into the entry's `spec.kustomize.patches`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..engine import JsonObject
from .audit_object import AuditObject
from .documents import Document, FastManifestLoader
from .findings import AuditReport, InputProblem, ObjectLocation
from .sources import field_line

GROUP = "fluxcd.controlplane.io"
TEMPLATE_ACTION = "<<"  # the operator's left delimiter: where it is, Go templates parse an action
OWNER_LABELS = (
    "resourceset.fluxcd.controlplane.io/name",
    "resourceset.fluxcd.controlplane.io/namespace",
)

OpsOf = Callable[[AuditObject], tuple[list[JsonObject], str]]  # an entry object's fix, why


@dataclass(frozen=True)
class EntryDocument(Document):
    """The written text of one `spec.resources` entry, so its findings point at its fields."""

    resource_set: Document | None = None
    pointer: str = ""  # the entry in the ResourceSet: /spec/resources/i


@dataclass
class ResourceSetFix:
    """The ops on a ResourceSet's document that fix the objects of its entries, and why; or the
    notices saying which could not be written there."""

    ops: list[JsonObject] = dataclasses.field(default_factory=list)
    why: str = ""
    problems: list[InputProblem] = dataclasses.field(default_factory=list)


def is_resource_set(obj: JsonObject | None) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("kind") == "ResourceSet"
        and str(obj.get("apiVersion", "")).split("/")[0] == GROUP
    )


def has_template_action(value: Any) -> bool:
    """Whether the operator would find a template action in `value` (a key or a string)."""
    if isinstance(value, dict):
        return any(has_template_action(k) or has_template_action(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_template_action(v) for v in value)
    return isinstance(value, str) and TEMPLATE_ACTION in value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: JsonObject) -> str:
    meta = _dict(obj.get("metadata"))
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}".lstrip("/")


def entries(obj: JsonObject) -> Iterator[tuple[str, Any]]:
    """(pointer, entry) of each resource a ResourceSet lists, steps included."""
    spec = _dict(obj.get("spec"))
    for index, entry in enumerate(spec.get("resources") or []):
        yield f"/spec/resources/{index}", entry
    for step_index, step in enumerate(spec.get("steps") or []):
        for index, entry in enumerate(_dict(step).get("resources") or []):
            yield f"/spec/steps/{step_index}/resources/{index}", entry


def _templates(obj: JsonObject) -> int:
    """How many resources a ResourceSet templates from its inputs (entries with actions and
    the documents of its `resourcesTemplate`s)."""
    spec = _dict(obj.get("spec"))
    count = sum(1 for _, entry in entries(obj) if has_template_action(entry))
    texts = [spec.get("resourcesTemplate")]
    texts += [_dict(s).get("resourcesTemplate") for s in spec.get("steps") or []]
    for text in texts:
        if isinstance(text, str) and text.strip():
            count += max(1, sum(1 for part in text.split("\n---") if part.strip(" -\n")))
    return count


def applied(resource_set: JsonObject, entry: JsonObject) -> JsonObject:
    """`entry` as the operator applies it: its owner labels and the common metadata added."""
    obj = copy.deepcopy(entry)
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        return obj
    owner = _dict(resource_set.get("metadata"))
    labels = dict(_dict(meta.get("labels")))
    labels[OWNER_LABELS[0]] = str(owner.get("name"))
    labels[OWNER_LABELS[1]] = str(owner.get("namespace"))
    common = _dict(_dict(resource_set.get("spec")).get("commonMetadata"))
    labels.update(_dict(common.get("labels")))
    meta["labels"] = labels
    if _dict(common.get("annotations")):
        meta["annotations"] = {**_dict(meta.get("annotations")), **common["annotations"]}
    return obj


def with_resource_sets(objects: Sequence[AuditObject], report: AuditReport) -> list[AuditObject]:
    """`objects` plus, after each ResourceSet, the objects its entries without template actions
    apply; a notice for each ResourceSet that templates some from its inputs."""
    result: list[AuditObject] = []
    said: set[tuple[str, int, str]] = set()
    for item in objects:
        result.append(item)
        if not is_resource_set(item.obj):
            continue
        result += _entry_objects(item)
        templated = _templates(item.obj)
        if templated:
            message = (
                f"not audited: ResourceSet {_name(item.obj)} templates {templated} "
                "resource(s) from its inputs"
            )
            key = (item.location.source, item.location.line, message)
            if key not in said:  # a file several clusters apply: said once
                said.add(key)
                report.problems.append(InputProblem(*key, False))
    return result


def _entry_objects(item: AuditObject) -> list[AuditObject]:
    note = f"from ResourceSet {_name(item.obj)}"
    if item.note:
        note = f"{note}; {item.note}"
    objects: list[AuditObject] = []
    for pointer, entry in entries(item.obj):
        if not isinstance(entry, dict) or has_template_action(entry):
            continue
        obj = applied(item.obj, entry)
        document = _entry_document(item.document, pointer, entry)
        meta = _dict(obj.get("metadata"))
        location = ObjectLocation(
            item.location.source,
            document.line if document else item.location.line,
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
        )
        objects.append(
            AuditObject(
                obj,
                location,
                item.unknown,
                document,
                note=note,
                secrets=item.secrets,
                cluster=item.cluster,
            )
        )
    return objects


def _entry_document(
    written: Document | None, pointer: str, entry: JsonObject
) -> EntryDocument | None:
    """The entry's own text (dedented) at its line in the ResourceSet's file, when the written
    ResourceSet has that entry."""
    if written is None or not written.text:
        return None
    try:
        root = yaml.compose(written.text, Loader=FastManifestLoader)
    except yaml.YAMLError:
        return None
    node = root
    for part in pointer.strip("/").split("/"):
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            return None
    if not isinstance(node, yaml.MappingNode):
        return None
    all_lines = written.text.splitlines()
    end = node.end_mark.line  # the mark is where the next token starts: that line is not ours
    if end < len(all_lines) and all_lines[end][: node.end_mark.column].strip():
        end += 1
    lines = all_lines[node.start_mark.line : end]
    column = node.start_mark.column
    lines[0] = " " * column + lines[0][column:]
    text = textwrap.dedent("\n".join(lines)) + "\n"
    line = field_line(written, [pointer])
    return EntryDocument(written.source, line, written.index, text, entry, None, written, pointer)


def resource_set_fix(
    document: Document, objects: Sequence[AuditObject], ops_of: OpsOf
) -> ResourceSetFix:
    """The fixes of the objects a written ResourceSet's entries apply, as ops on its document:
    each object's ops under its entry's pointer (once, however many clusters apply it)."""
    fix = ResourceSetFix()
    if not is_resource_set(document.obj):
        return fix
    policies: set[str] = set()
    for item in objects:
        entry = item.document
        if not isinstance(entry, EntryDocument) or entry.resource_set is not document:
            continue
        ops, why = ops_of(item)
        if not ops:
            continue
        mapped = [_under(entry.pointer, op) for op in ops]
        problem = _unwritable(item, entry, ops)
        if problem:
            if problem not in fix.problems:
                fix.problems.append(problem)
            continue
        fix.ops += [op for op in mapped if op not in fix.ops]
        policies.update(p for p in why.split(", ") if p)
    fix.why = ", ".join(sorted(policies))
    return fix


def _under(pointer: str, op: JsonObject) -> JsonObject:
    """`op` on the object as an op on the ResourceSet, its paths under the entry's `pointer`."""
    moved: dict[str, Any] = {k: pointer + str(op[k]) for k in ("path", "from") if k in op}
    return {**op, **moved}


def _unwritable(
    item: AuditObject, entry: EntryDocument, ops: list[JsonObject]
) -> InputProblem | None:
    """Why `ops` cannot be written into the entry (a field the operator adds, a value from a
    Secret), else None."""
    assert entry.resource_set is not None
    where = f"inside ResourceSet {_name(entry.resource_set.obj or {})}"
    reason = ""
    if item.secrets and any(json.dumps(s)[1:-1] in json.dumps(ops) for s in item.secrets):
        reason = "its fix holds a value from a Secret"
    elif not all(_writable(entry.obj, op) for op in ops):
        reason = "its fix edits a field the operator adds"
    if not reason:
        return None
    pointer = entry.pointer.strip("/").replace("/", ".")
    message = f"{item.location.kind} not fixed: {where} (edit {_indexed(pointer)}): {reason}"
    return InputProblem(item.location.source, item.location.line, message, True)


def _indexed(pointer: str) -> str:
    """spec.resources.0 -> spec.resources[0]."""
    parts = pointer.split(".")
    return ".".join(parts[:1]) + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])


def _writable(written: Any, op: JsonObject) -> bool:
    """Whether `op` applies to the written entry: what it replaces or removes is there, and the
    parent of what it adds."""
    parts = [
        p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]
    ]
    if op.get("op") == "add":
        parts = parts[:-1]
    node = written
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
