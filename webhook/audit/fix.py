"""`fluxwarden fix PATH... [--write]`: the enforced mutations written back into the YAML in Git.

The engine decides (the mutating webhook's policies on each object, lookups from every given
file as `audit` does); this module decides what to change in which file, and `yaml_text` writes
each document's patch into its text (only the patched paths change; comments, key order, quoting
and style stay; the new text must parse to exactly the patched object).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from ..engine import JsonObject, Lookups, PolicySet
from ..lookups.offline import OfflineLookups
from .defaults_patch import edited_patch_text, proposals
from .documents import parse_stream, yaml_files
from .findings import AuditReport, InputProblem
from .flux_installs import flux_install, source_index, written_ops
from .fluxinstance import is_flux_instance, user_patches
from .offline import (
    AuditObject,
    confined_materialise,
    evaluate_object,
    link_notices,
    rendered_objects,
    with_flux_instances,
)
from .patch_sources import setting_entry
from .patch_values import plan_by_value
from .render import KustomizeNotFound, find_kustomize
from .sources import field_line
from .yaml_text import (
    Patcher,
    _pointer,
    _replace_file,
    _resolve,
    _round_trip,
    _styled,
    fix_text,
    guess_indent,
    text_diff,
)


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
) -> FixResult:
    """Fix the YAML files under `paths`; rewrite those that change when `write`.

    A HelmRelease defaults patch of a Flux Kustomization that would cover every failing release
    under it gets the one edit (said in `notes`), unless `per_file`.

    `-` reads a stream from stdin and writes the fixed stream to stdout (never a file); it must
    be the only path. Lookups (fleet-controller tolerations, dependencies) come from every
    document of every path.

    Nothing is read or written through a symlink that leads outside `paths`, and no symlinked
    file is rewritten; files are replaced, never written in place. Remote bases are fetched
    only when `allow_remote`.
    """
    result = FixResult()
    policy_set = policy_set.enforcing()  # every change audit reports is made, whatever its mode
    if "-" in paths and len(paths) > 1:
        result.problems.append(
            InputProblem("-", 0, "- (stdin) must be the only PATH: its fix goes to stdout", True)
        )
        return result
    sources = _read_sources(paths, stdin=stdin, problems=result.problems, exclude=exclude)
    roots = _roots(paths)
    parsed = [(source, list(parse_stream(source.text, source.name))) for source in sources]
    rendered: list[AuditObject] = []
    report = AuditReport()
    for given in paths:
        if render and given != "-" and Path(given).is_dir():
            documents = [d for s, ds in parsed if _under(s, given) for d in ds]
            rendered += rendered_objects(
                given,
                documents,
                report,
                kustomize,
                exclude,
                allow_remote=allow_remote,
                audit_unreached=audit_unreached,
            )
    result.problems.extend(p for p in report.problems if not p.message.startswith("skipped"))
    # The lookups audit makes: what Flux applies where a directory was rendered (a Deployment
    # as its patches leave it), the files as written elsewhere.
    rendered_under = [g for g in paths if render and g != "-" and Path(g).is_dir() and rendered]
    # the controllers a Flux install makes are looked up too (helm-controller's feature gates)
    installed = with_flux_instances(rendered, AuditReport(), kustomize)
    lookups = OfflineLookups(
        [o.obj for o in installed]
        + [
            d.obj
            for source, documents in parsed
            if not any(_under(source, given) for given in rendered_under)
            for d in documents
            if d.is_kubernetes_object and d.obj
        ]
    )
    raw_patcher = engine_patcher(policy_set=policy_set, lookups=lookups)
    unreached = set(report.unreached)
    flux_sources = source_index(
        [o.obj for o in rendered] + [d.obj for _, ds in parsed for d in ds if d.obj is not None]
    )
    # a shared file renders once per cluster: every rendering of each written object
    as_rendered: dict[tuple[str, str, str], list[AuditObject]] = {}
    for o in rendered:
        as_rendered.setdefault((o.location.source, o.location.kind, o.location.name), []).append(o)
    generated = {s.name for s in sources if is_generated(s.text)}
    edits_by_document: dict[int, list[JsonObject]] = {}
    covered: set[int] = set()  # id() of rendered releases a defaults-patch edit fixes
    if not per_file and rendered:
        release_patches = {
            id(o): normalised_patch(o.obj, raw_patcher(o.obj))
            for o in rendered
            if o.obj.get("kind") == "HelmRelease"
        }
        all_documents = [d for _, ds in parsed for d in ds]
        for proposal in proposals(all_documents, rendered, release_patches):
            assert proposal.document.obj is not None
            document_edits = edits_by_document.setdefault(id(proposal.document.obj), [])
            if any(e["path"] == proposal.pointer for e in document_edits):
                continue  # one edit per patch text (a second would be on the next run)
            document_edits.append(
                {"op": "replace", "path": proposal.pointer, "value": edited_patch_text(proposal)}
            )
            covered.update(id(r) for r in proposal.releases)
            line = field_line(proposal.document, [proposal.pointer])
            result.notes.append(
                f"{proposal.document.source}:{line}: HelmRelease defaults patch: one edit covers "
                f"{len(proposal.releases)} HelmRelease(s) (--per-file edits each release instead)"
            )
    kustomization_ops: dict[Path, list[tuple[JsonObject, list[JsonObject]]]] = {}
    value_edits: dict[Path, list[tuple[int, int, Any]]] = {}  # (patch, op, new value)
    diffs: list[str] = []
    for source, documents in parsed:
        by_object = {
            id(d.obj): _needing_fix(
                as_rendered.get((source.name, str(d.obj.get("kind")), _name_of(d.obj))), covered
            )
            for d in documents
            if d.obj is not None
        }

        def patcher(
            obj: JsonObject, by_object: Any = by_object, source: _Source = source
        ) -> list[JsonObject]:
            if source.name in unreached:
                return []  # no cluster applies it: neither judged nor fixed
            item = by_object.get(id(obj))
            if id(obj) in edits_by_document:
                return edits_by_document[id(obj)] + (raw_patcher(obj) if item is None else [])
            if item is not None and id(item) in covered:
                return []
            install = flux_install(item.obj if item else obj, flux_sources)
            if install is not None:
                ops, problem = flux_instance_patch(
                    install.instance, patcher=raw_patcher, kustomize=kustomize
                )
                if problem:
                    notice = f"{install.what} not fixed: {problem.message}"
                    result.problems.append(InputProblem(source.name, 0, notice, problem.broken))
                if is_flux_instance(obj):
                    return ops
                return own_patch(obj, item, source) + written_ops(install, obj, ops)
            return own_patch(obj, item, source)

        def own_patch(
            obj: JsonObject, item: AuditObject | None, source: _Source
        ) -> list[JsonObject]:
            if item is None:
                return [] if source.name in generated else raw_patcher(obj)
            patch = normalised_patch(item.obj, raw_patcher(item.obj))
            if _writes_secret(patch, item):
                notice = f"{item.location.kind} not fixed: its fix holds a value from a Secret"
                result.problems.append(InputProblem(source.name, item.location.line, notice, True))
                return []
            if patch and source.name in generated and source.path is not None:
                in_place, rest = _ops_on_setting_patch(item, patch, source.path)
                value_edits.setdefault(source.path, []).extend(in_place)
                kustomization_ops.setdefault(source.path, []).append((item.obj, rest))
                return []
            return patch

        fixed = fix_text(source.text, source.name, patcher=patcher, documents=documents)
        result.problems.extend(fixed.problems)
        result.fixed_documents += fixed.fixed_documents
        if source.path is None:
            result.stream = fixed.text
            (stdout or sys.stdout).write(fixed.text)
            continue
        if fixed.text == source.text:
            continue
        refusal = _edit_refusal(source.path, roots)
        if refusal is not None:
            result.problems.append(InputProblem(source.name, 0, refusal, True))
            continue
        if write:
            try:
                _replace_file(source.path, fixed.text)
            except OSError as error:
                message = f"cannot write: {error.strerror or error}"
                result.problems.append(InputProblem(source.name, 0, message, True))
                continue
        result.changed_files.append(source.name)
        diffs.append(text_diff(source.text, fixed.text, source.name))
    for generated_file, edits in kustomization_ops.items():
        _patch_kustomization(
            generated_file,
            [(obj, ops) for obj, ops in edits if ops],
            value_edits.get(generated_file, []),
            write=write,
            result=result,
            diffs=diffs,
            roots=roots,
        )
    result.diff = "".join(diffs)
    return result


def _needing_fix(items: list[AuditObject] | None, covered: set[int]) -> AuditObject | None:
    """The rendering of a written object to fix it from: one no defaults-patch edit covers
    (that cluster still needs the file's own edit), else any."""
    if not items:
        return None
    return next((o for o in items if id(o) not in covered), items[0])


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


def _writes_secret(patch: list[JsonObject], item: AuditObject) -> bool:
    """Whether a fix would write (and print) a value Flux substitutes from a Secret."""
    if not item.secrets:
        return False
    text = json.dumps(patch)
    return any(json.dumps(secret)[1:-1] in text for secret in item.secrets)


def _under(source: _Source, given: str) -> bool:
    return source.path is not None and source.path.resolve().is_relative_to(Path(given).resolve())


def _name_of(obj: JsonObject) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def is_generated(text: str) -> bool:
    """A file `flux bootstrap` / `flux install --export` writes: `DO NOT EDIT` in its header."""
    return any("DO NOT EDIT" in line for line in text.splitlines()[:5])


def normalised_patch(obj: JsonObject, patch: list[JsonObject]) -> list[JsonObject]:
    """`patch` with an `add` at a list's end written as `/-` (it then applies on top of other
    patches that add to the same list, as the Flux docs write them)."""
    result: list[JsonObject] = []
    for op in patch:
        path = str(op.get("path", ""))
        head, _, last = path.rpartition("/")
        if op.get("op") == "add" and last.isdigit():
            try:
                parent = _resolve(obj, _pointer(head))
            except (KeyError, IndexError, TypeError, ValueError):
                parent = None
            if isinstance(parent, list) and int(last) == len(parent):
                op = {**op, "path": f"{head}/-"}
        result.append(op)
    return result


def _including_kustomization(file: Path) -> Path | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        candidate = file.parent / name
        if candidate.is_file():
            return candidate
    return None


def _ops_on_setting_patch(
    item: AuditObject, patch: list[JsonObject], generated_file: Path
) -> tuple[list[tuple[int, int, Any]], list[JsonObject]]:
    """Split `patch` into new values for the JSON6902 ops of the including kustomization.yaml
    that wrote those very fields ((patch index, op index, value)), and the ops left to add."""
    kustomization = _including_kustomization(generated_file)
    in_place: list[tuple[int, int, Any]] = []
    rest: list[JsonObject] = []
    for op in patch:
        found = setting_entry(item.patches, item.obj, str(op.get("path", "")))
        pointer = re.fullmatch(r"/patches/(\d+)/patch", found[0].pointer) if found else None
        if (
            op.get("op") == "replace"
            and found is not None
            and pointer is not None
            and found[1] is not None
            and kustomization is not None
            and Path(found[0].document.source).resolve() == kustomization.resolve()
        ):
            in_place.append((int(pointer.group(1)), found[1], op.get("value")))
        else:
            rest.append(op)
    return in_place, rest


def _with_values(text: str, values: list[tuple[int, Any]]) -> str:
    """A JSON6902 patch text with some ops' values replaced, comments and layout kept."""
    rt = _round_trip(*guess_indent(text))
    ops = rt.load(text)
    for index, value in values:
        ops[index]["value"] = _styled(value, like=ops[index].get("value"))
    out = StringIO()
    rt.dump(ops, out)
    return out.getvalue()


def _patch_kustomization(
    generated_file: Path,
    edits: list[tuple[JsonObject, list[JsonObject]]],
    value_edits: list[tuple[int, int, Any]],
    *,
    write: bool,
    result: FixResult,
    diffs: list[str],
    roots: Sequence[Path],
) -> None:
    """Fixes for objects of a generated file in the kustomization.yaml that includes it: a new
    value for the op of a patch there that wrote the field, else JSON6902 patches (target kind
    + name) merged into a patch with the same target; an op already there is never added again."""
    kustomization = _including_kustomization(generated_file)
    if kustomization is None:
        message = "not fixed: generated file (DO NOT EDIT) with no kustomization.yaml to patch"
        result.problems.append(InputProblem(str(generated_file), 1, message, True))
        return
    refusal = _edit_refusal(kustomization, roots)
    if refusal is not None:
        result.problems.append(InputProblem(str(kustomization), 0, refusal, True))
        return
    old = kustomization.read_text(encoding="utf-8")
    rt = _round_trip(*guess_indent(old))
    tree = rt.load(old)
    patches = tree.setdefault("patches", CommentedSeq())
    by_patch: dict[int, list[tuple[int, Any]]] = {}
    for patch_index, op_index, value in value_edits:
        by_patch.setdefault(patch_index, []).append((op_index, value))
    for patch_index, values in by_patch.items():
        patches[patch_index]["patch"] = LiteralScalarString(
            _with_values(str(patches[patch_index]["patch"]), values)
        )
    replaced, added = merge_json6902(list(patches), edits)
    for index, text in replaced.items():
        patches[index]["patch"] = LiteralScalarString(text)
    for entry in _like_siblings(list(patches), added):
        patches.append(
            CommentedMap(
                (k, CommentedMap(v) if k == "target" else LiteralScalarString(v))
                for k, v in entry.items()
            )
        )
    out = StringIO()
    rt.dump(tree, out)
    new = out.getvalue()
    if new == old:
        return
    if write:
        _replace_file(kustomization, new)
    result.changed_files.append(str(kustomization))
    diffs.append(text_diff(old, new, str(kustomization)))


def merge_json6902(
    patches: list[Any], edits: list[tuple[JsonObject, list[JsonObject]]]
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Each object's ops as a JSON6902 patch (target kind + name) among `patches`, the way
    the Flux docs write them: merged into the patch with the same target when there is one
    (index -> its new text), else a new entry; an op already there is never added again."""
    replaced: dict[int, str] = {}
    added: list[dict[str, Any]] = []
    for obj, ops in edits:
        target = {"kind": str(obj.get("kind")), "name": _name_of(obj)}
        index = next(
            (
                i
                for i, p in enumerate(patches)
                if isinstance(p, dict)
                and dict(p.get("target") or {}) == target
                and isinstance(p.get("patch"), str)
                and isinstance(yaml.safe_load(p["patch"]), list)
            ),
            None,
        )
        new_entry = next((a for a in added if a["target"] == target), None)
        if index is not None:
            existing = yaml.safe_load(replaced.get(index) or patches[index]["patch"])
        else:
            existing = yaml.safe_load(new_entry["patch"]) if new_entry else []
        merged = _merged_ops(existing, ops)
        if merged == existing:
            continue
        text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
        if index is not None:
            replaced[index] = text
        elif new_entry is not None:
            new_entry["patch"] = text
        else:
            added.append({"patch": text, "target": target})
    return replaced, added


def _like_siblings(patches: list[Any], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New entries with `target` first when the entries already there write it first."""
    first = next((next(iter(p), None) for p in patches if isinstance(p, dict) and p), None)
    if first != "target":
        return added
    return [{"target": a["target"], "patch": a["patch"]} for a in added]


def _merged_ops(existing: list[Any], ops: list[JsonObject]) -> list[Any]:
    """`existing` with `ops` added; an op that writes a path an existing op already writes
    (not an append) replaces that op's value instead of writing the path twice."""
    merged = [dict(op) if isinstance(op, dict) else op for op in existing]
    for op in ops:
        if op in merged:
            continue
        same = next(
            (
                m
                for m in merged
                if isinstance(m, dict)
                and m.get("path") == op.get("path")
                and m.get("op") in ("add", "replace")
                and op.get("op") in ("add", "replace")
                and not str(op.get("path", "")).endswith("/-")
            ),
            None,
        )
        if same is not None:
            same["value"] = op.get("value")
        else:
            merged.append(op)
    return merged


@dataclass(frozen=True)
class InstanceProblem:
    message: str
    broken: bool  # the instance's own patches do not apply: an input error


def flux_instance_patch(
    instance: JsonObject, *, patcher: Patcher, kustomize: str | None
) -> tuple[list[JsonObject], InstanceProblem | None]:
    """The JSONPatch of a FluxInstance that writes its controllers' fixes into its
    `spec.kustomize.patches` (merged, never repeated), and a problem when it cannot be told."""
    patches = user_patches(instance)
    try:
        command = find_kustomize(kustomize) if patches else []
    except KustomizeNotFound as error:
        return [], InstanceProblem(str(error), False)
    materialised = confined_materialise(instance, command)
    replaced, added = _instance_edits(patches, materialised.deployments, patcher)
    ops: list[JsonObject] = [
        {"op": "replace", "path": f"/spec/kustomize/patches/{i}/patch", "value": text}
        for i, text in replaced.items()
    ]
    spec = instance.get("spec") if isinstance(instance.get("spec"), dict) else None
    if added and spec is None:
        ops.append({"op": "add", "path": "/spec", "value": {"kustomize": {"patches": added}}})
    elif added and not isinstance((spec or {}).get("kustomize"), dict):
        ops.append({"op": "add", "path": "/spec/kustomize", "value": {"patches": added}})
    elif added and not isinstance((spec or {})["kustomize"].get("patches"), list):
        ops.append({"op": "add", "path": "/spec/kustomize/patches", "value": added})
    else:
        added = _like_siblings(patches, added)
        ops += [{"op": "add", "path": "/spec/kustomize/patches/-", "value": a} for a in added]
    if materialised.deployments or materialised.problem is None:
        return ops, None
    return ops, InstanceProblem(materialised.problem, materialised.broken)


def _instance_edits(
    patches: list[Any], deployments: list[JsonObject], patcher: Patcher
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """The instance's patches edited by value (`patch_values`), then what is left merged in."""
    texts: dict[int, str] = {}
    rest: list[tuple[JsonObject, list[JsonObject]]] = []
    merges: list[dict[str, Any]] = []  # strategic-merge patches: volumes by name
    for deployment in deployments:
        ops = normalised_patch(deployment, patcher(deployment))
        if not ops:
            continue
        current = [{**p, "patch": texts[i]} if i in texts else p for i, p in enumerate(patches)]
        plan = plan_by_value(current, deployment, ops)
        texts.update(plan.texts)
        if plan.ops:
            rest.append((deployment, plan.ops))
        merge = plan.merge_patch(deployment)
        if merge is not None:
            target = {"kind": str(deployment.get("kind")), "name": _name_of(deployment)}
            text = yaml.safe_dump(merge, sort_keys=False, default_flow_style=False)
            merges.append({"patch": text, "target": target})
    current = [{**p, "patch": texts[i]} if i in texts else p for i, p in enumerate(patches)]
    replaced, added = merge_json6902(current, rest)
    edited = {**texts, **replaced}
    for index, text in edited.items():  # keep the block's chomping: `|-` stays `|-`
        if isinstance(patches[index].get("patch"), str) and not patches[index]["patch"].endswith(
            "\n"
        ):
            edited[index] = text.rstrip("\n")
    return edited, added + merges


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
