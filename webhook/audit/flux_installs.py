"""Flux installed the ways users write it, each seen as the FluxInstance it amounts to.

- A `FluxInstance` as written.
- A HelmRelease of the Flux Operator's `flux-instance` chart: the chart turns `values.instance`
  (merged over the chart's defaults, as Helm merges values) into a FluxInstance in the release's
  namespace (controlplaneio-fluxcd/charts `charts/flux-instance/templates/instance.yaml` and
  `values.yaml`, chart 0.49.0 at commit fc87d3b3f55bc28becb11126dadcde2bedf648a0). Its values
  are helm-controller's: each `spec.valuesFrom` ConfigMap in order, then `spec.values` over them
  (helm-controller `internal/chartutil/values.go`). A value from a Secret or a ConfigMap not in the
  repo is unknown: that install is not audited, and says so.
- A Flux Kustomization of the `flux-manifests` OCI artifact (flux2's release workflow pushes
  `flux install --components-extra=image-reflector-controller,image-automation-controller
  --export` there, tagged with the Flux version): the upstream controllers at that version, with
  the Kustomization's `spec.patches` applied (no operator profile).

Each install knows where its patches are written in the object the user edits (`patches_pointer`)
and maps the instance's fields to that object's (`pointer`), so findings point at the user's
lines and fixes land in the user's patches.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..engine import JsonObject
from .fluxinstance import FLUX_INSTANCE_GROUP, NOT_AUDITED, is_flux_instance

CHART = "flux-instance"
# The chart's values.yaml defaults that its template reads (see the module docstring).
CHART_DEFAULTS: dict[str, Any] = {
    "fullnameOverride": "flux",
    "instance": {
        "distribution": {"version": "2.x", "registry": "ghcr.io/fluxcd"},
        "components": [
            "source-controller",
            "kustomize-controller",
            "helm-controller",
            "notification-controller",
        ],
        "cluster": {
            "type": "kubernetes",
            "size": "",
            "domain": "cluster.local",
            "networkPolicy": True,
            "multitenant": False,
            "tenantDefaultServiceAccount": "default",
        },
        "storage": {"class": "", "size": ""},
        "sharding": {"key": "sharding.fluxcd.io/key", "shards": []},
        "sync": {
            "interval": "1m",
            "kind": "GitRepository",
            "url": "",
            "ref": "",
            "path": "",
            "pullSecret": "",
            "name": "",
            "provider": "",
        },
        "kustomize": {"patches": []},
    },
}
# flux2 .github/workflows/release.yaml (release-flux-manifests): what the artifact installs.
MANIFESTS_COMPONENTS = [
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "notification-controller",
    "image-reflector-controller",
    "image-automation-controller",
]
_MANIFESTS_URL = re.compile(r"^oci://(?P<registry>.+)/flux-manifests/?$")
# the chart template's `sync` keys (rendered only when `instance.sync.url` is set)
_SYNC_KEYS = ("kind", "interval", "url", "ref", "path", "name", "provider", "pullSecret")


@dataclass(frozen=True)
class FluxInstall:
    """A FluxInstance as some written object amounts to."""

    instance: JsonObject
    what: str  # how notes and notices name it
    patches_pointer: str  # the user's patch list in the written object ("": not written there)
    prefix: str  # written object's pointer of the instance's `/spec` ("" : not written there)

    def pointer(self, instance_pointer: str) -> str | None:
        """The written object's pointer for an instance field (None: not written there)."""
        if instance_pointer.startswith("/spec/kustomize/patches"):
            if not self.patches_pointer:
                return None
            return self.patches_pointer + instance_pointer.removeprefix("/spec/kustomize/patches")
        if self.prefix and instance_pointer.startswith("/spec/"):
            return self.prefix + instance_pointer.removeprefix("/spec")
        return None


def _merged(defaults: Any, values: Any) -> Any:
    """Helm's value merge: maps merged key by key, anything else replaced."""
    if isinstance(defaults, dict) and isinstance(values, dict):
        merged = dict(defaults)
        for key, value in values.items():
            merged[key] = _merged(defaults.get(key), value) if key in defaults else value
        return merged
    return copy.deepcopy(values) if values is not None else copy.deepcopy(defaults)


def _meta(obj: JsonObject) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: JsonObject) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _chart_name(release: JsonObject, sources: Mapping[tuple[str, str, str], JsonObject]) -> str:
    """The chart a HelmRelease installs: `spec.chart.spec.chart`, or the last path segment of
    the OCIRepository its `spec.chartRef` names."""
    chart = (_spec(release).get("chart") or {}).get("spec") or {}
    if isinstance(chart, dict) and chart.get("chart"):
        return str(chart["chart"]).rsplit("/", 1)[-1]
    ref = _spec(release).get("chartRef")
    if not isinstance(ref, dict):
        return ""
    namespace = str(ref.get("namespace") or _meta(release).get("namespace") or "")
    source = sources.get((str(ref.get("kind") or ""), namespace, str(ref.get("name") or "")))
    url = str(_spec(source).get("url") or "") if source else ""
    return url.rstrip("/").rsplit("/", 1)[-1]


def _values_from(
    release: JsonObject, index: Mapping[tuple[str, str, str], JsonObject]
) -> tuple[Any, str | None]:
    """(the values the release's `spec.valuesFrom` give, merged in order; why they are unknown)."""
    namespace = str(_meta(release).get("namespace") or "")
    merged: Any = {}
    for ref in _spec(release).get("valuesFrom") or []:
        if not isinstance(ref, dict):
            continue
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        key = str(ref.get("valuesKey") or "values.yaml")
        if kind != "ConfigMap" or ref.get("targetPath"):
            return merged, f"its values come from {kind} {namespace}/{name}, not read"
        data = _spec_data(index.get((kind, namespace, name)))
        if data is None or key not in data:
            if ref.get("optional") is True:
                continue
            return merged, f"its values come from ConfigMap {namespace}/{name}, not in the repo"
        try:
            loaded = yaml.safe_load(str(data[key]))
        except yaml.YAMLError:
            return merged, f"ConfigMap {namespace}/{name} key {key} is not YAML"
        merged = _merged(merged, loaded if isinstance(loaded, dict) else {})
    return merged, None


def _spec_data(configmap: JsonObject | None) -> dict[str, Any] | None:
    data = configmap.get("data") if configmap else None
    return data if isinstance(data, dict) else None


def _chart_instance(
    release: JsonObject, index: Mapping[tuple[str, str, str], JsonObject] | None = None
) -> JsonObject:
    """What instance.yaml renders from the release's values over the chart defaults."""
    from_refs, unknown = _values_from(release, index or {})
    values = _merged(_merged(CHART_DEFAULTS, from_refs), _spec(release).get("values") or {})
    wanted = values["instance"]
    spec: dict[str, Any] = {
        "distribution": wanted.get("distribution") or {},
        "components": wanted.get("components") or [],
        "cluster": {
            k: v
            for k, v in (wanted.get("cluster") or {}).items()
            if not (isinstance(v, str) and v == "")
        },
        "kustomize": wanted.get("kustomize") or {"patches": []},
    }
    sync = wanted.get("sync") if isinstance(wanted.get("sync"), dict) else {}
    if sync.get("url"):
        spec["sync"] = {k: sync[k] for k in _SYNC_KEYS if sync.get(k) not in (None, "")}
    if (wanted.get("storage") or {}).get("size"):
        spec["storage"] = wanted["storage"]
    if (wanted.get("sharding") or {}).get("shards"):
        spec["sharding"] = wanted["sharding"]
    namespace = _spec(release).get("targetNamespace") or _meta(release).get("namespace")
    metadata: dict[str, Any] = {
        "name": str(values.get("fullnameOverride") or CHART),
        "namespace": namespace,
    }
    if unknown:
        metadata["annotations"] = {NOT_AUDITED: unknown}
    return {
        "apiVersion": f"{FLUX_INSTANCE_GROUP}/v1",
        "kind": "FluxInstance",
        "metadata": metadata,
        "spec": spec,
    }


def _patches_written(release: JsonObject) -> bool:
    """Whether a fix may add to the release's `values.instance.kustomize.patches`: Helm replaces
    lists, so when `valuesFrom` may hold the patches and `spec.values` does not, a list written
    there would drop them."""
    if not _spec(release).get("valuesFrom"):
        return True
    values = _spec(release).get("values")
    kustomize = _resolve(values, "/instance/kustomize") if isinstance(values, dict) else None
    return isinstance(kustomize, dict) and isinstance(kustomize.get("patches"), list)


def _manifests_instance(
    kustomization: JsonObject, sources: Mapping[tuple[str, str, str], JsonObject]
) -> tuple[JsonObject, str] | None:
    """(the FluxInstance a `flux-manifests` Kustomization amounts to, its OCIRepository's
    name), or None when its source is not that artifact."""
    source = flux_manifests_source(kustomization, sources)
    if source is None:
        return None
    found = _MANIFESTS_URL.match(str(_spec(source).get("url") or ""))
    assert found is not None
    tag = str((_spec(source).get("ref") or {}).get("tag") or "")
    namespace = _spec(kustomization).get("targetNamespace") or _meta(kustomization).get("namespace")
    instance = {
        "apiVersion": f"{FLUX_INSTANCE_GROUP}/v1",
        "kind": "FluxInstance",
        "metadata": {"name": _meta(kustomization).get("name"), "namespace": namespace},
        "spec": {
            "distribution": {"version": tag.removeprefix("v"), "registry": found["registry"]},
            "components": list(MANIFESTS_COMPONENTS),
            "kustomize": {"patches": list(_spec(kustomization).get("patches") or [])},
        },
    }
    return instance, f"OCIRepository {_meta(source).get('namespace')}/{_meta(source).get('name')}"


def flux_manifests_source(
    kustomization: JsonObject, sources: Mapping[tuple[str, str, str], JsonObject]
) -> JsonObject | None:
    """The OCIRepository of the `flux-manifests` artifact a Flux Kustomization applies, if so."""
    ref = _spec(kustomization).get("sourceRef")
    if not isinstance(ref, dict) or ref.get("kind") != "OCIRepository":
        return None
    namespace = str(ref.get("namespace") or _meta(kustomization).get("namespace") or "")
    source = sources.get(("OCIRepository", namespace, str(ref.get("name") or "")))
    if source is None or not _MANIFESTS_URL.match(str(_spec(source).get("url") or "")):
        return None
    return source


def source_index(objects: list[JsonObject]) -> dict[tuple[str, str, str], JsonObject]:
    """Flux sources and ConfigMaps by (kind, namespace, name), for chartRef, sourceRef and
    valuesFrom lookups."""
    return {
        (str(o.get("kind")), str(_meta(o).get("namespace") or ""), str(_meta(o).get("name"))): o
        for o in objects
        if isinstance(o, dict)
        and (
            str(o.get("apiVersion", "")).startswith("source.toolkit.fluxcd.io/")
            or (o.get("apiVersion") == "v1" and o.get("kind") == "ConfigMap")
        )
    }


def flux_install(
    obj: JsonObject, sources: Mapping[tuple[str, str, str], JsonObject]
) -> FluxInstall | None:
    """The FluxInstance `obj` amounts to, or None when it installs no Flux."""
    name = f"{_meta(obj).get('namespace') or ''}/{_meta(obj).get('name') or ''}".lstrip("/")
    if is_flux_instance(obj):
        return FluxInstall(obj, f"FluxInstance {name}", "/spec/kustomize/patches", "/spec")
    kind = obj.get("kind")
    group = str(obj.get("apiVersion", "")).split("/")[0]
    if kind == "HelmRelease" and group == "helm.toolkit.fluxcd.io":
        if _chart_name(obj, sources) != CHART:
            return None
        what = f"HelmRelease {name} (flux-instance chart values)"
        prefix = "/spec/values/instance"
        patches = prefix + "/kustomize/patches" if _patches_written(obj) else ""
        return FluxInstall(_chart_instance(obj, sources), what, patches, prefix)
    if kind == "Kustomization" and group == "kustomize.toolkit.fluxcd.io":
        found = _manifests_instance(obj, sources)
        if found is None:
            return None
        instance, source = found
        what = f"Kustomization {name} (flux-manifests from {source})"
        return FluxInstall(instance, what, "/spec/patches", "")
    return None


def written_ops(
    install: FluxInstall, written: JsonObject, ops: list[JsonObject]
) -> list[JsonObject]:
    """A fix of the instance's `spec.kustomize.patches` as ops on the written object: into its
    patch list when it has one, else one `add` that creates the missing sections."""
    pointer = install.patches_pointer
    if not pointer:
        return []  # the patches are not written in this object: an edit here would drop them
    mapped = []
    for op in ops:
        path = str(op.get("path", ""))
        if path.startswith("/spec/kustomize/patches/"):
            mapped.append({**op, "path": pointer + path.removeprefix("/spec/kustomize/patches")})
    siblings = _resolve(written, pointer)
    if siblings is not None or not mapped:
        return [_like(siblings, op) for op in mapped]
    added = [op["value"] for op in mapped if op["op"] == "add" and op["path"].endswith("/-")]
    parts = pointer.strip("/").split("/")
    value: Any = added
    while len(parts) > 1 and _resolve(written, "/" + "/".join(parts[:-1])) is None:
        value = {parts[-1]: value}
        parts.pop()
    return [{"op": "add", "path": "/" + "/".join(parts), "value": value}]


def _like(siblings: Any, op: JsonObject) -> JsonObject:
    """An added patch entry with its keys in the order the written entries use (the rendered
    object the fix was computed on has kustomize's sorted keys)."""
    first = next((e for e in siblings or [] if isinstance(e, dict) and e), None)
    value = op.get("value")
    if first is None or op.get("op") != "add" or not isinstance(value, dict):
        return op
    order = [k for k in first if k in value] + [k for k in value if k not in first]
    return {**op, "value": {k: value[k] for k in order}}


def _resolve(obj: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
