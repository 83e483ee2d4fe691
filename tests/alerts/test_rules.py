"""The alerts component: generated from the policy set, checked and unit-tested with the real
promtool (`tests/controlplane/prometheus/build.sh`, part of `make controlplane`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import REPO
from webhook.alerts import dependency_wait, prometheus_rule, render
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet, parse_policy_set

COMPONENT = REPO / "manifests" / "components" / "monitoring"
RULE_FILE = COMPONENT / "prometheusrule.yaml"
PROMETHEUS_BUILD = REPO / "tests" / "controlplane" / "prometheus" / "build.sh"
SHIPPED_TEXT = SHIPPED_POLICIES.read_text()


def promtool() -> Path:
    """The project-built promtool; fails (never skips) when it is missing."""
    out = subprocess.run(
        [str(PROMETHEUS_BUILD), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    binary = Path(out) / "promtool"
    if not binary.is_file():
        pytest.fail(f"promtool missing in {out}: run `make controlplane`", pytrace=False)
    return binary


def _rules(policy_set: PolicySet) -> dict[str, dict[str, Any]]:
    groups = prometheus_rule(policy_set)["spec"]["groups"]
    return {
        f"{rule['alert']}/{rule['labels']['severity']}": rule
        for group in groups
        for rule in group["rules"]
    }


def test_committed_component_is_what_the_shipped_set_generates(shipped_policies: PolicySet) -> None:
    assert RULE_FILE.read_text() == render(shipped_policies), (
        "regenerate: fluxwarden alerts > manifests/components/monitoring/prometheusrule.yaml"
    )


def test_rules_follow_the_policy_set_params(shipped_policies: PolicySet) -> None:
    edited = (
        SHIPPED_TEXT.replace("namespaces: [flux-system]", "namespaces: [flux]")
        .replace('dataVolumeClaim: ""', "dataVolumeClaim: sc-data")
        .replace("maxDepth: 5", "maxDepth: 20")
        .replace("interval: 5s", "interval: 30s")
    )
    shipped, changed = _rules(shipped_policies), _rules(parse_policy_set(edited, source="x"))
    memory = "FluxImageReflectorMemoryNearLimit/warning"
    assert 'namespace=~"flux-system"' in shipped[memory]["expr"]
    assert 'namespace=~"flux"' in changed[memory]["expr"]
    assert "FluxSourceControllerVolumeFillingUp/warning" not in shipped  # no claim: no rule
    claim = changed["FluxSourceControllerVolumeFillingUp/warning"]["expr"]
    assert 'persistentvolumeclaim="sc-data"' in claim
    assert 'namespace=~"flux"' in claim
    # 20 hops of 30s requeue + 1m each: 30 minutes; the shipped 5 x (5s + 1m): the 10m floor
    assert shipped["FluxKustomizationDependencyNotReady/warning"]["for"] == "10m"
    assert changed["FluxKustomizationDependencyNotReady/warning"]["for"] == "30m"
    assert dependency_wait(shipped_policies) == "10m"


def test_fleet_rule_follows_names_and_prefixes() -> None:
    edited = SHIPPED_TEXT.replace("namePrefixes: [helm-operation-]", "namePrefixes: [op.]")
    expr = _rules(parse_policy_set(edited, source="x"))["FleetPodPending/warning"]["expr"]
    assert 'op\\\\..+"' in expr  # a prefix's dot is literal in the pod regex
    assert "helm-operation-" not in expr


def test_cli_prints_the_rule_for_a_policy_set(tmp_path: Path) -> None:
    policies = tmp_path / "set.yaml"
    policies.write_text(SHIPPED_TEXT.replace('dataVolumeClaim: ""', "dataVolumeClaim: sc-data"))
    result = subprocess.run(
        [*_fluxwarden(), "alerts", "--policies", str(policies), "--namespace", "ops"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rule = yaml.safe_load(result.stdout)
    assert rule["metadata"]["namespace"] == "ops"
    assert "FluxSourceControllerVolumeFillingUp" in result.stdout


def _fluxwarden() -> list[str]:
    import sys

    return [sys.executable, "-m", "webhook"]


@pytest.mark.e2e
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(yaml.safe_load(RULE_FILE.read_text())["spec"]))
    checked = subprocess.run(
        [str(promtool()), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


@pytest.mark.e2e
def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    """tests/alerts/rules_test.yaml: every rule fires on its failure mode, and stays quiet on
    look-alike series. Annotations are dropped (promtool compares them verbatim; their templates
    are checked by `promtool check rules` above)."""
    spec = yaml.safe_load(RULE_FILE.read_text())["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(Path(__file__).parent / "rules_test.yaml", tmp_path / "rules_test.yaml")
    tested = subprocess.run(
        [str(promtool()), "test", "rules", "rules_test.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.e2e
def test_promtool_fails_a_rule_that_does_not_fire(tmp_path: Path) -> None:
    """Negative control: with the IRC memory threshold raised past the test's 84%, the same
    unit tests fail, so a passing run means the rules really fired."""
    spec = yaml.safe_load(RULE_FILE.read_text())["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if rule["alert"] == "FluxImageReflectorMemoryNearLimit":
                rule["expr"] = rule["expr"].replace("> 0.8", "> 0.9")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(Path(__file__).parent / "rules_test.yaml", tmp_path / "rules_test.yaml")
    tested = subprocess.run(
        [str(promtool()), "test", "rules", "rules_test.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert tested.returncode == 1
    assert "FluxImageReflectorMemoryNearLimit" in tested.stdout + tested.stderr
