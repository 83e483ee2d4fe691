"""One render per run: the repo copies kustomize builds in, and the builds already made.

A Flux Kustomization's build reads two things: the repo's files (the same for every cluster of a
run) and the kustomization.yaml of its `spec.path` as Flux rewrites it (its own fields applied,
render.py). So the same Kustomization with the same fields in three clusters of a fleet repo is
one kustomize build, and an audit and a fix of one run that hold the same `RenderCache` build it
once between them. `postBuild` substitution comes after the build and is not cached here: each
cluster substitutes its own variables into its own fresh copy of the built objects.

A build is keyed by everything that decides its output: the repo (its root and, through the
workspace, a snapshot of every file's identity), the kustomization written (canonical JSON of
the mapping), the file it is written to, the Kustomization's name (messages name it), the
kustomize command and whether remote bases may be fetched. When any file of the repo changes
(a `fix --write` replaces files), the next renderer finds the snapshot changed, makes new copies
and forgets the builds of the old ones.

The copies (hard links to the user's files, replaced but never written through: render.py
`_replace`) are made once per repo and run, not once per cluster: on a busy disk each copy and
its removal cost about a second for a 1,300-file repo.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import queue
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .confinement import is_under

SKIPPED_NAMES = frozenset({".git"})


@dataclass(frozen=True)
class CachedBuild:
    """One Flux Kustomization's kustomize output as its objects, each with the repo file it came
    from (origin annotation removed); `objects` is None when it was not built (`problem`)."""

    packed: bytes | None  # marshal of [(object, source path or None)]: each use gets new dicts
    problem: str | None
    refused: bool = False  # not built: it would read outside the repo
    failed: bool = False  # kustomize refused it

    @staticmethod
    def of(
        objects: Sequence[tuple[dict[str, Any], Path | None]] | None,
        problem: str | None,
        *,
        refused: bool = False,
        failed: bool = False,
    ) -> CachedBuild:
        packed = None
        if objects is not None:
            packed = _pack(
                [(obj, None if source is None else str(source)) for obj, source in objects]
            )
        return CachedBuild(packed, problem, refused, failed)

    def objects(self) -> list[tuple[dict[str, Any], Path | None]] | None:
        """A new copy of the built objects (the caller may change them)."""
        if self.packed is None:
            return None
        return [
            (obj, None if source is None else Path(source)) for obj, source in _unpack(self.packed)
        ]


def _pack(value: Any) -> bytes:
    """marshal (several times faster to load than a deep copy); pickle for what it cannot take
    (a YAML timestamp)."""
    try:
        return b"m" + marshal.dumps(value)
    except ValueError:
        import pickle

        return b"p" + pickle.dumps(value)


def _unpack(packed: bytes) -> Any:
    if packed[:1] == b"m":
        return marshal.loads(packed[1:])
    import pickle

    return pickle.loads(packed[1:])  # written by _pack, in this process


def build_key(
    *,
    kustomization: dict[str, Any],
    target: Path,
    name: str,
    command: Sequence[str],
    allow_remote: bool,
) -> str | None:
    """The cache key of one build (`target`: the kustomization file written, absolute in the
    repo); None when the kustomization has no canonical form (then it is not cached)."""
    try:
        written = json.dumps(kustomization, sort_keys=False, default=_unusual, allow_nan=True)
    except (TypeError, ValueError):
        return None
    parts = [str(target), written, name, json.dumps(list(command)), str(allow_remote)]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _unusual(value: object) -> dict[str, str]:
    return {"type": type(value).__name__, "repr": repr(value)}


class Workspace:
    """Copies of one repo, one per concurrent build, taken and given back (`get`, `put`)."""

    def __init__(self, root: Path, copies: int, snapshot: Snapshot) -> None:
        self.root = root
        self.snapshot = snapshot
        self.directory = Path(tempfile.mkdtemp(prefix="fluxwarden-render-"))
        self._free: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._copy(0)  # the first now (its failure is the caller's); the others meanwhile
        self._copier = threading.Thread(target=self._copy_others, args=(copies,), daemon=True)
        self._copier.start()

    def _copy(self, number: int) -> None:
        copy = self.directory / f"repo-{number}"
        try:
            shutil.copytree(
                self.root,
                copy,
                symlinks=True,
                ignore=self._not_copied,
                copy_function=_link_or_copy,
            )
        except (OSError, shutil.Error):
            if number == 0:
                raise
            return  # fewer copies: builds wait for one another
        self._free.put(copy.resolve())

    def _not_copied(self, directory: str, names: list[str]) -> set[str]:
        """`.git`, and symlinks that resolve outside the repo: kustomize never follows them
        (the audit reports them as it lists the files)."""
        skipped = set(SKIPPED_NAMES.intersection(names))
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path) and not is_under(os.path.realpath(path), self.root):
                skipped.add(name)
        return skipped

    def _copy_others(self, copies: int) -> None:
        for number in range(1, copies):
            self._copy(number)

    def get(self) -> Path:
        return self._free.get()

    def put(self, copy: Path) -> None:
        self._free.put(copy)

    def close(self) -> None:
        """Remove the copies: in a thread of its own while the run goes on (the audit evaluates
        meanwhile; a busy disk took seconds for two copies), joined before the interpreter
        exits; at once when the interpreter is already exiting."""
        self._copier.join()
        if threading.main_thread().is_alive():
            threading.Thread(target=_remove, args=(self.directory,), daemon=False).start()
        else:
            _remove(self.directory)


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Snapshot:
    """The identity of every file and directory of a repo (what a copy holds), and whether any
    is a symlink (batching joins origin paths lexically: render.py builds such repos alone)."""

    digest: str
    symlinks: bool


def snapshot(root: Path) -> Snapshot:
    """Path, inode, size and modification time of every entry below `root` but `.git`: a file
    replaced or edited since the copy was made changes it."""
    entries: list[str] = []
    symlinks = False
    pending = [str(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                found = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue  # unreadable: the copy fails there too
        for entry in found:
            if entry.name in SKIPPED_NAMES:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                link = entry.is_symlink()
                target = os.readlink(entry.path) if link else ""
            except OSError:
                continue
            symlinks = symlinks or link
            entries.append(
                f"{entry.path}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}\0{target}"
            )
            if not link and entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
    digest = hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()
    return Snapshot(digest, symlinks)


class RenderCache:
    """What one run renders, shared by its renderers (one per cluster, audit and fix): the repo
    copies and the builds. Removes its copies when closed, or when it is garbage collected."""

    def __init__(self) -> None:
        self._workspaces: dict[Path, Workspace] = {}
        self._builds: dict[str, CachedBuild] = {}
        self._keys_by_root: dict[Path, set[str]] = {}
        self.kustomize_runs = 0  # kustomize processes this cache's renderers started
        self.hits = 0  # builds served from the cache
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._workspaces)

    def workspace(self, root: Path, copies: int) -> Workspace:
        """The copies of `root`, made now when there are none or the repo changed since."""
        current = snapshot(root)
        known = self._workspaces.get(root)
        if known is not None and known.snapshot == current:
            return known
        if known is not None:
            known.close()
            for key in self._keys_by_root.pop(root, set()):
                self._builds.pop(key, None)
        made = Workspace(root, copies, current)
        self._workspaces[root] = made
        return made

    def get(self, key: str | None) -> CachedBuild | None:
        if key is None:
            return None
        found = self._builds.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put(self, root: Path, key: str | None, build: CachedBuild) -> None:
        if key is not None:
            self._builds[key] = build
            self._keys_by_root.setdefault(root, set()).add(key)

    def note_kustomize_run(self) -> None:
        with self._lock:
            self.kustomize_runs += 1

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> RenderCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _close_all(workspaces: dict[Path, Workspace]) -> None:
    for workspace in workspaces.values():
        workspace.close()
    workspaces.clear()


def _link_or_copy(source: str, destination: str) -> str:
    """A file of a repo copy: a hard link to the user's file (copying a 10,000-file repo once
    per concurrent build took seconds), a real copy where the file system refuses the link.
    Files in a copy are only ever replaced (render.py `_replace`), never written through."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        return str(shutil.copy2(source, destination))
    return destination
