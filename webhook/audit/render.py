"""What Flux applies: each Flux Kustomization's `spec.path` built with the real kustomize.

Mirrors `github.com/fluxcd/pkg/kustomize` (what kustomize-controller and `flux build
kustomization` use): in a copy of the repo, the kustomization.yaml of `spec.path` (generated,
as Flux's generator does, when the directory has none) gets the Flux Kustomization's
`targetNamespace`, `namePrefix`/`nameSuffix`, `patches`, `patchesStrategicMerge`,
`patchesJson6902`, `components` and `images`; `kustomize build` (load restrictions off, as Flux)
renders it; then `postBuild.substitute`/`substituteFrom` are applied to every object not
marked `kustomize.toolkit.fluxcd.io/substitute: disabled`. Flux Kustomizations found in a
rendered output are rendered in turn (with their parent's patches and substitutions applied).

kustomize's `originAnnotations` build metadata says which file each object came from; it is
removed from the objects before they are evaluated.

The repo is untrusted (a pull request): as Flux confines its build to the artifact's root, a
build whose kustomizations would load a file from outside the repo, or fetch a remote base
(unless `allow_remote`), is refused before kustomize runs (`confinement.py`); symlinks that
lead out of the repo are not copied. Values substituted from Secrets are recorded with each
object (`RenderedObject.secrets`) so that no output prints them.

Speed: a kustomize process costs far more than the build itself (start-up, and the OpenAPI
schema it parses for strategic-merge patches), so the Flux Kustomizations of one breadth-first
level are built several to a process (`batching.py`): one generated kustomization lists their
`spec.path` directories, each rewritten as above plus a transformer that tags its objects, and
the output is split back by tag. Kustomizations that kustomize could make interact in a batch
are built apart; a batch that fails is built again in halves, and a member whose output holds
another member's names is built again (with the level's other such members, checked again, or
alone), so objects, sources and errors are those of one build each.

One run renders each build once (`render_cache.py`): the clusters of a fleet repo share one set
of repo copies and one cache of builds keyed by what a build reads, so a Kustomization with the
same fields in three clusters is built once and substituted three times. `render_clusters`
walks the clusters in step, each level of every cluster built as one (never two clusters' members
in one kustomize process: their own variants of an app have the same object IDs).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import batching
from .confinement import Confinement
from .documents import Document, FastManifestLoader, load_yaml, parse_stream
from .envsubst import substitute_text
from .flux_installs import flux_manifests_source, source_index
from .flux_sources import NotBuilt, SourceMap
from .kustomize_runner import chosen_server, failure, run_kustomize
from .kustomize_server import SERVE, SERVER_NAME, is_server_command
from .render_cache import CachedBuild, RenderCache, build_key

FLUX_KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
SUBSTITUTE_KEY = "kustomize.toolkit.fluxcd.io/substitute"
ORIGIN_KEY = "config.kubernetes.io/origin"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_VAR_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_BUILD_TIMEOUT = 120
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class KustomizeNotFound(Exception):
    """Neither `kustomize` nor `kubectl` is available (and none was given)."""


def find_kustomize(explicit: str | None = None) -> list[str]:
    """The build command, first found of: a kustomize-server (`--kustomize-server PATH` /
    $FLUXWARDEN_KUSTOMIZE_SERVER; "off" for none), `--kustomize PATH` / $FLUXWARDEN_KUSTOMIZE,
    a kustomize-server found (`fluxwarden-kustomize-server` on PATH, else the one `make setup`
    builds for this checkout), `kustomize` on PATH, `kubectl kustomize`. A path whose name
    starts with `kubectl` runs as `kubectl kustomize`. A server runs `[SERVER, "serve"]`:
    kustomize's library, the same builds without a process each (kustomize_server.py)."""
    server = chosen_server() or os.environ.get("FLUXWARDEN_KUSTOMIZE_SERVER") or None
    if server is not None and server != "off":
        if not os.access(server, os.X_OK) or Path(server).is_dir():
            raise KustomizeNotFound(f"kustomize-server {server!r} is not an executable file")
        return [server, SERVE]
    given = explicit or os.environ.get("FLUXWARDEN_KUSTOMIZE") or None
    found = given or (None if server == "off" else _found_server())
    if found is not None and Path(found).name.endswith(SERVER_NAME):
        return [found, SERVE]
    found = found or shutil.which("kustomize") or shutil.which("kubectl")
    if not found:
        raise KustomizeNotFound("neither kustomize nor kubectl found on PATH (see --kustomize)")
    if Path(found).name.startswith("kubectl"):
        return [found, "kustomize", "--load-restrictor", "LoadRestrictionsNone"]
    return [found, "build", "--load-restrictor", "LoadRestrictionsNone"]


def _found_server() -> str | None:
    """`fluxwarden-kustomize-server` on PATH, else this checkout's build."""
    return shutil.which("fluxwarden-" + SERVER_NAME) or checkout_server()


def checkout_server() -> str | None:
    """The kustomize-server `make setup` builds for this checkout, where
    tools/kustomize-server/build.sh puts it (named by its sources' hash); None without one."""
    sources = Path(__file__).resolve().parents[2] / "tools" / SERVER_NAME
    try:
        digest = hashlib.sha256(
            (sources / "go.sum").read_bytes() + (sources / "main.go").read_bytes()
        ).hexdigest()[:12]
    except OSError:
        return None  # installed from a wheel: no sources, no build
    cache = Path(os.environ.get("FLUXWARDEN_CACHE") or Path.home() / ".cache" / "fluxwarden")
    built = cache / SERVER_NAME / digest / SERVER_NAME
    return str(built) if os.access(built, os.X_OK) else None


@dataclass(frozen=True)
class _Build:
    """kustomize's output for one Flux Kustomization (None and a problem when it failed)."""

    output: str | None
    problem: str | None
    directory: Path  # where kustomize ran: spec.path in the copy, or the batch's directory
    copy: Path
    objects: list[dict[str, Any]] | None = None  # parsed already (a batch member's share)
    refused: bool = False  # not built: it would read outside the repo
    failed: bool = False  # kustomize refused it (not: fluxwarden could not run it)


@dataclass(frozen=True)
class RenderedObject:
    """One object as Flux would apply it, with the file it came from (None: generated)."""

    obj: dict[str, Any]
    source: Path | None  # the file in the repo (absolute), None for generated objects
    kustomization: str  # namespace/name of the Flux Kustomization that renders it
    unknown: tuple[str, ...] = ()  # postBuild variables that cannot be known offline
    secrets: tuple[str, ...] = ()  # values substituted from Secrets: never printed


@dataclass
class RenderProblem:
    source: str
    message: str
    # True (exit 2): the repo tried what Flux refuses (a load outside the root), or a build
    # Flux would fail too; else a notice
    error: bool = False


@dataclass
class Rendering:
    objects: list[RenderedObject] = field(default_factory=list)
    reached: set[Path] = field(default_factory=set)  # repo files some build read
    problems: list[RenderProblem] = field(default_factory=list)
    builds: int = 0
    # namespace/name of each rendered Flux Kustomization -> the one that rendered it (None: its
    # own file, no rendered parent includes it)
    parents: dict[str, str | None] = field(default_factory=dict)
    # namespace/name -> a Flux Kustomization not built by design (its source, a remote base)
    not_built: dict[str, NotBuilt] = field(default_factory=dict)


def is_flux_kustomization(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("kind") == "Kustomization"
        and isinstance(obj.get("apiVersion"), str)
        and obj["apiVersion"].startswith(FLUX_KUSTOMIZE_GROUP + "/")
    )


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _spec_dir(root: Path, obj: dict[str, Any], where: str | Path | None = None) -> Path:
    """`spec.path` in the source artifact. That is the repo root for a GitRepository; for an
    OCIRepository pushed from a subdirectory (`flux push artifact --path=./kubernetes`) it is
    that subdirectory: the nearest directory above the Kustomization's file holding the path."""
    path = str(_spec(obj).get("path") or "./").lstrip("/")
    direct = (root / path).resolve()
    if direct.is_dir() or where is None:
        return direct
    file = Path(where).resolve()
    for base in file.parents:
        if not base.is_relative_to(root):
            break
        candidate = (base / path).resolve()
        if candidate.is_dir() and candidate.is_relative_to(root):
            return candidate
    return direct


class Renderer:
    """Renders the Flux Kustomizations of one repo; `root` is the repo root (spec.path base)."""

    def __init__(
        self,
        root: Path,
        documents: Sequence[Document],
        command: Sequence[str],
        *,
        allow_remote: bool = False,
        cache: RenderCache | None = None,
    ) -> None:
        self.root = root.resolve()
        self.command = list(command)
        self.allow_remote = allow_remote
        self.documents = documents
        # the builds and repo copies of the run (every cluster, audit and fix): a cache the
        # caller shares, else this renderer's own
        self._own_cache = cache is None
        self.cache = RenderCache() if cache is None else cache
        self.workers = max(1, min(4, os.cpu_count() or 1))
        # One copy of the repo per concurrent build: a build rewrites a kustomization.yaml.
        self._copies = self.cache.workspace(self.root, self.workers)
        self._work = self._copies.directory
        # origin paths in a batch are joined lexically from the batch's directory; footprints
        # read the repo itself, where symlinks out of it are. A kustomize-server's build costs
        # no process: batching saves nothing there (bench/README.md, branch kserver)
        self.batching = not self._copies.snapshot.symlinks and not is_server_command(self.command)
        self._reader = batching.Reader(self.root)
        self._values: dict[tuple[str, str, str], dict[str, str] | None] = {}
        self._shown = False  # a progress line is on the terminal
        self._done = 0
        self._lock = threading.Lock()
        for document in documents:
            if document.is_kubernetes_object and document.obj is not None:
                self._remember_values(document.obj)
        self._flux_sources = source_index([d.obj for d in documents if d.obj is not None])
        written = [d.obj for d in documents if d.obj is not None]
        self._source_map = SourceMap.of(written, [o for o in written if is_flux_kustomization(o)])
        self._noticed: set[str] = set()

    def close(self) -> None:
        if self._own_cache:
            self.cache.close()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- which Kustomizations, in which order ---

    def render_all(self) -> Rendering:
        return render_together([self])[0]

    def _walk(self, result: Rendering) -> Walk:
        """The walk from this renderer's entry points into `result`: yields each level's
        builds to make, and is sent them (`render_together` runs several walks' levels as one)."""
        raw = [
            d
            for d in self.documents
            if d.obj is not None
            and is_flux_kustomization(d.obj)
            and self._buildable(d.obj, d.source, result) is not None
        ]
        dirs = {id(d): _spec_dir(self.root, d.obj or {}, d.source) for d in raw}

        prefixes = {id(d): str(dirs[id(d)]).rstrip("/") + "/" for d in raw}

        def nested(document: Document) -> bool:  # inside another Kustomization's spec.path
            file = str(Path(document.source).resolve())
            return any(
                other is not document
                and dirs[id(other)] != dirs[id(document)]
                and file.startswith(prefixes[id(other)])
                for other in raw
            )

        # Likely parents first (outside the others' paths, shallow files), so that most
        # children are first seen with their parent's patches; a child rendered from its own
        # file is rendered again when its parent's version turns up.
        order = sorted(raw, key=lambda d: (nested(d), len(Path(d.source).parts)))
        versions: dict[str, str | None] = {}  # key -> parent key (None: from its own file)
        by_key: dict[str, list[RenderedObject]] = {}

        def drop(key: str) -> None:
            by_key.pop(key, None)
            versions.pop(key, None)
            for child in [k for k, parent in versions.items() if parent == key]:
                drop(child)

        def reached() -> set[Path]:
            return {o.source for objs in by_key.values() for o in objs if o.source}

        for document in order:
            assert document.obj is not None
            if Path(document.source).resolve() in reached() or _key(document.obj) in versions:
                continue  # a parent rendered it (with its patches and namespace): that one counts
            pending: list[tuple[dict[str, Any], str, str | None]] = [
                (document.obj, document.source, None)
            ]
            while pending:  # breadth first; each level's builds run concurrently
                wave: list[tuple[dict[str, Any], str, str]] = []
                for ks, where, parent in pending:
                    key = _key(ks)
                    if key in versions:
                        if versions[key] is not None or parent is None:
                            continue
                        drop(key)  # its own file's version, now seen as its parent renders it
                    built_from = self._buildable(ks, where, result)
                    if built_from is None:
                        continue
                    ks = built_from
                    versions[key] = parent
                    wave.append((ks, where, key))
                pending = []
                builds = yield [(ks, where) for ks, where, _ in wave]
                for (ks, where, key), built in zip(wave, builds, strict=True):
                    objects = self._objects(ks, where, built, result)
                    by_key[key] = objects
                    for item in objects:
                        if is_flux_kustomization(item.obj) and _key(item.obj) != key:
                            pending.append((item.obj, str(item.source or where), key))
        result.parents = dict(versions)
        result.objects = [o for objs in by_key.values() for o in objs]
        result.reached = reached()

    def _progress(self) -> None:
        """`rendered N Flux Kustomizations` on stderr after each build, only on a terminal."""
        if sys.stderr.isatty():
            with self._lock:
                self._done += 1
                self._shown = True
                sys.stderr.write(f"\rfluxwarden: rendered {self._done} Flux Kustomizations")
                sys.stderr.flush()

    def _buildable(
        self, ks: dict[str, Any], where: str, result: Rendering
    ) -> dict[str, Any] | None:
        """`ks` as built from this repo (its path below an artifact's directory), or None when
        its source is not this repo (said once) or its path is not in the repo."""
        if flux_manifests_source(ks, self._flux_sources) is not None:
            return None  # Flux's own manifests: audited as the controllers (flux_installs)
        resolved = self._source_map.resolve(ks)
        if resolved.kustomization is None and resolved.notice:
            result.not_built[_key(ks)] = NotBuilt(ks, where, resolved.notice, resolved.source)
        if resolved.kustomization is None:
            if resolved.notice and _key(ks) not in self._noticed:
                self._noticed.add(_key(ks))
                message = f"Flux Kustomization {_key(ks)}: {resolved.notice}"
                result.problems.append(RenderProblem(where, message))
            return None
        return resolved.kustomization if self._in_repo(resolved.kustomization, where) else None

    def _in_repo(self, obj: dict[str, Any], where: str) -> bool:
        if flux_manifests_source(obj, self._flux_sources) is not None:
            return False  # Flux's own manifests: audited as the controllers (flux_installs)
        directory = _spec_dir(self.root, obj, where)
        return directory.is_relative_to(self.root) and directory.is_dir()

    # --- one build ---

    def _render_one(
        self, ks: dict[str, Any], where: str, result: Rendering
    ) -> list[RenderedObject]:
        return self._objects(ks, where, self._build_wave([(ks, where)])[0], result)

    def _build_wave(
        self, wave: Sequence[tuple[dict[str, Any], str]], groups: Sequence[int] | None = None
    ) -> list[CachedBuild]:
        """Every build of one level, in order: from the run's cache where the same build was
        made already (another cluster, an earlier audit of the run), the others built now,
        each distinct build once. Members of different `groups` (clusters) are never batched
        together: a cluster's own variant of an app has the same object IDs as another's."""
        keys = [self._build_key(ks, where) for ks, where in wave]
        found = [self.cache.get(key) for key in keys]
        # a build's token: its key, or its index when it has none (never shared)
        tokens: list[str | int] = [index if key is None else key for index, key in enumerate(keys)]
        todo: dict[str | int, int] = {}
        for index, build in enumerate(found):
            if build is None:
                todo.setdefault(tokens[index], index)
        self.cache.hits += sum(1 for build in found if build is None) - len(todo)
        for _ in range(len(wave) - len(todo)):
            self._progress()
        built = self._build_fresh(
            [wave[index] for index in todo.values()],
            None if groups is None else [groups[index] for index in todo.values()],
        )
        made = dict(zip(todo, built, strict=True))
        for token, index in todo.items():
            self.cache.put(self.root, keys[index], made[token])
        return [
            made[tokens[index]] if build is None else build for index, build in enumerate(found)
        ]

    def _build_key(self, ks: dict[str, Any], where: str) -> str | None:
        """What decides the build's output (render_cache.py), None when it cannot be told
        (then it is built, not cached)."""
        directory = _spec_dir(self.root, ks, where)
        try:
            kustomization, target, _ = _kustomization_of(directory)
            apply_flux_fields(kustomization, ks)
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return build_key(
            kustomization=kustomization,
            target=target,
            name=_key(ks),
            command=self.command,
            allow_remote=self.allow_remote,
        )

    def _cached(self, built: _Build) -> CachedBuild:
        """A build's objects with the repo files they came from (origin annotations removed)."""
        parsed: Iterable[Any]
        if built.objects is not None:
            parsed = built.objects
        elif built.output is not None:
            parsed = yaml.load_all(built.output, Loader=FastManifestLoader)
        else:
            return CachedBuild.of(None, built.problem, refused=built.refused, failed=built.failed)
        objects = [
            (obj, self._origin(obj, built.directory, built.copy))
            for obj in parsed
            if isinstance(obj, dict)
        ]
        return CachedBuild.of(objects, None)

    def _build_fresh(
        self, wave: Sequence[tuple[dict[str, Any], str]], groups: Sequence[int] | None = None
    ) -> list[CachedBuild]:
        """kustomize's builds of `wave`, in order: batched where that changes nothing. A member
        whose batch output may have been changed by another member is built again in a later
        round, batched with the other rounds' such members (checked again); a round that
        builds none of its members is followed by one that builds each as without batching."""
        footprints = [self._footprint(ks, where) for ks, where in wave]
        builds: dict[int, CachedBuild] = {}
        pending, defer = list(range(len(wave))), True
        while pending:
            deferred = self._build_round(
                wave, pending, footprints, groups, defer=defer, into=builds
            )
            defer = len(deferred) < len(pending)
            pending = deferred
        return [builds[index] for index in range(len(wave))]

    def _build_round(
        self,
        wave: Sequence[tuple[dict[str, Any], str]],
        pending: list[int],
        footprints: list[batching.Footprint | None],
        groups: Sequence[int] | None,
        *,
        defer: bool,
        into: dict[int, CachedBuild],
    ) -> list[int]:
        """Build the `pending` members of `wave` into `into`; returns those deferred. Each
        batch's output is parsed in its thread, while the other threads' kustomize runs."""
        planned: list[list[int]] = [[index] for index in range(len(pending))]
        if self.batching:
            mine = [footprints[index] for index in pending]
            planned = (
                batching.plan(mine, self.workers)
                if groups is None
                else batching.plan(mine, self.workers, [groups[index] for index in pending])
            )
        batches = [[pending[index] for index in batch] for batch in planned]

        def build(batch: list[int]) -> list[CachedBuild | None]:
            built = self._build_batch([wave[index] for index in batch], defer=defer)
            return [None if b is None else self._cached(b) for b in built]

        deferred: list[int] = []
        with ThreadPoolExecutor(self.workers) as pool:
            for batch, built in zip(batches, pool.map(build, batches), strict=True):
                for index, cached in zip(batch, built, strict=True):
                    if cached is None:
                        deferred.append(index)
                    else:
                        into[index] = cached
        return sorted(deferred)

    def _footprint(self, ks: dict[str, Any], where: str) -> batching.Footprint | None:
        spec = _spec(ks)
        if not self.batching or any(
            isinstance(spec.get(n), str) for n in ("namePrefix", "nameSuffix")
        ):
            return None
        directory = _spec_dir(self.root, ks, where)
        try:
            kustomization, _, _ = _kustomization_of(directory)
            apply_flux_fields(kustomization, ks)
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return batching.footprint(directory, kustomization, self._reader)

    def _build_batch(
        self, members: Sequence[tuple[dict[str, Any], str]], *, defer: bool = False
    ) -> list[_Build | None]:
        """The builds of `members` in one kustomize process; on any failure they are built
        again in halves, and one alone is built as without batching. A member whose output
        may have been changed by another is None when `defer` (the caller builds it again),
        else built again with the others such (without the rest: checked again), or alone
        when every member is such."""
        if len(members) == 1:
            return [self._build(*members[0])]
        copy = self._copies.get()
        try:
            built = self._batch_in(members, copy)
        finally:
            self._copies.put(copy)
        if built is None:
            half = len(members) // 2
            return self._build_batch(members[:half], defer=defer) + self._build_batch(
                members[half:], defer=defer
            )
        groups, top = built
        suspect = sorted(batching.cross_references(groups))
        again: dict[int, _Build | None] = dict.fromkeys(suspect)
        if suspect and not defer and len(suspect) == len(members):
            again = {index: self._build(*members[index]) for index in suspect}
        elif suspect and not defer:
            rebuilt = self._build_batch([members[index] for index in suspect])
            again = dict(zip(suspect, rebuilt, strict=True))
        builds: list[_Build | None] = []
        for index, objects in enumerate(groups):
            if index in again:
                builds.append(again[index])
                continue
            builds.append(_Build(None, None, top, copy, objects))
            self._progress()
        return builds

    def _batch_in(
        self, members: Sequence[tuple[dict[str, Any], str]], copy: Path
    ) -> tuple[list[list[dict[str, Any]]], Path] | None:
        """The members' objects from one build in `copy` (None: kustomize failed)."""
        top = copy.parent / f"batch-{copy.name}"
        top.mkdir(exist_ok=True)
        restore: list[tuple[Path, bytes | None]] = []
        resources: list[str] = []
        try:
            for number, (ks, where) in enumerate(members):
                directory = copy / _spec_dir(self.root, ks, where).relative_to(self.root)
                kustomization, target, original = _kustomization_of(directory)
                apply_flux_fields(kustomization, ks)
                if self._refused(ks, directory, kustomization, target, copy) is not None:
                    return None  # built alone, where the refusal is reported
                kustomization["transformers"] = [
                    *(kustomization.get("transformers") or []),
                    batching.tag_transformer(number),
                ]
                restore.append((target, original))
                _replace(target, yaml.safe_dump(kustomization, sort_keys=False).encode())
                resources.append(os.path.relpath(directory, top))
            root = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
                "buildMetadata": ["originAnnotations"],
            }
            (top / "kustomization.yaml").write_text(yaml.safe_dump(root), encoding="utf-8")
            done = self._kustomize(top)
        except (OSError, ValueError, yaml.YAMLError, subprocess.TimeoutExpired):
            return None
        finally:
            for target, original in reversed(restore):
                _restore(target, original)
        if done.returncode != 0:
            return None
        groups = batching.split(yaml.load_all(done.stdout, Loader=FastManifestLoader), len(members))
        return None if groups is None else (groups, top)

    def _kustomize(self, directory: Path) -> subprocess.CompletedProcess[str]:
        self.cache.note_kustomize_run()
        return run_kustomize(self.command, directory, timeout=_BUILD_TIMEOUT)

    def _build(self, ks: dict[str, Any], where: str) -> _Build:
        copy = self._copies.get()
        try:
            return self._build_in(ks, where, copy)
        finally:
            self._copies.put(copy)
            self._progress()

    def _build_in(self, ks: dict[str, Any], where: str, copy: Path) -> _Build:
        directory = copy / _spec_dir(self.root, ks, where).relative_to(self.root)
        target: Path | None = None
        original: bytes | None = None
        try:
            kustomization, target, original = _kustomization_of(directory)
            apply_flux_fields(kustomization, ks)
            refused = self._refused(ks, directory, kustomization, target, copy)
            if refused is not None:
                target = None  # nothing was written
                return refused
            _replace(target, yaml.safe_dump(kustomization, sort_keys=False).encode())
            built = self._kustomize(directory)
        except (OSError, ValueError, yaml.YAMLError, subprocess.TimeoutExpired) as error:
            return _Build(None, f"cannot build {_key(ks)}: {error}", directory, copy)
        finally:
            if target is not None:
                _restore(target, original)
        if built.returncode != 0:
            message = failure(built.stderr, work=copy)
            problem = f"kustomize cannot build {_key(ks)} ({message}): Flux cannot apply it either"
            return _Build(None, problem, directory, copy, failed=True)
        return _Build(built.stdout, None, directory, copy)

    def _refused(
        self,
        ks: dict[str, Any],
        directory: Path,
        kustomization: dict[str, Any],
        file: Path,
        copy: Path,
    ) -> _Build | None:
        """The failed build of a Kustomization that would load files from outside the repo or
        fetch remote bases (not allowed), None when it may be built."""
        refusals = Confinement(copy, allow_remote=self.allow_remote).refusals(
            directory, kustomization, file
        )
        if not refusals:
            return None
        said = "; ".join(r.describe(copy) for r in refusals)
        if any(not r.remote for r in refusals):
            problem = f"{_key(ks)} not built: {said}; kustomize loads only below the paths given"
            return _Build(None, problem, directory, copy, refused=True)
        problem = (
            f"{_key(ks)} not audited: {said}; remote bases are not fetched "
            "(--allow-remote-bases fetches them)"
        )
        return _Build(None, problem, directory, copy)

    def _objects(
        self, ks: dict[str, Any], where: str, built: CachedBuild, result: Rendering
    ) -> list[RenderedObject]:
        result.builds += 1
        parsed = built.objects()
        if parsed is None:
            error = built.refused or built.failed
            result.problems.append(RenderProblem(where, built.problem or "cannot build", error))
            if not error:  # not fetched (a remote base), or fluxwarden could not run the build
                result.not_built[_key(ks)] = NotBuilt(ks, where, built.problem or "cannot build")
            return []
        objects: list[RenderedObject] = []
        variables, unknown_sources, secret_values = self._variables(ks)
        substitute = bool(_spec(ks).get("postBuild"))
        for obj, source in parsed:
            unknown: tuple[str, ...] = ()
            secrets: tuple[str, ...] = ()
            if substitute and not _substitution_disabled(obj):
                before = obj
                obj, unknown = substitute_object(obj, variables, all_known=not unknown_sources)
                if obj is not before:
                    secrets = tuple(v for v in secret_values if _holds_text(obj, v))
            objects.append(RenderedObject(obj, source, _key(ks), unknown, secrets))
            self._remember_values(obj)
            self._source_map.learn(obj)
        return objects

    def _origin(self, obj: dict[str, Any], directory: Path, copy: Path) -> Path | None:
        """The repo file kustomize read `obj` from, with the origin annotation removed."""
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        origin = annotations.pop(ORIGIN_KEY, None)
        if not annotations and "annotations" in meta:
            del meta["annotations"]
        if not isinstance(origin, str):
            return None
        data = _plain_origin(origin)
        if data is None:
            try:
                data = yaml.load(origin, Loader=_SAFE_LOADER)  # safe_load, on the C parser
            except yaml.YAMLError:
                return None
        path = data.get("path") if isinstance(data, dict) else None
        if not isinstance(path, str) or (isinstance(data, dict) and data.get("repo")):
            return None
        copied = (directory / path).resolve()
        if not copied.is_relative_to(copy):
            return None
        return self.root / copied.relative_to(copy)

    # --- postBuild ---

    def _remember_values(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        if kind not in ("ConfigMap", "Secret") or str(obj.get("apiVersion")) != "v1":
            return
        meta = obj.get("metadata") or {}
        key = (str(kind), str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if kind == "Secret" and ("sops" in obj or _has_placeholder(obj)):
            self._values.setdefault(key, None)  # encrypted: unknown offline
            return
        values: dict[str, str] = {}
        data = obj.get("data") or {}
        if kind == "ConfigMap":
            values.update(
                {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            )
        else:
            for k, v in data.items() if isinstance(data, dict) else []:
                try:
                    values[str(k)] = base64.b64decode(str(v)).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    self._values[key] = None
                    return
            string_data = obj.get("stringData") or {}
            if isinstance(string_data, dict):
                values.update({str(k): str(v) for k, v in string_data.items()})
        self._values[key] = values

    def _variables(self, ks: dict[str, Any]) -> tuple[dict[str, str], list[str], list[str]]:
        """(known variables, references whose values cannot be known offline, the values that
        come from Secrets)."""
        post = _spec(ks).get("postBuild") or {}
        namespace = str((ks.get("metadata") or {}).get("namespace") or "")
        variables: dict[str, str] = {}
        from_secrets: set[str] = set()
        unknown: list[str] = []
        for ref in post.get("substituteFrom") or []:
            if not isinstance(ref, dict):
                continue
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            values = self._values.get((kind, namespace, name))
            if values is None:
                values = self._values.get((kind, "", name))
            if values is None:
                if not (ref.get("optional") and (kind, namespace, name) not in self._values):
                    unknown.append(f"{kind}/{name}")
                continue
            variables.update({k: v.replace("\n", "") for k, v in values.items()})
            if kind == "Secret":
                from_secrets.update(values)
            else:
                from_secrets.difference_update(values)
        inline = post.get("substitute") or {}
        if isinstance(inline, dict):
            variables.update({str(k): str(v).replace("\n", "") for k, v in inline.items()})
            from_secrets.difference_update(str(k) for k in inline)
        secret_values = sorted({variables[n] for n in from_secrets if variables.get(n)})
        return variables, unknown, secret_values


Walk = Generator[list[tuple[dict[str, Any], str]], list[CachedBuild], None]


def render_together(renderers: Sequence[Renderer]) -> list[Rendering]:
    """Each renderer's rendering, their walks in step: the builds of every walk's current level
    are one level (batched together, each distinct build once), so the clusters of a fleet
    repo need fewer kustomize processes than one after the other. Renderers of different repos,
    caches or build settings are walked one after the other."""
    if len({(r.root, id(r.cache), tuple(r.command), r.allow_remote) for r in renderers}) > 1:
        return [rendering for r in renderers for rendering in render_together([r])]
    results = [Rendering() for _ in renderers]
    walks = [r._walk(result) for r, result in zip(renderers, results, strict=True)]
    levels = {
        index: wave for index, walk in enumerate(walks) if (wave := next(walk, None)) is not None
    }
    while levels:
        members = [member for index in sorted(levels) for member in levels[index]]
        groups = [index for index in sorted(levels) for _ in levels[index]]
        built = renderers[0]._build_wave(members, groups if len(levels) > 1 else None)
        following: dict[int, list[tuple[dict[str, Any], str]]] = {}
        for index in sorted(levels):
            share, built = built[: len(levels[index])], built[len(levels[index]) :]
            try:
                following[index] = walks[index].send(share)
            except StopIteration:
                continue
        levels = following
    if any(r._shown for r in renderers):
        sys.stderr.write("\r\033[K")
    return results


def render_clusters(
    root: Path,
    entries: Sequence[Sequence[Document]],
    command: Sequence[str],
    *,
    allow_remote: bool = False,
    cache: RenderCache | None = None,
) -> list[Rendering]:
    """One rendering per cluster (`entries`: each cluster's documents), rendered together with
    one cache (the caller's, else a new one for this call)."""
    shared = RenderCache() if cache is None else cache
    renderers = [
        Renderer(root, e, command, allow_remote=allow_remote, cache=shared) for e in entries
    ]
    try:
        return render_together(renderers)
    finally:
        for renderer in renderers:
            renderer.close()
        if cache is None:
            shared.close()


_RESOLVER: Any = yaml.resolver.Resolver()  # PyYAML has no types
_STRING = "tag:yaml.org,2002:str"
_PLAIN_PATH = re.compile(r"path: ([^\s'\"{}\[\],&*!|>%@`#?:-][^\n#]*)\n")


def _plain_origin(origin: str) -> dict[str, str] | None:
    """The origin kustomize writes for a file of the repo (`path: <plain scalar>`, 98% of them)
    read without a YAML parser; None for any other form (YAML reads it)."""
    match = _PLAIN_PATH.fullmatch(origin)
    value = match.group(1) if match else ""
    if not value.isprintable() or ": " in value or value != value.rstrip():
        return None
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) != _STRING:
        return None  # 123, true, null...: not a path
    return {"path": value}


def _substitution_disabled(obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return any(
        isinstance(m, dict) and m.get(SUBSTITUTE_KEY) == "disabled"
        for m in (meta.get("labels"), meta.get("annotations"))
    )


def _has_dollar(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_has_dollar(k) or _has_dollar(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_dollar(v) for v in obj)
    return isinstance(obj, str) and "$" in obj


def _holds_text(obj: Any, text: str) -> bool:
    """Whether `text` is part of any string (mapping keys included) of `obj`."""
    if isinstance(obj, dict):
        return any(_holds_text(k, text) or _holds_text(v, text) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_holds_text(v, text) for v in obj)
    return isinstance(obj, (str, int, float)) and text in str(obj)


def _has_placeholder(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_has_placeholder(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_placeholder(v) for v in obj)
    return isinstance(obj, str) and "${" in obj


def substitute_object(
    obj: dict[str, Any], variables: dict[str, str], *, all_known: bool
) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not variables and all_known:
        return obj, ()  # Flux substitutes only when there are variables
    for name in variables:
        if not _VAR_NAME.match(name):
            return obj, ()
    if not _has_dollar(obj):
        return obj, ()  # nothing to substitute: skip the dump and reload
    # libyaml's emitter (PyYAML's is a port of it): the same text, five times faster
    text = yaml.dump(obj, Dumper=_SAFE_DUMPER, sort_keys=False, width=1 << 20)
    new_text, unknown = substitute_text(text, variables, all_known=all_known)
    try:
        new = load_yaml(new_text)
    except yaml.YAMLError:
        return obj, tuple(dict.fromkeys(unknown))
    return (new if isinstance(new, dict) else obj), tuple(dict.fromkeys(unknown))


def _replace(path: Path, data: bytes) -> None:
    """Write `path` as a new file: in a repo copy it may be a hard link to the user's own
    file, which writing through would change (tests/audit/test_render_copies.py)."""
    descriptor, scratch = tempfile.mkstemp(dir=path.parent, prefix=".fluxwarden-")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _restore(target: Path, original: bytes | None) -> None:
    """Put back the kustomization file a build rewrote (None: it was generated: remove it)."""
    if original is None:
        target.unlink(missing_ok=True)
    else:
        _replace(target, original)


def _kustomization_of(directory: Path) -> tuple[dict[str, Any], Path, bytes | None]:
    """The kustomization of `directory` (generated, as Flux does, when it has none), the file
    to write it to and that file's bytes to restore (None: the file is generated)."""
    existing = next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
    if existing is None:
        generated = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": generated_resources(directory),
        }
        return generated, directory / "kustomization.yaml", None
    original = existing.read_bytes()
    kustomization = load_yaml(original.decode("utf-8")) or {}
    if not isinstance(kustomization, dict):
        raise ValueError("kustomization file is not a mapping")
    return kustomization, existing, original


def apply_flux_fields(kustomization: dict[str, Any], ks: dict[str, Any]) -> None:
    """What Flux's generator adds to the kustomization.yaml of `spec.path`, plus kustomize's
    origin annotations so each object names its file."""
    spec = _spec(ks)
    if isinstance(spec.get("targetNamespace"), str):
        kustomization["namespace"] = spec["targetNamespace"]
    for name in ("namePrefix", "nameSuffix"):
        if isinstance(spec.get(name), str):
            kustomization[name] = spec[name]
    for name in ("patches", "patchesStrategicMerge", "patchesJson6902", "components"):
        extra = spec.get(name)
        if isinstance(extra, list) and extra:
            if name == "patchesJson6902":
                extra = [
                    {**p, "patch": yaml.safe_dump(p.get("patch"))} if isinstance(p, dict) else p
                    for p in extra
                ]
            kustomization[name] = [*(kustomization.get(name) or []), *extra]
    images = spec.get("images")
    if isinstance(images, list):
        merged = list(kustomization.get("images") or [])
        for image in images:
            if not isinstance(image, dict):
                continue
            same = next((m for m in merged if m.get("name") == image.get("name")), None)
            if same is None:
                merged.append(dict(image))
                continue
            if image.get("newName"):
                same["newName"] = image["newName"]
            if image.get("newTag") or image.get("digest"):
                same["newTag"], same["digest"] = image.get("newTag", ""), image.get("digest", "")
                for key in ("newTag", "digest"):
                    if not same[key]:
                        del same[key]
        kustomization["images"] = merged
    metadata = list(kustomization.get("buildMetadata") or [])
    if "originAnnotations" not in metadata:
        metadata.append("originAnnotations")
    kustomization["buildMetadata"] = metadata


def generated_resources(directory: Path) -> list[str]:
    """Flux's generator for a directory without a kustomization.yaml: every YAML file that
    holds Kubernetes objects, recursively; a subdirectory with its own kustomization.yaml is
    one resource and is not descended into."""
    resources: list[str] = []

    def walk(current: Path) -> Iterator[Path]:
        for child in sorted(current.iterdir()):
            if child.is_dir():
                if any((child / n).is_file() for n in KUSTOMIZATION_FILES):
                    yield child
                else:
                    yield from walk(child)
            elif child.suffix in (".yaml", ".yml"):
                yield child

    for path in walk(directory):
        if path.is_file():
            try:
                documents = list(parse_stream(path.read_text(encoding="utf-8"), str(path)))
            except (OSError, UnicodeDecodeError):
                continue
            if not documents or not all(d.is_kubernetes_object for d in documents):
                continue
        resources.append("./" + path.relative_to(directory).as_posix())
    return resources
