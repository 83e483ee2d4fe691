"""Which Flux Kustomizations may be built in one kustomize process, and how to split its output.

A batch is one generated kustomization whose `resources` are the members' `spec.path`
directories, each with its kustomization.yaml rewritten in place as Flux rewrites it (render.py)
plus `transformers: [<tag>]`, an AnnotationsTransformer limited to `metadata/annotations` that
marks every object of the member. kustomize then builds each member as a base of the batch; the
member's own levels (resources, generators, components, patches, namespace, its transformers)
run exactly as alone, because a base does not see its siblings. What the batch root does over
all members at once, and a member alone does over its own objects only, is the root's work:

- merging the members' outputs: the same object ID in two members is an error (split the batch);
- transformer configuration merged from every level (`configurations`, `crds`), `vars`,
  `openapi`, `sortOptions`, the root's `buildMetadata` (other than Flux's origin annotations),
  helm, generator/transformer/validator plugins, name prefixes and suffixes (they steer
  name-reference matching), name changes by patches, `local-config` objects (dropped after
  name references are fixed), remote bases, the tag itself, symlinks (origin paths are joined
  lexically; checked by render.py for the whole repo): a member whose tree uses any of them is
  built alone;
- name references (`FixBackReferences`): a reference in one member can be set to an object of
  another member with the same name, kind and a compatible namespace. The write puts that
  object's name into the referring member, so `cross_references` flags any member holding the
  name of another member's possible referral target; flagged members are built alone.

`plan` also keeps apart members that may produce the same objects (the same files reached with
the same target namespace), members whose rewritten kustomization another member reads, and
members of different clusters (their own variants of an app share no file but have the same IDs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .documents import load_yaml

TAG_KEY = "fluxwarden.io/render-member"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# kustomization fields whose effect reaches beyond the member's own objects once it is a base of
# a batch (merged into the root's configuration, applied at the root, or outside the local tree)
_ALONE_FIELDS = frozenset(
    {
        "vars",
        "configurations",
        "crds",
        "openapi",
        "sortOptions",
        "helmCharts",
        "helmChartInflationGenerator",
        "helmGlobals",
        "generators",
        "transformers",
        "validators",
        "namePrefix",
        "nameSuffix",
    }
)
_ALONE_TEXT = ("allowNameChange", "/metadata/name", "local-config", TAG_KEY)
_REMOTE = ("://", "github.com/", "gitlab.com/", "bitbucket.org/", "git@", "?ref=", "?version=")

# kinds kustomize's built-in name-reference configuration can point a reference at
# (api/internal/konfig/builtinpluginconsts/namereference.go); other kinds are never referral
# targets once `configurations` and `crds` keep a member alone
REFERRAL_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Service",
        "ServiceAccount",
        "Deployment",
        "ReplicationController",
        "ReplicaSet",
        "StatefulSet",
        "Role",
        "ClusterRole",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "ValidatingAdmissionPolicy",
    }
)


@dataclass(frozen=True)
class Footprint:
    """What one member's build reads: its `spec.path`, the directories and files below it that
    kustomize loads, and the namespace Flux sets (None: the objects keep their own)."""

    directory: Path
    directories: frozenset[Path]
    files: frozenset[Path]
    namespace: str | None
    # the directories whose kustomization file it reads, and its own directory as text (plan
    # compares every pair of a level's members: thousands of comparisons)
    kustomization_dirs: frozenset[Path] = field(init=False, repr=False, compare=False)
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        read = frozenset(f.parent for f in self.files if f.name in KUSTOMIZATION_FILES)
        object.__setattr__(self, "kustomization_dirs", self.directories | read)
        object.__setattr__(self, "prefix", str(self.directory) + "/")


def footprint(directory: Path, kustomization: dict[str, Any], reader: Reader) -> Footprint | None:
    """The footprint of a member whose rewritten root kustomization is `kustomization` (in
    `directory` of the original repo, which holds no symlinks), or None when it must be built
    alone."""
    if kustomization.get("buildMetadata") != ["originAnnotations"]:
        return None  # the root's buildMetadata applies to every level below it
    directories: set[Path] = set()
    files: set[Path] = set()
    pending: list[tuple[Path, dict[str, Any]]] = [(directory, kustomization)]
    while pending:
        current, content = pending.pop()
        if current in directories:
            continue
        directories.add(current)
        if not _batchable(current, content, reader):
            return None
        for entry in _entries(content):
            if not isinstance(entry, str) or any(mark in entry for mark in _REMOTE):
                return None
            path, kind = reader.entry(current / entry)
            if kind == "file":
                text = reader.text(path)
                if text is None or any(mark in text for mark in _ALONE_TEXT):
                    return None
                files.add(path)
            elif kind == "directory":
                loaded = reader.kustomization(path)
                if loaded is None:
                    return None
                pending.append((path, loaded))
            else:
                return None
    namespace = kustomization.get("namespace")
    return Footprint(
        directory,
        frozenset(directories),
        frozenset(files),
        namespace if isinstance(namespace, str) and namespace else None,
    )


def _entries(content: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for name in ("resources", "components", "bases"):
        value = content.get(name) or []
        if not isinstance(value, list):
            return [None]
        found.extend(value)
    return found


class Reader:
    """The repo files footprints read, each read (and each kustomization parsed) once across
    the members of a rendering. Nested kustomizations are only read, never changed. Nothing
    outside `root` (resolved) is read: such a member is built alone, where it is refused."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._texts: dict[Path, str | None] = {}
        self._kustomizations: dict[Path, dict[str, Any] | None] = {}
        self._entries: dict[Path, tuple[Path, str | None]] = {}

    def entry(self, path: Path) -> tuple[Path, str | None]:
        """`path` resolved, and whether it is a "file", a "directory" or neither (None); each
        asked once (the members of a level share components and bases)."""
        if path not in self._entries:
            resolved = path.resolve()
            kind = "file" if resolved.is_file() else "directory" if resolved.is_dir() else None
            self._entries[path] = (resolved, kind)
        return self._entries[path]

    def _outside(self, path: Path) -> bool:
        return self.root is not None and not path.is_relative_to(self.root)

    def text(self, path: Path) -> str | None:
        if self._outside(path):
            return None
        if path not in self._texts:
            try:
                self._texts[path] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self._texts[path] = None
        return self._texts[path]

    def kustomization(self, directory: Path) -> dict[str, Any] | None:
        """The kustomization of a nested directory, None when it cannot take part in a batch."""
        if self._outside(directory):
            return None
        if directory not in self._kustomizations:
            self._kustomizations[directory] = self._parse(directory)
        return self._kustomizations[directory]

    def _parse(self, directory: Path) -> dict[str, Any] | None:
        files = [directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()]
        if len(files) != 1:
            return None
        text = self.text(files[0])
        if text is None or any(mark in text for mark in _ALONE_TEXT):
            return None
        try:
            content = load_yaml(text)
        except yaml.YAMLError:
            return None
        return content if isinstance(content, dict) else None


def _batchable(directory: Path, content: dict[str, Any], reader: Reader) -> bool:
    """No field of this kustomization reaches beyond the member's own objects."""
    if any(field in content for field in _ALONE_FIELDS):
        return False
    patches: list[Any] = []
    for name in ("patches", "patchesJson6902", "patchesStrategicMerge"):
        value = content.get(name) or []
        patches.extend(value if isinstance(value, list) else [value])
    if any(mark in text for text in _texts_in(patches) for mark in _ALONE_TEXT):
        return False
    for patch in patches:
        path = patch.get("path") if isinstance(patch, dict) else patch
        if isinstance(path, str) and "\n" not in path:
            file = (directory / path).resolve()
            if file.is_file():
                text = reader.text(file)
                if text is None or any(mark in text for mark in _ALONE_TEXT):
                    return False
    return True


def _inside(inner: Footprint, outer: Footprint) -> bool:
    return inner.directory == outer.directory or inner.prefix.startswith(outer.prefix)


def _reads_kustomization_of(a: Footprint, b: Footprint) -> bool:
    return b.directory in a.kustomization_dirs


def _conflict(a: Footprint, b: Footprint) -> bool:
    if _reads_kustomization_of(a, b) or _reads_kustomization_of(b, a):
        return True  # one reads the other's rewritten kustomization.yaml
    if _inside(a, b) or _inside(b, a):
        return True  # a generated kustomization.yaml changes what the other's generator finds
    if a.namespace is not None and b.namespace is not None and a.namespace != b.namespace:
        return False
    return not a.files.isdisjoint(b.files) or not (a.directories - {a.directory}).isdisjoint(
        b.directories
    )


def plan(
    footprints: Sequence[Footprint | None], workers: int, groups: Sequence[int] | None = None
) -> list[list[int]]:
    """Batches of member indices (in order), at least `workers` of them when there are enough
    members; a member without footprint is a batch of its own, and members of different
    `groups` are in different batches. Members are spread over the compatible batches,
    smallest first, so that the batches run in about the same time."""
    batches: list[list[int]] = []
    alone: list[list[int]] = []
    for index, mine in enumerate(footprints):
        if mine is None:
            alone.append([index])
            continue
        fitting = [
            batch
            for batch in batches
            if not any(_conflict(mine, footprints[other]) for other in batch)  # type: ignore[arg-type]
            and (groups is None or groups[batch[0]] == groups[index])
        ]
        if fitting and len(batches) >= workers:
            min(fitting, key=len).append(index)
        else:
            batches.append([index])
    return sorted(batches + alone)


def tag_transformer(member: int) -> str:
    """The inline transformer that marks a member's objects (only their annotations)."""
    return yaml.safe_dump(
        {
            "apiVersion": "builtin",
            "kind": "AnnotationsTransformer",
            "metadata": {"name": "fluxwarden-render-member"},
            "annotations": {TAG_KEY: str(member)},
            "fieldSpecs": [{"path": "metadata/annotations", "create": True}],
        },
        sort_keys=False,
    )


def split(objects: Iterable[Any], members: int) -> list[list[dict[str, Any]]] | None:
    """The batch output per member, tag removed (None: an object without a valid tag)."""
    groups: list[list[dict[str, Any]]] = [[] for _ in range(members)]
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        meta = obj.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        tag = annotations.pop(TAG_KEY, None) if isinstance(annotations, dict) else None
        if not isinstance(tag, str) or not tag.isdigit() or int(tag) >= members:
            return None
        groups[int(tag)].append(obj)
    return groups


def _texts_in(value: Any) -> Iterator[str]:
    """Every string of a YAML value, mapping keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts_in(item)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _namespace(obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return namespace if isinstance(namespace, str) and namespace else None


def cross_references(groups: Sequence[Sequence[dict[str, Any]]]) -> set[int]:
    """Members that hold, anywhere in an object, the name of a possible referral target of
    another member in a namespace the reference could reach: kustomize may have written it."""
    targets: dict[str, list[tuple[int, str | None]]] = {}
    for member, objects in enumerate(groups):
        for obj in objects:
            meta = obj.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            if obj.get("kind") in REFERRAL_KINDS and isinstance(name, str):
                targets.setdefault(name, []).append((member, _namespace(obj)))
    flagged: set[int] = set()
    for member, objects in enumerate(groups):
        for obj in objects:
            here = _namespace(obj)
            anywhere = here is None or obj.get("kind") == "RoleBinding"
            for text in _strings(obj):
                for other, there in targets.get(text, ()):
                    if other != member and (anywhere or there is None or there == here):
                        flagged.add(member)
    return flagged
