"""source-controller storage: an unbounded /tmp and /data on emptyDirs fill the node's disk.

Flux's advice is a PersistentVolumeClaim for /data (artifacts survive restarts and stay off the
node's ephemeral storage); `dataVolumeClaim` opts in. The claim is looked up first: a pod that
waits for a missing claim is worse than a full disk, so without it the Deployment is left alone.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..match import Match, ResourceMatch, cel_string
from ..model import JsonObject, Lookups, LookupUnavailable, Request
from ..resources import DEPLOYMENTS, PERSISTENT_VOLUME_CLAIMS
from .base import (
    MANAGER,
    POD_SPEC,
    Native,
    NativeFinding,
    NativeMutation,
    Params,
    Policy,
    Quantity,
    Read,
    Report,
    container_index,
    dig,
    metadata,
    named_container,
)

# Access modes a single node attaches: the new pod of a rolling update cannot start elsewhere.
_SINGLE_NODE_ACCESS = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})


class StorageParams(Params):
    deployment: str = "source-controller"
    container: str = "manager"
    namespaces: list[str] = Field(default_factory=lambda: ["flux-system"])
    tmp_size_limit: Quantity = Field(default="2Gi", alias="tmpSizeLimit")
    data_size_limit: Quantity = Field(default="10Gi", alias="dataSizeLimit")
    data_volume_claim: str = Field(
        default="",
        alias="dataVolumeClaim",
        description="PersistentVolumeClaim (in the Deployment's namespace) to put /data on "
        'instead of its emptyDir; "" keeps the emptyDir, bounded by dataSizeLimit.',
    )


def _volume_mounted_at(pod_spec: JsonObject, container: JsonObject, path: str) -> JsonObject | None:
    for mount in container.get("volumeMounts") or []:
        if isinstance(mount, dict) and mount.get("mountPath", "").rstrip("/") == path:
            for volume in pod_spec.get("volumes") or []:
                if isinstance(volume, dict) and volume.get("name") == mount.get("name"):
                    return volume
    return None


class SourceControllerStorage(Policy[StorageParams]):
    name: ClassVar[str] = "source-controller-storage"
    sources: ClassVar[tuple[str, ...]] = (
        "https://github.com/fluxcd/flux2/issues/4688",
        "https://github.com/fluxcd/flux2/issues/4305",
        "https://github.com/fluxcd/source-controller/issues/1793",
    )
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    reason: ClassVar[str] = "emptyDirs without a bound fill the node's ephemeral storage"
    summary: ClassVar[str] = (
        "source-controller fills the node's disk through emptyDir /tmp and /data: set their "
        "sizeLimit, or move /data to the PersistentVolumeClaim `dataVolumeClaim` when it exists"
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

    def reads(self, params: StorageParams) -> tuple[Read, ...]:
        if not params.data_volume_claim:
            return ()
        return (Read(PERSISTENT_VOLUME_CLAIMS, frozenset({params.data_volume_claim})),)

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
        if params.data_volume_claim:
            namespace = request.target.namespace or str(metadata(obj).get("namespace") or "")
            _move_data_to_claim(
                obj, data, namespace=namespace, params=params, lookups=lookups, report=report
            )
        else:
            _bound(data, params.data_size_limit, report)
        tmp = _volume_mounted_at(pod_spec, container, "/tmp")
        if tmp is None:
            report.advise("/tmp is not a volume: downloads go to the container's writable layer")
            return
        if "emptyDir" in tmp:
            _bound(tmp, params.tmp_size_limit, report)

    def native(self, params: StorageParams) -> Native:
        if params.data_volume_claim:
            return Native(
                covers=(),
                webhook=self.scope(params),
                keeps=f"everything: /data moves to the claim {params.data_volume_claim} only "
                "when a lookup finds it",
            )
        size = cel_string(params.tmp_size_limit)
        data_size = cel_string(params.data_size_limit)

        def mounted_at(path: str) -> str:
            """Names of the manager's volumes mounted at `path` (trailing slashes ignored)."""
            return (
                f"variables.index >= 0 && has({MANAGER}.volumeMounts) && has({POD_SPEC}.volumes) "
                f"? {MANAGER}.volumeMounts.filter(m, m.mountPath.matches({cel_string(f'^{path}/*$')})"
                f" && {POD_SPEC}.volumes.exists(v, v.name == m.name)).map(m, m.name) : []"
            )

        return Native(
            covers=self.scope(params),
            keeps="nothing: the object alone decides",
            variables=(
                container_index(params.container),
                ("data", mounted_at("/data")),
                (
                    "dataIndex",
                    f"size(variables.data) > 0 "
                    f"? {POD_SPEC}.volumes.map(v, v.name).indexOf(variables.data[0]) : -1",
                ),
                (
                    "ephemeralData",
                    f"variables.dataIndex >= 0 && has({POD_SPEC}.volumes[variables.dataIndex].emptyDir)",
                ),
                (
                    "setDataLimit",
                    "variables.ephemeralData && "
                    f"!has({POD_SPEC}.volumes[variables.dataIndex].emptyDir.sizeLimit)",
                ),
                ("tmp", mounted_at("/tmp")),
                (
                    "tmpIndex",
                    f"size(variables.tmp) > 0 "
                    f"? {POD_SPEC}.volumes.map(v, v.name).indexOf(variables.tmp[0]) : -1",
                ),
                (
                    "setLimit",
                    # One emptyDir at both paths is bounded once, as /data (check() order).
                    "variables.ephemeralData && variables.tmpIndex >= 0 && "
                    "variables.tmpIndex != variables.dataIndex && "
                    f"has({POD_SPEC}.volumes[variables.tmpIndex].emptyDir) && "
                    f"!has({POD_SPEC}.volumes[variables.tmpIndex].emptyDir.sizeLimit)",
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
                    "variables.setDataLimit",
                    "'set volumes[' + variables.data[0] + '].emptyDir.sizeLimit to ' + "
                    f"{data_size} + ' (was unset)'",
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
                    "variables.setDataLimit ? [JSONPatch{op: 'add', path: "
                    "'/spec/template/spec/volumes/' + string(variables.dataIndex) + "
                    f"'/emptyDir/sizeLimit', value: {data_size}}}] : []"
                ),
                NativeMutation(
                    "variables.setLimit ? [JSONPatch{op: 'add', path: '/spec/template/spec/volumes/' "
                    f"+ string(variables.tmpIndex) + '/emptyDir/sizeLimit', value: {size}}}] : []"
                ),
            ),
        )


def _bound(volume: JsonObject, size_limit: str, report: Report) -> None:
    """Give an emptyDir volume `size_limit` unless it has a sizeLimit already."""
    if dig(volume, "emptyDir", "sizeLimit") is not None:
        return
    empty_dir = volume.get("emptyDir")
    if not isinstance(empty_dir, dict):
        empty_dir = {}
        volume["emptyDir"] = empty_dir
    empty_dir["sizeLimit"] = size_limit
    report.changed(f"volumes[{volume.get('name')}].emptyDir.sizeLimit", None, size_limit)


def _move_data_to_claim(
    obj: JsonObject,
    data: JsonObject,
    *,
    namespace: str,
    params: StorageParams,
    lookups: Lookups,
    report: Report,
) -> None:
    """Replace the /data emptyDir by the claim, only when the claim is known to exist."""
    claim_name = params.data_volume_claim
    where = f"{namespace}/{claim_name}" if namespace else claim_name
    try:
        claim = lookups.persistent_volume_claim(namespace, claim_name)
    except LookupUnavailable as error:
        report.advise(
            f"could not look up PersistentVolumeClaim {where} ({error}): /data left on its emptyDir"
        )
        return
    if claim is None or dig(claim, "metadata", "deletionTimestamp"):
        state = "does not exist" if claim is None else "is being deleted"
        report.advise(
            f"PersistentVolumeClaim {where} {state}: /data left on its emptyDir "
            "(a pod waiting for a missing claim never starts)"
        )
        return
    del data["emptyDir"]
    data["persistentVolumeClaim"] = {"claimName": claim_name}
    report.changed(
        f"volumes[{data.get('name')}]", "emptyDir", f"persistentVolumeClaim {claim_name}"
    )
    access = dig(claim, "spec", "accessModes")
    strategy = dig(obj, "spec", "strategy", "type") or "RollingUpdate"
    if (
        isinstance(access, list)
        and access
        and set(access) <= _SINGLE_NODE_ACCESS
        and strategy != "Recreate"
    ):
        report.advise(
            f"strategy {strategy} with a {'/'.join(access)} claim: a new pod on another node "
            "cannot attach it while the old one runs; use strategy Recreate"
        )
