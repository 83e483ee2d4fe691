"""Flux's postBuild variable substitution over a text, as `github.com/fluxcd/pkg/envsubst`
(v1.7.0, what kustomize-controller runs) does it.

Only the `${...}` form is an expression (`$VAR` is text) and `$$` writes `$`. The default forms
`${var-d}`, `${var=d}`, `${var:-d}` and `${var:=d}` all give the value when it is not empty,
else the default (envsubst's `toDefault`, whatever the operator), and a default is itself a
text with expressions in it: `${VOLSYNC_CLAIM:-${APP}}`, the home-ops repos' way to name a
claim after its app unless told otherwise. The other functions (`${#var}`, `${var^^}`,
`${var/a/b}`, ...) are left as written and reported unknown.

Offline a variable may be unknowable (its ConfigMap or Secret is not in the repo): with
`all_known` False such an expression is kept as written and its name returned as unknown; with
every source known a missing variable is empty, as Flux makes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_DEFAULT_OPERATORS = (":-", ":=", "-", "=")  # longest first


@dataclass
class _Substitution:
    text: str
    variables: dict[str, str]
    all_known: bool
    unknown: list[str] = field(default_factory=list)

    def run(self, start: int, *, inside: bool) -> tuple[str, int]:
        """The substituted text from `start` to the end, or (`inside` a default) to the `}`
        that closes it; and the position after what was read."""
        out: list[str] = []
        i, text = start, self.text
        while i < len(text):
            if inside and text[i] == "}":
                return "".join(out), i
            if text.startswith("$$", i):
                out.append("$")
                i += 2
            elif text.startswith("${", i):
                value, i = self.expression(i)
                out.append(value)
            else:
                stop = _next_special(text, i, inside)
                out.append(text[i:stop])
                i = stop
        return "".join(out), i

    def expression(self, start: int) -> tuple[str, int]:
        """The value of the `${...}` at `start`, and the position after its `}`."""
        text = self.text
        name = _NAME.match(text, start + 2)
        operator = next(
            (o for o in _DEFAULT_OPERATORS if name and text.startswith(o, name.end())), None
        )
        if name is None or (operator is None and not text.startswith("}", name.end())):
            end = _closing(text, start + 2)  # a function this does not evaluate: kept
            self.unknown.append(text[start + 2 : end])
            return text[start : end + 1], end + 1
        default, end = "", name.end()
        said = len(self.unknown)  # what the default adds counts only where it is used
        if operator is not None:
            default, end = self.run(name.end() + len(operator), inside=True)
        variable = name.group(0)
        if end >= len(text):  # no closing brace: Flux fails the build; kept as written
            del self.unknown[said:]
            self.unknown.append(variable)
            return text[start:], len(text)
        value = self.variables.get(variable)
        if value or (value is not None and operator is None):
            del self.unknown[said:]
            return value, end + 1
        if value is None and not self.all_known:
            del self.unknown[said:]
            self.unknown.append(variable)
            return text[start : end + 1], end + 1
        return default, end + 1


def _next_special(text: str, start: int, inside: bool) -> int:
    """The next position at or after `start` where `$` (or, inside a default, `}`) is."""
    candidates = [text.find("$", start)]
    if inside:
        candidates.append(text.find("}", start))
    found = [c for c in candidates if c != -1]
    stop = min(found) if found else len(text)
    return stop if stop > start else start + 1


def _closing(text: str, start: int) -> int:
    """The position of the `}` that closes an expression whose body starts at `start`
    (nested `${` counted), or the end of the text."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return len(text)


def substitute_text(
    text: str, variables: dict[str, str], *, all_known: bool
) -> tuple[str, list[str]]:
    """`text` with its `${...}` expressions substituted, and the variables that could not be
    known offline (kept as written), in order of appearance."""
    substitution = _Substitution(text, variables, all_known)
    result, _ = substitution.run(0, inside=False)
    return result, substitution.unknown
