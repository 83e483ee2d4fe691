"""Where in a file a field is: the line of the deepest existing node on a JSON pointer path."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from .documents import Document, FastManifestLoader, ManifestLoader


def _leading_lines(text: str) -> int:
    """Lines before the first content line of a chunk (blank, comment, directive)."""
    count = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%")):
            break
        count += 1
    return count


def field_line(document: Document, pointer_paths: Sequence[str]) -> int:
    """The line of the field the first of `pointer_paths` points at in `document` (or of its
    nearest existing parent); the document's line when it cannot be told."""
    if not pointer_paths or not document.text:
        return document.line
    try:
        node = yaml.compose(document.text, Loader=FastManifestLoader)
    except yaml.YAMLError:
        try:  # a redefined anchor: only the pure-Python loader takes it
            node = yaml.compose(document.text, Loader=ManifestLoader)
        except yaml.YAMLError:
            return document.line
    start = document.line - _leading_lines(document.text)
    line: int | None = None
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer_paths[0].split("/")[1:]]
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
            if match is None or key is None:
                break
            line, node = key.start_mark.line, match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line
        else:
            break
    return document.line if line is None else start + line
