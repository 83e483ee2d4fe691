"""The Kyverno side-by-side benchmarks' own logic (bench/kyverno.py, bench/offline_peer.py and
the `kyverno` configuration of bench/apiserver.py), and the ClusterPolicies of bench/kyverno/
run through the Kyverno CLI when it is built (tests/controlplane/kyverno/build.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import kyverno as kyverno_peer
from bench.apiserver import (
    APPLIES,
    Answer,
    kyverno_shows_effect,
    own_requests,
    parse_metrics,
)
from bench.offline_peer import (
    compare_results,
    controllers,
    key_of,
    manifests,
    objects_in,
    run_measured,
    write_directory,
)

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
apiserver_request_total{code="201",component="apiserver",dry_run="",group="reports.kyverno.io",resource="ephemeralreports",scope="namespace",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="404",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="GET",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="scale",verb="PATCH",version="v1"} 1
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 4
apiserver_admission_webhook_admission_duration_seconds_sum{name="mutate.kyverno.svc-ignore",operation="UPDATE",rejected="false",type="admit"} 0.5
apiserver_admission_webhook_admission_duration_seconds_count{name="mutate.kyverno.svc-ignore",operation="UPDATE",rejected="false",type="admit"} 10
apiserver_admission_webhook_admission_duration_seconds_sum{name="mutate.kyverno.svc-ignore",operation="CREATE",rejected="false",type="admit"} 0.25
apiserver_admission_webhook_admission_duration_seconds_count{name="mutate.kyverno.svc-ignore",operation="CREATE",rejected="false",type="admit"} 5
"""


def test_metrics_are_summed_per_verb_and_resource_and_per_webhook() -> None:
    webhooks, requests = parse_metrics(METRICS)
    assert webhooks == {"mutate.kyverno.svc-ignore": (0.75, 15.0)}
    assert requests == {
        "POST ephemeralreports.reports.kyverno.io": 7.0,
        "GET deployments.apps": 5.0,  # both response codes
        "PATCH deployments/scale.apps": 1.0,  # not confused with the `resource` label
        "GET (non-resource)/metrics": 4.0,
    }


def test_own_requests_are_the_applies_and_one_metrics_read() -> None:
    own = own_requests(per_op=3)
    assert own["APPLY deployments.apps"] == 6  # kustomize-controller and IRC updates
    assert own["APPLY helmreleases.helm.toolkit.fluxcd.io"] == 3
    assert own["APPLY configmaps"] == 3
    assert sum(own.values()) == 3 * len(APPLIES) + 1


def _apply(name: str) -> Any:
    return next(a for a in APPLIES if a.name == name)


def test_kyverno_effects_are_read_from_its_own_warnings() -> None:
    # As the API server hands them on: `299 - "text"`.
    missing = Answer(
        200,
        {},
        [
            '299 - "policy kustomization-dependencies.missing-dependency-kustomization: '
            'validation failure: a dependency in spec.dependsOn does not exist"'
        ],
    )
    assert kyverno_shows_effect(_apply("kustomization-create"), missing)
    passed = Answer(200, {}, ['299 - "policy kustomization-dependencies.no-self-reference: ok"'])
    assert not kyverno_shows_effect(_apply("kustomization-create"), passed)
    # An untargeted write shows an effect when Kyverno said anything about it.
    assert kyverno_shows_effect(_apply("configmap-update"), missing)
    assert not kyverno_shows_effect(_apply("configmap-update"), Answer(200, {}, []))
    # Object effects are checked as for fluxwarden.
    mutated = Answer(200, {"spec": {"driftDetection": {"mode": "enabled"}}}, [])
    assert kyverno_shows_effect(_apply("helmrelease-create"), mutated)
    assert not kyverno_shows_effect(_apply("helmrelease-create"), Answer(200, {"spec": {}}, []))


def _release(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"interval": "10m", **spec},
    }


def test_equivalence_needs_identical_results_and_the_same_changes() -> None:
    a, b = _release("a"), _release("b")
    a_fixed = _release("a", driftDetection={"mode": "enabled"})
    original = {key_of(a): a, key_of(b): b}
    same = compare_results(original, {key_of(a): a_fixed, key_of(b): b}, {key_of(a): a_fixed})
    assert same.identical
    assert same.changed_by_fluxwarden == same.changed_by_kyverno == {key_of(a)}
    # Kyverno changed it differently.
    other = _release("a", driftDetection={"mode": "warn"})
    different = compare_results(original, {key_of(a): a_fixed, key_of(b): b}, {key_of(a): other})
    assert not different.identical
    assert different.different == [key_of(a)]
    # Kyverno did not change it at all.
    unchanged = compare_results(original, {key_of(a): a_fixed, key_of(b): b}, {})
    assert not unchanged.identical
    # Nobody changed anything: nothing was compared, so that is no evidence.
    nothing = compare_results(original, dict(original), {})
    assert not nothing.different
    assert not nothing.identical


def test_later_documents_of_an_object_win(tmp_path: Path) -> None:
    first, last = _release("a"), _release("a", driftDetection={"mode": "enabled"})
    (tmp_path / "a-mutated.yaml").write_text(yaml.safe_dump_all([first, last]))
    assert objects_in(tmp_path) == {key_of(last): last}


def test_the_input_is_the_releases_and_the_flux_controllers(tmp_path: Path) -> None:
    objects = manifests(8)
    assert [o["kind"] for o in objects].count("HelmRelease") == 8
    assert sum("driftDetection" not in o["spec"] for o in objects if o["kind"] == "HelmRelease")
    irc = next(c for c in controllers() if c["metadata"]["name"] == "image-reflector-controller")
    assert irc["spec"]["replicas"] == 2
    write_directory(tmp_path, objects)
    assert len(objects_in(tmp_path)) == len(objects)


def test_run_measured_reports_exit_code_and_peaks(tmp_path: Path) -> None:
    script = "import time; data = bytearray(64 << 20); time.sleep(0.5); raise SystemExit(3)"
    run = run_measured(["python3", "-c", script], output=tmp_path / "out")
    assert run.returncode == 3
    assert run.peak_rss_mib > 60
    assert run.peak_pss_mib > 60
    assert run.wall >= 0.5


def test_policies_are_cluster_policies_that_warn_and_fail_open() -> None:
    for doc in kyverno_peer.policy_documents(kyverno_peer.POLICIES, kyverno_peer.LOOKUP_POLICIES):
        assert doc["kind"] == "ClusterPolicy"
        assert doc["spec"]["emitWarning"] is True
        assert doc["spec"]["webhookConfiguration"]["failurePolicy"] == "Ignore"


# --------------------------------------------------------------------------- with the CLI


@pytest.fixture(scope="module")
def cli() -> Path:
    if kyverno_peer.missing():
        pytest.skip("Kyverno not built: tests/controlplane/kyverno/build.sh")
    return kyverno_peer.build_dir() / "kubectl-kyverno"


def _kyverno_apply(cli: Path, objects: list[dict[str, Any]], tmp_path: Path) -> dict[Any, Any]:
    (tmp_path / "in.yaml").write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(
        [str(cli), "apply", str(kyverno_peer.POLICIES), "--resource", str(tmp_path / "in.yaml"),
         "-o", str(tmp_path / "out"), "--remove-color"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return {**{key_of(o): o for o in objects}, **objects_in(tmp_path / "out")}


def test_cli_applies_the_policies_like_fluxwarden(cli: Path, tmp_path: Path) -> None:
    kept = _release("kept", driftDetection={"mode": "disabled"})
    objects = [*controllers(), _release("absent"), kept]
    result = _kyverno_apply(cli, objects, tmp_path)
    by_name = {key[3]: obj for key, obj in result.items()}
    assert by_name["absent"]["spec"]["driftDetection"] == {"mode": "enabled"}
    assert by_name["kept"] == kept  # an explicit `disabled` is kept (and warned about)
    irc = by_name["image-reflector-controller"]["spec"]
    assert irc["replicas"] == 1
    assert irc["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    for name in ("kustomize-controller", "helm-controller"):
        args = by_name[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-1] == "--requeue-dependency=5s"
        assert sum(a.startswith("--requeue-dependency") for a in args) == 1
    volumes = by_name["source-controller"]["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v["emptyDir"].get("sizeLimit") for v in volumes} == {
        "data": "10Gi",
        "tmp": "2Gi",
    }


def test_cli_shortens_a_long_requeue_and_leaves_compliant_objects(
    cli: Path, tmp_path: Path
) -> None:
    long, short = (
        next(c for c in controllers() if c["metadata"]["name"] == "kustomize-controller"),
        next(c for c in controllers() if c["metadata"]["name"] == "helm-controller"),
    )
    long["spec"]["template"]["spec"]["containers"][0]["args"].append("--requeue-dependency=30s")
    short["spec"]["template"]["spec"]["containers"][0]["args"].append("--requeue-dependency=2s")
    enabled = _release("enabled", driftDetection={"mode": "enabled"})
    result = _kyverno_apply(cli, [long, short, enabled], tmp_path)
    by_name = {key[3]: obj for key, obj in result.items()}
    args = by_name["kustomize-controller"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--requeue")] == ["--requeue-dependency=5s"]
    assert by_name["helm-controller"] == short
    assert by_name["enabled"] == enabled


def test_build_script_prints_its_dir_and_builds_nothing_when_built(tmp_path: Path) -> None:
    script = str(kyverno_peer.BUILD_SCRIPT)
    printed = subprocess.run([script, "--print-dir"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == str(kyverno_peer.build_dir())
    if kyverno_peer.missing():
        pytest.skip("Kyverno not built: tests/controlplane/kyverno/build.sh")
    # No `go` on the PATH: it can only succeed without compiling anything.
    no_go = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run([script], capture_output=True, text=True, env=no_go, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(kyverno_peer.build_dir())
    assert "already built" in done.stderr
