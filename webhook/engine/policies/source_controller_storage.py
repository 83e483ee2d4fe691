"""source-controller storage: an unbounded /tmp next to an emptyDir /data fills the node's disk."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, Request
from ..resources import DEPLOYMENTS
from .base import (
    Native,
    NativeFinding,
    NativeMutation,
    Params,
    Policy,
    Quantity,
    Report,
    dig,
    named_container,
)


class StorageParams(Params):
    deployment: str = "source-controller"
    container: str = "manager"
    namespaces: list[str] = Field(default_factory=lambda: ["flux-system"])
    tmp_size_limit: Quantity = Field(default="2Gi", alias="tmpSizeLimit")


def _volume_mounted_at(pod_spec: JsonObject, container: JsonObject, path: str) -> JsonObject | None:
    for mount in container.get("volumeMounts") or []:
        if isinstance(mount, dict) and mount.get("mountPath", "").rstrip("/") == path:
            for volume in pod_spec.get("volumes") or []:
                if isinstance(volume, dict) and volume.get("name") == mount.get("name"):
                    return volume
    return None


class SourceControllerStorage(Policy[StorageParams]):
    name: ClassVar[str] = "source-controller-storage"
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "an unbounded /tmp fills the node's ephemeral storage"
    summary: ClassVar[str] = (
        "source-controller fills the node's disk through an unbounded /tmp: warn when /data is an "
        "emptyDir and /tmp has no sizeLimit, and set one when enforced"
    )
    params_model = StorageParams

    def scope(self, params: StorageParams) -> tuple[Match, ...]:
        return (
            Match(
                resources=(ResourceMatch(DEPLOYMENTS),),
                namespaces=frozenset(params.namespaces),
                names=frozenset({params.deployment}),
            ),
        )

    def check(
        self,
        obj: JsonObject,
        *,
        request: Request,
        params: StorageParams,
        lookups: Lookups,
        report: Report,
    ) -> None:
        pod_spec = dig(obj, "spec", "template", "spec")
        container = named_container(pod_spec, params.container)
        if not isinstance(pod_spec, dict) or container is None:
            report.advise(f"no container named {params.container!r}; storage not checked")
            return
        data = _volume_mounted_at(pod_spec, container, "/data")
        if data is None or "emptyDir" not in data:
            return  # persistent /data: artifacts do not land on the node's ephemeral storage
        tmp = _volume_mounted_at(pod_spec, container, "/tmp")
        if tmp is None:
            report.advise("/tmp is not a volume: downloads go to the container's writable layer")
            return
        if "emptyDir" not in tmp or dig(tmp, "emptyDir", "sizeLimit") is not None:
            return
        empty_dir = tmp.get("emptyDir")
        if not isinstance(empty_dir, dict):
            empty_dir = {}
            tmp["emptyDir"] = empty_dir
        empty_dir["sizeLimit"] = params.tmp_size_limit
        report.changed(
            f"volumes[{tmp.get('name')}].emptyDir.sizeLimit", None, params.tmp_size_limit
        )

    def native(self, params: StorageParams) -> Native:
        pod = "object.spec.template.spec"
        manager = f"{pod}.containers[variables.index]"
        size = cel_string(params.tmp_size_limit)

        def mounted_at(path: str) -> str:
            """Names of the manager's volumes mounted at `path` (trailing slashes ignored)."""
            return (
                f"variables.index >= 0 && has({manager}.volumeMounts) && has({pod}.volumes) "
                f"? {manager}.volumeMounts.filter(m, m.mountPath.matches({cel_string(f'^{path}/*$')})"
                f" && {pod}.volumes.exists(v, v.name == m.name)).map(m, m.name) : []"
            )

        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                (
                    "index",
                    f"has(object.spec.template) && has({pod}) "
                    f"? {pod}.containers.map(c, c.name).indexOf({cel_string(params.container)}) "
                    ": -1",
                ),
                ("data", mounted_at("/data")),
                (
                    "ephemeralData",
                    f"size(variables.data) > 0 && "
                    f"{pod}.volumes.exists(v, v.name == variables.data[0] && has(v.emptyDir))",
                ),
                ("tmp", mounted_at("/tmp")),
                (
                    "tmpIndex",
                    f"size(variables.tmp) > 0 "
                    f"? {pod}.volumes.map(v, v.name).indexOf(variables.tmp[0]) : -1",
                ),
                (
                    "setLimit",
                    "variables.ephemeralData && variables.tmpIndex >= 0 && "
                    f"has({pod}.volumes[variables.tmpIndex].emptyDir) && "
                    f"!has({pod}.volumes[variables.tmpIndex].emptyDir.sizeLimit)",
                ),
            ),
            findings=(
                NativeFinding(
                    "advisory",
                    "variables.index < 0",
                    cel_string(f"no container named {params.container!r}; storage not checked"),
                ),
                NativeFinding(
                    "advisory",
                    "variables.ephemeralData && size(variables.tmp) == 0",
                    cel_string(
                        "/tmp is not a volume: downloads go to the container's writable layer"
                    ),
                ),
                NativeFinding(
                    "change",
                    "variables.setLimit",
                    "'set volumes[' + variables.tmp[0] + '].emptyDir.sizeLimit to ' + "
                    f"{size} + ' (was unset)'",
                ),
            ),
            mutations=(
                NativeMutation(
                    "variables.setLimit ? [JSONPatch{op: 'add', path: '/spec/template/spec/volumes/' "
                    f"+ string(variables.tmpIndex) + '/emptyDir/sizeLimit', value: {size}}}] : []"
                ),
            ),
        )
