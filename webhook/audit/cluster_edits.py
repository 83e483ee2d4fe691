"""A document several clusters render, fixed for all of them together (issue 18, item 1).

A shared base (`apps/base/podinfo`) renders once per cluster, and each cluster's render may need
a different fix: helm-controller older than v1.4.0 knows `remediation.retries`, not `strategy`; a
cluster's own patch or `${VAR}` changes the object. What every rendering needs is one edit of
the shared document; each rendering's remainder goes where a Flux user writes a per-cluster
difference: a patch (targeted by kind, name and, when it is known then, namespace) in the
cluster overlay the applying Flux Kustomization builds (`overlays.py`) when that already lists
patches, else in that Flux Kustomization's `spec.patches`, provided no rendering that needs
something else goes through that file. Where there is no such place, the document is a plan
problem naming the clusters and what each needs: never one cluster's fix for all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engine import JsonObject
from .audit_object import AuditObject
from .documents import Document
from .findings import InputProblem
from .inventory import Inventory
from .overlays import overlay_of, reached
from .redaction import hide_secrets
from .render import is_flux_kustomization

Ops = tuple[JsonObject, ...]


@dataclass(frozen=True)
class Need:
    """A rendering of a shared document and the ops that fix it (empty: it passes, or a
    defaults-patch edit covers it)."""

    item: AuditObject
    ops: Ops
    policies: tuple[str, ...] = ()  # of each op: the policies behind it, comma-separated


@dataclass
class ClusterPatch:
    """Patches for one document's patch list (a Flux Kustomization's, a cluster overlay's):
    each (rendered object, ops, target)."""

    document: Document
    position: int
    pointer: str  # the patch list: a Flux Kustomization's /spec/patches, a kustomization's /patches
    fixes: list[tuple[JsonObject, list[JsonObject], dict[str, str]]] = field(default_factory=list)
    clusters: set[str] = field(default_factory=set)
    shared: set[str] = field(default_factory=set)  # the shared files whose remainder it holds
    policies: set[str] = field(default_factory=set)


class ClusterPatches:
    """The per-cluster patches of a whole plan, one per patch list: the remainders of several
    shared documents that go into one file are planned together (two edits that each create
    its `patches` list would keep only the last)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._by_place: dict[tuple[str, int, str], ClusterPatch] = {}

    def add(self, patches: Sequence[ClusterPatch]) -> None:
        for patch in patches:
            key = (patch.document.source, patch.position, patch.pointer)
            known = self._by_place.setdefault(key, patch)
            if known is patch:
                continue
            targets = [t for _, _, t in known.fixes]
            known.fixes += [f for f in patch.fixes if f[2] not in targets]
            known.clusters |= patch.clusters
            known.shared |= patch.shared
            known.policies |= patch.policies

    def values(self) -> list[ClusterPatch]:
        return list(self._by_place.values())


@dataclass
class Split:
    """The ops for the shared document, and for the rest: per-cluster patches, or problems."""

    shared_ops: list[JsonObject]
    patches: list[ClusterPatch] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)


def common_ops(needs: Sequence[Need]) -> list[JsonObject]:
    """The ops every rendering needs (in the order the first lists them)."""
    if not needs:
        return []
    return [op for op in needs[0].ops if all(op in n.ops for n in needs[1:])]


def split(
    document: Document, needs: Sequence[Need], inventory: Inventory, *, covered: set[int]
) -> Split:
    """What every rendering of `document` needs as its own edit; each rendering's remainder as a
    patch in the Flux Kustomization that applies it, or a problem when none is only theirs.
    A rendering in `covered` (ids) takes its remainder from a defaults-patch edit."""
    common = common_ops(needs)
    result = Split(common)
    remainders = {
        id(n.item): () if id(n.item) in covered else tuple(op for op in n.ops if op not in common)
        for n in needs
    }
    places: dict[tuple[str, int], ClusterPatch] = {}
    stranded: list[Need] = []
    for need in needs:
        remainder = remainders[id(need.item)]
        if not remainder:
            continue
        place = _place(need.item, needs, remainders, inventory)
        if isinstance(place, str):
            stranded.append(need)
            continue
        key = (place.document.source, place.position)
        patch = places.setdefault(key, ClusterPatch(place.document, place.position, place.pointer))
        if place.target not in [t for _, _, t in patch.fixes]:
            patch.fixes.append((need.item.obj, list(remainder), place.target))
        patch.clusters.add(need.item.cluster)
        patch.policies |= _policies(need, remainder)
        patch.shared.add(document.source)
    result.patches = list(places.values())
    if stranded:
        result.problems.append(_problem(document, needs, remainders))
    return result


@dataclass(frozen=True)
class Place:
    """Where a cluster's remainder is written: the patch list at `pointer` of `document`."""

    document: Document
    position: int
    pointer: str
    target: dict[str, str]


def _place(
    item: AuditObject,
    needs: Sequence[Need],
    remainders: dict[int, Ops],
    inventory: Inventory,
) -> Place | str:
    """Where `item`'s remainder is written, or why nowhere: the cluster overlay at its Flux
    Kustomization's `spec.path` when that already lists patches, else the Flux Kustomization's
    own `spec.patches`, else the overlay."""
    flux = _applying(item, inventory)
    if flux is None or flux.document is None:
        return "no Flux Kustomization written in Git applies it"
    overlay = _overlay_place(item, flux, needs, remainders, inventory)
    if isinstance(overlay, Place) and isinstance((overlay.document.obj or {}).get("patches"), list):
        return overlay
    own = _flux_place(item, flux, needs, remainders, inventory)
    return own if isinstance(own, Place) else overlay


def _flux_place(
    item: AuditObject,
    flux: AuditObject,
    needs: Sequence[Need],
    remainders: dict[int, Ops],
    inventory: Inventory,
) -> Place | str:
    """The `spec.patches` of the Flux Kustomization that applies `item`, when only renderings
    that need the same remainder go through its file."""
    written = flux.document
    if written is None or not written.text:
        return "its Flux Kustomization is not written in Git"
    if written.source in inventory.unreached or _is_generated_file(written.source):
        return f"{written.source} is generated"
    if _spec_patches(written.obj or {}) != _spec_patches(flux.obj):
        return f"{written.source}: its spec.patches are changed before Flux applies them"
    through = {(r.cluster, _key(r.obj)) for r in inventory.renderings(written)}
    remainder = remainders[id(item)]
    if any(
        (other.item.cluster, other.item.kustomization) in through
        and remainders[id(other.item)] != remainder
        for other in needs
    ):
        return f"{written.source} applies it in clusters that need other edits"
    target = _target(item, flux, inventory, namespace_kept=True)
    if isinstance(target, str):
        return target
    position = next(i for i, d in enumerate(inventory.files[written.source]) if d is written)
    return Place(written, position, "/spec/patches", target)


def _overlay_place(
    item: AuditObject,
    flux: AuditObject,
    needs: Sequence[Need],
    remainders: dict[int, Ops],
    inventory: Inventory,
) -> Place | str:
    """The `patches` of the kustomization at the Flux Kustomization's `spec.path`, when no
    build of a rendering that needs something else reaches that directory."""
    overlay = _overlay(flux, inventory)
    if overlay is None:
        return "no kustomization.yaml at its Flux Kustomization's spec.path"
    directory = os.path.dirname(overlay.source)
    remainder = remainders[id(item)]
    for other in needs:
        if remainders[id(other.item)] == remainder:
            continue
        other_flux = _applying(other.item, inventory)
        other_overlay = _overlay(other_flux, inventory) if other_flux is not None else None
        if other_overlay is None:
            return f"{overlay.source}: the other clusters' builds are not known"
        if directory in reached(os.path.dirname(other_overlay.source), inventory.files):
            return f"{overlay.source} is built for clusters that need other edits"
    kept = "namespace" not in (overlay.obj or {})  # a namespace set there comes after patches
    target = _target(item, flux, inventory, namespace_kept=kept)
    if isinstance(target, str):
        return target
    return Place(overlay, 0, "/patches", target)


def _overlay(flux: AuditObject, inventory: Inventory) -> Document | None:
    if flux.document is None:
        return None
    spec = flux.obj.get("spec") if isinstance(flux.obj.get("spec"), dict) else {}
    return overlay_of(flux.document.source, str((spec or {}).get("path") or ""), inventory.files)


def _applying(item: AuditObject, inventory: Inventory) -> AuditObject | None:
    """The rendered Flux Kustomization that applies `item` in its cluster."""
    return next(
        (
            o
            for o in inventory.objects
            if o.cluster == item.cluster
            and is_flux_kustomization(o.obj)
            and _key(o.obj) == item.kustomization
        ),
        None,
    )


def _target(
    item: AuditObject, flux: AuditObject, inventory: Inventory, *, namespace_kept: bool
) -> dict[str, str] | str:
    """The patch target of `item` as the Flux Kustomization's patches see it: before
    substitution (a `${VAR}` name cannot be targeted), namespace only when it is not changed
    after the patches (`spec.targetNamespace`, a substituted namespace)."""
    written = (item.document.obj if item.document is not None else None) or {}
    meta = written.get("metadata") if isinstance(written.get("metadata"), dict) else {}
    name = str((meta or {}).get("name") or "")
    rendered_meta = item.obj.get("metadata") or {}
    if not name or "${" in name or name != rendered_meta.get("name"):
        return f"its name {name!r} is substituted after patches apply"
    target = {"kind": str(item.obj.get("kind")), "name": name}
    namespace = str(rendered_meta.get("namespace") or "")
    spec = flux.obj.get("spec") if isinstance(flux.obj.get("spec"), dict) else {}
    known = (
        namespace_kept
        and "${" not in str((meta or {}).get("namespace") or "")
        and not (spec or {}).get("targetNamespace")
    )
    if namespace and known:
        return {**target, "namespace": namespace}
    alike = [
        o
        for o in inventory.objects
        if o.cluster == item.cluster
        and o.kustomization == item.kustomization
        and o.obj.get("kind") == target["kind"]
        and (o.obj.get("metadata") or {}).get("name") == name
    ]
    return target if len(alike) == 1 else f"{target['kind']}/{name} is not the only one so named"


def _problem(document: Document, needs: Sequence[Need], remainders: dict[int, Ops]) -> InputProblem:
    """Why the document is not fixed: the clusters and what each needs."""
    obj = document.obj or {}
    meta = obj.get("metadata") or {}
    wanted: dict[str, list[str]] = {}
    for need in needs:
        ops = remainders[id(need.item)]
        summary = "; ".join(_said(op) for op in ops) or "nothing more"
        wanted.setdefault(summary, []).append(need.item.cluster or "(the repo)")
    said = " | ".join(f"{', '.join(sorted(set(c)))}: {s}" for s, c in wanted.items())
    message = (
        f"{obj.get('kind')}/{meta.get('name')} not fixed: the clusters that apply it need "
        f"different edits ({said}), and no file only those clusters apply can hold them; "
        "write each cluster's difference in a patch of its own"
    )
    secrets = tuple(sorted({s for n in needs for s in n.item.secrets}))
    return InputProblem(document.source, document.line, hide_secrets(message, secrets), True)


def _said(op: JsonObject) -> str:
    value = json.dumps(op.get("value"), sort_keys=True, separators=(",", ":"))
    return f"{op.get('op')} {op.get('path')} {value}"[:200]


def _spec_patches(obj: JsonObject) -> object:
    spec = obj.get("spec")
    return spec.get("patches") if isinstance(spec, dict) else None


def _key(obj: JsonObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _is_generated_file(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            head = "".join(file.readline() for _ in range(5))
    except OSError:
        return False
    return "DO NOT EDIT" in head


def _policies(need: Need, ops: Sequence[JsonObject]) -> set[str]:
    """The policies behind those of `need`'s ops that are in `ops`."""
    return {
        p
        for op, policies in zip(need.ops, need.policies, strict=False)
        if op in ops
        for p in policies.split(", ")
        if p
    }


def shared_why(needs: Sequence[Need], shared_ops: Sequence[JsonObject]) -> str:
    """The `why` of the shared document's edit: the policies behind its ops, and the clusters
    (when they are named)."""
    policies = ", ".join(sorted({p for n in needs for p in _policies(n, shared_ops)}))
    clusters = sorted({n.item.cluster for n in needs if n.item.cluster})
    return f"{policies} for {', '.join(clusters)}" if policies and clusters else policies


def why(patch: ClusterPatch) -> str:
    """The `why` of a per-cluster edit: its policies, clusters and the shared files."""
    clusters = ", ".join(sorted(c or "(the repo)" for c in patch.clusters))
    policies = ", ".join(sorted(patch.policies))
    return f"{policies} for {clusters} (differs per cluster: {', '.join(sorted(patch.shared))})"
