"""Alerts for the failure modes behind the policies, as a `monitoring.coreos.com/v1` PrometheusRule
derived from the policy set (namespaces, names and thresholds follow its params), in the
kube-prometheus style: CamelCase alert names, `severity` label, `summary` / `description` /
`runbook_url` annotations, `job` selectors of kube-prometheus' scrape jobs.

What each rule reads, and from where:
- cAdvisor (`job="kubelet", metrics_path="/metrics/cadvisor"`): container_memory_working_set_bytes.
- kube-state-metrics (`job="kube-state-metrics"`): kube_pod_container_resource_limits,
  kube_pod_container_status_last_terminated_reason, kube_pod_container_status_restarts_total,
  kube_pod_status_phase, kube_pod_owner, kube_job_owner.
- emptyDir usage: the kubelet does not export it (kubernetes/kubernetes#69507); the rule reads
  `ephemeral_storage_container_volume_limit_percentage` of k8s-ephemeral-storage-metrics
  (jmcgrath207), which reports each emptyDir's use as a percentage of its sizeLimit. A claim's
  use comes from the kubelet's kubelet_volume_stats_* (PersistentVolumeClaims only).
- Flux: its controllers (v2.9) export only gotk_reconcile_duration_seconds; readiness comes from
  kube-state-metrics' custom resource state as `gotk_resource_info` (Flux's monitoring example).
  The dependency rule needs the Ready condition's reason there too:
  `reason: [status, conditions, "[type=Ready]", reason]` next to `ready:` in its labelsFromPath.
- the API server: apiserver_admission_webhook_fail_open_count (a webhook call that failed and
  was let through, failurePolicy Ignore).
- fluxwarden's own /metrics (webhook/server/metrics.py).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from .engine import OWN_NAMESPACE, JsonObject, PolicySet
from .engine.units import parse_duration

RUNBOOK = "https://github.com/fluxwarden/fluxwarden/blob/main/README.md#alerts"
KUBELET = 'job="kubelet", metrics_path="/metrics/cadvisor"'
KSM = 'job="kube-state-metrics"'
MEMORY_RATIO = 0.8  # of the container's limit: before the OOM kill that starts the tag rollback
STORAGE_PERCENT = 85  # of an emptyDir's sizeLimit (or a claim's capacity): eviction at 100
PENDING_FOR = "10m"
CERT_WARNING_DAYS = 10  # cert-manager renews the serving certificate 15 days before expiry
CERT_CRITICAL_DAYS = 3
MIN_DEPENDENCY_WAIT_MINUTES = 10

# Fallbacks when the policy set does not configure a policy (a reduced set still gets alerts).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "irc-single-replica": {
        "namespaces": ["flux-system"],
        "deployment": "image-reflector-controller",
        "container": "manager",
        "memory_limit": "2Gi",
    },
    "source-controller-storage": {
        "namespaces": ["flux-system"],
        "deployment": "source-controller",
        "container": "manager",
        "data_volume_claim": "",
    },
    "fleet-job-tolerations": {
        "namespaces": ["cattle-fleet-system", "cattle-system"],
        "names": ["fleet-cleanup-clusterregistrations", "fleet-cleanup-gitrepo-jobs"],
        "name_prefixes": ["helm-operation-"],
        "agent_deployments": ["fleet-agent"],
        "agent_namespaces": ["cattle-fleet-system", "cattle-fleet-local-system"],
        "git_jobs": True,
    },
    "kustomization-dependencies": {"max_depth": 5},
    "controller-requeue-dependency": {"interval": "30s"},
}


def _params(policy_set: PolicySet, policy: str) -> dict[str, Any]:
    configured = policy_set.configured(policy)
    if configured is None:
        return dict(_DEFAULTS[policy])
    return {**_DEFAULTS[policy], **configured.params.model_dump()}


def _regex(values: list[str]) -> str:
    """A PromQL regex alternation of literal values (dots and other metacharacters escaped)."""
    return "|".join(_escape(v) for v in sorted(values))


def _escape(value: str) -> str:
    special = r".^$*+?()[]{}|\\"
    return "".join(f"\\\\{c}" if c in special else c for c in value)


def _selector(label: str, values: list[str]) -> str:
    """`label=~"a|b"`, or "" when `values` is empty (the policy looks at any namespace)."""
    return f', {label}=~"{_regex(values)}"' if values else ""


class _Expr(str):
    """A PromQL expression, written as a YAML literal block so that it reads as written."""


def _literal(dumper: yaml.SafeDumper, value: _Expr) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


yaml.SafeDumper.add_representer(_Expr, _literal)


def _rule(
    alert: str,
    expr: str,
    *,
    severity: str,
    summary: str,
    description: str,
    duration: str = "",
) -> JsonObject:
    rule: JsonObject = {"alert": alert, "expr": _Expr(expr)}
    if duration:
        rule["for"] = duration
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": RUNBOOK,
    }
    return rule


def _flux_rules(policy_set: PolicySet) -> list[JsonObject]:
    irc = _params(policy_set, "irc-single-replica")
    where = _selector("namespace", irc["namespaces"])
    pod = f'pod=~"{_escape(irc["deployment"])}-.+", container="{irc["container"]}"'
    by = "sum by (namespace, pod, container)"
    rules = [
        _rule(
            "FluxImageReflectorMemoryNearLimit",
            f'{by} (container_memory_working_set_bytes{{{KUBELET}{where}, {pod}, image!=""}})\n'
            f'  / {by} (kube_pod_container_resource_limits{{{KSM}, resource="memory"{where}, '
            f"{pod}}})\n  > {MEMORY_RATIO}",
            duration="15m",
            severity="warning",
            summary="image-reflector-controller is close to its memory limit.",
            description=(
                "{{ $labels.namespace }}/{{ $labels.pod }} uses {{ $value | humanizePercentage }} "
                f"of its memory limit. An OOM kill hands leadership to a standby with an empty "
                f"tag database, which rolls image tags back (fluxcd/flux2#4984): raise the limit "
                f"(the policy set asks for at least {irc['memory_limit']})."
            ),
        ),
        _rule(
            "FluxImageReflectorOOMKilled",
            f'(kube_pod_container_status_last_terminated_reason{{{KSM}, reason="OOMKilled"'
            f"{where}, {pod}}} == 1)\nand on (namespace, pod, container)\n"
            f"(increase(kube_pod_container_status_restarts_total{{{KSM}{where}, {pod}}}[15m]) "
            "> 0)",
            severity="critical",
            summary="image-reflector-controller was OOM-killed.",
            description=(
                "{{ $labels.namespace }}/{{ $labels.pod }} restarted after an OOM kill: its "
                "image tags may have been rescanned and rolled back (fluxcd/flux2#4984). Check "
                "the ImagePolicies' latest images and raise the memory limit."
            ),
        ),
    ]
    storage = _params(policy_set, "source-controller-storage")
    s_where = _selector("pod_namespace", storage["namespaces"])
    s_pod = f'pod_name=~"{_escape(storage["deployment"])}-.+", container="{storage["container"]}"'
    rules.append(
        _rule(
            "FluxSourceControllerStorageNearLimit",
            "max by (pod_namespace, pod_name, mount_path) "
            f"(ephemeral_storage_container_volume_limit_percentage{{{s_pod}{s_where}, "
            f'mount_path=~"/tmp|/data"}})\n  > {STORAGE_PERCENT}',
            duration="5m",
            severity="warning",
            summary="source-controller's emptyDir is close to its sizeLimit.",
            description=(
                "{{ $labels.mount_path }} of {{ $labels.pod_namespace }}/{{ $labels.pod_name }} "
                "is {{ $value | humanize }}% full: at 100% the kubelet evicts the pod and every "
                "artifact is fetched again. Clean up old artifacts or put /data on a "
                "PersistentVolumeClaim (dataVolumeClaim)."
            ),
        )
    )
    if storage["data_volume_claim"]:
        claim = f'persistentvolumeclaim="{storage["data_volume_claim"]}"'
        c_where = _selector("namespace", storage["namespaces"])
        rules.append(
            _rule(
                "FluxSourceControllerVolumeFillingUp",
                f'kubelet_volume_stats_used_bytes{{job="kubelet"{c_where}, {claim}}}\n'
                f'  / kubelet_volume_stats_capacity_bytes{{job="kubelet"{c_where}, {claim}}}\n'
                f"  > {STORAGE_PERCENT / 100}",
                duration="5m",
                severity="warning",
                summary="source-controller's data volume is filling up.",
                description=(
                    "PersistentVolumeClaim {{ $labels.namespace }}/"
                    "{{ $labels.persistentvolumeclaim }} is {{ $value | humanizePercentage }} "
                    "full: artifacts stop being stored when it is full."
                ),
            )
        )
    rules.append(_dependency_rule(policy_set))
    return rules


def dependency_wait(policy_set: PolicySet) -> str:
    """How long a Kustomization may wait on its dependencies before it is alerted on: a chain
    as deep as the policy set allows (maxDepth), each hop waiting the configured
    --requeue-dependency plus a minute to reconcile, and never less than 10 minutes."""
    depth = int(_params(policy_set, "kustomization-dependencies")["max_depth"])
    requeue = parse_duration(str(_params(policy_set, "controller-requeue-dependency")["interval"]))
    minutes = math.ceil(depth * (requeue + 60) / 60)
    return f"{max(minutes, MIN_DEPENDENCY_WAIT_MINUTES)}m"


def _dependency_rule(policy_set: PolicySet) -> JsonObject:
    wait = dependency_wait(policy_set)
    return _rule(
        "FluxKustomizationDependencyNotReady",
        'max by (exported_namespace, name) (gotk_resource_info{customresource_kind="Kustomization", '
        'ready="False", reason="DependencyNotReady"})',
        duration=wait,
        severity="warning",
        summary="A Kustomization has waited on its dependencies too long.",
        description=(
            "Kustomization {{ $labels.exported_namespace }}/{{ $labels.name }} has been waiting "
            f"on its dependsOn for more than {wait} (a chain of the policy set's maxDepth, each "
            "hop a --requeue-dependency): a dependency is failing, or the chain is too deep."
        ),
    )


def _fleet_rules(policy_set: PolicySet) -> list[JsonObject]:
    fleet = _params(policy_set, "fleet-job-tolerations")
    pods = [f"{_escape(n)}-.+" for n in sorted(fleet["names"])]
    pods += [f"{_escape(p)}.+" for p in sorted(fleet["name_prefixes"])]
    pending = f'kube_pod_status_phase{{{KSM}, phase="Pending"'
    selectors = []
    if pods:
        ns = _selector("namespace", fleet["namespaces"])
        selectors.append(f'{pending}{ns}, pod=~"{"|".join(pods)}"}} == 1')
    if fleet["agent_deployments"]:
        agents = "|".join(f"{_escape(d)}-.+" for d in sorted(fleet["agent_deployments"]))
        ns = _selector("namespace", fleet["agent_namespaces"])
        selectors.append(f'{pending}{ns}, pod=~"{agents}"}} == 1')
    rules = []
    if selectors:
        rules.append(
            _rule(
                "FleetPodPending",
                "max by (namespace, pod) (\n  " + "\n  or ".join(selectors) + "\n)",
                duration=PENDING_FOR,
                severity="warning",
                summary="A Fleet job or agent pod has not been scheduled.",
                description=(
                    "{{ $labels.namespace }}/{{ $labels.pod }} has been Pending for more than "
                    f"{PENDING_FOR}: on fully tainted nodes it lacks tolerations "
                    "(rancher/fleet#3180). Check the pod's events and the policy's tolerations."
                ),
            )
        )
    if fleet["git_jobs"]:
        # gitjob's pods: owned by a Job that a GitRepo owns (its controller reference).
        git_jobs = (
            f'label_replace(kube_job_owner{{{KSM}, owner_kind="GitRepo"}}, '
            '"owner_name", "$1", "job_name", "(.+)")'
        )
        rules.append(
            _rule(
                "FleetGitJobPodPending",
                f"max by (namespace, pod) (\n  ({pending}}} == 1)\n  and on (namespace, pod)\n"
                f'  (kube_pod_owner{{{KSM}, owner_kind="Job"}}\n'
                f"    * on (namespace, owner_name) group_left () {git_jobs})\n)",
                duration=PENDING_FOR,
                severity="warning",
                summary="A Fleet GitRepo job pod has not been scheduled.",
                description=(
                    "{{ $labels.namespace }}/{{ $labels.pod }} (gitjob's job for a GitRepo) has "
                    f"been Pending for more than {PENDING_FOR}: the GitRepo is not deployed. "
                    "Check the pod's events and the policy's tolerations (rancher/fleet#3180)."
                ),
            )
        )
    return rules


def _fluxwarden_rules() -> list[JsonObject]:
    day = 24 * 3600
    expiry = "min(fluxwarden_certificate_expiry_timestamp_seconds) - time()"
    return [
        _rule(
            "FluxwardenWebhookFailingOpen",
            'sum by (name) (increase(apiserver_admission_webhook_fail_open_count{name=~".+\\\\.'
            'fluxwarden\\\\.io"}[10m])) > 0',
            severity="warning",
            summary="The API server let writes through without fluxwarden.",
            description=(
                "Calls to webhook {{ $labels.name }} failed and were allowed (failurePolicy "
                "Ignore): objects were stored without fluxwarden's fixes. Is fluxwarden up? The "
                "periodic audit reports what slipped through."
            ),
        ),
        _rule(
            "FluxwardenPolicyFailingOpen",
            'sum by (policy) (increase(fluxwarden_policy_results_total{result="error"}[10m])) > 0',
            severity="warning",
            summary="A fluxwarden policy raised and let requests through.",
            description=(
                "Policy {{ $labels.policy }} failed on {{ $value | humanize }} request(s) in 10 "
                "minutes and allowed them unchecked: see fluxwarden's decision log."
            ),
        ),
        _rule(
            "FluxwardenCertificateExpiringSoon",
            f"{expiry} < {CERT_WARNING_DAYS} * {day}",
            severity="warning",
            summary="fluxwarden's serving certificate has not been renewed.",
            description=(
                "It expires in {{ $value | humanizeDuration }}; cert-manager renews it 15 days "
                "before expiry. Check the Certificate fluxwarden-tls."
            ),
        ),
        _rule(
            "FluxwardenCertificateExpiringSoon",
            f"{expiry} < {CERT_CRITICAL_DAYS} * {day}",
            severity="critical",
            summary="fluxwarden's serving certificate is about to expire.",
            description=(
                "It expires in {{ $value | humanizeDuration }}: then the API server cannot call "
                "the webhook and every write skips fluxwarden."
            ),
        ),
        _rule(
            "FluxwardenPolicyReloadFailed",
            "increase(fluxwarden_policy_load_errors_total[1h]) > 0",
            severity="warning",
            summary="fluxwarden rejected a new policy set.",
            description=(
                "The mounted policy set failed to load; the last good set stays in force. "
                "/readyz shows lastReloadError."
            ),
        ),
    ]


def prometheus_rule(policy_set: PolicySet, *, namespace: str = OWN_NAMESPACE) -> JsonObject:
    """The PrometheusRule for `policy_set`, in fluxwarden's namespace."""
    labels = {"prometheus": "k8s", "role": "alert-rules"}  # what kube-prometheus selects
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fluxwarden", "namespace": namespace, "labels": labels},
        "spec": {
            "groups": [
                {"name": "fluxwarden-flux", "rules": _flux_rules(policy_set)},
                {"name": "fluxwarden-fleet", "rules": _fleet_rules(policy_set)},
                {"name": "fluxwarden", "rules": _fluxwarden_rules()},
            ]
        },
    }


def render(policy_set: PolicySet, *, namespace: str = OWN_NAMESPACE) -> str:
    header = (
        "# DO NOT EDIT: generated by `fluxwarden alerts` from the policy set "
        f"({policy_set.name}).\n"
        "# Changed the policy set? `fluxwarden alerts --policies FILE > prometheusrule.yaml`.\n"
    )
    rule = prometheus_rule(policy_set, namespace=namespace)
    return header + yaml.safe_dump(rule, sort_keys=False, width=100)
