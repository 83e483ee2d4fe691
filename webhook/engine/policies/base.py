"""What every policy module provides, and the report a policy writes its findings into."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request, Target
from ..resources import ResourceKind
from ..units import parse_duration, parse_quantity


def _valid_quantity(value: str) -> str:
    parse_quantity(value)
    return value


def _valid_duration(value: str) -> str:
    parse_duration(value)
    return value


# Param types: strings as users write them, checked at load time so a typo names its field.
Quantity = Annotated[str, AfterValidator(_valid_quantity)]
Duration = Annotated[str, AfterValidator(_valid_duration)]


class Params(BaseModel):
    """Base of every policy's params model: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


ParamsT = TypeVar("ParamsT", bound=Params)


@dataclass(frozen=True)
class Read:
    """Objects of `kind` a policy reads through its lookups (`names` empty: any name)."""

    kind: ResourceKind
    names: frozenset[str] = frozenset()


FindingKind = Literal["violation", "change", "advisory"]


@dataclass(frozen=True)
class NativeFinding:
    """One finding CEL can compute from the object alone, worded as `check` words it.

    `when`: CEL, true when `check` reports it; `message`: a CEL string expression, the text
    without the mode's prefix ("would ", "would deny: ") that the generator adds.
    """

    kind: FindingKind
    when: str
    message: str


@dataclass(frozen=True)
class NativeMutation:
    """One MutatingAdmissionPolicy mutation: a CEL expression yielding a JSONPatch list or an
    ApplyConfiguration."""

    expression: str
    patch_type: Literal["JSONPatch", "ApplyConfiguration"] = "JSONPatch"


@dataclass(frozen=True)
class Native:
    """What a policy does as native admission policies (Kubernetes 1.36+), and what it keeps.

    `covers`: the matches the native objects handle completely (mutations and findings below);
    `webhook`: the matches that stay in the webhook in hybrid mode, because they need lookups;
    `keeps`: why, in one sentence (`fluxwarden manifests --native` prints it).
    Variables are CEL (`variables.<name>` in the other expressions), evaluated in order.
    """

    covers: tuple[Match, ...]
    webhook: tuple[Match, ...] = ()
    keeps: str = ""
    variables: tuple[tuple[str, str], ...] = ()
    findings: tuple[NativeFinding, ...] = ()
    mutations: tuple[NativeMutation, ...] = ()


@dataclass
class Report:
    """Findings of one policy on one object, in words a `kubectl apply` user can act on."""

    changes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)

    def changed(self, path: str, old: Any, new: Any) -> None:
        """Record that `path` was (or would be) set from `old` to `new`."""
        was = "unset" if old is None else _short(old)
        self.changes.append(f"set {path} to {_short(new)} (was {was})")

    def violation(self, message: str) -> None:
        self.violations.append(message)

    def advise(self, message: str) -> None:
        self.advisories.append(message)

    @property
    def empty(self) -> bool:
        return not (self.changes or self.violations or self.advisories)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Policy(ABC, Generic[ParamsT]):
    """One best practice. A mutating policy's `check` works on a private copy of the object and
    may change it; a validating policy's `check` gets the object itself and must only read it
    (tests/engine/test_copy_on_write.py holds the shipped ones to that)."""

    name: ClassVar[str]
    webhook: ClassVar[Literal["mutate", "validate"]]
    summary: ClassVar[str]  # one line: what goes wrong without it and what the policy does
    reason: ClassVar[str] = ""  # short why, appended to the warnings about changes
    # Where the practice comes from (Flux docs, API reference, issues): URLs users can check.
    sources: ClassVar[tuple[str, ...]] = ()
    params_model: type[ParamsT]

    @abstractmethod
    def scope(self, params: ParamsT) -> tuple[Match, ...]:
        """The objects this policy can act on (any of the matches), derived from its params.

        The engine checks it before `check`; webhooks, RBAC and audit listing derive from it.
        """

    def applies_to(self, target: Target, obj: JsonObject, params: ParamsT) -> bool:
        """What a Match cannot say (e.g. an HPA's scaleTargetRef); called only on matches."""
        return True

    def native(self, params: ParamsT) -> Native:
        """The part CEL can express as Mutating/ValidatingAdmissionPolicies; by default none:
        the whole scope stays in the webhook."""
        return Native(covers=(), webhook=self.scope(params), keeps="not expressed in CEL")

    def reads(self, params: ParamsT) -> tuple[Read, ...]:
        """What `check` looks up through `Lookups`; the webhook's RBAC is generated from it."""
        return ()

    @abstractmethod
    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: ParamsT,
        lookups: Lookups,
        report: Report,
    ) -> None:
        """Inspect `obj`, mutate it towards compliance and write findings into `report`."""


TENANT_LABEL = "toolkit.fluxcd.io/tenant"


def tenant_matches(
    resources: tuple[ResourceMatch, ...],
    *,
    namespaces: list[str],
    label: str,
    condition: str | None,
) -> tuple[Match, ...]:
    """Tenants' namespaces: those listed, and those carrying `label` ("": none by label)."""
    matches = []
    if namespaces:
        matches.append(Match(resources, namespaces=frozenset(namespaces), condition=condition))
    if label:
        matches.append(Match(resources, namespace_label=label, condition=condition))
    return tuple(matches)


def judge_interval(
    interval: Any,
    *,
    path: str,
    minimum: str | None,
    maximum: str | None,
    too_short: str,
    too_long: str,
    report: Report,
) -> None:
    """Advise when the Go duration at `path` is outside [minimum, maximum] (None: unbounded).

    Absent values are the CRD schema's business and `${VAR}` is substituted by Flux later, so
    neither is judged; a value that is not a duration is advised about."""
    if interval is None or (isinstance(interval, str) and "${" in interval):
        return
    try:
        seconds = parse_duration(interval)
    except ValueError:
        report.advise(f"{path} {interval!r} is not a duration")
        return
    if minimum is not None and seconds < parse_duration(minimum):
        report.advise(f"{path} {interval} is shorter than {minimum}: {too_short}")
    elif maximum is not None and seconds > parse_duration(maximum):
        report.advise(f"{path} {interval} is longer than {maximum}: {too_long}")


def metadata(obj: JsonObject) -> JsonObject:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def ensure_dict(parent: JsonObject, key: str) -> JsonObject:
    """`parent[key]` as a dict, created when absent or null. Any other value is never replaced
    (that would silently drop the user's data): it raises, and the policy fails open."""
    value = parent.get(key)
    if value is None:
        value = {}
        parent[key] = value
    if not isinstance(value, dict):
        raise TypeError(f"{key} is a {type(value).__name__}, not a mapping")
    return value


def dig(obj: Any, *path: str) -> Any:
    """Read a nested value; None when any step is missing or of the wrong type."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def named_container(pod_spec: Any, name: str) -> JsonObject | None:
    if not isinstance(pod_spec, dict):
        return None
    for container in pod_spec.get("containers") or []:
        if isinstance(container, dict) and container.get("name") == name:
            return container
    return None


# CEL of the native policies on a Deployment: its pod template, and the container that the
# `index` variable (`container_index`) points at.
POD_SPEC = "object.spec.template.spec"
MANAGER = f"{POD_SPEC}.containers[variables.index]"


def container_index(name: str) -> tuple[str, str]:
    """The native `index` variable, `named_container` in CEL: where container `name` is in the
    Deployment's pod template, -1 when it is not there."""
    return (
        "index",
        f"has(object.spec.template) && has({POD_SPEC}) "
        f"? {POD_SPEC}.containers.map(c, c.name).indexOf({cel_string(name)}) : -1",
    )
