"""The engine's vocabulary: what goes in (request facts, lookups) and what comes out (a decision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

JsonObject = dict[str, Any]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
Mode = Literal["off", "audit", "warn", "enforce"]
Webhook = Literal["mutate", "validate", "all"]
# One result vocabulary for webhook, CLI and reports (as Kyverno and the PolicyReport API use).
Result = Literal["pass", "fail", "warn", "error", "skip"]
Action = Literal["none", "mutated", "denied", "warned", "audited", "exempted", "off"]

MODE_RANK: dict[Mode, int] = {"off": 0, "audit": 1, "warn": 2, "enforce": 3}
EXEMPT_ANNOTATION = "fluxwarden.io/exempt"


def lower_mode(first: Mode, second: Mode) -> Mode:
    """The stricter-is-lower combination used for the spec.mode ceiling."""
    return first if MODE_RANK[first] <= MODE_RANK[second] else second


@dataclass(frozen=True)
class Target:
    """What the request is about, as the API server names it (or as derived from a file)."""

    group: str
    version: str
    kind: str
    resource: str = ""
    sub_resource: str = ""
    namespace: str = ""
    name: str = ""
    # The resource's group when it differs from the kind's: a deployments/scale request is about
    # the apps resource `deployments` but carries an autoscaling/v1 Scale.
    resource_group: str | None = None

    @property
    def api_group(self) -> str:
        """The group of the resource the request is about."""
        return self.group if self.resource_group is None else self.resource_group

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def target_of(obj: JsonObject, *, default_namespace: str = "") -> Target:
    """The Target the API server would name for an object read from a file."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    group, _, version = (
        api_version.rpartition("/") if isinstance(api_version, str) else ("", "", "")
    )
    kind = kind if isinstance(kind, str) else ""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    namespace = meta.get("namespace")
    name = meta.get("name")
    return Target(
        group=group,
        version=version,
        kind=kind,
        resource=_plural(kind),
        namespace=namespace if isinstance(namespace, str) and namespace else default_namespace,
        name=name if isinstance(name, str) else "",
    )


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


@dataclass(frozen=True)
class Request:
    """The request facts a policy may depend on."""

    target: Target
    operation: Operation = "CREATE"
    dry_run: bool = False
    user: str = ""
    # The stored object an UPDATE replaces (admission's oldObject); None for CREATE, and for
    # objects read from files or listed from a cluster, which have no previous version.
    old_object: JsonObject | None = field(default=None, hash=False)


def request_for(
    obj: Any,
    *,
    operation: Operation = "CREATE",
    dry_run: bool = False,
    user: str = "",
    default_namespace: str = "",
    group: str | None = None,
    version: str | None = None,
    kind: str | None = None,
    resource: str | None = None,
    resource_group: str | None = None,
    sub_resource: str = "",
    namespace: str | None = None,
    name: str | None = None,
    old_object: JsonObject | None = None,
) -> Request:
    """The one way a Request is built: admission passes what the API server said, files and
    cluster lists pass only the object, and whatever is not given is derived from the object."""
    derived = target_of(obj if isinstance(obj, dict) else {}, default_namespace=default_namespace)
    target = Target(
        group=derived.group if group is None else group,
        version=derived.version if version is None else version,
        kind=derived.kind if kind is None else kind,
        resource=derived.resource if resource is None else resource,
        sub_resource=sub_resource,
        namespace=derived.namespace if namespace is None else namespace,
        name=derived.name if name is None else name,
        resource_group=None if resource_group in (None, derived.group) else resource_group,
    )
    return Request(
        target=target, operation=operation, dry_run=dry_run, user=user, old_object=old_object
    )


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


DependencyKind = Literal["Kustomization", "HelmRelease"]


class LookupUnavailable(Exception):
    """A lookup could not be answered (API slow or down): policies degrade to a warning."""


class Lookups(Protocol):
    """Facts about other objects. Implementations: the live cluster and the audited files."""

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        """A Deployment (metadata and spec, as plain JSON); None when it does not exist."""
        ...

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        """The resolved `spec.dependsOn` of an object; None when the object is unknown."""
        ...

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        """A PersistentVolumeClaim (metadata, spec, status); None when it does not exist."""
        ...


@runtime_checkable
class DependentsLookup(Protocol):
    """The reverse of `Lookups.dependencies`, which not every lookup implementation answers
    (a policy that needs it treats its absence as unknown and does not judge)."""

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        """The objects of `kind` whose `spec.dependsOn` names `ref`; None when unknown."""
        ...


@runtime_checkable
class NamespaceLookup(Protocol):
    """A namespace's labels (tenant namespaces are chosen by label)."""

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of Namespace `name`; None when it is not known."""
        ...


@runtime_checkable
class FluxInstanceLookup(Protocol):
    """The Flux Operator's FluxInstance of a namespace, where the lookups know it (the audited
    files); the webhook does not read FluxInstances."""

    def flux_instance(self, namespace: str) -> JsonObject | None:
        """The FluxInstance in `namespace` (the operator allows one, named flux); None: none."""
        ...


# The labels kustomize-controller puts on every object it applies: the Flux Kustomization's name
# and namespace (what `flux tree ks` and its garbage collection select by).
FLUX_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
FLUX_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"


@dataclass(frozen=True)
class Applier:
    """The Flux Kustomization that applies an object, as far as its garbage collection goes."""

    namespace: str
    name: str
    prune: bool  # spec.prune: objects removed from its build are deleted
    target_namespace: str  # spec.targetNamespace ("": none)
    deletion_policy: str  # spec.deletionPolicy ("": MirrorPrune, the default)

    @property
    def deletes_when_deleted(self) -> bool:
        """Deleting the Kustomization deletes what it applied (its finalizer's garbage
        collection: `MirrorPrune` follows prune, `Delete`/`WaitForTermination` always)."""
        policy = self.deletion_policy or "MirrorPrune"
        return policy in ("Delete", "WaitForTermination") or (
            policy == "MirrorPrune" and self.prune
        )

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def applier_of(kustomization: Any) -> Applier | None:
    """The Applier facts of a Flux Kustomization object (None: not a mapping with a name)."""
    if not isinstance(kustomization, dict):
        return None
    meta = kustomization.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    spec = kustomization.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    target, policy = spec.get("targetNamespace"), spec.get("deletionPolicy")
    return Applier(
        namespace=str(meta.get("namespace") or ""),
        name=name,
        prune=spec.get("prune") is True,
        target_namespace=target if isinstance(target, str) else "",
        deletion_policy=policy if isinstance(policy, str) else "",
    )


def applier_labels(obj: Any) -> ObjectRef | None:
    """The Flux Kustomization an object's kustomize-controller labels name (None: unlabelled)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict):
        return None
    name, namespace = labels.get(FLUX_NAME_LABEL), labels.get(FLUX_NAMESPACE_LABEL)
    if not (isinstance(name, str) and name and isinstance(namespace, str) and namespace):
        return None
    return ObjectRef(namespace, name)


@runtime_checkable
class ApplierLookup(Protocol):
    """Which Flux Kustomization applies an object. The cluster answers from the labels
    kustomize-controller put on it (`applier_labels`), the audited files from the render that
    produced it (or, for files that carry them, the same labels)."""

    def applier(self, obj: JsonObject) -> Applier | None:
        """The Kustomization that applies `obj`; None when none does (or it no longer exists)."""
        ...


class NoLookups:
    """For callers with nothing to look up: every lookup is unavailable."""

    def deployment(self, namespace: str, name: str) -> JsonObject | None:
        raise LookupUnavailable("no lookups configured")

    def dependencies(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        raise LookupUnavailable("no lookups configured")

    def persistent_volume_claim(self, namespace: str, name: str) -> JsonObject | None:
        raise LookupUnavailable("no lookups configured")

    def dependents(self, kind: DependencyKind, ref: ObjectRef) -> list[ObjectRef] | None:
        raise LookupUnavailable("no lookups configured")

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        raise LookupUnavailable("no lookups configured")

    def applier(self, obj: JsonObject) -> Applier | None:
        raise LookupUnavailable("no lookups configured")


@dataclass
class PolicyResult:
    policy: str
    mode: Mode
    result: Result
    action: Action
    messages: list[str] = field(default_factory=list)


@dataclass
class Decision:
    allowed: bool
    patch: list[JsonObject]
    patched: JsonObject | None
    warnings: list[str]
    audit_annotations: dict[str, str]
    deny_reasons: list[str]
    results: list[PolicyResult]

    def to_dict(self) -> JsonObject:
        return {
            "allowed": self.allowed,
            "patch": self.patch,
            "warnings": self.warnings,
            "auditAnnotations": self.audit_annotations,
            "denyReasons": self.deny_reasons,
            "results": [
                {
                    "policy": r.policy,
                    "mode": r.mode,
                    "result": r.result,
                    "action": r.action,
                    "messages": r.messages,
                }
                for r in self.results
            ],
        }
