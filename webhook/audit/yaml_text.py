"""The YAML text layer of `fluxwarden fix`: a JSONPatch written into YAML text, nothing else touched.

- a file is split into `---` documents; documents that need no change, and the separator lines,
  are re-emitted byte for byte;
- a document that changes gets the common edits (a key added, a scalar replaced, an item
  appended) spliced into its lines by `yaml_splice`, every other byte kept;
- otherwise it is loaded with ruamel.yaml's round-trip mode, the decision's JSONPatch
  is applied to that tree (so only the patched paths change; comments, key order, quoting and
  flow/block style stay), and it is dumped with the indentation guessed from the original;
- the new text (spliced or dumped) must parse, with the audit's parser, to exactly the patched
  object, otherwise the splice gives way to the round trip, and the round trip's document is
  left as is and reported; differences ruamel introduces that do not change the
  parsed object (a dropped `...`, a list re-indented to the document's main style) are then
  reverted hunk by hunk.
CRLF documents stay CRLF; a file without a final newline stays without. SOPS-encrypted documents
are never edited (their MAC would break). Many files: `planned_edit` asks the patcher in this
process, `fixed_texts` writes the edits in forked workers.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import tempfile
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher, unified_diff
from io import StringIO
from itertools import pairwise
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, ReusedAnchorWarning
from ruamel.yaml.error import YAMLError as RoundTripError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    ScalarString,
)
from ruamel.yaml.tokens import CommentToken

from ..engine import JsonObject
from .documents import Document, load_yaml, parse_stream, split_documents
from .findings import InputProblem
from .formats import printable
from .workers import jobs_for, ordered_map
from .yaml_splice import spliced

Patcher = Callable[[JsonObject], list[JsonObject]]
"""The JSONPatch that enforcement would apply to one object ([] when it is compliant)."""

# (mapping, sequence, offset) for ruamel's indent(), tried after the guess if it does not parse back.
_INDENTS = ((2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (4, 2, 0), (3, 3, 0), (3, 5, 2))
_WIDTH = 1 << 20  # never re-wrap long lines
_STR_TAG = "tag:yaml.org,2002:str"
_BLOCK_KEY = re.compile(r"^[^#{}\[\]]*:\s*(?:#.*)?$")  # `key:` opening a block (maybe a comment)
_resolve_tag: Callable[..., str] = yaml.resolver.Resolver().resolve  # PyYAML's implicit tags


@dataclass
class FileFix:
    """One file's (or stream's) new text; equal to the old text when nothing changed."""

    text: str
    fixed_documents: int = 0
    problems: list[InputProblem] = field(default_factory=list)


class NotFixable(Exception):
    """A document whose fix cannot be written safely; the message says why."""


@dataclass(frozen=True)
class TextEdit:
    """One file's (or stream's) text, its documents, and the patch of each document ([] where
    nothing changes): all a worker needs to write the fix, with no policy evaluation left."""

    text: str
    source: str
    documents: Sequence[Document]
    patches: Sequence[list[JsonObject]]

    @property
    def changes(self) -> bool:
        return any(self.patches)


def fix_text(
    text: str, source: str, *, patcher: Patcher, documents: Sequence[Document] | None = None
) -> FileFix:
    """The text of a YAML stream with every document's patch applied; untouched documents verbatim.

    `documents` is `parse_stream(text, source)` when the caller already has it.
    """
    return fixed_text(planned_edit(text, source, patcher=patcher, documents=documents))


def planned_edit(
    text: str, source: str, *, patcher: Patcher, documents: Sequence[Document] | None = None
) -> TextEdit:
    """`text` with each document's patch, asked of `patcher` here, in document order (a patcher
    may record what it saw: call this in the process that keeps the records)."""
    if documents is None:
        documents = list(parse_stream(text, source))
    patches = [patcher(d.obj) if d.is_kubernetes_object and d.obj else [] for d in documents]
    return TextEdit(text, source, documents, patches)


def fixed_text(edit: TextEdit) -> FileFix:
    """The edit's text with every document's patch applied; untouched documents verbatim."""
    text, source = edit.text, edit.source
    if not edit.changes and not any(d.error for d in edit.documents):
        return FileFix(text)
    chunks = list(split_documents(text))
    lines = text.splitlines(keepends=True)
    separators = [lines[start - 2] for start, _ in chunks[1:]]
    if _join(chunks, separators) != text:  # an invariant; never edit what cannot be re-emitted
        return FileFix(text, 0, [InputProblem(source, 1, "cannot split into documents", True)])
    starts = [start for start, _ in chunks]
    by_chunk: dict[int, list[tuple[Document, list[JsonObject]]]] = {}
    for document, patch in zip(edit.documents, edit.patches, strict=True):
        index = max(bisect_right(starts, document.line) - 1, 0)
        by_chunk.setdefault(index, []).append((document, patch))
    result = FileFix(text)
    new_chunks: list[tuple[int, str]] = []
    for index, (start, chunk) in enumerate(chunks):
        new_chunks.append((start, _fix_chunk(chunk, by_chunk.get(index, []), into=result)))
    result.text = _join(new_chunks, separators)
    return result


def fixed_texts(edits: Sequence[TextEdit], *, jobs: int | None = None) -> Iterator[FileFix]:
    """`fixed_text` of each edit, in order; the edits that change something are shared out
    among forked worker processes when there are many (`workers.jobs_for`)."""
    changing = [edit for edit in edits if edit.changes]
    workers = jobs_for(len(changing), jobs)
    fixes = iter(
        fix
        for _, part in ordered_map(
            _fixed_slice, changing, jobs=workers, encode=_encoded, decode=_decoded
        )
        for fix in part
    )
    for edit in edits:
        yield next(fixes) if edit.changes else fixed_text(edit)


def _fixed_slice(edits: Sequence[TextEdit]) -> list[FileFix]:
    return [fixed_text(edit) for edit in edits]


def _encoded(fixes: list[FileFix]) -> list[tuple[Any, ...]]:
    """Plain tuples: marshal (several times faster than pickle) takes them."""
    return [
        (f.text, f.fixed_documents, [(p.source, p.line, p.message, p.error) for p in f.problems])
        for f in fixes
    ]


def _decoded(data: list[tuple[Any, ...]]) -> list[FileFix]:
    return [FileFix(text, count, [InputProblem(*p) for p in ps]) for text, count, ps in data]


def _join(chunks: Sequence[tuple[int, str]], separators: Sequence[str]) -> str:
    pieces = [chunks[0][1]] if chunks else []
    for separator, (_, chunk) in zip(separators, chunks[1:], strict=True):
        pieces += [separator, chunk]
    return "".join(pieces)


def _fix_chunk(
    chunk: str, documents: list[tuple[Document, list[JsonObject]]], *, into: FileFix
) -> str:
    broken = [d for d, _ in documents if d.error is not None]
    for document in broken:
        message = f"{document.error} (document left as is)"
        into.problems.append(InputProblem(document.source, document.line, message, True))
    if broken or not documents:
        return chunk
    patches = [patch for _, patch in documents]
    if not any(patches):
        return chunk
    first = documents[0][0]
    whole = load_yaml(chunk)  # the document itself: a List's items are patched in place
    patch = _document_patch(whole, patches)
    if isinstance(whole, dict) and isinstance(whole.get("sops"), dict):
        message = "not fixed: SOPS-encrypted (an edit would break its MAC); fix it with `sops edit`"
        into.problems.append(InputProblem(first.source, first.line, message, False))
        return chunk
    try:
        fixed = rewrite_document(chunk, whole, patch)
    except NotFixable as error:
        message = f"not fixed: {error} (document left as is)"
        into.problems.append(InputProblem(first.source, first.line, message, True))
        return chunk
    into.fixed_documents += 1
    return fixed


def _document_patch(whole: Any, patches: list[list[JsonObject]]) -> list[JsonObject]:
    """One patch for the document: a List's item patches get their `/items/N` prefix."""
    if len(patches) == 1 and not _is_list(whole):
        return patches[0]
    positions = [i for i, item in enumerate(whole["items"]) if isinstance(item, dict)]
    combined: list[JsonObject] = []
    for position, item_patch in zip(positions, patches, strict=True):
        prefix = f"/items/{position}"
        for op in item_patch:
            moved = {**op, "path": prefix + op["path"]}
            if "from" in op:
                moved["from"] = prefix + op["from"]
            combined.append(moved)
    return combined


def _is_list(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("kind"), str)
        and obj["kind"].endswith("List")
        and isinstance(obj.get("items"), list)
    )


def rewrite_document(chunk: str, obj: Any, patch: list[JsonObject]) -> str:
    """`chunk` (one YAML document, parsed as `obj`) edited so that it parses to `obj` + `patch`.

    Raises NotFixable when that cannot be done safely.
    """
    crlf = "\r\n" in chunk
    original = chunk.replace("\r\n", "\n") if crlf else chunk
    expected = jsonpatch.apply_patch(obj, patch)
    fast = spliced(original, patch)  # the common edits, written into the lines themselves
    if fast is not None and parses_to(fast, expected):
        return fast.replace("\n", "\r\n") if crlf else fast
    try:
        with warnings.catch_warnings():  # a redefined anchor is valid YAML 1.2, as Flux reads it
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            tree = _round_trip(2, 2, 0).load(original)
    except RoundTripError as error:
        raise NotFixable(f"ruamel.yaml cannot load it: {_first_line(error)}") from error
    try:
        tree = apply_patch_styled(tree, patch)
    except (jsonpatch.JsonPatchException, KeyError, IndexError, TypeError, ValueError) as error:
        raise NotFixable(f"the patch does not apply to the YAML tree: {error}") from error
    edited = None
    for indent in dict.fromkeys([guess_indent(original), *_INDENTS]):  # the guess first
        try:
            text = _dump(tree, indent, like=original)
        except Exception as error:  # ruamel's emitter on a tree it did not load itself
            raise NotFixable(f"ruamel.yaml cannot write it: {_first_line(error)}") from error
        if parses_to(text, expected):
            edited = text
            break
    if edited is None:
        raise NotFixable("the edited YAML would not parse back to the fixed object")
    edited = _revert_cosmetic_hunks(original, edited, expected)
    return edited.replace("\n", "\r\n") if crlf else edited


def guess_indent(text: str) -> tuple[int, int, int]:
    """ruamel's (mapping, sequence, offset) indentation most used in `text`."""
    mappings: Counter[int] = Counter()
    offsets: Counter[int] = Counter()
    lines = [line for line in text.splitlines() if line.strip() and line.lstrip()[0] != "#"]
    for line, following in pairwise(lines):
        if not _BLOCK_KEY.match(line):
            continue
        key_column = len(line) - len(line.lstrip(" -"))
        step = len(following) - len(following.lstrip(" ")) - key_column
        if following.lstrip(" ").startswith("- ") or following.strip() == "-":
            offsets[step] += 1 if step >= 0 else 0
        elif step > 0:
            mappings[step] += 1
    mapping = mappings.most_common(1)[0][0] if mappings else 2
    offset = offsets.most_common(1)[0][0] if offsets else 0
    return mapping, offset + 2, offset


def _first_line(error: Exception) -> str:
    problem = getattr(error, "problem", None)  # ruamel's marked errors: the gist without context
    lines = str(problem or error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _round_trip(mapping: int, sequence: int, offset: int) -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = _WIDTH
    rt.indent(mapping=mapping, sequence=sequence, offset=offset)
    return rt


def _dump(tree: Any, indent: tuple[int, int, int], *, like: str) -> str:
    out = StringIO()
    _round_trip(*indent).dump(tree, out)
    text = out.getvalue()
    return text if like.endswith("\n") else text.rstrip("\n")


def parses_to(text: str, expected: Any) -> bool:
    """Whether `text` is one YAML document that the audit's parser reads as exactly `expected`."""
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError:
        return False
    return same_data(loaded, expected)


def same_data(a: Any, b: Any) -> bool:
    """Equality that also tells 1 from true and 1 from 1.0 (YAML-typed data)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _revert_cosmetic_hunks(original: str, edited: str, expected: Any) -> str:
    """Put back the original text of every differing hunk where it still parses to `expected`.

    A hunk is tried whole first; then with its original indentation kept (ruamel writes a whole
    document in one indentation style, a file may mix several).
    """
    old = original.splitlines(keepends=True)
    new = edited.splitlines(keepends=True)
    opcodes = SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in reversed(opcodes):  # from the end: earlier indices stay valid
        if tag == "equal":
            continue
        for part in (old[i1:i2], _reindented(old[i1:i2], new[j1:j2])):
            trial = [*new[:j1], *part, *new[j2:]]
            if parses_to("".join(trial), expected):
                new = trial
                break
    return "".join(new)


def _reindented(old: list[str], new: list[str]) -> list[str]:
    """`new` with the indentation of `old`: lines equal but for indentation are taken from
    `old`, changed lines keep their content at the old line's indentation, and added lines
    shift like the line before them."""
    result: list[str] = []
    shift = 0
    matcher = SequenceMatcher(None, [x.strip() for x in old], [x.strip() for x in new], False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for old_line, new_line in zip(old[i1:i2], new[j1:j2], strict=True):
                shift = _indent(old_line) - _indent(new_line)
                result.append(old_line if tag == "equal" else _shifted(new_line, shift))
        elif tag in ("insert", "replace"):
            result.extend(_shifted(line, shift) for line in new[j1:j2])
    return result


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _shifted(line: str, shift: int) -> str:
    if not line.strip():
        return line
    return " " * max(_indent(line) + shift, 0) + line.lstrip(" ")


# --- applying a JSONPatch to a ruamel tree, in the style of its surroundings ---


def apply_patch_styled(tree: Any, patch: list[JsonObject]) -> Any:
    """Apply `patch` to a ruamel round-trip tree in place; returns the (possibly new) root.

    New values take the style of what they replace or join: a replaced quoted string stays
    quoted, an item added to a list of flow mappings is a flow mapping, a string the audit's
    YAML 1.1 parser would read as another type is quoted, and comments that trailed the last
    entry of a mapping or list keep trailing it after an entry is appended.
    """
    for op in patch:
        if op.get("op") not in ("add", "replace") or not _pointer(str(op["path"])):
            tree = jsonpatch.JsonPatch([op]).apply(tree, in_place=True)
            continue
        parts = _pointer(str(op["path"]))
        parent = _resolve(tree, parts[:-1])
        key = _child_key(parent, parts[-1])
        value = _styled(op["value"], like=_current(parent, key), parent=parent)
        if op["op"] == "replace":
            if isinstance(parent, dict) and key not in parent:
                raise KeyError(f"nothing to replace at {op['path']}")
            parent[key] = value  # a list raises IndexError past its end
        elif isinstance(parent, list):
            tail = _detach_trailing_comments(parent) if _appends(parent, key) else None
            if not isinstance(key, int) or not 0 <= key <= len(parent):
                raise IndexError(f"cannot add at {op['path']}")
            parent.insert(key, value)
            _attach_trailing_comments(parent, key, tail)
        elif isinstance(parent, dict):
            tail = _detach_trailing_comments(parent) if _appends(parent, key) else None
            parent[_plain_or_quoted(str(key)) if key not in parent else key] = value
            _attach_trailing_comments(parent, key, tail)
        else:
            raise TypeError(f"cannot add {op['path']} to a {type(parent).__name__}")
    return tree


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(tree: Any, parts: list[str]) -> Any:
    node = tree
    for part in parts:
        node = node[_child_key(node, part)]
    return node


def _child_key(node: Any, part: str) -> str | int:
    if isinstance(node, list):
        index = len(node) if part == "-" else int(part)
        if index < 0:
            raise IndexError(f"negative index {part}")
        return index
    return part


def _current(parent: Any, key: str | int) -> Any:
    if isinstance(parent, list):
        return parent[key] if isinstance(key, int) and 0 <= key < len(parent) else None
    return parent.get(key) if isinstance(parent, dict) else None


def _appends(parent: Any, key: str | int) -> bool:
    if isinstance(parent, CommentedMap):
        return len(parent) > 0 and key not in parent
    if isinstance(parent, CommentedSeq):
        return len(parent) > 0 and key == len(parent)
    return False


def _is_block(node: Any) -> bool:
    return isinstance(node, (CommentedMap, CommentedSeq)) and not node.fa.flow_style()


def _styled(value: Any, *, like: Any = None, parent: Any = None) -> Any:
    """`value` as ruamel nodes styled after `like` (the value it replaces) or its siblings."""
    if isinstance(value, str):
        if isinstance(like, (LiteralScalarString, FoldedScalarString)):
            return type(like)(value) if "\n" in value else _plain_or_quoted(value)
        if isinstance(like, ScalarString):
            return type(like)(value)
        if "\n" in value.rstrip("\n"):  # a patch text, a script: a block as a user writes it
            return LiteralScalarString(value)
        return _plain_or_quoted(value)
    if isinstance(value, dict):
        mapping = CommentedMap((k, _styled(v)) for k, v in value.items())
        if isinstance(parent, CommentedSeq) and _flow_mapping_items(parent):
            mapping.fa.set_flow_style()
        return mapping
    if isinstance(value, list):
        return CommentedSeq(_styled(v) for v in value)
    return value


def _plain_or_quoted(value: str) -> str:
    """Quote what the audit's (YAML 1.1) parser would not read back as this string."""
    resolved = _resolve_tag(yaml.ScalarNode, value, (True, False))  # as a plain scalar
    return value if resolved == _STR_TAG else DoubleQuotedScalarString(value)


def _flow_mapping_items(seq: CommentedSeq) -> bool:
    mappings = [item for item in seq if isinstance(item, CommentedMap)]
    return bool(mappings) and all(m.fa.flow_style() for m in mappings)


def _last_leaf(node: Any) -> tuple[Any, str | int] | None:
    """The container and key of the last entry printed in a block node, descending into it."""
    found: tuple[Any, str | int] | None = None
    while _is_block(node) and len(node) > 0:
        key: str | int = list(node.keys())[-1] if isinstance(node, dict) else len(node) - 1
        found = (node, key)
        node = node[key]
        if _anchored(node):
            # An anchored node may be printed here as an alias (`*name`): its entries and
            # their comments belong to where the anchor is, so do not descend into it.
            break
    return found


def _anchored(node: Any) -> bool:
    anchor = getattr(node, "anchor", None)
    return getattr(anchor, "value", None) is not None


def _comment_slot(holder: Any) -> int:
    return 2 if isinstance(holder, dict) else 0  # ruamel: mapping value EOL / sequence item EOL


def _detach_trailing_comments(parent: Any) -> str | None:
    """Cut the full-line comments and blank lines that follow `parent`'s last entry."""
    if not _is_block(parent):
        return None
    leaf = _last_leaf(parent)
    if leaf is None:
        return None
    holder, key = leaf
    entry = holder.ca.items.get(key)
    token = entry[_comment_slot(holder)] if entry else None
    if not isinstance(token, CommentToken) or not isinstance(token.value, str):
        return None
    value = token.value
    end = value.find("\n")
    if end < 0 or end == len(value) - 1:
        return None
    token.value = value[: end + 1]
    return value[end + 1 :]


def _attach_trailing_comments(parent: Any, key: str | int, tail: str | None) -> None:
    if tail is None:
        return
    leaf = _last_leaf(parent[key]) or (parent, key)
    holder, leaf_key = leaf
    entry = holder.ca.items.setdefault(leaf_key, [None, None, None, None])
    slot = _comment_slot(holder)
    token = entry[slot]
    if isinstance(token, CommentToken) and isinstance(token.value, str):
        token.value = token.value + tail
    else:
        entry[slot] = CommentToken("\n" + tail, CommentMark(0), None)


# --- files ---


def _replace_file(path: Path, text: str) -> None:
    """Replace `path` atomically with a new file, keeping its permissions; a symlink is
    refused, never written through (the rename replaces the directory entry itself)."""
    status = path.lstat()
    if stat.S_ISLNK(status.st_mode):
        raise OSError(errno.ELOOP, "a symlink: fix never writes through links")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8"))
        os.chmod(temporary, status.st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def text_diff(old: str, new: str, source: str) -> str:
    """A unified diff with `a/` and `b/` headers, as `git diff` prints it; the file's name
    printable (a newline in it would start a line of the reader's choosing)."""
    name = printable(source.lstrip("/"))
    lines = unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{name}",
        tofile=f"b/{name}",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
