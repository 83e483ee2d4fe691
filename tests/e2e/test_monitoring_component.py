"""The optional monitoring component, rendered with the base as a user's overlay would, accepted by
the real API server once the prometheus-operator CRDs (generated from its API module by
tests/controlplane/prometheus/build.sh) are installed."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import REPO, ensure_namespaces, install_crds

pytestmark = pytest.mark.e2e

PROMETHEUS_BUILD = REPO / "tests" / "controlplane" / "prometheus" / "build.sh"
MONITORING_KINDS = ("PrometheusRule", "ServiceMonitor")


@pytest.fixture(scope="module")
def monitoring_crds(cluster: ControlPlane) -> None:
    out = subprocess.run(
        [str(PROMETHEUS_BUILD), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    crds = Path(out) / "crds"
    wanted = [
        crds / f"monitoring.coreos.com_{p}.yaml" for p in ("prometheusrules", "servicemonitors")
    ]
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing:
        pytest.fail(f"missing {missing}: run `make controlplane`", pytrace=False)
    install_crds(cluster, *wanted)
    ensure_namespaces(cluster, "fluxwarden-system")


def _rendered(cluster: ControlPlane, tmp_path: Path) -> list[dict[str, Any]]:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(REPO / "manifests" / "base", overlay)],
                "components": [
                    os.path.relpath(REPO / "manifests" / "components" / "monitoring", overlay)
                ],
            }
        )
    )
    text = cluster.kubectl("kustomize", str(overlay)).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _dry_run(
    cluster: ControlPlane, objects: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects), check=False
    )


def test_component_applies_with_the_generated_crds(
    cluster: ControlPlane, monitoring_crds: None, tmp_path: Path
) -> None:
    docs = _rendered(cluster, tmp_path)
    monitoring = [d for d in docs if d["kind"] in MONITORING_KINDS]
    assert sorted(d["kind"] for d in monitoring) == sorted(MONITORING_KINDS)
    assert {d["metadata"]["namespace"] for d in monitoring} == {"fluxwarden-system"}
    service = next(d for d in docs if d["kind"] == "Service")
    monitor = next(d for d in monitoring if d["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()  # it finds the Service
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    applied = _dry_run(cluster, monitoring)
    assert applied.returncode == 0, applied.stderr
    assert "prometheusrule.monitoring.coreos.com/fluxwarden created (server dry run)" in (
        applied.stdout
    )


def test_the_crd_schema_rejects_a_broken_rule(
    cluster: ControlPlane, monitoring_crds: None, tmp_path: Path
) -> None:
    """Negative control: the dry run above is validated against the CRD, not waved through."""
    rule = next(d for d in _rendered(cluster, tmp_path) if d["kind"] == "PrometheusRule")
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    refused = _dry_run(cluster, [broken])
    assert refused.returncode != 0
    assert "for" in refused.stderr, json.dumps(refused.stderr)
