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
from .flux_installs import flux_install, source_index
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
    Kustomization or a FluxInstance, with its documents. When no `clusters/` directory has
    two, one unnamed cluster: from the entry points in Git when there are some (see
    `_entry_cluster`), else none (one cluster is rendered from the whole repo, as before)."""
    resolved = root.resolve()
    for base in _cluster_bases(resolved, documents):
        found = _clusters_in(resolved, base, documents)
        if len(found) >= 2:
            return found
    return _entry_cluster(resolved, documents)


def _entry_cluster(root: Path, documents: Sequence[Document]) -> list[Cluster]:
    """The one cluster of a repo whose entry point is in Git (`_is_entry_point`: a Flux
    Kustomization that applies its own file, as bootstrap's `flux-system` does, or a Flux install
    with a sync: a FluxInstance's `spec.sync`, a `flux-instance` chart's `instance.sync`, also
    from a values file the chart release reads through a configMapGenerator). Flux applies what
    those reach and nothing else, so no other Flux Kustomization starts a render (an `.archive/`
    of old ones is not applied). Unnamed, as a repo of one cluster always was; empty when no
    entry point is in Git."""
    sources = source_index(
        [d.obj for d in documents if d.obj is not None] + _generated_configmaps(documents)
    )
    entries = {id(d) for d in documents if d.obj is not None and _is_entry_point(d, root, sources)}
    if not entries:
        return []
    kept = tuple(
        d
        for d in documents
        if id(d) in entries or d.obj is None or not is_flux_kustomization(d.obj)
    )
    return [Cluster("", _with_generated_syncs(kept, documents, sources))]


def _with_generated_syncs(
    kept: tuple[Document, ...],
    documents: Sequence[Document],
    sources: dict[tuple[str, str, str], Any],
) -> tuple[Document, ...]:
    """`kept` plus the sync Kustomizations of chart releases whose sync is only in a generated
    values ConfigMap (`with_sync_entries` sees the documents alone)."""
    plain = source_index([d.obj for d in documents if d.obj is not None])
    added = [
        dataclasses.replace(d, obj=synced, text="")
        for d in documents
        if d.obj is not None and not is_flux_kustomization(d.obj) and _sync_of(d, plain) is None
        for synced in [_sync_of(d, sources)]
        if synced is not None
    ]
    return (*kept, *added)


def _is_entry_point(
    document: Document, root: Path, sources: dict[tuple[str, str, str], Any]
) -> bool:
    """Whether Flux starts applying this repo at `document`: a Flux Kustomization that applies
    its own file (bootstrap's `flux-system` sync, a `cluster` Kustomization the bootstrap
    applies once and which then manages itself), or a Flux install with a sync."""
    obj = document.obj or {}
    if not is_flux_kustomization(obj):
        install = flux_install(obj, sources)
        synced = sync_kustomization(install.instance) if install is not None else None
        return synced is not None
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    ref = (spec or {}).get("sourceRef")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    bootstrap = {"kind": "GitRepository", "name": "flux-system"}
    if (meta or {}).get("name") == "flux-system" and isinstance(ref, dict):
        return all(ref.get(k) == v for k, v in bootstrap.items()) or _applies_itself(document, root)
    return _applies_itself(document, root)


def _applies_itself(document: Document, root: Path) -> bool:
    """Whether the Kustomization's `spec.path` (a directory below the repo root: the root
    itself is also what a tenant's sync of another repo says) holds its own file."""
    spec = (document.obj or {}).get("spec")
    path = str((spec if isinstance(spec, dict) else {}).get("path") or "")
    applied = (root / path.lstrip("/")).resolve()
    return applied != root and Path(document.source).resolve().is_relative_to(applied)


def _generated_configmaps(documents: Sequence[Document]) -> list[dict[str, Any]]:
    """The ConfigMaps the repo's kustomization.yaml files generate from its own files (a chart
    release's values file), as far as they say: in the generator's (or the kustomization's)
    namespace, each file's text under its key."""
    by_file = {Path(d.source).resolve(): d for d in documents if d.index == 0}
    made: list[dict[str, Any]] = []
    for document in documents:
        obj = document.obj or {}
        if not str(obj.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
            continue
        directory = Path(document.source).resolve().parent
        for generator in obj.get("configMapGenerator") or []:
            if not isinstance(generator, dict) or not generator.get("name"):
                continue
            data = {}
            for entry in generator.get("files") or []:
                key, _, path = str(entry).rpartition("=")
                file = by_file.get((directory / path).resolve())
                if file is not None and file.obj is not None:
                    data[key or Path(path).name] = file.text
            namespace = generator.get("namespace") or obj.get("namespace") or ""
            metadata = {"name": str(generator["name"]), "namespace": str(namespace)}
            made.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
            )
    return made


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
        Cluster(directory.relative_to(root).as_posix(), _with_bootstrap_sync(root, directory, docs))
        for directory, docs in sorted(by_directory.items())
        if any(_is_entry(d) for d in docs)
    ]


def _with_bootstrap_sync(
    root: Path, directory: Path, documents: list[Document]
) -> tuple[Document, ...]:
    """A cluster's documents plus, when none of its Flux Kustomizations (written, or made by a
    Flux install's sync) applies its directory, the sync `flux bootstrap` makes for it: the
    directory is applied by a `flux-system` Kustomization kept outside Git (its gotk-sync.yaml a
    placeholder, or Terraform's), built as Flux builds it (its kustomization.yaml patches the
    controllers)."""
    sources = source_index([d.obj for d in documents if d.obj is not None])
    syncs = [d.obj for d in documents if d.obj is not None and is_flux_kustomization(d.obj)]
    syncs += [s for d in documents for s in [_sync_of(d, sources)] if s is not None]
    if any(directory.is_relative_to(_applied(root, s)) for s in syncs):
        return tuple(documents)
    shallowest = min(documents, key=lambda d: len(Path(d.source).parts))
    path = "./" + directory.relative_to(root).as_posix()
    sync = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {
            "interval": "10m0s",
            "path": path,
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        },
    }
    return (*documents, dataclasses.replace(shallowest, obj=sync, text=""))


def _applied(root: Path, kustomization: dict[str, Any]) -> Path:
    spec = kustomization.get("spec") if isinstance(kustomization.get("spec"), dict) else {}
    return (root / str((spec or {}).get("path") or "").lstrip("/")).resolve()


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


def _sync_of(document: Document, sources: dict[tuple[str, str, str], Any]) -> dict[str, Any] | None:
    """The Kustomization the Flux install written in `document` syncs from (a FluxInstance's
    `spec.sync`, or the `instance.sync` of a `flux-instance` chart's values)."""
    if document.obj is None:
        return None
    install = flux_install(document.obj, sources)
    return sync_kustomization(install.instance) if install is not None else None


def with_sync_entries(documents: Sequence[Document]) -> tuple[Document, ...]:
    """`documents` plus, for each Flux install with a sync (a FluxInstance's `spec.sync`, a
    `flux-instance` chart's `instance.sync`), the Kustomization it makes (an entry point,
    written at the install's place)."""
    sources = source_index([d.obj for d in documents if d.obj is not None])
    added = [
        dataclasses.replace(document, obj=synced, text="")
        for document in documents
        for synced in [_sync_of(document, sources)]
        if synced is not None
    ]
    return (*documents, *added)
