"""Rancher Fleet's pods and Rancher's helm-operation pods: give them tolerations.

On clusters where every node is tainted these pods did not get the chart's tolerations and never
schedule (rancher/fleet#3180). Tolerations are merged in, never removed, never duplicated.

Covered (names and labels as rancher/fleet writes them):
- the cleanup Job `fleet-cleanup-clusterregistrations` and CronJob `fleet-cleanup-gitrepo-jobs`
  (charts/fleet/templates, pod label `app: fleet-job`), and `helm-operation-*` pods;
- the `fleet-agent` Deployment, which fleet-controller writes into the agent namespace
  (`cattle-fleet-system` downstream, `cattle-fleet-local-system` for the local cluster):
  internal/cmd/controller/agentmanagement/agent/manifest.go, `agentApp`;
- gitjob's Job per GitRepo, created in the GitRepo's own namespace and labelled
  `fleet.cattle.io/gitrepo-generation` (internal/cmd/controller/gitops/reconciler/gitjob.go,
  `newGitJob`; the label constant is in gitjob_controller.go). gitjob copies fleet-controller's
  tolerations into it, but not the ones configured here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...match import Match, ResourceMatch, cel_string
from ...model import JsonObject, Lookups, LookupUnavailable, Request, Target
from ...resources import CRONJOBS, DEPLOYMENTS, JOBS, PODS
from ..base import Native, Params, Policy, Read, Report, dig

DEFAULT_FLEET_NAMESPACE = "cattle-fleet-system"
# gitjob labels every Job it creates for a GitRepo with the GitRepo's generation.
GITJOB_LABEL = "fleet.cattle.io/gitrepo-generation"


class Toleration(BaseModel):
    """A core/v1 Toleration, validated so a typo in the policy set fails at load time."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    def as_object(self) -> JsonObject:
        return self.model_dump(by_alias=True, exclude_none=True)


class FleetParams(Params):
    namespaces: list[str] = Field(
        default_factory=lambda: [DEFAULT_FLEET_NAMESPACE, "cattle-system"]
    )
    names: list[str] = Field(
        default_factory=lambda: ["fleet-cleanup-clusterregistrations", "fleet-cleanup-gitrepo-jobs"]
    )
    name_prefixes: list[str] = Field(
        default_factory=lambda: ["helm-operation-"], alias="namePrefixes"
    )
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app": "fleet-job"}, alias="podLabels"
    )
    agent_deployments: list[str] = Field(
        default_factory=lambda: ["fleet-agent"], alias="agentDeployments"
    )
    agent_namespaces: list[str] = Field(
        default_factory=lambda: [DEFAULT_FLEET_NAMESPACE, "cattle-fleet-local-system"],
        alias="agentNamespaces",
    )
    git_jobs: bool = Field(default=True, alias="gitJobs")
    git_job_namespaces: list[str] = Field(
        default_factory=list,
        alias="gitJobNamespaces",
        description="where GitRepos live (their Jobs run there); empty: any namespace",
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    inherit_from_deployment: str = Field(
        default="fleet-controller",
        alias="inheritFromDeployment",
        description='"name" (in cattle-fleet-system) or "namespace/name"; "" turns it off.',
    )


def pod_template(obj: JsonObject, kind: str) -> tuple[Any, Any]:
    """(pod metadata, pod spec) wherever this kind keeps them; CronJob nests under jobTemplate."""
    if kind == "Pod":
        return obj.get("metadata"), obj.get("spec")
    template = dig(obj, "spec", "jobTemplate", "spec", "template") if kind == "CronJob" else None
    if kind in ("Job", "Deployment"):
        template = dig(obj, "spec", "template")
    if not isinstance(template, dict):
        return None, None
    return template.get("metadata"), template.get("spec")


def covers(existing: Any, wanted: JsonObject) -> bool:
    """Whether the `existing` toleration already tolerates every taint `wanted` tolerates."""
    if not isinstance(existing, dict):
        return False
    if existing.get("effect") and existing.get("effect") != wanted.get("effect"):
        return False
    if (existing.get("operator") or "Equal") == "Exists":
        key_ok = not existing.get("key") or existing.get("key") == wanted.get("key")
    else:
        key_ok = (
            (wanted.get("operator") or "Equal") == "Equal"
            and existing.get("key") == wanted.get("key")
            and (existing.get("value") or "") == (wanted.get("value") or "")
        )
    seconds, wanted_seconds = existing.get("tolerationSeconds"), wanted.get("tolerationSeconds")
    lasts = seconds is None or (wanted_seconds is not None and seconds >= wanted_seconds)
    return key_ok and lasts


class FleetJobTolerations(Policy[FleetParams]):
    name: ClassVar[str] = "fleet-job-tolerations"
    sources: ClassVar[tuple[str, ...]] = ("https://github.com/rancher/fleet/issues/3180",)
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = (
        "untolerated pods never schedule on fully tainted nodes (rancher/fleet#3180)"
    )
    summary: ClassVar[str] = (
        "Fleet cleanup jobs, fleet-agent, gitjob's GitRepo Jobs and Rancher helm-operation pods "
        "lack tolerations and never schedule on fully tainted clusters (rancher/fleet#3180): "
        "add the configured tolerations"
    )
    params_model = FleetParams

    def scope(self, params: FleetParams) -> tuple[Match, ...]:
        matches = [
            Match(
                resources=tuple(ResourceMatch(kind) for kind in (JOBS, CRONJOBS, PODS)),
                namespaces=frozenset(params.namespaces),
                names=frozenset(params.names),
                name_prefixes=tuple(params.name_prefixes),
                pod_labels=tuple(sorted(params.pod_labels.items())),
            )
        ]
        if params.agent_deployments:
            matches.append(
                Match(
                    resources=(ResourceMatch(DEPLOYMENTS),),
                    namespaces=frozenset(params.agent_namespaces),
                    names=frozenset(params.agent_deployments),
                )
            )
        if params.git_jobs:
            labels = "object.metadata.labels"
            matches.append(
                Match(
                    resources=(ResourceMatch(JOBS),),
                    namespaces=frozenset(params.git_job_namespaces),
                    condition=f"has({labels}) && {cel_string(GITJOB_LABEL)} in {labels}",
                )
            )
        return tuple(matches)

    def applies_to(self, target: Target, obj: JsonObject, params: FleetParams) -> bool:
        """The gitjob match covers any Job of its namespaces: only those gitjob labelled."""
        named = self.scope(params)[0]
        if named.matches(target, obj):
            return True
        if target.kind == "Deployment":
            return True  # the agent match: its names and namespaces say it all
        labels = dig(obj, "metadata", "labels")
        return params.git_jobs and isinstance(labels, dict) and GITJOB_LABEL in labels

    def reads(self, params: FleetParams) -> tuple[Read, ...]:
        if not params.inherit_from_deployment:
            return ()
        name = params.inherit_from_deployment.rpartition("/")[2]
        return (Read(DEPLOYMENTS, frozenset({name})),)

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: FleetParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        wanted = [t.as_object() for t in params.tolerations]
        if params.inherit_from_deployment:
            namespace, _, name = params.inherit_from_deployment.rpartition("/")
            namespace = namespace or DEFAULT_FLEET_NAMESPACE
            try:
                deployment = lookups.deployment(namespace, name)
            except LookupUnavailable as error:
                report.advise(
                    f"could not read tolerations of Deployment {namespace}/{name}: {error}"
                )
                deployment = None
            inherited = dig(deployment, "spec", "template", "spec", "tolerations")
            wanted.extend(t for t in inherited or [] if isinstance(t, dict))
        if not wanted:
            return
        kind = request.target.kind
        _, pod_spec = pod_template(obj, kind)
        if not isinstance(pod_spec, dict):
            if kind != "Pod":
                report.advise("no pod template found; tolerations not checked")
            return
        current = pod_spec.get("tolerations")
        existing = list(current) if isinstance(current, list) else []
        added: list[JsonObject] = []
        for toleration in wanted:
            if not any(covers(t, toleration) for t in (*existing, *added)):
                added.append(toleration)
        if not added:
            return
        if kind == "Job" and request.operation == "UPDATE":
            # A started Job's pod template is immutable: patching it would fail the update.
            report.advise(
                f"missing {len(added)} toleration(s) ({', '.join(_describe(t) for t in added)}); "
                "a Job's pod template cannot change after creation: recreate it to add them"
            )
            return
        pod_spec["tolerations"] = existing + added
        path = "spec.tolerations" if kind == "Pod" else "pod template tolerations"
        report.changes.append(
            f"set {path}: +{len(added)} ({', '.join(_describe(t) for t in added)})"
        )

    def native(self, params: FleetParams) -> Native:
        # The CEL lives in its own module (it imports this one): one method here.
        from .native import native_static

        if params.inherit_from_deployment or not params.tolerations:
            return Native(
                covers=(),
                webhook=self.scope(params),
                keeps=(
                    "everything: the tolerations inherited from the Deployment "
                    f"{params.inherit_from_deployment or '(none)'} are a lookup"
                    if params.inherit_from_deployment
                    else "nothing to add: no tolerations configured"
                ),
            )
        return native_static(self.scope(params), [t.as_object() for t in params.tolerations])


def _describe(toleration: JsonObject) -> str:
    key = toleration.get("key") or "*"
    operator = toleration.get("operator") or "Equal"
    value = f"={toleration.get('value', '')}" if operator == "Equal" else " Exists"
    effect = toleration.get("effect") or "all effects"
    return f"{key}{value}:{effect}"
