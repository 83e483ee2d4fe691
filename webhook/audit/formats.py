"""Audit report renderers: table (default), json, sarif, junit.

Every renderer takes the same `AuditReport` and returns text; none reads files or talks to a
cluster. Paths are written as the user gave them (SARIF and JUnit use forward slashes), so
output for relative inputs is the same on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from .. import __version__
from .findings import AuditReport, Finding, InputProblem, NotAudited
from .offline import rule_descriptions

FORMATS = ("table", "json", "sarif", "junit")

PROJECT_URL = "https://github.com/fluxwarden/fluxwarden"
README_URL = f"{PROJECT_URL}/blob/main/README.md"
CLUSTER_SOURCE = "cluster"  # ObjectLocation.source of objects read from a live cluster
INPUT_ERROR_RULE = "fluxwarden/input-error"
NOT_AUDITED_RULE = "fluxwarden/not-audited"

_COLORS = {
    "fail": "\033[31m",
    "warn": "\033[33m",
    "error": "\033[35m",
    "pass": "\033[32m",
    "skip": "\033[2m",
}
_RESET = "\033[0m"
_LABEL_WIDTH = 5  # "ERROR"


def _paint(text: str, result: str, color: bool) -> str:
    return f"{_COLORS.get(result, '')}{text}{_RESET}" if color else text


def _where(source: str, line: int) -> str:
    return f"{source}:{line}" if line >= 1 else source


def _sources_in_order(report: AuditReport) -> list[str]:
    """Every source once, in input order as far as the report tells it.

    Findings and problems are each in input order but kept apart, so the two orders are
    merged; a source seen only in problems (a missing file, a file of broken documents) goes
    as early as both orders allow.
    """
    from_findings = list(dict.fromkeys(f.location.source for f in report.findings))
    in_findings = set(from_findings)
    pending = deque(dict.fromkeys(p.source for p in report.problems))
    ordered: list[str] = []
    for source in from_findings:
        while pending and pending[0] not in in_findings:
            ordered.append(pending.popleft())
        if pending and pending[0] == source:
            pending.popleft()
        ordered.append(source)
    ordered.extend(s for s in pending if s not in in_findings)
    return ordered


def _by_source(report: AuditReport) -> list[tuple[str, list[Finding | InputProblem]]]:
    """(source, its findings and problems by line), sources in input order."""
    groups: dict[str, list[Finding | InputProblem]] = {s: [] for s in _sources_in_order(report)}
    for finding in report.findings:
        groups[finding.location.source].append(finding)
    for problem in report.problems:
        groups[problem.source].append(problem)
    return [(source, sorted(items, key=_line_of)) for source, items in groups.items()]


def _line_of(item: Finding | InputProblem) -> int:
    return item.location.line if isinstance(item, Finding) else item.line


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- strings from the input --------------------------------------------------------------------

VALUE_PREFIX = 64  # characters of an input value that a message quotes
MESSAGE_LIMIT = 512  # characters of a message, whatever it is made of

# Line breaks and other control characters (a GitHub Actions runner takes an output line that
# starts with `::error` as a command), bidi controls (text shown in another order than it is),
# surrogates (a file name that is not UTF-8) and the two non-characters XML 1.0 cannot hold.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` (a file name, an object's name, a message quoting the input) as one line of visible
    characters: line breaks and control characters as escapes (`\\n`, `\\x1b`), so no input
    starts a line of its own, moves a terminal's cursor, or breaks an XML document."""
    return _UNPRINTABLE.sub(_escape, text)


# A quoted value ('...' or "..." as repr() writes it, not an apostrophe inside a word), or a run
# of more than VALUE_PREFIX characters without a space (an unquoted value).
_QUOTED_OR_LONG = re.compile(
    rf"""(?<!\w)(['"])(?:(?!\1)[^\\]|\\.)*\1(?!\w)|[^\s'"]{{{VALUE_PREFIX + 1},}}"""
)


def _prefix(match: re.Match[str]) -> str:
    text = match.group()
    quote_mark = match.group(1)
    if quote_mark is None:
        return text[:VALUE_PREFIX] + "…"
    if len(text) <= VALUE_PREFIX + 2:
        return text
    return text[: VALUE_PREFIX + 1] + "…" + quote_mark


# What a message needs for _QUOTED_OR_LONG to change it; searched first, as it is far faster.
_LONG_QUOTE = re.compile(rf"""['"][^'"]{{{VALUE_PREFIX + 1}}}""")
_LONG_RUN = re.compile(rf"\S{{{VALUE_PREFIX + 1}}}")


def quoting_prefix(message: str) -> str:
    """`message` quoting at most VALUE_PREFIX characters (and `…`) of any value in it: a value
    from the input can be megabytes; and at most MESSAGE_LIMIT characters in all."""
    short = message
    if _LONG_QUOTE.search(message) or _LONG_RUN.search(message):
        short = _QUOTED_OR_LONG.sub(_prefix, message)
    return short if len(short) <= MESSAGE_LIMIT else short[:MESSAGE_LIMIT] + "…"


def _finding_quoting_prefixes(finding: Finding) -> Finding:
    if not finding.messages:  # most findings: passes
        return finding
    messages = tuple(quoting_prefix(m) for m in finding.messages)
    return (
        finding if messages == finding.messages else dataclasses.replace(finding, messages=messages)
    )


def quoting_prefixes(report: AuditReport) -> AuditReport:
    """`report` with every message through quoting_prefix(): what every format prints."""
    return dataclasses.replace(
        report,
        findings=[_finding_quoting_prefixes(f) for f in report.findings],
        problems=[
            dataclasses.replace(p, message=quoting_prefix(p.message)) for p in report.problems
        ],
        not_audited=[dataclasses.replace(n, why=quoting_prefix(n.why)) for n in report.not_audited],
    )


# --- table -------------------------------------------------------------------------------------


def _printable(item: Finding | InputProblem) -> Finding | InputProblem:
    """`item` with every string that comes from the input as printable(); for table and JUnit."""
    if isinstance(item, InputProblem):
        texts: tuple[str, ...] = (item.source, item.message)
    else:
        loc = item.location
        texts = (loc.source, loc.kind, loc.namespace, loc.name, item.policy, *item.messages)
    if not any(_UNPRINTABLE.search(text) for text in texts):
        return item  # nearly always: no copy
    if isinstance(item, InputProblem):
        return dataclasses.replace(
            item, source=printable(item.source), message=printable(item.message)
        )
    loc = item.location
    location = dataclasses.replace(
        loc,
        source=printable(loc.source),
        kind=printable(loc.kind),
        namespace=printable(loc.namespace),
        name=printable(loc.name),
    )
    return dataclasses.replace(
        item,
        location=location,
        policy=printable(item.policy),
        messages=tuple(printable(m) for m in item.messages),
        clusters=tuple(printable(c) for c in item.clusters),
    )


def render_table(
    report: AuditReport, *, color: bool = False, verbose: bool = False, show_unreached: bool = False
) -> str:
    """Findings that need attention, grouped by file in line order, then a summary.

    `verbose` also lists passes, skips and skipped documents; `color` paints the result labels.
    """
    rows: list[Finding | InputProblem] = [
        _printable(item)
        for _, items in _by_source(quoting_prefixes(report))
        for item in items
        if verbose
        or (
            item.result not in ("pass", "skip")
            if isinstance(item, Finding)
            else item.error or not _is_skipped(item)
        )
    ]
    where_width = max((len(_where_of(item)) for item in rows), default=0)
    object_width = max(
        (len(item.location.display_name) for item in rows if isinstance(item, Finding)),
        default=0,
    )
    indent = " " * (_LABEL_WIDTH + 2)
    lines: list[str] = []
    for item in rows:
        where = _where_of(item).ljust(where_width)
        if isinstance(item, Finding):
            label = _paint(item.result.upper().ljust(_LABEL_WIDTH), item.result, color)
            name = item.location.display_name.ljust(object_width)
            clusters = f"  [{', '.join(item.clusters)}]" if item.clusters else ""
            lines.append(
                f"{label}  {where}  {name}  {item.policy} ({item.mode}){clusters}".rstrip()
            )
            lines.extend(f"{indent}{message}" for message in item.messages)
        else:
            text, result = ("ERROR", "error") if item.error else ("NOTE", "skip")
            label = _paint(text.ljust(_LABEL_WIDTH), result, color)
            lines.append(f"{label}  {where}  {item.message}")
    if show_unreached:
        label = _paint("NOTE".ljust(_LABEL_WIDTH), "skip", color)
        lines += [
            f"{label}  {printable(f)}  applied by no cluster: not audited" for f in report.unreached
        ]
        lines += [
            f"{label}  {printable(f)}  {printable(_not_audited_text(entry))}"
            for entry in quoting_prefixes(report).not_audited
            for f in entry.files
        ]
    if lines:
        lines.append("")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _not_audited_text(entry: NotAudited) -> str:
    """`not audited: under Flux Kustomization ns/name [clusters]: why`."""
    clusters = f" [{', '.join(entry.clusters)}]" if entry.clusters else ""
    return f"not audited: under Flux Kustomization {entry.kustomization}{clusters}: {entry.why}"


def _where_of(item: Finding | InputProblem) -> str:
    if isinstance(item, Finding):
        return _where(item.location.source, item.location.line)
    return _where(item.source, item.line)


def _is_skipped(problem: InputProblem) -> bool:
    """A document skipped as not for the policies (not Kubernetes, a Helm chart)."""
    return not problem.error and problem.message.startswith("skipped")


_NOTICE_KINDS = (  # (words a notice starts with or holds, its kind in the summary)
    ("skipped: not a Kubernetes object", "skipped (not a Kubernetes object)"),
    ("skipped: Helm chart", "skipped (Helm chart)"),
    ("skipped", "skipped"),
    ("a symlink to outside", "not read (symlink out)"),
    ("remote bases are not fetched", "not audited (remote base)"),
    ("not audited: OCIRepository/", "not audited (OCIRepository source)"),
    ("not audited: GitRepository/", "not audited (GitRepository source)"),
    ("not audited: Bucket/", "not audited (Bucket source)"),
    ("not audited: ExternalArtifact/", "not audited (ExternalArtifact source)"),
    ("not recorded", "not audited (not recorded)"),
    ("not audited", "not audited"),
    ("kustomize", "render"),
    ("build", "render"),
)


def _notice_kind(problem: InputProblem) -> str:
    text = problem.message
    for words, kind in _NOTICE_KINDS:
        if text.startswith(words) if words.startswith("skipped") else words in text:
            return kind
    return "other"


def _notices(report: AuditReport) -> str:
    """`notices: N kind, ...` (most first), every notice counted, the skipped documents too:
    a part not audited must not hide behind a count of skipped documents."""
    kinds = Counter(_notice_kind(p) for p in report.problems if not p.error)
    if not kinds:
        return ""
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda k: -k[1]))
    return f"\nnotices: {parts}"


def _summary(report: AuditReport) -> str:
    counts = report.counts()
    errors = len(report.input_errors)
    return (
        f"{_plural(report.objects, 'object')}, {_plural(len(report.findings), 'result')}: "
        + ", ".join(f"{n} {r}" for r, n in counts.items())
        + f"; {_plural(errors, 'input error')}"
        + (
            f"; {_plural(len(report.unreached), 'file')} applied by no cluster, not audited"
            if report.unreached
            else ""
        )
        + _not_audited_summary(report)
        + _notices(report)
    )


def _not_audited_summary(report: AuditReport) -> str:
    """`; N files under M Flux Kustomizations not audited` (by design: see the notices)."""
    files = {f for entry in report.not_audited for f in entry.files}
    if not files:
        return ""
    kustomizations = len({e.kustomization for e in report.not_audited if e.files})
    under = _plural(kustomizations, "Flux Kustomization")
    return (
        f"; {_plural(len(files), 'file')} under {under} not audited (--show-unreached lists them)"
    )


# --- json --------------------------------------------------------------------------------------


def _finding_json(finding: Finding) -> dict[str, Any]:
    loc = finding.location
    return {
        "source": loc.source,
        "line": loc.line,
        "apiVersion": loc.api_version,
        "kind": loc.kind,
        "namespace": loc.namespace,
        "name": loc.name,
        "policy": finding.policy,
        "mode": finding.mode,
        "result": finding.result,
        "action": finding.action,
        "messages": list(finding.messages),
        **({"clusters": list(finding.clusters)} if finding.clusters else {}),
    }


def render_json(report: AuditReport, **_: Any) -> str:
    """Every finding (passes included) and every input problem, with a summary."""
    report = quoting_prefixes(report)
    body: dict[str, Any] = {
        "summary": {
            **report.counts(),
            "objects": report.objects,
            "inputErrors": len(report.input_errors),
        },
        "findings": [_finding_json(f) for f in report.findings],
        "problems": [
            {"source": p.source, "line": p.line, "message": p.message, "error": p.error}
            for p in report.problems
        ],
    }
    if report.unreached:
        body["unreached"] = list(report.unreached)
    if report.not_audited:
        body["notAudited"] = [
            {
                "kustomization": n.kustomization,
                "source": n.source,
                "why": n.why,
                "clusters": list(n.clusters),
                "files": list(n.files),
            }
            for n in report.not_audited
        ]
    return json.dumps(body, indent=2) + "\n"


# --- sarif -------------------------------------------------------------------------------------

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

# A fail is something enforce would change or deny: an error in code scanning. A warn is
# advice. An error is a policy that raised on the object: the object went unchecked, which
# `--fail-on warn` treats like a warning, so it is a warning here too (not a note, which
# code scanning hides by default), with the policy's message saying what went wrong.
SARIF_LEVELS = {"fail": "error", "warn": "warning", "error": "warning"}


def render_sarif(report: AuditReport, **_: Any) -> str:
    """SARIF 2.1.0 for GitHub code scanning: one run, every policy a rule, problems as results.

    Passes, skips and skipped (non-Kubernetes) documents are not results. Broken input is a
    result of the `fluxwarden/input-error` rule. Objects from a live cluster have a logical
    location (kind, namespace, name) instead of a file.
    """
    report = quoting_prefixes(report)
    rules = _sarif_rules({f.policy for f in report.findings}, not_audited=bool(report.not_audited))
    index = {rule["id"]: number for number, rule in enumerate(rules)}
    results = [
        _sarif_result(finding, index)
        for finding in report.findings
        if finding.result in SARIF_LEVELS
    ]
    results.extend(_sarif_input_error(problem, index) for problem in report.input_errors)
    results.extend(_sarif_not_audited(entry, index) for entry in report.not_audited)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "fluxwarden",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": PROJECT_URL,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _sarif_rules(used: Iterable[str], *, not_audited: bool = False) -> list[dict[str, Any]]:
    descriptions = rule_descriptions()
    # a finding of a policy the registry does not describe still gets a rule to point at
    descriptions.update({name: name for name in sorted(set(used) - set(descriptions))})
    rules = [_sarif_rule(name, summary) for name, summary in descriptions.items()]
    rules.append(
        {
            "id": INPUT_ERROR_RULE,
            "shortDescription": {"text": "A YAML document could not be read or parsed"},
            "fullDescription": {
                "text": "A file could not be read, or a YAML document in it is invalid or not a "
                "mapping: it was not audited. The other documents of the file still were."
            },
            "helpUri": f"{README_URL}#usage",
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["fluxwarden", "yaml"]},
        }
    )
    if not not_audited:  # only a run with such a Kustomization has the rule
        return rules
    rules.append(
        {
            "id": NOT_AUDITED_RULE,
            "shortDescription": {"text": "A Flux Kustomization is not audited by design"},
            "fullDescription": {
                "text": "Its source is not this repo (an OCI artifact, another Git repository, a "
                "bucket; --source maps one to a local checkout) or a remote base is not fetched "
                "(--allow-remote-bases): the files under it that no other Kustomization applies "
                "were not audited."
            },
            "helpUri": f"{README_URL}#what-is-not-audited",
            "defaultConfiguration": {"level": "note"},
            "properties": {"tags": ["fluxwarden", "flux"]},
        }
    )
    return rules


def _sarif_rule(name: str, summary: str) -> dict[str, Any]:
    problem, _, _ = summary.rpartition(": ")
    return {
        "id": name,
        "shortDescription": {"text": problem or summary},
        "fullDescription": {"text": summary},
        "help": {"text": summary},
        "helpUri": f"{README_URL}#fluxwarden",
        # a policy's defining result is a fail (enforce would change or deny the object);
        # advice-only results carry their own level, "warning"
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["fluxwarden", "flux", "kubernetes"]},
    }


def _sarif_result(finding: Finding, rule_index: dict[str, int]) -> dict[str, Any]:
    loc = finding.location
    text = "; ".join(finding.messages) or f"{finding.policy}: {finding.result}"
    location: dict[str, Any]
    if loc.source == CLUSTER_SOURCE:
        location = {
            "logicalLocations": [
                {
                    "kind": "resource",
                    "name": loc.name,
                    "fullyQualifiedName": loc.display_name,
                    "properties": {
                        "apiVersion": loc.api_version,
                        "kind": loc.kind,
                        "namespace": loc.namespace,
                    },
                }
            ]
        }
    else:
        location = _physical_location(loc.source, loc.line)
    identity = "\0".join([loc.source, loc.kind, loc.namespace, loc.name, finding.policy])
    return {
        "ruleId": finding.policy,
        "ruleIndex": rule_index[finding.policy],
        "level": SARIF_LEVELS[finding.result],
        "message": {"text": f"{loc.display_name}: {text}"},
        "locations": [location],
        # stable across line moves: the object and the policy, not the line
        "partialFingerprints": {"fluxwardenObjectPolicy/v1": _digest(identity)},
        "properties": {
            "result": finding.result,
            "mode": finding.mode,
            "action": finding.action,
            "apiVersion": loc.api_version,
            "kind": loc.kind,
            "namespace": loc.namespace,
            "name": loc.name,
            **({"clusters": list(finding.clusters)} if finding.clusters else {}),
        },
    }


def _sarif_input_error(problem: InputProblem, rule_index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": INPUT_ERROR_RULE,
        "ruleIndex": rule_index[INPUT_ERROR_RULE],
        "level": "error",
        "message": {"text": problem.message},
    }
    if problem.source != CLUSTER_SOURCE:  # a cluster read that failed has no file to point at
        result["locations"] = [_physical_location(problem.source, problem.line)]
    result["partialFingerprints"] = {
        "fluxwardenInput/v1": _digest(f"{problem.source}\0{problem.message}")
    }
    return result


def _sarif_not_audited(entry: NotAudited, rule_index: dict[str, int]) -> dict[str, Any]:
    """A note at the Kustomization's file, naming the files under it that were not audited."""
    files = f"; {_plural(len(entry.files), 'file')} under it not audited" if entry.files else ""
    return {
        "ruleId": NOT_AUDITED_RULE,
        "ruleIndex": rule_index[NOT_AUDITED_RULE],
        "level": "note",
        "message": {"text": f"Flux Kustomization {entry.kustomization}: {entry.why}{files}"},
        "locations": [_physical_location(entry.source, 0)],
        "partialFingerprints": {
            "fluxwardenNotAudited/v1": _digest(f"{entry.source}\0{entry.kustomization}")
        },
        "properties": {
            "kustomization": entry.kustomization,
            "files": list(entry.files),
            **({"clusters": list(entry.clusters)} if entry.clusters else {}),
        },
    }


def _physical_location(source: str, line: int) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": artifact_uri(source)},
            "region": {"startLine": max(line, 1)},
        }
    }


def artifact_uri(source: str) -> str:
    """A file as a SARIF URI: relative paths stay relative (forward slashes, percent-encoded);
    an absolute path under the working directory becomes relative to it, any other a file URI."""
    path = PurePath(source)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return Path(path).as_uri()
    # a name that is not UTF-8 (its bytes kept as surrogates): percent-encode those very bytes
    return quote(path.as_posix().encode("utf-8", "surrogateescape"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# --- junit -------------------------------------------------------------------------------------


def render_junit(report: AuditReport, **_: Any) -> str:
    """JUnit XML: a testsuite per file, a testcase per (object, policy) and per input problem.

    fail -> <failure type="fail">, error -> <error type="error">, skip -> <skipped>, warn -> a
    passing testcase whose <system-out> holds the advice. A broken document is a testcase with
    <error type="input-error">; a skipped (non-Kubernetes) document is a <skipped> testcase.
    """
    root = ET.Element("testsuites", name="fluxwarden")
    for source, items in _by_source(quoting_prefixes(report)):
        suite = ET.SubElement(root, "testsuite", name=printable(PurePath(source).as_posix()))
        for item in map(_printable, items):
            if isinstance(item, Finding):
                _junit_finding(suite, item)
            else:
                _junit_problem(suite, item)
        _junit_counts(suite, suite.findall("testcase"))
    _junit_counts(root, root.findall("testsuite/testcase"))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _junit_finding(suite: ET.Element, finding: Finding) -> None:
    loc = finding.location
    case = ET.SubElement(
        suite,
        "testcase",
        classname=suite.get("name", ""),
        name=f"{loc.display_name} {finding.policy}",
    )
    summary = "; ".join(finding.messages)
    body = "\n".join([_where(loc.source, loc.line), *finding.messages])
    if finding.result == "fail":
        ET.SubElement(case, "failure", message=summary, type="fail").text = body
    elif finding.result == "error":
        ET.SubElement(case, "error", message=summary, type="error").text = body
    elif finding.result == "skip":
        ET.SubElement(case, "skipped", message=summary)
    elif finding.result == "warn":
        ET.SubElement(case, "system-out").text = "\n".join(finding.messages)


def _junit_problem(suite: ET.Element, problem: InputProblem) -> None:
    name = f"document at line {problem.line}" if problem.line >= 1 else "input"
    case = ET.SubElement(suite, "testcase", classname=suite.get("name", ""), name=name)
    if problem.error:
        element = ET.SubElement(case, "error", message=problem.message, type="input-error")
        element.text = f"{_where(problem.source, problem.line)}\n{problem.message}"
    else:
        ET.SubElement(case, "skipped", message=problem.message)


def _junit_counts(element: ET.Element, cases: list[ET.Element]) -> None:
    element.set("tests", str(len(cases)))
    for attribute, child in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        element.set(attribute, str(sum(1 for case in cases if case.find(child) is not None)))


# --- dispatch ----------------------------------------------------------------------------------

RENDERERS: dict[str, Callable[..., str]] = {
    "table": render_table,
    "json": render_json,
    "sarif": render_sarif,
    "junit": render_junit,
}


def render(
    report: AuditReport,
    fmt: str,
    *,
    color: bool = False,
    verbose: bool = False,
    show_unreached: bool = False,
) -> str:
    """The report in `fmt` (one of FORMATS). `color`, `verbose` and `show_unreached` only
    change the table."""
    return RENDERERS[fmt](report, color=color, verbose=verbose, show_unreached=show_unreached)
