"""Files under a Flux Kustomization fluxwarden does not audit by design are "not audited: <why>",
apart from files no cluster applies; `--source KIND/NAMESPACE/NAME=PATH` renders a source that is
not this repo from a local checkout (issue 18, items 2 and 3).

The fixture `repos/sources/` is a fleet repo (`fleet/`) with:
- `dragonfly`: a remote base (not fetched), its `apps/dragonfly/helmrelease.yaml` not audited,
  and `../shared`, which the `shared` Kustomization applies too (so it is audited);
- `platform`: an OCIRepository CI pushes from this repo's `platform/` (not audited);
- `tenant`: an OCIRepository of another repo, whose checkout is `tenant/` (--source maps it);
- `apps/legacy/`: applied by no cluster.

Golden outputs are in `golden/sources/` (`make golden`, or `python -m tests.audit.test_not_audited
--regen`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_formats import SARIF_SCHEMA
from tests.audit.test_render import kubectl_or_skip
from webhook import __version__
from webhook.cli import main

FIXTURE = Path(__file__).parent / "repos" / "sources"
GOLDEN = Path(__file__).parent / "golden" / "sources"
TENANT = "OCIRepository/flux-system/tenant=tenant"
CASES = {  # golden file -> audit arguments (run in a copy of the fixture)
    "audit.table": ["--show-unreached", "fleet"],
    "audit.json": ["-o", "json", "fleet"],
    "audit.sarif": ["-o", "sarif", "fleet"],
    "mapped.table": ["--show-unreached", "--source", TENANT, "fleet"],
    "mapped.json": ["-o", "json", "--source", TENANT, "fleet"],
    "mapped.sarif": ["-o", "sarif", "--source", TENANT, "fleet"],
}
VERSION = "0.0.0-golden"  # the SARIF driver's version, whatever the package's


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture as the working directory (outputs name `fleet/...`)."""
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))
    shutil.copytree(FIXTURE, tmp_path / "sources")
    monkeypatch.chdir(tmp_path / "sources")
    return tmp_path / "sources"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out.replace(__version__, VERSION), captured.err


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = _run(capsys, "audit", "-o", "json", *args)
    return code, json.loads(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_golden(repo: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = _run(capsys, "audit", *CASES[name])
    assert code == 1  # shared's (and with --source, the tenant's) release: true findings
    assert out == (GOLDEN / name).read_text(encoding="utf-8"), (
        f"{name} is stale: run `.venv/bin/python -m tests.audit.test_not_audited --regen` "
        "and review the diff"
    )


def test_files_under_a_kustomization_not_audited_are_not_files_no_cluster_applies(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _json(capsys, "fleet")
    assert report["unreached"] == ["fleet/apps/legacy/helmrelease.yaml"]
    listed = {n["kustomization"]: n for n in report["notAudited"]}
    assert {k: n["files"] for k, n in listed.items()} == {
        "flux-system/dragonfly": ["fleet/apps/dragonfly/helmrelease.yaml"],
        "flux-system/platform": ["fleet/platform/helmrelease.yaml"],  # pushed from here
        "flux-system/tenant": [],  # another repo's artifact: no file of this one
    }
    assert (
        "remote reference 'https://raw.githubusercontent.com"
        in (listed["flux-system/dragonfly"]["why"])
    )
    assert listed["flux-system/platform"]["why"] == (
        "OCIRepository/flux-system/platform oci://ghcr.io/example/fleet-platform"
    )
    assert listed["flux-system/tenant"]["source"] == "fleet/clusters/prod/tenant.yaml"
    # applied by `shared` as well as under the not-audited `dragonfly`: audited, listed nowhere
    failing = {(f["name"], f["source"]) for f in report["findings"] if f["result"] == "fail"}
    assert failing == {("shared", "fleet/apps/shared/helmrelease.yaml")}


def test_a_file_one_cluster_applies_is_audited_though_another_does_not_audit_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`platform/` is an OCI artifact in clusters/prod (not audited) and this repo's own path in
    clusters/dev: it is audited as dev applies it, and listed under neither."""
    dev = repo / "fleet/clusters/dev"
    dev.mkdir()
    sync = (repo / "fleet/clusters/prod/flux-system/gotk-sync.yaml").read_text()
    (dev / "sync.yaml").write_text(sync.replace("./clusters/prod", "./clusters/dev"))
    (dev / "platform.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        "metadata: {name: platform, namespace: flux-system}\n"
        "spec: {interval: 10m, path: ./platform, prune: true,\n"
        "  sourceRef: {kind: GitRepository, name: flux-system}}\n"
    )
    _, report = _json(capsys, "fleet")
    platform = [f for f in report["findings"] if f["name"] == "platform" and f["result"] == "fail"]
    assert [(f["source"], f["clusters"]) for f in platform] == [
        ("fleet/platform/helmrelease.yaml", ["clusters/dev"])
    ]
    listed = {n["kustomization"]: n for n in report["notAudited"]}
    assert (
        listed["flux-system/platform"]["clusters"],
        listed["flux-system/platform"]["files"],
    ) == (
        ["clusters/prod"],
        [],
    )
    assert "fleet/platform/helmrelease.yaml" not in report["unreached"]


def test_fix_leaves_files_not_audited_alone(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_text() for p in repo.rglob("*.yaml")}
    code, _, _ = _run(capsys, "fix", "--write", "fleet")
    assert code == 0
    changed = sorted(str(p.relative_to(repo)) for p in before if p.read_text() != before[p])
    assert changed == ["fleet/apps/shared/helmrelease.yaml"]


def test_a_mapped_source_is_rendered_from_its_checkout(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _json(capsys, "--source", TENANT, "fleet")
    tenant = [f for f in report["findings"] if f["name"] == "podinfo" and f["result"] != "pass"]
    # rendered as the tenant Kustomization applies it: its targetNamespace and postBuild
    # interval (no helmrelease-interval finding on `${interval}`), named by its file there
    assert [(f["source"], f["namespace"], f["policy"]) for f in tenant] == [
        ("tenant/deploy/podinfo/helmrelease.yaml", "tenant", "helmrelease-drift-detection")
    ]
    assert tenant[0]["messages"][-1] == "from OCIRepository/flux-system/tenant (--source tenant)"
    assert "flux-system/tenant" not in {n["kustomization"] for n in report["notAudited"]}
    assert not any("flux-system/tenant" in p["message"] for p in report["problems"])


def test_fix_shows_a_mapped_source_but_writes_only_below_the_paths_given(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant_file = repo / "tenant/deploy/podinfo/helmrelease.yaml"
    before = tenant_file.read_text()
    code, diff, _ = _run(capsys, "fix", "--source", TENANT, "fleet")
    assert code == 0
    assert "+++ b/tenant/deploy/podinfo/helmrelease.yaml" in diff
    assert _run(capsys, "fix", "--check", "--source", TENANT, "fleet")[0] == 1
    code, _, err = _run(capsys, "fix", "--write", "--source", TENANT, "fleet")
    assert code == 0
    assert tenant_file.read_text() == before
    assert (
        "tenant/deploy/podinfo/helmrelease.yaml: not written: a file of "
        "OCIRepository/flux-system/tenant (--source tenant), outside the paths given" in err
    )
    assert "mode: enabled" in (repo / "fleet/apps/shared/helmrelease.yaml").read_text()
    # audit and fix --check still agree: the tenant's finding stays until that repo is fixed
    assert _run(capsys, "fix", "--check", "--source", TENANT, "fleet")[0] == 1
    assert _run(capsys, "audit", "--source", TENANT, "fleet")[0] == 1


def test_a_directory_of_the_repo_mapped_as_its_artifact_is_audited_and_fixed_in_place(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CI pushes the repo as the `platform` artifact: mapped to the repo, its release is
    audited under its own name, no longer "not audited", and `fix --write` writes it."""
    platform = "OCIRepository/flux-system/platform=fleet"
    _, report = _json(capsys, "--source", platform, "--source", TENANT, "fleet")
    failing = sorted(f["source"] for f in report["findings"] if f["result"] == "fail")
    assert failing == [
        "fleet/apps/shared/helmrelease.yaml",
        "fleet/platform/helmrelease.yaml",
        "tenant/deploy/podinfo/helmrelease.yaml",
    ]
    assert [n["kustomization"] for n in report["notAudited"]] == ["flux-system/dragonfly"]
    code, _, _ = _run(capsys, "fix", "--write", "--source", platform, "fleet")
    assert code == 0
    assert "mode: enabled" in (repo / "fleet/platform/helmrelease.yaml").read_text()
    assert _run(capsys, "audit", "--source", platform, "fleet")[0] == 0


def test_a_value_from_a_secret_is_never_printed_from_a_mapped_source(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tenant's variables come from a Secret of the cluster: a finding on the mapped
    release that quotes one hides it, as for the repo's own objects."""
    (repo / "fleet/clusters/prod/tenant-vars.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tenant-vars, namespace: flux-system}\n"
        "stringData: {interval: 1234h}\n"
    )
    tenant = repo / "fleet/clusters/prod/tenant.yaml"
    tenant.write_text(
        tenant.read_text().replace(
            "    substitute:\n      interval: 30m\n",
            "    substituteFrom:\n      - kind: Secret\n        name: tenant-vars\n",
        )
    )
    for fmt in ("table", "json", "sarif"):
        code, out, _ = _run(capsys, "audit", "-o", fmt, "-v", "--source", TENANT, "fleet")
        assert code == 1
        assert "1234h" not in out, fmt
    _, report = _json(capsys, "--source", TENANT, "fleet")
    interval = [f for f in report["findings"] if f["policy"] == "helmrelease-interval"]
    assert [f["result"] for f in interval if f["name"] == "podinfo"] == ["warn"]


@pytest.mark.parametrize(
    ("mapping", "said"),
    [
        ("OCIRepository/tenant=tenant", "expected KIND/NAMESPACE/NAME=PATH"),
        ("OCIRepository/flux-system/tenant", "expected KIND/NAMESPACE/NAME=PATH"),
        ("HelmRepository/flux-system/tenant=tenant", "KIND must be one of GitRepository"),
        ("OCIRepository/Flux_System/tenant=tenant", "NAMESPACE 'Flux_System' is not"),
        ("OCIRepository/flux-system/tenant=missing", "missing is not a directory"),
        ("OCIRepository/flux-system/tenant=fleet/apps/legacy/helmrelease.yaml", "not a dir"),
    ],
)
def test_a_malformed_mapping_is_a_usage_error(
    repo: Path, capsys: pytest.CaptureFixture[str], mapping: str, said: str
) -> None:
    for command in ("audit", "fix"):
        code, out, err = _run(capsys, command, "--source", mapping, "fleet")
        assert (code, out) == (2, "")
        assert err.startswith("fluxwarden: error: --source "), err
        assert said in err, err


def test_a_source_mapped_twice_or_with_cluster_is_a_usage_error(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "audit", "--source", TENANT, "--source", TENANT, "fleet")
    assert (code, "given twice" in err) == (2, True)
    code, _, err = _run(capsys, "audit", "--cluster", "--source", TENANT)
    assert (code, "--source" in err) == (2, True)


def test_a_mapping_no_kustomization_uses_is_a_notice(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _json(capsys, "--source", "GitRepository/flux-system/other=tenant", "fleet")
    assert code == 1  # the repo's own finding, no input error
    assert {
        "source": "tenant",
        "line": 0,
        "message": "--source GitRepository/flux-system/other: no Flux Kustomization uses this "
        "source",
        "error": False,
    } in report["problems"]


def test_a_path_the_checkout_does_not_have_is_an_error(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(repo / "tenant/deploy")
    (repo / "tenant/other").mkdir()
    code, report = _json(capsys, "--source", TENANT, "fleet")
    assert code == 2  # Flux could not apply it either
    errors = [p for p in report["problems"] if p["error"]]
    assert [(p["source"], p["message"]) for p in errors] == [
        (
            "fleet/clusters/prod/tenant.yaml",
            "Flux Kustomization flux-system/tenant: spec.path './deploy' is not a directory of "
            "OCIRepository/flux-system/tenant (--source tenant)",
        )
    ]


def test_a_mapped_checkout_is_confined_as_the_repo_is(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A symlink out of the checkout is not followed; a remote base there is not fetched."""
    secret = tmp_path / "outside.yaml"
    secret.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leaked}\n")
    (repo / "tenant/deploy/leak.yaml").symlink_to(secret)
    kustomization = repo / "tenant/deploy/kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "  - ./leak.yaml\n")
    code, report = _json(capsys, "--source", TENANT, "fleet")
    assert code == 2
    assert "leaked" not in json.dumps(report)
    # as in the repo: the link is not in the build's copy, so the build fails (Flux's
    # confined file system refuses it too), and it is named
    failed = [p for p in report["problems"] if p["error"]]
    assert [p["source"] for p in failed] == ["fleet/clusters/prod/tenant.yaml"]
    assert "kustomize cannot build flux-system/tenant" in failed[0]["message"]
    assert any(
        p["source"] == "tenant/deploy/leak.yaml" and "a symlink to outside" in p["message"]
        for p in report["problems"]
    )
    (repo / "tenant/deploy/leak.yaml").unlink()
    remote = "  - https://example.com/base.yaml\n"
    kustomization.write_text(kustomization.read_text().replace("  - ./leak.yaml\n", remote))
    code, report = _json(capsys, "--source", TENANT, "fleet")
    assert code == 1
    listed = {n["kustomization"]: n["why"] for n in report["notAudited"]}
    assert "remote reference 'https://example.com/base.yaml'" in listed["flux-system/tenant"]


def test_sarif_with_not_audited_kustomizations_is_valid(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    _, out, _ = _run(capsys, "audit", "-o", "sarif", "fleet")
    log = json.loads(out)
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(log)
    notes = [r for r in log["runs"][0]["results"] if r["ruleId"] == "fluxwarden/not-audited"]
    assert [(r["level"], r["properties"]["kustomization"]) for r in notes] == [
        ("note", "flux-system/dragonfly"),
        ("note", "flux-system/platform"),
        ("note", "flux-system/tenant"),
    ]


def regenerate() -> list[Path]:
    """Rewrite the golden files from the current code (in a copy of the fixture)."""
    import tempfile

    from tests.controlplane.cluster import default_bin_dir

    kubectl = default_bin_dir() / "kubectl"
    if not kubectl.is_file():
        print(f"not regenerated: {GOLDEN} needs the project-built kubectl (make controlplane)")
        return []
    os.environ.setdefault("FLUXWARDEN_KUSTOMIZE", str(kubectl))
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="fluxwarden-golden-") as scratch:
        shutil.copytree(FIXTURE, Path(scratch) / "sources")
        here = os.getcwd()
        os.chdir(Path(scratch) / "sources")
        try:
            for name, args in sorted(CASES.items()):
                from contextlib import redirect_stdout
                from io import StringIO

                out = StringIO()
                with redirect_stdout(out):
                    main(["audit", *args])
                GOLDEN.mkdir(parents=True, exist_ok=True)
                (GOLDEN / name).write_text(out.getvalue().replace(__version__, VERSION))
                written.append(GOLDEN / name)
        finally:
            os.chdir(here)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.audit.test_not_audited")
    parser.add_argument("--regen", action="store_true", help="rewrite the golden files")
    if not parser.parse_args().regen:
        parser.error("nothing to do: pass --regen to rewrite the golden files")
    for path in regenerate():
        print(f"wrote {path}")
