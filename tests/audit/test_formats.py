"""`fluxwarden audit` output formats: golden files, SARIF against the official schema, JUnit
counts, the table's layout, and the command's exit codes as a user sees them.

Golden data: `tests/audit/golden/manifests/` is the input (audited from `tests/audit/golden/`, so
paths in the outputs are relative); `expected.table`, `expected.json`, `expected.sarif` and
`expected.junit.xml` are the outputs. After an intended change, regenerate them and review the
diff:

    .venv/bin/python -m tests.audit.test_formats --regen
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from webhook import __version__
from webhook.audit.documents import load
from webhook.audit.findings import AuditReport, Finding, InputProblem, ObjectLocation
from webhook.audit.formats import (
    FORMATS,
    INPUT_ERROR_RULE,
    MESSAGE_LIMIT,
    SARIF_LEVELS,
    VALUE_PREFIX,
    artifact_uri,
    printable,
    quoting_prefix,
    render,
    render_junit,
    render_sarif,
    render_table,
)
from webhook.audit.offline import audit_documents, rule_descriptions
from webhook.cli import SHIPPED_POLICIES
from webhook.server.policystore import load_policy_file

GOLDEN = Path(__file__).parent / "golden"
MANIFESTS = "manifests"  # relative to GOLDEN: the paths the outputs show
EXPECTED = {
    "table": "expected.table",
    "json": "expected.json",
    "sarif": "expected.sarif",
    "junit": "expected.junit.xml",
}
SARIF_SCHEMA = Path(__file__).parent.parent / "schemas" / "sarif-schema-2.1.0.json"
FLUXWARDEN = [sys.executable, "-m", "webhook"]


def golden_report() -> AuditReport:
    """The golden manifests audited with the shipped policies, paths relative to GOLDEN."""
    cwd = Path.cwd()
    os.chdir(GOLDEN)
    try:
        policy_set = load_policy_file(SHIPPED_POLICIES)
        return audit_documents(load([MANIFESTS]), policy_set=policy_set)
    finally:
        os.chdir(cwd)


def regenerate() -> list[Path]:
    """Rewrite every expected file from the current renderers; returns the files written."""
    report = golden_report()
    written = []
    for fmt, name in EXPECTED.items():
        path = GOLDEN / name
        path.write_text(render(report, fmt), encoding="utf-8")
        written.append(path)
    return written


@pytest.fixture(scope="module")
def report() -> AuditReport:
    return golden_report()


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _schema_errors(validator: jsonschema.Draft4Validator, log: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)
    ]


def _location(
    source: str = "apps/hr.yaml", line: int = 3, *, kind: str = "HelmRelease", name: str = "web"
) -> ObjectLocation:
    return ObjectLocation(source, line, "helm.toolkit.fluxcd.io/v2", kind, "apps", name)


def _every_result_report(source: str = "apps/hr.yaml") -> AuditReport:
    """One finding of each result, one broken document and one skipped document."""
    report = AuditReport(objects=1)
    for result, action in [
        ("pass", "none"),
        ("fail", "mutated"),
        ("warn", "warned"),
        ("error", "none"),
        ("skip", "exempted"),
    ]:
        report.findings.append(
            Finding(_location(source), f"policy-{result}", "enforce", result, action, (result,))
        )
    report.problems.append(InputProblem(source, 9, "invalid YAML: bad", True))
    report.problems.append(InputProblem(source, 12, "skipped: not a Kubernetes object", False))
    return report


# --- golden files ------------------------------------------------------------------------------


def test_golden_input_has_the_documented_mix(report: AuditReport) -> None:
    by_policy = {(f.location.name, f.policy): f.result for f in report.findings}
    assert by_policy[("image-reflector-controller", "irc-single-replica")] == "fail"
    assert by_policy[("podinfo", "helmrelease-interval")] == "pass"
    assert by_policy[("podinfo", "helmrelease-drift-detection")] == "pass"
    assert by_policy[("hasty", "helmrelease-interval")] == "warn"
    assert by_policy[("legacy", "helmrelease-interval")] == "skip"
    assert by_policy[("apps", "kustomization-dependencies")] == "fail"
    assert [(p.source, p.line, p.error) for p in report.problems] == [
        ("manifests/mixed.yaml", 21, True),
        ("manifests/mixed.yaml", 23, False),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_matches_golden(report: AuditReport, fmt: str) -> None:
    expected = (GOLDEN / EXPECTED[fmt]).read_text(encoding="utf-8")
    assert render(report, fmt) == expected, (
        f"{EXPECTED[fmt]} is stale: run `.venv/bin/python -m tests.audit.test_formats --regen` "
        "and review the diff"
    )


def test_outputs_name_files_relatively(report: AuditReport) -> None:
    for fmt in FORMATS:
        text = render(report, fmt)
        assert str(GOLDEN) not in text
        assert "manifests/irc.yaml" in text


# --- sarif -------------------------------------------------------------------------------------


def test_sarif_is_valid_against_the_official_schema(
    report: AuditReport, sarif_validator: jsonschema.Draft4Validator
) -> None:
    log = json.loads(render_sarif(report))
    assert _schema_errors(sarif_validator, log) == []


def test_schema_check_catches_a_broken_log(
    report: AuditReport, sarif_validator: jsonschema.Draft4Validator
) -> None:
    log = json.loads(render_sarif(report))
    result = log["runs"][0]["results"][0]
    result["level"] = "fatal"
    result["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    assert len(_schema_errors(sarif_validator, log)) >= 2


def test_sarif_driver_and_rules(report: AuditReport) -> None:
    driver = json.loads(render_sarif(report))["runs"][0]["tool"]["driver"]
    assert driver["name"] == "fluxwarden"
    assert driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert list(rules) == [*rule_descriptions(), INPUT_ERROR_RULE]
    for name, summary in rule_descriptions().items():
        assert rules[name]["fullDescription"]["text"] == summary
        assert summary.startswith(rules[name]["shortDescription"]["text"])
        assert rules[name]["defaultConfiguration"]["level"] in ("error", "warning")
        assert rules[name]["helpUri"].startswith("https://")


def test_sarif_results_are_the_findings_that_need_attention(report: AuditReport) -> None:
    run = json.loads(render_sarif(report))["runs"][0]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    got = [
        (
            r["ruleId"],
            r["level"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
        )
        for r in run["results"]
    ]
    assert got == [
        ("helmrelease-interval", "warning", "manifests/helmreleases.yaml", 27),
        ("irc-single-replica", "error", "manifests/irc.yaml", 8),
        ("kustomization-dependencies", "error", "manifests/mixed.yaml", 2),
        (INPUT_ERROR_RULE, "error", "manifests/mixed.yaml", 21),
    ]
    for result in run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"]
    irc = run["results"][1]["message"]["text"]
    assert irc.startswith("Deployment/flux-system/image-reflector-controller: set spec.replicas")
    assert "limits.memory to 2Gi" in irc  # both messages, joined


def test_sarif_levels_for_every_result(sarif_validator: jsonschema.Draft4Validator) -> None:
    log = json.loads(render_sarif(_every_result_report()))
    assert _schema_errors(sarif_validator, log) == []
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {
        "policy-fail": "error",
        "policy-warn": "warning",
        "policy-error": SARIF_LEVELS["error"],
        INPUT_ERROR_RULE: "error",
    }
    # unknown policies still get a rule, so every ruleId resolves
    rule_ids = {rule["id"] for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    assert set(levels) <= rule_ids


def test_sarif_cluster_findings_have_a_logical_location(
    sarif_validator: jsonschema.Draft4Validator,
) -> None:
    report = AuditReport(objects=1)
    location = ObjectLocation("cluster", 0, "apps/v1", "Deployment", "flux-system", "irc")
    report.findings.append(
        Finding(location, "irc-single-replica", "audit", "fail", "audited", ("would set",))
    )
    log = json.loads(render_sarif(report))
    assert _schema_errors(sarif_validator, log) == []
    (where,) = log["runs"][0]["results"][0]["locations"]
    assert "physicalLocation" not in where
    (logical,) = where["logicalLocations"]
    assert logical["fullyQualifiedName"] == "Deployment/flux-system/irc"
    assert logical["properties"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "flux-system",
    }


def test_sarif_start_line_is_at_least_one_for_unreadable_files(
    sarif_validator: jsonschema.Draft4Validator,
) -> None:
    report = AuditReport(problems=[InputProblem("missing.yaml", 0, "no such file", True)])
    log = json.loads(render_sarif(report))
    assert _schema_errors(sarif_validator, log) == []
    (result,) = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 1


def test_sarif_cluster_input_errors_point_at_no_file(
    sarif_validator: jsonschema.Draft4Validator,
) -> None:
    report = AuditReport(problems=[InputProblem("cluster", 0, "cannot list HelmReleases", True)])
    log = json.loads(render_sarif(report))
    assert _schema_errors(sarif_validator, log) == []
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == INPUT_ERROR_RULE
    assert "locations" not in result


def test_sarif_fingerprint_follows_the_object_not_the_line() -> None:
    def fingerprint(*, line: int, name: str = "web") -> str:
        finding = Finding(_location(line=line, name=name), "p", "warn", "warn", "", ())
        result = json.loads(render_sarif(AuditReport(findings=[finding])))["runs"][0]["results"][0]
        return str(result["partialFingerprints"]["fluxwardenObjectPolicy/v1"])

    assert fingerprint(line=3) == fingerprint(line=40)
    assert fingerprint(line=3) != fingerprint(line=3, name="other")


def test_artifact_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert artifact_uri("clusters/prod/apps.yaml") == "clusters/prod/apps.yaml"
    assert artifact_uri("./my apps/hr.yaml") == "my%20apps/hr.yaml"
    assert artifact_uri(str(tmp_path / "sub" / "x.yaml")) == "sub/x.yaml"
    outside = tmp_path.parent / "elsewhere.yaml"
    assert artifact_uri(str(outside)) == outside.as_uri()


# --- junit -------------------------------------------------------------------------------------


def _counts(element: ET.Element) -> dict[str, int]:
    return {key: int(element.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped")}


def _tally(cases: list[ET.Element]) -> dict[str, int]:
    return {
        "tests": len(cases),
        "failures": sum(case.find("failure") is not None for case in cases),
        "errors": sum(case.find("error") is not None for case in cases),
        "skipped": sum(case.find("skipped") is not None for case in cases),
    }


def test_junit_structure_and_counts(report: AuditReport) -> None:
    root = ET.fromstring(render_junit(report))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "manifests/helmreleases.yaml",
        "manifests/irc.yaml",
        "manifests/mixed.yaml",
    ]
    for suite in suites:
        cases = suite.findall("testcase")
        assert _counts(suite) == _tally(cases)
        assert {case.get("classname") for case in cases} == {suite.get("name")}
    # Every policy that matches an object is a test case (the new policies pass here, and
    # kustomization-safety on the apps Kustomization).
    assert _counts(root) == {"tests": 22, "failures": 2, "errors": 1, "skipped": 2}
    assert len(report.findings) + len(report.problems) == 22

    by_name = {case.get("name"): case for case in root.iter("testcase")}
    irc = by_name["Deployment/flux-system/image-reflector-controller irc-single-replica"]
    failure = irc.find("failure")
    assert failure is not None
    assert failure.get("type") == "fail"
    assert "set spec.replicas to 1 (was 2)" in failure.get("message", "")
    hasty = by_name["HelmRelease/apps/hasty helmrelease-interval"]
    assert list(hasty) == [hasty.find("system-out")]  # a warning passes, with the advice
    assert "shorter than 1m" in (hasty.findtext("system-out") or "")
    broken = by_name["document at line 21"].find("error")
    assert broken is not None
    assert broken.get("type") == "input-error"
    assert broken.get("message") == "invalid YAML: mapping values are not allowed here"
    assert by_name["HelmRelease/apps/legacy helmrelease-interval"].find("skipped") is not None
    assert list(by_name["HelmRelease/apps/podinfo helmrelease-interval"]) == []


def test_junit_every_result() -> None:
    root = ET.fromstring(render_junit(_every_result_report()))
    (suite,) = root.findall("testsuite")
    children = {
        (case.get("name") or "").split()[-1]: [child.tag for child in case]
        for case in suite.findall("testcase")
    }
    assert children == {
        "policy-pass": [],
        "policy-fail": ["failure"],
        "policy-warn": ["system-out"],
        "policy-error": ["error"],
        "policy-skip": ["skipped"],
        "9": ["error"],  # "document at line 9": the broken document
        "12": ["skipped"],  # "document at line 12": not Kubernetes
    }
    error = suite.find("testcase/error[@type='error']")
    assert error is not None
    assert _counts(root) == _counts(suite) == {"tests": 7, "failures": 1, "errors": 2, "skipped": 2}


def test_junit_escapes_markup_in_messages() -> None:
    message = 'spec.values has "<script>" & ]]> in it'
    report = AuditReport(findings=[Finding(_location(), "p", "enforce", "fail", "", (message,))])
    failure = ET.fromstring(render_junit(report)).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == message
    assert (failure.text or "").endswith(message)


def test_junit_empty_report_is_valid() -> None:
    root = ET.fromstring(render_junit(AuditReport()))
    assert _counts(root) == {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}


# --- table -------------------------------------------------------------------------------------


def test_table_lists_what_needs_attention(report: AuditReport) -> None:
    text = render_table(report)
    assert "PASS" not in text
    assert "SKIP" not in text
    assert "NOTE" not in text
    heads = [line.split()[0] for line in text.splitlines() if line[:1].isupper()]
    assert heads[:4] == ["WARN", "FAIL", "FAIL", "ERROR"]
    assert text.endswith(
        "5 objects, 20 results: 16 pass, 2 fail, 1 warn, 0 error, 1 skip; 1 input error\n"
        "notices: 1 skipped (not a Kubernetes object)\n"
    )


def test_table_verbose_adds_passes_skips_and_notes(report: AuditReport) -> None:
    text = render_table(report, verbose=True)
    for label in ("PASS", "SKIP", "NOTE"):
        assert f"\n{label} " in f"\n{text}"
    assert "manifests/mixed.yaml:23" in text


def test_table_columns_line_up(report: AuditReport) -> None:
    rows = [
        line
        for line in render_table(report, verbose=True).splitlines()
        if line.split(" ")[0] in ("PASS", "FAIL", "WARN", "SKIP")
    ]
    object_column = {row.index(row.split()[2]) for row in rows}
    policy_column = {row.index(row.split()[3], row.index(row.split()[2])) for row in rows}
    assert len(object_column) == 1
    assert len(policy_column) == 1


def test_table_colour_only_when_asked(report: AuditReport) -> None:
    assert "\033[" not in render_table(report, verbose=True)
    coloured = render_table(report, color=True)
    assert "\033[31mFAIL \033[0m" in coloured
    assert "\033[33mWARN \033[0m" in coloured
    plain = render(report, "table", color=False)
    assert (
        coloured.replace("\033[31m", "")
        .replace("\033[33m", "")
        .replace("\033[35m", "")
        .replace("\033[0m", "")
        == plain
    )


def test_table_keeps_input_order_across_findings_and_problems() -> None:
    report = AuditReport(objects=2)
    report.problems.append(InputProblem("first-missing.yaml", 0, "no such file or directory", True))
    report.findings.append(Finding(_location("b.yaml"), "p", "enforce", "fail", "", ("m",)))
    report.problems.append(InputProblem("c.yaml", 4, "invalid YAML: x", True))
    report.findings.append(Finding(_location("c.yaml", 1), "p", "enforce", "fail", "", ("m",)))
    report.findings.append(Finding(_location("c.yaml", 9), "p", "enforce", "fail", "", ("m",)))
    report.problems.append(InputProblem("z-missing.yaml", 0, "no such file or directory", True))
    heads = [line for line in render_table(report).splitlines() if line[:1].isupper()]
    assert [line.split()[1] for line in heads] == [
        "first-missing.yaml",
        "b.yaml:3",
        "c.yaml:1",
        "c.yaml:4",
        "c.yaml:9",
        "z-missing.yaml",
    ]


def test_table_of_a_clean_run_is_just_the_summary() -> None:
    report = AuditReport(objects=1)
    report.findings.append(Finding(_location(), "p", "enforce", "pass", "none", ()))
    assert render_table(report) == (
        "1 object, 1 result: 1 pass, 0 fail, 0 warn, 0 error, 0 skip; 0 input errors\n"
    )


# --- the command, end to end -------------------------------------------------------------------


def run_audit(
    *args: str, stdin: str | None = None, cwd: Path = GOLDEN
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLUXWARDEN, "audit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


@pytest.fixture
def clean_file(tmp_path: Path) -> Path:
    path = tmp_path / "clean.yaml"
    path.write_text((GOLDEN / MANIFESTS / "helmreleases.yaml").read_text().split("---")[0])
    return path


def test_cli_findings_exit_1() -> None:
    result = run_audit("manifests/irc.yaml")
    assert result.returncode == 1, result.stderr
    assert "FAIL   manifests/irc.yaml:8" in result.stdout
    assert result.stderr == ""


def test_cli_fail_on_none_exits_0() -> None:
    result = run_audit("manifests/irc.yaml", "--fail-on", "none")
    assert result.returncode == 0, result.stderr
    assert "irc-single-replica" in result.stdout


def test_cli_warnings_fail_only_with_fail_on_warn() -> None:
    hasty = (GOLDEN / MANIFESTS / "helmreleases.yaml").read_text()
    assert run_audit("-", stdin=hasty).returncode == 0
    assert run_audit("-", "--fail-on", "warn", stdin=hasty).returncode == 1


def test_cli_clean_input_exits_0(clean_file: Path) -> None:
    result = run_audit(str(clean_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^1 object, (\d+) results: \1 pass, 0 fail", result.stdout, re.M)


def test_cli_broken_yaml_exits_2_and_still_reports_the_rest() -> None:
    result = run_audit("manifests/mixed.yaml", "-o", "json")
    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert [(f["name"], f["result"]) for f in body["findings"] if f["result"] != "pass"] == [
        ("apps", "fail")
    ]
    assert body["summary"]["inputErrors"] == 1
    assert body["problems"][0]["line"] == 21


def test_cli_reads_stdin() -> None:
    irc = (GOLDEN / MANIFESTS / "irc.yaml").read_text()
    result = run_audit("-", "-o", "sarif", stdin=irc)
    assert result.returncode == 1, result.stderr
    (finding,) = json.loads(result.stdout)["runs"][0]["results"]
    assert finding["ruleId"] == "irc-single-replica"
    assert (
        finding["locations"][0]["physicalLocation"]["region"]["startLine"] == 8
    )  # the `replicas: 2` line the fix changes


def test_cli_nonexistent_path_exits_2_naming_it() -> None:
    result = run_audit("manifests/irc.yaml", "no/such-file.yaml")
    assert result.returncode == 2
    assert "no/such-file.yaml" in result.stdout + result.stderr
    assert "irc-single-replica" in result.stdout  # the readable file is still audited


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_output_is_the_golden_output(fmt: str) -> None:
    result = run_audit(MANIFESTS, "-o", fmt)
    assert result.returncode == 2  # the broken document
    assert result.stdout == (GOLDEN / EXPECTED[fmt]).read_text(encoding="utf-8")


# --- strings from the input: a hostile pull request --------------------------------------------


def test_printable_escapes_what_could_start_a_line_or_steer_a_terminal() -> None:
    assert printable("a\n::error::x") == "a\\n::error::x"
    assert printable("\r\t\x1b[31m\x00\x7f\x85") == "\\r\\t\\x1b[31m\\x00\\x7f\\x85"
    assert printable("\u2028\u202e\ufffe") == "\\u2028\\u202e\\ufffe"
    assert printable(b"bad\xffname".decode("utf-8", "surrogateescape")) == "bad\\xffname"
    assert printable("plain ünïcode, 'quotes' & <markup> \\ ok") == (
        "plain ünïcode, 'quotes' & <markup> \\ ok"
    )


def test_a_message_quotes_a_short_prefix_of_any_value() -> None:
    long = "x" * 1000
    quoted = quoting_prefix(f"spec.interval {long!r} is not a duration")
    assert quoted == f"spec.interval '{'x' * VALUE_PREFIX}…' is not a duration"
    assert quoting_prefix(f'name "{long}" here') == f'name "{"x" * VALUE_PREFIX}…" here'
    assert quoting_prefix(f"set a to {long} (was 1)") == f"set a to {'x' * VALUE_PREFIX}… (was 1)"
    words = " ".join(["word"] * 1000)
    assert len(quoting_prefix(words)) == MESSAGE_LIMIT + 1
    # apostrophes in prose are not quotes; what is short stays as it is
    prose = "/tmp is not a volume: the container's writable layer fills, it's " + "y" * 60
    assert quoting_prefix(prose) == prose
    assert quoting_prefix(f"value {'z' * VALUE_PREFIX!r}") == f"value {'z' * VALUE_PREFIX!r}"


HOSTILE_IRC = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: image-reflector-controller, namespace: flux-system}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: manager
          resources: {limits: {memory: 1Gi}}
"""
EVIL_FILE = "evil\n::error file=x::pwned.yaml"
EVIL_NAME = "x\n::warning::name\x1b[2J"
LONG_VALUE = "\n::error::interval\x1b[31m\u202e" + "A" * 300


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    """Files a pull request controls: a file name with a newline, an object name with a
    newline, values with newlines, escape sequences and 300 characters."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / EVIL_FILE).write_text(HOSTILE_IRC)
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": EVIL_NAME, "namespace": "flux-system"},
        "spec": {
            "interval": LONG_VALUE,  # quoted (repr) in its advice
            "chart": {"spec": {"chart": "c", "sourceRef": {"kind": "HelmRepository", "name": "r"}}},
        },
    }
    (repo / "hr.yaml").write_text(yaml.safe_dump(release))
    controller = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kustomize-controller", "namespace": "flux-system"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {  # "(was …)" shows the value as it is, not quoted
                            "name": "manager",
                            "args": ["--requeue-dependency=\n::error::flag\x1b[31m\f" + "B" * 300],
                        }
                    ]
                }
            }
        },
    }
    (repo / "kc.yaml").write_text(yaml.safe_dump(controller))
    return tmp_path


def _no_line_from_the_input(text: str) -> None:
    assert [line for line in text.splitlines() if line.lstrip().startswith("::")] == []
    assert "A" * (VALUE_PREFIX + 1) not in text
    assert "B" * (VALUE_PREFIX + 1) not in text


def test_table_escapes_every_string_from_the_input(hostile_repo: Path) -> None:
    result = run_audit("--no-render", "repo", cwd=hostile_repo)
    assert (result.returncode, result.stderr) == (1, "")
    _no_line_from_the_input(result.stdout)
    assert printable(result.stdout.replace("\n", "")) == result.stdout.replace("\n", "")
    assert "repo/evil\\n::error file=x::pwned.yaml:5" in result.stdout
    assert "HelmRelease/flux-system/x\\n::warning::name" in result.stdout
    assert "AAAA…'" in result.stdout  # a prefix of the value is still quoted


def test_junit_of_hostile_input_parses(hostile_repo: Path) -> None:
    result = run_audit("--no-render", "repo", "-o", "junit", cwd=hostile_repo)
    assert (result.returncode, result.stderr) == (1, "")
    root = ET.fromstring(result.stdout)  # raw control characters would not parse
    _no_line_from_the_input(result.stdout)
    suites = {suite.get("name") for suite in root.iter("testsuite")}
    assert suites == {"repo/evil\\n::error file=x::pwned.yaml", "repo/hr.yaml", "repo/kc.yaml"}


def test_json_and_sarif_of_hostile_input_are_json(
    hostile_repo: Path, sarif_validator: jsonschema.Draft4Validator
) -> None:
    result = run_audit("--no-render", "repo", "-o", "json", cwd=hostile_repo)
    assert (result.returncode, result.stderr) == (1, "")
    _no_line_from_the_input(result.stdout)
    body = json.loads(result.stdout)
    assert {f["name"] for f in body["findings"]} >= {EVIL_NAME}  # the very name, as JSON
    assert "repo/" + EVIL_FILE in {f["source"] for f in body["findings"]}
    result = run_audit("--no-render", "repo", "-o", "sarif", cwd=hostile_repo)
    assert (result.returncode, result.stderr) == (1, "")
    _no_line_from_the_input(result.stdout)
    log = json.loads(result.stdout)
    assert _schema_errors(sarif_validator, log) == []
    uris = {
        location["physicalLocation"]["artifactLocation"]["uri"]
        for r in log["runs"][0]["results"]
        for location in r["locations"]
    }
    assert uris == {
        "repo/evil%0A%3A%3Aerror%20file%3Dx%3A%3Apwned.yaml",
        "repo/hr.yaml",
        "repo/kc.yaml",
    }


def test_fix_prints_file_names_escaped(hostile_repo: Path) -> None:
    (hostile_repo / "repo" / "broken\n::error::x.yaml").write_text("a: [1\n")
    result = subprocess.run(
        [*FLUXWARDEN, "fix", "--check", "--no-render", "repo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=hostile_repo,
    )
    assert result.returncode == 2, result.stderr
    assert "would fix repo/evil\\n::error file=x::pwned.yaml\n" in result.stderr
    assert "fluxwarden: repo/broken\\n::error::x.yaml:1: invalid YAML" in result.stderr
    _no_line_from_the_input(result.stderr)


def test_fix_diff_headers_print_file_names_escaped(hostile_repo: Path) -> None:
    """The unified diff on stdout names the file in its `---`/`+++` headers: escaped too."""
    result = subprocess.run(
        [*FLUXWARDEN, "fix", "--no-render", "repo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=hostile_repo,
    )
    assert "--- a/repo/evil\\n::error file=x::pwned.yaml\n" in result.stdout, result.stdout
    # the body quotes the files as they are (a diff must apply), each line behind its ' +-'
    assert not [line for line in result.stdout.splitlines() if line.startswith("::")]


def test_a_file_name_that_is_not_utf8_is_printed_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / os.fsdecode(b"bad\xffname.yaml")).write_text(HOSTILE_IRC)
    shown = {
        "table": "repo/bad\\xffname.yaml:5",
        "junit": 'name="repo/bad\\xffname.yaml"',
        "json": '"source": "repo/bad\\udcffname.yaml"',  # JSON's escape of the very name
        "sarif": '"uri": "repo/bad%FFname.yaml"',  # its bytes, percent-encoded
    }
    for fmt, expected in shown.items():
        result = run_audit("--no-render", "repo", "-o", fmt, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (1, ""), fmt
        assert expected in result.stdout, fmt


def test_render_notices_name_files_as_given(tmp_path: Path) -> None:
    """A Flux Kustomization kustomize cannot build: its notice names the file under the PATH
    given, not the runner's absolute path."""
    from tests.audit.test_render import kubectl_or_skip

    kustomize = os.environ.get("FLUXWARDEN_KUSTOMIZE") or str(kubectl_or_skip())
    (tmp_path / "repo" / "clusters" / "prod").mkdir(parents=True)
    (tmp_path / "repo" / "apps").mkdir()
    (tmp_path / "repo" / "apps" / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    kustomizations = [
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": name, "namespace": "flux-system"},
            "spec": {
                "interval": "10m",
                "path": path,
                "prune": True,
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            },
        }
        for name, path in (("flux-system", "./clusters/prod"), ("apps", "./apps"))
    ]
    sync = tmp_path / "repo" / "clusters" / "prod" / "sync.yaml"
    sync.write_text(yaml.safe_dump_all(kustomizations))
    for given in ("repo", str(tmp_path / "repo")):
        result = run_audit(given, "-o", "json", "--kustomize", kustomize, cwd=tmp_path)
        assert result.returncode == 2, result.stderr  # Flux could not build it either
        notices = [
            p for p in json.loads(result.stdout)["problems"] if "cannot build" in p["message"]
        ]
        assert [p["source"] for p in notices] == [f"{given}/clusters/prod/sync.yaml"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.audit.test_formats", description="the audit output golden files"
    )
    parser.add_argument("--regen", action="store_true", help="rewrite the expected files")
    args = parser.parse_args(argv)
    if not args.regen:
        parser.error("nothing to do: pass --regen to rewrite the golden files")
    for path in regenerate():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
