"""What a kustomize build of an untrusted repo may read: files below the repo root, no network.

Flux builds with kustomize's load restrictions off, on a file system that refuses any path whose
symlinks resolve outside the artifact's root (fluxcd/pkg `kustomize/filesys/fs_secure.go`). The
real kustomize binary cannot be handed such a file system, so the same confinement is checked
before each build, in the repo copy the build runs in (where symlinks out of the repo are not
copied, `outside_links`):

- every path a kustomization (or a generator/transformer/validator config it loads) can make
  kustomize read is resolved, both as kustomize joins it (lexically) and as the kernel does; one
  that exists outside the root is refused, so kustomize never opens it;
- a remote reference (`https://…`, `git::…`, `github.com/org/repo//…`, `user@host:…`,
  `file://…`) is refused unless remote bases are allowed: kustomize would fetch it (an HTTP GET
  or a `git fetch` to a host the repo chooses).

Which keys hold paths is kustomize's own list (kustomization fields and builtin plugin config
fields); any string under them, at any depth, is checked. Multi-line strings are inline content.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .documents import load_yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# kustomization and builtin plugin config keys whose strings kustomize loads as paths or URLs
PATH_KEYS = frozenset(
    {
        "resources",
        "bases",
        "components",
        "crds",
        "configurations",
        "generators",
        "transformers",
        "validators",
        "patchesStrategicMerge",
        "path",
        "paths",
        "files",
        "envs",
        "env",
        "valuesFile",
        "additionalValuesFiles",
        "values",
        "chartHome",
        "configHome",
    }
)
# maps and lists of the user's own words (label and annotation keys may be "path" or "env")
_FREE_FORM_KEYS = frozenset(
    {
        "commonAnnotations",
        "commonLabels",
        "labels",
        "annotations",
        "literals",
        "valuesInline",
        "images",
        "replicas",
        "vars",
    }
)
_NESTED_KEYS = frozenset({"resources", "bases", "components"})
_PLUGIN_KEYS = frozenset({"generators", "transformers", "validators"})

# what kustomize fetches (api/internal/git/repospec.go, api/internal/loader/fileloader.go):
# an optional go-getter `git::`, then a scheme, an SCP-style `user@`, or a GitHub host
_REMOTE = re.compile(
    r"^(?:git::)?(?:(?:ssh|https?|file)://|[a-z][a-z0-9-]*@|github\.com[/:])", re.IGNORECASE
)


def is_remote(reference: str) -> bool:
    """Whether kustomize would fetch `reference` over the network (or by `git` from a URL)."""
    return bool(_REMOTE.match(reference.strip()))


def is_under(path: str | Path, root: str | Path) -> bool:
    text, top = str(path), str(root).rstrip("/")
    return text == top or text.startswith(top + "/")


def outside_links(root: Path) -> list[Path]:
    """Symlinks below `root` (not followed) that resolve outside it, sorted."""
    real_root = os.path.realpath(root)
    found: list[Path] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            if os.path.islink(path) and not is_under(os.path.realpath(path), real_root):
                found.append(Path(path))
    return sorted(found)


@dataclass(frozen=True)
class Refusal:
    """A reference the build must not follow, and the file that holds it."""

    reference: str
    file: Path
    remote: bool

    def describe(self, root: Path) -> str:
        where = self.file.relative_to(root) if self.file.is_relative_to(root) else self.file
        if self.remote:
            return f"{where} uses the remote reference {self.reference!r}"
        return f"{where} references {self.reference!r}, which resolves outside the paths given"


class Confinement:
    """Checks the kustomizations a build would load below `root`."""

    def __init__(self, root: Path, *, allow_remote: bool) -> None:
        self.root = Path(os.path.realpath(root))
        self.allow_remote = allow_remote

    def refusals(
        self, directory: Path, kustomization: dict[str, Any], file: Path | None = None
    ) -> list[Refusal]:
        """What the build of `kustomization` (`directory`'s, in `file`, as rewritten for the
        build) would load from outside the root or from the network."""
        refused: list[Refusal] = []
        seen: set[str] = set()
        pending: list[tuple[Path, Path, Any, bool]] = [
            (directory, file or directory / "kustomization.yaml", kustomization, False)
        ]
        while pending:  # (loader root, file, content, content is a plugin config)
            base, file, content, config = pending.pop()
            for key, reference in _references(content):
                refusal = self._refusal(base, file, reference)
                if refusal is not None:
                    refused.append(refusal)
                    continue
                if "\n" in reference:
                    if key in _PLUGIN_KEYS:  # an inline plugin config
                        pending += [(base, file, c, True) for c in _configs(reference)]
                    continue
                target = os.path.normpath(os.path.join(base, reference))
                if target in seen:
                    continue
                seen.add(target)
                plugin = key in _PLUGIN_KEYS or (config and key in _NESTED_KEYS)
                pending += self._loaded(Path(target), key, plugin=plugin)
        return refused

    def _refusal(self, base: Path, file: Path, reference: str) -> Refusal | None:
        if "\n" in reference:
            return None
        if is_remote(reference):
            return None if self.allow_remote else Refusal(reference, file, True)
        for candidate in _candidates(reference):
            joined = os.path.join(base, candidate)
            for path in {os.path.normpath(joined), joined}:  # as kustomize joins, as the kernel
                if os.path.lexists(path) and not is_under(os.path.realpath(path), self.root):
                    return Refusal(reference, file, False)
        return None

    def _loaded(
        self, target: Path, key: str, *, plugin: bool
    ) -> list[tuple[Path, Path, Any, bool]]:
        """What kustomize loads from `target` that can hold further references: a nested
        kustomization, or plugin configs."""
        if (key in _NESTED_KEYS or plugin) and target.is_dir():
            file = next((target / n for n in KUSTOMIZATION_FILES if (target / n).is_file()), None)
            if file is None or not is_under(os.path.realpath(file), self.root):
                return []
            return [(target, file, c, plugin) for c in _read(file) or []]
        if plugin and target.is_file():
            return [(target.parent, target, c, True) for c in _read(target) or []]
        return []


def _candidates(reference: str) -> list[str]:
    """The paths a reference may name: a generator's `key=path` names its file after `=`."""
    _, equals, after = reference.partition("=")
    return [reference, after] if equals and after else [reference]


def _references(content: Any) -> Iterator[tuple[str, str]]:
    """(key, string) for every string under a path key, at any depth of `content`; a node
    YAML aliases many times is walked once (an alias bomb stays linear)."""
    pending: list[tuple[str, Any]] = [("", content)]
    walked: set[tuple[str, int]] = set()
    while pending:
        key, value = pending.pop()
        if isinstance(value, (dict, list)):
            if (key, id(value)) in walked:
                continue
            walked.add((key, id(value)))
        if isinstance(value, dict):
            pending += [(str(k), v) for k, v in value.items() if k not in _FREE_FORM_KEYS]
        elif isinstance(value, list):
            pending += [(key, v) for v in value]
        elif isinstance(value, str) and key in PATH_KEYS:
            yield key, value


def _configs(text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []


def _read(file: Path) -> list[Any] | None:
    """The YAML documents of a file below the root (already checked), None when unreadable."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if file.name in KUSTOMIZATION_FILES:
        try:
            return [load_yaml(text)]
        except yaml.YAMLError:
            return None
    return _configs(text)
