"""`AuditObject`: one object to evaluate, where it is reported and how it was rendered.

Its own small module: the inventory makes them, the evaluation, the fix plan and the
defaults-patch proposals read them, and none of those should import another to get it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import JsonObject, target_of
from .documents import Document
from .findings import ObjectLocation
from .patch_sources import PatchEntry


@dataclass(frozen=True)
class AuditObject:
    """An object to evaluate, where it is reported, and postBuild variables unknown offline."""

    obj: JsonObject
    location: ObjectLocation
    unknown: tuple[str, ...] = ()
    document: Document | None = None  # the source document, to point at a field's line
    patches: tuple[PatchEntry, ...] = ()  # patches that may have set its fields, in order
    note: str | None = None  # said with each of its fail/warn findings (how it was rendered)
    kustomization: str = ""  # namespace/name of the Flux Kustomization that rendered it
    secrets: tuple[str, ...] = ()  # values substituted from Secrets: never printed
    cluster: str = ""  # the cluster whose render applies it ("": the repo is one cluster)


def location_of(document: Document) -> ObjectLocation:
    """Where a document's object is reported: its file, its first line, its identity."""
    obj = document.obj or {}
    target = target_of(obj)
    return ObjectLocation(
        document.source,
        document.line,
        target.api_version,
        target.kind,
        target.namespace,
        target.name,
    )
