"""Loading the policy set: errors name the file, the policy and the field; modes combine."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from webhook.cli import SHIPPED_POLICIES
from webhook.engine import PolicySet, PolicySetError, parse_mode, parse_policy_set
from webhook.engine.policies import ALL_POLICIES
from webhook.engine.policies.flux_source_trust import SourceTrustParams

SHIPPED = yaml.safe_load(SHIPPED_POLICIES.read_text())


def _with(policy: str, **changes: object) -> str:
    raw = yaml.safe_load(SHIPPED_POLICIES.read_text())
    for entry in raw["spec"]["policies"]:
        if entry["name"] == policy:
            entry.update(changes)
    return yaml.safe_dump(raw)


def test_every_registered_policy_ships_in_the_default_set_in_registry_order(
    shipped_policies: PolicySet,
) -> None:
    """Derived from the registry: adding a policy to ALL_POLICIES and to the default set is all
    it takes (the profiles beyond the default, policies/*.yaml, may list others)."""
    default = [p.policy.name for p in shipped_policies.policies]
    registered = list(ALL_POLICIES)
    profiles = {
        p.policy.name
        for path in SHIPPED_POLICIES.parent.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for p in parse_policy_set(path.read_text(), source=path.name).policies
    }
    assert profiles == set(registered), "a registered policy is in no shipped profile"
    assert default == [name for name in registered if name in default]
    # The seed policies stay in the default set.
    assert set(default) >= {
        "irc-single-replica",
        "helmrelease-drift-detection",
        "fleet-job-tolerations",
        "helmrelease-interval",
        "source-controller-storage",
        "controller-requeue-dependency",
        "kustomization-dependencies",
    }


def test_every_policy_cites_its_sources() -> None:
    uncited = {
        name
        for name, policy in ALL_POLICIES.items()
        if not all(url.startswith("https://") for url in policy.sources) or not policy.sources
    }
    # These two are being changed on another branch; their sources are added there.
    assert uncited <= {"controller-requeue-dependency", "source-controller-storage"}


@pytest.mark.parametrize(
    ("policy", "params", "fragment"),
    [
        ("irc-single-replica", {"memoryLimit": "lots"}, "field memoryLimit"),
        ("irc-single-replica", {"replicas": 0}, "field replicas"),
        ("irc-single-replica", {"replica": 1}, "field replica: Extra inputs are not permitted"),
        ("helmrelease-drift-detection", {"driftMode": "on"}, "field driftMode"),
        (
            "fleet-job-tolerations",
            {"tolerations": [{"effect": "NoSchedul"}]},
            "field tolerations.0.effect",
        ),
        (
            "helmrelease-interval",
            {"minInterval": "2h", "maxInterval": "1h"},
            "minInterval must not be greater",
        ),
        ("controller-requeue-dependency", {"interval": "5 seconds"}, "field interval"),
        ("helmrelease-remediation", {"setDefault": "Retry"}, "field setDefault"),
        ("helmrelease-remediation", {"retries": 0}, "field retries"),
        ("flux-intervals", {"kinds": ["HelmReleases"]}, "field kinds.0"),
        ("flux-intervals", {"minInterval": "2h", "maxInterval": "1h"}, "minInterval must not"),
        ("flux-api-versions", {"fluxVersion": "2.5"}, "field fluxVersion"),
        ("flux-source-trust", {"allowedUrls": {"GitRepo": []}}, "field allowedUrls.GitRepo"),
    ],
)
def test_bad_params_name_file_policy_and_field(
    policy: str, params: dict[str, object], fragment: str
) -> None:
    with pytest.raises(PolicySetError) as error:
        parse_policy_set(_with(policy, params=params), source="set.yaml")
    message = str(error.value)
    assert message.startswith(f"set.yaml: policy {policy}: ")
    assert fragment in message


def test_unknown_policy_and_duplicates_are_errors() -> None:
    raw = yaml.safe_load(SHIPPED_POLICIES.read_text())
    raw["spec"]["policies"].append({"name": "no-such-policy"})
    with pytest.raises(PolicySetError, match="policy no-such-policy: unknown policy"):
        parse_policy_set(yaml.safe_dump(raw), source="x.yaml")
    raw["spec"]["policies"][-1] = {"name": "irc-single-replica"}
    with pytest.raises(PolicySetError, match="policy irc-single-replica: listed twice"):
        parse_policy_set(yaml.safe_dump(raw), source="x.yaml")


def test_bad_mode_names_the_policy() -> None:
    with pytest.raises(PolicySetError, match=r"x.yaml: policy helmrelease-interval: field .*mode"):
        parse_policy_set(_with("helmrelease-interval", mode="loud"), source="x.yaml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spec: [", "not valid YAML"),
        ("- a list", "expected a PolicySet mapping"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {policies: []}",
            "apiVersion",
        ),
        (yaml.safe_dump({**SHIPPED, "spec": {**SHIPPED["spec"], "extra": 1}}), "field spec.extra"),
    ],
)
def test_broken_documents(text: str, fragment: str) -> None:
    with pytest.raises(PolicySetError, match=fragment):
        parse_policy_set(text, source="bad.yaml")


@pytest.mark.parametrize(
    ("own", "ceiling", "override", "effective"),
    [
        ("enforce", "enforce", None, "enforce"),
        ("warn", "enforce", None, "warn"),
        ("enforce", "audit", None, "audit"),
        ("enforce", "audit", "enforce", "enforce"),  # --mode replaces spec.mode
        ("warn", "enforce", "audit", "audit"),
        ("audit", "enforce", "warn", "audit"),
        ("enforce", "enforce", "off", "off"),
    ],
)
def test_effective_mode_is_the_lower(
    own: str, ceiling: str, override: str | None, effective: str
) -> None:
    raw = yaml.safe_load(_with("irc-single-replica", mode=own))
    raw["spec"]["mode"] = ceiling
    policy_set = parse_policy_set(yaml.safe_dump(raw), source="x")
    ceilinged = policy_set.with_ceiling(parse_mode(override) if override else None)
    assert ceilinged.effective_mode(ceilinged.policies[0]) == effective


def test_parse_mode_rejects_unknown() -> None:
    with pytest.raises(PolicySetError, match="mode must be one of"):
        parse_mode("dry-run")


def test_every_policy_set_in_the_repo_parses() -> None:
    sets = [p for p in SHIPPED_POLICIES.parent.glob("*.yaml") if "kind: PolicySet" in p.read_text()]
    assert sets
    for path in sets:
        parse_policy_set(path.read_text(), source=str(path))


def test_unquoted_off_means_off() -> None:
    raw = SHIPPED_POLICIES.read_text().replace("mode: enforce\n  exclude", "mode: off\n  exclude")
    policy_set = parse_policy_set(raw, source="x")
    assert policy_set.mode == "off"
    assert policy_set.effective_mode(policy_set.policies[0]) == "off"


def _profile(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SHIPPED_POLICIES.parent / name).read_text())["spec"]
    return spec


def test_the_multi_tenancy_profile_is_the_default_set_plus_tenant_isolation() -> None:
    """policies/multi-tenancy.yaml repeats the default set: a change there must be made here."""
    default = yaml.safe_load(SHIPPED_POLICIES.read_text())["spec"]
    profile = _profile("multi-tenancy.yaml")
    shared = profile["policies"][: len(default["policies"])]
    assert shared == default["policies"], "multi-tenancy.yaml differs from the default set"
    assert {k: v for k, v in profile.items() if k != "policies"} == {
        k: v for k, v in default.items() if k != "policies"
    }
    assert [p["name"] for p in profile["policies"][len(default["policies"]) :]] == [
        "tenant-service-account",
        "tenant-cross-namespace-refs",
        "controller-lockdown",
    ]


# What the production profile changes in the default set: these params, nothing else.
PRODUCTION_CHANGES = {
    "flux-source-trust": {"productionNamespaces": ["*"]},
    "kustomization-safety": {"pruneProtection": ["Namespace", "PersistentVolumeClaim"]},
}


def test_the_production_profile_is_the_default_set_with_pinning_everywhere() -> None:
    """policies/production.yaml repeats the default set but for PRODUCTION_CHANGES (pinning
    everywhere, Namespaces and claims kept from pruning)."""
    default = yaml.safe_load(SHIPPED_POLICIES.read_text())["spec"]
    profile = _profile("production.yaml")
    expected = [
        {**entry, "params": {**entry["params"], **PRODUCTION_CHANGES.get(entry["name"], {})}}
        for entry in default["policies"]
    ]
    assert profile["policies"] == expected, "production.yaml differs from the default set"
    assert {k: v for k, v in profile.items() if k != "policies"} == {
        k: v for k, v in default.items() if k != "policies"
    }
    policy_set = parse_policy_set(
        (SHIPPED_POLICIES.parent / "production.yaml").read_text(), source="production.yaml"
    )
    trust = policy_set.configured("flux-source-trust")
    assert trust is not None
    assert isinstance(trust.params, SourceTrustParams)
    assert trust.params.in_production("any-namespace")
