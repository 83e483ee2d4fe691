"""`fluxwarden fix PATH... [--write]`: the enforced mutations written back into the YAML in Git.

The engine decides (the mutating webhook's policies on each object, lookups from every given
file as `audit` does); this module decides what to change in which file, and `yaml_text` writes
each document's patch into its text (only the patched paths change; comments, key order, quoting
and style stay; the new text must parse to exactly the patched object).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..engine import JsonObject, Lookups, PolicySet
from .documents import Document, yaml_files
from .findings import InputProblem
from .inventory import Inventory, collect, link_notices
from .mapped_sources import MappedInputs
from .offline import evaluate_object
from .plan import Plan, edits_by_document, plan_fixes
from .yaml_text import Patcher, TextEdit, _replace_file, fixed_texts, planned_edit, text_diff


@dataclass
class FixResult:
    """What `fix_paths` did: a unified diff of every file that changes, and what it could not fix."""

    diff: str = ""
    changed_files: list[str] = field(default_factory=list)  # written (or, without write, would be)
    problems: list[InputProblem] = field(default_factory=list)
    fixed_documents: int = 0
    stream: str | None = None  # the fixed text of stdin (`-`), also written to stdout
    notes: list[str] = field(default_factory=list)  # how fixes were written (defaults patches)


@dataclass(frozen=True)
class _Source:
    name: str  # as reported: path as found, "-" for stdin
    path: Path | None  # None for stdin
    text: str


def fix_paths(
    paths: Sequence[str],
    *,
    policy_set: PolicySet,
    write: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    exclude: Sequence[str] = (),
    render: bool = True,
    kustomize: str | None = None,
    per_file: bool = False,
    allow_remote: bool = False,
    audit_unreached: bool = False,
    jobs: int | None = None,
    mapped: MappedInputs | None = None,
) -> FixResult:
    """Fix the YAML files under `paths`; rewrite those that change when `write`.

    The pipeline: the inventory audit evaluates (`inventory.collect`: rendered once, each Flux
    install materialised once, lookups per cluster) -> the plan (`plan.plan_fixes`: edits as
    data) -> the text layer applies each file's edits (`planned_edit`, `fixed_texts`) -> diff, or write.

    A HelmRelease defaults patch of a Flux Kustomization that would cover every failing release
    under it gets the one edit (said in `notes`), unless `per_file`.

    `-` reads a stream from stdin and writes the fixed stream to stdout (never a file); it must
    be the only path.

    Nothing is read or written through a symlink that leads outside `paths`, and no symlinked
    file is rewritten; files are replaced, never written in place. Remote bases are fetched
    only when `allow_remote`. Files of a `mapped` source (--source) outside `paths` are in
    the diff only: `--write` leaves them (another repo: said in `notes`).
    """
    result = FixResult()
    if "-" in paths and len(paths) > 1:
        result.problems.append(
            InputProblem("-", 0, "- (stdin) must be the only PATH: its fix goes to stdout", True)
        )
        return result
    inventory = collect(
        paths,
        exclude=exclude,
        render=render,
        kustomize=kustomize,
        jobs=jobs,
        allow_remote=allow_remote,
        audit_unreached=audit_unreached,
        stdin=stdin,
        mapped=mapped,
    )
    result.problems += _as_fix_problems(inventory)
    plan = plan_fixes(inventory, policy_set=policy_set, per_file=per_file)
    result.problems += plan.problems
    result.notes += plan.notes
    roots = _roots(paths)
    apply_plan(plan, inventory, result, write=write, stdout=stdout, roots=roots, jobs=jobs)
    return result


def _as_fix_problems(inventory: Inventory) -> list[InputProblem]:
    """The inventory's problems as fix says them: skipped documents left out, a broken
    document said to be left as is (the text layer says so too: once is enough)."""
    broken = {
        (d.source, d.line, d.error)
        for ds in inventory.files.values()
        for d in ds
        if d.error and d.text
    }
    return [
        dataclasses.replace(p, message=f"{p.message} (document left as is)")
        if (p.source, p.line, p.message) in broken
        else p
        for p in inventory.problems
        if not p.message.startswith("skipped")
    ]


def apply_plan(
    plan: Plan,
    inventory: Inventory,
    result: FixResult,
    *,
    write: bool,
    stdout: TextIO | None,
    roots: Sequence[Path],
    jobs: int | None = None,
) -> None:
    """Each edited file's new text by the text layer (in forked workers when many), then its
    diff (only without `write`: nothing prints it then) or, with `write`, the file replaced;
    the stream of `-` goes to `stdout` whatever changed."""
    ops = edits_by_document(plan.edits)
    mapped = inventory.mapped
    sources = mapped.mappings.values()
    # without --write a mapped source's files get their diff too (--write leaves them)
    allowed = [*roots] if write else [*roots, *(Path(os.path.realpath(m.path)) for m in sources)]
    edited = {path for path, _ in ops}
    if inventory.stdin is not None:
        edited.add("-")
    diffs: list[str] = []
    planned: list[tuple[str, str, TextEdit]] = []
    seen: set[str] = set()
    names = [p for p in plan.documents if p in edited] + sorted(edited - set(plan.documents))
    for name in sorted(names, key=_symlink_last):
        real = name if name == "-" else os.path.realpath(name)
        if real in seen:
            continue  # a link to a file fixed under its own name
        seen.add(real)
        text = inventory.stdin if name == "-" else _read_text(name, result)
        if text is None:
            continue
        mine = {i: o for (path, i), o in ops.items() if path == name}
        documents, patcher = _patcher(plan.documents.get(name, []), mine)
        planned.append((name, text, planned_edit(text, name, patcher=patcher, documents=documents)))
    fixes = fixed_texts([edit for _, _, edit in planned], jobs=jobs)
    for (name, text, _), fixed in zip(planned, fixes, strict=True):
        result.problems += [p for p in fixed.problems if not _reported(p, result.problems)]
        result.fixed_documents += fixed.fixed_documents
        if name == "-":
            result.stream = fixed.text
            (stdout or sys.stdout).write(fixed.text)
        elif fixed.text != text and _mapped_unwritten(name, result, write, roots, mapped):
            continue
        elif fixed.text != text and _written(Path(name), fixed.text, result, write, allowed):
            result.changed_files.append(name)
            if not write:  # the CLI prints the diff only without --write
                diffs.append(text_diff(text, fixed.text, name))
    result.diff = "".join(diffs)


def _symlink_last(name: str) -> bool:
    return name != "-" and Path(name).is_symlink()


def _read_text(name: str, result: FixResult) -> str | None:
    try:
        return Path(name).read_bytes().decode("utf-8")  # bytes: keep CRLF as it is
    except (OSError, UnicodeDecodeError) as error:
        result.problems.append(InputProblem(name, 0, f"cannot read: {error}", True))
        return None


def _patcher(
    documents: list[Document], ops: dict[int, list[JsonObject]]
) -> tuple[list[Document], Patcher]:
    """The documents to hand the text layer and a patcher that answers each with its planned
    ops. The text layer patches Kubernetes objects only; a kustomization.yaml may leave out
    apiVersion and kind (kustomize defaults them), so an edited one is handed over with them."""
    handed = list(documents)
    by_object: dict[int, list[JsonObject]] = {}
    for position, document_ops in ops.items():
        document = handed[position]
        if not document.is_kubernetes_object and isinstance(document.obj, dict):
            obj = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
            document = dataclasses.replace(document, obj={**obj, **document.obj})
            handed[position] = document
        assert document.obj is not None
        by_object[id(document.obj)] = document_ops

    def patcher(obj: JsonObject) -> list[JsonObject]:
        return by_object.get(id(obj), [])

    return handed, patcher


def _reported(problem: InputProblem, problems: Sequence[InputProblem]) -> bool:
    """Whether `problem` (from the text layer) says again what is already reported: a broken
    document the inventory met."""
    return any(
        p.source == problem.source
        and p.line == problem.line
        and problem.message.startswith(p.message)
        for p in problems
    )


def _written(path: Path, text: str, result: FixResult, write: bool, roots: Sequence[Path]) -> bool:
    """Whether `path` may take its new text (and, with `write`, took it); a refusal or a
    failed write is an error in `result`."""
    refusal = _edit_refusal(path, roots)
    if refusal is not None:
        result.problems.append(InputProblem(str(path), 0, refusal, True))
        return False
    if write:
        try:
            _replace_file(path, text)
        except OSError as error:
            message = f"cannot write: {error.strerror or error}"
            result.problems.append(InputProblem(str(path), 0, message, True))
            return False
    return True


def _mapped_unwritten(
    name: str,
    result: FixResult,
    write: bool,
    roots: Sequence[Path],
    mapped: MappedInputs,
) -> bool:
    """Whether `name` is a file of a mapped source outside the paths given that `--write`
    leaves as it is (said in `result.notes`); without `write` its diff is shown as any."""
    owner = mapped.owner(name)
    real = Path(os.path.realpath(name))
    if owner is None or not write or any(real.is_relative_to(r) for r in roots):
        return False
    result.notes.append(
        f"{name}: not written: a file of {owner.name} (--source {owner.path}), outside the "
        "paths given; `fix` without --write shows its diff"
    )
    return True


def _roots(paths: Sequence[str]) -> list[Path]:
    """The real directories fix may edit files in: each directory given, the directory of
    each file given."""
    roots: list[Path] = []
    for given in paths:
        if given != "-":
            directory = given if os.path.isdir(given) else os.path.dirname(os.path.abspath(given))
            roots.append(Path(os.path.realpath(directory)))
    return roots


def _edit_refusal(path: Path, roots: Sequence[Path]) -> str | None:
    """Why `path` must not be rewritten (None: it may be): a symlink, or outside the paths."""
    if path.is_symlink():
        return "not fixed: a symlink (fix never writes through links)"
    if not any(Path(os.path.realpath(path.parent)).is_relative_to(r) for r in roots):
        return "not fixed: outside the paths given"
    return None


def engine_patcher(*, policy_set: PolicySet, lookups: Lookups) -> Patcher:
    """The mutating webhook's patch for an object read from a file, as a CREATE.

    Only the mutating policies run: the API server applies mutations before validation, so a
    mutation is the right fix in Git even for an object a validating policy would deny.
    """

    def patch_for(obj: JsonObject) -> list[JsonObject]:
        decision = evaluate_object(
            obj,
            policy_set=policy_set,
            lookups=lookups,
            webhook="mutate",
        )
        return decision.patch

    return patch_for


# --- files ---


def _read_sources(
    paths: Sequence[str],
    *,
    stdin: TextIO | None,
    problems: list[InputProblem],
    exclude: Sequence[str] = (),
) -> list[_Source]:
    sources: list[_Source] = []
    seen: set[Path] = set()
    for given in paths:
        if given == "-":
            try:
                text = stdin.read() if stdin else sys.stdin.buffer.read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as error:
                problems.append(InputProblem("-", 0, f"cannot read: {error}", True))
                continue
            sources.append(_Source("-", None, text))
            continue
        path = Path(given)
        if not path.exists():
            problems.append(InputProblem(given, 0, "no such file or directory", True))
            continue
        links, notices = link_notices(given)
        problems += notices
        files = [f for f in yaml_files(path, exclude=exclude) if f not in links]
        for file in sorted(files, key=Path.is_symlink):  # a file before a link to it
            real = file.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                text = file.read_bytes().decode("utf-8")  # bytes: keep CRLF as it is
            except (OSError, UnicodeDecodeError) as error:
                problems.append(InputProblem(str(file), 0, f"cannot read: {error}", True))
                continue
            sources.append(_Source(str(file), file, text))
    return sources
