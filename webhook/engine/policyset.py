"""The PolicySet document: parsed and validated into policies with typed params."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .match import Match, NamespaceLabels
from .model import MODE_RANK, JsonObject, Mode, Target, Webhook, lower_mode
from .policies import ALL_POLICIES, Params, Policy

# fluxwarden's own namespace is always excluded: a broken fluxwarden must stay fixable.
OWN_NAMESPACE = "fluxwarden-system"


class PolicySetError(ValueError):
    """A policy set that cannot be used; the message names the file, the policy and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false; that is what the user meant."""
    return "off" if value is False else value


ModeField = Annotated[Mode, BeforeValidator(_yaml_off)]


class _Exclude(_Strict):
    namespaces: list[str] = Field(default_factory=list)


class _PolicyEntry(_Strict):
    name: str
    mode: ModeField = "enforce"
    params: dict[str, Any] = Field(default_factory=dict)


class _Spec(_Strict):
    mode: ModeField = "enforce"
    exclude: _Exclude = Field(default_factory=_Exclude)
    policies: list[_PolicyEntry]


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _Document(_Strict):
    api_version: Literal["fluxwarden.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PolicySet"]
    metadata: _Metadata
    spec: _Spec


@dataclass(frozen=True)
class ConfiguredPolicy:
    policy: Policy[Any]
    mode: Mode  # the policy's own mode, before the ceiling
    params: Params
    scope: tuple[Match, ...]  # the policy's declared scope for these params

    @classmethod
    def of(cls, policy: Policy[Any], *, mode: Mode, params: Params) -> ConfiguredPolicy:
        return cls(policy=policy, mode=mode, params=params, scope=policy.scope(params))

    def matches(
        self, target: Target, obj: JsonObject, labels: NamespaceLabels | None = None
    ) -> bool:
        """In scope: a declared Match holds and the policy's own extra test agrees."""
        return any(m.matches(target, obj, labels) for m in self.scope) and self.policy.applies_to(
            target, obj, self.params
        )


_MAX_REMEMBERED_RESOURCES = 4096


@dataclass(frozen=True)
class PolicySet:
    name: str
    source: str
    mode: Mode  # the ceiling: `spec.mode`, or the --mode / FLUXWARDEN_MODE that replaced it
    excluded_namespaces: frozenset[str]  # spec.exclude.namespaces and fluxwarden's own
    policies: tuple[ConfiguredPolicy, ...]
    # (webhook, group, resource, subresource) -> `naming`'s answer, filled as resources are seen
    _naming: dict[tuple[str, str, str, str], tuple[ConfiguredPolicy, ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def effective_mode(self, configured: ConfiguredPolicy) -> Mode:
        """A policy runs at the lower of its own mode and the ceiling."""
        return lower_mode(configured.mode, self.mode)

    def with_ceiling(self, mode: Mode | None) -> PolicySet:
        """This set with `mode` as its ceiling (the cluster-wide dry-run switch); None: as is."""
        return self if mode is None else replace(self, mode=mode)

    def enforcing(self) -> PolicySet:
        """Every policy that runs at all, at enforce (the ceiling too). What `fix` writes: a
        would-be change of a warn or audit policy fails the audit as an enforced one does, so
        fix must make it, or audit and `fix --check` disagree (Kyverno's CLI, likewise, applies
        mutate rules whatever a policy's validation action)."""
        running = tuple(
            p if self.effective_mode(p) == "off" else replace(p, mode="enforce")
            for p in self.policies
        )
        return replace(self, mode="enforce", policies=running)

    def configured(self, name: str) -> ConfiguredPolicy | None:
        return next((p for p in self.policies if p.policy.name == name), None)

    def for_webhook(self, webhook: Webhook) -> tuple[ConfiguredPolicy, ...]:
        if webhook == "all":
            return self.policies
        return tuple(p for p in self.policies if p.policy.webhook == webhook)

    def naming(self, webhook: Webhook, target: Target) -> tuple[ConfiguredPolicy, ...]:
        """The policies of `webhook`, in order, minus those with no Match naming the target's
        resource (`Match.matches` is False for them without reading the object). Most objects of
        a large audit are of a resource most policies never name; the answer depends on the
        resource only, so it is remembered (bounded: any client may name any resource)."""
        key = (webhook, target.api_group, target.resource, target.sub_resource)
        known = self._naming.get(key)
        if known is None:
            if len(self._naming) >= _MAX_REMEMBERED_RESOURCES:
                self._naming.clear()
            known = self._naming[key] = tuple(
                configured
                for configured in self.for_webhook(webhook)
                if any(m.resource_for(target) is not None for m in configured.scope)
            )
        return known


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    extra = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"field {_field(tuple(first['loc']))}: {first['msg']}{extra}"


def parse_policy_set(text: str, *, source: str, own_namespace: str = OWN_NAMESPACE) -> PolicySet:
    """Parse and validate a PolicySet YAML document. Raises PolicySetError naming what is wrong."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicySetError(f"{source}: not valid YAML: {error}".replace("\n", " ")) from error
    if not isinstance(raw, dict):
        raise PolicySetError(f"{source}: expected a PolicySet mapping, got {type(raw).__name__}")
    try:
        document = _Document.model_validate(raw)
    except ValidationError as error:
        raise PolicySetError(_with_policy_name(source, raw, error)) from error
    configured: list[ConfiguredPolicy] = []
    seen: set[str] = set()
    for entry in document.spec.policies:
        where = f"{source}: policy {entry.name}"
        policy = ALL_POLICIES.get(entry.name)
        if policy is None:
            known = ", ".join(sorted(ALL_POLICIES))
            raise PolicySetError(f"{where}: unknown policy (known: {known})")
        if entry.name in seen:
            raise PolicySetError(f"{where}: listed twice")
        seen.add(entry.name)
        try:
            params = policy.params_model.model_validate(entry.params)
        except ValidationError as error:
            raise PolicySetError(f"{where}: params {_describe(error)}") from error
        configured.append(ConfiguredPolicy.of(policy, mode=entry.mode, params=params))
    return PolicySet(
        name=document.metadata.name,
        source=source,
        mode=document.spec.mode,
        excluded_namespaces=frozenset(document.spec.exclude.namespaces) | {own_namespace},
        policies=tuple(configured),
    )


def _with_policy_name(source: str, raw: dict[str, Any], error: ValidationError) -> str:
    """Name the policy when the error sits inside spec.policies[i]."""
    loc = tuple(error.errors()[0]["loc"])
    if loc[:2] == ("spec", "policies") and len(loc) > 2 and isinstance(loc[2], int):
        try:
            name = raw["spec"]["policies"][loc[2]]["name"]
            return f"{source}: policy {name}: {_describe(error)}"
        except (KeyError, IndexError, TypeError):
            pass
    return f"{source}: {_describe(error)}"


def parse_mode(value: str) -> Mode:
    """Validate a --mode / FLUXWARDEN_MODE value."""
    for mode in MODE_RANK:
        if value == mode:
            return mode
    raise PolicySetError(f"mode must be one of {', '.join(MODE_RANK)}, got {value!r}")
