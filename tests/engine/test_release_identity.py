"""helmrelease-release-identity: the release target is computed as helm-controller computes it
(api/v2 GetReleaseName/GetReleaseNamespace/GetStorageNamespace), and only a change of it on an
installed release is denied."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.engine.policies.helmrelease_release_identity import (
    ReleaseTarget,
    changes,
    installed,
    release_target,
)


def _release(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "podinfo", "namespace": "apps"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ReleaseTarget("apps", "apps", "podinfo", None)),
        # The default release name is [targetNamespace-]name.
        ({"targetNamespace": "web"}, ReleaseTarget("apps", "web", "web-podinfo", None)),
        (
            {"targetNamespace": "web", "releaseName": "site", "storageNamespace": "helm"},
            ReleaseTarget("helm", "web", "site", None),
        ),
        (
            {"chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository"}}}},
            ReleaseTarget("apps", "apps", "podinfo", "podinfo"),
        ),
        # A GitRepository chart is a path: the chart's name is in its Chart.yaml, not here.
        (
            {"chart": {"spec": {"chart": "./charts/x", "sourceRef": {"kind": "GitRepository"}}}},
            ReleaseTarget("apps", "apps", "podinfo", None),
        ),
    ],
)
def test_release_target_is_helm_controllers(spec: dict[str, Any], expected: ReleaseTarget) -> None:
    assert release_target(_release(**spec), "apps") == expected


def test_only_a_recorded_release_can_be_uninstalled() -> None:
    assert not installed(None)
    assert not installed(_release())
    assert not installed({"status": {"storageNamespace": "apps", "history": []}})
    assert not installed({"status": {"history": [{"name": "podinfo"}]}})
    assert installed({"status": {"storageNamespace": "apps", "history": [{"name": "podinfo"}]}})


def test_changes_name_each_difference_and_honour_in_place_chart_updates() -> None:
    before = ReleaseTarget("apps", "apps", "podinfo", "podinfo")
    assert changes(before, before, in_place_chart=False) == []
    renamed = ReleaseTarget("apps", "apps", "podinfo", "podinfo-next")
    assert changes(before, renamed, in_place_chart=False) == ["chart name podinfo -> podinfo-next"]
    assert changes(before, renamed, in_place_chart=True) == []
    # An unknown chart name (chartRef, Git path) on either side is not a change.
    assert (
        changes(before, ReleaseTarget("apps", "apps", "podinfo", None), in_place_chart=False) == []
    )
    moved = ReleaseTarget("web", "web", "web-podinfo", "podinfo")
    assert changes(before, moved, in_place_chart=False) == [
        "storage namespace apps -> web",
        "release namespace apps -> web",
        "release name podinfo -> web-podinfo",
    ]
