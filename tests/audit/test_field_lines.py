"""A finding points at the line of the field it is about, also for an object whose name Flux
substitutes (`name: ${app}`): the rendered name is not the written one (issue 18, item 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import KUBE_SYSTEM_POLICIES, REPOS, kubectl_or_skip
from webhook.cli import main


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def test_a_substituted_name_still_points_at_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    podinfo = repo / "apps/podinfo"
    for name in ("release.yaml", "release-values.yaml"):
        text = (podinfo / name).read_text().replace("name: podinfo\n", "name: ${app_name}\n", 1)
        (podinfo / name).write_text(text.replace("${podinfo_interval}", "10s"))
    apps = repo / "clusters/prod/apps.yaml"
    apps.write_text(
        apps.read_text().replace(
            "      cluster_name: prod\n", "      cluster_name: prod\n      app_name: podinfo\n"
        )
    )
    assert main(["audit", "-o", "json", "--policies", str(KUBE_SYSTEM_POLICIES), str(repo)]) == 1
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    interval = next(
        f
        for f in report["findings"]
        if f["policy"] == "helmrelease-interval" and f["name"] == "podinfo"
    )
    lines = (podinfo / "release.yaml").read_text().splitlines()
    assert interval["result"] == "warn"
    assert interval["source"] == str(podinfo / "release.yaml")
    assert lines[interval["line"] - 1] == "  interval: 10s"
    assert any("10s" in m for m in interval["messages"])  # the value as written
