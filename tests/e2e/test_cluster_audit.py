"""`fluxwarden audit --cluster` against the real kube-apiserver: findings and stored PolicyReports.

The objects are stored as written: this module removes fluxwarden's webhook configurations
while it runs (restoring them afterwards for the other modules), so non-compliant objects exist
in the cluster exactly as they would on a cluster where the webhook was installed later, or down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import BASE, REPO, ensure_namespaces, wait_until

AUDIT_NAMESPACES = ("audit-a", "audit-b", "audit-c", "audit-gone")
SHARED_NAMESPACES = ("flux-system", "cattle-fleet-system", "cattle-system")
WEBHOOK_CONFIGS = ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")
KINDS = "helmreleases,kustomizations,deployments,horizontalpodautoscalers,jobs,cronjobs,pods"
MANAGED = "app.kubernetes.io/managed-by=fluxwarden"
Obj = dict[str, Any]

# ---------------------------------------------------------------- the objects


def _meta(name: str, namespace: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": namespace, **extra}


def helmrelease(
    name: str,
    namespace: str,
    *,
    drift: str | None = None,
    interval: str = "10m",
    depends_on: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    chart = {"chart": name, "sourceRef": {"kind": "HelmRepository", "name": "charts"}}
    spec: Obj = {"interval": interval, "chart": {"spec": chart}}
    if drift:
        spec["driftDetection"] = {"mode": drift}
    if depends_on:
        spec["dependsOn"] = [{"name": dep} for dep in depends_on]
    meta = _meta(name, namespace)
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": meta,
        "spec": spec,
    }


def kustomization(name: str, namespace: str, *depends_on: str) -> Obj:
    spec: Obj = {
        "interval": "10m",
        "prune": True,
        "path": f"./{name}",
        "sourceRef": {"kind": "GitRepository", "name": "repo"},
    }
    if depends_on:
        spec["dependsOn"] = [{"name": dep} for dep in depends_on]
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def deployment(name: str, namespace: str, pod_spec: Obj, *, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def manager(*args: str, memory_limit: str | None = None, mounts: list[Obj] | None = None) -> Obj:
    container: Obj = {
        "name": "manager",
        "image": "ghcr.io/fluxcd/controller:v1",
        "args": list(args),
    }
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}}
    if mounts:
        container["volumeMounts"] = mounts
    return container


def pod(name: str, namespace: str, tolerations: list[Obj] | None = None) -> Obj:
    spec: Obj = {"containers": [{"name": "main", "image": "rancher/shell:v1"}]}
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, namespace), "spec": spec}


INFRA = {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
JOB_POD: Obj = {
    "metadata": {"labels": {"app": "fleet-job"}},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "cleanup", "image": "fleet:v1"}]},
}


def shared_objects() -> list[Obj]:
    """Objects in namespaces other e2e modules use too: created under fixed names, removed after."""
    irc = deployment(
        "image-reflector-controller",
        "flux-system",
        {"containers": [manager(memory_limit="1Gi")]},
        replicas=2,
    )
    source = deployment(
        "source-controller",
        "flux-system",
        {
            "containers": [
                manager(
                    mounts=[
                        {"name": "data", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ]
                )
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    )
    kustomize = deployment(
        "kustomize-controller", "flux-system", {"containers": [manager("--concurrent=4")]}
    )
    helm = deployment(
        "helm-controller",
        "flux-system",
        {"containers": [manager("--requeue-dependency=5s")]},
    )
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta("image-reflector-controller", "flux-system"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "image-reflector-controller",
            },
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }
    fleet_controller = deployment(
        "fleet-controller",
        "cattle-fleet-system",
        {"tolerations": [INFRA], "containers": [{"name": "fleet", "image": "fleet:v1"}]},
    )
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta("fleet-cleanup-gitrepo-jobs", "cattle-fleet-system"),
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": JOB_POD}}},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta("fleet-cleanup-clusterregistrations", "cattle-fleet-system"),
        "spec": {"template": JOB_POD},
    }
    other_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta("audit-unrelated-job", "cattle-fleet-system"),
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "x"}]}
            }
        },
    }
    return [
        irc,
        source,
        kustomize,
        helm,
        hpa,
        fleet_controller,
        cronjob,
        job,
        other_job,
        pod("helm-operation-audit1", "cattle-system"),
        pod("helm-operation-audit2", "cattle-system", [INFRA]),
    ]


def audit_namespace_objects() -> list[Obj]:
    objects: list[Obj] = []
    # audit-a: 40 without drift detection, 40 with, 10 with a too short interval; plus objects
    # no policy targets there (Deployments, Pods), which the audit must not even list.
    objects += [helmrelease(f"app-{i:03}", "audit-a") for i in range(40)]
    objects += [helmrelease(f"ok-{i:03}", "audit-a", drift="enabled") for i in range(40)]
    objects += [
        helmrelease(f"fast-{i:02}", "audit-a", drift="enabled", interval="30s") for i in range(10)
    ]
    web = {"containers": [{"name": "web", "image": "nginx"}]}
    objects += [deployment(f"web-{i:02}", "audit-a", web, replicas=3) for i in range(30)]
    objects += [pod(f"helm-operation-{i}", "audit-a") for i in range(5)]
    # audit-b: 30 without drift detection, 20 explicitly disabled (kept, warned), 5 exempt, and
    # a 10-long dependsOn chain (deeper than maxDepth 5 from chain-6 on).
    objects += [helmrelease(f"svc-{i:03}", "audit-b") for i in range(30)]
    objects += [helmrelease(f"off-{i:03}", "audit-b", drift="disabled") for i in range(20)]
    exempt = {"fluxwarden.io/exempt": "all"}
    objects += [helmrelease(f"exempt-{i}", "audit-b", annotations=exempt) for i in range(5)]
    objects += [
        helmrelease(
            f"chain-{i}", "audit-b", drift="enabled", depends_on=[f"chain-{i - 1}"] if i else None
        )
        for i in range(10)
    ]
    # audit-c: Kustomizations, most without dependsOn (no policy applies), a cycle, a
    # self-reference, a missing dependency and a good one.
    objects += [kustomization(f"ks-{i:03}", "audit-c") for i in range(100)]
    objects += [
        kustomization("ks-cycle-a", "audit-c", "ks-cycle-b"),
        kustomization("ks-cycle-b", "audit-c", "ks-cycle-c"),
        kustomization("ks-cycle-c", "audit-c", "ks-cycle-a"),
        kustomization("ks-self", "audit-c", "ks-self"),
        kustomization("ks-missing", "audit-c", "nope"),
        kustomization("ks-dep", "audit-c", "ks-000"),
    ]
    # audit-gone: its objects are deleted later, and so must be its report.
    objects += [helmrelease(f"gone-{i:02}", "audit-gone") for i in range(20)]
    return objects


MINE = {
    (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
    for o in shared_objects() + audit_namespace_objects()
}

# Every HelmRelease here sets no install/upgrade strategy (helmrelease-remediation fails it, but
# for the exempt) and gets a pass from helmrelease-release-identity and flux-api-versions; every
# Kustomization a pass from flux-intervals and flux-api-versions, and from kustomization-safety
# (prune true) but for the four others depend on without waiting: ks-000 and the cycle's three
# (a self-reference is no dependent), warned from the cluster audit's listed edges.
EXPECTED = {
    "flux-system": {"fail": 4, "pass": 1},
    "cattle-fleet-system": {"fail": 1, "warn": 1},
    "cattle-system": {"fail": 1, "pass": 1},
    "audit-a": {"pass": 130 + 2 * 90, "fail": 40 + 90, "warn": 10},
    "audit-b": {"pass": 75 + 2 * 60, "fail": 30 + 60, "warn": 24, "skip": 10 + 3 * 5},
    "audit-c": {"pass": 1 + 3 * 106 - 4, "fail": 4, "warn": 1 + 4},
    "audit-gone": {"pass": 20 + 2 * 20, "fail": 20 + 20},
}
AUDIT_A_OBJECTS = 90  # the HelmReleases: its Deployments and Pods are not listed
AUDIT_B_OBJECTS = 65

# ---------------------------------------------------------------- helpers


def kubectl_json(cluster: ControlPlane, *args: str) -> Obj:
    result: Obj = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return result


def audit(cluster: ControlPlane, *args: str, kubeconfig: Path | None = None) -> tuple[int, Obj]:
    """`fluxwarden audit --cluster ... -o json` as a user runs it: (exit code, parsed output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXWARDEN_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "audit",
            "--cluster",
            "--kubeconfig",
            str(kubeconfig or cluster.kubeconfig_path),
            "-o",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    output: Obj = json.loads(result.stdout)
    return result.returncode, output


def is_mine(finding: Obj) -> bool:
    return (finding["kind"], finding["namespace"], finding["name"]) in MINE


def counts_by_namespace(findings: list[Obj]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for finding in findings:
        if is_mine(finding):
            counts.setdefault(finding["namespace"], Counter())[finding["result"]] += 1
    return {ns: dict(counter) for ns, counter in counts.items()}


def result_of(
    findings: list[Obj], namespace: str, name: str, policy: str, kind: str | None = None
) -> Obj:
    matches = [
        f
        for f in findings
        if (f["namespace"], f["name"], f["policy"]) == (namespace, name, policy)
        and kind in (None, f["kind"])
    ]
    assert len(matches) == 1, matches
    return matches[0]


def reports(cluster: ControlPlane, resource: str = "policyreports") -> dict[str, Obj]:
    """namespace -> the `fluxwarden` report stored there."""
    items = kubectl_json(cluster, "get", resource, "-A", "-l", MANAGED)["items"]
    return {r["metadata"]["namespace"]: r for r in items if r["metadata"]["name"] == "fluxwarden"}


def report_counts(report: Obj) -> dict[str, int]:
    """Result counts of my objects in a report (shared namespaces hold other modules' too)."""
    counter: Counter[str] = Counter()
    for result in report["results"]:
        ref = result["resources"][0]
        if (ref["kind"], ref["namespace"], ref["name"]) in MINE:
            counter[result["result"]] += 1
    return dict(counter)


def nonzero(summary: Obj) -> dict[str, int]:
    return {k: v for k, v in summary.items() if v}


# ---------------------------------------------------------------- fixtures


def _webhook_stored_unmutated(cluster: ControlPlane) -> bool:
    probe = helmrelease("webhook-probe", "audit-a")
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe), check=False
    )
    return result.returncode == 0 and "driftDetection" not in json.loads(result.stdout)["spec"]


def _without_server_fields(obj: Obj) -> Obj:
    meta = {
        k: v
        for k, v in obj["metadata"].items()
        if k not in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")
    }
    return {**obj, "metadata": meta}


def _stored(cluster: ControlPlane, objects: list[Obj]) -> list[Obj]:
    """Those of `objects` that exist, as stored, ready to be created again."""
    found = cluster.kubectl(
        "get", "--ignore-not-found", "-o", "json", "-f", "-", input=yaml.safe_dump_all(objects)
    ).stdout
    if not found.strip():
        return []
    body = json.loads(found)
    items: list[Obj] = body["items"] if body.get("kind") == "List" else [body]
    return [_without_server_fields(item) for item in items]


def _create(cluster: ControlPlane, objects: list[Obj]) -> None:
    if objects:
        listed = {"apiVersion": "v1", "kind": "List", "items": objects}
        cluster.kubectl("create", "-f", "-", input=json.dumps(listed))


@pytest.fixture(scope="module")
def populated(cluster: ControlPlane) -> Iterator[ControlPlane]:
    """A few hundred objects stored as written, webhook configurations out of the way.

    Objects other modules left under the names used here, and the webhook configurations, are
    put back afterwards as they were.
    """
    shared = shared_objects()
    ensure_namespaces(cluster, *AUDIT_NAMESPACES, *SHARED_NAMESPACES)
    configs = []
    for config in WEBHOOK_CONFIGS:
        found = cluster.kubectl("get", config, "fluxwarden", "-o", "json", check=False)
        if found.returncode == 0:
            configs.append(_without_server_fields(json.loads(found.stdout)))
    previous = _stored(cluster, shared)
    try:
        for config in WEBHOOK_CONFIGS:
            cluster.kubectl("delete", config, "fluxwarden", "--ignore-not-found")
        wait_until(
            "the API server to stop calling fluxwarden",
            lambda: _webhook_stored_unmutated(cluster),
        )
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(shared))
        objects = shared + audit_namespace_objects()
        for start in range(0, len(objects), 200):
            chunk = objects[start : start + 200]
            cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(chunk))
        yield cluster
    finally:
        for namespace in AUDIT_NAMESPACES:
            cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=false")
        for resource in ("policyreports", "reports.openreports.io"):
            cluster.kubectl("delete", resource, "-A", "-l", MANAGED, "--wait=false")
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(shared))
        _create(cluster, configs)
        if configs:
            wait_until(
                "the API server to call fluxwarden again",
                lambda: not _webhook_stored_unmutated(cluster),
            )
        _create(cluster, previous)


@pytest.fixture(scope="module")
def first_run(populated: ControlPlane) -> tuple[int, Obj, dict[str, Obj]]:
    """The first `audit --cluster -A --report`: exit code, JSON output, stored reports."""
    code, output = audit(populated, "-A", "--report")
    return code, output, reports(populated)


# ---------------------------------------------------------------- tests


def test_findings_count_every_policy_result_of_the_targeted_objects(
    first_run: tuple[int, Obj, dict[str, Obj]],
) -> None:
    code, output, _ = first_run
    assert code == 1  # there are failures, and --fail-on defaults to fail
    findings = output["findings"]
    assert counts_by_namespace(findings) == EXPECTED
    assert not [p for p in output["problems"] if p["error"]]
    assert {(f["source"], f["line"]) for f in findings} == {("cluster", 0)}
    irc = "image-reflector-controller"
    deployment = result_of(findings, "flux-system", irc, "irc-single-replica", "Deployment")
    assert deployment["messages"][0].startswith("set spec.replicas to 1 (was 2)")
    hpa = result_of(findings, "flux-system", irc, "irc-single-replica", "HorizontalPodAutoscaler")
    assert [m.split(":")[0] for m in hpa["messages"]] == ["set spec.maxReplicas to 1 (was 3)"]
    job = result_of(
        findings,
        "cattle-fleet-system",
        "fleet-cleanup-clusterregistrations",
        "fleet-job-tolerations",
    )
    assert "recreate it" in job["messages"][0]  # a started Job's template cannot be patched
    cronjob = result_of(
        findings, "cattle-fleet-system", "fleet-cleanup-gitrepo-jobs", "fleet-job-tolerations"
    )
    assert cronjob["messages"][0].startswith("set pod template tolerations: +1 (dedicated=infra")


def test_dependency_cycles_self_references_and_gaps_are_found_across_stored_objects(
    first_run: tuple[int, Obj, dict[str, Obj]],
) -> None:
    findings = first_run[1]["findings"]
    policy = "kustomization-dependencies"
    cycle = result_of(findings, "audit-c", "ks-cycle-a", policy)
    assert cycle["result"] == "fail"
    assert cycle["messages"] == [
        "dependsOn cycle never becomes ready: "
        "audit-c/ks-cycle-a -> audit-c/ks-cycle-b -> audit-c/ks-cycle-c -> audit-c/ks-cycle-a"
    ]
    assert result_of(findings, "audit-c", "ks-self", policy)["messages"] == [
        "Kustomization audit-c/ks-self depends on itself and can never become ready"
    ]
    assert result_of(findings, "audit-c", "ks-missing", policy)["messages"] == [
        "depends on Kustomization(s) not found: audit-c/nope"
    ]
    assert result_of(findings, "audit-c", "ks-dep", policy)["result"] == "pass"
    deep = result_of(findings, "audit-b", "chain-9", policy)
    assert deep["result"] == "warn"
    assert deep["messages"][0].startswith("dependsOn chain is 9 deep")


def test_only_the_targeted_kinds_in_the_targeted_namespaces_are_listed(
    populated: ControlPlane,
) -> None:
    code, output = audit(populated, "-n", "audit-a")
    assert code == 1
    assert output["summary"]["objects"] == AUDIT_A_OBJECTS
    assert {f["kind"] for f in output["findings"]} == {"HelmRelease"}
    assert {f["namespace"] for f in output["findings"]} == {"audit-a"}


def test_policyreports_hold_the_same_results_per_namespace(
    populated: ControlPlane, first_run: tuple[int, Obj, dict[str, Obj]]
) -> None:
    _, output, stored = first_run
    for namespace, expected in EXPECTED.items():
        report = stored[namespace]
        assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
        assert report["kind"] == "PolicyReport"
        assert report_counts(report) == expected, namespace
        if namespace in AUDIT_NAMESPACES:  # only my objects there: the summary is exact too
            assert nonzero(report["summary"]) == expected
    # Shared namespaces: the summary counts every result in the report, whoever created the object.
    for namespace in SHARED_NAMESPACES:
        everything = Counter(f["result"] for f in output["findings"] if f["namespace"] == namespace)
        assert nonzero(stored[namespace]["summary"]) == dict(everything)
    result = next(
        r
        for r in stored["audit-a"]["results"]
        if r["resources"][0]["name"] == "app-000" and r["policy"] == "helmrelease-drift-detection"
    )
    uid = populated.kubectl(
        "get", "helmrelease", "app-000", "-n", "audit-a", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    assert result["resources"] == [
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "namespace": "audit-a",
            "name": "app-000",
            "uid": uid,
        }
    ]
    assert result["result"] == "fail"
    assert result["rule"] == "helmrelease-drift-detection"
    assert result["source"] == "fluxwarden"
    assert result["scored"] is True
    assert set(result["timestamp"]) == {"seconds", "nanos"}
    assert result["message"].startswith("set spec.driftDetection.mode to enabled (was unset)")
    # What an operator sees:
    table = populated.kubectl("get", "policyreports", "-n", "audit-a").stdout.split("\n")
    assert table[0].split() == ["NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "AGE"]
    assert table[1].split()[:6] == ["fluxwarden", "310", "130", "10", "0", "0"]


def test_the_next_run_updates_reports_in_place_and_drops_emptied_namespaces(
    populated: ControlPlane, first_run: tuple[int, Obj, dict[str, Obj]]
) -> None:
    before = first_run[2]
    populated.kubectl(
        "patch",
        "helmrelease",
        "app-000",
        "-n",
        "audit-a",
        "--type=merge",
        "-p",
        '{"spec": {"driftDetection": {"mode": "enabled"}}}',
    )
    populated.kubectl("delete", "helmreleases", "--all", "-n", "audit-gone")
    _, output = audit(populated, "-A", "--report")
    drift = result_of(output["findings"], "audit-a", "app-000", "helmrelease-drift-detection")
    assert drift["result"] == "pass"
    after = reports(populated)
    assert nonzero(after["audit-a"]["summary"]) == {"pass": 311, "fail": 129, "warn": 10}
    assert after["audit-a"]["metadata"]["uid"] == before["audit-a"]["metadata"]["uid"]
    assert after["audit-b"]["metadata"]["uid"] == before["audit-b"]["metadata"]["uid"]
    assert "audit-gone" not in after
    gone = populated.kubectl("get", "policyreport", "fluxwarden", "-n", "audit-gone", check=False)
    assert "NotFound" in gone.stderr
    fixed = next(
        r
        for r in after["audit-a"]["results"]
        if r["resources"][0]["name"] == "app-000" and r["policy"] == "helmrelease-drift-detection"
    )
    assert fixed["result"] == "pass"
    assert len(after["audit-a"]["results"]) == 450  # replaced wholesale, nothing duplicated


def test_namespace_flag_audits_and_reports_only_that_namespace(
    populated: ControlPlane, first_run: tuple[int, Obj, dict[str, Obj]]
) -> None:
    untouched = reports(populated)["audit-c"]["metadata"]["resourceVersion"]
    code, output = audit(populated, "-n", "audit-b", "--report")
    assert code == 1
    assert output["summary"]["objects"] == AUDIT_B_OBJECTS
    assert counts_by_namespace(output["findings"]) == {"audit-b": EXPECTED["audit-b"]}
    stored = reports(populated)
    assert nonzero(stored["audit-b"]["summary"]) == EXPECTED["audit-b"]
    assert stored["audit-c"]["metadata"]["resourceVersion"] == untouched
    assert set(EXPECTED) - {"audit-gone"} <= set(stored)  # other namespaces' reports are kept


def test_openreports_format_writes_reports_and_cluster_reports_api(populated: ControlPlane) -> None:
    _, output = audit(populated, "-A", "--report", "--report-format", "openreports")
    stored = reports(populated, "reports.openreports.io")
    counts: dict[str, Counter[str]] = {}
    for finding in output["findings"]:
        counts.setdefault(finding["namespace"], Counter())[finding["result"]] += 1
    # Namespaces (kustomization-safety judges them): in the cluster-scoped report
    cluster_scoped = counts.pop("")
    cluster_report = kubectl_json(populated, "get", "clusterreports.openreports.io", "fluxwarden")
    assert nonzero(cluster_report["summary"]) == dict(cluster_scoped)
    assert set(stored) == set(counts)
    for namespace, counter in counts.items():
        report = stored[namespace]
        assert report["apiVersion"] == "openreports.io/v1alpha1"
        assert report["kind"] == "Report"
        assert report["source"] == "fluxwarden"
        assert nonzero(report["summary"]) == dict(counter), namespace
        assert len(report["results"]) == sum(counter.values())
    assert nonzero(stored["audit-c"]["summary"]) == EXPECTED["audit-c"]
    table = populated.kubectl("get", "reports.openreports.io", "-n", "audit-c").stdout
    expected = EXPECTED["audit-c"]
    assert table.split("\n")[1].split()[:6] == [
        "fluxwarden",
        *(str(expected.get(r, 0)) for r in ("pass", "fail", "warn", "error", "skip")),
    ]


def test_the_audit_cronjob_service_account_can_do_exactly_its_job(
    populated: ControlPlane, tmp_path: Path
) -> None:
    """The shipped CronJob and its RBAC: the audit runs as its ServiceAccount without a 403."""
    docs = [d for d in yaml.safe_load_all((BASE / "audit-cronjob.yaml").read_text()) if d]
    # Its ClusterRole is generated from the policy set, next to the webhooks.
    docs += [
        d
        for d in yaml.safe_load_all((BASE / "generated.yaml").read_text())
        if d and d["metadata"]["name"] == "fluxwarden-audit"
    ]
    ensure_namespaces(populated, "fluxwarden-system")
    populated.kubectl("apply", "-n", "fluxwarden-system", "-f", "-", input=yaml.safe_dump_all(docs))
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:5] == ["audit", "--cluster", "-A", "--report", "--fail-on=none"]
    token = populated.kubectl(
        "create", "token", "fluxwarden-audit", "-n", "fluxwarden-system"
    ).stdout.strip()
    admin = yaml.safe_load(populated.kubeconfig_path.read_text())
    admin["users"] = [{"name": "audit", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "audit"
    kubeconfig = tmp_path / "audit-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin))
    code, output = audit(populated, "-A", "--report", "--fail-on", "none", kubeconfig=kubeconfig)
    assert code == 0
    assert not [p for p in output["problems"] if p["error"]]
    assert counts_by_namespace(output["findings"])["audit-c"] == EXPECTED["audit-c"]
    denied = populated.kubectl("--kubeconfig", str(kubeconfig), "get", "secrets", "-A", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr
