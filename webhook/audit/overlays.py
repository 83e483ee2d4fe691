"""The cluster overlay a Flux Kustomization builds, and the overlays a build reaches.

Flux users write a cluster's differences in the kustomization.yaml at the Flux Kustomization's
`spec.path` (`apps/staging/kustomization.yaml` with `resources: [../base/podinfo]` and `patches:`,
as in fluxcd/flux2-kustomize-helm-example). A patch there changes only what builds through it:
the overlay is safe for one cluster's fix when no build of a cluster that needs something else
reaches it through `resources` or `components` (local directories only, read from the files the
inventory holds; a remote base reaches nothing here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePosixPath

from ..engine import JsonObject
from .documents import Document

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_FILES = (".yaml", ".yml", ".json")  # a resource that is a file, not a directory


def kustomization_in(directory: str, files: dict[str, list[Document]]) -> Document | None:
    """The kustomization document of `directory` (a path as the inventory names files)."""
    for name in KUSTOMIZATION_FILES:
        documents = files.get(os.path.join(directory, name))
        if documents and isinstance(documents[0].obj, dict):
            return documents[0]
    return None


def overlay_of(
    written_source: str, spec_path: str, files: dict[str, list[Document]]
) -> Document | None:
    """The kustomization document a Flux Kustomization written in `written_source` builds at
    `spec_path` (relative to the repo root, which is one of the file's directories): found when
    exactly one of those directories holds it."""
    if not spec_path or "${" in spec_path:
        return None
    relative = os.path.normpath(spec_path.lstrip("/")) if spec_path.strip("./") else "."
    found = {
        id(document): document
        for ancestor in PurePosixPath(written_source).parents
        for document in [kustomization_in(os.path.normpath(ancestor / relative), files)]
        if document is not None
    }
    return next(iter(found.values())) if len(found) == 1 else None


def reached(directory: str, files: dict[str, list[Document]]) -> set[str]:
    """The directories a build of `directory` reads kustomizations from (itself included)."""
    seen: set[str] = set()
    pending = [os.path.normpath(directory)]
    while pending and len(seen) < 10_000:  # bounded: a repo's directories
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        document = kustomization_in(current, files)
        if document is not None:
            pending += [os.path.normpath(os.path.join(current, e)) for e in _entries(document.obj)]
    return seen


def _entries(kustomization: JsonObject | None) -> Iterable[str]:
    for key in ("resources", "components", "bases"):
        for entry in (kustomization or {}).get(key) or []:
            if isinstance(entry, str) and "://" not in entry and not entry.endswith(_FILES):
                yield entry
