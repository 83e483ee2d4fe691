"""The cluster overlay a Flux Kustomization builds, and what a build reaches (fix's per-cluster
place: a patch there must change no cluster that needs something else)."""

from __future__ import annotations

from webhook.audit.documents import Document, parse_stream
from webhook.audit.overlays import overlay_of, reached


def _files(texts: dict[str, str]) -> dict[str, list[Document]]:
    return {path: list(parse_stream(text, path)) for path, text in texts.items()}


FILES = _files(
    {
        "repo/apps/base/podinfo/kustomization.yaml": "resources:\n  - release.yaml\n",
        "repo/apps/main/kustomization.yaml": "resources:\n  - ../base/podinfo\n",
        "repo/apps/test/kustomization.yaml": "resources:\n  - ../base/podinfo\n",
        # staging builds test's overlay too (and a remote base, which reaches nothing here)
        "repo/apps/staging/kustomization.yaml": (
            "resources:\n  - ../test\n  - https://github.com/example/x//base\n"
        ),
        "repo/clusters/main/apps.yaml": "kind: Kustomization\n",
    }
)


def test_the_overlay_is_found_from_the_repo_root_above_the_flux_kustomization() -> None:
    found = overlay_of("repo/clusters/main/apps.yaml", "./apps/main", FILES)
    assert found is not None
    assert found.source == "repo/apps/main/kustomization.yaml"
    assert overlay_of("repo/clusters/main/apps.yaml", "./apps/${CLUSTER}", FILES) is None
    assert overlay_of("repo/clusters/main/apps.yaml", "./apps/none", FILES) is None


def test_a_build_reaches_the_directories_its_resources_name() -> None:
    assert reached("repo/apps/main", FILES) == {"repo/apps/main", "repo/apps/base/podinfo"}
    assert "repo/apps/test" in reached("repo/apps/staging", FILES)
    assert "repo/apps/test" not in reached("repo/apps/main", FILES)
