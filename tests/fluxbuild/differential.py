"""Differential check of fluxwarden's renderer against Flux's own build library.

For every Flux Kustomization fluxwarden renders in a repo, the same Kustomization (as its parent
renders it, postBuild left out: substitution needs the cluster in Flux's library) is built by
`fluxbuild` (tests/fluxbuild: github.com/fluxcd/pkg/kustomize, pinned in go.mod) and by
fluxwarden; both must give the same objects.

    python -m tests.fluxbuild.differential PATH   # a repo checkout; never fetches anything
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from webhook.audit.documents import FastManifestLoader, load
from webhook.audit.render import (
    KUSTOMIZATION_FILES,
    ORIGIN_KEY,
    Renderer,
    Rendering,
    _spec_dir,
    find_kustomize,
    is_flux_kustomization,
)

HERE = Path(__file__).resolve().parent


def fluxbuild_binary() -> Path | None:
    path = subprocess.run(
        [str(HERE / "build.sh"), "--print-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(path) if Path(path).is_file() else None


def _normal(obj: dict[str, Any]) -> str:
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    annotations.pop(ORIGIN_KEY, None)
    if "annotations" in meta and not annotations:
        del meta["annotations"]
    return json.dumps(obj, sort_keys=True)


def compare(repo: Path, fluxbuild: Path, kustomize: list[str] | None = None) -> list[str]:
    """Differences, one line each ([] when both renderers agree on every Kustomization)."""
    documents = list(load([str(repo)]))
    differences: list[str] = []
    with Renderer(repo, documents, kustomize or find_kustomize()) as renderer:
        rendering = renderer.render_all()
        kustomizations = {
            f"{o.kustomization}>{o.obj['metadata'].get('name')}": (o.obj, str(o.source or repo))
            for o in rendering.objects
            if is_flux_kustomization(o.obj)
        }
        for d in documents:  # the roots, from their own files
            if d.obj is not None and is_flux_kustomization(d.obj):
                kustomizations.setdefault(
                    f"file:{d.source}>{d.obj['metadata'].get('name')}", (d.obj, d.source)
                )
        scratch = Path(tempfile.mkdtemp(prefix="fluxwarden-fluxbuild-"))
        try:
            copied = scratch / "repo"
            shutil.copytree(repo, copied, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            for label, (ks, where) in sorted(kustomizations.items()):
                ks = copy.deepcopy(ks)
                (ks.get("spec") or {}).pop("postBuild", None)
                directory = _spec_dir(renderer.root, ks, where)
                if not directory.is_dir() or not directory.is_relative_to(renderer.root):
                    continue
                ours = renderer._render_one(ks, where, Rendering())
                target = copied / directory.relative_to(renderer.root)
                saved = {
                    n: (target / n).read_bytes()
                    for n in KUSTOMIZATION_FILES
                    if (target / n).is_file()
                }
                (scratch / "ks.yaml").write_text(yaml.safe_dump(ks))
                built = subprocess.run(
                    [str(fluxbuild), str(copied), str(target), str(scratch / "ks.yaml")],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                for name in KUSTOMIZATION_FILES:
                    (target / name).unlink(missing_ok=True)
                for name, data in saved.items():
                    (target / name).write_bytes(data)
                if built.returncode != 0:
                    if ours:
                        differences.append(
                            f"{label}: Flux cannot build it, fluxwarden can: {built.stderr.strip()[:200]}"
                        )
                    continue
                theirs = sorted(
                    _normal(o)
                    for o in yaml.load_all(built.stdout, Loader=FastManifestLoader)
                    if isinstance(o, dict)
                )
                mine = sorted(_normal(o.obj) for o in ours)
                if theirs != mine:
                    only_flux = set(theirs) - set(mine)
                    only_ours = set(mine) - set(theirs)
                    differences.append(
                        f"{label}: {len(only_flux)} objects only in Flux's build, {len(only_ours)} only in fluxwarden's"
                        + (f"; e.g. Flux {sorted(only_flux)[0][:300]}" if only_flux else "")
                        + (f"; fluxwarden {sorted(only_ours)[0][:300]}" if only_ours else "")
                    )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{len(kustomizations)} Flux Kustomizations compared, {len(differences)} differ",
        file=sys.stderr,
    )
    return differences


def main() -> int:
    binary = fluxbuild_binary()
    if binary is None:
        print("fluxbuild not built: run tests/fluxbuild/build.sh", file=sys.stderr)
        return 2
    differences = [d for path in sys.argv[1:] for d in compare(Path(path), binary)]
    for line in differences:
        print(line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
