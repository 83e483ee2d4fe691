"""Which files a Flux Kustomization's `sourceRef` gives it: this repo, a copy of it, or nothing.

- The entry point's source is this repo: the sources the cluster's own Kustomizations (or its
  FluxInstance `spec.sync`) name, any source named `flux-system` (what bootstrap and the Flux
  Operator create), and any source with the same URL as one of those.
- An `ExternalArtifact` that an `ArtifactGenerator` (source-watcher,
  `source.extensions.fluxcd.io`) makes from this repo is the generator's copy of it. When every
  copy rule of the artifact copies a directory (`@alias/<dir>/**`) to a directory of the artifact
  that keeps the repo's layout below a common prefix (`apps/base/**` -> `base/`,
  `apps/staging/**` -> `staging/`: the prefix `apps`), the artifact is that directory of the
  repo, so `spec.path` is read below it; another layout is said, not guessed.
- Any other source (another Git repository, an OCI artifact, a bucket) is not audited, with a
  notice naming it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

GENERATOR_GROUP = "source.extensions.fluxcd.io"
REPO_SOURCE_NAME = "flux-system"
_GLOB_TAIL = "/**"


@dataclass(frozen=True)
class Resolved:
    """A Kustomization to build from this repo (`kustomization`, its `spec.path` rewritten when
    its source is an artifact of a repo directory), or a notice why it is not built."""

    kustomization: dict[str, Any] | None
    notice: str | None = None
    source: tuple[str, str, str] | None = None  # kind, namespace, name: the source not audited


@dataclass(frozen=True)
class NotBuilt:
    """A Flux Kustomization fluxwarden does not build (as the walk met it: a parent's rendering
    substituted), where it is written, why, and its source when the source is not this repo."""

    kustomization: dict[str, Any]
    where: str
    why: str
    source: tuple[str, str, str] | None = None


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _ref_key(ref: dict[str, Any], namespace: str) -> tuple[str, str, str]:
    return (
        str(ref.get("kind") or ""),
        str(ref.get("namespace") or namespace),
        str(ref.get("name")),
    )


@dataclass
class SourceMap:
    """The sources known so far (written in the repo or rendered) and which are this repo."""

    repo: set[tuple[str, str, str]] = field(default_factory=set)
    sources: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    generators: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, objects: Iterable[dict[str, Any]], entries: Iterable[dict[str, Any]]) -> SourceMap:
        """Sources from `objects`. This repo is the `flux-system` source the Kustomizations in
        `entries` name (bootstrap's and the Flux Operator's name for it); when none does, every
        source they name is taken for this repo, as before sources were told apart."""
        found = cls()
        for obj in objects:
            found.learn(obj)
        named: set[tuple[str, str, str]] = set()
        for entry in entries:
            ref = _spec(entry).get("sourceRef")
            if isinstance(ref, dict) and ref.get("kind") != "ExternalArtifact":
                named.add(_ref_key(ref, str(_meta(entry).get("namespace") or "")))
        bootstrap = {key for key in named if key[2] == REPO_SOURCE_NAME}
        found.repo = bootstrap or named
        return found

    def learn(self, obj: dict[str, Any]) -> None:
        group = str(obj.get("apiVersion", "")).split("/")[0]
        if group == GENERATOR_GROUP and obj.get("kind") == "ArtifactGenerator":
            self.generators.append(obj)
        elif group == "source.toolkit.fluxcd.io":
            meta = _meta(obj)
            key = (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
            self.sources[key] = obj

    def _is_repo(self, key: tuple[str, str, str]) -> bool:
        if key in self.repo or key[2] == REPO_SOURCE_NAME:
            return True
        url = _spec(self.sources.get(key) or {}).get("url")
        repo_urls = {
            _spec(self.sources.get(k) or {}).get("url")
            for k in self.sources
            if k in self.repo or k[2] == REPO_SOURCE_NAME
        }
        return url is not None and url in repo_urls

    def resolve(self, kustomization: dict[str, Any]) -> Resolved:
        ref = _spec(kustomization).get("sourceRef")
        if not isinstance(ref, dict):
            return Resolved(kustomization)
        key = _ref_key(ref, str(_meta(kustomization).get("namespace") or ""))
        if key[0] == "ExternalArtifact":
            return self._artifact(kustomization, key)
        if self._is_repo(key):
            return Resolved(kustomization)
        url = _spec(self.sources.get(key) or {}).get("url") or "(source not in the repo)"
        return Resolved(None, f"not audited: {key[0]}/{key[1]}/{key[2]} {url}", key)

    def _artifact(self, kustomization: dict[str, Any], key: tuple[str, str, str]) -> Resolved:
        name = f"ExternalArtifact/{key[1]}/{key[2]}"
        for generator in self.generators:
            if str(_meta(generator).get("namespace") or "") != key[1]:
                continue
            for artifact in _spec(generator).get("artifacts") or []:
                if isinstance(artifact, dict) and artifact.get("name") == key[2]:
                    return self._from_generator(kustomization, generator, artifact, key)
        return Resolved(
            None, f"not audited: {name} (no ArtifactGenerator in the repo makes it)", key
        )

    def _from_generator(
        self,
        kustomization: dict[str, Any],
        generator: dict[str, Any],
        artifact: dict[str, Any],
        key: tuple[str, str, str],
    ) -> Resolved:
        name = f"{key[0]}/{key[1]}/{key[2]}"
        namespace = str(_meta(generator).get("namespace") or "")
        aliases = {
            str(s.get("alias")): _ref_key(s, namespace)
            for s in _spec(generator).get("sources") or []
            if isinstance(s, dict)
        }
        prefix = _common_prefix(artifact.get("copy"), aliases, self._is_repo)
        if prefix is None:
            return Resolved(
                None,
                f"not audited: {name}: its copy rules do not keep a directory of this repo "
                "as it is",
                key,
            )
        rewritten = copy.deepcopy(kustomization)
        parts = PurePosixPath(str(_spec(kustomization).get("path") or ".")).parts
        inside = [part for part in parts if part not in (".", "/")]
        rewritten["spec"]["path"] = str(PurePosixPath(prefix or ".", *inside))
        return Resolved(rewritten)


def _common_prefix(
    rules: Any, aliases: dict[str, tuple[str, str, str]], is_repo: Any
) -> str | None:
    """The repo directory an artifact's copy rules mirror, or None when they do not."""
    prefixes: set[str] = set()
    for rule in rules if isinstance(rules, list) else []:
        if not isinstance(rule, dict):
            return None
        source, target = str(rule.get("from") or ""), str(rule.get("to") or "")
        alias, _, source_path = source.partition("/")
        if not alias.startswith("@") or alias[1:] not in aliases or not is_repo(aliases[alias[1:]]):
            return None
        if not source_path.endswith(_GLOB_TAIL) or not target.startswith("@artifact/"):
            return None
        source_dir = source_path.removesuffix(_GLOB_TAIL).strip("/")
        target_dir = target.removeprefix("@artifact/").strip("/")
        if target_dir and not (source_dir == target_dir or source_dir.endswith("/" + target_dir)):
            return None
        prefixes.add(source_dir.removesuffix(target_dir).strip("/") if target_dir else source_dir)
    return prefixes.pop() if len(prefixes) == 1 else None
