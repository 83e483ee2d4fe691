"""Build the fluxwarden image from the Dockerfile, without a registry or a container engine.

The Dockerfile is the one definition: this script runs its instructions (COPY, RUN, ENV, USER,
EXPOSE, ENTRYPOINT, CMD, WORKDIR, LABEL) on a ``debootstrap --variant=minbase`` of the Debian
release its ``FROM debian:<release>-slim`` names, each RUN in a chroot inside a private mount
namespace, and writes the root filesystem as one layer of an OCI image archive (also readable by
``docker load``) that ``ctr images import`` takes.  Needs root, debootstrap, tar and unshare.

    python image/build.py               build when the inputs changed, print the archive's path
    python image/build.py --print-path  print where the archive is (or will be), build nothing

The archive is cached per machine in ``${FLUXWARDEN_CACHE:-~/.cache/fluxwarden}/image/<key>/``,
keyed by the Dockerfile, the files its COPY instructions read and this script; the debootstrap
base is cached apart, keyed by release and mirror.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPOSITORY = "ghcr.io/fluxwarden/fluxwarden"
MIRROR = os.environ.get("FLUXWARDEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a container engine puts in PATH when the image sets none (and RUN uses).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What .dockerignore keeps out of the build context, among what the COPY lines name.
IGNORED_NAMES = ("__pycache__", ".mypy_cache", ".pytest_cache")
IGNORED_SUFFIXES = (".pyc", ".pyo")
ARCHIVE_NAME = "fluxwarden-image.tar"
# RUN steps see the host's CA bundle here (and in these variables); removed after each step.
BUILD_CA = ".build-host-ca.crt"
TRUST_VARIABLES = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


class BuildError(RuntimeError):
    """The Dockerfile uses something this builder does not run, or a step failed."""


# --------------------------------------------------------------------------- the Dockerfile


@dataclass
class Step:
    """A COPY (sources, destination) or a RUN (shell command) of the Dockerfile."""

    kind: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the ENV in force at this step


@dataclass
class Recipe:
    release: str
    steps: list[Step] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    exposed: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, object]:
        """The image config's ``config`` object, as a container engine writes it."""
        env = {"PATH": DEFAULT_PATH, **self.env}
        return {
            "User": self.user,
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Entrypoint": self.entrypoint,
            "Cmd": self.cmd,
            "WorkingDir": self.workdir,
            "ExposedPorts": {port if "/" in port else f"{port}/tcp": {} for port in self.exposed},
            "Labels": self.labels,
        }


def _logical_lines(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        name, _, rest = whole.partition(" ")
        yield name.upper(), rest.strip()
    if pending:
        raise BuildError("Dockerfile ends inside a continued line")


def _exec_form(args: str, instruction: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BuildError(f"{instruction} must use the exec (JSON array) form: {args}")
    return value


def _pairs(args: str) -> dict[str, str]:
    """``KEY=value KEY2="v 2"`` (ENV, LABEL)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise BuildError(f"only KEY=value pairs are supported: {args}")
        pairs[key] = value
    return pairs


def parse_dockerfile(text: str) -> Recipe:
    """The Dockerfile as a recipe; anything this builder would not run faithfully is an error."""
    recipe: Recipe | None = None
    for name, args in _logical_lines(text):
        if name == "FROM":
            if recipe is not None:
                raise BuildError("one stage only: a second FROM")
            recipe = Recipe(release=_debian_release(args))
            continue
        if recipe is None:
            raise BuildError(f"{name} before FROM")
        _apply(recipe, name, args)
    if recipe is None:
        raise BuildError("no FROM in the Dockerfile")
    return recipe


def _debian_release(image: str) -> str:
    repository, _, tag = image.partition(":")
    if repository not in ("debian", "docker.io/library/debian") or not tag:
        raise BuildError(f"FROM must be debian:<release>[-slim]: {image}")
    return tag.removesuffix("-slim")


def _apply(recipe: Recipe, name: str, args: str) -> None:
    if name in ("COPY", "RUN"):
        words = shlex.split(args) if name == "COPY" else [args]
        if name == "COPY" and (len(words) < 2 or any(w.startswith("--") for w in words)):
            raise BuildError(f"COPY SRC... DEST without flags: {args}")
        recipe.steps.append(Step(name, words, dict(recipe.env)))
    elif name == "ENV":
        recipe.env.update(_pairs(args))
    elif name == "LABEL":
        recipe.labels.update(_pairs(args))
    elif name == "USER":
        recipe.user = args
    elif name == "WORKDIR":
        recipe.workdir = args
    elif name == "EXPOSE":
        recipe.exposed.extend(args.split())
    elif name == "ENTRYPOINT":
        recipe.entrypoint = _exec_form(args, name)
    elif name == "CMD":
        recipe.cmd = _exec_form(args, name)
    else:
        raise BuildError(f"instruction not supported by image/build.py: {name}")


# --------------------------------------------------------------------------- inputs and cache


def cache_dir() -> Path:
    root = os.environ.get("FLUXWARDEN_CACHE") or str(Path.home() / ".cache" / "fluxwarden")
    return Path(root) / "image"


def _included(path: Path) -> bool:
    return not (set(path.parts) & set(IGNORED_NAMES)) and path.suffix not in IGNORED_SUFFIXES


def context_files(recipe: Recipe, repo: Path) -> list[Path]:
    """Every file the COPY steps read, relative to the repo, sorted."""
    files: set[Path] = set()
    for step in recipe.steps:
        if step.kind != "COPY":
            continue
        for source in step.args[:-1]:
            path = repo / source
            if not path.exists():
                raise BuildError(f"COPY source missing: {source}")
            found = sorted(path.rglob("*")) if path.is_dir() else [path]
            files.update(p.relative_to(repo) for p in found if p.is_file() and _included(p))
    return sorted(files)


def build_key(repo: Path) -> str:
    """Digest of everything that decides the image's content."""
    digest = hashlib.sha256()
    dockerfile = (repo / "Dockerfile").read_bytes()
    for name, data in (("build.py", Path(__file__).read_bytes()), ("Dockerfile", dockerfile)):
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    digest.update(MIRROR.encode())
    for rel in context_files(parse_dockerfile(dockerfile.decode()), repo):
        data = (repo / rel).read_bytes()
        digest.update(f"{rel}\0{(repo / rel).stat().st_mode & 0o111}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:20]


def image_name(repo: Path) -> str:
    """``ghcr.io/fluxwarden/fluxwarden:<version in pyproject.toml>``: what the manifests pull."""
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    return f"{REPOSITORY}:{version}"


def archive_path(repo: Path = REPO) -> Path:
    return cache_dir() / build_key(repo) / ARCHIVE_NAME


# --------------------------------------------------------------------------- the root filesystem


def _log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], **kwargs: object) -> None:
    result = subprocess.run(args, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise BuildError(f"exited {result.returncode}: {shlex.join(args)}")


def install_packages(repo: Path) -> list[str]:
    """The Debian packages image/install.sh installs (its ``PACKAGES="..."`` line)."""
    for line in (repo / "image" / "install.sh").read_text().splitlines():
        if line.startswith("PACKAGES="):
            return shlex.split(line.partition("=")[2])[0].split()
    raise BuildError("image/install.sh has no PACKAGES= line")


def base_tarball(release: str, packages: list[str]) -> Path:
    """``debootstrap --variant=minbase --include=PACKAGES RELEASE`` as a tar, built once per
    machine.  Including install.sh's packages here spares an apt-get in the chroot (install.sh
    skips it when they are installed), which takes minutes on a loaded machine."""
    inputs = f"{release}\0{MIRROR}\0{','.join(packages)}"
    key = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    tarball = cache_dir() / "base" / f"debian-{release}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    for tool in ("debootstrap", "tar", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found (Debian: apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".debootstrap-") as stage:
        rootfs = Path(stage) / "rootfs"
        include = [f"--include={','.join(packages)}"] if packages else []
        _log(f"debootstrap --variant=minbase {' '.join(include)} {release} {MIRROR}")
        with (Path(stage) / "debootstrap.log").open("wb") as log:
            args = ["debootstrap", "--variant=minbase", *include, release, str(rootfs), MIRROR]
            if subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=False).returncode:
                tail = (Path(stage) / "debootstrap.log").read_text(errors="replace")[-2000:]
                raise BuildError(f"debootstrap failed:\n{tail}")
        partial = Path(stage) / "base.tar"
        _run(["tar", "--create", "--numeric-owner", f"--file={partial}", "-C", str(rootfs), "."])
        partial.rename(tarball)
    return tarball


def _copy(step: Step, repo: Path, rootfs: Path) -> None:
    *sources, dest = step.args
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        path = repo / source
        target = rootfs / dest.lstrip("/")
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if p.is_file() and _included(p)]
            pairs = [(p, target / p.relative_to(path)) for p in files]
        else:
            pairs = [(path, target / path.name if into_dir else target)]
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            os.chown(dst, 0, 0)


def _host_ca_bundle() -> Path | None:
    """The CA bundle this host's pip trusts (a TLS-inspecting proxy's CA may be in it)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def _run_step(command: str, rootfs: Path, env: dict[str, str]) -> None:
    """RUN: /bin/sh -c COMMAND chrooted in the rootfs, with /dev, /proc, the host's resolv.conf
    and the host's CA bundle (what a build on this host trusts) mounted in a private mount
    namespace: the mounts end with it, and nothing of the host is left in the image."""
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.touch()
    ca_target = rootfs / BUILD_CA
    ca_target.touch()
    ca = _host_ca_bundle()
    trust = dict.fromkeys(TRUST_VARIABLES, f"/{BUILD_CA}") if ca else {}
    script = (
        'mount --rbind /dev "$1/dev" && mount -t proc proc "$1/proc" && '
        'mount --bind /etc/resolv.conf "$1/etc/resolv.conf" && '
        '{ [ -z "$3" ] || mount --bind "$3" "$1/$4"; } && '
        'exec chroot "$1" /bin/sh -c "$2"'
    )
    run_env = {"PATH": DEFAULT_PATH, "HOME": "/root", **trust, **env}
    try:
        _run(
            [
                "unshare",
                "--mount",
                "--propagation=private",
                "--fork",
                "--",
                "sh",
                "-c",
                script,
                "run-step",
                str(rootfs),
                command,
                str(ca or ""),
                BUILD_CA,
            ],
            env=run_env,
        )
    finally:
        ca_target.unlink(missing_ok=True)


def build_rootfs(recipe: Recipe, repo: Path, rootfs: Path) -> None:
    rootfs.mkdir()
    base = base_tarball(recipe.release, install_packages(repo))
    _run(["tar", "--extract", "--numeric-owner", f"--file={base}", "-C", str(rootfs)])
    for step in recipe.steps:
        if step.kind == "COPY":
            _copy(step, repo, rootfs)
        else:
            _log(f"RUN {step.args[0]}")
            _run_step(step.args[0], rootfs, step.env)
    # Runtimes mount these at run time; the build host's must not ship.
    (rootfs / "etc" / "resolv.conf").write_text("")
    (rootfs / "etc" / "hostname").write_text("")


# --------------------------------------------------------------------------- the OCI archive


@dataclass
class Blob:
    digest: str  # sha256:...
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @property
    def path(self) -> str:
        return "blobs/sha256/" + self.digest.removeprefix("sha256:")


def write_layer(rootfs: Path, blobs: Path) -> tuple[Blob, str]:
    """The rootfs as a gzip'd tar layer in ``blobs``; returns it and its uncompressed digest
    (the config's diff_id).  /dev, /proc and /sys are left empty, as engines ship them."""
    tar = subprocess.Popen(
        [
            "tar",
            "--create",
            "--numeric-owner",
            "--sort=name",
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-C",
            str(rootfs),
            ".",
        ],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None
    raw, packed = hashlib.sha256(), hashlib.sha256()
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, no name/mtime
    partial = blobs / ".layer"
    size = 0
    with partial.open("wb") as out:
        while chunk := tar.stdout.read(1 << 20):
            raw.update(chunk)
            for data in (compressor.compress(chunk),):
                packed.update(data)
                out.write(data)
                size += len(data)
        tail = compressor.flush()
        packed.update(tail)
        out.write(tail)
        size += len(tail)
    if tar.wait() != 0:
        raise BuildError(f"tar of {rootfs} exited {tar.returncode}")
    blob = Blob(f"sha256:{packed.hexdigest()}", size, "application/vnd.oci.image.layer.v1.tar+gzip")
    partial.rename(blobs / blob.digest.removeprefix("sha256:"))
    return blob, f"sha256:{raw.hexdigest()}"


def _json_blob(document: object, media_type: str, blobs: Path) -> Blob:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    blob = Blob(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), media_type)
    (blobs / blob.digest.removeprefix("sha256:")).write_bytes(data)
    return blob


def write_archive(
    config: dict[str, object], rootfs: Path, name: str, out: Path
) -> dict[str, object]:
    """``rootfs`` as a one-layer image with ``config`` (the image config's ``config`` object):
    an OCI image layout tar (index.json) with docker-archive's manifest.json beside it."""
    layout = out.parent / ".layout"
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer, diff_id = write_layer(rootfs, blobs)
    config_blob = _json_blob(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "image/build.py"}],
        },
        "application/vnd.oci.image.config.v1+json",
        blobs,
    )
    manifest = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor()],
        },
        "application/vnd.oci.image.manifest.v1+json",
        blobs,
    )
    tag = name.rpartition(":")[2]
    annotations = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{**manifest.descriptor(), "annotations": annotations}],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    docker = [{"Config": config_blob.path, "RepoTags": [name], "Layers": [layer.path]}]
    (layout / "manifest.json").write_text(json.dumps(docker))
    partial = out.with_suffix(".partial")
    _run(["tar", "--create", "--numeric-owner", f"--file={partial}", "-C", str(layout), "."])
    partial.rename(out)
    shutil.rmtree(layout)
    return {
        "name": name,
        "manifest": manifest.digest,
        "layer_bytes": layer.size,
        "archive": str(out),
    }


# --------------------------------------------------------------------------- build


def build(repo: Path = REPO) -> Path:
    """The image archive for the repo as it is, built when its inputs changed."""
    out = archive_path(repo)
    if out.exists():
        return out
    if os.geteuid() != 0:
        raise BuildError("building the image needs root (debootstrap, chroot, mounts)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the archive
        if out.exists():
            return out
        started = time.monotonic()
        recipe = parse_dockerfile((repo / "Dockerfile").read_text())
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as stage:
            rootfs = Path(stage) / "rootfs"
            build_rootfs(recipe, repo, rootfs)
            summary = write_archive(recipe.config(), rootfs, image_name(repo), out)
        summary["build_seconds"] = round(time.monotonic() - started, 1)
        (out.parent / "image.json").write_text(json.dumps(summary, indent=2) + "\n")
        _log(f"built {summary['name']} in {summary['build_seconds']}s: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image/build.py", description=__doc__.split("\n")[0])
    parser.add_argument("--print-path", action="store_true", help="print the path, build nothing")
    args = parser.parse_args(argv)
    try:
        print(archive_path() if args.print_path else build())
    except BuildError as err:
        print(f"image/build.py: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
