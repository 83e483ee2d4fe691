"""Lookups answered from the objects being checked, for `fluxwarden audit`/`fix` over files."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine import JsonObject, ObjectRef
from ..engine.model import DependencyKind
from ..engine.policies.kustomization_dependencies import GROUPS, depends_on


def _group(api_version: object) -> str:
    return api_version.rpartition("/")[0] if isinstance(api_version, str) else ""


class OfflineLookups:
    """Builds the same context a cluster would give from a set of manifests."""

    def __init__(self, objects: Iterable[JsonObject]) -> None:
        self._deployments: dict[ObjectRef, JsonObject] = {}
        self._dependencies: dict[tuple[str, ObjectRef], list[ObjectRef]] = {}
        for obj in objects:
            self.add(obj)

    def add(self, obj: JsonObject) -> None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return
        namespace = meta.get("namespace")
        namespace = namespace if isinstance(namespace, str) else ""
        ref = ObjectRef(namespace, meta["name"])
        group, kind = _group(obj.get("apiVersion")), obj.get("kind")
        if group == "apps" and kind == "Deployment":
            self._deployments[ref] = obj
        elif GROUPS.get(group) == kind and isinstance(kind, str):
            self._dependencies[(kind, ref)] = depends_on(obj, namespace)

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self._deployments.get(ObjectRef(namespace, name))

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        found = self._dependencies.get((kind, ref))
        if found is None and ref.namespace:
            # In a repo the namespace often comes from a kustomization.yaml (`namespace:`), not
            # from the object's own file: an object of that name with no namespace may be it.
            found = self._dependencies.get((kind, ObjectRef("", ref.name)))
        return found
