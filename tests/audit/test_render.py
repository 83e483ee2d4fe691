"""Audit renders what Flux applies: a `flux bootstrap`-style repo gives only its true findings."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.controlplane.cluster import default_bin_dir
from webhook.audit.envsubst import substitute_text
from webhook.cli import main

REPOS = Path(__file__).parent / "repos"
KUBE_SYSTEM_POLICIES = REPOS / "policies-kube-system.yaml"


def kubectl_or_skip() -> Path:
    """The kubectl the project builds (`make controlplane`): the real kustomize, pinned."""
    kubectl = default_bin_dir() / "kubectl"
    if not kubectl.is_file():
        pytest.skip("no project-built kubectl: run `make controlplane`")
    return kubectl


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["audit", "-o", "json", "--policies", str(KUBE_SYSTEM_POLICIES), *args])
    return code, json.loads(capsys.readouterr().out)


def _failing(report: dict[str, object]) -> set[tuple[str, str, str]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return {
        (f["policy"], f"{f['kind']}/{f['name']}", f["source"])
        for f in findings
        if f["result"] in ("fail", "warn")
    }


def test_bootstrap_repo_has_only_true_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    code, report = _audit(capsys, str(repo))
    assert code == 1
    prefix = str(repo)
    failing = {(p, o, f.removeprefix(prefix)) for p, o, f in _failing(report)}
    assert failing == {
        # upstream source-controller: /tmp is an unbounded emptyDir
        (
            "source-controller-storage",
            "Deployment/source-controller",
            "/clusters/prod/flux-system/gotk-components.yaml",
        ),
        # no defaults patch above infrastructure/
        (
            "helmrelease-drift-detection",
            "HelmRelease/ingress-nginx",
            "/infrastructure/ingress/release.yaml",
        ),
    }
    # --requeue-dependency comes from the JSON6902 patch in flux-system/kustomization.yaml;
    # apps/ HelmReleases (kube-system included) get driftDetection from the apps defaults patch;
    # the strategic-merge patch file is no HelmRelease of its own; the chart is skipped.
    passed = {
        (f["policy"], f["name"])
        for f in report["findings"]  # type: ignore[attr-defined]
        if f["result"] == "pass"
    }
    assert ("controller-requeue-dependency", "kustomize-controller") in passed
    assert ("controller-requeue-dependency", "helm-controller") in passed
    assert ("helmrelease-drift-detection", "metrics-server") in passed
    assert ("helmrelease-drift-detection", "podinfo") in passed
    assert not any("release-values.yaml" in json.dumps(f) for f in report["findings"])  # type: ignore[attr-defined]


def test_without_rendering_the_old_false_positives_come_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = _audit(capsys, "--no-render", str(REPOS / "bootstrap"))
    assert code == 1
    policies = {p for p, _, _ in _failing(report)}
    assert "controller-requeue-dependency" in policies  # the patch is not seen as files


def test_exclude_glob(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _audit(capsys, "--exclude", "infrastructure", str(REPOS / "bootstrap"))
    assert code == 1
    assert not any("ingress-nginx" in o for _, o, _ in _failing(report))


def test_substitution_keeps_unknown_variables() -> None:
    text, unknown = substitute_text(
        "a: ${known} b: ${gone} c: ${d:=x} e: $${literal}", {"known": "1"}, all_known=False
    )
    assert text == "a: 1 b: ${gone} c: ${d:=x} e: ${literal}"
    assert unknown == ["gone", "d"]
    text, unknown = substitute_text("b: ${gone} c: ${d:=x}", {}, all_known=True)
    assert (text, unknown) == ("b:  c: x", [])


def _fix(*args: str) -> int:
    return main(["fix", "--policies", str(KUBE_SYSTEM_POLICIES), *args])


def test_fix_writes_where_a_flux_user_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    flux_system = repo / "clusters/prod/flux-system"
    # without the docs' requeue patch, fix must add it as a patch, never in the generated file
    kustomization = flux_system / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().split("patches:")[0])
    generated = (flux_system / "gotk-components.yaml").read_bytes()
    assert _fix("--check", str(repo)) == 1
    assert _fix("--write", str(repo)) == 0
    assert _fix("--check", str(repo)) == 0  # a second run changes nothing
    capsys.readouterr()
    assert (flux_system / "gotk-components.yaml").read_bytes() == generated
    assert "driftDetection" in (repo / "infrastructure/ingress/release.yaml").read_text()
    assert (
        "# the chart changes rarely" in (repo / "infrastructure/ingress/release.yaml").read_text()
    )
    built = subprocess.run(
        [str(kubectl_or_skip()), "kustomize", str(flux_system)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    deployments = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all(built)
        if d and d["kind"] == "Deployment"
    }
    for name in ("kustomize-controller", "helm-controller"):
        args = deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [a for a in args if a.startswith("--requeue-dependency")] == [
            "--requeue-dependency=5s"
        ]
    volumes = deployments["source-controller"]["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v["emptyDir"] for v in volumes}["temp"] == {"sizeLimit": "2Gi"}
    code, _ = _audit(capsys, str(repo))
    assert code == 0


def test_fix_keeps_the_docs_patch_and_adds_no_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    kustomization = repo / "clusters/prod/flux-system/kustomization.yaml"
    before = kustomization.read_text()
    assert _fix("--write", str(repo)) == 0
    after = kustomization.read_text()
    assert after.startswith(before)  # comments and the existing patch kept, one patch added
    assert after.count("--requeue-dependency") == 1
    assert _fix("--check", str(repo)) == 0
    capsys.readouterr()


def test_findings_point_at_the_patch_that_set_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    kustomization = repo / "clusters/prod/flux-system/kustomization.yaml"
    text = kustomization.read_text().replace("requeue-dependency=5s", "requeue-dependency=30s")
    kustomization.write_text(
        text + "  - patch: |\n"
        "      - op: replace\n"
        "        path: /spec/template/spec/volumes/1\n"
        "        value: {name: temp, emptyDir: {medium: Memory}}\n"
        "    target:\n"
        "      kind: Deployment\n"
        "      name: source-controller\n"
    )
    lines = kustomization.read_text().splitlines()
    _, report = _audit(capsys, str(repo))
    where = {
        (f["policy"], f["name"]): (f["source"].removeprefix(str(repo)), f["line"])
        for f in cast(list[dict[str, Any]], report["findings"])
        if f["result"] == "fail"
    }
    patch_file = "/clusters/prod/flux-system/kustomization.yaml"
    requeue_line = next(i for i, x in enumerate(lines, 1) if "args/-" in x)
    volume_line = next(i for i, x in enumerate(lines, 1) if "volumes/1" in x)
    assert where[("controller-requeue-dependency", "helm-controller")] == (
        patch_file,
        requeue_line,
    )
    assert where[("source-controller-storage", "source-controller")] == (patch_file, volume_line)
    # the patch's value is what is reported, not a guess: without it, the resource file again
    kustomization.write_text(text)
    _, report = _audit(capsys, str(repo))
    storage = next(
        f
        for f in cast(list[dict[str, Any]], report["findings"])
        if f["policy"] == "source-controller-storage"
    )
    assert storage["source"].endswith("gotk-components.yaml")


def _legacy_release(tmp_path: Path) -> Path:
    """The bootstrap repo plus a release in a directory no Flux Kustomization includes."""
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    legacy = repo / "legacy/app"
    legacy.mkdir(parents=True)
    release = (repo / "infrastructure/ingress/release.yaml").read_text()
    (legacy / "release.yaml").write_text(release.replace("ingress-nginx", "legacy-nginx", 1))
    (legacy / "kustomization.yaml").write_text("resources: [release.yaml]\n")
    return repo


def test_files_no_flux_kustomization_reaches_are_counted_not_judged_nor_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _legacy_release(tmp_path)
    code, report = _audit(capsys, str(repo))
    assert code == 1  # the repo's own true findings
    assert "legacy-nginx" not in {f["name"] for f in cast(list[Any], report["findings"])}
    assert report["unreached"] == [f"{repo}/legacy/app/release.yaml"]
    assert main(["audit", "--show-unreached", str(repo)]) == 1
    table = capsys.readouterr().out
    assert f"{repo}/legacy/app/release.yaml  applied by no cluster: not audited" in table
    assert "1 file applied by no cluster, not audited" in table
    before = (repo / "legacy/app/release.yaml").read_text()
    assert _fix("--write", str(repo)) == 0
    capsys.readouterr()
    assert (repo / "legacy/app/release.yaml").read_text() == before


def test_a_broken_file_no_cluster_applies_is_a_notice_not_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flux never reads an archived file, so its YAML errors are no reason to exit 2 (seen on
    auricom/home-ops `.archive/`); `--audit-unreached` still reads it as written: an error."""
    repo = _legacy_release(tmp_path)
    broken = repo / ".archive/app/helmrelease.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("apiVersion: v1\nkind: ConfigMap\ndata: {a: [\n")
    code, report = _audit(capsys, str(repo))
    assert code == 1  # the repo's own true findings, no input error
    assert str(broken) in cast(list[str], report["unreached"])
    notices = [
        p for p in cast(list[dict[str, Any]], report["problems"]) if p["source"] == str(broken)
    ]
    assert notices
    assert all(not p["error"] for p in notices)
    assert all("a file no cluster applies" in p["message"] for p in notices)
    assert _audit(capsys, "--audit-unreached", str(repo))[0] == 2


def test_files_no_flux_kustomization_reaches_are_audited_with_audit_unreached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _legacy_release(tmp_path)
    code, report = _audit(capsys, "--audit-unreached", str(repo))
    assert code == 1
    failing = {
        f["name"]: f
        for f in cast(list[dict[str, Any]], report["findings"])
        if f["result"] == "fail"
    }
    # no silent drop: the unreached release is a finding, and says why it may not matter
    assert any(
        "not reached by any Flux Kustomization" in m for m in failing["legacy-nginx"]["messages"]
    )
    # no false label: a release Flux applies carries no such note
    assert not any("not reached" in m for m in failing["ingress-nginx"]["messages"])
    assert not any(
        "not reached" in m
        for f in failing.values()
        if f["kind"] == "Deployment"
        for m in f["messages"]
    )


INFRA_DEFAULTS = """\
  patches:
    # HelmRelease defaults for infrastructure
    - patch: |
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: all
        spec:
          install:
            crds: CreateReplace # CRDs follow the chart
      target:
        group: helm.toolkit.fluxcd.io
        kind: HelmRelease
"""


def _with_infra_defaults(tmp_path: Path) -> Path:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    infrastructure = repo / "clusters/prod/infrastructure.yaml"
    infrastructure.write_text(infrastructure.read_text() + INFRA_DEFAULTS)
    return repo


def test_fix_writes_one_edit_into_the_defaults_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _with_infra_defaults(tmp_path)
    release = (repo / "infrastructure/ingress/release.yaml").read_bytes()
    assert _fix("--write", str(repo)) == 0
    assert "HelmRelease defaults patch: one edit covers 1 HelmRelease(s)" in capsys.readouterr().err
    assert (repo / "infrastructure/ingress/release.yaml").read_bytes() == release
    text = (repo / "clusters/prod/infrastructure.yaml").read_text()
    assert "crds: CreateReplace # CRDs follow the chart\n          driftDetection:\n" in text
    assert _fix("--check", str(repo)) == 0
    capsys.readouterr()
    assert _audit(capsys, str(repo))[0] == 0


def test_fix_per_file_edits_each_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _with_infra_defaults(tmp_path)
    infrastructure = (repo / "clusters/prod/infrastructure.yaml").read_bytes()
    assert _fix("--write", "--per-file", str(repo)) == 0
    assert "defaults patch" not in capsys.readouterr().err
    assert (repo / "clusters/prod/infrastructure.yaml").read_bytes() == infrastructure
    assert "driftDetection" in (repo / "infrastructure/ingress/release.yaml").read_text()


def test_no_defaults_edit_over_a_release_that_chose_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _with_infra_defaults(tmp_path)
    release = (repo / "infrastructure/ingress/release.yaml").read_text()
    chosen = release.replace("ingress-nginx", "kept-disabled", 1).split("spec:", 1)
    (repo / "infrastructure/ingress/disabled.yaml").write_text(
        chosen[0] + "spec:\n  driftDetection:\n    mode: disabled" + chosen[1]
    )
    infrastructure = (repo / "clusters/prod/infrastructure.yaml").read_bytes()
    assert _fix("--write", str(repo)) == 0
    assert "defaults patch" not in capsys.readouterr().err
    # the defaults edit would override the explicit `disabled`: each failing release instead
    assert (repo / "clusters/prod/infrastructure.yaml").read_bytes() == infrastructure
    assert "mode: enabled" in (repo / "infrastructure/ingress/release.yaml").read_text()
    assert "mode: disabled" in (repo / "infrastructure/ingress/disabled.yaml").read_text()


def test_a_kustomization_the_entry_point_does_not_include_is_not_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    # outside clusters/ (a directory there would be a cluster of its own, with its own render)
    (repo / "archive").mkdir()
    infrastructure = (repo / "clusters/prod/infrastructure.yaml").read_text()
    (repo / "archive/legacy.yaml").write_text(
        infrastructure.replace("name: infrastructure", "name: legacy").replace(
            "path: ./infrastructure", "path: ./legacy"
        )
    )
    (repo / "legacy").mkdir()
    release = (repo / "infrastructure/ingress/release.yaml").read_text()
    (repo / "legacy/release.yaml").write_text(release.replace("ingress-nginx", "old-nginx", 1))
    code, report = _audit(capsys, str(repo))
    assert code == 1
    failing = {
        f["name"]: f
        for f in cast(list[dict[str, Any]], report["findings"])
        if f["result"] == "fail"
    }
    # the bootstrap sync is the entry point: Flux never applies the archived Kustomization, so
    # its release is listed as applied by no cluster, not failed (issue 18)
    assert "old-nginx" not in failing
    assert str(repo / "legacy/release.yaml") in cast(list[str], report["unreached"])
    assert not any("not reached" in m for m in failing["ingress-nginx"]["messages"])


def test_fix_changes_the_value_in_the_patch_that_set_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "bootstrap"
    shutil.copytree(REPOS / "bootstrap", repo)
    flux_system = repo / "clusters/prod/flux-system"
    kustomization = flux_system / "kustomization.yaml"
    original = kustomization.read_text()
    kustomization.write_text(original.replace("requeue-dependency=5s", "requeue-dependency=30s"))
    assert _fix("--write", str(repo)) == 0
    capsys.readouterr()
    fixed = kustomization.read_text()
    # the docs' patch now says 5s; no second patch for the flag; its comment kept
    assert fixed.startswith(original)
    assert fixed.count("--requeue-dependency") == 1
    built = subprocess.run(
        [str(kubectl_or_skip()), "kustomize", str(flux_system)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for document in yaml.safe_load_all(built):
        if (
            document
            and document["kind"] == "Deployment"
            and document["metadata"]["name"]
            in (
                "kustomize-controller",
                "helm-controller",
            )
        ):
            args = document["spec"]["template"]["spec"]["containers"][0]["args"]
            assert [a for a in args if "requeue" in a] == ["--requeue-dependency=5s"]
    assert _fix("--check", str(repo)) == 0


@pytest.mark.parametrize(
    "origin",
    [
        "path: ../../components/namespace/namespace.yaml\n",
        "path: a b.yaml\n",
        "path: 'a.yaml'\n",
        "path: a.yaml # comment\n",
        "path: -a\n",
        "path: a.yaml \n",
        "path: 123\n",
        "path: true\n",
        "path: null\n",
        "path: 2001-12-14\n",
        "path: a\tb\n",
        "path: é.yaml\n",
        "path: a\nrepo: https://example.com/r\n",
    ],
)
def test_an_origin_read_without_yaml_is_what_yaml_reads(origin: str) -> None:
    """The fast path for kustomize's `path: FILE` origins gives what the YAML parser gives, and
    leaves every other form (quoted, commented, a number, two keys) to it."""
    from webhook.audit.render import _plain_origin

    fast = _plain_origin(origin)
    try:
        parsed = yaml.safe_load(origin)
    except yaml.YAMLError:
        parsed = None
    assert fast is None or fast == parsed
    assert (fast is not None) == (
        origin
        in {
            "path: ../../components/namespace/namespace.yaml\n",
            "path: a b.yaml\n",
            "path: é.yaml\n",
        }
    )


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        # a default is a text with expressions: the home-ops claim named after its app
        ("${CLAIM:-${APP}}", {"APP": "atuin"}, "atuin"),
        ("${CLAIM:-${APP}}", {"APP": "atuin", "CLAIM": "atuin-data"}, "atuin-data"),
        ("${CLAIM:=${APP}-${SUFFIX:-x}}", {"APP": "a"}, "a-x"),
        ("${CLAIM:-${APP}}|${B}|${C:-c}", {}, "||c"),  # missing: empty, as Flux makes it
        # envsubst's toDefault: an empty value takes the default whatever the operator
        ("${A-d}/${A=d}/${A:-d}/${A:=d}", {"A": ""}, "d/d/d/d"),
        ("${A}", {"A": ""}, ""),
    ],
)
def test_substitution_as_fluxs_envsubst(
    text: str, variables: dict[str, str], expected: str
) -> None:
    assert substitute_text(text, variables, all_known=True) == (expected, [])


@pytest.mark.parametrize(
    ("text", "variables", "expected", "unknown"),
    [
        # unknowable offline: kept as written; a default's unknowns count only when used
        ("${CLAIM:-${APP}}", {"APP": "a"}, "${CLAIM:-${APP}}", ["CLAIM"]),
        ("${CLAIM:-${APP}}", {"CLAIM": ""}, "${APP}", ["APP"]),
        ("${CLAIM:-${APP}}", {"CLAIM": "c"}, "c", []),
        # functions this does not evaluate, `$VAR`, `$$`, a lone `$`, an unclosed `${`
        ("${A^^} $A $$B $ ${", {"A": "a"}, "${A^^} $A $B $ ${", ["A^^", ""]),
        ("x: ${A:-}", {}, "x: ${A:-}", ["A"]),
    ],
)
def test_substitution_keeps_what_cannot_be_known_offline(
    text: str, variables: dict[str, str], expected: str, unknown: list[str]
) -> None:
    assert substitute_text(text, variables, all_known=False) == (expected, unknown)
