"""Files under a Flux Kustomization fluxwarden does not audit by design, told apart from files no
cluster applies.

A Kustomization whose source is not this repo (an OCI artifact, another Git repository, a bucket,
an ExternalArtifact no generator here makes) or whose build needs a remote base that is not
fetched is not built, so the repo files its `spec.path` reads are not audited. For a remote base
and for an OCI artifact or bucket (pushed by CI from a directory of the repo, as `_spec_dir`
finds it) those are the files below `spec.path` here; another Git repository's path is in that
repository, so it claims no file of this one (the Kustomization is still listed). They are not files
"applied by no cluster": Flux applies them, fluxwarden cannot say how. Each is listed under its
Kustomization with the reason. A file some other Kustomization (of any cluster) does build is
audited as that one applies it, and is listed under neither.

The files a Kustomization "reads" are found without kustomize: its `spec.path` directory's
kustomization (or, without one, every YAML file below it, as Flux generates it), following local
resources, bases, components, patch and generator files, never outside the repo and never over
the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .confinement import KUSTOMIZATION_FILES, is_remote, is_under
from .documents import load_yaml
from .findings import NotAudited
from .flux_sources import NotBuilt

_LISTS = ("resources", "bases", "components", "crds", "patchesStrategicMerge")
_PATCH_LISTS = ("patches", "patchesJson6902")
_GENERATORS = ("configMapGenerator", "secretGenerator")
# artifacts CI pushes from a directory of the repo (`flux push artifact --path=./deploy`): the
# directory of `spec.path` here is what they hold
_PUSHED_KINDS = ("OCIRepository", "Bucket")
_WALK_LIMIT = 10_000  # directories and files visited per Kustomization: a bound, never reached


@dataclass(frozen=True)
class Claim:
    """A not-built Kustomization of one cluster and the repo files its `spec.path` reads."""

    kustomization: str  # namespace/name
    cluster: str
    where: str  # its file, as the user gave it
    why: str
    files: frozenset[Path]  # real paths


def why_of(key: str, message: str) -> str:
    """The reason alone, without the `<key> not audited: ` a render notice starts with."""
    for prefix in (
        f"{key} not audited: ",
        f"Flux Kustomization {key}: not audited: ",
        "not audited: ",
    ):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def claims(
    not_built: Iterable[NotBuilt],
    *,
    root: Path,
    cluster: str,
    directory_of: Any,
) -> list[Claim]:
    """A claim per not-built Kustomization: `directory_of(ks, where)` is its `spec.path` in this
    repo. A Kustomization whose path is the repo root, or not in the repo (another repo's
    layout), claims no file: nothing tells which of the repo's files its source holds."""
    real_root = Path(os.path.realpath(root))
    found: list[Claim] = []
    for item in not_built:
        if item.source is not None and item.source[0] not in _PUSHED_KINDS:
            # another Git repository (or an ExternalArtifact no generator here makes): its
            # spec.path is in that source, any directory of the same name here is not it
            found.append(
                Claim(_key(item), cluster, item.where, why_of(_key(item), item.why), frozenset())
            )
            continue
        key = _key(item)
        directory = Path(os.path.realpath(directory_of(item.kustomization, item.where)))
        inside = directory != real_root and is_under(directory, real_root) and directory.is_dir()
        files = frozenset(files_read(directory, real_root)) if inside else frozenset()
        found.append(Claim(key, cluster, item.where, why_of(key, item.why), files))
    return found


def _key(item: NotBuilt) -> str:
    meta = item.kustomization.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def files_read(directory: Path, root: Path) -> set[Path]:
    """The local files (real paths below `root`) a kustomize build of `directory` reads."""
    files: set[Path] = set()
    seen: set[Path] = set()
    pending = [directory]
    while pending and len(seen) + len(files) < _WALK_LIMIT:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        kustomization = _kustomization_file(current)
        if kustomization is None:
            generated, nested = _generated(current)
            files.update(generated)
            pending += nested
            continue
        files.add(kustomization)
        for reference in _references(_read(kustomization)):
            target = Path(os.path.realpath(current / reference))
            if is_remote(reference) or not is_under(target, root):
                continue
            if target.is_dir():
                pending.append(target)
            elif target.is_file():
                files.add(target)
    return files


def _kustomization_file(directory: Path) -> Path | None:
    return next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)


def _generated(directory: Path) -> tuple[list[Path], list[Path]]:
    """What Flux's generator lists for a directory without a kustomization: its YAML files,
    recursively, and the subdirectories with their own kustomization (read as that one)."""
    files: list[Path] = []
    nested: list[Path] = []
    for current, dirs, names in os.walk(directory):
        kept: list[Path] = []
        for name in sorted(dirs):
            child = Path(current, name)
            (nested if _kustomization_file(child) is not None else kept).append(child)
        dirs[:] = [d.name for d in kept]
        files += [
            Path(os.path.realpath(os.path.join(current, name)))
            for name in names
            if name.endswith((".yaml", ".yml"))
        ]
    return files, [Path(os.path.realpath(d)) for d in nested]


def _read(file: Path) -> dict[str, Any]:
    try:
        content = load_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _references(content: dict[str, Any]) -> Iterator[str]:
    """The paths a kustomization names: resources, bases, components, patch files, generator
    files (`key=path` names its file after `=`)."""
    for name in _LISTS:
        yield from (r for r in _list(content.get(name)) if isinstance(r, str) and "\n" not in r)
    for name in _PATCH_LISTS:
        for patch in _list(content.get(name)):
            if isinstance(patch, dict) and isinstance(patch.get("path"), str):
                yield patch["path"]
    for name in _GENERATORS:
        for generator in _list(content.get(name)):
            if not isinstance(generator, dict):
                continue
            for entry in [*_list(generator.get("files")), *_list(generator.get("envs"))]:
                if isinstance(entry, str):
                    yield entry.rpartition("=")[2]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def group(claimed: Iterable[Claim], unapplied: dict[Path, str]) -> list[NotAudited]:
    """One entry per (Kustomization, reason), its clusters and the files it claims that no
    cluster applies (`unapplied`: real path -> the file as the user gave it); a claim of no such
    file is still an entry: the Kustomization itself was not audited."""
    entries: dict[tuple[str, str], tuple[str, set[str], set[str]]] = {}
    for claim in claimed:
        _, clusters, files = entries.setdefault(
            (claim.kustomization, claim.why), (claim.where, set(), set())
        )
        if claim.cluster:
            clusters.add(claim.cluster)
        files.update(unapplied[f] for f in claim.files if f in unapplied)
    return [
        NotAudited(key, where, why, tuple(sorted(clusters)), tuple(sorted(files)))
        for (key, why), (where, clusters, files) in sorted(entries.items())
    ]
