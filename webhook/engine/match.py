"""A policy's scope, stated once as data (in the spirit of Gatekeeper's `match.Matches`).

The engine evaluates it before a policy's `check`; the webhook configurations (rules,
namespaceSelector, CEL matchConditions), the RBAC rules and the cluster audit's listing plan are
generated from the same values (`webhook.manifests`), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import JsonObject, Target
from .resources import ResourceKind


@dataclass(frozen=True)
class ResourceMatch:
    """One resource, and which of its subresources ("" is the resource itself) are in scope."""

    kind: ResourceKind
    subresources: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class Match:
    """Which objects a policy can act on. Every given field must match.

    `names`, `name_prefixes` and `pod_labels` are alternatives: the object matches when any of
    them does (a Fleet job is known by its name or by its pod's label); none given: any object.
    `namespace_label`: the namespace must carry this label (any value), as read through the
    lookups; the webhook configuration selects it with its namespaceSelector when every match
    of the webhook asks for it. A Match that needs it never matches without `labels`.
    `condition` is a CEL expression over `object` and `request` that the webhook configuration
    adds: it must hold for every object the policy may change or warn about, so that objects
    that cannot need anything never reach fluxwarden (the engine itself does not evaluate it).
    """

    resources: tuple[ResourceMatch, ...]
    namespaces: frozenset[str] = frozenset()  # empty: any namespace
    names: frozenset[str] = frozenset()
    name_prefixes: tuple[str, ...] = ()
    pod_labels: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, all must hold
    condition: str | None = None
    namespace_label: str = ""

    @property
    def by_identity(self) -> bool:
        return bool(self.names or self.name_prefixes or self.pod_labels)

    def resource_for(self, target: Target) -> ResourceMatch | None:
        for rule in self.resources:
            if (
                target.api_group == rule.kind.group
                and target.resource == rule.kind.plural
                and target.sub_resource in rule.subresources
            ):
                return rule
        return None

    def matches(
        self, target: Target, obj: JsonObject, labels: NamespaceLabels | None = None
    ) -> bool:
        """`labels`: the namespace's labels (None: unknown), read only when a match needs them
        (it may raise LookupUnavailable)."""
        rule = self.resource_for(target)
        if rule is None:
            return False
        if self.namespaces and target.namespace not in self.namespaces:
            return False
        if self.by_identity and not self._identity(target, obj, rule.kind):
            return False
        if self.namespace_label:
            found = labels(target.namespace) if labels is not None else None
            return found is not None and self.namespace_label in found
        return True

    def _identity(self, target: Target, obj: JsonObject, kind: ResourceKind) -> bool:
        meta = _mapping(obj.get("metadata"))
        name = target.name or _text(meta.get("name"))
        if name and name in self.names:
            return True
        candidates = [n for n in (name, _text(meta.get("generateName"))) if n]
        if any(n.startswith(p) for n in candidates for p in self.name_prefixes):
            return True
        if not self.pod_labels or kind.pod_template is None:
            return False
        labels = _mapping(_dig(obj, *kind.pod_template, "metadata", "labels"))
        return all(labels.get(k) == v for k, v in self.pod_labels)


# A namespace's labels by its name (None: the namespace is not known).
NamespaceLabels = Callable[[str], Mapping[str, str] | None]

# A Go duration as Flux writes intervals (`1m`, `1h30m`, `0.5s`); CEL's duration() parses these.
GO_DURATION = r"^([0-9]+(\.[0-9]*)?(ns|us|ms|s|m|h))+$|^0$"


def cel_string(value: str) -> str:
    """A CEL string literal (values come from the policy set, so they are quoted, never spliced)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def any_match(matches: tuple[Match, ...], target: Target, obj: JsonObject) -> bool:
    return any(m.matches(target, obj) for m in matches)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
