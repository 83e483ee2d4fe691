"""`fluxwarden fix`: the enforced mutations written into the YAML files, nothing else touched.

Cases are data: `tests/audit/fix_cases/<case>/input.yaml` is fixed (with the shipped policy set
and lookups from the file itself) and must become `expected.yaml` byte for byte; `problems.txt`,
when present, lists the reported problems as `line: error|notice: message`. The expected files
were written by hand; after an intended change, regenerate them and review the diff:

    .venv/bin/python -m tests.audit.test_fix --regen
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webhook.audit import yaml_splice, yaml_text
from webhook.audit.findings import InputProblem
from webhook.audit.fix import FixResult, fix_paths
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet
from webhook.server.policystore import load_policy_file

CASES = Path(__file__).parent / "fix_cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "input.yaml").is_file())
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _run_case(case: str, tmp_path: Path, policies: PolicySet) -> tuple[str, FixResult]:
    target = tmp_path / "input.yaml"
    shutil.copyfile(CASES / case / "input.yaml", target)
    result = fix_paths([str(target)], policy_set=policies, write=True)
    return target.read_bytes().decode("utf-8"), result


def _problem_lines(problems: list[InputProblem]) -> list[str]:
    return [f"{p.line}: {'error' if p.error else 'notice'}: {p.message}" for p in problems]


def _expected_problems(case: str) -> list[str]:
    path = CASES / case / "problems.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _fleet_file(tmp_path: Path) -> Path:
    target = tmp_path / "fleet.yaml"
    shutil.copyfile(CASES / "fleet-tolerations" / "input.yaml", target)
    return target


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_becomes_expected(case: str, tmp_path: Path, shipped_policies: PolicySet) -> None:
    fixed, result = _run_case(case, tmp_path, shipped_policies)
    assert fixed == (CASES / case / "expected.yaml").read_text(encoding="utf-8"), (
        f"run `.venv/bin/python -m tests.audit.test_fix --regen` if {case} changed on purpose"
    )
    assert _problem_lines(result.problems) == _expected_problems(case)
    changed = fixed != (CASES / case / "input.yaml").read_text(encoding="utf-8")
    assert result.changed_files == ([str(tmp_path / "input.yaml")] if changed else [])


@pytest.mark.parametrize("case", CASE_NAMES)
def test_fixing_twice_changes_nothing(
    case: str, tmp_path: Path, shipped_policies: PolicySet
) -> None:
    _run_case(case, tmp_path, shipped_policies)
    again = fix_paths([str(tmp_path / "input.yaml")], policy_set=shipped_policies, write=True)
    assert again.diff == ""
    assert again.changed_files == []
    assert again.fixed_documents == 0


def test_fixed_documents_parse_to_the_patched_objects(
    tmp_path: Path, shipped_policies: PolicySet
) -> None:
    fixed, result = _run_case("irc-deployment", tmp_path, shipped_policies)
    deployment, _, config_map = yaml.safe_load_all(fixed)
    assert result.fixed_documents == 1
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert config_map["data"]["enabled"] is True  # `yes` stays a YAML 1.1 bool, untouched


def test_diff_mode_prints_a_git_diff_and_writes_nothing(
    tmp_path: Path, shipped_policies: PolicySet
) -> None:
    target = _fleet_file(tmp_path)
    before = target.read_bytes()
    result = fix_paths([str(target)], policy_set=shipped_policies)
    assert target.read_bytes() == before
    name = str(target).lstrip("/")
    assert result.diff.startswith(f"--- a/{name}\n+++ b/{name}\n@@ ")
    assert "+            - {key: node-role.kubernetes.io/control-plane" in result.diff
    assert result.changed_files == [str(target)]
    # the diff is what --write does: git applies it to the original and gets the same bytes
    work = tmp_path / "git"
    (work / name).parent.mkdir(parents=True)
    shutil.copyfile(target, work / name)
    subprocess.run(["git", "apply", "-"], input=result.diff.encode(), cwd=work, check=True)
    fix_paths([str(target)], policy_set=shipped_policies, write=True)
    assert (work / name).read_bytes() == target.read_bytes()


def test_only_changed_files_are_rewritten(tmp_path: Path, shipped_policies: PolicySet) -> None:
    compliant = tmp_path / "compliant.yaml"
    shutil.copyfile(CASES / "irc-deployment" / "expected.yaml", compliant)
    fleet = _fleet_file(tmp_path)
    compliant_stat = compliant.stat()
    result = fix_paths([str(tmp_path)], policy_set=shipped_policies, write=True)
    assert result.changed_files == [str(fleet)]
    assert compliant.stat().st_mtime_ns == compliant_stat.st_mtime_ns
    assert compliant.stat().st_ino == compliant_stat.st_ino


def test_crlf_stays_crlf(tmp_path: Path, shipped_policies: PolicySet) -> None:
    target = tmp_path / "windows.yaml"
    target.write_bytes(_crlf((CASES / "irc-deployment" / "input.yaml").read_text()).encode())
    fix_paths([str(target)], policy_set=shipped_policies, write=True)
    expected = _crlf((CASES / "irc-deployment" / "expected.yaml").read_text())
    assert target.read_bytes().decode() == expected


def test_missing_final_newline_stays_missing(tmp_path: Path, shipped_policies: PolicySet) -> None:
    for case in ("helmrelease-drift-detection", "broken-document"):
        target = tmp_path / f"{case}.yaml"
        target.write_text((CASES / case / "input.yaml").read_text().rstrip("\n"))
        fix_paths([str(target)], policy_set=shipped_policies, write=True)
        expected = (CASES / case / "expected.yaml").read_text().rstrip("\n")
        assert target.read_text() == expected


def test_lookups_come_from_every_path(tmp_path: Path, shipped_policies: PolicySet) -> None:
    """The CronJob inherits the tolerations of a fleet-controller defined in another file."""
    documents = (CASES / "fleet-tolerations" / "input.yaml").read_text().split("---\n")
    controller, cronjob = tmp_path / "controller.yaml", tmp_path / "jobs" / "cronjob.yaml"
    cronjob.parent.mkdir()
    controller.write_text(documents[0])
    cronjob.write_text(documents[1])
    alone = fix_paths([str(cronjob)], policy_set=shipped_policies)
    assert alone.diff == ""
    together = fix_paths([str(tmp_path)], policy_set=shipped_policies, write=True)
    assert together.changed_files == [str(cronjob)]
    assert "{key: node-role.kubernetes.io/control-plane" in cronjob.read_text()


def test_a_fix_that_would_not_parse_back_is_not_written(
    tmp_path: Path, shipped_policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the edited text of a document does not read back as the patched object, it is left
    as is and reported; the file's other documents are still fixed."""
    real_dump, real_splice = yaml_text._dump, yaml_splice.spliced

    def lossy(text: str | None) -> str | None:
        if text is None or "name: last" not in text:
            return text
        return text.replace("mode: enabled", "mode: disabled")

    def lossy_dump(tree: object, indent: tuple[int, int, int], *, like: str) -> str:
        return lossy(real_dump(tree, indent, like=like)) or ""

    def lossy_splice(text: str, patch: list[dict[str, object]]) -> str | None:
        return lossy(real_splice(text, patch))

    monkeypatch.setattr(yaml_text, "_dump", lossy_dump)
    monkeypatch.setattr("webhook.audit.yaml_text.spliced", lossy_splice)
    fixed, result = _run_case("broken-document", tmp_path, shipped_policies)
    assert _problem_lines(result.problems) == [
        *_expected_problems("broken-document"),
        "21: error: not fixed: the edited YAML would not parse back to the fixed object "
        "(document left as is)",
    ]
    first, broken, last = fixed.split("---\n")
    expected_first, _, _ = (CASES / "broken-document" / "expected.yaml").read_text().split("---\n")
    _, input_broken, input_last = (
        (CASES / "broken-document" / "input.yaml").read_text().split("---\n")
    )
    assert (first, broken, last) == (expected_first, input_broken, input_last)


def test_a_splice_that_would_not_parse_back_falls_back_to_the_round_trip(
    tmp_path: Path, shipped_policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text splice only proposes: an edit that does not read back as the patched object is
    made by the ruamel round trip instead, with the same result for these cases."""
    real_splice = yaml_splice.spliced
    calls: list[str | None] = []

    def lossy_splice(text: str, patch: list[dict[str, object]]) -> str | None:
        spliced = real_splice(text, patch)
        calls.append(spliced)
        return None if spliced is None else spliced.replace(": enabled", ": disabled")

    monkeypatch.setattr("webhook.audit.yaml_text.spliced", lossy_splice)
    for case in ("helmrelease-drift-detection", "irc-deployment", "fleet-tolerations"):
        fixed, result = _run_case(case, tmp_path, shipped_policies)
        assert fixed == (CASES / case / "expected.yaml").read_text(encoding="utf-8"), case
        assert result.problems == []
    assert any(c is not None for c in calls)


def test_untouched_documents_are_byte_identical() -> None:
    """Odd but valid formatting in documents no policy changes survives exactly."""
    text = (
        "# only a comment\n"
        "---\n"
        "--- # empty document above\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
        "data:\n  k: 'single'\n  j:   \"double\"   # spaced\n  l: >-\n    folded\n...\n"
        "---\n"
        "apiVersion: helm.toolkit.fluxcd.io/v2\n"
        "kind: HelmRelease\nmetadata: {name: b, namespace: apps}\n"
        "spec: {driftDetection: {mode: enabled}}\n"
    )
    patcher_calls: list[str] = []

    def no_patch(obj: dict[str, object]) -> list[dict[str, object]]:
        patcher_calls.append(str(obj["kind"]))
        return []

    result = yaml_text.fix_text(text, "odd.yaml", patcher=no_patch)
    assert result.text == text
    assert patcher_calls == ["ConfigMap", "HelmRelease"]
    assert result.problems == []


def test_new_values_keep_the_audits_meaning() -> None:
    """A string the audit's YAML 1.1 parser would read as a bool or a number is quoted."""
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  flag: 'x'\n"
    patch = [
        {"op": "add", "path": "/data/on", "value": "yes"},
        {"op": "add", "path": "/data/mode", "value": "0755"},
        {"op": "replace", "path": "/data/flag", "value": "no"},
    ]
    result = yaml_text.fix_text(text, "cm.yaml", patcher=lambda obj: patch)
    assert yaml.safe_load(result.text)["data"] == {"flag": "no", "on": "yes", "mode": "0755"}
    assert "  flag: 'no'\n" in result.text  # a replaced quoted string keeps its quotes


def test_duplicate_keys_are_reported_not_guessed() -> None:
    """The audit reads the last of duplicate keys, ruamel.yaml would keep one: not edited."""
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  k: 1\n  k: 2\n"
    patch = [{"op": "add", "path": "/data/j", "value": "x"}]
    result = yaml_text.fix_text(text, "cm.yaml", patcher=lambda obj: patch)
    assert result.text == text
    assert _problem_lines(result.problems) == [
        '1: error: not fixed: ruamel.yaml cannot load it: found duplicate key "k" with value "2" '
        '(original value: "1") (document left as is)'
    ]


def test_sops_encrypted_document_is_reported_not_edited() -> None:
    text = (CASES / "sops-encrypted" / "input.yaml").read_text()
    result = yaml_text.fix_text(
        text, "s.yaml", patcher=lambda obj: [{"op": "remove", "path": "/spec"}]
    )
    assert result.text == text
    assert [p.error for p in result.problems] == [False]


def test_stdin_fixed_stream_goes_to_stdout(tmp_path: Path, shipped_policies: PolicySet) -> None:
    text = (CASES / "helmrelease-drift-detection" / "input.yaml").read_text()
    out = io.StringIO()
    result = fix_paths(
        ["-"], policy_set=shipped_policies, write=True, stdin=io.StringIO(text), stdout=out
    )
    expected = (CASES / "helmrelease-drift-detection" / "expected.yaml").read_text()
    assert out.getvalue() == expected
    assert result.stream == expected
    assert result.diff == ""
    assert result.changed_files == []
    assert list(tmp_path.iterdir()) == []


def test_stdin_is_the_only_path(tmp_path: Path, shipped_policies: PolicySet) -> None:
    target = _fleet_file(tmp_path)
    before = target.read_bytes()
    out = io.StringIO()
    result = fix_paths(
        ["-", str(target)],
        policy_set=shipped_policies,
        write=True,
        stdin=io.StringIO(""),
        stdout=out,
    )
    assert [p.error for p in result.problems] == [True]
    assert target.read_bytes() == before
    assert out.getvalue() == ""


def test_missing_path_is_an_error_others_still_fixed(
    tmp_path: Path, shipped_policies: PolicySet
) -> None:
    target = _fleet_file(tmp_path)
    missing = str(tmp_path / "nope.yaml")
    result = fix_paths([missing, str(target)], policy_set=shipped_policies, write=True)
    assert _problem_lines(result.problems) == ["0: error: no such file or directory"]
    assert result.changed_files == [str(target)]


def test_file_permissions_are_kept(tmp_path: Path, shipped_policies: PolicySet) -> None:
    target = _fleet_file(tmp_path)
    target.chmod(0o640)
    fix_paths([str(target)], policy_set=shipped_policies, write=True)
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yaml"]  # no temporary left behind


def test_the_same_file_twice_is_fixed_once(tmp_path: Path, shipped_policies: PolicySet) -> None:
    target = _fleet_file(tmp_path)
    result = fix_paths([str(tmp_path), str(target)], policy_set=shipped_policies)
    assert result.changed_files == [str(target)]
    assert result.diff.count("+++ ") == 1


# --- the command, as a user runs it ---


def _fluxwarden(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


def _comments(text: str) -> list[str]:
    """Every comment of a YAML text (its examples have no `#` inside strings)."""
    return [line[line.index("#") :].strip() for line in text.splitlines() if "#" in line]


def test_cli_fix_write_makes_examples_pass_the_audit(tmp_path: Path) -> None:
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy)
    audit = _fluxwarden("audit", str(copy))
    assert audit.returncode == 1, audit.stdout + audit.stderr

    fixed = _fluxwarden("fix", str(copy), "--write")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == ""
    written = sorted(line.removeprefix("fixed ") for line in fixed.stderr.splitlines())
    assert written == sorted(str(p) for p in copy.glob("*.yaml"))

    audit = _fluxwarden("audit", str(copy))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    for original in EXAMPLES.glob("*.yaml"):
        new_text = (copy / original.name).read_text()
        missing = set(_comments(original.read_text())) - set(_comments(new_text))
        assert not missing, f"{original.name} lost comments: {missing}"

    again = _fluxwarden("fix", str(copy))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_cli_fix_without_write_prints_the_diff(tmp_path: Path) -> None:
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy)
    result = _fluxwarden("fix", str(copy))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^-  replicas: 2 ", result.stdout, re.MULTILINE)
    assert re.search(r"^\+  replicas: 1 ", result.stdout, re.MULTILINE)
    assert re.search(r"^\+  driftDetection:$", result.stdout, re.MULTILINE)
    for original in EXAMPLES.glob("*.yaml"):
        assert (copy / original.name).read_bytes() == original.read_bytes()


def test_cli_fix_broken_document_exits_2_and_fixes_the_rest(tmp_path: Path) -> None:
    target = tmp_path / "apps.yaml"
    shutil.copyfile(CASES / "broken-document" / "input.yaml", target)
    result = _fluxwarden("fix", "--write", str(target))
    assert result.returncode == 2
    assert f"fluxwarden: {target}:19: invalid YAML" in result.stderr
    assert target.read_text() == (CASES / "broken-document" / "expected.yaml").read_text()


def test_cli_fix_says_a_broken_document_once(tmp_path: Path) -> None:
    """A directory's broken document was said twice: once as the inventory met it, once
    by the text layer leaving it as is."""
    shutil.copyfile(CASES / "broken-document" / "input.yaml", tmp_path / "apps.yaml")
    for mode in ("--check", "--write"):
        result = _fluxwarden("fix", mode, str(tmp_path))
        assert result.returncode == 2
        assert result.stderr.count("invalid YAML") == 1, result.stderr
        assert "(document left as is)" in result.stderr


def test_cli_fix_stdin(tmp_path: Path) -> None:
    text = (CASES / "kustomize-controller-args" / "input.yaml").read_text()
    result = _fluxwarden("fix", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (CASES / "kustomize-controller-args" / "expected.yaml").read_text()


# --- regenerating the expected files ---


def regenerate() -> list[Path]:
    """Rewrite every case's expected.yaml (and problems.txt) from the current fixer."""
    import tempfile

    policies = load_policy_file(SHIPPED_POLICIES)
    written: list[Path] = []
    for case in CASE_NAMES:
        with tempfile.TemporaryDirectory() as scratch:
            fixed, result = _run_case(case, Path(scratch), policies)
        expected = CASES / case / "expected.yaml"
        expected.write_bytes(fixed.encode("utf-8"))
        written.append(expected)
        problems = CASES / case / "problems.txt"
        lines = _problem_lines(result.problems)
        if lines:
            problems.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            written.append(problems)
        else:
            problems.unlink(missing_ok=True)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--regen", action="store_true", help="rewrite the expected files")
    args = parser.parse_args(argv)
    if not args.regen:
        parser.error("nothing to do: pass --regen to rewrite the expected files")
    for path in regenerate():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_fix_makes_the_changes_audit_reports_of_a_policy_below_enforce(
    tmp_path: Path, mode: str
) -> None:
    """A would-be mutation of a warn or audit policy fails the audit as an enforced one does:
    fix makes it, so audit and `fix --check` agree (no CI deadlock)."""
    from webhook.cli import main

    policies = tmp_path / "policies.yaml"
    shipped = yaml.safe_load(SHIPPED_POLICIES.read_text())
    for entry in shipped["spec"]["policies"]:
        if entry["name"] == "helmrelease-drift-detection":
            entry["mode"] = mode
    policies.write_text(yaml.safe_dump(shipped))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "release.yaml").write_text(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\n"
        "metadata: {name: podinfo, namespace: apps}\n"
        "spec:\n  interval: 10m\n  chart:\n    spec:\n      chart: podinfo\n"
        "      sourceRef: {kind: HelmRepository, name: podinfo}\n"
        "  install: {strategy: {name: RetryOnFailure}}\n"
        "  upgrade: {strategy: {name: RetryOnFailure}}\n"
    )
    given = ["--policies", str(policies), str(repo)]
    assert main(["audit", "-o", "json", *given]) == 1
    assert main(["fix", "--check", *given]) == 1
    assert main(["fix", "--write", *given]) == 0
    assert "driftDetection" in (repo / "release.yaml").read_text()
    assert main(["audit", "-o", "json", *given]) == 0
    assert main(["fix", "--check", *given]) == 0
