"""Engine behaviour that is not tied to one policy: fail-open, limits, exclusions, purity."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, ClassVar, Literal

from tests.conftest import IRC_DEPLOYMENT
from webhook.engine import NoLookups, PolicySet, Request, evaluate, request_for
from webhook.engine.match import Match, ResourceMatch
from webhook.engine.policies import Params, Policy, Report
from webhook.engine.policyset import ConfiguredPolicy
from webhook.engine.resources import DEPLOYMENTS


class _Exploding(Policy[Params]):
    name: ClassVar[str] = "exploding"
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    summary: ClassVar[str] = "raises"
    params_model = Params

    def scope(self, params: Params) -> tuple[Match, ...]:
        return (Match(resources=(ResourceMatch(DEPLOYMENTS),)),)

    def check(self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report) -> None:
        obj["spec"]["replicas"] = 99  # mutates its copy, then fails: the mutation must not leak
        raise KeyError("boom")


class _Chatty(_Exploding):
    name: ClassVar[str] = "chatty"

    def check(self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report) -> None:
        for index in range(100):
            report.advise(f"finding {index} " + "x" * 400)


def _with_policy(policy_set: PolicySet, policy: Policy[Any]) -> PolicySet:
    extra = ConfiguredPolicy.of(policy, mode="enforce", params=Params())
    return replace(policy_set, policies=(extra, *policy_set.policies))


def _request(obj: dict[str, Any], **kwargs: Any) -> Request:
    return request_for(obj, **kwargs)


def test_a_policy_that_raises_fails_open_and_others_still_run(shipped_policies: PolicySet) -> None:
    policy_set = _with_policy(shipped_policies, _Exploding())
    decision = evaluate(
        IRC_DEPLOYMENT, request=_request(IRC_DEPLOYMENT), policy_set=policy_set, lookups=NoLookups()
    )
    assert decision.allowed
    first, second = decision.results
    assert (first.policy, first.result) == ("exploding", "error")
    assert "KeyError" in first.messages[0]
    assert any(w.startswith("fluxwarden: exploding: policy error") for w in decision.warnings)
    assert (second.policy, second.action) == ("irc-single-replica", "mutated")
    assert {"op": "replace", "path": "/spec/replicas", "value": 1} in decision.patch


def test_warnings_respect_api_server_limits(shipped_policies: PolicySet) -> None:
    policy_set = _with_policy(shipped_policies, _Chatty())
    decision = evaluate(
        IRC_DEPLOYMENT, request=_request(IRC_DEPLOYMENT), policy_set=policy_set, lookups=NoLookups()
    )
    assert all(len(w) <= 256 and "\n" not in w for w in decision.warnings)
    assert sum(len(w.encode()) for w in decision.warnings) <= 4096
    assert decision.warnings[-1].endswith("more finding(s) in the audit annotations")


def test_input_object_is_never_modified(shipped_policies: PolicySet) -> None:
    before = copy.deepcopy(IRC_DEPLOYMENT)
    decision = evaluate(
        IRC_DEPLOYMENT,
        request=_request(IRC_DEPLOYMENT),
        policy_set=shipped_policies,
        lookups=NoLookups(),
    )
    assert decision.patch
    assert before == IRC_DEPLOYMENT


def test_excluded_namespace_is_untouched(shipped_policies: PolicySet) -> None:
    policy_set = replace(shipped_policies, excluded_namespaces=frozenset({"flux-system"}))
    decision = evaluate(
        IRC_DEPLOYMENT, request=_request(IRC_DEPLOYMENT), policy_set=policy_set, lookups=NoLookups()
    )
    assert decision.allowed
    assert not decision.patch
    assert not decision.results


def test_dry_run_gets_the_same_decision(shipped_policies: PolicySet) -> None:
    real = evaluate(
        IRC_DEPLOYMENT,
        request=_request(IRC_DEPLOYMENT),
        policy_set=shipped_policies,
        lookups=NoLookups(),
    )
    dry = evaluate(
        IRC_DEPLOYMENT,
        request=_request(IRC_DEPLOYMENT, dry_run=True),
        policy_set=shipped_policies,
        lookups=NoLookups(),
    )
    assert real == dry


def test_webhook_split(shipped_policies: PolicySet) -> None:
    cycle = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {"dependsOn": [{"name": "apps"}], "interval": "10m"},
    }
    args: dict[str, Any] = {
        "request": _request(cycle),
        "policy_set": shipped_policies,
        "lookups": NoLookups(),
    }
    assert evaluate(cycle, webhook="mutate", **args).allowed
    denied = evaluate(cycle, webhook="validate", **args)
    assert not denied.allowed
    assert denied.deny_reasons == [
        "kustomization-dependencies: Kustomization flux-system/apps depends on itself and can never become ready"
    ]
    assert evaluate(cycle, webhook="all", **args) == denied


def test_the_listing_plan_follows_the_declared_scopes(shipped_policies: PolicySet) -> None:
    from webhook.engine.scope import listing_plan

    plan, notices = listing_plan(shipped_policies, None)
    where = {listing.kind.resource: list(listing.namespaces) for listing in plan}
    expected = {
        "deployments.apps": ["cattle-fleet-local-system", "cattle-fleet-system", "flux-system"],
        "horizontalpodautoscalers.autoscaling": ["flux-system"],
        "jobs.batch": [None],  # gitjob's Jobs live in the GitRepos' namespaces
        "cronjobs.batch": ["cattle-fleet-system", "cattle-system"],
        "pods": ["cattle-fleet-system", "cattle-system"],
        "helmreleases.helm.toolkit.fluxcd.io": [None],
        "kustomizations.kustomize.toolkit.fluxcd.io": [None],
        # flux-intervals, flux-api-versions and flux-source-trust: every Flux kind, anywhere
        **{
            f"{plural}.{group}.toolkit.fluxcd.io": [None]
            for group, plurals in {
                "source": ["gitrepositories", "ocirepositories", "helmrepositories"],
                "image": ["imagerepositories", "imagepolicies", "imageupdateautomations"],
                "notification": ["alerts", "providers", "receivers"],
            }.items()
            for plural in plurals
        },
        "helmcharts.source.toolkit.fluxcd.io": [None],
        "buckets.source.toolkit.fluxcd.io": [None],
        # kustomization-safety: a Namespace a Kustomization's targetNamespace makes its own
        "namespaces": [None],
    }
    assert where == expected
    assert notices == []
    only, _ = listing_plan(shipped_policies, "cattle-system")
    # a namespace's audit lists no cluster-scoped kind (the API has no namespaced Namespaces)
    anywhere = {r for r, where in expected.items() if where == [None]} - {"namespaces"}
    assert {listing.kind.resource for listing in only} == {
        "cronjobs.batch",
        "pods",
        *anywhere,
    }


class _BrokenScope(_Exploding):
    name: ClassVar[str] = "broken-scope"

    def applies_to(self, target: Any, obj: Any, params: Params) -> bool:
        raise AttributeError("'str' object has no attribute 'get'")


def test_a_policy_whose_scope_check_raises_also_fails_open(shipped_policies: PolicySet) -> None:
    policy_set = _with_policy(shipped_policies, _BrokenScope())
    decision = evaluate(
        IRC_DEPLOYMENT, request=_request(IRC_DEPLOYMENT), policy_set=policy_set, lookups=NoLookups()
    )
    assert decision.allowed
    assert (decision.results[0].policy, decision.results[0].result) == ("broken-scope", "error")
    assert decision.results[1].action == "mutated"


def test_policy_errors_stay_silent_in_audit_mode(shipped_policies: PolicySet) -> None:
    policy_set = _with_policy(shipped_policies, _Exploding())
    decision = evaluate(
        IRC_DEPLOYMENT,
        request=_request(IRC_DEPLOYMENT),
        policy_set=policy_set.with_ceiling("audit"),
        lookups=NoLookups(),
    )
    assert decision.warnings == []
    assert decision.audit_annotations["exploding"].startswith("error: policy error")


def test_absurdly_deep_objects_fail_open(shipped_policies: PolicySet) -> None:
    values: dict[str, Any] = {}
    for _ in range(3000):
        values = {"v": values}
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "deep", "namespace": "apps"},
        "spec": {"interval": "5m", "values": values},
    }
    decision = evaluate(
        release, request=_request(release), policy_set=shipped_policies, lookups=NoLookups()
    )
    assert decision.allowed
    assert decision.patch == []
    assert any(r.result == "error" for r in decision.results)


def test_objects_with_odd_shapes_never_raise(shipped_policies: PolicySet) -> None:
    for metadata in ("x", [1], None, 7):
        obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": "x"}
        request = request_for(IRC_DEPLOYMENT)
        decision = evaluate(obj, request=request, policy_set=shipped_policies, lookups=NoLookups())
        assert decision.allowed
