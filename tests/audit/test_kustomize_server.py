"""kustomize-server (tools/kustomize-server) builds what `kubectl kustomize` builds: the same
objects and the same errors for every fixture repo, the same bounds (memory, time), and no
process left once a command ends, however it ends."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_kustomize_runner import BOMB
from tests.audit.test_render import KUBE_SYSTEM_POLICIES, kubectl_or_skip
from webhook.audit import kustomize_server
from webhook.audit.documents import load
from webhook.audit.kustomize_runner import (
    MEMORY_LIMIT_MIB,
    bounded,
    failure,
    go_environment,
    run_kustomize,
)
from webhook.audit.render import (
    KustomizeNotFound,
    Rendering,
    checkout_server,
    find_kustomize,
    render_clusters,
)
from webhook.cli import main

REPOS = Path(__file__).parent / "repos"
FIXTURE_REPOS = sorted(p.name for p in REPOS.iterdir() if p.is_dir())


def server_or_skip() -> str:
    server = checkout_server()
    if server is None:
        pytest.skip("no kustomize-server built: run `make setup` (needs Go)")
    return server


def _cli() -> list[str]:
    return [str(kubectl_or_skip()), "kustomize", "--load-restrictor", "LoadRestrictionsNone"]


def _server() -> list[str]:
    return [server_or_skip(), "serve"]


def _rendered(repo: Path, command: list[str]) -> list[Any]:
    """Everything a rendering says, in order: objects (as text), files, problems."""
    renderings: list[Rendering] = render_clusters(repo, [list(load([str(repo)]))], command)
    return [
        [
            [
                (json.dumps(o.obj), str(o.source), o.kustomization, o.unknown, o.secrets)
                for o in r.objects
            ],
            sorted(map(str, r.reached)),
            [(p.source, p.message, p.error) for p in r.problems],
            r.builds,
            r.parents,
        ]
        for r in renderings
    ]


@pytest.mark.parametrize("fixture", FIXTURE_REPOS)
def test_the_server_renders_every_fixture_repo_as_kubectl_kustomize(
    fixture: str, tmp_path: Path
) -> None:
    through_server = _rendered(REPOS / fixture, _server())
    assert through_server == _rendered(REPOS / fixture, _cli())


@pytest.mark.parametrize("fixture", FIXTURE_REPOS)
def test_audit_says_the_same_on_both_paths(fixture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    said = []
    for server in (server_or_skip(), "off"):
        monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))
        monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", server)
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(
                [
                    "audit",
                    "-o",
                    "json",
                    "--policies",
                    str(KUBE_SYSTEM_POLICIES),
                    str(REPOS / fixture),
                ]
            )
        said.append((code, out.getvalue()))
    assert said[0] == said[1]


def _same_as_kubectl(directory: Path) -> subprocess.CompletedProcess[str]:
    built = run_kustomize(_server(), directory, timeout=60)
    direct = run_kustomize(_cli(), directory, timeout=60)
    assert (built.returncode == 0) == (direct.returncode == 0)
    assert built.stdout == direct.stdout
    if direct.returncode != 0:
        assert built.stderr == direct.stderr  # warnings first, then kubectl's "error: ..."
    return built


def test_errors_and_warnings_read_as_kubectl_writes_them(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\nresources: [gone.yaml]\n")
    built = _same_as_kubectl(tmp_path)
    assert built.stderr.startswith("# Warning: 'commonLabels' is deprecated.")
    assert "\nerror: accumulating resources" in built.stderr


def test_a_custom_openapi_schema_does_not_reach_the_next_build(tmp_path: Path) -> None:
    """kustomize keeps a kustomization's `openapi:` schema in a global: the server resets it."""
    custom, plain = tmp_path / "custom", tmp_path / "plain"
    for directory in (custom, plain):
        directory.mkdir()
        (directory / "d.yaml").write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
            "  template:\n    spec:\n      containers: [{name: a, image: a}, {name: b, image: b}]\n"
        )
        (directory / "p.yaml").write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
            "  template:\n    spec:\n      containers: [{name: b, image: new}]\n"
        )
    schema: dict[str, object] = {
        "definitions": {}
    }  # no merge keys: the containers list is replaced
    (custom / "schema.json").write_text(json.dumps(schema))
    (custom / "kustomization.yaml").write_text(
        "resources: [d.yaml]\npatches: [{path: p.yaml}]\nopenapi: {path: schema.json}\n"
    )
    (plain / "kustomization.yaml").write_text("resources: [d.yaml]\npatches: [{path: p.yaml}]\n")
    _same_as_kubectl(custom)
    assert "image: a" in _same_as_kubectl(plain).stdout  # merged by name, as a new process does


def test_a_build_that_exhausts_memory_is_reported_and_the_server_replaced(tmp_path: Path) -> None:
    bomb, fine = tmp_path / "bomb", tmp_path / "fine"
    for directory in (bomb, fine):
        directory.mkdir()
    (bomb / "kustomization.yaml").write_text("resources: [lol.txt]\n")
    (bomb / "lol.txt").write_text(BOMB)
    (fine / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (fine / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert run_kustomize(_server(), fine, timeout=60).returncode == 0  # the server built before
    started = time.monotonic()
    built = run_kustomize(_server(), bomb, timeout=60)
    assert time.monotonic() - started < 60
    assert built.returncode != 0
    assert failure(built.stderr) == (
        f"it needs more than {MEMORY_LIMIT_MIB} MiB of memory (YAML aliases expanding?)"
    )
    again = run_kustomize(_server(), fine, timeout=60)
    assert again.returncode == 0
    assert "name: x" in again.stdout


def test_a_build_over_its_time_kills_its_server(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [lol.txt]\n")
    (tmp_path / "lol.txt").write_text(BOMB)
    pool = kustomize_server.server_pool(server_or_skip(), bounded(), go_environment())
    with pytest.raises(subprocess.TimeoutExpired):
        pool.build(tmp_path, timeout=0.5)
    assert pool.running() == []


def _children() -> set[int]:
    """This process's child processes (from /proc)."""
    mine = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == mine:
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("interrupted", [False, True], ids=["done", "ctrl-c"])
def test_a_command_leaves_no_server_running(
    interrupted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", server_or_skip())
    assert find_kustomize()[1] == "serve"
    before = _children()
    started: list[int] = []
    real_build = kustomize_server.ServerPool.build

    def build(self: kustomize_server.ServerPool, directory: Path, *, timeout: float) -> Any:
        done = real_build(self, directory, timeout=timeout)
        started.extend(self.running())
        if interrupted:
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(kustomize_server.ServerPool, "build", build)
    with redirect_stdout(io.StringIO()):
        code = main(["audit", "-o", "json", str(REPOS / "fleet")])
    assert code == (130 if interrupted else 1)
    assert started  # servers ran during the command
    assert _children() - before == set()


def test_a_server_that_is_not_there_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", str(tmp_path / "kustomize-server"))
    with pytest.raises(KustomizeNotFound, match="is not an executable file"):
        find_kustomize()
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", "off")
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))
    assert find_kustomize()[1] == "kustomize"  # off: the CLI
