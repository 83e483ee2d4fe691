"""The image users run, built by `make image` from the Dockerfile, run as the Deployment runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from image import build
from tests.image.container import (
    REPO,
    Container,
    can_run_containers,
    deployment_pod_spec,
    netns_links,
    probe,
    runtime_spec,
    unpack,
)
from webhook.certs import issue

READY_TIMEOUT_SECONDS = 90
WHY_NOT = can_run_containers()


def test_the_dockerfile_is_what_the_builder_runs() -> None:
    recipe = build.parse_dockerfile((REPO / "Dockerfile").read_text())
    assert recipe.release == "bookworm"
    runs = [step.args[0] for step in recipe.steps if step.kind == "RUN"]
    assert runs == ["sh /build/install.sh /src && rm -rf /src /build"]
    config = recipe.config()
    assert config["Entrypoint"] == ["fluxwarden"]
    assert config["User"] == "65532:65532"
    assert (
        "PATH=/opt/fluxwarden/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in (
            config["Env"]  # type: ignore[operator]
        )
    )
    # Every file the package build needs is in what the COPY lines read.
    copied = {str(path) for path in build.context_files(recipe, REPO)}
    assert {"pyproject.toml", "setup.py", "image/install.sh"} <= copied
    assert "policies/flux-best-practices.yaml" in copied
    assert "webhook/cli.py" in copied
    assert not [name for name in copied if "__pycache__" in name]


def test_the_builder_refuses_what_it_would_not_run_faithfully() -> None:
    for text in (
        "FROM python:3.11-slim\n",
        "FROM debian:bookworm-slim AS a\nFROM debian:bookworm-slim\n",
        "FROM debian:bookworm-slim\nADD x /x\n",
        "FROM debian:bookworm-slim\nCMD serve\n",
        "FROM debian:bookworm-slim\nCOPY --chown=1 a /a\n",
    ):
        with pytest.raises(build.BuildError):
            build.parse_dockerfile(text)


def test_run_steps_see_the_env_declared_before_them() -> None:
    recipe = build.parse_dockerfile(
        "FROM debian:bookworm\nENV A=1\nRUN one \\\n  two\nENV B=2\nRUN three\n"
    )
    assert [(step.args, step.env) for step in recipe.steps] == [
        (["one  two"], {"A": "1"}),
        (["three"], {"A": "1", "B": "2"}),
    ]


def test_the_manifests_pull_the_image_the_build_names() -> None:
    container = deployment_pod_spec()["containers"][0]
    assert container["image"] == build.image_name(REPO)
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.fixture(scope="session")
def image_archive() -> Path:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    return build.build(REPO)


def _tls_and_policies(work: Path) -> dict[str, Path]:
    """What the kubelet would mount: the Secret (0644 files, its default mode) and the
    ConfigMap, both generated the way the shipped manifests generate them."""
    tls = work / "secret-tls"
    written = issue(dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=1).write(tls)
    for path in written.values():
        path.chmod(0o644)
    policies = work / "configmap-policies"
    policies.mkdir()
    generator = yaml.safe_load((REPO / "policies" / "kustomization.yaml").read_text())
    for name in generator["configMapGenerator"][0]["files"]:
        shutil.copy(REPO / "policies" / name, policies / name)
    return {"tls": tls, "policies": policies, "tmp": work / "emptydir-tmp"}


@pytest.mark.node
@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "runs")
def test_the_image_serves_as_the_deployment_runs_it(tmp_path: Path, image_archive: Path) -> None:
    image = unpack(image_archive, tmp_path / "bundle")
    pod = deployment_pod_spec()
    files = _tls_and_policies(tmp_path)
    spec = runtime_spec(image, pod, files)
    assert spec["root"]["readonly"] is True
    assert spec["process"]["user"]["uid"] == 65532
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(spec, indent=2))
    port = pod["containers"][0]["ports"][0]["containerPort"]
    with Container(tmp_path / "bundle", tmp_path) as container:
        ready_after, status = _wait_ready(container, port, files["tls"] / "ca.crt")
        assert status == "200", f"/readyz: {status}\n{container.log()[-3000:]}"
        pid = container.pid()
        assert pid is not None
        assert probe(pid, port, "/healthz", files["tls"] / "ca.crt") == "200"
        # Its own network namespace with only loopback: nothing it serves leaves the machine.
        assert netns_links(pid) == ["lo"]
        uids = _status_field(pid, "Uid")
        assert uids.split() == ["65532"] * 4
        assert _status_field(pid, "CapEff") == "0000000000000000"
        assert _status_field(pid, "NoNewPrivs") == "1"
        writes = _exec(container, "import pathlib; pathlib.Path('/opt/x').write_text('x')")
        assert "Read-only file system" in writes.stderr
        tmp_write = _exec(container, "import pathlib; pathlib.Path('/tmp/x').write_text('x')")
        assert tmp_write.returncode == 0, tmp_write.stderr
    layer_bytes = json.loads((image_archive.parent / "image.json").read_text())["layer_bytes"]
    print(
        f"\nimage {build.image_name(REPO)}: layer {layer_bytes / 2**20:.1f} MiB gzip, "
        f"rootfs {_du_mib(image.rootfs):.0f} MiB; ready (/readyz 200) {ready_after:.2f}s after runc run"
    )


def _wait_ready(container: Container, port: int, ca_file: Path) -> tuple[float, str]:
    """Seconds from `runc run` to the first /readyz 200, and the last status seen."""
    status = "not started"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and container.exit_code() is None:
        pid = container.pid()
        if pid is not None:
            status = probe(pid, port, "/readyz", ca_file)
            if status == "200":
                return time.monotonic() - container.started, status
        time.sleep(0.2)
    return time.monotonic() - container.started, f"{status} (exit code {container.exit_code()})"


def _status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.partition(":")[2].strip()
    raise LookupError(field)


def _exec(container: Container, code: str) -> subprocess.CompletedProcess[str]:
    """The image's python, run in the container as its process runs (same user, no caps)."""
    return subprocess.run(
        [
            "runc",
            "--root",
            str(container.state_dir),
            "exec",
            container.name,
            "/opt/fluxwarden/bin/python",
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024
