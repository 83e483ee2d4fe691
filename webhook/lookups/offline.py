"""Lookups answered from the objects being checked, for `fluxwarden audit`/`fix` over files."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..engine import JsonObject, ObjectRef, target_of
from ..engine.model import Applier, DependencyKind, applier_labels, applier_of
from ..engine.policies.kustomization_dependencies import GROUPS, depends_on


class OfflineLookups:
    """Builds the same context a cluster would give from a set of manifests."""

    def __init__(
        self,
        objects: Iterable[JsonObject],
        *,
        applied_by: Iterable[tuple[JsonObject, str]] = (),
    ) -> None:
        """`applied_by`: (object, namespace/name of the Flux Kustomization whose build renders
        it), as the inventory knows them."""
        self._deployments: dict[ObjectRef, JsonObject] = {}
        self._dependencies: dict[tuple[str, ObjectRef], list[ObjectRef]] = {}
        self._claims: dict[ObjectRef, JsonObject] = {}
        # (kind, depended-on object) -> the objects whose dependsOn names it
        self._dependents: dict[tuple[str, ObjectRef], list[ObjectRef]] = {}
        self._instances: dict[str, JsonObject] = {}  # namespace -> FluxInstance
        self._namespaces: dict[str, dict[str, str]] = {}  # Namespace name -> labels
        self._kustomizations: dict[ObjectRef, JsonObject] = {}
        self._applied_by: dict[tuple[str, str, str, str], ObjectRef] = {}
        for obj in objects:
            self.add(obj)
        for obj, key in applied_by:
            namespace, _, name = key.partition("/")
            self._applied_by[_identity(obj)] = ObjectRef(namespace, name)

    def add(self, obj: JsonObject) -> None:
        target = target_of(obj)
        if not target.name:
            return
        if (target.group, target.kind) == ("", "Namespace"):
            labels = (obj.get("metadata") or {}).get("labels")
            self._namespaces[target.name] = {
                str(k): str(v) for k, v in (labels if isinstance(labels, dict) else {}).items()
            }
            return
        ref = ObjectRef(target.namespace, target.name)
        if (target.group, target.kind) == ("apps", "Deployment"):
            self._deployments[ref] = obj
        elif (target.group, target.kind) == ("fluxcd.controlplane.io", "FluxInstance"):
            self._instances[target.namespace] = obj
        elif (target.group, target.kind) == ("", "PersistentVolumeClaim"):
            self._claims[ref] = obj
        elif GROUPS.get(target.group) == target.kind:
            if target.kind == "Kustomization":
                self._kustomizations[ref] = obj
            edges = self._dependencies[(target.kind, ref)] = depends_on(obj, target.namespace)
            for dependency in edges:
                self._dependents.setdefault((target.kind, dependency), []).append(ref)

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

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        """Every audited object of `kind` whose dependsOn names `ref` (an audit holds all)."""
        found = list(self._dependents.get((kind, ref), []))
        if ref.namespace:
            # As above: a dependsOn without namespace, written in a file without one either.
            found += self._dependents.get((kind, ObjectRef("", ref.name)), [])
        return found

    def flux_instance(self, namespace: str) -> JsonObject | None:
        found = self._instances.get(namespace)
        return found if found is not None else self._instances.get("")

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a Namespace the audited files define; None: not among them."""
        return self._namespaces.get(name)

    def applier(self, obj: JsonObject) -> Applier | None:
        """The Flux Kustomization whose build renders `obj` (the inventory's), else the one its
        kustomize-controller labels name (an object exported from a cluster)."""
        ref = self._applied_by.get(_identity(obj)) or applier_labels(obj)
        if ref is None:
            return None
        found = applier_of(self._kustomizations.get(ref))
        if found is None and ref.namespace:
            # As for dependencies: its file may leave the namespace to a kustomization.yaml.
            found = applier_of(self._kustomizations.get(ObjectRef("", ref.name)))
            return dataclasses.replace(found, namespace=ref.namespace) if found else None
        return found


def _identity(obj: JsonObject) -> tuple[str, str, str, str]:
    target = target_of(obj)
    return (target.group, target.kind, target.namespace, target.name)
