"""`--source KIND/NAMESPACE/NAME=PATH`: a Flux source that is not this repo, read from a local
checkout the user gives.

A Flux Kustomization whose `sourceRef` is a source not in this repo (another Git repository, an
OCI artifact, a bucket, an ExternalArtifact) is not audited. When the user maps that source to a
directory, every Kustomization that names it is rendered from there instead: its `spec.path`
relative to PATH, with the patches, variables and namespace its parent gave it, by the same
renderer and under the same confinement as the repo (kustomize loads only below PATH, symlinks
out of it are not followed, remote bases only with --allow-remote-bases). Nothing is fetched.
Kustomizations rendered from PATH that name another mapped source are rendered in turn (a
bounded number of rounds: one per mapping).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .documents import Document
from .flux_sources import NotBuilt
from .render import Rendering, RenderProblem, _spec_dir, render_clusters

SOURCE_KINDS = ("GitRepository", "OCIRepository", "Bucket", "ExternalArtifact")
SourceKey = tuple[str, str, str]  # kind, namespace, name
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class MappedSource:
    """A Flux source and the local directory that holds what it gives (as the user wrote it)."""

    key: SourceKey
    path: str

    @property
    def name(self) -> str:
        return "/".join(self.key)


def parse_mapping(text: str) -> MappedSource:
    """`KIND/NAMESPACE/NAME=PATH` (ValueError saying what is wrong): a source kind Flux
    Kustomizations read, Kubernetes names, and an existing directory."""
    reference, equals, path = text.partition("=")
    parts = reference.split("/")
    if not equals or not path or len(parts) != 3:
        raise ValueError(f"--source {text!r}: expected KIND/NAMESPACE/NAME=PATH")
    kind, namespace, name = parts
    if kind not in SOURCE_KINDS:
        raise ValueError(f"--source {text!r}: KIND must be one of {', '.join(SOURCE_KINDS)}")
    for what, value in (("NAMESPACE", namespace), ("NAME", name)):
        if not _DNS_NAME.match(value):
            raise ValueError(f"--source {text!r}: {what} {value!r} is not a Kubernetes name")
    if not Path(path).is_dir():
        raise ValueError(f"--source {text!r}: {path} is not a directory")
    return MappedSource((kind, namespace, name), path)


def parse_mappings(texts: Iterable[str]) -> dict[SourceKey, MappedSource]:
    """Every `--source`, by source; a source mapped twice is an error."""
    mappings: dict[SourceKey, MappedSource] = {}
    for text in texts:
        mapped = parse_mapping(text)
        if mapped.key in mappings:
            raise ValueError(f"--source {mapped.name} is given twice")
        mappings[mapped.key] = mapped
    return mappings


@dataclass
class MappedInputs:
    """The `--source` mappings of one run: which a Kustomization used, and the documents read
    from each mapped directory (its files: the fix plans edits to them too)."""

    mappings: Mapping[SourceKey, MappedSource] = field(default_factory=dict)
    used: set[SourceKey] = field(default_factory=set)
    documents: dict[SourceKey, list[Document]] = field(default_factory=dict)

    def unused(self) -> list[MappedSource]:
        return [m for key, m in self.mappings.items() if key not in self.used]

    def owner(self, path: str) -> MappedSource | None:
        """The mapped source whose directory holds `path` (real paths compared)."""
        real = Path(path).resolve()
        for mapped in self.mappings.values():
            if real.is_relative_to(Path(mapped.path).resolve()):
                return mapped
        return None


@dataclass
class MappedRendering:
    """What one cluster applies from one mapped source."""

    source: MappedSource
    cluster: int  # the index of the cluster's rendering
    rendering: Rendering = field(default_factory=Rendering)


def render_mapped(
    renderings: Sequence[Rendering],
    values: Sequence[Sequence[Document]],
    mappings: Mapping[SourceKey, MappedSource],
    command: Sequence[str],
    *,
    allow_remote: bool,
) -> list[MappedRendering]:
    """The renderings of every Kustomization (of each cluster of `renderings`) whose source is
    mapped, from the mapped directory; `values` are each cluster's ConfigMaps and Secrets
    (postBuild variables). Rounds until no newly rendered Kustomization names a mapped
    source, at most one per mapping."""
    results: list[MappedRendering] = []
    done: set[tuple[int, str]] = set()
    pending = [(index, r.not_built) for index, r in enumerate(renderings)]
    for _ in range(len(mappings)):
        wanted = _wanted(pending, mappings, done)
        if not wanted:
            break
        pending = []
        for key, by_cluster in wanted.items():
            for made in _render_source(mappings[key], by_cluster, values, command, allow_remote):
                results.append(made)
                pending.append((made.cluster, made.rendering.not_built))
    return results


def _wanted(
    pending: Iterable[tuple[int, Mapping[str, NotBuilt]]],
    mappings: Mapping[SourceKey, MappedSource],
    done: set[tuple[int, str]],
) -> dict[SourceKey, dict[int, list[NotBuilt]]]:
    wanted: dict[SourceKey, dict[int, list[NotBuilt]]] = {}
    for index, not_built in pending:
        for key, item in not_built.items():
            if item.source is not None and item.source in mappings and (index, key) not in done:
                done.add((index, key))
                wanted.setdefault(item.source, {}).setdefault(index, []).append(item)
    return wanted


def _render_source(
    mapped: MappedSource,
    by_cluster: dict[int, list[NotBuilt]],
    values: Sequence[Sequence[Document]],
    command: Sequence[str],
    allow_remote: bool,
) -> list[MappedRendering]:
    root = Path(mapped.path).resolve()
    made = {index: MappedRendering(mapped, index) for index in by_cluster}
    entries: dict[int, list[Document]] = {}
    for index, items in by_cluster.items():
        for item in items:
            missing = _missing_path(root, item, mapped)
            if missing is not None:
                made[index].rendering.problems.append(missing)
            else:
                entries.setdefault(index, []).append(_entry(item))
    order = sorted(entries)
    built = render_clusters(
        root, [[*entries[i], *values[i]] for i in order], command, allow_remote=allow_remote
    )
    for index, rendering in zip(order, built, strict=True):
        rendering.problems[:0] = made[index].rendering.problems
        made[index].rendering = rendering
    return [made[index] for index in sorted(made)]


def _missing_path(root: Path, item: NotBuilt, mapped: MappedSource) -> RenderProblem | None:
    """An error when the Kustomization's `spec.path` is not a directory of the mapped
    checkout (Flux would fail: the path is not in the artifact)."""
    directory = _spec_dir(root, item.kustomization)
    if directory.is_dir() and directory.is_relative_to(root):
        return None
    meta = item.kustomization.get("metadata") or {}
    key = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    spec = item.kustomization.get("spec") or {}
    path = spec.get("path") if isinstance(spec, dict) else None
    message = (
        f"Flux Kustomization {key}: spec.path {path or './'!r} is not a directory of "
        f"{mapped.name} (--source {mapped.path})"
    )
    return RenderProblem(item.where, message, True)


def _entry(item: NotBuilt) -> Document:
    """The Kustomization as an entry point of the mapped source's walk (written where its
    parent's rendering put it)."""
    return Document(item.where, 0, 0, "", item.kustomization)
