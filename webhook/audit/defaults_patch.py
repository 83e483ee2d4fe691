"""One edit instead of many: a Flux Kustomization's HelmRelease defaults patch.

Many repos give every HelmRelease under a Flux Kustomization the same settings with one
strategic-merge patch in its `spec.patches` (targeting all HelmReleases), or one level up, with a
patch that adds such a patch to every child Kustomization (onedr0p/home-ops
`kubernetes/flux/cluster/ks.yaml`). When every release under such a patch needs the same fix and
none of them sets the field otherwise, the fix is one edit to that patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import LiteralScalarString

from ..engine import JsonObject
from .audit_object import AuditObject
from .documents import Document, load_yaml
from .render import is_flux_kustomization
from .yaml_text import guess_indent

HELM_GROUP = "helm.toolkit.fluxcd.io"
_ALL_NAMES = ("", ".*", "(.*)", "^.*$")


@dataclass
class Proposal:
    """Write `ops` (the same for every release it covers) into the defaults patch at
    `pointer` (`/spec/patches/N/patch`) of the Flux Kustomization in `document`."""

    document: Document
    index: int
    nested: int | None  # index of the HelmRelease patch inside a patch for child Kustomizations
    ops: list[JsonObject]
    releases: list[AuditObject] = field(default_factory=list)

    @property
    def pointer(self) -> str:
        return f"/spec/patches/{self.index}/patch"


def _key(obj: JsonObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _targets_all(target: Any, kind: str, group: str) -> bool:
    if not isinstance(target, dict) or target.get("kind") != kind:
        return False
    if target.get("group") not in (None, group):
        return False
    if any(target.get(k) for k in ("labelSelector", "annotationSelector", "namespace")):
        return False
    return target.get("name") in (None, *_ALL_NAMES)


def _helmrelease_defaults(entry: Any) -> bool:
    """A strategic-merge patch for every HelmRelease."""
    if not isinstance(entry, dict) or not isinstance(entry.get("patch"), str):
        return False
    if not _targets_all(entry.get("target"), "HelmRelease", HELM_GROUP):
        return False
    try:
        body = load_yaml(entry["patch"])
    except Exception:
        return False
    return isinstance(body, dict) and body.get("kind") == "HelmRelease"


def _candidates(document: Document) -> list[tuple[int, int | None]]:
    """(patch index, nested index) of the HelmRelease defaults patches of a Flux Kustomization."""
    spec = (document.obj or {}).get("spec") or {}
    found: list[tuple[int, int | None]] = []
    for index, entry in enumerate(spec.get("patches") or []):
        if _helmrelease_defaults(entry):
            found.append((index, None))
            continue
        if not isinstance(entry, dict) or not _targets_all(
            entry.get("target"), "Kustomization", "kustomize.toolkit.fluxcd.io"
        ):
            continue
        try:
            body = load_yaml(str(entry.get("patch")))
        except Exception:
            continue
        inner = ((body or {}).get("spec") or {}).get("patches") if isinstance(body, dict) else None
        for nested, inner_entry in enumerate(inner if isinstance(inner, list) else []):
            if _helmrelease_defaults(inner_entry):
                found.append((index, nested))
    return found


def _nested_text(document: Document, index: int, nested: int) -> Any:
    """The patch text of nested HelmRelease defaults patch `nested` of patch `index`."""
    entries: Any = ((document.obj or {}).get("spec") or {}).get("patches")
    body = load_yaml(str(entries[index].get("patch")))  # _candidates read it already
    return body["spec"]["patches"][nested].get("patch")


def _value_at(obj: Any, path: str) -> Any:
    node = obj
    for part in path.split("/")[1:]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def mergeable(ops: list[JsonObject]) -> bool:
    """Ops a strategic-merge patch can say: adds of values at mapping keys under /spec."""
    return bool(ops) and all(
        op.get("op") == "add"
        and str(op.get("path", "")).startswith("/spec/")
        and not any(p.isdigit() or p == "-" for p in str(op["path"]).split("/"))
        for op in ops
    )


def proposals(
    documents: list[Document],
    rendered: list[AuditObject],
    patches: dict[int, list[JsonObject]],
) -> list[Proposal]:
    """The defaults-patch edits that cover every failing HelmRelease under them.

    `patches` maps id(AuditObject) -> the engine's (normalised) patch for each rendered release."""
    releases = [o for o in rendered if o.obj.get("kind") == "HelmRelease"]
    # per cluster (names repeat across clusters): Flux Kustomization -> those it renders, and
    # the clusters that render each written Flux Kustomization
    children: dict[tuple[str, str], set[str]] = {}
    clusters_of: dict[tuple[str, str], set[str]] = {}
    applied: dict[tuple[str, str], list[Any]] = {}  # each rendered child's own patch texts
    for item in rendered:
        if is_flux_kustomization(item.obj):
            children.setdefault((item.cluster, item.kustomization), set()).add(_key(item.obj))
            where = (item.location.source, _key(item.obj))
            clusters_of.setdefault(where, set()).add(item.cluster)
            patches_of = ((item.obj.get("spec") or {}).get("patches")) or []
            applied[(item.cluster, _key(item.obj))] = [
                e.get("patch") for e in patches_of if isinstance(e, dict)
            ]
    found: list[Proposal] = []
    for document in documents:
        if document.obj is None or not is_flux_kustomization(document.obj):
            continue
        key = _key(document.obj)
        clusters = clusters_of.get((document.source, key)) or {""}
        for index, nested in _candidates(document):
            text = None if nested is None else _nested_text(document, index, nested)
            scope = {
                (cluster, name)
                for cluster in clusters
                for name in ({key} if nested is None else children.get((cluster, key), set()))
                # a child whose own patches list replaced the parent's never gets the edit
                if nested is None or text in applied.get((cluster, name), [text])
            }
            covered = [r for r in releases if (r.cluster, r.kustomization) in scope]
            failing = [r for r in covered if patches.get(id(r))]
            if not failing:
                continue
            ops = patches[id(failing[0])]
            if not mergeable(ops) or any(patches[id(r)] != ops for r in failing):
                continue
            # a release that sets the field itself keeps its value: one edit would override it
            if any(
                _value_at(r.obj, str(op["path"])) not in (None, op.get("value"))
                for r in covered
                if not patches.get(id(r))
                for op in ops
            ):
                continue
            found.append(Proposal(document, index, nested, ops, failing))
    return found


def _round_trip(text: str) -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 1 << 20
    rt.indent(*guess_indent(text))
    return rt


def _merge(text: str, ops: list[JsonObject]) -> str:
    """`text` (a strategic-merge patch) with each op's value merged in, comments kept."""
    rt = _round_trip(text)
    tree = rt.load(text)
    for op in ops:
        parts = str(op["path"]).split("/")[1:]
        node = tree
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = CommentedMap()
            node = node[part]
        node[parts[-1]] = _plain(op.get("value"))
    out = StringIO()
    rt.dump(tree, out)
    new = out.getvalue()
    return new if text.endswith("\n") else new.rstrip("\n")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return CommentedMap((k, _plain(v)) for k, v in value.items())
    return value


def edited_patch_text(proposal: Proposal) -> str:
    """The new text of the Flux Kustomization's `spec.patches[N].patch`."""
    spec = (proposal.document.obj or {}).get("spec") or {}
    text = str(spec["patches"][proposal.index]["patch"])
    if proposal.nested is None:
        return _merge(text, proposal.ops)
    rt = _round_trip(text)
    tree = rt.load(text)
    inner = tree["spec"]["patches"][proposal.nested]
    inner_text = str(inner["patch"])
    inner["patch"] = LiteralScalarString(_merge(inner_text, proposal.ops))
    out = StringIO()
    rt.dump(tree, out)
    new = out.getvalue()
    return new if text.endswith("\n") else new.rstrip("\n")
