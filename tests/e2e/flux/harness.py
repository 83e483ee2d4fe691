"""Real Flux in the local control plane: kustomize-controller (built by
``tests/controlplane/flux/build.sh``) reconciling an ``ExternalArtifact`` whose tarball a
loopback HTTP server serves (the "repo"), with the generated CRDs installed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import ControlPlane
from tests.e2e.harness import flux_dir, free_port


def missing() -> list[str]:
    directory = flux_dir()
    needed = [directory / "kustomize-controller", directory / "crds" / ".complete"]
    return [str(path) for path in needed if not path.exists()]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ArtifactServer:
    """Serves tarballs of "repo" revisions on 127.0.0.1 and publishes them through an
    ExternalArtifact's status, as a source controller would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        handler = partial(_QuietHandler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._count = 0

    def start(self) -> ArtifactServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(
        self, cluster: ControlPlane, *, name: str, namespace: str, files: dict[str, str]
    ) -> str:
        """Serve `files` as a new revision of ExternalArtifact `name`; returns the revision."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path, text in sorted(files.items()):
                data = text.encode()
                info = tarfile.TarInfo(path)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
        blob = buffer.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        self._count += 1
        filename = f"{name}-{self._count}.tar.gz"
        (self.directory / filename).write_bytes(blob)
        revision = f"main@sha256:{digest}"
        port = self.httpd.server_address[1]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "ExternalArtifact",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {},
                }
            ),
        )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "status": {
                "artifact": {
                    "path": filename,
                    "url": f"http://127.0.0.1:{port}/{filename}",
                    "revision": revision,
                    "digest": f"sha256:{digest}",
                    "lastUpdateTime": now,
                    "size": len(blob),
                },
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Succeeded",
                        "message": f"stored artifact for revision '{revision}'",
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        cluster.kubectl(
            "patch",
            "externalartifact",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
        return revision


class KustomizeController:
    """kustomize-controller as a process against the control plane (admin kubeconfig)."""

    def __init__(self, cluster: ControlPlane, workdir: Path, *, args: Sequence[str] = ()) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.args = list(args)
        self.log = workdir / "kustomize-controller.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> KustomizeController:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(self.cluster.kubectl_env(), RUNTIME_NAMESPACE="flux-system")
        self.process = subprocess.Popen(
            [
                str(flux_dir() / "kustomize-controller"),
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-addr=127.0.0.1:{free_port()}",
                "--enable-leader-election=false",
                "--feature-gates=ExternalArtifact=true",
                "--log-level=debug",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def apply_outputs(self, name: str) -> list[dict[str, str]]:
        """The `output` of each "server-side apply completed" log line for Kustomization
        `name`: object -> created/configured/unchanged, one dict per reconciliation."""
        outputs = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "server-side apply completed" and (
                    entry.get("name") == name or entry.get("Kustomization", {}).get("name") == name
                ):
                    outputs.append(entry.get("output", {}))
        return outputs


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def dump(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs)
