"""A Flux Operator FluxInstance is audited as the controllers it installs, and fixed in its
`spec.kustomize.patches`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import kubectl_or_skip
from webhook.audit.fluxinstance import controller_deployments, distribution_facts, materialise
from webhook.cli import main

REPOS = Path(__file__).parent / "repos"
INSTANCE = "clusters/prod/flux-instance.yaml"
GOTK = REPOS / "bootstrap/clusters/prod/flux-system/gotk-components.yaml"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPOS / "operator", tmp_path / "operator")
    return tmp_path / "operator"


def _audit(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["audit", "-o", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def _results(report: dict[str, Any]) -> dict[tuple[str, str], tuple[str, int]]:
    """(policy, deployment) -> (result, line) for the FluxInstance's controllers."""
    return {
        (f["policy"], f["name"]): (f["result"], f["line"])
        for f in report["findings"]
        if f["kind"] == "Deployment"
    }


def _edit(repo: Path, change: Any) -> None:
    path = repo / INSTANCE
    instance = yaml.safe_load(path.read_text())
    change(instance)
    path.write_text(yaml.safe_dump(instance, sort_keys=False))


def test_controllers_are_audited_with_the_instance_patches(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _audit(capsys, repo)
    assert code == 1
    results = _results(report)
    # the instance's requeue patch is applied, as the operator applies it
    assert results[("controller-requeue-dependency", "kustomize-controller")][0] == "pass"
    assert results[("controller-requeue-dependency", "helm-controller")][0] == "pass"
    # upstream source-controller: /tmp an unbounded emptyDir; the finding points at its component
    assert results[("source-controller-storage", "source-controller")] == ("fail", 12)
    # the IRC limit came from the instance's patch: the finding points at that patch's field
    assert results[("irc-single-replica", "image-reflector-controller")] == ("fail", 32)
    lines = (repo / INSTANCE).read_text().splitlines()
    assert lines[11].strip() == "- source-controller"
    assert "limits/memory" in lines[31]
    assert all(f["source"].endswith(INSTANCE) for f in report["findings"])


def test_without_the_patch_the_requeue_findings_appear(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(repo, lambda i: i["spec"].pop("kustomize"))
    _, report = _audit(capsys, repo)
    results = _results(report)
    lines = (repo / INSTANCE).read_text().splitlines()
    kustomize_line = lines.index("  - kustomize-controller") + 1
    irc_line = lines.index("  - image-reflector-controller") + 1
    assert results[("controller-requeue-dependency", "kustomize-controller")] == (
        "fail",
        kustomize_line,
    )
    assert results[("controller-requeue-dependency", "helm-controller")][0] == "fail"
    # no patch set the limit now: the upstream 1Gi, reported at the component
    assert results[("irc-single-replica", "image-reflector-controller")] == ("fail", irc_line)


@pytest.mark.parametrize(
    ("size", "requeue"), [("small", "pass"), ("medium", "pass"), ("large", "pass")]
)
def test_cluster_size_profile_sets_requeue_dependency(
    repo: Path, capsys: pytest.CaptureFixture[str], size: str, requeue: str
) -> None:
    def change(instance: dict[str, Any]) -> None:
        instance["spec"]["cluster"] = {"size": size}
        instance["spec"]["kustomize"]["patches"].pop(0)

    _edit(repo, change)
    _, report = _audit(capsys, repo)
    # small adds --requeue-dependency=10s (within the 10s ceiling: kept), medium and large 5s
    assert _results(report)[("controller-requeue-dependency", "helm-controller")][0] == requeue


def test_persistent_storage_is_not_an_ephemeral_tmp_problem(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(repo, lambda i: i["spec"].update(storage={"class": "standard", "size": "10Gi"}))
    _, report = _audit(capsys, repo)
    assert _results(report)[("source-controller-storage", "source-controller")][0] == "pass"


@pytest.mark.parametrize("version", ["2.2.x", "3.x", "latest"])
def test_unrecorded_versions_are_said_not_guessed(
    repo: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    _edit(repo, lambda i: i["spec"]["distribution"].update(version=version))
    code, report = _audit(capsys, repo)
    assert code == 0
    assert _results(report) == {}
    notices = [p["message"] for p in report["problems"]]
    assert any("FluxInstance flux-system/flux" in m and "not" in m for m in notices), notices


def test_default_components_are_the_operator_defaults(repo: Path) -> None:
    instance = yaml.safe_load((repo / INSTANCE).read_text())
    del instance["spec"]["components"]
    deployments, unknown = controller_deployments(instance)
    assert [d["metadata"]["name"] for d in deployments] == [
        "source-controller",
        "kustomize-controller",
        "helm-controller",
        "notification-controller",
    ]
    assert unknown == []


def _mounted(pod: dict[str, Any]) -> dict[str, Any]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {
        m["mountPath"]: volumes[m["name"]].get("emptyDir")
        for m in pod["containers"][0]["volumeMounts"]
    }


def test_facts_agree_with_a_generated_flux_release() -> None:
    """The recorded defaults against the fixture's gotk-components.yaml of Flux v2.7.3."""
    upstream = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all(GOTK.read_text())
        if d and d["kind"] == "Deployment"
    }
    instance = {"spec": {"distribution": {"version": "2.7.x"}}, "metadata": {"namespace": "x"}}
    ours, _ = controller_deployments(instance)
    assert {d["metadata"]["name"] for d in ours} == set(upstream)
    for deployment in ours:
        theirs = upstream[deployment["metadata"]["name"]]
        for obj in (deployment, theirs):
            assert obj["spec"]["replicas"] == 1
        pod, their_pod = deployment["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
        manager, their_manager = pod["containers"][0], their_pod["containers"][0]
        # limits and the memory request (what the policies read); the fixture is a trimmed copy
        # whose source-controller cpu request (100m) is not upstream's 50m (v1.7.3)
        assert manager["resources"]["limits"] == their_manager["resources"]["limits"]
        assert (
            manager["resources"]["requests"]["memory"]
            == their_manager["resources"]["requests"]["memory"]
        )
        # by mount path: the fixture names source-controller's /tmp volume `temp` (upstream: `tmp`)
        assert _mounted(pod) == _mounted(their_pod)
        assert not any("requeue" in a for a in their_manager["args"] + manager["args"])
        assert [a.split("=")[0] for a in manager["args"]] == [
            a.split("=")[0] for a in their_manager["args"]
        ]
    assert all(f["source"] for f in distribution_facts()["facts"])


def test_a_broken_patch_is_an_input_error_not_a_crash(repo: Path) -> None:
    instance = yaml.safe_load((repo / INSTANCE).read_text())
    instance["spec"]["kustomize"]["patches"].append(
        {
            "patch": "- op: replace\n  path: /spec/nothing/here\n  value: 1\n",
            "target": {"kind": "Deployment", "name": "helm-controller"},
        }
    )
    result = materialise(instance, [str(kubectl_or_skip()), "kustomize"])
    assert result.deployments == []
    assert result.problem is not None
    assert result.broken
    assert "spec.kustomize.patches" in result.problem


def test_fix_writes_into_the_instance_patches(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repo / INSTANCE
    before = path.read_text()
    assert main(["fix", "--check", str(repo)]) == 1
    assert main(["fix", "--write", str(repo)]) == 0
    assert main(["fix", "--check", str(repo)]) == 0  # a second run changes nothing
    capsys.readouterr()
    after = path.read_text()
    # the IRC patch's own value is raised (not a second op on the same path); source-controller
    # (/data and /tmp bounded) gets a new entry written like its siblings (target first), its
    # volumes named, never indexed (a strategic merge: kustomize merges volumes by name);
    # comments kept
    assert after == before.replace("value: 1536Mi", "value: 2Gi") + (
        "      - target:\n"
        "          kind: Deployment\n"
        "          name: source-controller\n"
        "        patch: |\n"
        "          apiVersion: apps/v1\n"
        "          kind: Deployment\n"
        "          metadata:\n"
        "            name: source-controller\n"
        "          spec:\n"
        "            template:\n"
        "              spec:\n"
        "                volumes:\n"
        "                - name: data\n"
        "                  emptyDir:\n"
        "                    sizeLimit: 10Gi\n"
        "                - name: tmp\n"
        "                  emptyDir:\n"
        "                    sizeLimit: 2Gi\n"
    )
    code, report = _audit(capsys, repo)
    assert code == 0, report
    fixed = materialise(yaml.safe_load(after), [str(kubectl_or_skip()), "kustomize"])
    by_name = {d["metadata"]["name"]: d for d in fixed.deployments}
    for name in ("kustomize-controller", "helm-controller"):
        args = by_name[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [a for a in args if "requeue" in a] == ["--requeue-dependency=5s"]


def test_fix_adds_the_patches_section_when_there_is_none(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(repo, lambda i: i["spec"].pop("kustomize"))
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    patches = yaml.safe_load((repo / INSTANCE).read_text())["spec"]["kustomize"]["patches"]
    assert sorted(p["target"]["name"] for p in patches) == [
        "helm-controller",
        "image-reflector-controller",
        "kustomize-controller",
        "source-controller",
    ]
    assert _audit(capsys, repo)[0] == 0


BROKEN_PATCH = {
    "patch": "- op: replace\n  path: /spec/nothing/here\n  value: 1\n",
    "target": {"kind": "Deployment", "name": "helm-controller"},
}


def test_an_instance_whose_patches_fail_fails_audit_and_fix(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator could not install it: exit 2, never a green run without its controllers."""
    _edit(repo, lambda i: i["spec"]["kustomize"]["patches"].append(BROKEN_PATCH))
    code, report = _audit(capsys, repo)
    assert code == 2
    assert any(
        p["error"] and "spec.kustomize.patches" in p["message"] for p in report["problems"]
    ), report["problems"]
    assert main(["fix", "--check", str(repo)]) == 2
    assert main(["fix", "--write", str(repo)]) == 2
    capsys.readouterr()


def _multitenant(instance: dict[str, Any]) -> None:
    """A multitenant instance whose own patch sets a 30s requeue (above the 10s ceiling)."""
    instance["spec"]["cluster"] = {"multitenant": True, "tenantDefaultServiceAccount": "flux"}
    patch = instance["spec"]["kustomize"]["patches"][0]
    patch["patch"] = patch["patch"].replace("--requeue-dependency=5s", "--requeue-dependency=30s")


def test_the_operator_profiles_are_modelled() -> None:
    instance: dict[str, Any] = {
        "metadata": {"namespace": "flux-system"},
        "spec": {
            "distribution": {"version": "2.7.x"},
            "components": ["source-controller", "kustomize-controller", "source-watcher"],
            "cluster": {"multitenant": True, "size": "small"},
            "sharding": {"shards": ["s1"]},
        },
    }
    deployments, unknown = controller_deployments(instance)
    args = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in deployments
    }
    assert unknown == ["source-watcher"]
    assert args["kustomize-controller"][5:] == [
        "--watch-label-selector=!sharding.fluxcd.io/key",  # the template's sharding patch
        "--concurrent=5",  # size small
        "--requeue-dependency=10s",
        "--no-cross-namespace-refs=true",  # multitenant
        "--no-remote-bases=true",
        "--default-service-account=default",
        "--feature-gates=ExternalArtifact=true",  # source-watcher
    ]
    # the shard: upstream args plus its own selector; the anchored multitenant targets miss it
    assert args["kustomize-controller-s1"][5:] == [
        "--watch-label-selector=sharding.fluxcd.io/key=s1"
    ]
    assert sorted(args) == [
        "kustomize-controller",
        "kustomize-controller-s1",
        "source-controller",
        "source-controller-s1",
    ]


def test_fix_edits_the_requeue_op_of_a_multitenant_instance_by_value(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(repo, _multitenant)
    before = yaml.safe_load((repo / INSTANCE).read_text())
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    after = yaml.safe_load((repo / INSTANCE).read_text())
    patches = after["spec"]["kustomize"]["patches"]
    # the op that set 30s now sets 5s; no op anywhere addresses an args index
    assert yaml.safe_load(patches[0]["patch"]) == [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/args/-",
            "value": "--requeue-dependency=5s",
        }
    ]
    bodies = [yaml.safe_load(p["patch"]) for p in patches]
    ops = [op for body in bodies if isinstance(body, list) for op in body]
    # no op anywhere addresses a list item by its index
    assert not any(re.search(r"/(args|volumes)/\d", op["path"]) for op in ops), ops
    assert len(patches) == len(before["spec"]["kustomize"]["patches"]) + 1  # source-controller
    fixed = materialise(after, [str(kubectl_or_skip()), "kustomize"])
    for deployment in fixed.deployments:
        if deployment["metadata"]["name"] in ("kustomize-controller", "helm-controller"):
            args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            assert "--default-service-account=flux" in args
            assert "--no-cross-namespace-refs=true" in args
            assert [a for a in args if "requeue" in a] == ["--requeue-dependency=5s"]
    assert _audit(capsys, repo)[0] == 0


def test_an_edited_patch_keeps_its_block_style(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repo / INSTANCE
    text = path.read_text().replace("patch: |\n", "patch: |-\n", 1)
    path.write_text(text.replace("--requeue-dependency=5s", "--requeue-dependency=30s"))
    assert main(["fix", "--write", str(repo)]) == 0
    capsys.readouterr()
    after = path.read_text()
    assert "--requeue-dependency=5s" in after
    # only the value line changed in that patch: `|-` kept
    assert (
        after.split("name: image-reflector-controller")[0]
        == text.split("name: image-reflector-controller")[0]
    )
