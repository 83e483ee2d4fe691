"""The native admission policies are generated from the same policy set as the webhooks: the
committed overlay is the generator's output, modes map to validation actions, the exempt
annotation and excluded namespaces are kept, and hybrid webhooks cover exactly the rest."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import yaml

from tests.e2e.harness import REPO
from webhook.engine import JsonObject, Lookups, PolicySet, Request, parse_mode
from webhook.engine.match import Match, ResourceMatch
from webhook.engine.policies import Params, Policy, Report
from webhook.engine.policies.base import Native, NativeFinding
from webhook.engine.policyset import ConfiguredPolicy
from webhook.engine.resources import ResourceKind
from webhook.manifests import generate as generate_webhooks
from webhook.native import (
    OVERLAY_PATCH,
    OVERLAY_RESOURCES,
    generate,
    overlay_files,
    split,
    webhook_scope,
)

OVERLAY = REPO / "manifests" / "overlays" / "native"
CONFIGMAPS = ResourceKind("", ("v1",), "configmaps", "ConfigMap")


def _by_name(objects: list[JsonObject]) -> dict[str, JsonObject]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_committed_overlay_is_what_the_shipped_policy_set_generates(
    shipped_policies: PolicySet,
) -> None:
    files = overlay_files(shipped_policies)
    for name in (OVERLAY_RESOURCES, OVERLAY_PATCH):
        assert (OVERLAY / name).read_text() == files[name], (
            f"manifests/overlays/native/{name} is stale: run `make generate` and commit it"
        )


def test_enforce_mutates_and_warns_warn_and_audit_only_report(shipped_policies: PolicySet) -> None:
    enforce = _by_name(generate(shipped_policies))
    mutation = enforce["MutatingAdmissionPolicy/fluxwarden-irc-single-replica"]
    assert mutation["spec"]["mutations"][0]["patchType"] == "JSONPatch"
    assert enforce["ValidatingAdmissionPolicyBinding/fluxwarden-irc-single-replica"]["spec"][
        "validationActions"
    ] == ["Warn"]
    # helmrelease-interval is at warn in the shipped set: no mutation, Warn only.
    assert "MutatingAdmissionPolicy/fluxwarden-helmrelease-interval" not in enforce
    for ceiling, action in (("warn", "Warn"), ("audit", "Audit")):
        objects = _by_name(generate(shipped_policies.with_ceiling(parse_mode(ceiling))))
        assert not any(k.startswith("MutatingAdmissionPolicy/") for k in objects), ceiling
        binding = objects["ValidatingAdmissionPolicyBinding/fluxwarden-irc-single-replica"]
        assert binding["spec"]["validationActions"] == [action]
        policy = objects["ValidatingAdmissionPolicy/fluxwarden-irc-single-replica"]
        assert "would " in str(policy["spec"]["validations"])
        assert policy["spec"]["auditAnnotations"][0]["key"] == "finding"
    assert generate(shipped_policies.with_ceiling(parse_mode("off"))) == []


def test_exempt_annotation_and_excluded_namespaces_are_kept(shipped_policies: PolicySet) -> None:
    excluded = replace(
        shipped_policies, excluded_namespaces=frozenset({"fluxwarden-system", "legacy"})
    )
    drift = _by_name(generate(excluded))[
        "MutatingAdmissionPolicy/fluxwarden-helmrelease-drift-detection"
    ]
    conditions = {c["name"]: c["expression"] for c in drift["spec"]["matchConditions"]}
    assert "'fluxwarden.io/exempt'" in conditions["not-exempt"]
    assert "'helmrelease-drift-detection'" in conditions["not-exempt"]
    assert drift["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["fluxwarden-system", "legacy"],
        }
    ]


def test_what_needs_lookups_stays_in_the_webhook(shipped_policies: PolicySet) -> None:
    parts = {p.name: p for p in split(shipped_policies, hybrid=False)}
    assert not parts["kustomization-dependencies"].native.covers
    assert not parts["fleet-job-tolerations"].native.covers  # inherits fleet-controller's
    assert "lookup" in parts["fleet-job-tolerations"].native.keeps
    irc = parts["irc-single-replica"].native
    assert [r.subresources for m in irc.webhook for r in m.resources] == [("scale",), ("",)]


def _covered(scopes: dict[str, tuple[Match, ...]], policy: str) -> set[tuple[str, str]]:
    return {(r.kind.plural, s) for m in scopes[policy] for r in m.resources for s in r.subresources}


def test_hybrid_webhooks_cover_exactly_what_native_objects_do_not(
    shipped_policies: PolicySet,
) -> None:
    hybrid = webhook_scope(shipped_policies, "hybrid")
    for part in split(shipped_policies, hybrid=True):
        native = {
            (r.kind.plural, s)
            for m in part.native.covers
            for r in m.resources
            for s in r.subresources
        }
        kept = _covered(hybrid, part.name)
        declared = _covered({part.name: part.configured.scope}, part.name)
        assert not native & kept, part.name  # nothing enforced twice
        assert native | kept == declared, part.name  # nothing lost
    # Negative control: the webhook-only install covers what the native objects cover.
    everything = webhook_scope(shipped_policies, "webhook")
    assert _covered(everything, "source-controller-storage") == {("deployments", "")}
    assert _covered(hybrid, "source-controller-storage") == set()


def test_hybrid_keeps_a_policy_whose_objects_reach_the_same_webhook_anyway(
    shipped_policies: PolicySet,
) -> None:
    """The validating webhook receives HelmReleases for the dependsOn check, and fluxwarden
    evaluates every validating policy that matches: the interval check stays there."""
    native = {p.name: p for p in split(shipped_policies, hybrid=False)}
    hybrid = {p.name: p for p in split(shipped_policies, hybrid=True)}
    assert native["helmrelease-interval"].native.covers
    assert not hybrid["helmrelease-interval"].native.covers
    assert "kustomization-dependencies" in hybrid["helmrelease-interval"].native.keeps
    hooks = [
        h["name"]
        for o in generate_webhooks(
            shipped_policies, scopes=webhook_scope(shipped_policies, "hybrid")
        )
        if o["kind"].endswith("WebhookConfiguration")
        for h in o["webhooks"]
    ]
    assert "helmreleases.validate.fluxwarden.io" in hooks
    # helmrelease-remediation reads helm-controller's feature gates (a lookup): HelmReleases
    # reach the mutating webhook too, and drift detection stays there with it.
    assert "helmreleases.mutate.fluxwarden.io" in hooks
    assert "helmrelease-remediation" in hybrid["helmrelease-drift-detection"].native.keeps


class _DenyingPolicy(Policy[Params]):
    """A policy with a violation CEL can decide: enforce becomes a Deny policy."""

    name: ClassVar[str] = "no-bad-configmaps"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = "denies ConfigMaps named bad"
    params_model = Params

    def scope(self, params: Params) -> tuple[Match, ...]:
        return (Match(resources=(ResourceMatch(CONFIGMAPS),)),)

    def check(
        self, obj: JsonObject, *, request: Request, params: Params, lookups: Lookups, report: Report
    ) -> None:
        if obj.get("metadata", {}).get("name") == "bad":
            report.violation("bad name")

    def native(self, params: Params) -> Native:
        return Native(
            covers=self.scope(params),
            findings=(NativeFinding("violation", "object.metadata.name == 'bad'", "'bad name'"),),
        )


def test_violations_deny_when_enforced_and_warn_would_deny_otherwise(
    shipped_policies: PolicySet,
) -> None:
    extra = ConfiguredPolicy.of(_DenyingPolicy(), mode="enforce", params=Params())
    with_extra = replace(shipped_policies, policies=(extra,))
    enforce = _by_name(generate(with_extra))
    assert enforce["ValidatingAdmissionPolicyBinding/fluxwarden-no-bad-configmaps-deny"]["spec"][
        "validationActions"
    ] == ["Deny"]
    warn = _by_name(generate(with_extra.with_ceiling(parse_mode("warn"))))
    policy: Any = warn["ValidatingAdmissionPolicy/fluxwarden-no-bad-configmaps"]
    assert "'would deny: '" in policy["spec"]["validations"][0]["messageExpression"]


def test_the_cli_prints_native_and_hybrid(capsys: Any) -> None:
    from webhook.cli import main

    assert main(["manifests", "--native"]) == 0
    native = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert {d["kind"] for d in native} == {
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert main(["manifests", "--hybrid"]) == 0
    kinds = {d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out) if d}
    assert {"MutatingWebhookConfiguration", "ClusterRole", "MutatingAdmissionPolicy"} <= kinds


def test_each_generated_header_names_the_command_make_generate_runs_for_it() -> None:
    """The regen command in a generated file's header is the Makefile's line that writes it."""
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ngenerate:", 1)[1].split("\n\n", 1)[0]
    commands = [
        line.strip().removeprefix("$(BIN)/").replace("policies/flux-best-practices.yaml", "FILE")
        for line in recipe.splitlines()[1:]
        if "fluxwarden manifests" in line
    ]
    files = {
        REPO / "manifests" / "base" / "generated.yaml": commands[0],
        OVERLAY / OVERLAY_RESOURCES: commands[1],
        OVERLAY / OVERLAY_PATCH: commands[1],
    }
    assert len(commands) == 2, commands
    for path, command in files.items():
        second = path.read_text().splitlines()[1]
        assert second.endswith(f"(or `{command}`)."), (path, second, command)


def _tolerations_grid() -> list[JsonObject]:
    grid: list[JsonObject] = []
    # Equal with an empty key is invalid (the API server refuses it), so no "" key.
    for key in (None, "a", "b"):
        for operator in (None, "Exists"):
            for value in (None, "x"):
                for effect in (None, "NoSchedule", "NoExecute"):
                    for seconds in (None, 10, 20):
                        toleration: JsonObject = {}
                        for field, given in (
                            ("key", key),
                            ("operator", operator),
                            ("value", value),
                            ("effect", effect),
                            ("tolerationSeconds", seconds),
                        ):
                            if given is not None:
                                toleration[field] = given
                        grid.append(toleration)
    return grid


Covers = Any  # (existing, wanted) -> bool


def _merge_as_check_does(
    existing: list[JsonObject], wanted: list[JsonObject], covers: Covers
) -> list[JsonObject]:
    added: list[JsonObject] = []
    for toleration in wanted:
        if not any(covers(t, toleration) for t in (*existing, *added)):
            added.append(toleration)
    return added


def _merge_as_native_does(
    existing: list[JsonObject], wanted: list[JsonObject], covers: Covers
) -> list[JsonObject]:
    distinct: list[JsonObject] = []
    for toleration in wanted:
        if not any(covers(t, toleration) for t in distinct):
            distinct.append(toleration)
    return [w for w in distinct if not any(covers(e, w) for e in existing)]


def _merges_differ(covers: Covers, grid: list[JsonObject]) -> tuple[JsonObject, ...] | None:
    """An (existing, earlier wanted, later wanted) where the two merges differ, if any."""
    for first in grid:
        for second in (w for w in grid if covers(first, w)):
            for existing in grid:
                check = _merge_as_check_does([existing], [first, second], covers)
                native = _merge_as_native_does([existing], [first, second], covers)
                if check != native:
                    return existing, first, second
    return None


def test_fleet_covers_is_transitive_so_the_native_merge_adds_what_check_adds() -> None:
    """fleet_job_tolerations.native drops the wanted tolerations an earlier one covers; that
    gives check()'s answer exactly when `covers` is transitive (see the comment there)."""
    from webhook.engine.policies.fleet_job_tolerations import covers

    grid = _tolerations_grid()
    for a in grid:
        for b in (t for t in grid if covers(a, t)):
            for c in (t for t in grid if covers(b, t)):
                assert covers(a, c), (a, b, c)
    assert _merges_differ(covers, grid) is None

    def not_transitive(existing: Any, wanted: JsonObject) -> bool:
        # Negative control: effects compared only when both are set (NoSchedule covers an
        # unset effect, that covers NoExecute, NoSchedule does not cover NoExecute).
        one, other = existing.get("effect"), wanted.get("effect")
        return covers({**existing, "effect": ""}, {**wanted, "effect": ""}) and (
            not one or not other or one == other
        )

    assert _merges_differ(not_transitive, grid) is not None


def _hooks_matching(
    objects: list[JsonObject], *, group: str, resource: str, namespace: str
) -> list[str]:
    """The webhooks whose rules and namespaceSelector select an UPDATE of `resource` (with
    `/subresource`) in `namespace`: the ones whose matchConditions the API server evaluates."""
    found = []
    for config in objects:
        if not config["kind"].endswith("WebhookConfiguration"):
            continue
        for hook in config["webhooks"]:
            expressions = hook["namespaceSelector"]["matchExpressions"]
            inside = all((namespace in e["values"]) == (e["operator"] == "In") for e in expressions)
            ruled = any(
                group in r["apiGroups"]
                and resource in r["resources"]
                and "UPDATE" in r["operations"]
                for r in hook["rules"]
            )
            if inside and ruled:
                found.append(hook["name"])
    return found


def test_hybrid_webhook_rules_select_no_write_of_a_natively_covered_deployment(
    shipped_policies: PolicySet,
) -> None:
    """In hybrid mode the Flux controllers' Deployments (requeue-dependency, IRC, source-
    controller: all native) match no webhook rule, so the API server does not even evaluate a
    webhook's matchConditions for them; IRC's scale subresource still does (control), and so
    does every Deployment in the webhook-only install (control)."""
    hybrid = generate_webhooks(shipped_policies, scopes=webhook_scope(shipped_policies, "hybrid"))
    flux = {"group": "apps", "namespace": "flux-system"}
    assert _hooks_matching(hybrid, resource="deployments", **flux) == []
    assert _hooks_matching(hybrid, resource="deployments/scale", **flux) == [
        "deployments-scale.mutate.fluxwarden.io"
    ]
    assert _hooks_matching(
        hybrid, group="apps", resource="deployments", namespace="cattle-fleet-system"
    ) == ["deployments.mutate.fluxwarden.io"]
    webhook_only = generate_webhooks(shipped_policies)
    assert _hooks_matching(webhook_only, resource="deployments", **flux) == [
        "deployments.mutate.fluxwarden.io"
    ]
