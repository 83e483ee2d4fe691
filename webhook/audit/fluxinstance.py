"""A Flux Operator `FluxInstance` as the controller Deployments it installs.

The operator builds the Flux distribution's manifests, adds its profiles (`spec.cluster.size`,
`spec.storage`) and then the instance's `spec.kustomize.patches`, with kustomize. This module does
the same for the controller Deployments from recorded facts (`flux_distribution.yaml`, each fact
with its upstream source) and the real kustomize, so the policies judge what the cluster would run.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from ..engine import JsonObject
from .kustomize_runner import failure, run_kustomize
from .patch_values import target_matches

FLUX_INSTANCE_GROUP = "fluxcd.controlplane.io"
# set (with the reason) on an instance built from values fluxwarden cannot read (a HelmRelease's
# valuesFrom Secret): its controllers are reported as not audited, never guessed from defaults
NOT_AUDITED = "fluxwarden.io/not-audited"
_DATA = "flux_distribution.yaml"
_VERSION = re.compile(r"(\d+)(?:\.(\d+|[xX*]))?")
_CHECKED_MINORS = range(3, 10)  # Flux 2.3 .. 2.9: the releases whose manifests were read
_BUILD_TIMEOUT = 60


def is_flux_instance(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("kind") == "FluxInstance"
        and isinstance(obj.get("apiVersion"), str)
        and obj["apiVersion"].startswith(FLUX_INSTANCE_GROUP + "/")
    )


@cache
def distribution_facts() -> dict[str, Any]:
    """The recorded controller defaults (see the data file for each fact's source)."""
    text = resources.files(__package__).joinpath(_DATA).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Materialised:
    """The Deployments a FluxInstance installs; `problem` says what could not be audited
    (all of it when `deployments` is empty)."""

    deployments: list[JsonObject]
    problem: str | None = None
    # the instance itself is broken (its patches do not apply): the operator would fail to
    # install it, so an audit must not pass it (exit 2), never drop its controllers quietly
    broken: bool = False


def _spec(obj: JsonObject) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _section(obj: JsonObject, name: str) -> dict[str, Any]:
    value = _spec(obj).get(name)
    return value if isinstance(value, dict) else {}


def version_problem(instance: JsonObject) -> str | None:
    """Why the instance's `spec.distribution.version` is outside the recorded facts (or None)."""
    version = str(_section(instance, "distribution").get("version") or "")
    found = _VERSION.search(version)
    if found is None:
        return f"spec.distribution.version {version!r} is not a Flux version range"
    major, minor = found.group(1), found.group(2)
    if major == "2" and (minor is None or not minor.isdigit() or int(minor) in _CHECKED_MINORS):
        return None
    return (
        f"controller defaults of Flux {version!r} are not recorded (fluxwarden knows Flux "
        f"2.{_CHECKED_MINORS.start}..2.{_CHECKED_MINORS.stop - 1}); its controllers are not audited"
    )


def components(instance: JsonObject) -> list[str]:
    listed = _spec(instance).get("components")
    if isinstance(listed, list) and listed:
        return [str(c) for c in listed]
    return list(distribution_facts()["defaultComponents"])


def controller_deployments(instance: JsonObject) -> tuple[list[JsonObject], list[str]]:
    """(the controller Deployments with the operator's own patches, before the instance's
    `spec.kustomize.patches`; components not recorded)."""
    facts = distribution_facts()
    namespace = str((instance.get("metadata") or {}).get("namespace") or "flux-system")
    registry = str(_section(instance, "distribution").get("registry") or facts["registry"])
    upstream: list[JsonObject] = []
    unknown: list[str] = []
    for name in components(instance):
        controller = facts["controllers"].get(name)
        if controller is None:
            unknown.append(name)
            continue
        upstream.append(_deployment(name, controller, namespace=namespace, registry=registry))
    main = [(d, False) for d in _copies(upstream)]
    shards = _shards(instance, upstream)
    for step in _operator_patches(instance):
        for deployment, is_shard in main + shards:
            if not (is_shard and step.get("mainOnly")) and target_matches(
                step["target"], deployment
            ):
                _apply_in_place(deployment, step["ops"])
    return [d for d, _ in main + shards], unknown


def _copies(deployments: list[JsonObject]) -> list[JsonObject]:
    return [yaml.safe_load(yaml.safe_dump(d)) for d in deployments]


def _apply_in_place(deployment: JsonObject, ops: list[JsonObject]) -> None:
    patched = jsonpatch.apply_patch(deployment, ops)
    deployment.clear()
    deployment.update(patched)


def _filled(value: Any, fills: dict[str, str]) -> Any:
    """`value` with `{name}` placeholders of the recorded patches replaced."""
    if isinstance(value, str):
        for name, fill in fills.items():
            value = value.replace("{" + name + "}", fill)
        return value
    if isinstance(value, list):
        return [_filled(v, fills) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, fills) for k, v in value.items()}
    return value


def _sharding_key(instance: JsonObject) -> str:
    return str(_section(instance, "sharding").get("key") or "sharding.fluxcd.io/key")


def _operator_patches(instance: JsonObject) -> list[dict[str, Any]]:
    """The operator's patches for this instance, in the order it applies them."""
    operator = distribution_facts()["operator"]
    cluster = _section(instance, "cluster")
    steps: list[dict[str, Any]] = []
    if _spec(instance).get("storage"):
        steps += operator["storage"]
    if _section(instance, "sharding").get("shards"):
        steps += operator["sharding"]["main"]
    steps += operator["sizes"].get(str(cluster.get("size") or ""), [])
    if cluster.get("multitenant") is True:
        steps += operator["multitenant"]
    if "source-watcher" in components(instance):
        steps += operator["sourceWatcher"]
    account = str(cluster.get("tenantDefaultServiceAccount") or "default")
    return list(_filled(steps, {"key": _sharding_key(instance), "account": account}))


def _shards(instance: JsonObject, upstream: list[JsonObject]) -> list[tuple[JsonObject, bool]]:
    """Each shard's copies of the sharded controllers (`<name>-<shard>`), with the shard's own
    patches applied (the operator builds them from the upstream manifests)."""
    sharding = _section(instance, "sharding")
    names = sharding.get("shards")
    if not isinstance(names, list):
        return []
    recorded = distribution_facts()["operator"]["sharding"]
    persistent = sharding.get("storage") == "persistent" and bool(_spec(instance).get("storage"))
    steps_of_shard = recorded["shard"] + (recorded["shardStorage"] if persistent else [])
    result: list[tuple[JsonObject, bool]] = []
    for shard in map(str, names):
        fills = {"key": _sharding_key(instance), "shard": shard}
        for deployment in _copies([d for d in upstream if _name(d) in recorded["sharded"]]):
            for step in _filled(steps_of_shard, fills):
                if target_matches(step["target"], deployment):
                    _apply_in_place(deployment, step["ops"])
            deployment["metadata"]["name"] = f"{_name(deployment)}-{shard}"
            result.append((deployment, True))
    return result


def _name(obj: JsonObject) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _deployment(
    name: str, controller: dict[str, Any], *, namespace: str, registry: str
) -> JsonObject:
    facts = distribution_facts()
    args = list(controller["args"])
    if controller["events"]:
        args.insert(
            0, f"--events-addr=http://notification-controller.{namespace}.svc.cluster.local./"
        )
    resources_ = {"limits": dict(facts["limits"]), "requests": dict(controller["requests"])}
    volumes = controller["volumes"]
    pod: dict[str, Any] = {
        "serviceAccountName": name,
        "securityContext": {"fsGroup": 1337},
        "containers": [
            {
                "name": "manager",
                "image": f"{registry}/{name}",
                "args": args,
                "env": [
                    {
                        "name": "RUNTIME_NAMESPACE",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                    {
                        "name": "GOMEMLIMIT",
                        "valueFrom": {
                            "resourceFieldRef": {
                                "containerName": "manager",
                                "resource": "limits.memory",
                            }
                        },
                    },
                ],
                "resources": resources_,
                "volumeMounts": [{"name": v, "mountPath": p} for v, p in volumes.items()],
            }
        ],
        "volumes": [{"name": v, "emptyDir": {}} for v in volumes],
    }
    if controller["priorityClass"]:
        pod["priorityClassName"] = "system-cluster-critical"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/component": name, "app.kubernetes.io/part-of": "flux"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }


def user_patches(instance: JsonObject) -> list[Any]:
    patches = _section(instance, "kustomize").get("patches")
    return list(patches) if isinstance(patches, list) else []


def materialise(instance: JsonObject, command: list[str]) -> Materialised:
    """The instance's controller Deployments with its `spec.kustomize.patches` applied by
    kustomize, as the operator builds them."""
    unknown_values = ((instance.get("metadata") or {}).get("annotations") or {}).get(NOT_AUDITED)
    if unknown_values:
        return Materialised([], f"not audited: {unknown_values}")
    problem = version_problem(instance)
    if problem is not None:
        return Materialised([], problem)
    deployments, unknown = controller_deployments(instance)
    notice = f"spec.components not recorded, not audited: {', '.join(unknown)}" if unknown else None
    patches = user_patches(instance)
    if not patches:
        return Materialised(deployments, notice)
    with tempfile.TemporaryDirectory(prefix="fluxwarden-instance-") as work:
        directory = Path(work)
        (directory / "deployments.yaml").write_text(
            yaml.safe_dump_all(deployments, sort_keys=False), encoding="utf-8"
        )
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["deployments.yaml"],
            "patches": patches,
        }
        (directory / "kustomization.yaml").write_text(
            yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8"
        )
        try:
            built = run_kustomize(command, directory, timeout=_BUILD_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            return Materialised([], f"cannot build its spec.kustomize.patches: {error}")
    if built.returncode != 0:
        message = failure(built.stderr, work=directory)
        problem = f"kustomize cannot apply its spec.kustomize.patches ({message})"
        return Materialised([], problem, broken=True)
    rendered = [o for o in yaml.safe_load_all(built.stdout) if isinstance(o, dict)]
    return Materialised(rendered, notice)
