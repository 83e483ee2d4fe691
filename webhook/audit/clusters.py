"""The clusters of a fleet repo: each is rendered on its own, from its own entry point.

The standard Flux layout gives every cluster a directory under `clusters/` (`clusters/staging`,
`clusters/production`) holding its entry point: the `flux-system` sync `flux bootstrap` writes,
a FluxInstance with `spec.sync`, or the Flux Kustomizations a cluster starts from. Clusters share
Kustomization names (`flux-system`, `apps`, `infra-controllers`) and differ in variables,
patches and sources, so one render of the whole repo would keep only the first cluster's version
of each. Like `flux build` (`fluxcd/flux2` `internal/build`), a cluster is a walk from its entry
point over the repo's files; what no cluster reaches is not applied by Flux.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .documents import Document
from .fluxinstance import is_flux_instance
from .render import is_flux_kustomization

CLUSTERS_DIRECTORY = "clusters"


@dataclass(frozen=True)
class Cluster:
    """One cluster: its name (its directory, relative to the repo root, `/`-separated) and the
    documents of its entry point (everything under that directory)."""

    name: str
    documents: tuple[Document, ...]


def _is_entry(document: Document) -> bool:
    obj = document.obj
    return obj is not None and (is_flux_kustomization(obj) or is_flux_instance(obj))


def clusters_of(root: Path, documents: Sequence[Document]) -> list[Cluster]:
    """Each directory right under a `clusters/` directory of the repo (`clusters/`,
    `kubernetes/clusters/`, ... the shallowest that has two) whose files hold a Flux
    Kustomization or a FluxInstance, with its documents; empty when no `clusters/` directory
    has two (one cluster is rendered from the whole repo, as before)."""
    resolved = root.resolve()
    for base in _cluster_bases(resolved, documents):
        found = _clusters_in(resolved, base, documents)
        if len(found) >= 2:
            return found
    return []


def _cluster_bases(root: Path, documents: Sequence[Document]) -> list[Path]:
    """The `clusters/` directories holding manifests, shallowest first."""
    bases: set[Path] = set()
    for document in documents:
        try:
            parts = Path(document.source).resolve().relative_to(root).parts
        except ValueError:
            continue
        if CLUSTERS_DIRECTORY in parts[:-2]:
            bases.add(root.joinpath(*parts[: parts.index(CLUSTERS_DIRECTORY) + 1]))
    return sorted(bases, key=lambda b: (len(b.parts), str(b)))


def _clusters_in(root: Path, base: Path, documents: Sequence[Document]) -> list[Cluster]:
    by_directory: dict[Path, list[Document]] = {}
    for document in documents:
        try:
            relative = Path(document.source).resolve().relative_to(base)
        except ValueError:
            continue
        if len(relative.parts) >= 2:  # a file right in clusters/ is no cluster's own
            by_directory.setdefault(base / relative.parts[0], []).append(document)
    return [
        Cluster(directory.relative_to(root).as_posix(), tuple(docs))
        for directory, docs in sorted(by_directory.items())
        if any(_is_entry(d) for d in docs)
    ]


def sync_kustomization(instance: dict[str, Any]) -> dict[str, Any] | None:
    """The Flux Kustomization a FluxInstance's `spec.sync` makes (flux-operator
    internal/builder/templates.go syncTmpl: named `spec.sync.name`, else the namespace)."""
    spec = instance.get("spec") if isinstance(instance.get("spec"), dict) else {}
    sync = (spec or {}).get("sync")
    if not isinstance(sync, dict) or not sync.get("path"):
        return None
    namespace = str((instance.get("metadata") or {}).get("namespace") or "flux-system")
    name = str(sync.get("name") or namespace)
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "10m0s",
            "path": str(sync["path"]),
            "prune": True,
            "sourceRef": {"kind": str(sync.get("kind") or "GitRepository"), "name": name},
        },
    }


def with_sync_entries(documents: Sequence[Document]) -> tuple[Document, ...]:
    """`documents` plus, for each FluxInstance with `spec.sync`, the Kustomization it makes
    (an entry point, written at the FluxInstance's place)."""
    added = [
        dataclasses.replace(document, obj=synced, text="")
        for document in documents
        if document.obj is not None and is_flux_instance(document.obj)
        for synced in [sync_kustomization(document.obj)]
        if synced is not None
    ]
    return (*documents, *added)
