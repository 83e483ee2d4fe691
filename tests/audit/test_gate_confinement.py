"""The PR gate on a hostile repo: `audit` and `fix` read only below the paths given, never use
the network unless told to, never write through symlinks, and never print a Secret's values."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.audit.test_render import kubectl_or_skip
from webhook.audit import batching
from webhook.audit.audit_object import AuditObject
from webhook.audit.confinement import Confinement, is_remote
from webhook.audit.findings import Finding, ObjectLocation
from webhook.audit.formats import quoting_prefix
from webhook.audit.redaction import secret_data, without_secrets
from webhook.cli import main

FORMATS = ("table", "json", "sarif", "junit")
TOKEN = "planted-runner-token-5f1c2a"  # what must never reach any output
FLUX_KS = "kustomize.toolkit.fluxcd.io/v1"


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _write(path: Path, content: str | list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump_all(content, sort_keys=False), encoding="utf-8")


def _flux_ks(name: str, path: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": FLUX_KS,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": path,
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            **spec,
        },
    }


def _repo(root: Path, *, generator: dict[str, object] | None = None, **apps: object) -> Path:
    """An entry point `flux-system` rendering `apps` (./apps, postBuild as given), whose
    Kustomization `leaf` depends on `${token}`: the finding quotes the substituted value."""
    flux_system = root / "clusters/prod/flux-system"
    _write(flux_system / "sync.yaml", [_flux_ks("flux-system", "./clusters/prod/flux-system")])
    _write(flux_system / "apps.yaml", [_flux_ks("apps", "./apps", **apps)])
    kustomization: dict[str, object] = {"resources": ["sync.yaml", "apps.yaml"]}
    if generator is not None:
        kustomization["configMapGenerator"] = [generator]
    _write(flux_system / "kustomization.yaml", [kustomization])
    leaf = _flux_ks("leaf", "./leaf", dependsOn=[{"name": "${token}"}])
    _write(root / "apps/leaf.yaml", [leaf])
    _write(
        root / "leaf/cm.yaml",
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}],
    )
    return root


def _vars_from(file: str) -> dict[str, object]:
    return {
        "name": "vars",
        "namespace": "flux-system",
        "files": [f"token={file}"],
        "options": {"disableNameSuffixHash": True},
    }


SUBSTITUTE_FROM_VARS = {"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]}


def _outputs(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, tuple[int, str]]:
    """Exit code and everything printed (stdout and stderr), per output format."""
    printed: dict[str, tuple[int, str]] = {}
    for output in FORMATS:
        code = main(["audit", "-o", output, *args])
        captured = capsys.readouterr()
        printed[output] = (code, captured.out + captured.err)
    return printed


def _escaping(file: Path) -> str:
    """A relative reference to `file` from anywhere: enough `..` to climb out of any copy of
    the repo, then down to the file."""
    return "../" * 40 + str(file)[1:]


def _outside_token(tmp_path: Path) -> Path:
    secret = tmp_path / "runner/secret-token"
    _write(secret, TOKEN)
    return secret


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_a_generator_file_outside_the_repo_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    secret = _outside_token(tmp_path)
    reference = {"relative": _escaping(secret), "absolute": str(secret)}[form]
    repo = _repo(tmp_path / "repo", generator=_vars_from(reference), postBuild=SUBSTITUTE_FROM_VARS)
    for output, (code, printed) in _outputs(capsys, str(repo)).items():
        assert TOKEN not in printed, output
        assert code == 2, output  # Flux refuses the load: the build is an error
    _, printed = _outputs(capsys, str(repo))["json"]
    problems = json.loads(printed[: printed.rindex("}") + 1])["problems"]
    refusal = next(p for p in problems if "not built" in p["message"])
    assert refusal["error"] is True
    assert refusal["message"] == quoting_prefix(  # the reference quoted as a short prefix
        "flux-system/flux-system not built: clusters/prod/flux-system/kustomization.yaml "
        f"references 'token={reference}', which resolves outside the paths given; kustomize "
        "loads only below the paths given"
    )


def test_a_file_inside_the_repo_still_substitutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: the same repo reading its own file renders and quotes the value."""
    repo = _repo(
        tmp_path / "repo", generator=_vars_from("token.txt"), postBuild=SUBSTITUTE_FROM_VARS
    )
    _write(repo / "clusters/prod/flux-system/token.txt", "leaf-dependency")
    code, printed = _outputs(capsys, str(repo))["table"]
    assert "not found: flux-system/leaf-dependency" in printed
    assert code == 0


def test_a_symlink_out_of_the_repo_is_refused_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _outside_token(tmp_path)
    repo = _repo(
        tmp_path / "repo", generator=_vars_from("token.txt"), postBuild=SUBSTITUTE_FROM_VARS
    )
    (repo / "clusters/prod/flux-system/token.txt").symlink_to(secret)
    _write(
        tmp_path / "runner/leak.yaml",
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TOKEN}}],
    )
    (repo / "apps/leak.yaml").symlink_to(tmp_path / "runner/leak.yaml")
    (repo / "runner").symlink_to(tmp_path / "runner", target_is_directory=True)
    for output, (_, printed) in _outputs(capsys, "-v", str(repo)).items():  # -v: notices too
        assert TOKEN not in printed, output
        if output == "sarif":
            continue  # SARIF holds input errors only, no notices
        for link in ("clusters/prod/flux-system/token.txt", "apps/leak.yaml", "runner"):
            assert f"{repo / link}" in printed, (output, link)
        assert "a symlink to outside" in printed, output


def test_an_escaping_patch_path_is_refused_before_kustomize_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any field kustomize loads a file from is checked, not only generators: here a patch
    file on the runner that would set a field a finding quotes."""
    outside = tmp_path / "runner/patch.yaml"
    patch = {
        "apiVersion": FLUX_KS,
        "kind": "Kustomization",
        "metadata": {"name": "leaf", "namespace": "flux-system"},
        "spec": {"dependsOn": [{"name": TOKEN}]},
    }
    _write(outside, [patch])
    reference = _escaping(outside)
    repo = _repo(tmp_path / "repo")
    _write(
        repo / "apps/kustomization.yaml",
        [{"resources": ["leaf.yaml"], "patches": [{"path": reference}]}],
    )
    for output, (code, printed) in _outputs(capsys, str(repo)).items():
        assert TOKEN not in printed, output
        assert code == 2, output
        if output != "junit":  # junit quotes it as &#x27;
            quoted = quoting_prefix(  # JSON writes its `…` as \u2026: compare what precedes it
                f"flux-system/apps not built: apps/kustomization.yaml references {reference!r}"
            )
            assert quoted.split("…")[0] in printed, output


class _CountingServer:
    """An HTTP server on 127.0.0.1 (ephemeral port) that counts the requests it gets and
    serves one ConfigMap for every GET."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                body = yaml.safe_dump(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "remote"}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[_CountingServer]:
    with _CountingServer() as running:
        yield running


@pytest.mark.parametrize("form", ["http", "git"])
def test_remote_bases_are_not_fetched_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: _CountingServer, form: str
) -> None:
    reference = {
        "http": f"{server.url}/remote.yaml",
        "git": f"git::{server.url}/org/repo.git//deploy?ref=main",
    }[form]
    repo = _repo(tmp_path / "repo")
    _write(repo / "leaf/kustomization.yaml", [{"resources": ["cm.yaml", reference]}])
    for output, (_, printed) in _outputs(capsys, "-v", str(repo)).items():
        assert server.requests == [], output
        if output == "sarif":
            continue  # SARIF holds input errors only, no notices
        assert (
            f"flux-system/leaf not audited: leaf/kustomization.yaml uses the remote reference {reference!r}"
            in printed
        ), output
        assert "--allow-remote-bases" in printed
    assert main(["fix", str(repo)]) == 0
    assert reference in capsys.readouterr().err
    assert server.requests == []


def test_allow_remote_bases_fetches_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: _CountingServer
) -> None:
    """The control: the loopback server does get the request when the user opts in."""
    repo = _repo(tmp_path / "repo")
    _write(
        repo / "leaf/kustomization.yaml", [{"resources": ["cm.yaml", f"{server.url}/remote.yaml"]}]
    )
    code = main(["audit", "-o", "json", "-v", "--allow-remote-bases", str(repo)])
    report = json.loads(capsys.readouterr().out)
    assert server.requests == ["/remote.yaml"]
    assert code == 0
    assert not any("not audited" in p["message"] for p in report["problems"])


@pytest.mark.parametrize(
    ("reference", "remote"),
    [
        ("https://example.com/x.yaml", True),
        ("HTTP://example.com/x.yaml", True),
        ("git::https://example.com/org/repo//path", True),
        ("github.com/org/repo//deploy?ref=v1", True),
        ("git@github.com:org/repo.git", True),
        ("ssh://git@example.com/org/repo.git", True),
        ("file:///etc", True),
        ("../base", False),
        ("deploy/github.com", False),
        ("config.yaml", False),
    ],
)
def test_remote_references_are_those_kustomize_fetches(reference: str, remote: bool) -> None:
    assert is_remote(reference) is remote


def test_a_value_from_a_secret_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(
        tmp_path / "repo", postBuild={"substituteFrom": [{"kind": "Secret", "name": "vars"}]}
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vars", "namespace": "flux-system"},
        "stringData": {"token": TOKEN},
    }
    _write(repo / "clusters/prod/flux-system/vars.yaml", [secret])
    kustomization = repo / "clusters/prod/flux-system/kustomization.yaml"
    _write(kustomization, [{"resources": ["sync.yaml", "apps.yaml", "vars.yaml"]}])
    for output, (code, printed) in _outputs(capsys, str(repo)).items():
        assert TOKEN not in printed, output
        hidden = "&lt;secret&gt;" if output == "junit" else "<secret>"
        assert hidden in printed, output  # the finding is still there, its value hidden
        assert code == 0, output


HELM_RELEASE = {
    "apiVersion": "helm.toolkit.fluxcd.io/v2",
    "kind": "HelmRelease",
    "metadata": {"name": "podinfo", "namespace": "apps"},
    "spec": {
        "interval": "10m",
        "chart": {
            "spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "x"}}
        },
    },
}


def test_fix_never_reads_nor_writes_through_a_symlink_out_of_the_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "runner/release.yaml"
    _write(outside, [HELM_RELEASE])
    before = outside.read_bytes()
    repo = tmp_path / "repo"
    _write(
        repo / "apps/own.yaml", [HELM_RELEASE | {"metadata": {"name": "own", "namespace": "apps"}}]
    )
    (repo / "apps/release.yaml").symlink_to(outside)
    assert main(["fix", "--write", str(repo)]) == 0
    err = capsys.readouterr().err
    assert outside.read_bytes() == before
    assert f"{repo / 'apps/release.yaml'}:0: not read: a symlink to outside" in err
    assert f"fixed {repo / 'apps/own.yaml'}" in err  # the repo's own file is fixed


def test_fix_refuses_a_symlinked_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    real = repo / "apps/release.yaml"
    _write(real, [HELM_RELEASE])
    before = real.read_bytes()
    link = repo / "other/release.yaml"
    link.parent.mkdir()
    link.symlink_to("../apps/release.yaml")
    for mode in ("--check", "--write"):
        assert main(["fix", mode, str(link)]) == 2
        err = capsys.readouterr().err
        assert f"{link}:0: not fixed: a symlink (fix never writes through links)" in err
        assert real.read_bytes() == before
        assert link.is_symlink()


def test_fix_replaces_files_instead_of_writing_into_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hard link elsewhere to a repo file keeps its content: the file is a new inode."""
    repo = tmp_path / "repo"
    file = repo / "apps/release.yaml"
    _write(file, [HELM_RELEASE])
    other = tmp_path / "runner/hardlink.yaml"
    other.parent.mkdir()
    other.hardlink_to(file)
    before = other.read_bytes()
    assert main(["fix", "--write", str(repo)]) == 0
    assert "driftDetection" in file.read_text()
    assert other.read_bytes() == before
    capsys.readouterr()


def test_fix_never_writes_a_value_substituted_from_a_secret() -> None:
    from webhook.audit.plan import _writes_secret  # here: the other tests run on older code

    item = AuditObject(
        {"kind": "Deployment"},
        ObjectLocation("f.yaml", 1, "apps/v1", "Deployment", "ns", "d"),
        secrets=(TOKEN,),
    )
    assert _writes_secret([{"op": "replace", "path": "/a", "value": [f"--key={TOKEN}"]}], item)
    assert not _writes_secret([{"op": "replace", "path": "/a", "value": "--key=other"}], item)


@pytest.mark.parametrize("field", ["resources", "configMapGenerator"])
def test_a_batched_member_that_escapes_is_refused_and_the_others_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    """Flux Kustomizations of one level are built several to a kustomize process: one that
    reads outside the repo is refused there too (a generator file is only seen as the batch
    is written), and its siblings are still audited."""
    outside = tmp_path / "runner/leaf.yaml"
    _write(outside, [_flux_ks("stolen", "./leaf", dependsOn=[{"name": TOKEN}])])
    repo = tmp_path / "repo"
    flux_system = repo / "clusters/prod/flux-system"
    _write(flux_system / "sync.yaml", [_flux_ks("flux-system", "./clusters/prod/flux-system")])
    names = [f"app{i}" for i in range(6)]
    _write(flux_system / "apps.yaml", [_flux_ks(n, f"./apps/{n}") for n in names])
    _write(flux_system / "kustomization.yaml", [{"resources": ["sync.yaml", "apps.yaml"]}])
    for name in names:
        leaf = _flux_ks(f"{name}-leaf", "./leaf", dependsOn=[{"name": f"{name}-missing"}])
        _write(repo / f"apps/{name}/leaf.yaml", [leaf])
    escaping: Any = {
        "resources": {"resources": ["leaf.yaml", _escaping(outside)]},
        "configMapGenerator": {
            "resources": ["leaf.yaml"],
            "configMapGenerator": [{"name": "c", "files": [f"x={_escaping(outside)}"]}],
        },
    }[field]
    _write(repo / "apps/app3/kustomization.yaml", [escaping])
    _write(
        repo / "leaf/cm.yaml",
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}],
    )
    code, printed = _outputs(capsys, str(repo))["table"]
    assert TOKEN not in printed
    assert code == 2
    assert "flux-system/app3 not built: apps/app3/kustomization.yaml references" in printed
    for name in ("app0", "app1", "app2", "app4", "app5"):
        assert f"not found: flux-system/{name}-missing" in printed


def test_batching_reads_nothing_outside_the_repo(tmp_path: Path) -> None:
    outside = tmp_path / "runner/cm.yaml"
    _write(outside, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    kustomization = {"resources": [_escaping(outside)], "buildMetadata": ["originAnnotations"]}
    reader = batching.Reader(repo)
    assert batching.footprint(repo / "apps", kustomization, reader) is None
    assert reader.text(outside) is None
    assert batching.footprint(repo / "apps", kustomization, batching.Reader()) is not None


def test_only_what_kustomize_loads_is_checked(tmp_path: Path) -> None:
    """Label and annotation values are words, not paths: a `path` annotation with a URL, or
    an `env` label naming a directory outside, leaves the build alone."""
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    confinement = Confinement(repo, allow_remote=False)
    words = {
        "commonAnnotations": {"path": "https://example.com/docs", "env": str(tmp_path)},
        "labels": [{"pairs": {"path": "/"}}],
        "configMapGenerator": [{"name": "c", "literals": ["files=/etc"]}],
    }
    assert confinement.refusals(repo / "app", words) == []
    loads = {"configMapGenerator": [{"name": "c", "envs": [str(tmp_path)]}]}
    assert [r.reference for r in confinement.refusals(repo / "app", loads)] == [str(tmp_path)]


def test_a_secrets_own_data_is_hidden_in_its_findings() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        "stringData": {"password": "hunter2-long"},
    }
    location = ObjectLocation("s.yaml", 1, "v1", "Secret", "", "s")
    finding = Finding(location, "p", "warn", "warn", "none", (f"{TOKEN} and hunter2-long",))
    hidden = without_secrets(finding, secret_data(secret))
    assert hidden.messages == ("<secret> and <secret>",)


def test_a_flux_instance_patch_file_is_never_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FluxInstance's `spec.kustomize.patches` are inline (the operator's API): a `path`
    there would have kustomize read a file on the runner into the controllers audited."""
    outside = tmp_path / "runner/patch.yaml"
    manager = {"name": "manager", "args": [f"--requeue-dependency={TOKEN}"]}
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kustomize-controller", "namespace": "flux-system"},
        "spec": {"template": {"spec": {"containers": [manager]}}},
    }
    _write(outside, [patch])
    repo = tmp_path / "operator"
    shutil.copytree(Path(__file__).parent / "repos/operator", repo)
    file = repo / "clusters/prod/flux-instance.yaml"
    instance = yaml.safe_load(file.read_text())
    instance["spec"]["kustomize"]["patches"].append({"path": str(outside)})
    file.write_text(yaml.safe_dump(instance, sort_keys=False))
    for output, (_, printed) in _outputs(capsys, "-v", str(repo)).items():
        assert TOKEN not in printed, output
        if output in ("table", "json"):
            assert "spec.kustomize.patches: only inline patches are built" in printed, output
    assert main(["fix", str(repo)]) == 0
    assert TOKEN not in capsys.readouterr().out
