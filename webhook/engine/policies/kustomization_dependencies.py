"""Flux dependsOn graphs: a cycle or self-reference never becomes ready; deep chains are slow."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch
from ..model import (
    DependencyKind,
    JsonObject,
    Lookups,
    LookupUnavailable,
    ObjectRef,
    Request,
    Target,
)
from ..resources import HELMRELEASES, KUSTOMIZATIONS
from .base import Native, Params, Policy, Read, Report, dig

GROUPS: dict[str, DependencyKind] = {
    KUSTOMIZATIONS.group: "Kustomization",
    HELMRELEASES.group: "HelmRelease",
}
# Bounds the walk (one lookup per object visited, within the webhook's 5 s) on huge or hostile
# graphs; real dependsOn graphs are far smaller.
MAX_VISITED = 200
MAX_CHAIN = 256  # far beyond any sane maxDepth; keeps the recursion bounded


class DependencyParams(Params):
    max_depth: int = Field(default=5, ge=1, alias="maxDepth")
    warn_missing: bool = Field(default=True, alias="warnMissing")


def depends_on(obj: JsonObject, namespace: str) -> list[ObjectRef]:
    """The `spec.dependsOn` references; a missing namespace means the object's own."""
    refs = []
    for entry in dig(obj, "spec", "dependsOn") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            ref_namespace = entry.get("namespace")
            ns = ref_namespace if isinstance(ref_namespace, str) and ref_namespace else namespace
            refs.append(ObjectRef(ns, entry["name"]))
    return refs


class _Walk:
    """Depth-first walk of the dependency graph starting at the object under review."""

    def __init__(
        self, kind: DependencyKind, me: ObjectRef, mine: list[ObjectRef], lookups: Lookups
    ):
        self.kind, self.me, self.mine, self.lookups = kind, me, mine, lookups
        self.edges: dict[ObjectRef, list[ObjectRef] | None] = {me: mine}
        self.depth: dict[ObjectRef, int] = {}
        self.cycle: list[ObjectRef] | None = None
        self.truncated = False

    def neighbours(self, ref: ObjectRef) -> list[ObjectRef] | None:
        if ref not in self.edges:
            if len(self.edges) >= MAX_VISITED:
                self.truncated = True
                return []
            self.edges[ref] = self.lookups.dependencies(self.kind, ref)
        return self.edges[ref]

    def longest_chain(self, ref: ObjectRef, path: list[ObjectRef]) -> int:
        """Hops in the longest chain below `ref`; records the first cycle through `me`."""
        if ref in self.depth:
            return self.depth[ref]
        deepest = 0
        if len(path) > MAX_CHAIN:
            return deepest
        for dep in self.neighbours(ref) or []:
            if dep in path:
                if dep == self.me and self.cycle is None:
                    self.cycle = [*path, dep]
                continue
            deepest = max(deepest, 1 + self.longest_chain(dep, [*path, dep]))
        self.depth[ref] = deepest
        return deepest


class KustomizationDependencies(Policy[DependencyParams]):
    name: ClassVar[str] = "kustomization-dependencies"
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/agent-skills/blob/main/skills/gitops-repo-audit/references/"
        "best-practices.md",
    )
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = (
        "a dependsOn cycle or self-reference never becomes ready and deep chains are slow: deny "
        "cycles, warn on missing dependencies and deep chains"
    )
    params_model = DependencyParams

    def scope(self, params: DependencyParams) -> tuple[Match, ...]:
        has_dependencies = (
            "has(object.spec) && has(object.spec.dependsOn) && size(object.spec.dependsOn) > 0"
        )
        return (
            Match(
                resources=(ResourceMatch(KUSTOMIZATIONS), ResourceMatch(HELMRELEASES)),
                condition=has_dependencies,
            ),
        )

    def applies_to(self, target: Target, obj: JsonObject, params: DependencyParams) -> bool:
        return isinstance(dig(obj, "spec", "dependsOn"), list)

    def reads(self, params: DependencyParams) -> tuple[Read, ...]:
        return (Read(KUSTOMIZATIONS), Read(HELMRELEASES))

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: DependencyParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        kind = GROUPS[request.target.group]
        namespace = request.target.namespace
        name = request.target.name or dig(obj, "metadata", "name") or ""
        me = ObjectRef(namespace, name)
        mine = depends_on(obj, namespace)
        if me in mine:
            report.violation(f"{kind} {me} depends on itself and can never become ready")
            mine = [ref for ref in mine if ref != me]
        walk = _Walk(kind, me, mine, lookups)
        try:
            depth = walk.longest_chain(me, [me])
        except LookupUnavailable as error:
            report.advise(f"could not check dependsOn for cycles: {error}")
            return
        if walk.truncated:
            report.advise(
                f"dependsOn graph has more than {MAX_VISITED} objects: checked only that many"
            )
        if walk.cycle:
            chain = " -> ".join(str(ref) for ref in walk.cycle)
            report.violation(f"dependsOn cycle never becomes ready: {chain}")
        if params.warn_missing:
            missing = [str(ref) for ref in mine if ref in walk.edges and walk.edges[ref] is None]
            if missing:
                report.advise(f"depends on {kind}(s) not found: {', '.join(missing)}")
        if depth > params.max_depth:
            report.advise(
                f"dependsOn chain is {depth} deep (more than {params.max_depth}): "
                "each hop waits for the previous one to become ready"
            )

    def native(self, params: DependencyParams) -> Native:
        return Native(
            covers=(),
            webhook=self.scope(params),
            keeps=(
                "everything: cycles, missing dependencies and depth need the other objects' "
                "dependsOn (a graph lookup CEL cannot make)"
            ),
        )
