"""The CLI as CI installs it: a wheel in a clean venv, run from a directory outside the repo."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The runners CI jobs use, pinned so a new release of either cannot change what this test means.
PINNED_TOOLS = ("uv==0.13.8", "pipx==1.18.4")
HELMRELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: apps
spec:
  interval: 10m
  chart:
    spec:
      chart: podinfo
      sourceRef: {kind: HelmRepository, name: podinfo}
  # helmrelease-remediation runs in warn mode in the shipped set: fix does not write it
  install: {strategy: {name: RetryOnFailure}}
  upgrade: {strategy: {name: RetryOnFailure}}
"""


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLUXWARDEN_POLICIES")}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_wheel_in_a_clean_venv_audits_and_fixes_outside_the_repo(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a clean copy: no build/ or egg-info left in the worktree
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "*_cache"))
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", ".", cwd=source
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("fluxwarden-*.whl"))
    venv.create(tmp_path / "venv", with_pip=True)
    pip = tmp_path / "venv" / "bin" / "pip"
    installed = _run(pip, "install", "--quiet", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    cli = tmp_path / "venv" / "bin" / "fluxwarden"
    work = tmp_path / "repo"
    work.mkdir()
    (work / "release.yaml").write_text(HELMRELEASE)

    listed = _run(cli, "policies", cwd=work)
    assert listed.returncode == 0, listed.stderr
    assert "helmrelease-drift-detection" in listed.stdout
    assert "site-packages/webhook/policies/flux-best-practices.yaml" in listed.stdout

    audited = _run(cli, "audit", ".", cwd=work)
    assert audited.returncode == 1, audited.stdout + audited.stderr
    assert "helmrelease-drift-detection" in audited.stdout

    checked = _run(cli, "fix", "--check", ".", cwd=work)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    written = _run(cli, "fix", "--write", ".", cwd=work)
    assert written.returncode == 0, written.stderr
    assert "driftDetection" in (work / "release.yaml").read_text()
    assert _run(cli, "fix", "--check", ".", cwd=work).returncode == 0
    assert _run(cli, "audit", ".", cwd=work).returncode == 0

    _serves_healthz(cli, tmp_path / "certs", cwd=work)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serves_healthz(cli: Path, certs: Path, *, cwd: Path) -> None:
    """`fluxwarden serve` as the image runs it, from the wheel alone (no dev extras): every module
    the serving processes import (gunicorn's gevent worker needs `packaging`) is declared."""
    made = _run(cli, "certs", "--out", certs, "--dns", "localhost", "--ip", "127.0.0.1", cwd=cwd)
    assert made.returncode == 0, made.stderr
    port = _free_port()
    argv = [cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    argv += ["--lookups", "none", "--cert-file", certs / "tls.crt", "--key-file", certs / "tls.key"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLUXWARDEN_POLICIES")}
    process = subprocess.Popen(
        [str(a) for a in argv], cwd=cwd, env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                url = f"https://localhost:{port}/healthz"
                with urllib.request.urlopen(url, context=context, timeout=2) as answer:
                    assert answer.status == 200
                    return
            except OSError:
                time.sleep(0.2)
        process.kill()
        raise AssertionError(f"serve never answered /healthz: {process.communicate()[1]!r}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def test_uvx_and_pipx_run_the_wheel_outside_the_repo(tmp_path: Path) -> None:
    """`uvx --from fluxwarden.whl fluxwarden audit .` and `pipx run --spec …` (what CI jobs and
    pre-commit users type), each tool installed from PyPI into a venv of its own."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "*_cache"))
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", ".", cwd=source
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("fluxwarden-*.whl"))
    venv.create(tmp_path / "tools", with_pip=True)
    tools = tmp_path / "tools" / "bin"
    installed = _run(tools / "pip", "install", "--quiet", *PINNED_TOOLS, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "repo"
    work.mkdir()
    (work / "release.yaml").write_text(HELMRELEASE)
    isolated = {
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_TOOL_DIR": str(tmp_path / "uv-tools"),
        "PIPX_HOME": str(tmp_path / "pipx-home"),
        "PIPX_BIN_DIR": str(tmp_path / "pipx-bin"),
    }
    runs: dict[str, list[str | Path]] = {
        "uvx": [tools / "uvx", "--from", wheel, "fluxwarden"],
        "pipx": [tools / "pipx", "run", "--spec", wheel, "fluxwarden"],
    }
    for tool, command in runs.items():
        audited = _run_env(isolated, *command, "audit", ".", cwd=work)
        assert audited.returncode == 1, f"{tool}: {audited.stdout}{audited.stderr}"
        assert "helmrelease-drift-detection" in audited.stdout, tool
        checked = _run_env(isolated, *command, "fix", "--check", ".", cwd=work)
        assert checked.returncode == 1, f"{tool}: {checked.stdout}{checked.stderr}"


def _run_env(
    extra: dict[str, str], *args: str | Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLUXWARDEN_POLICIES")}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=600,
    )
