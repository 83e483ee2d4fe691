"""Lookups answered from the objects being checked, for `fluxwarden audit`/`fix` over files."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine import JsonObject, ObjectRef, target_of
from ..engine.model import DependencyKind
from ..engine.policies.kustomization_dependencies import GROUPS, depends_on


class OfflineLookups:
    """Builds the same context a cluster would give from a set of manifests."""

    def __init__(self, objects: Iterable[JsonObject]) -> None:
        self._deployments: dict[ObjectRef, JsonObject] = {}
        self._dependencies: dict[tuple[str, ObjectRef], list[ObjectRef]] = {}
        self._claims: dict[ObjectRef, JsonObject] = {}
        for obj in objects:
            self.add(obj)

    def add(self, obj: JsonObject) -> None:
        target = target_of(obj)
        if not target.name:
            return
        ref = ObjectRef(target.namespace, target.name)
        if (target.group, target.kind) == ("apps", "Deployment"):
            self._deployments[ref] = obj
        elif (target.group, target.kind) == ("", "PersistentVolumeClaim"):
            self._claims[ref] = obj
        elif GROUPS.get(target.group) == target.kind:
            self._dependencies[(target.kind, ref)] = depends_on(obj, target.namespace)

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        return self._deployments.get(ObjectRef(namespace, name))

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        # As for dependencies: the namespace may come from a kustomization.yaml, not the file.
        found = self._claims.get(ObjectRef(namespace, name))
        return found if found is not None else self._claims.get(ObjectRef("", name))

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        found = self._dependencies.get((kind, ref))
        if found is None and ref.namespace:
            # In a repo the namespace often comes from a kustomization.yaml (`namespace:`), not
            # from the object's own file: an object of that name with no namespace may be it.
            found = self._dependencies.get((kind, ObjectRef("", ref.name)))
        return found
