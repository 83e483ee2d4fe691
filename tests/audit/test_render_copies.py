"""The renderer's repo copies are hard links to the user's files; rendering never changes them.

A build rewrites a kustomization.yaml in its copy (Flux's generated fields, a generated file
where the directory has none) and restores it afterwards. Through a hard link that write would
change the user's own file, so the renderer only ever replaces files in a copy. These tests
render every fixture repo, batched and one build at a time, from a scratch copy of it, and
compare every byte of every file before, while each kustomize build runs (when the rewritten
files are in place) and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.audit import render
from webhook.audit.documents import load
from webhook.audit.kustomize_runner import run_kustomize
from webhook.audit.render import Renderer, find_kustomize

REPOS = Path(__file__).parent / "repos"
# The fixture repos with Flux Kustomizations (operator/ holds only a FluxInstance: no build).
FIXTURES = ["batching", "bootstrap"]


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _render_and_fingerprint(
    repo: Path, monkeypatch: pytest.MonkeyPatch, *, batched: bool
) -> tuple[list[dict[str, str]], int, int]:
    """(the repo's files during each build and after rendering, files hard-linked into the
    first copy, builds)."""
    seen: list[dict[str, str]] = []
    real = run_kustomize  # a kustomize process or a kustomize-server's build

    def run(command: list[str], directory: Path, **kwargs: Any) -> Any:
        seen.append(_fingerprint(repo))  # the copy's kustomization files are rewritten now
        return real(command, directory, **kwargs)

    monkeypatch.setattr(render, "run_kustomize", run)
    documents = list(load([str(repo)]))
    with Renderer(repo, documents, find_kustomize()) as renderer:
        renderer.batching = renderer.batching and batched
        copy = renderer._work / "repo-0"
        linked = sum(
            1
            for path in repo.rglob("*")
            if path.is_file()
            and not path.is_symlink()
            and os.stat(path).st_ino == os.stat(copy / path.relative_to(repo)).st_ino
        )
        rendering = renderer.render_all()
    monkeypatch.setattr(render, "run_kustomize", run_kustomize)
    return [*seen, _fingerprint(repo)], linked, rendering.builds


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-build-each"])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_rendering_leaves_every_file_of_the_repo_as_it_was(
    fixture: str, batched: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / fixture
    shutil.copytree(REPOS / fixture, repo, symlinks=True)
    before = _fingerprint(repo)
    seen, linked, builds = _render_and_fingerprint(repo, monkeypatch, batched=batched)
    assert builds > 0  # the repo was rendered: kustomization files were rewritten and restored
    assert len(seen) > 1  # kustomize ran
    assert linked == len(before)  # the copy really shares the user's files
    assert all(files == before for files in seen)


def test_writing_through_a_link_would_be_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: a renderer that wrote its rewritten kustomization.yaml in place (what
    `Path.write_bytes` does to a hard link) changes the user's files, and the check sees it."""
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo, symlinks=True)
    before = _fingerprint(repo)

    def written_through(path: Path, data: bytes) -> None:
        with path.open("r+b" if path.exists() else "wb") as out:
            out.write(data)
            out.truncate()

    monkeypatch.setattr(render, "_replace", written_through)
    seen, _, _ = _render_and_fingerprint(repo, monkeypatch, batched=True)
    assert any(files != before for files in seen)
