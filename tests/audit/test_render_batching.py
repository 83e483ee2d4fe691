"""Flux Kustomizations built several to a kustomize process render exactly as one per process.

The batching fixture (tests/audit/repos/batching/README.md) holds the cases where a batch could
differ: objects with the same ID in two members, a generated name one member refers to and
another generates, a member with its own name-reference configuration, a member that cannot be
built, a clash no plan foresees. Each comparison is against the same renderer with batching off.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.audit import batching
from webhook.audit.documents import load
from webhook.audit.render import Renderer, Rendering, find_kustomize

REPOS = Path(__file__).parent / "repos"
BATCHING = REPOS / "batching"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batching is the CLI path's (a kustomize-server's builds are not batched)."""
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE_SERVER", "off")


@pytest.fixture
def processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The kustomize commands the renderer runs."""
    ran: list[list[str]] = []
    real = subprocess.run

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(list(command))
        return real(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return ran


def _render(repo: Path, *, batched: bool) -> tuple[Rendering, str]:
    documents = list(load([str(repo)]))
    with Renderer(repo, documents, find_kustomize()) as renderer:
        renderer.batching = renderer.batching and batched
        rendering = renderer.render_all()
    return rendering, _dump(rendering)


def _dump(rendering: Rendering) -> str:
    """Everything a rendering says, in order: objects with their file, Kustomization and
    unknown variables, the files reached, problems, builds and parents."""
    return json.dumps(
        {
            "objects": [
                [o.obj, str(o.source), o.kustomization, list(o.unknown)] for o in rendering.objects
            ],
            "reached": sorted(map(str, rendering.reached)),
            # kustomize's messages name the scratch copy it built in
            "problems": [
                [p.source, re.sub(r"fluxwarden-render-[^/]*/repo-\d*", "COPY", p.message)]
                for p in rendering.problems
            ],
            "builds": rendering.builds,
            "parents": rendering.parents,
        },
        indent=1,
    )


def _differences(repo: Path) -> list[str]:
    batched, alone = _render(repo, batched=True)[1], _render(repo, batched=False)[1]
    return [
        f"{a!r} != {b!r}"
        for a, b in zip(batched.splitlines(), alone.splitlines(), strict=False)
        if a != b
    ] + (["lengths differ"] if len(batched.splitlines()) != len(alone.splitlines()) else [])


@pytest.mark.parametrize("repo", ["batching", "bootstrap", "operator"])
def test_batched_render_is_the_render_one_per_process(repo: str) -> None:
    assert _differences(REPOS / repo) == []


def test_batching_runs_fewer_processes(processes: list[list[str]]) -> None:
    rendering, _ = _render(BATCHING, batched=True)
    batched = len(processes)
    processes.clear()
    _render(BATCHING, batched=False)
    assert len(processes) == rendering.builds  # one per Flux Kustomization
    assert batched < rendering.builds


def test_the_fixture_has_the_cases_it_claims() -> None:
    rendering, _ = _render(BATCHING, batched=False)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for item in rendering.objects:
        by_key.setdefault(item.kustomization, []).append(item.obj)
    names = {k: {(o["kind"], o["metadata"]["name"]) for o in v} for k, v in by_key.items()}
    assert ("ConfigMap", "a-settings") in names["flux-system/a"]
    assert ("ConfigMap", "b-settings") in names["flux-system/b"]
    generated = next(n for kind, n in names["flux-system/c"] if kind == "ConfigMap")
    assert generated.startswith("settings-")
    (deployment,) = by_key["flux-system/d"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env == [{"configMapRef": {"name": "settings"}}]  # d alone: nothing renames it
    service = next(o for o in by_key["flux-system/f"] if o["kind"] == "Service")
    assert "annotations" not in service["metadata"]
    assert [p.source for p in rendering.problems] == [str(BATCHING / "clusters/main/broken.yaml")]
    assert {("PriorityClass", "shared")} <= names["flux-system/h1"] & names["flux-system/h2"]


def test_even_one_batch_of_everything_renders_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that foresees nothing (one batch per level): clashes, the build error and the
    cross-member name reference are all caught after the build."""
    monkeypatch.setattr(
        batching, "plan", lambda footprints, workers: [list(range(len(footprints)))]
    )
    assert _differences(BATCHING) == []


def test_negative_control_the_comparison_sees_a_tag_left_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = batching.split

    def keep_tags(objects: Any, members: int) -> list[list[dict[str, Any]]] | None:
        groups = real(objects, members)
        for number, group in enumerate(groups or []):
            for obj in group:
                obj["metadata"].setdefault("annotations", {})[batching.TAG_KEY] = str(number)
        return groups

    monkeypatch.setattr(batching, "split", keep_tags)
    assert _differences(BATCHING) != []


def _c_and_d_together(footprints: list[batching.Footprint | None], workers: int) -> list[list[int]]:
    """A plan with `c` and `d` in one batch, every other member alone."""
    pair = [i for i, f in enumerate(footprints) if f and f.directory.name in ("c", "d")]
    return ([pair] if pair else []) + [[i] for i in range(len(footprints)) if i not in pair]


def test_a_reference_another_member_renames_is_built_alone(
    monkeypatch: pytest.MonkeyPatch, processes: list[list[str]]
) -> None:
    monkeypatch.setattr(batching, "plan", _c_and_d_together)
    assert _differences(BATCHING) == []


def test_negative_control_without_the_cross_reference_check_d_gets_cs_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "plan", _c_and_d_together)
    monkeypatch.setattr(batching, "cross_references", lambda groups: set())
    rendering, _ = _render(BATCHING, batched=True)
    (deployment,) = [o.obj for o in rendering.objects if o.kustomization == "flux-system/d"]
    name = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
    assert name["configMapRef"]["name"].startswith("settings-")  # c's generated ConfigMap
    assert _differences(BATCHING) != []


def test_members_with_their_own_configuration_are_built_alone() -> None:
    documents = list(load([str(BATCHING)]))
    with Renderer(BATCHING, documents, find_kustomize()) as renderer:
        ks = next(
            d.obj
            for d in documents
            if d.obj is not None and (d.obj.get("metadata") or {}).get("name") == "e"
        )
        assert renderer._footprint(ks, str(BATCHING / "clusters/main/e.yaml")) is None


def test_cross_references_flag_only_reachable_names() -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "settings-abc", "namespace": "media"}}
    user = {
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "media"},
        "x": "settings-abc",
    }
    elsewhere = {**user, "metadata": {"name": "d", "namespace": "other"}}
    binding = {**elsewhere, "kind": "RoleBinding"}
    release = {"kind": "HelmRelease", "metadata": {"name": "settings-abc", "namespace": "media"}}
    assert batching.cross_references([[config], [user]]) == {1}
    assert batching.cross_references([[config], [elsewhere]]) == set()
    assert batching.cross_references([[config], [binding]]) == {1}
    assert batching.cross_references([[config, user]]) == set()  # its own ConfigMap
    assert batching.cross_references([[release], [user]]) == set()  # never a referral target


# The fetched public repos (never committed): FLUXWARDEN_RENDER_REPOS=/tmp/render/home-ops:...
PUBLIC = [Path(p) for p in os.environ.get("FLUXWARDEN_RENDER_REPOS", "").split(":") if p]


@pytest.mark.skipif(not PUBLIC, reason="set FLUXWARDEN_RENDER_REPOS to fetched Flux repos")
@pytest.mark.parametrize("repo", PUBLIC, ids=str)
def test_public_repo_renders_the_same_batched(repo: Path) -> None:
    assert _differences(repo) == []


def _footprint(directory: str, files: set[str], namespace: str | None) -> batching.Footprint:
    return batching.Footprint(
        Path(directory), frozenset({Path(directory)}), frozenset(map(Path, files)), namespace
    )


def test_plan_keeps_apart_members_that_may_clash_or_read_each_other() -> None:
    shared = "/r/components/backup/pvc.yaml"
    a = _footprint("/r/apps/a", {"/r/apps/a/x.yaml", shared}, "media")
    b = _footprint("/r/apps/b", {"/r/apps/b/x.yaml", shared}, "media")
    c = _footprint("/r/apps/c", {"/r/apps/c/x.yaml", shared}, "tools")  # shared, elsewhere
    inner = _footprint("/r/apps/a/sub", {"/r/apps/a/sub/x.yaml"}, "other")
    reader = _footprint("/r/apps/d", {"/r/apps/c/kustomization.yaml"}, "other")
    # a and b: the same file in one namespace; c shares it in another namespace and joins the
    # smallest batch; no footprint: alone; inner lies below a's directory; reader reads c's
    # kustomization.yaml
    assert batching.plan([a, b, c, None, inner, reader], workers=1) == [[0, 2], [1, 4, 5], [3]]
    assert len(batching.plan([a, c], workers=2)) == 2  # at least one batch per worker


def test_plan_keeps_the_clusters_apart() -> None:
    """Two clusters' own variants of an app share no file but have the same object IDs (the
    same `pool` in kube-system): members of different groups are never batched together."""
    main = _footprint("/r/apps/main/cilium", {"/r/apps/main/cilium/pool.yaml"}, "kube-system")
    other = _footprint("/r/apps/other/cilium", {"/r/apps/other/cilium/pool.yaml"}, "kube-system")
    app = _footprint("/r/apps/main/app", {"/r/apps/main/app/x.yaml"}, "apps")
    assert batching.plan([main, other, app], workers=1) == [[0, 1, 2]]
    assert batching.plan([main, other, app], workers=1, groups=[0, 1, 0]) == [[0, 2], [1]]
