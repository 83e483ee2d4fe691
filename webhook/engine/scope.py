"""What follows from the policies' declared scopes: the cluster audit's listing plan, the reads
the lookups make (for RBAC) and the kinds the metrics may name. Pure derivations, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .policies import ALL_POLICIES
from .policies.base import Read
from .policyset import PolicySet
from .resources import ResourceKind

Scope = frozenset[str] | None  # namespaces; None: every namespace


@dataclass(frozen=True)
class Listing:
    """One resource the cluster audit lists, and where (None: all namespaces in one LIST)."""

    kind: ResourceKind
    namespaces: tuple[str | None, ...]


def _union(first: Scope, second: Scope) -> Scope:
    return None if first is None or second is None else first | second


def resource_scopes(policy_set: PolicySet) -> dict[ResourceKind, Scope]:
    """Every resource a policy of the set matches, with the namespaces it matches it in, in the
    order the policies declare them."""
    scopes: dict[ResourceKind, Scope] = {}
    for configured in policy_set.policies:
        for match in configured.scope:
            namespaces: Scope = match.namespaces or None
            for rule in match.resources:
                kind = rule.kind
                scopes[kind] = _union(scopes[kind], namespaces) if kind in scopes else namespaces
    return scopes


def listing_plan(policy_set: PolicySet, namespace: str | None) -> tuple[list[Listing], list[str]]:
    """What a cluster audit lists (only `namespace` when given), and notices for the user.

    Excluded namespaces and namespaces no policy looks at are never listed.
    """
    excluded = policy_set.excluded_namespaces
    notices = []
    if namespace is not None and namespace in excluded:
        notices.append(f"namespace {namespace} is excluded by the policy set, nothing audited")
    plan = []
    for kind, scope in resource_scopes(policy_set).items():
        where: list[str | None]
        if namespace is not None and not kind.namespaced:
            where = []  # a namespace's audit holds no cluster-scoped objects (Namespaces)
        elif namespace is not None:
            where = [namespace] if scope is None or namespace in scope else []
        else:
            where = [None] if scope is None else [*sorted(scope)]
        kept = tuple(ns for ns in where if ns not in excluded)
        if kept:
            plan.append(Listing(kind, kept))
    return plan, notices


def lookup_reads(policy_set: PolicySet) -> list[Read]:
    """Every read the lookups make for this policy set, merged per resource (names united; a
    read of any name wins). Order: as the policies declare them."""
    merged: dict[ResourceKind, frozenset[str] | None] = {}
    for configured in policy_set.policies:
        for read in configured.policy.reads(configured.params):
            names: frozenset[str] | None = read.names or None
            if read.kind not in merged:
                merged[read.kind] = names
            else:
                before = merged[read.kind]
                merged[read.kind] = None if before is None or names is None else before | names
    return [Read(kind, names or frozenset()) for kind, names in merged.items()]


def known_kinds() -> frozenset[str]:
    """Kinds any policy can target with its default params (bounded metric label values)."""
    kinds = {"Scale"}  # what a deployments/scale request carries
    for policy in ALL_POLICIES.values():
        for match in policy.scope(policy.params_model()):
            kinds.update(rule.kind.kind for rule in match.resources)
    return frozenset(kinds)
