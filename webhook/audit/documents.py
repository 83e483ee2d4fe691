"""YAML documents from files, directories and stdin, each with its file and first line.

A stream is split into documents before parsing so one broken document is reported with its
file and line while the rest are still audited.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from .workers import jobs_for, ordered_map

YAML_SUFFIXES = (".yaml", ".yml")
_SEPARATOR = re.compile(r"^---(?:\s.*)?$")
_SKIPPED_DIRS = {".git", "node_modules", ".venv", "__pycache__"}

ALIAS_EXPANSION_LIMIT = 100_000
"""Nodes YAML aliases may add to one document once expanded (beyond the nodes it spells out).
The composed nodes share an aliased value, so checking costs one visit per distinct node; but
the built objects, JSON, copies and the policies walk the expanded tree, and a 400-byte "billion
laughs" document expands to 387 million nodes. Flux's YAML reader (go-yaml) likewise refuses
excessive aliasing; kustomize does not (it expands every alias)."""


class AliasBomb(yaml.YAMLError):
    """A document whose aliases expand beyond ALIAS_EXPANSION_LIMIT nodes, or into themselves."""

    PREFIX = "YAML aliases expand"  # every message starts so: is_alias_bomb() tells them apart


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_alias_expansion(root: yaml.Node | None, limit: int = ALIAS_EXPANSION_LIMIT) -> None:
    """Raise AliasBomb when expanding the aliases under `root` adds more than `limit` nodes, or
    never ends (an alias inside its own anchor). Visits each distinct node once: the sizes of
    aliased subtrees are remembered, never recounted."""
    if root is None:
        return
    expanded: dict[int, int] = {}  # id of a collection node -> nodes in its expansion
    scalars: set[int] = set()
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        if children_counted:
            in_progress.discard(key)
            expanded[key] = 1 + sum(expanded.get(id(c), 1) for c in _children(node))
        elif isinstance(node, yaml.ScalarNode):
            scalars.add(key)
        elif key in in_progress:
            raise AliasBomb(f"{AliasBomb.PREFIX} without end (an alias inside its own anchor)")
        elif key not in expanded:
            in_progress.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    total = expanded.get(id(root), 1)
    if total - len(expanded) - len(scalars) > limit:
        raise AliasBomb(f"{AliasBomb.PREFIX} beyond {limit} nodes")


class ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made as lenient as the YAML readers Kubernetes and Flux use:
    anchors may be redefined (YAML 1.2; later aliases see the newest), tags of other tools
    (`!env_var`, `!vault`) load as their plain value, and `=` is an ordinary string."""

    _aliased = False  # whether any alias was composed: only then can expansion grow

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = getattr(event, "anchor", None)
        if self.check_event(yaml.AliasEvent):
            self._aliased = True
        elif anchor is not None:
            self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if self._aliased:
            check_alias_expansion(node)
        return node


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ManifestLoader.add_multi_constructor("!", _untagged)
ManifestLoader.add_multi_constructor("tag:", _untagged)
ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_FAST: Any = getattr(yaml, "CSafeLoader", None)


_RESOLVED: dict[tuple[Any, ...], str] = {}  # (node kind, value, implicit) -> tag


class FastManifestLoader(_FAST or yaml.SafeLoader):  # type: ignore[misc]
    """ManifestLoader's constructors and resolvers on libyaml's C parser (when PyYAML has it).
    The C composer rejects a redefined anchor: such documents go to ManifestLoader.

    The C composer asks Python for every scalar's tag; a tag depends only on (kind, value,
    implicit) as there are no path resolvers, so answers are remembered (keys repeat a lot).

    Every document it composes has its alias expansion checked (AliasBomb), unless the text has
    no `*`, so no alias at all."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.may_alias = True  # a file: its text is not at hand
        if isinstance(stream, str):
            self.may_alias = "*" in stream
        elif isinstance(stream, bytes):
            self.may_alias = b"*" in stream

    def get_node(self) -> Any:
        node = super().get_node()
        if self.may_alias:
            check_alias_expansion(node)
        return node

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if self.may_alias:
            check_alias_expansion(node)
        return node

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        key = (kind, value, implicit)
        try:
            return _RESOLVED[key]
        except KeyError:
            pass
        tag: str = super().resolve(kind, value, implicit)
        if len(_RESOLVED) > 200_000:
            _RESOLVED.clear()
        _RESOLVED[key] = tag
        return tag

    # Only path resolvers use these two, and there are none. The composer calls them for every
    # node: builtins that do nothing observable cost less than Python no-op methods.
    descend_resolver = staticmethod(operator.is_)
    ascend_resolver = staticmethod(tuple)


FastManifestLoader.add_multi_constructor("!", _untagged)
FastManifestLoader.add_multi_constructor("tag:", _untagged)
FastManifestLoader.yaml_implicit_resolvers = ManifestLoader.yaml_implicit_resolvers


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _Unusual(Exception):
    """A node the plain walk does not construct (merge keys, unhashable keys): use PyYAML's."""


def _plain(node: yaml.Node, loader: Any) -> Any:
    """PyYAML's construction of `node`, for the plain strings, mappings and sequences that make
    up nearly all of a manifest without its per-node dispatch; other scalars (ints, booleans,
    timestamps, custom tags) still go through `loader`'s constructors. An aliased mapping or
    sequence is built anew at each alias, as Kubernetes reads it (check_alias_expansion bounds
    how many nodes that makes)."""
    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        return node.value if tag == _STR else loader.construct_object(node, deep=True)
    if isinstance(node, yaml.MappingNode) and tag == _MAP:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Unusual
            key = _plain(key_node, loader)
            try:
                mapping[key] = _plain(value_node, loader)
            except TypeError as error:  # an unhashable key
                raise _Unusual from error
        return mapping
    if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
        return [_plain(item, loader) for item in node.value]
    return loader.construct_object(node, deep=True)


def _unshared(value: Any) -> Any:
    """`value` with every mapping and sequence a copy of its own: PyYAML's constructors share
    an aliased value, so an edit through one path (a fix, a JSONPatch applied to a deep copy,
    which keeps the sharing) would silently change the other paths as well."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _load_fast(text: str) -> Any:
    loader = FastManifestLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _plain(node, loader)
        except _Unusual:
            return _unshared(loader.construct_document(node))
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """One document, parsed by the C parser (and built without PyYAML's per-node dispatch for
    plain nodes); the pure-Python ManifestLoader (same result) only for what the C parser cannot
    take, and for the error message of a broken document.

    The result is a tree, as Kubernetes reads YAML: no mapping or sequence is shared between
    aliases. AliasBomb when aliases would add more than ALIAS_EXPANSION_LIMIT nodes (checked on
    the composed nodes, which aliases share, before anything is built)."""
    if FastManifestLoader is not ManifestLoader:
        try:
            return _load_fast(text)
        except AliasBomb:
            raise
        except (yaml.YAMLError, ValueError, RecursionError):
            pass
    loaded = yaml.load(text, Loader=ManifestLoader)
    return _unshared(loaded) if "*" in text else loaded


@dataclass(frozen=True)
class Document:
    """One YAML document: `obj` when it parsed to a mapping, otherwise `error` says why not."""

    source: str  # file path as given (relative stays relative), "-" for stdin
    line: int  # 1-based line of the document's first content line
    index: int  # position in its file, from 0
    text: str
    obj: dict[str, Any] | None
    error: str | None = None

    @property
    def is_kubernetes_object(self) -> bool:
        return (
            self.obj is not None
            and isinstance(self.obj.get("apiVersion"), str)
            and isinstance(self.obj.get("kind"), str)
        )


def is_alias_bomb(document: Document) -> bool:
    """Whether `document` was refused because its aliases expand without bound: kustomize, which
    expands them all, must not be run on its files."""
    return document.error is not None and document.error.startswith(AliasBomb.PREFIX)


def split_documents(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each `---`-separated chunk, blank chunks included."""
    start, lines = 1, list[str]()
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if _SEPARATOR.match(line.rstrip("\r\n")):
            yield start, "".join(lines)
            start, lines = number + 1, []
        else:
            lines.append(line)
    yield start, "".join(lines)


def _first_content_line(start: int, chunk: str) -> int:
    for offset, line in enumerate(chunk.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.startswith("%"):
            return start + offset
    return start


def parse_stream(text: str, source: str) -> Iterator[Document]:
    index = 0
    for start, chunk in split_documents(text):
        line = _first_content_line(start, chunk)
        if all(not x.strip() or x.lstrip().startswith(("#", "%")) for x in chunk.splitlines()):
            continue  # empty, only comments, or only directives (`%YAML 1.1` before `---`)
        try:
            obj = load_yaml(chunk)
        except AliasBomb as error:
            yield Document(source, line, index, chunk, None, f"{error}: document not read")
            index += 1
            continue
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            last = start + max(chunk.count("\n") - 1, 0)
            where = min(start + mark.line, last) if mark is not None else line
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            yield Document(source, where, index, chunk, None, f"invalid YAML: {problem}")
            index += 1
            continue
        except (ValueError, RecursionError) as error:  # e.g. `2001-02-30`, a 5000-digit integer
            message = f"cannot read this document: {type(error).__name__}: {error}"[:200]
            yield Document(source, line, index, chunk, None, message)
            index += 1
            continue
        if obj is None:
            continue  # empty chunk or only comments
        if not isinstance(obj, dict):
            yield Document(source, line, index, chunk, None)  # a list or scalar: not Kubernetes
        elif not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
            yield Document(source, line, index, chunk, obj, None)
        elif obj.get("kind", "").endswith("List") and isinstance(obj.get("items"), list):
            for item in obj["items"]:  # kubectl get -o yaml output
                if isinstance(item, dict):
                    yield Document(source, line, index, chunk, item, None)
        else:
            yield Document(source, line, index, chunk, obj, None)
        index += 1


@dataclass
class Skipped:
    """What a directory walk leaves out on purpose: Helm chart folders (a `Chart.yaml`: its
    templates are not YAML until Helm renders them), files a kustomization.yaml lists as patches
    (never objects of their own) and `--exclude` matches."""

    charts: list[Path] = field(default_factory=list)
    patch_files: set[Path] = field(default_factory=set)
    excluded: int = 0


_KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def patch_files_of(kustomization: Path) -> Iterator[Path]:
    """The files a kustomization.yaml lists under patches, patchesStrategicMerge,
    patchesJson6902 (resolved; inline patches are not files)."""
    try:
        data = yaml.load(kustomization.read_text(encoding="utf-8"), Loader=FastManifestLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
        return
    if not isinstance(data, dict):
        return
    entries: list[Any] = []
    for key in ("patches", "patchesJson6902"):
        entries += [e.get("path") for e in data.get(key) or [] if isinstance(e, dict)]
    entries += [e for e in data.get("patchesStrategicMerge") or [] if isinstance(e, str)]
    for entry in entries:
        if isinstance(entry, str) and "\n" not in entry and entry.strip():
            yield (kustomization.parent / entry).resolve()


def yaml_files(
    path: Path, *, exclude: Sequence[str] = (), skipped: Skipped | None = None
) -> Iterator[Path]:
    """YAML files under `path` (or `path` itself), minus Helm charts, patch files and excludes."""
    skipped = skipped if skipped is not None else Skipped()
    if not path.is_dir():
        yield path
        return
    children = sorted(path.rglob("*"))
    charts = sorted({c.parent for c in children if c.name == "Chart.yaml" and c.is_file()})
    skipped.charts.extend(charts)
    for child in children:
        if child.name in _KUSTOMIZATION_NAMES and child.is_file():
            skipped.patch_files.update(patch_files_of(child))
    for child in children:
        relative = child.relative_to(path)
        if child.suffix not in YAML_SUFFIXES or not child.is_file():
            continue
        if _SKIPPED_DIRS.intersection(relative.parts):
            continue
        if any(child.is_relative_to(chart) for chart in charts):
            continue
        if excluded(relative, exclude):
            skipped.excluded += 1
            continue
        if skipped.patch_files and child.resolve() in skipped.patch_files:
            continue
        yield child


def excluded(relative: Path, patterns: Sequence[str]) -> bool:
    """Whether `relative` (to the PATH given) matches an --exclude GLOB, or is under a match."""
    text = relative.as_posix()
    for pattern in patterns:
        stripped = pattern.strip("/")
        if fnmatch(text, stripped) or fnmatch(text, stripped + "/*"):
            return True
        if any(fnmatch(part, stripped) for part in relative.parts):
            return True
    return False


def load(
    paths: Iterable[str],
    *,
    exclude: Sequence[str] = (),
    skipped: Skipped | None = None,
    jobs: int | None = 1,
) -> Iterator[Document]:
    """Documents of every path (files, directories recursively, or `-` for stdin).

    A directory of many files is parsed by `jobs` processes (None: one per CPU); the documents
    and their order are the same as with one."""
    for given in paths:
        if given == "-":
            yield from parse_stream(sys.stdin.read(), "-")
            continue
        path = Path(given)
        if not path.exists():
            yield Document(given, 0, 0, "", None, "no such file or directory")
            continue
        files = list(yaml_files(path, exclude=exclude, skipped=skipped))
        workers = jobs_for(len(files), jobs)
        if workers == 1:
            for file in files:
                yield from file_documents(file)
            continue
        for _, fields in ordered_map(_documents_of_files, files, jobs=workers):
            for source, line, index, text, obj, error in fields:
                yield Document(source, line, index, text, obj, error)


def file_documents(file: Path) -> Iterator[Document]:
    """The documents of one file, or the reason it cannot be read."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        yield Document(str(file), 0, 0, "", None, f"cannot read: {error}")
        return
    yield from parse_stream(text, str(file))


def _documents_of_files(files: Sequence[Path]) -> list[tuple[Any, ...]]:
    # Plain tuples: a worker sends them back by marshal, far faster than pickled dataclasses.
    return [
        (d.source, d.line, d.index, d.text, d.obj, d.error)
        for file in files
        for d in file_documents(file)
    ]
