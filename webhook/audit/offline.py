"""`fluxwarden audit PATH...`: the policies over what Flux would apply, lookups from that set.

A directory is rendered as Flux renders it (`render.py`); files no Flux Kustomization reaches,
single files and stdin are audited as they are.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..engine import (
    Decision,
    JsonObject,
    Lookups,
    PolicySet,
    Webhook,
    evaluate,
    request_for,
    target_of,
)
from ..engine.policies import ALL_POLICIES
from ..lookups.offline import OfflineLookups
from .clusters import Cluster, clusters_of, with_sync_entries
from .confinement import KUSTOMIZATION_FILES, Confinement, outside_links
from .documents import (
    Document,
    Skipped,
    excluded,
    is_alias_bomb,
    load,
    load_yaml,
    yaml_files,
)
from .findings import AuditReport, Finding, InputProblem, ObjectLocation
from .flux_installs import FluxInstall, flux_install, source_index
from .fluxinstance import Materialised, materialise, user_patches
from .patch_sources import PatchEntry, entries_of, kustomization_entries, setting_patch
from .redaction import hide_secrets, secret_data, without_secrets
from .render import KustomizeNotFound, Rendering, find_kustomize, render_clusters
from .sources import field_line
from .workers import jobs_for, ordered_map, paused_gc


def evaluate_object(
    obj: JsonObject,
    *,
    policy_set: PolicySet,
    lookups: Lookups,
    webhook: Webhook = "all",
) -> Decision:
    """The one place the audit and fix call the engine: `obj` as a CREATE."""
    return evaluate(
        obj,
        request=request_for(obj),
        policy_set=policy_set,
        lookups=lookups,
        webhook=webhook,
    )


def location_of(document: Document) -> ObjectLocation:
    obj = document.obj or {}
    target = target_of(obj)
    return ObjectLocation(
        document.source,
        document.line,
        target.api_version,
        target.kind,
        target.namespace,
        target.name,
    )


@dataclass(frozen=True)
class AuditObject:
    """An object to evaluate, where it is reported, and postBuild variables unknown offline."""

    obj: JsonObject
    location: ObjectLocation
    unknown: tuple[str, ...] = ()
    document: Document | None = None  # the source document, to point at a field's line
    patches: tuple[PatchEntry, ...] = ()  # patches that may have set its fields, in order
    note: str | None = None  # said with each of its fail/warn findings (how it was rendered)
    kustomization: str = ""  # namespace/name of the Flux Kustomization that rendered it
    secrets: tuple[str, ...] = ()  # values substituted from Secrets: never printed
    cluster: str = ""  # the cluster whose render applies it ("": the repo is one cluster)


def audit_documents(
    documents: Iterable[Document], *, policy_set: PolicySet, jobs: int | None = None
) -> AuditReport:
    """Evaluate every Kubernetes object in `documents` as a CREATE through both webhooks; many
    objects are evaluated by `jobs` processes (None: one per CPU), with the same report."""
    with paused_gc():
        report = AuditReport()
        objects = _objects_of(documents, report)
        return _evaluate_all(objects, report, policy_set=policy_set, jobs=jobs)


def _objects_of(documents: Iterable[Document], report: AuditReport) -> list[AuditObject]:
    objects: list[AuditObject] = []
    for document in documents:
        if document.error is not None:
            report.problems.append(
                InputProblem(document.source, document.line, document.error, True)
            )
        elif not document.is_kubernetes_object:
            report.problems.append(
                InputProblem(
                    document.source,
                    document.line,
                    "skipped: not a Kubernetes object (no apiVersion/kind)",
                    False,
                )
            )
        else:
            assert document.obj is not None
            objects.append(AuditObject(document.obj, location_of(document), (), document))
    return objects


def _evaluate_all(
    objects: Sequence[AuditObject],
    report: AuditReport,
    *,
    policy_set: PolicySet,
    jobs: int | None = 1,
) -> AuditReport:
    lookups = OfflineLookups(o.obj for o in objects)
    progress = _Progress(len(objects))

    def findings_of(items: Sequence[AuditObject]) -> list[Finding]:
        return [f for i in items for f in _findings(i, policy_set=policy_set, lookups=lookups)]

    done = 0
    progress.show(done)
    workers = jobs_for(len(objects), jobs)
    for count, findings in ordered_map(
        findings_of, objects, jobs=workers, encode=_as_fields, decode=_from_fields
    ):
        report.findings += findings
        done += count
        progress.show(done)
    report.objects += len(objects)
    progress.done()
    return report


def _as_fields(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """Findings as plain tuples (a worker sends them back by marshal, far faster than pickled
    dataclasses); the findings of one object share their location tuple."""
    locations: dict[int, tuple[Any, ...]] = {}
    fields: list[Any] = []
    for f in findings:
        where = f.location
        location = locations.get(id(where))
        if location is None:
            location = locations[id(where)] = (
                where.source,
                where.line,
                where.api_version,
                where.kind,
                where.namespace,
                where.name,
            )
        fields.append((location, f.policy, f.mode, f.result, f.action, f.messages))
    return fields


def _from_fields(fields: list[tuple[Any, ...]]) -> list[Finding]:
    locations: dict[tuple[Any, ...], ObjectLocation] = {}
    findings: list[Finding] = []
    for location, policy, mode, result, action, messages in fields:
        where = locations.get(location)
        if where is None:
            where = locations[location] = ObjectLocation(*location)
        findings.append(Finding(where, policy, mode, result, action, tuple(messages)))
    return findings


def _findings(item: AuditObject, *, policy_set: PolicySet, lookups: Lookups) -> list[Finding]:
    """One object's findings, each at the line it is about."""
    decision = evaluate_object(item.obj, policy_set=policy_set, lookups=lookups)
    mutating = [r for r in decision.results if r.result == "fail" and r.action == "mutated"]
    findings: list[Finding] = []
    for result in decision.results:
        location = item.location
        if len(mutating) == 1 and result is mutating[0]:
            location = _field_location(item, [str(op.get("path", "")) for op in decision.patch])
        elif result.result in ("fail", "warn") and (named := _named_field(result.messages)):
            location = _field_location(item, [named])
        finding = Finding.of(location, result)
        if item.unknown and finding.result in ("fail", "warn", "error"):
            finding = _unknown(finding, item, decision)
        if item.note and finding.result in ("fail", "warn", "error"):
            finding = dataclasses.replace(finding, messages=(*finding.messages, item.note))
        findings.append(finding)
    secrets = (*item.secrets, *secret_data(item.obj))
    return [without_secrets(f, secrets) for f in findings] if secrets else findings


def _named_field(messages: Sequence[str]) -> str | None:
    """The JSON pointer of the field a message starts with (`spec.interval 12h is ...`)."""
    first = messages[0].split(" ", 1)[0] if messages else ""
    if not re.fullmatch(r"spec(\.[A-Za-z][A-Za-z0-9]*)+", first):
        return None
    return "/" + first.replace(".", "/")


def _field_location(item: AuditObject, paths: list[str]) -> ObjectLocation:
    """Where the mutated field is written: the patch that set it, else the field's line in
    the object's own file."""
    by_patch = setting_patch(item.patches, item.obj, paths)
    if by_patch is not None:
        return dataclasses.replace(item.location, source=by_patch[0], line=by_patch[1])
    if item.document is not None:
        return dataclasses.replace(item.location, line=field_line(item.document, paths))
    return item.location


def _unknown(finding: Finding, item: AuditObject, decision: Decision) -> Finding:
    """A finding that depends on a `${VAR}` Flux substitutes from a source not in the repo
    is reported as unknown (skip), never as a violation."""
    placeholders = _placeholder_paths(item.obj)
    touched = [str(op.get("path", "")) for op in decision.patch]
    depends = any("${" in m for m in finding.messages) or any(
        p.startswith(t) or t.startswith(p) for p in placeholders for t in touched
    )
    if not depends:
        return finding
    names = ", ".join(f"${{{v}}}" for v in item.unknown)
    message = f"unknown offline: depends on {names}, substituted by Flux from outside the repo"
    return Finding(
        finding.location, finding.policy, finding.mode, "skip", "none", (message, *finding.messages)
    )


def _placeholder_paths(obj: Any, prefix: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _placeholder_paths(v, f"{prefix}/{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _placeholder_paths(v, f"{prefix}/{i}")]
    return [prefix] if isinstance(obj, str) and "${" in obj else []


class _Progress:
    """`audited N/M objects` on stderr, only on a terminal and only for long runs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = total >= 2000 and sys.stderr.isatty()

    def show(self, number: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\rfluxwarden: audited {number}/{self.total} objects")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


def audit_paths(
    paths: Sequence[str],
    *,
    policy_set: PolicySet,
    exclude: Sequence[str] = (),
    render: bool = True,
    kustomize: str | None = None,
    jobs: int | None = None,
    allow_remote: bool = False,
    audit_unreached: bool = False,
) -> AuditReport:
    """Audit files, directories and `-`: each directory rendered as Flux applies it (files no
    cluster applies only with `audit_unreached`). Many files and objects are parsed and
    evaluated by `jobs` processes (None: one per CPU). Remote bases are fetched only when
    `allow_remote`."""
    with paused_gc():
        return _audit_paths(
            paths,
            policy_set=policy_set,
            exclude=exclude,
            render=render,
            kustomize=kustomize,
            jobs=jobs,
            allow_remote=allow_remote,
            audit_unreached=audit_unreached,
        )


def _audit_paths(
    paths: Sequence[str],
    *,
    policy_set: PolicySet,
    exclude: Sequence[str],
    render: bool,
    kustomize: str | None,
    jobs: int | None,
    allow_remote: bool,
    audit_unreached: bool,
) -> AuditReport:
    report = AuditReport()
    objects: list[AuditObject] = []
    for given in paths:
        skipped = Skipped()
        documents = confined_load(given, exclude=exclude, skipped=skipped, jobs=jobs, report=report)
        for chart in skipped.charts:
            report.problems.append(
                InputProblem(str(chart), 0, "skipped: Helm chart (Chart.yaml)", False)
            )
        if render and given != "-" and Path(given).is_dir():
            objects += rendered_objects(
                given,
                documents,
                report,
                kustomize,
                exclude,
                allow_remote=allow_remote,
                audit_unreached=audit_unreached,
            )
        else:
            objects += _objects_of(documents, report)
    if render:
        objects = with_flux_instances(objects, report, kustomize)
    return _evaluate_clusters(objects, report, policy_set=policy_set, jobs=jobs)


def _evaluate_clusters(
    objects: Sequence[AuditObject],
    report: AuditReport,
    *,
    policy_set: PolicySet,
    jobs: int | None,
) -> AuditReport:
    """Each cluster's objects evaluated with that cluster's lookups (names repeat across
    clusters); a finding several clusters share is one finding naming them all."""
    by_cluster: dict[str, list[AuditObject]] = {}
    for item in objects:
        by_cluster.setdefault(item.cluster, []).append(item)
    if set(by_cluster) <= {""}:
        return _evaluate_all(objects, report, policy_set=policy_set, jobs=jobs)
    merged: dict[Finding, list[str]] = {}
    for cluster, items in by_cluster.items():
        part = _evaluate_all(items, AuditReport(), policy_set=policy_set, jobs=jobs)
        report.objects += part.objects
        for finding in part.findings:
            merged.setdefault(finding, []).extend([cluster] if cluster else [])
    report.findings += [
        dataclasses.replace(f, clusters=tuple(sorted(set(names)))) for f, names in merged.items()
    ]
    return report


def link_notices(given: str) -> tuple[set[Path], list[InputProblem]]:
    """The symlinks under directory `given` that resolve outside it (never followed), each
    with a notice naming it."""
    if given == "-" or not Path(given).is_dir():
        return set(), []
    links = outside_links(Path(given))
    notices = [
        InputProblem(str(link), 0, f"not read: a symlink to outside {given}", False)
        for link in links
    ]
    return set(links), notices


def confined_load(
    given: str, *, exclude: Sequence[str], skipped: Skipped, jobs: int | None, report: AuditReport
) -> list[Document]:
    """The documents of `given`, without the files of symlinks that lead outside it."""
    links, notices = link_notices(given)
    report.problems += notices
    if not links:
        return list(load([given], exclude=exclude, skipped=skipped, jobs=jobs))
    files = [
        str(f)
        for f in yaml_files(Path(given), exclude=exclude, skipped=skipped)
        if Path(os.path.normpath(f)) not in links
    ]
    return list(load(files, jobs=jobs))


def with_flux_instances(
    objects: Sequence[AuditObject], report: AuditReport, kustomize: str | None
) -> list[AuditObject]:
    """`objects` plus, after each Flux install (a FluxInstance, a `flux-instance` chart release,
    a `flux-manifests` Kustomization), the controller Deployments it installs (their findings
    point at the install's file: that is where its user edits them)."""
    sources = source_index([o.obj for o in objects])
    result: list[AuditObject] = []
    for item in objects:
        result.append(item)
        install = flux_install(item.obj, sources)
        if install is not None:
            result += flux_instance_objects(item, install, report, kustomize)
    return result


def flux_instance_objects(
    item: AuditObject, install: FluxInstall, report: AuditReport, kustomize: str | None
) -> list[AuditObject]:
    where, line = item.location.source, item.location.line
    name = install.what
    instance = install.instance
    command: list[str] = []
    if user_patches(instance):
        try:
            command = find_kustomize(kustomize)
        except KustomizeNotFound as error:
            report.problems.append(InputProblem(where, line, f"{name}: {error}", False))
            return []
    materialised = confined_materialise(instance, command)
    if materialised.problem:
        message = hide_secrets(f"{name}: {materialised.problem}", item.secrets)
        report.problems.append(InputProblem(where, line, message, materialised.broken))
    spec = instance.get("spec") if isinstance(instance.get("spec"), dict) else {}
    version = str(((spec or {}).get("distribution") or {}).get("version") or "")
    note = f"from {name} (Flux {version!r} controller defaults, its patches applied)"
    patches = (
        tuple(entries_of(item.document, install.patches_pointer, user_patches(instance)))
        if item.document is not None
        else ()
    )
    listed = (spec or {}).get("components")
    objects: list[AuditObject] = []
    for deployment in materialised.deployments:
        target = target_of(deployment)
        component_line = line
        if item.document is not None:
            pointer = "/spec/distribution/version"
            if isinstance(listed, list) and target.name in listed:
                pointer = f"/spec/components/{listed.index(target.name)}"
            written = install.pointer(pointer)
            component_line = field_line(item.document, [written]) if written else line
        location = ObjectLocation(
            where, component_line, target.api_version, target.kind, target.namespace, target.name
        )
        objects.append(
            AuditObject(
                deployment,
                location,
                item.unknown,
                None,
                patches,
                note,
                secrets=item.secrets,
                cluster=item.cluster,
            )
        )
    return objects


def confined_materialise(instance: JsonObject, command: list[str]) -> Materialised:
    """`materialise`, unless a `spec.kustomize.patches` entry is more than an inline patch
    (`patch`, `target`: the operator's API): a `path` would have kustomize read that file."""
    for entry in user_patches(instance):
        if not isinstance(entry, dict) or set(entry) - {"patch", "target"}:
            problem = f"spec.kustomize.patches: only inline patches are built, not {entry!r}"
            return Materialised([], problem[:300])
    return materialise(instance, command)


def rendered_objects(
    given: str,
    documents: list[Document],
    report: AuditReport,
    kustomize: str | None,
    exclude: Sequence[str],
    *,
    allow_remote: bool = False,
    audit_unreached: bool = False,
) -> list[AuditObject]:
    """The objects Flux applies from directory `given` (documents: its files), each cluster
    rendered on its own; build problems go to `report` (notices, or errors when a build fails or
    would read outside `given`). Files no cluster applies are listed in `report.unreached`, not
    judged, unless `audit_unreached` (then they are audited as written, with a note). Remote
    bases are fetched only when `allow_remote`."""
    from .render import is_flux_kustomization

    if not any(d.obj is not None and is_flux_kustomization(d.obj) for d in documents):
        return _objects_of(documents, report)
    if any(is_alias_bomb(d) for d in documents):  # kustomize would expand it: gigabytes
        refused = "not rendered: a file has a YAML alias bomb; files audited as they are"
        report.problems.append(InputProblem(given, 0, refused, False))
        return _objects_of(documents, report)
    try:
        command = find_kustomize(kustomize)
    except KustomizeNotFound as error:
        report.problems.append(InputProblem(given, 0, f"{error}: files audited as they are", False))
        return _objects_of(documents, report)
    root = Path(given)
    clusters = clusters_of(root, documents) or [Cluster("", tuple(documents))]
    objects: list[AuditObject] = []
    reached_files: set[Path] = set()
    entries = [with_sync_entries(cluster.documents) for cluster in clusters]
    renderings = render_clusters(root, entries, command, allow_remote=allow_remote)
    for cluster, rendering in zip(clusters, renderings, strict=True):
        secrets = _rendering_problems(rendering, report, root=root, given=given, cluster=cluster)
        objects += _objects_of_rendering(
            rendering,
            documents,
            root=root,
            given=given,
            exclude=exclude,
            cluster=cluster.name,
            secrets=secrets,
        )
        reached_files |= rendering.reached
        if cluster.name:  # the cluster's directory is what its bootstrap sync applies
            objects += _entry_objects(cluster, rendering.reached)
            reached_files |= {Path(d.source).resolve() for d in cluster.documents}
    reached = {str(_display(p, root, given)) for p in reached_files}
    unreached = [d for d in documents if d.source not in reached]
    as_written = _objects_of(unreached, report)
    if not objects:
        return as_written  # nothing rendered: every file is audited as written, as before
    if not audit_unreached:
        applied = [o for o in as_written if not _is_build_configuration(o.obj)]
        report.unreached += sorted({o.location.source for o in applied})
        return objects
    where = "any cluster" if len(clusters) > 1 else "any Flux Kustomization"
    note = f"not reached by {where} under {given}: audited as written"
    return objects + [dataclasses.replace(o, note=note) for o in as_written]


def _rendering_problems(
    rendering: Rendering, report: AuditReport, *, root: Path, given: str, cluster: Cluster
) -> tuple[str, ...]:
    """Report one cluster's build problems (files named as given, Secret values hidden);
    returns the values its objects substitute from Secrets."""
    # a value substituted from a Secret may be quoted about any object (a dependency's name);
    # elsewhere than in its own object, a value this short is no secret and would garble text
    secrets = tuple(sorted({v for o in rendering.objects for v in o.secrets if len(v) >= 4}))
    for problem in rendering.problems:  # render names files by their real (absolute) paths
        where = Path(problem.source)
        shown = _display(where, root, given) if where.is_relative_to(root.resolve()) else given
        source = shown if where.is_absolute() else problem.source
        message = hide_secrets(problem.message, secrets)
        if cluster.name:
            message = f"{cluster.name}: {message}"
        report.problems.append(InputProblem(str(source), 0, message, problem.error))
    return secrets


def _named(key: str) -> str:
    """namespace/name, or the name and why there is no namespace (never `/name`)."""
    namespace, _, name = key.partition("/")
    return key if namespace else f"{name} (no namespace in its file)"


def _entry_objects(cluster: Cluster, rendered: set[Path]) -> list[AuditObject]:
    """The objects of a cluster directory's files no render of it read (its entry point's own
    manifests, e.g. when its sync is not in Git), as written, in that cluster."""
    return [
        dataclasses.replace(AuditObject(d.obj, location_of(d), (), d), cluster=cluster.name)
        for d in cluster.documents
        if d.obj is not None
        and d.is_kubernetes_object
        and d.text
        and not _is_build_configuration(d.obj)
        and Path(d.source).resolve() not in rendered
    ]


def _is_build_configuration(obj: JsonObject) -> bool:
    """A kustomization.yaml or Component: read by builds, never applied itself."""
    return str(obj.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def _objects_of_rendering(
    rendering: Rendering,
    documents: list[Document],
    *,
    root: Path,
    given: str,
    exclude: Sequence[str],
    cluster: str,
    secrets: tuple[str, ...],
) -> list[AuditObject]:
    """The audit's objects of one cluster's rendering, each with its file, line and patches."""
    from .render import is_flux_kustomization

    lines = _document_lines(documents)
    directory_patches: dict[Path, list[PatchEntry]] = {}
    by_name = {(d.source, _kind(d.obj), _name(d.obj)): d for d in documents if d.obj is not None}
    flux_documents = {
        _flux_key(d.obj): d for d in documents if d.obj is not None and is_flux_kustomization(d.obj)
    }
    for rendered in rendering.objects:  # this cluster's file of each Flux Kustomization name
        if rendered.source is not None and is_flux_kustomization(rendered.obj):
            where = _display(rendered.source, root, given)
            written = by_name.get((where, "Kustomization", _name(rendered.obj)))
            if written is not None:
                flux_documents[_flux_key(rendered.obj)] = written
    objects: list[AuditObject] = []
    unreached_from = _unreached_kustomizations(rendering.parents)
    for item in rendering.objects:
        if item.source and excluded(item.source.relative_to(root.resolve()), exclude):
            continue
        source = _display(item.source, root, given) if item.source else given
        line = lines.get((source, _kind(item.obj), _name(item.obj))) or lines.get(
            (source, _kind(item.obj), "")
        )
        target = target_of(item.obj)
        location = ObjectLocation(
            source, line or 0, target.api_version, target.kind, target.namespace, target.name
        )
        document = by_name.get((source, _kind(item.obj), _name(item.obj)))
        patches = _patches_for(
            item.source, item.kustomization, root, given, flux_documents, directory_patches
        )
        note = None
        if item.kustomization in unreached_from:
            note = (
                f"its Flux Kustomization {_named(item.kustomization)} is not reached from "
                f"{_named(unreached_from[item.kustomization])}: audited as its own file renders it"
            )
        objects.append(
            AuditObject(
                item.obj,
                location,
                item.unknown,
                document,
                patches,
                note,
                item.kustomization,
                secrets=tuple(sorted({*item.secrets, *secrets})),
                cluster=cluster,
            )
        )
    return objects


def _unreached_kustomizations(parents: dict[str, str | None]) -> dict[str, str]:
    """Flux Kustomizations rendered only from their own file while the repo has an entry point
    (a Kustomization that renders others, like flux-system): key -> the entry points, said in
    their findings. Without such an entry point every Kustomization is a root of its own."""

    def root(key: str) -> str:
        seen: set[str] = set()
        while parents.get(key) is not None and key not in seen:
            seen.add(key)
            key = str(parents[key])
        return key

    with_children = {p for p in parents.values() if p is not None}
    roots = [k for k, p in parents.items() if p is None]
    entry_points = sorted(k for k in roots if k in with_children)
    if not entry_points:
        return {}
    orphans = {k for k in roots if k not in with_children}
    named = ", ".join(entry_points)
    return {k: named for k in parents if root(k) in orphans}


def _flux_key(obj: JsonObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _patches_for(
    source: Path | None,
    kustomization: str,
    root: Path,
    given: str,
    flux_documents: dict[str, Document],
    directory_patches: dict[Path, list[PatchEntry]],
) -> tuple[PatchEntry, ...]:
    """The patches that may have set a rendered object's fields, in the order kustomize and
    Flux apply them: kustomization.yaml files from the object's directory outwards, then the
    Flux Kustomization's `spec.patches`."""
    entries: list[PatchEntry] = []
    if source is not None:
        directory = source.parent
        base = root.resolve()
        while directory.is_relative_to(base):
            if directory not in directory_patches:  # many objects share a directory
                shown = _display(directory, root, given)
                directory_patches[directory] = _confined_entries(directory, shown, base)
            entries += directory_patches[directory]
            if directory == base:
                break
            directory = directory.parent
    flux = flux_documents.get(kustomization) or next(
        (d for k, d in flux_documents.items() if k.split("/")[1] == kustomization.split("/")[1]),
        None,
    )
    if flux is not None and flux.obj is not None:
        spec = flux.obj.get("spec") if isinstance(flux.obj.get("spec"), dict) else {}
        entries += entries_of(flux, "/spec/patches", (spec or {}).get("patches"))
    return tuple(entries)


def _confined_entries(directory: Path, shown: str, root: Path) -> list[PatchEntry]:
    """The patches of `directory`'s kustomization, none when it names files outside `root`
    (they are never read)."""
    file = next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
    if file is None:
        return []
    if not _under_root(file, root):
        return []
    try:
        content = load_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return []
    confinement = Confinement(root, allow_remote=True)
    if isinstance(content, dict) and confinement.refusals(directory, content, file):
        return []
    return kustomization_entries(directory, shown)


def _under_root(file: Path, root: Path) -> bool:
    return Path(os.path.realpath(file)).is_relative_to(os.path.realpath(root))


def _display(path: Path, root: Path, given: str) -> str:
    """`path` as the user would write it: under the PATH they gave."""
    return str(Path(given) / path.relative_to(root.resolve()))


def _kind(obj: JsonObject) -> str:
    return str(obj.get("kind") or "")


def _name(obj: JsonObject) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _document_lines(documents: Sequence[Document]) -> dict[tuple[str, str, str], int]:
    lines: dict[tuple[str, str, str], int] = {}
    for d in documents:
        if d.obj is None:
            continue
        lines.setdefault((d.source, _kind(d.obj), _name(d.obj)), d.line)
        lines.setdefault((d.source, _kind(d.obj), ""), d.line)
    return lines


def rule_descriptions() -> dict[str, str]:
    """policy name -> one-line summary, for outputs that describe their rules (SARIF)."""
    return {name: policy.summary for name, policy in ALL_POLICIES.items()}
