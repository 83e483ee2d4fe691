"""Native admission policies (Kubernetes 1.36+) generated from the same policy set as the webhook.

Each policy module declares, next to its `scope`, the part CEL can express (`Policy.native`):
the matches it covers, CEL variables, findings and JSONPatch mutations. Keeping the CEL in the
policy module keeps one source of truth per policy: whoever changes `check` sees the CEL beside it,
and the differential test (`pytest -m native`) fails when the two disagree.

From that this module builds, per policy and according to its effective mode:
- enforce: a MutatingAdmissionPolicy (+ binding) for the changes, a ValidatingAdmissionPolicy with
  `validationActions: [Warn]` for the advisories and one with `[Deny]` for the violations;
- warn: one ValidatingAdmissionPolicy `[Warn]` saying what would change or be denied;
- audit: one ValidatingAdmissionPolicy `[Audit]` with an audit annotation;
- off: nothing.
The exempt annotation and the scope (names, prefixes, pod labels, the policy's condition) become
matchConditions, namespaces a namespaceSelector, exactly as for the webhook configurations.

What users see differently from the webhook (MutatingAdmissionPolicies cannot warn):
- enforced changes are made without the "set X to Y (was Z): why" warning and audit annotation;
- the API server prefixes each Warn message with "Validation failed for ValidatingAdmissionPolicy
  '<name>' with binding '<name>': " before fluxwarden's own `fluxwarden: <policy>: ` wording;
- a denial reads "ValidatingAdmissionPolicy '<name>' with binding '<name>' denied request: ...";
- an exemption is not recorded (the object is simply not matched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .engine import JsonObject, PolicySet
from .engine.match import Match, cel_string
from .engine.model import EXEMPT_ANNOTATION, Mode
from .engine.policies.base import FindingKind, Native, NativeFinding
from .engine.policyset import ConfiguredPolicy
from .engine.resources import ResourceKind
from .manifests import Block, Entry, Install, dump, header, select, webhook_configurations
from .manifests import generate as generate_webhook_install

API_VERSION = "admissionregistration.k8s.io/v1"
PREFIX = "fluxwarden-"
AUDIT_KEY = "finding"
# The order in which the engine lists a policy's messages (evaluate._result).
_MESSAGE_ORDER: dict[FindingKind, int] = {"violation": 0, "change": 1, "advisory": 2}
Admission = Literal["webhook", "native", "hybrid"]


@dataclass(frozen=True)
class Split:
    """One policy of the set: what the native objects cover, what the webhook keeps, and why."""

    configured: ConfiguredPolicy
    mode: Mode
    native: Native

    @property
    def name(self) -> str:
        return self.configured.policy.name


def split(policy_set: PolicySet, *, hybrid: bool) -> list[Split]:
    """Each policy's native part. With `hybrid`, a policy whose covered resources the webhook
    receives anyway for another policy of the same webhook (e.g. HelmReleases with dependsOn at
    the validating webhook) stays in the webhook: the server would evaluate it there again."""
    parts = {
        c.policy.name: Split(c, policy_set.effective_mode(c), c.policy.native(c.params))
        for c in policy_set.policies
    }
    changed = hybrid
    while changed:
        changed = False
        for name, part in parts.items():
            if not part.native.covers:
                continue
            clash = _clash(part, [p for p in parts.values() if p is not part], policy_set)
            if clash:
                parts[name] = Split(
                    part.configured,
                    part.mode,
                    Native(
                        covers=(),
                        webhook=part.configured.scope,
                        keeps=f"everything in hybrid mode: {clash}",
                    ),
                )
                changed = True
    return list(parts.values())


def _clash(part: Split, others: list[Split], policy_set: PolicySet) -> str:
    webhook = part.configured.policy.webhook
    for other in others:
        if other.configured.policy.webhook != webhook or other.mode == "off":
            continue
        for kept in other.native.webhook:
            for covered in part.native.covers:
                shared = _shared_resource(covered, kept, policy_set)
                if shared:
                    return (
                        f"the {webhook} webhook receives {shared} for {other.name} "
                        "and would evaluate this policy again"
                    )
    return ""


def _shared_resource(first: Match, second: Match, policy_set: PolicySet) -> str:
    excluded = policy_set.excluded_namespaces
    if first.namespaces and second.namespaces and not (first.namespaces & second.namespaces):
        return ""
    if first.namespaces and not first.namespaces - excluded:
        return ""
    for a in first.resources:
        for b in second.resources:
            if a.kind == b.kind and set(a.subresources) & set(b.subresources):
                return a.kind.plural
    return ""


def webhook_scope(policy_set: PolicySet, admission: Admission) -> dict[str, tuple[Match, ...]]:
    """What the webhook configurations cover per policy: everything, nothing, or what the
    native objects do not."""
    if admission == "webhook":
        return {c.policy.name: c.scope for c in policy_set.policies}
    if admission == "native":
        return {c.policy.name: () for c in policy_set.policies}
    return {p.name: p.native.webhook for p in split(policy_set, hybrid=True)}


def generate(policy_set: PolicySet, *, hybrid: bool = False) -> list[JsonObject]:
    """The native admission policies and bindings for the policy set, in apply order
    (each policy before its binding)."""
    objects: list[JsonObject] = []
    for part in split(policy_set, hybrid=hybrid):
        if part.mode != "off" and part.native.covers:
            objects.extend(_objects(part, policy_set))
    return objects


def summary(policy_set: PolicySet, *, hybrid: bool = False) -> list[str]:
    """One line per policy: what is native and what stays in the webhook, and why."""
    lines = []
    for part in split(policy_set, hybrid=hybrid):
        if part.mode == "off":
            lines.append(f"{part.name}: off")
            continue
        native = "native" if part.native.covers else "webhook only"
        lines.append(f"{part.name} ({part.mode}): {native}; the webhook keeps {part.native.keeps}")
    return lines


def _objects(part: Split, policy_set: PolicySet) -> list[JsonObject]:
    native = part.native
    kinds: list[ResourceKind] = []
    entries: list[Entry] = []
    for match in native.covers:
        for rule in match.resources:
            entries.append(Entry(part.name, match, rule))
            if rule.kind not in kinds:
                kinds.append(rule.kind)
    selection = select(kinds, entries, policy_set=policy_set)
    if selection is None:
        return []  # every namespace it looks at is excluded
    conditions = [{"name": "not-exempt", "expression": Block(_not_exempt(part.name))}]
    if selection.condition is not None:
        conditions.insert(0, {"name": "in-scope", "expression": Block(selection.condition)})
    constraints: JsonObject = {
        "matchPolicy": "Equivalent",
        "namespaceSelector": selection.namespace_selector,
        "resourceRules": selection.rules,
    }
    variables = [{"name": n, "expression": Block(e)} for n, e in native.variables]
    common: JsonObject = {
        "failurePolicy": "Ignore",  # as the webhooks: best practices must not stop a cluster
        "matchConstraints": constraints,
        "matchConditions": conditions,
        "variables": variables,
    }
    findings = sorted(native.findings, key=lambda f: _MESSAGE_ORDER[f.kind])
    objects: list[JsonObject] = []
    if part.mode == "enforce":
        if native.mutations:
            mutations = [
                {
                    "patchType": m.patch_type,
                    _patch_field(m.patch_type): {"expression": Block(m.expression)},
                }
                for m in native.mutations
            ]
            spec = {**common, "reinvocationPolicy": "IfNeeded", "mutations": mutations}
            objects += _pair("MutatingAdmissionPolicy", PREFIX + part.name, spec, {})
        objects += _validating(
            part, common, [f for f in findings if f.kind == "advisory"], "", ["Warn"]
        )
        objects += _validating(
            part, common, [f for f in findings if f.kind == "violation"], "-deny", ["Deny"]
        )
    else:
        actions = ["Warn"] if part.mode == "warn" else ["Audit"]
        objects += _validating(part, common, findings, "", actions)
    return objects


def _patch_field(patch_type: str) -> str:
    return "jsonPatch" if patch_type == "JSONPatch" else "applyConfiguration"


def _validating(
    part: Split, common: JsonObject, findings: list[NativeFinding], suffix: str, actions: list[str]
) -> list[JsonObject]:
    if not findings:
        return []
    enforce = part.mode == "enforce"
    texts = [_message(f, enforce=enforce) for f in findings]
    validations = [
        {
            "expression": Block(f"!({f.when})"),
            "messageExpression": Block(f"{cel_string(f'fluxwarden: {part.name}: ')} + {text}"),
        }
        for f, text in zip(findings, texts, strict=True)
    ]
    spec: JsonObject = {**common, "validations": validations}
    if not enforce:
        # The webhook's annotation: "<action>: message; message" (evaluate._render).
        label = cel_string("warned: " if part.mode == "warn" else "audited: ")
        found = ", ".join(f"({f.when}) ? {t} : ''" for f, t in zip(findings, texts, strict=True))
        listed = f"[{found}].filter(m, m != '')"
        spec["auditAnnotations"] = [
            {
                "key": AUDIT_KEY,
                "valueExpression": Block(
                    f"size({listed}) > 0 ? {label} + {listed}.join('; ') : ''"
                ),
            }
        ]
    return _pair(
        "ValidatingAdmissionPolicy",
        PREFIX + part.name + suffix,
        spec,
        {"validationActions": actions},
    )


def _message(finding: NativeFinding, *, enforce: bool) -> str:
    """The message as the engine words it in this mode (evaluate._result)."""
    if enforce or finding.kind == "advisory":
        return f"({finding.message})"
    prefix = "would " if finding.kind == "change" else "would deny: "
    return f"{cel_string(prefix)} + ({finding.message})"


def _pair(kind: str, name: str, spec: JsonObject, binding: JsonObject) -> list[JsonObject]:
    return [
        {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec},
        {
            "apiVersion": API_VERSION,
            "kind": f"{kind}Binding",
            "metadata": {"name": name},
            "spec": {"policyName": name, **binding},
        },
    ]


def _not_exempt(policy: str) -> str:
    annotations = "object.metadata.annotations"
    key = cel_string(EXEMPT_ANNOTATION)
    return (
        f"!(has({annotations}) && {key} in {annotations} && "
        f"{annotations}[{key}].split(',').exists(p, p.trim() in ['all', {cel_string(policy)}]))"
    )


def render(policy_set: PolicySet, install: Install | None = None, *, hybrid: bool) -> str:
    """Without `hybrid`: the native objects alone. With it: the native objects, the webhook
    configurations narrowed to what they do not cover, and the ClusterRoles."""
    objects = generate(policy_set, hybrid=hybrid)
    if hybrid:
        scopes = webhook_scope(policy_set, "hybrid")
        objects += generate_webhook_install(policy_set, install, scopes=scopes)
    return _header(policy_set, hybrid=hybrid) + dump(objects)


OVERLAY_RESOURCES = "native.yaml"
OVERLAY_PATCH = "webhooks.yaml"


def overlay_files(policy_set: PolicySet, install: Install | None = None) -> dict[str, str]:
    """What manifests/overlays/native adds to the base: the hybrid native objects (a resource)
    and the base's webhook configurations narrowed to the rest (a strategic-merge patch that
    replaces their `webhooks` lists)."""
    configurations = webhook_configurations(
        policy_set, install, scopes=webhook_scope(policy_set, "hybrid")
    )
    for configuration in configurations:
        configuration["metadata"].pop("annotations", None)  # the base's stay as they are
        configuration["webhooks"] = [{"$patch": "replace"}, *configuration["webhooks"]]
    text = _header(policy_set, hybrid=True, overlay=True)
    return {
        OVERLAY_RESOURCES: text + dump(generate(policy_set, hybrid=True)),
        OVERLAY_PATCH: text + dump(configurations),
    }


# What `make generate` runs for manifests/overlays/native (the Makefile's line).
OVERLAY_REGENERATE = (
    "fluxwarden manifests --policies FILE --hybrid --overlay manifests/overlays/native"
)


def _header(policy_set: PolicySet, *, hybrid: bool, overlay: bool = False) -> str:
    command = "fluxwarden manifests --hybrid" if hybrid else "fluxwarden manifests --native"
    regenerate = OVERLAY_REGENERATE if overlay else f"{command} --policies FILE > FILE.yaml"
    lines = summary(policy_set, hybrid=hybrid)
    text = header(policy_set, command, regenerate=regenerate)
    return text + "".join(f"# {line}\n" for line in lines)
