"""The inventory: what the paths given hold and what Flux applies from them, collected once.

Per path and per cluster: the documents of each file, the objects Flux applies (each
`AuditObject` with its file, line, patches and cluster, the controller Deployments of every Flux
install included), the problems met on the way and the files no cluster applies. `audit` evaluates
it and `fix` plans from it: both see the same objects, rendered and materialised once, and look
them up through the one `lookups(cluster)`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from ..engine import JsonObject, target_of
from ..lookups.offline import OfflineLookups
from .audit_object import AuditObject, location_of
from .clusters import Cluster, clusters_of, with_sync_entries
from .confinement import KUSTOMIZATION_FILES, Confinement, outside_links
from .documents import (
    Document,
    Skipped,
    excluded,
    is_alias_bomb,
    load,
    load_yaml,
    parse_stream,
    yaml_files,
)
from .findings import AuditReport, InputProblem, NotAudited, ObjectLocation
from .flux_installs import FluxInstall, flux_install, source_index
from .fluxinstance import Materialised, materialise, user_patches
from .mapped_sources import MappedInputs, MappedRendering, render_mapped
from .not_audited import Claim, claims, group
from .patch_sources import PatchEntry, entries_of, kustomization_entries
from .redaction import hide_secrets
from .render import (
    KustomizeNotFound,
    Rendering,
    _spec_dir,
    find_kustomize,
    is_flux_kustomization,
    render_clusters,
)
from .resourcesets import with_resource_sets
from .sources import field_line


@dataclass(frozen=True)
class Installed:
    """A Flux install among the objects (a FluxInstance, a `flux-instance` chart release, a
    `flux-manifests` Kustomization) and the controller Deployments it makes."""

    item: AuditObject
    install: FluxInstall
    deployments: tuple[AuditObject, ...]


@dataclass
class Inventory:
    """Everything the audit evaluates and the fix edits, collected once (`collect`)."""

    files: dict[str, list[Document]]  # each file as named (stdin: "-"), its documents in order
    objects: list[AuditObject]  # what is evaluated, in report order
    installs: list[Installed] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)  # files no cluster applies
    stdin: str | None = None  # the text read from `-`
    not_audited: list[NotAudited] = field(default_factory=list)  # not audited by design
    mapped: MappedInputs = field(default_factory=MappedInputs)  # --source: what they read
    _lookups: dict[str, OfflineLookups] = field(default_factory=dict, repr=False)
    _renderings: dict[tuple[str, str, str], list[AuditObject]] | None = field(
        default=None, repr=False
    )
    _by_origin: dict[int, list[AuditObject]] = field(default_factory=dict, repr=False)

    def clusters(self) -> dict[str, list[AuditObject]]:
        """The objects by cluster, in report order ("": not rendered as part of a cluster)."""
        by_cluster: dict[str, list[AuditObject]] = {}
        for item in self.objects:
            by_cluster.setdefault(item.cluster, []).append(item)
        return by_cluster

    def lookups(self, cluster: str) -> OfflineLookups:
        """What policies look up for an object of `cluster`: every object that cluster applies,
        as Flux applies it (a Deployment as its patches leave it, the Flux controllers an
        install makes). Names repeat across clusters, so each cluster has its own."""
        if cluster not in self._lookups:
            items = [o for o in self.objects if o.cluster == cluster]
            self._lookups[cluster] = OfflineLookups(
                (o.obj for o in items),
                applied_by=((o.obj, o.kustomization) for o in items if o.kustomization),
            )
        return self._lookups[cluster]

    def origin(self, item: AuditObject) -> Document | None:
        """The written document `item` comes from: its own, or for a controller a Flux
        install makes, the install's."""
        if item.document is not None:
            return item.document
        for installed in self.installs:
            if any(d is item for d in installed.deployments):
                return installed.item.document
        return None

    def renderings(self, document: Document) -> list[AuditObject]:
        """The objects rendered from a written document (a shared file renders once per
        cluster): matched by file, kind and name, else (a name Flux substitutes, `${app}`)
        those whose origin it is."""
        if self._renderings is None:
            self._renderings = {}
            for o in self.objects:
                key = (o.location.source, o.location.kind, o.location.name)
                self._renderings.setdefault(key, []).append(o)
                if o.document is not None:  # not a controller an install makes
                    self._by_origin.setdefault(id(self.origin(o)), []).append(o)
        obj = document.obj or {}
        found = self._renderings.get((document.source, _kind(obj), _name(obj)))
        return found or self._by_origin.get(id(document), [])


def collect(
    paths: Sequence[str],
    *,
    exclude: Sequence[str] = (),
    render: bool = True,
    kustomize: str | None = None,
    jobs: int | None = None,
    allow_remote: bool = False,
    audit_unreached: bool = False,
    stdin: TextIO | None = None,
    mapped: MappedInputs | None = None,
) -> Inventory:
    """The inventory of `paths` (files, directories, `-`): each directory rendered as Flux
    applies it, cluster by cluster, when `render` (Kustomizations of a `mapped` source from its
    directory); every Flux install materialised once."""
    report = AuditReport()
    mapped = mapped or MappedInputs()
    objects: list[AuditObject] = []
    files: dict[str, list[Document]] = {}
    stdin_text: str | None = None
    for given in _distinct(paths):
        skipped = Skipped()
        if given == "-":
            stdin_text = _read_stdin(stdin, report)
            read = list(parse_stream(stdin_text, "-")) if stdin_text is not None else []
        else:
            read = confined_load(given, exclude=exclude, skipped=skipped, jobs=jobs, report=report)
        known = set(files)
        documents = [d for d in read if d.source not in known]  # a file given before, not again
        for document in documents:
            files.setdefault(document.source, []).append(document)
        for chart in skipped.charts:
            report.problems.append(
                InputProblem(str(chart), 0, "skipped: Helm chart (Chart.yaml)", False)
            )
        if render and given != "-" and Path(given).is_dir():
            objects += rendered_objects(  # a directory renders from all its files
                given,
                read,
                report,
                kustomize,
                exclude,
                allow_remote=allow_remote,
                audit_unreached=audit_unreached,
                mapped=mapped,
            )
        else:
            objects += objects_of(documents, report)
    _with_mapped_files(files, mapped, report)
    installs: list[Installed] = []
    if render:
        # a ResourceSet's static entries first: a FluxInstance among them is an install too
        objects = with_resource_sets(objects, report)
        objects, installs = with_flux_installs(objects, report, kustomize)
    inventory = Inventory(files, objects, installs, report.problems, report.unreached, stdin_text)
    inventory.not_audited, inventory.mapped = report.not_audited, mapped
    return inventory


def _with_mapped_files(
    files: dict[str, list[Document]], mapped: MappedInputs, report: AuditReport
) -> None:
    """The files read from mapped sources join `files` (the fix plans edits to them), and a
    mapping no Kustomization used is a notice."""
    known = set(files)  # a mapped directory also given as a PATH: read already
    for documents in mapped.documents.values():
        for document in documents:
            if document.source not in known:
                files.setdefault(document.source, []).append(document)
    report.problems += [
        InputProblem(m.path, 0, f"--source {m.name}: no Flux Kustomization uses this source", False)
        for m in mapped.unused()
    ]


def _distinct(paths: Sequence[str]) -> list[str]:
    """`paths` without a repeat of the same file or directory (it is read once)."""
    seen: set[str] = set()
    result: list[str] = []
    for given in paths:
        key = given if given == "-" else os.path.realpath(given)
        if key not in seen:
            seen.add(key)
            result.append(given)
    return result


def _read_stdin(stdin: TextIO | None, report: AuditReport) -> str | None:
    try:
        return stdin.read() if stdin else sys.stdin.buffer.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        report.problems.append(InputProblem("-", 0, f"cannot read: {error}", True))
        return None


def objects_of(documents: Iterable[Document], report: AuditReport) -> list[AuditObject]:
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


def with_flux_installs(
    objects: Sequence[AuditObject], report: AuditReport, kustomize: str | None
) -> tuple[list[AuditObject], list[Installed]]:
    """`objects` plus, after each Flux install (a FluxInstance, a `flux-instance` chart release,
    a `flux-manifests` Kustomization), the controller Deployments it installs (their findings
    point at the install's file: that is where its user edits them); and the installs."""
    sources = source_index([o.obj for o in objects])
    result: list[AuditObject] = []
    installs: list[Installed] = []
    for item in objects:
        result.append(item)
        install = flux_install(item.obj, sources)
        if install is not None:
            deployments = flux_instance_objects(item, install, report, kustomize)
            installs.append(Installed(item, install, tuple(deployments)))
            result += deployments
    return result, installs


def flux_instance_objects(
    item: AuditObject, install: FluxInstall, report: AuditReport, kustomize: str | None
) -> list[AuditObject]:
    """The controller Deployments `install` makes, materialised once; a problem doing so is
    reported (an error when the install's own patches do not apply)."""
    where, line = item.location.source, item.location.line
    instance = install.instance
    command: list[str] = []
    if user_patches(instance):
        try:
            command = find_kustomize(kustomize)
        except KustomizeNotFound as error:
            report.problems.append(InputProblem(where, line, f"{install.what}: {error}", False))
            return []
    materialised = confined_materialise(instance, command)
    if materialised.problem:
        message = hide_secrets(f"{install.what}: {materialised.problem}", item.secrets)
        report.problems.append(InputProblem(where, line, message, materialised.broken))
    spec = instance.get("spec") if isinstance(instance.get("spec"), dict) else {}
    version = str(((spec or {}).get("distribution") or {}).get("version") or "")
    note = f"from {install.what} (Flux {version!r} controller defaults, its patches applied)"
    patches = (
        tuple(entries_of(item.document, install.patches_pointer, user_patches(instance)))
        if item.document is not None
        else ()
    )
    return [
        AuditObject(
            deployment,
            _component_location(item, install, deployment),
            item.unknown,
            None,
            patches,
            note,
            secrets=item.secrets,
            cluster=item.cluster,
        )
        for deployment in materialised.deployments
    ]


def _component_location(
    item: AuditObject, install: FluxInstall, deployment: JsonObject
) -> ObjectLocation:
    """A controller's findings point at its line in the install: its `components` entry, else
    the distribution's version."""
    line = item.location.line
    target = target_of(deployment)
    if item.document is not None:
        spec = install.instance.get("spec")
        listed = spec.get("components") if isinstance(spec, dict) else None
        pointer = "/spec/distribution/version"
        if isinstance(listed, list) and target.name in listed:
            pointer = f"/spec/components/{listed.index(target.name)}"
        written = install.pointer(pointer)
        line = field_line(item.document, [written]) if written else line
    return ObjectLocation(
        item.location.source, line, target.api_version, target.kind, target.namespace, target.name
    )


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
    mapped: MappedInputs | None = None,
) -> list[AuditObject]:
    """The objects Flux applies from directory `given` (documents: its files), each cluster
    rendered on its own; build problems go to `report` (notices, or errors when a build fails or
    would read outside `given`). Files no cluster applies are listed in `report.unreached`, not
    judged, unless `audit_unreached` (then they are audited as written, with a note). Remote
    bases are fetched only when `allow_remote`."""
    command = _render_command(given, documents, report, kustomize)
    if command is None:
        return objects_of(documents, report)
    root = Path(given)
    clusters = clusters_of(root, documents) or [Cluster("", tuple(documents))]
    objects: list[AuditObject] = []
    reached_files: set[Path] = set()
    claimed: list[Claim] = []
    entries = [with_sync_entries(cluster.documents) for cluster in clusters]
    renderings = render_clusters(root, entries, command, allow_remote=allow_remote)
    mapped = mapped or MappedInputs()
    from_sources = _render_mapped(entries, renderings, mapped, command, allow_remote)
    for cluster, rendering in zip(clusters, renderings, strict=True):
        _drop_mapped(rendering, mapped)
        secrets = _rendering_problems(rendering, report, root=root, given=given, cluster=cluster)
        claimed += _claims(rendering, root=root, given=given, cluster=cluster.name)
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
    for made in from_sources:
        name = clusters[made.cluster].name
        objects += _mapped_objects(made, name, documents, report, mapped, shown=(root, given))
        claimed += _claims(
            made.rendering, root=Path(made.source.path), given=made.source.path, cluster=name
        )
        reached_files |= {p for p in made.rendering.reached if p.is_relative_to(root.resolve())}
    reached = {str(_display(p, root, given)) for p in reached_files}
    unreached = [d for d in documents if d.source not in reached]
    where = "any cluster" if len(clusters) > 1 else "any Flux Kustomization"
    note = f"not reached by {where} under {given}: audited as written"
    return _with_unreached(objects, unreached, report, claimed, note if audit_unreached else None)


def _with_unreached(
    objects: list[AuditObject],
    unreached: list[Document],
    report: AuditReport,
    claimed: list[Claim],
    note: str | None,
) -> list[AuditObject]:
    """`objects` and, of the files no cluster applies: when nothing rendered, all audited as
    written; with a `note` (--audit-unreached), each audited as written saying it; else none
    (listed, apart from those under a Kustomization not audited by design)."""
    if not objects or note is not None:  # the Kustomizations listed, their files audited
        report.not_audited += group(claimed, {})
    if not objects:
        return objects_of(unreached, report)
    if note is None:
        _list_unreached(unreached, report, claimed)
        return objects
    return objects + [dataclasses.replace(o, note=note) for o in objects_of(unreached, report)]


def _render_mapped(
    entries: Sequence[Sequence[Document]],
    renderings: Sequence[Rendering],
    mapped: MappedInputs,
    command: list[str],
    allow_remote: bool,
) -> list[MappedRendering]:
    """The renderings from mapped sources (none without --source)."""
    if not mapped.mappings:
        return []
    values = [_values(e, r) for e, r in zip(entries, renderings, strict=True)]
    return render_mapped(renderings, values, mapped.mappings, command, allow_remote=allow_remote)


def _values(entries: Sequence[Document], rendering: Rendering) -> list[Document]:
    """A cluster's ConfigMaps and Secrets, written and rendered: what the postBuild variables
    of a Kustomization rendered from a mapped source come from."""
    kinds = ("ConfigMap", "Secret")
    written = [d for d in entries if d.obj is not None and d.obj.get("kind") in kinds]
    rendered = [
        Document(str(o.source or ""), 0, 0, "", o.obj)
        for o in rendering.objects
        if o.obj.get("kind") in kinds and o.obj.get("apiVersion") == "v1"
    ]
    return written + rendered


def _drop_mapped(rendering: Rendering, mapped: MappedInputs) -> None:
    """Forget the Kustomizations of `rendering` whose source is mapped (and their "not
    audited" notices): they are rendered from the mapped directory."""
    for key, item in list(rendering.not_built.items()):
        if item.source is None or item.source not in mapped.mappings:
            continue
        mapped.used.add(item.source)
        del rendering.not_built[key]
        said = f"Flux Kustomization {key}: {item.why}"
        rendering.problems = [p for p in rendering.problems if p.message != said]


def _mapped_objects(
    made: MappedRendering,
    cluster: str,
    documents: list[Document],
    report: AuditReport,
    mapped: MappedInputs,
    *,
    shown: tuple[Path, str],
) -> list[AuditObject]:
    """The objects one cluster applies from a mapped source, named by their files in its
    directory; each of their findings says the source. Problems name files under the
    repo (`shown`: its root and as given) or the mapped directory as the user gave them."""
    source = made.source
    root, given = Path(source.path), source.path
    in_repo = root.resolve().is_relative_to(shown[0].resolve())
    if in_repo:  # a directory of the repo (the one CI pushes): its files as the repo's
        root, given = shown
    elif source.key not in mapped.documents:  # read once, with the repo's confinement
        mapped.documents[source.key] = confined_load(
            source.path, exclude=(), skipped=Skipped(), jobs=1, report=report
        )
    _drop_mapped(made.rendering, mapped)
    secrets = tuple(sorted({v for o in made.rendering.objects for v in o.secrets if len(v) >= 4}))
    for problem in made.rendering.problems:  # as _rendering_problems says the repo's
        message = hide_secrets(problem.message, secrets)
        message = f"{cluster}: {message}" if cluster else message
        where = _shown(_shown(problem.source, *shown), root, given)
        report.problems.append(InputProblem(where, 0, message, problem.error))
    rendered = _objects_of_rendering(
        made.rendering,
        [*mapped.documents.get(source.key, []), *documents],
        root=root,
        given=given,
        exclude=(),
        cluster=cluster,
        secrets=secrets,
    )
    note = f"from {source.name} (--source {source.path})"
    return [dataclasses.replace(o, note=note) for o in rendered]


def _shown(where: str, root: Path, given: str) -> str:
    """A file a mapped source's rendering names: under its directory as the user gave it."""
    path = Path(where)
    if path.is_absolute() and path.is_relative_to(root.resolve()):
        return _display(path, root, given)
    return where


def _list_unreached(documents: list[Document], report: AuditReport, claimed: list[Claim]) -> None:
    """Files no cluster applies: listed, never judged; one that does not parse is a notice,
    not an input error (Flux never reads it either). Those under a Kustomization not audited
    by design (`claimed`) are listed with it instead."""
    own = AuditReport()
    applied = [o for o in objects_of(documents, own) if not _is_build_configuration(o.obj)]
    broken = [p for p in own.problems if p.error]
    report.problems += [p for p in own.problems if not p.error] + [
        dataclasses.replace(p, message=f"{p.message} (a file no cluster applies)", error=False)
        for p in broken
    ]
    listed = {o.location.source for o in applied} | {p.source for p in broken}
    entries = group(claimed, {Path(os.path.realpath(f)): f for f in listed})
    under = {f for entry in entries for f in entry.files}
    report.not_audited += entries
    report.unreached += sorted(listed - under)


def _claims(rendering: Rendering, *, root: Path, given: str, cluster: str) -> list[Claim]:
    """The repo files each Flux Kustomization this cluster did not build would read (its
    file named as the user gave it)."""
    base = root.resolve()
    found = claims(
        rendering.not_built.values(),
        root=base,
        cluster=cluster,
        directory_of=lambda ks, where: _spec_dir(base, ks, where),
    )
    return [
        dataclasses.replace(c, where=_display(Path(c.where), root, given))
        if Path(c.where).is_absolute() and Path(c.where).is_relative_to(base)
        else c
        for c in found
    ]


def _render_command(
    given: str, documents: list[Document], report: AuditReport, kustomize: str | None
) -> list[str] | None:
    """The kustomize command to render `given` with, or None when its files are audited as
    written (no Flux Kustomization, an alias bomb, no kustomize: said in `report`)."""
    if not any(d.obj is not None and is_flux_kustomization(d.obj) for d in documents):
        return None
    if any(is_alias_bomb(d) for d in documents):  # kustomize would expand it: gigabytes
        refused = "not rendered: a file has a YAML alias bomb; files audited as they are"
        report.problems.append(InputProblem(given, 0, refused, False))
        return None
    try:
        return find_kustomize(kustomize)
    except KustomizeNotFound as error:
        report.problems.append(InputProblem(given, 0, f"{error}: files audited as they are", False))
        return None


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
    lines = _document_lines(documents)
    directory_patches: dict[Path, list[PatchEntry]] = {}
    by_name = {(d.source, _kind(d.obj), _name(d.obj)): d for d in documents if d.obj is not None}
    alone = _alone_of_kind(documents)  # a `${APP}` name renders as another name
    flux_documents = _flux_documents(rendering, documents, by_name, root=root, given=given)
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
        document = by_name.get((source, _kind(item.obj), _name(item.obj))) or alone.get(
            (source, _kind(item.obj))
        )
        patches = _patches_for(
            item.source, item.kustomization, root, given, flux_documents, directory_patches
        )
        note = None
        if item.kustomization in unreached_from:
            note = _not_reached_note(item.kustomization, unreached_from[item.kustomization])
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


def _alone_of_kind(documents: list[Document]) -> dict[tuple[str, str], Document]:
    """(file, kind) -> the file's one document of that kind (none when it has several)."""
    found: dict[tuple[str, str], Document | None] = {}
    for d in documents:
        if d.obj is not None:
            key = (d.source, _kind(d.obj))
            found[key] = None if key in found else d
    return {k: d for k, d in found.items() if d is not None}


def _flux_documents(
    rendering: Rendering,
    documents: list[Document],
    by_name: dict[tuple[str, str, str], Document],
    *,
    root: Path,
    given: str,
) -> dict[str, Document]:
    """namespace/name -> the written document of each Flux Kustomization, this cluster's file
    for a name several files define."""
    flux_documents = {
        _flux_key(d.obj): d for d in documents if d.obj is not None and is_flux_kustomization(d.obj)
    }
    for rendered in rendering.objects:
        if rendered.source is not None and is_flux_kustomization(rendered.obj):
            where = _display(rendered.source, root, given)
            written = by_name.get((where, "Kustomization", _name(rendered.obj)))
            if written is not None:
                flux_documents[_flux_key(rendered.obj)] = written
    return flux_documents


def _not_reached_note(kustomization: str, entry_points: str) -> str:
    return (
        f"its Flux Kustomization {_named(kustomization)} is not reached from "
        f"{_named(entry_points)}: audited as its own file renders it"
    )


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
