"""One render per run: a build shared by clusters (or by audit and fix) is exactly the build.

A fleet of three clusters renders one shared directory through a Flux Kustomization of the same
name: `a` and `b` with the same fields and different variables (one build, substituted apart),
`c` with a patch, a target namespace and an image (a build of its own). Each cluster rendered
with the run's shared cache must give what it gives rendered alone, objects must differ where
the inputs differ, and a file changed between two renders of one cache must be seen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.audit import render_cache
from webhook.audit.clusters import clusters_of, with_sync_entries
from webhook.audit.documents import load
from webhook.audit.render import Renderer, find_kustomize, render_clusters
from webhook.audit.render_cache import RenderCache

RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: app
spec:
  interval: 5m
  releaseName: app-${TIER}
  chart:
    spec:
      chart: app
      image: ghcr.io/example/app:1.0.0
      sourceRef: {kind: HelmRepository, name: charts}
"""

CLUSTER = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: vars, namespace: flux-system}
data: {TIER: %(tier)s}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  path: ./apps/shared
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
  postBuild:
    substituteFrom: [{kind: ConfigMap, name: vars}]
%(extra)s"""

PATCHED = """\
  targetNamespace: apps-c
  images: [{name: ghcr.io/example/app, newTag: 2.0.0}]
  patches:
    - target: {kind: HelmRelease}
      patch: |
        - op: replace
          path: /spec/interval
          value: 1h
"""


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    files = {
        "apps/shared/kustomization.yaml": "resources: [release.yaml]\n",
        "apps/shared/release.yaml": RELEASE,
        "clusters/a/apps.yaml": CLUSTER % {"tier": "alpha", "extra": ""},
        "clusters/b/apps.yaml": CLUSTER % {"tier": "beta", "extra": ""},
        "clusters/c/apps.yaml": CLUSTER % {"tier": "alpha", "extra": PATCHED},
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _render(root: Path, cache: RenderCache | None) -> dict[str, list[Any]]:
    """Each cluster's rendered objects (with file, Kustomization, unknowns) and problems."""
    documents = list(load([str(root)]))
    rendered: dict[str, list[Any]] = {}
    for cluster in clusters_of(root, documents):
        entries = with_sync_entries(cluster.documents)
        with Renderer(root, entries, find_kustomize(), cache=cache) as renderer:
            rendering = renderer.render_all()
        rendered[cluster.name] = [
            [o.obj, str(o.source), o.kustomization, list(o.unknown)] for o in rendering.objects
        ] + [[p.source, p.message] for p in rendering.problems]
    return rendered


def _release(objects: list[Any]) -> dict[str, Any]:
    (release,) = [o[0] for o in objects if isinstance(o[0], dict) and o[0]["kind"] == "HelmRelease"]
    return release


def test_a_shared_cache_renders_each_cluster_as_it_renders_alone(fleet: Path) -> None:
    alone = _render(fleet, None)
    with RenderCache() as cache:
        shared = _render(fleet, cache)
    assert json.dumps(shared, sort_keys=True) == json.dumps(alone, sort_keys=True)
    assert cache.hits == 1  # b's build is a's: same Kustomization, same fields
    # each cluster's directory (the sync bootstrap keeps outside Git), then a's and c's apps
    assert cache.kustomize_runs == 5


def test_objects_differ_where_the_inputs_differ(fleet: Path) -> None:
    with RenderCache() as cache:
        rendered = _render(fleet, cache)
    a, b, c = (_release(rendered[f"clusters/{name}"]) for name in "abc")
    assert a["spec"]["releaseName"] == "app-alpha"
    assert b["spec"]["releaseName"] == "app-beta"  # one build, its own variables
    assert c["spec"]["releaseName"] == "app-alpha"
    assert (a["spec"]["interval"], c["spec"]["interval"]) == ("5m", "1h")  # c's patch
    assert (a["metadata"].get("namespace"), c["metadata"]["namespace"]) == (None, "apps-c")
    b["spec"]["releaseName"] = "app-alpha"
    assert a == b  # and nothing else differs between a and b


def test_changing_a_rendered_object_does_not_change_the_cached_build(fleet: Path) -> None:
    """A caller edits the objects it gets (fix does): the next cluster's copy is untouched."""
    _edit(fleet, "apps/shared/release.yaml", "app-${TIER}", "app")  # nothing to substitute
    seen = []
    with RenderCache() as cache:
        documents = list(load([str(fleet)]))
        for cluster in clusters_of(fleet, documents)[:2]:
            with Renderer(fleet, cluster.documents, find_kustomize(), cache=cache) as renderer:
                release = _release([[o.obj] for o in renderer.render_all().objects])
            seen.append(release["spec"]["interval"])
            release["spec"]["interval"] = "changed"
    assert seen == ["5m", "5m"]
    assert cache.hits == 1  # the second cluster's objects came from the cache


def _edit(root: Path, name: str, old: str, new: str) -> None:
    """Replace a file as fix --write does (a new file, so the copy's hard link keeps the old)."""
    path = root / name
    scratch = path.with_suffix(".new")
    scratch.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    os.replace(scratch, path)


def test_a_file_changed_between_two_renders_of_one_cache_is_rendered_anew(fleet: Path) -> None:
    with RenderCache() as cache:
        before = _release(_render(fleet, cache)["clusters/a"])
        _edit(fleet, "apps/shared/release.yaml", "interval: 5m", "interval: 7m")
        after = _release(_render(fleet, cache)["clusters/a"])
    assert (before["spec"]["interval"], after["spec"]["interval"]) == ("5m", "7m")


def test_a_stale_cache_would_be_caught(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a cache that never sees the repo change (one snapshot for all) gives
    the old objects, and the check above sees it."""
    frozen = render_cache.snapshot(fleet.resolve())
    monkeypatch.setattr(render_cache, "snapshot", lambda root: frozen)
    with RenderCache() as cache:
        _render(fleet, cache)
        _edit(fleet, "apps/shared/release.yaml", "interval: 5m", "interval: 7m")
        after = _release(_render(fleet, cache)["clusters/a"])
    assert after["spec"]["interval"] == "5m"


def test_a_key_blind_to_the_flux_fields_would_be_caught(
    fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: keyed by the directory alone, c gets a's build (no patch, no target
    namespace), and the comparison with rendering alone sees it."""

    def blind(**parts: Any) -> str:
        return str(parts["target"])

    alone = _render(fleet, None)
    monkeypatch.setattr("webhook.audit.render.build_key", blind)
    with RenderCache() as cache:
        shared = _render(fleet, cache)
    assert shared["clusters/a"] == alone["clusters/a"]
    assert shared["clusters/c"] != alone["clusters/c"]


def test_rendering_the_clusters_together_is_rendering_each_alone(fleet: Path) -> None:
    """`render_clusters` walks the clusters in step (their levels built as one): each cluster's
    rendering is the one it has rendered alone, and the shared build is made once."""
    documents = list(load([str(fleet)]))
    clusters = clusters_of(fleet, documents)
    entries = [with_sync_entries(c.documents) for c in clusters]
    with RenderCache() as cache:
        together = render_clusters(fleet, entries, find_kustomize(), cache=cache)
    alone = _render(fleet, None)
    assert [c.name for c in clusters] == list(alone)
    for cluster, rendering in zip(clusters, together, strict=True):
        rendered = [
            [o.obj, str(o.source), o.kustomization, list(o.unknown)] for o in rendering.objects
        ] + [[p.source, p.message] for p in rendering.problems]
        assert rendered == alone[cluster.name]
    assert (cache.kustomize_runs, cache.hits) == (5, 1)  # 3 cluster directories, 2 apps
