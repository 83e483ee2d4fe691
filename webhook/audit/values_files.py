"""The values file a `flux-instance` chart release reads its FluxInstance patches from.

The common way to write that release (onedr0p's cluster template and the home-ops repos made
from it) keeps the chart's values in a file next to the HelmRelease, turned into a ConfigMap by
a `configMapGenerator` of the same directory's kustomization.yaml and named in the release's
`spec.valuesFrom`:

    configMapGenerator:
      - name: flux-instance-values
        files: [values.yaml=./helm/values.yaml]

Helm replaces lists, so the release's `instance.kustomize.patches` are the list of the last
values source that has one. A fix of the controllers is written into that file's list when it
is the very list the FluxInstance was built with (so positions in one are positions in the
other); otherwise nothing is written and the caller says where the patches must go.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine import JsonObject
from .documents import Document

PATCHES = "/instance/kustomize/patches"
_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class ValuesFile:
    """A values file's document that holds a release's FluxInstance patch list."""

    path: str
    document: int  # position among the file's documents
    obj: JsonObject


def patches_file(
    release: Document, patches: Any, files: Mapping[str, Sequence[Document]]
) -> ValuesFile | None:
    """The generated values file whose `instance.kustomize.patches` the release's FluxInstance
    got (`patches`, its `spec.kustomize.patches`), or None when it is not one such file."""
    spec = (release.obj or {}).get("spec")
    refs = spec.get("valuesFrom") if isinstance(spec, dict) else None
    if not isinstance(refs, list):
        return None
    for ref in reversed(refs):  # the last source with a patch list is the one Helm keeps
        found = _generated_file(release.source, ref, files)
        if found is None:
            return None  # a source not read here might hold the list: write nothing
        listed = _at(found.obj, PATCHES)
        if listed is not None:
            return found if listed == patches else None
    return None


def _generated_file(
    release_path: str, ref: Any, files: Mapping[str, Sequence[Document]]
) -> ValuesFile | None:
    """The file a `valuesFrom` ConfigMap is generated from by the release's kustomization.yaml."""
    if not isinstance(ref, dict) or ref.get("kind") != "ConfigMap" or ref.get("targetPath"):
        return None
    directory = os.path.dirname(release_path)
    key = str(ref.get("valuesKey") or "values.yaml")
    for generator in _generators(directory, files):
        if generator.get("name") != ref.get("name"):
            continue
        for entry in generator.get("files") or []:
            name, _, relative = str(entry).rpartition("=")
            if (name or os.path.basename(relative)) == key:
                return _document_of(os.path.normpath(os.path.join(directory, relative)), files)
    return None


def _generators(directory: str, files: Mapping[str, Sequence[Document]]) -> list[JsonObject]:
    for name in _KUSTOMIZATION_FILES:
        documents = files.get(os.path.join(directory, name))
        if documents and isinstance(documents[0].obj, dict):
            generators = documents[0].obj.get("configMapGenerator")
            return [g for g in generators or [] if isinstance(g, dict)]
    return []


def _document_of(path: str, files: Mapping[str, Sequence[Document]]) -> ValuesFile | None:
    """The values file's one YAML document (a file of several is not a values file)."""
    documents = [(i, d.obj) for i, d in enumerate(files.get(path, [])) if d.obj is not None]
    if len(documents) != 1 or not isinstance(documents[0][1], dict):
        return None
    position, obj = documents[0]
    return ValuesFile(path, position, obj)


def _at(obj: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
