"""Run the built image with runc the way manifests/base/deployment.yaml runs its container.

The image archive is unpacked to a bundle; the OCI runtime spec is derived from the image config
(ENTRYPOINT, Env, USER) and the Deployment's container (args, env, securityContext, volumes,
memory limit), as the kubelet and containerd derive it: the args replace CMD, the pod's
runAsUser/runAsGroup/fsGroup replace USER, readOnlyRootFilesystem makes the root read-only,
``capabilities: {drop: [ALL]}`` leaves none, ``allowPrivilegeEscalation: false`` sets
no_new_privs, a Secret and a ConfigMap are read-only bind mounts, an emptyDir with a sizeLimit is
a tmpfs of that size.  The container has its own network namespace with only loopback: probes
enter it with ``nsenter --net`` and dial 127.0.0.1.  runc keeps its state in the test's directory.
Not modelled: the RuntimeDefault seccomp profile (containerd's; the node tests run it).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "manifests" / "base" / "deployment.yaml"
_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
_MEBI = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def quantity_bytes(text: str) -> int:
    """``256Mi`` -> bytes (the binary suffixes the manifests use)."""
    for suffix, factor in _MEBI.items():
        if text.endswith(suffix):
            return int(text.removesuffix(suffix)) * factor
    return int(text)


def deployment_pod_spec(path: Path = DEPLOYMENT) -> dict[str, Any]:
    """The pod template spec of the fluxwarden Deployment, as shipped."""
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "Deployment":
            spec: dict[str, Any] = document["spec"]["template"]["spec"]
            return spec
    raise LookupError(f"no Deployment in {path}")


@dataclass
class Image:
    rootfs: Path
    config: dict[str, Any]  # the image config's "config" object (Entrypoint, Cmd, Env, User)


def unpack(archive: Path, into: Path) -> Image:
    """Unpack an OCI image archive's layers (in order) into ``into/rootfs``."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"./blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return member.read()

        index = json.loads(_read(tar, "./index.json"))
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        rootfs = into / "rootfs"
        rootfs.mkdir(parents=True)
        for layer in manifest["layers"]:
            subprocess.run(
                ["tar", "--extract", "--numeric-owner", "-C", str(rootfs)],
                input=gzip.decompress(blob(layer["digest"])),
                check=True,
            )
    return Image(rootfs, config["config"])


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None
    return member.read()


def _volume_sources(pod: dict[str, Any], files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Volume name -> OCI mount fields; ``files`` gives the host directory of each volume (by
    name): a Secret's or ConfigMap's files, an emptyDir's empty directory (as the kubelet makes
    it, a world-writable directory on the node's disk; the sizeLimit is enforced by eviction)."""
    sources: dict[str, dict[str, Any]] = {}
    for volume in pod["volumes"]:
        name = volume["name"]
        if "emptyDir" in volume:
            files[name].mkdir(mode=0o777)
            files[name].chmod(0o777)
        sources[name] = {"type": "bind", "source": str(files[name]), "options": ["rbind"]}
    return sources


def runtime_spec(image: Image, pod: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """The OCI runtime spec for the pod's first container running this image."""
    container = pod["containers"][0]
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})
    user = str(image.config.get("User") or "0:0")
    uid = int(pod_security.get("runAsUser", user.partition(":")[0]))
    gid = int(pod_security.get("runAsGroup", user.partition(":")[2] or 0))
    if pod_security.get("runAsNonRoot") and uid == 0:
        raise ValueError("runAsNonRoot with a root user: the kubelet would refuse to start it")
    env = list(image.config.get("Env", []))
    env += [f"{item['name']}={item['value']}" for item in container.get("env", [])]
    args = container.get("command") or image.config.get("Entrypoint", [])
    args = [*args, *(container.get("args") or image.config.get("Cmd", []))]
    sources = _volume_sources(pod, files)
    mounts = [_mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])]
    mounts += [_mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755"])]
    mounts += [_mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance"])]
    mounts += [_mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "size=65536k"])]
    mounts += [_mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"])]
    for mount in container.get("volumeMounts", []):
        source = dict(sources[mount["name"]])
        if mount.get("readOnly"):
            source["options"] = [*source["options"], "ro"]
        mounts.append({"destination": mount["mountPath"], **source})
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    no_capabilities: dict[str, list[str]] = {
        kind: [] for kind in ("bounding", "effective", "permitted", "inheritable", "ambient")
    }
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        raise ValueError("only capabilities: {drop: [ALL]} is modelled")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": uid,
                "gid": gid,
                "additionalGids": [int(pod_security["fsGroup"])]
                if "fsGroup" in pod_security
                else [],
            },
            "args": args,
            "env": env,
            "cwd": image.config.get("WorkingDir") or "/",
            "capabilities": no_capabilities,
            "noNewPrivileges": security.get("allowPrivilegeEscalation") is False,
        },
        "root": {"path": "rootfs", "readonly": bool(security.get("readOnlyRootFilesystem"))},
        "hostname": "fluxwarden",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": kind} for kind in _NAMESPACES],
            "resources": {"memory": {"limit": quantity_bytes(memory)}} if memory else {},
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


class Container:
    """``runc run`` of a bundle, state kept under ``work``; stopped and deleted on exit."""

    def __init__(self, bundle: Path, work: Path, name: str = "fluxwarden") -> None:
        self.bundle = bundle
        self.name = name
        self.state_dir = work / "runc-state"
        self.log_path = work / "container.log"
        self.started = 0.0
        self._popen: subprocess.Popen[bytes] | None = None

    def _runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runc", "--root", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def __enter__(self) -> Container:
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._popen = subprocess.Popen(
                [
                    "runc",
                    "--root",
                    str(self.state_dir),
                    "run",
                    "--bundle",
                    str(self.bundle),
                    self.name,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._runc("kill", self.name, "TERM", check=False)
        if self._popen is not None:
            try:
                self._popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._runc("kill", self.name, "KILL", check=False)
                self._popen.wait(timeout=10)
        self._runc("delete", "--force", self.name, check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def exit_code(self) -> int | None:
        assert self._popen is not None
        return self._popen.poll()

    def pid(self) -> int | None:
        """The container's init process, once runc reports it running."""
        state = self._runc("state", self.name, check=False)
        if state.returncode != 0:
            return None
        info = json.loads(state.stdout)
        return int(info["pid"]) if info.get("status") == "running" else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_PROBE = """
import http.client, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), timeout=2, context=context)
try:
    conn.request("GET", sys.argv[3])
    print(conn.getresponse().status)
except OSError as error:
    print(f"error {error}")
"""


def probe(pid: int, port: int, path: str, ca_file: Path) -> str:
    """GET https://127.0.0.1:PORT/PATH inside the container's network namespace, verifying the
    serving certificate against ``ca_file``: the HTTP status, or ``error ...``."""
    result = subprocess.run(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            "--",
            sys.executable,
            "-c",
            _PROBE,
            str(ca_file),
            str(port),
            path,
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return (result.stdout.strip() or result.stderr.strip()[-300:]) or "no output"


def netns_links(pid: int) -> list[str]:
    """The network interfaces inside the container's network namespace."""
    links = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "-o", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(":")[1].strip() for line in links.splitlines()]


def can_run_containers() -> str:
    """Why this machine cannot run the image with runc ('' when it can)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "running the image with runc needs Linux and root"
    for tool in ("runc", "nsenter", "debootstrap", "unshare", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make node-tools installs Debian's runc and debootstrap)"
    return ""
