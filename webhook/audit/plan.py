"""The fix plan: what to change, as data, computed from the inventory and the policy set.

An `Edit` is a JSONPatch for one document of one file, and why. It is written where a Flux user
edits the field (DESIGN.md "Audit and fix as Flux applies"):
- one edit to a HelmRelease defaults patch that covers every failing release under it;
- the document that defines the object;
- for an object of a generated file (`gotk-components.yaml`, `DO NOT EDIT`), the `patches` of
  the kustomization.yaml that includes it;
- for the controllers a Flux install makes, the install's own patch list (a FluxInstance's
  `spec.kustomize.patches`, the `flux-instance` chart's values, a `flux-manifests`
  Kustomization's `spec.patches`).
Patches are edited by value (`patch_values.plan_by_value`): a flag is changed in the op that set
it, else appended (`args/-`); volumes are changed by name; a list is never addressed by a
position the rendered object happens to have. Applying the edits to text is `fix.py`'s job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine import JsonObject, PolicySet, evaluate, request_for
from . import cluster_edits
from .audit_object import AuditObject
from .cluster_edits import ClusterPatch, ClusterPatches, Need, split
from .defaults_patch import edited_patch_text, mergeable, proposals
from .documents import Document, parse_stream
from .findings import InputProblem
from .flux_installs import written_ops
from .fluxinstance import is_flux_instance, user_patches
from .inventory import Installed, Inventory
from .patch_values import plan_by_value
from .resourcesets import OpsOf, resource_set_fix
from .sources import field_line
from .values_files import PATCHES as VALUES_PATCHES
from .values_files import patches_file

Fixes = list[tuple[JsonObject, list[JsonObject]]]
"""Objects (as rendered) and the ops that fix each."""


@dataclass(frozen=True)
class Edit:
    """Apply `ops` to document `document` (its position among the file's documents) of the
    file `path`; `why` names the policies, or the defaults patch, it is for."""

    path: str
    document: int
    ops: tuple[JsonObject, ...]
    why: str


@dataclass
class Plan:
    """Every edit of a fix run, in file order, and what could not be planned."""

    edits: list[Edit] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how fixes are written (defaults patches)
    documents: dict[str, list[Document]] = field(default_factory=dict)  # files read to plan


class _Patches:
    """The enforcing mutating webhook's patch of each object, with its cluster's lookups and the
    policies behind it; each object is evaluated once."""

    def __init__(self, inventory: Inventory, policy_set: PolicySet) -> None:
        self.inventory = inventory
        self.policy_set = policy_set.enforcing()  # every change audit reports is made
        self._done: dict[int, tuple[list[JsonObject], str]] = {}
        self._fields: dict[int, dict[str, list[str]]] = {}  # policy -> the fields it set

    def of(self, obj: JsonObject, cluster: str) -> tuple[list[JsonObject], str]:
        """(normalised patch, the policies that make it) for `obj` in `cluster`."""
        if id(obj) not in self._done:
            decision = evaluate(
                obj,
                request=request_for(obj),
                policy_set=self.policy_set,
                lookups=self.inventory.lookups(cluster),
                webhook="mutate",
            )
            mutated = [r for r in decision.results if r.action == "mutated"]
            policies = sorted({r.policy for r in mutated})
            self._done[id(obj)] = (normalised_patch(obj, decision.patch), ", ".join(policies))
            self._fields[id(obj)] = {r.policy: _set_fields(r.messages) for r in mutated}
        return self._done[id(obj)]

    def policies_of(self, obj: JsonObject, op: JsonObject) -> str:
        """The policies whose changes `op` of `obj`'s patch writes (all of the object's when
        none says so: a change is said as `set FIELD to ...`)."""
        fields = self._fields.get(id(obj), {})
        path = ".".join(str(op.get("path", "")).strip("/").split("/"))
        found = [
            p
            for p, set_fields in fields.items()
            if any(
                f == path or f.startswith(path + ".") or path.startswith(f + ".")
                for f in set_fields
            )
        ]
        return ", ".join(sorted(found or fields))

    def ops(self, obj: JsonObject, cluster: str) -> list[JsonObject]:
        return self.of(obj, cluster)[0]


def _set_fields(messages: list[str]) -> list[str]:
    """The fields a policy's change messages (`set FIELD to VALUE (was ...)`) name."""
    return [m[4:].split(" to ", 1)[0] for m in messages if m.startswith("set ") and " to " in m]


def plan_fixes(inventory: Inventory, *, policy_set: PolicySet, per_file: bool = False) -> Plan:
    """The edits that make every object of `inventory` pass the enforcing mutating policies:
    a defaults-patch edit where one covers many releases (unless `per_file`), else each
    object's own edit where its user writes it. Files no cluster applies get none."""
    plan = Plan(documents=dict(inventory.files))
    patches = _Patches(inventory, policy_set)
    covered = set() if per_file else _defaults_edits(inventory, patches, plan)
    installs = {id(i.item): i for i in inventory.installs}

    def entry_ops(item: AuditObject) -> tuple[list[JsonObject], str]:
        """A ResourceSet entry's fix; a FluxInstance entry's is its controllers' patches."""
        ops, why = patches.of(item.obj, item.cluster)
        installed = installs.get(id(item))
        if installed is None:
            return ops, why
        install_ops, install_why = _install_ops(installed, item.obj, patches)
        if install_why and not install_ops:
            plan.problems.append(_unwritten(installed, install_why))
        own = [] if is_flux_instance(item.obj) else ops
        return own + install_ops, _joined(why, install_why)

    generated: dict[str, Fixes] = {}
    places = ClusterPatches(inventory)  # per-cluster remainders of shared documents
    # files no cluster applies, and files under a Kustomization not audited by design
    unreached = {*inventory.unreached, *(f for n in inventory.not_audited for f in n.files)}
    file_clusters: dict[str, str] = {}  # where an object that matched no rendering is looked up
    for o in inventory.objects:
        file_clusters.setdefault(o.location.source, o.cluster)
    for path, documents in inventory.files.items():
        if path in unreached:
            continue  # no cluster applies it: neither judged nor fixed
        is_generated = _is_generated(path, inventory)
        for position, document in enumerate(documents):
            if not document.is_kubernetes_object or document.obj is None:
                continue
            items = inventory.renderings(document)
            if not is_generated and _per_cluster(items, installs):
                ops, why = _shared_document_ops(document, items, patches, covered, plan, places)
                _add_edit(plan, document, position, (ops, why), inventory, entry_ops)
                continue
            item = _needing_fix(items, covered)
            installed = installs.get(id(item)) if item is not None else None
            # a release a defaults-patch edit covers needs no edit of its own, but a Flux
            # install's controllers still do
            is_covered = item is not None and id(item) in covered
            if is_covered and installed is None:
                continue
            if item is None:
                cluster = file_clusters.get(path, "")
                ops, why = ([], "") if is_generated else patches.of(document.obj, cluster)
            else:
                ops, why = ([], "") if is_covered else _own_ops(item, patches, plan)
                if ops and is_generated:
                    generated.setdefault(path, []).append((item.obj, ops))
                    continue
            if installed is not None:  # a FluxInstance is only its controllers' patches
                install_ops, install_why = _install_ops(installed, document.obj, patches)
                if install_why and not install_ops:
                    _into_values_file(installed, document, patches, plan)
                own = [] if is_flux_instance(document.obj) else ops
                ops, why = own + install_ops, _joined(why, install_why)
            cluster = item.cluster if item is not None else ""
            _add_edit(plan, document, position, (ops, why), inventory, entry_ops, cluster=cluster)
    for path, fixes in generated.items():
        _plan_generated(path, fixes, plan)
    for place in places.values():  # each file once: many shared documents may patch it
        _plan_cluster_patch(place, plan)
    return plan


def _add_edit(
    plan: Plan,
    document: Document,
    position: int,
    own: tuple[list[JsonObject], str],
    inventory: Inventory,
    entry_ops: OpsOf,
    cluster: str = "",
) -> None:
    """The document's edit: its `own` (ops, why) and those of the objects a ResourceSet
    embedded in it makes (`entry_ops`); `why` names the `cluster` of a document one cluster
    renders."""
    embedded = resource_set_fix(document, inventory.objects, entry_ops)
    ops, why = own[0] + embedded.ops, own[1]
    if embedded.why:
        why = _joined(why, embedded.why)
    if why and cluster:
        why += f" for {cluster}"
    plan.problems += embedded.problems
    if ops:
        plan.edits.append(Edit(document.source, position, tuple(ops), why))


def _defaults_edits(inventory: Inventory, patches: _Patches, plan: Plan) -> set[int]:
    """Edits to HelmRelease defaults patches that each cover every failing release under them
    (one per patch text); returns id() of the releases they cover."""
    releases = [o for o in inventory.objects if o.obj.get("kind") == "HelmRelease"]
    release_patches = {id(o): patches.ops(o.obj, o.cluster) for o in releases}
    documents = [d for ds in inventory.files.values() for d in ds]
    covered: set[int] = set()
    seen: set[tuple[str, int, str]] = set()
    for proposal in proposals(documents, inventory.objects, release_patches):
        document = proposal.document
        position = _position(inventory.files[document.source], document)
        if (document.source, position, proposal.pointer) in seen:
            continue  # one edit per patch text (a second would be on the next run)
        seen.add((document.source, position, proposal.pointer))
        op = {"op": "replace", "path": proposal.pointer, "value": edited_patch_text(proposal)}
        count = per_cluster_count(proposal.releases)
        why = f"HelmRelease defaults patch covering {count}"
        plan.edits.append(Edit(document.source, position, (op,), why))
        covered.update(id(r) for r in proposal.releases)
        line = field_line(document, [proposal.pointer])
        plan.notes.append(
            f"{document.source}:{line}: HelmRelease defaults patch: one edit covers "
            f"{count} (--per-file edits each release instead)"
        )
    return covered


def per_cluster_count(releases: Sequence[AuditObject]) -> str:
    """`N HelmRelease(s)`, counted per cluster when they are in named clusters
    (`12 HelmRelease(s) in clusters/main, 3 in clusters/test`)."""
    counts: dict[str, int] = {}
    for release in releases:
        counts[release.cluster] = counts.get(release.cluster, 0) + 1
    if set(counts) == {""}:
        return f"{counts['']} HelmRelease(s)"
    said = [f"{n} in {cluster or '(no cluster)'}" for cluster, n in sorted(counts.items())]
    return f"{said[0].replace(' in ', ' HelmRelease(s) in ', 1)}" + "".join(
        f", {s}" for s in said[1:]
    )


def _per_cluster(items: list[AuditObject], installs: dict[int, Installed]) -> bool:
    """A document rendered more than once (in several clusters, or by several Flux
    Kustomizations), none of them a Flux install: its renderings may need different fixes."""
    return len(items) > 1 and not any(id(i) in installs for i in items)


def _shared_document_ops(
    document: Document,
    items: list[AuditObject],
    patches: _Patches,
    covered: set[int],
    plan: Plan,
    places: ClusterPatches,
) -> tuple[list[JsonObject], str]:
    """The ops of a document several renderings share: what all of them need (`cluster_edits`);
    each one's remainder is planned as a patch of its own cluster, or is a problem. A rendering
    a defaults-patch edit covers takes the rest of its fix from that edit."""
    if all(id(i) in covered for i in items):
        return [], ""
    needs: list[Need] = []
    for item in items:
        # a rendering a defaults-patch edit covers still says what it needs (for the shared edit)
        covering = id(item) in covered
        ops = patches.ops(item.obj, item.cluster) if covering else _own_ops(item, patches, plan)[0]
        policies = tuple(patches.policies_of(item.obj, op) for op in ops)
        needs.append(Need(item, tuple(ops), policies))
    result = split(document, needs, places.inventory, covered=covered)
    plan.problems += [p for p in result.problems if p not in plan.problems]
    places.add(result.patches)
    return result.shared_ops, cluster_edits.shared_why(
        needs, result.shared_ops
    ) if result.shared_ops else ""


def _plan_cluster_patch(patch: ClusterPatch, plan: Plan) -> None:
    """One cluster's remainder as patches in its patch list (a Flux Kustomization's
    `spec.patches`, a cluster overlay's `patches`): a strategic-merge patch when the ops only
    add mapping keys, else JSON6902 ops by value."""
    tree = patch.document.obj or {}
    listed = _resolve(tree, patch.pointer)
    existing = list(listed) if isinstance(listed, list) else []
    strategic = [(o, ops, t) for o, ops, t in patch.fixes if mergeable(ops)]
    by_ops = [(o, ops) for o, ops, t in patch.fixes if not mergeable(ops)]
    edited, added = by_value(existing, by_ops)
    targets = {json.dumps(_target(o), sort_keys=True): t for o, _, t in patch.fixes}
    added = [
        {**a, "target": targets.get(json.dumps(a["target"], sort_keys=True), a["target"])}
        for a in added
    ]
    added += [_strategic_entry(o, ops, t) for o, ops, t in strategic]
    ops = patch_list_ops(patch.pointer, tree, edited, _like_siblings(existing, added))
    if ops:
        why = cluster_edits.why(patch)
        plan.edits.append(Edit(patch.document.source, patch.position, tuple(ops), why))


def _strategic_entry(
    obj: JsonObject, ops: list[JsonObject], target: dict[str, str]
) -> dict[str, Any]:
    """A strategic-merge patch entry that sets what `ops` add, for the object `target` names."""
    metadata = {k: v for k, v in target.items() if k in ("name", "namespace")}
    body: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": metadata,
    }
    for op in ops:
        parts = str(op["path"]).split("/")[1:]
        node = body
        parts = [p.replace("~1", "/").replace("~0", "~") for p in parts]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = op.get("value")
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    return {"patch": text, "target": target}


def _position(documents: Sequence[Document], document: Document) -> int:
    return next(i for i, d in enumerate(documents) if d is document)


def _needing_fix(items: list[AuditObject], covered: set[int]) -> AuditObject | None:
    """The rendering of a written object to fix it from: one no defaults-patch edit covers
    (that cluster still needs the file's own edit), else any."""
    if not items:
        return None
    return next((o for o in items if id(o) not in covered), items[0])


def _joined(*whys: str) -> str:
    return ", ".join(sorted({p for why in whys for p in why.split(", ") if p}))


def _own_ops(item: AuditObject, patches: _Patches, plan: Plan) -> tuple[list[JsonObject], str]:
    ops, why = patches.of(item.obj, item.cluster)
    if _writes_secret(ops, item):
        notice = f"{item.location.kind} not fixed: its fix holds a value from a Secret"
        problem = InputProblem(item.location.source, item.location.line, notice, True)
        if problem not in plan.problems:  # once for a document every cluster renders
            plan.problems.append(problem)
        return [], ""
    return ops, why


def _writes_secret(patch: list[JsonObject], item: AuditObject) -> bool:
    """Whether a fix would write (and print) a value Flux substitutes from a Secret."""
    if not item.secrets:
        return False
    text = json.dumps(patch)
    return any(json.dumps(secret)[1:-1] in text for secret in item.secrets)


def _is_generated(path: str, inventory: Inventory) -> bool:
    """A file `flux bootstrap` / `flux install --export` writes: `DO NOT EDIT` in its header."""
    if path == "-":
        return is_generated(inventory.stdin or "")
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            head = "".join(file.readline() for _ in range(5))
    except OSError:
        return False
    return is_generated(head)


def is_generated(text: str) -> bool:
    """A file `flux bootstrap` / `flux install --export` writes: `DO NOT EDIT` in its header."""
    return any("DO NOT EDIT" in line for line in text.splitlines()[:5])


def normalised_patch(obj: JsonObject, patch: list[JsonObject]) -> list[JsonObject]:
    """`patch` with an `add` at a list's end written as `/-` (it then applies on top of other
    patches that add to the same list, as the Flux docs write them)."""
    result: list[JsonObject] = []
    for op in patch:
        path = str(op.get("path", ""))
        head, _, last = path.rpartition("/")
        if op.get("op") == "add" and last.isdigit():
            parent = _resolve(obj, head)
            if isinstance(parent, list) and int(last) == len(parent):
                op = {**op, "path": f"{head}/-"}
        result.append(op)
    return result


def _resolve(obj: Any, pointer: str) -> Any:
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


# --- a Flux install's patch list ----------------------------------------------------------------


def _install_ops(
    installed: Installed, written: JsonObject, patches: _Patches
) -> tuple[list[JsonObject], str]:
    """The ops on the written install object that put its controllers' fixes into its patch
    list (by value, merged, never repeated), from the Deployments the inventory materialised."""
    ops, why = _instance_ops(installed, patches)
    if not is_flux_instance(written):
        ops = written_ops(installed.install, written, ops)
    return ops, why


def _instance_ops(installed: Installed, patches: _Patches) -> tuple[list[JsonObject], str]:
    """The controllers' fixes as ops on the FluxInstance's `/spec/kustomize/patches`."""
    fixes: Fixes = []
    policies: set[str] = set()
    for deployment in installed.deployments:
        ops, why = patches.of(deployment.obj, deployment.cluster)
        if ops:
            fixes.append((deployment.obj, ops))
            policies.update(p for p in why.split(", ") if p)
    instance = installed.install.instance
    edited, added = by_value(user_patches(instance), fixes)
    ops = patch_list_ops("/spec/kustomize/patches", instance, edited, added)
    return ops, ", ".join(sorted(policies))


def _into_values_file(
    installed: Installed, release: Document, patches: _Patches, plan: Plan
) -> None:
    """The controllers' fixes of a chart release whose patches come from `spec.valuesFrom`,
    written into the generated values file that holds them; else a problem saying where the
    patches must go (an edit of the release's `spec.values` would replace that list, as Helm
    merges lists)."""
    ops, why = _instance_ops(installed, patches)
    patch_list = (installed.install.instance.get("spec") or {}).get("kustomize", {}).get("patches")
    found = patches_file(release, patch_list or [], plan.documents)
    if found is not None:
        values = dataclasses.replace(installed.install, patches_pointer=VALUES_PATCHES)
        plan.edits.append(
            Edit(found.path, found.document, tuple(written_ops(values, found.obj, ops)), why)
        )
        return
    plan.problems.append(_unwritten(installed, why))


def _unwritten(installed: Installed, why: str) -> InputProblem:
    where = installed.item.location
    message = (
        f"{installed.install.what} not fixed ({why}): its instance.kustomize.patches come from "
        "spec.valuesFrom; add the patches there"
    )
    return InputProblem(where.source, where.line, message, True)


def by_value(patches: list[Any], fixes: Fixes) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Fixes of rendered objects as edits of a kustomize patch list: new texts of existing
    patches (by position in the list) and new entries (JSON6902 patches merged per target,
    strategic-merge patches for volumes, which kustomize merges by name)."""
    texts: dict[int, str] = {}
    rest: Fixes = []
    merges: list[dict[str, Any]] = []
    for obj, ops in fixes:
        current = [{**p, "patch": texts[i]} if i in texts else p for i, p in enumerate(patches)]
        value_plan = plan_by_value(current, obj, ops)
        texts.update(value_plan.texts)
        if value_plan.ops:
            rest.append((obj, value_plan.ops))
        merge = value_plan.merge_patch(obj)
        if merge is not None:
            text = yaml.safe_dump(merge, sort_keys=False, default_flow_style=False)
            merges.append({"patch": text, "target": _target(obj)})
    current = [{**p, "patch": texts[i]} if i in texts else p for i, p in enumerate(patches)]
    replaced, added = merge_json6902(current, rest)
    edited = {**texts, **replaced}
    for index, text in edited.items():  # keep the block's chomping: `|-` stays `|-`
        written = patches[index].get("patch")
        if isinstance(written, str) and not written.endswith("\n"):
            edited[index] = text.rstrip("\n")
    return edited, _like_siblings(patches, added + merges)


def patch_list_ops(
    pointer: str, obj: JsonObject, edited: dict[int, str], added: list[dict[str, Any]]
) -> list[JsonObject]:
    """Ops on `obj` that give the patch list at `pointer` the `edited` texts and `added`
    entries, creating the list (and the mappings above it) when it is missing."""
    ops: list[JsonObject] = [
        {"op": "replace", "path": f"{pointer}/{i}/patch", "value": text}
        for i, text in sorted(edited.items())
    ]
    if not added:
        return ops
    if isinstance(_resolve(obj, pointer), list):
        return ops + [{"op": "add", "path": f"{pointer}/-", "value": a} for a in added]
    parts = pointer.strip("/").split("/")
    value: Any = added
    while len(parts) > 1 and not isinstance(_resolve(obj, "/" + "/".join(parts[:-1])), dict):
        value = {parts[-1]: value}
        parts.pop()
    return [*ops, {"op": "add", "path": "/" + "/".join(parts), "value": value}]


def _target(obj: JsonObject) -> dict[str, str]:
    return {"kind": str(obj.get("kind")), "name": str((obj.get("metadata") or {}).get("name"))}


def merge_json6902(patches: list[Any], edits: Fixes) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Each object's ops as a JSON6902 patch (target kind + name) among `patches`, the way
    the Flux docs write them: merged into the patch with the same target when there is one
    (index -> its new text), else a new entry; an op already there is never added again."""
    replaced: dict[int, str] = {}
    added: list[dict[str, Any]] = []
    for obj, ops in edits:
        target = _target(obj)
        index = next((i for i, p in enumerate(patches) if _json6902_for(p, target)), None)
        new_entry = next((a for a in added if a["target"] == target), None)
        if index is not None:
            existing = yaml.safe_load(replaced.get(index) or patches[index]["patch"])
        else:
            existing = yaml.safe_load(new_entry["patch"]) if new_entry else []
        merged = _merged_ops(existing, ops)
        if merged == existing:
            continue
        text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
        if index is not None:
            replaced[index] = text
        elif new_entry is not None:
            new_entry["patch"] = text
        else:
            added.append({"patch": text, "target": target})
    return replaced, added


def _json6902_for(entry: Any, target: dict[str, str]) -> bool:
    return (
        isinstance(entry, dict)
        and dict(entry.get("target") or {}) == target
        and isinstance(entry.get("patch"), str)
        and isinstance(yaml.safe_load(entry["patch"]), list)
    )


def _like_siblings(patches: list[Any], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New entries with `target` first when the entries already there write it first."""
    first = next((next(iter(p), None) for p in patches if isinstance(p, dict) and p), None)
    if first != "target":
        return added
    return [{"target": a["target"], "patch": a["patch"]} for a in added]


def _merged_ops(existing: list[Any], ops: list[JsonObject]) -> list[Any]:
    """`existing` with `ops` added; an op that writes a path an existing op already writes
    (not an append) replaces that op's value instead of writing the path twice."""
    merged = [dict(op) if isinstance(op, dict) else op for op in existing]
    for op in ops:
        if op in merged:
            continue
        same = next((m for m in merged if _writes_same(m, op)), None)
        if same is not None:
            same["value"] = op.get("value")
        else:
            merged.append(op)
    return merged


def _writes_same(written: Any, op: JsonObject) -> bool:
    return (
        isinstance(written, dict)
        and written.get("path") == op.get("path")
        and written.get("op") in ("add", "replace")
        and op.get("op") in ("add", "replace")
        and not str(op.get("path", "")).endswith("/-")
    )


# --- generated files ----------------------------------------------------------------------------


def including_kustomization(file: Path) -> Path | None:
    """The kustomization file in a generated file's directory (it includes that file)."""
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        candidate = file.parent / name
        if candidate.is_file():
            return candidate
    return None


def _plan_generated(path: str, fixes: Fixes, plan: Plan) -> None:
    """Fixes of a generated file's objects as an edit of the `patches` of the kustomization
    file that includes it: by value, as a FluxInstance's patches are edited."""
    kustomization = including_kustomization(Path(path))
    if kustomization is None:
        message = "not fixed: generated file (DO NOT EDIT) with no kustomization.yaml to patch"
        plan.problems.append(InputProblem(path, 1, message, True))
        return
    name = str(kustomization)
    documents = plan.documents.get(name) or _read_documents(kustomization, name)
    plan.documents[name] = documents
    if not documents or not isinstance(documents[0].obj, dict):
        plan.problems.append(InputProblem(name, 0, "not fixed: not a kustomization", True))
        return
    tree = documents[0].obj
    existing = tree.get("patches") if isinstance(tree.get("patches"), list) else []
    edited, added = by_value(list(existing or []), fixes)
    ops = patch_list_ops("/patches", tree, edited, added)
    if ops:
        why = f"fixes of generated {Path(path).name}: " + ", ".join(_kinds_and_names(fixes))
        plan.edits.append(Edit(name, 0, tuple(ops), why))


def _read_documents(file: Path, name: str) -> list[Document]:
    try:
        return list(parse_stream(file.read_text(encoding="utf-8"), name))
    except (OSError, UnicodeDecodeError):
        return []


def _kinds_and_names(fixes: Fixes) -> list[str]:
    return [f"{o.get('kind')}/{_target(o)['name']}" for o, _ in fixes]


def edits_by_document(edits: Sequence[Edit]) -> dict[tuple[str, int], list[JsonObject]]:
    """(file, document position) -> the ops of every edit of that document, in plan order."""
    grouped: dict[tuple[str, int], list[JsonObject]] = {}
    for edit in edits:
        grouped.setdefault((edit.path, edit.document), []).extend(edit.ops)
    return grouped
