"""Reading manifests as real GitOps repos have them: multi-document files, broken documents,
YAML other tools write (redefined anchors, custom tags, `=`), and line numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from webhook.audit.documents import load, load_yaml, parse_stream

STREAM = """\
# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: first}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: broken
---
# only a comment
---
- a list
- not kubernetes
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: last
"""


def test_documents_keep_file_and_line_and_one_broken_document_does_not_stop_the_rest() -> None:
    docs = list(parse_stream(STREAM, "repo/all.yaml"))
    assert [(d.line, d.error is None, d.is_kubernetes_object) for d in docs] == [
        (2, True, True),
        (8, False, False),  # the unclosed flow mapping (the parser notices at the next line)
        (12, True, False),
        (15, True, True),
    ]
    assert docs[1].error is not None
    assert docs[1].error.startswith("invalid YAML")
    assert docs[3].obj is not None
    assert docs[3].obj["metadata"]["name"] == "last"
    assert all(d.source == "repo/all.yaml" for d in docs)


def test_yaml_that_kubernetes_accepts_loads() -> None:
    text = "a: &n 1\nb: *n\nc: &n 2\nd: *n\ne: !env_var FOO\nf: =\ng: !!str 5\nh: !vault {x: 1}\n"
    assert load_yaml(text) == {
        "a": 1,
        "b": 1,
        "c": 2,
        "d": 2,
        "e": "FOO",
        "f": "=",
        "g": "5",
        "h": {"x": 1},
    }


def test_sops_secrets_and_substitutions_are_plain_data() -> None:
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n"
        "  token: ENC[AES256_GCM,data:abc,type:str]\nsops:\n  version: 3.9.0\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: ${REPLICAS}\n"
    )
    secret, deployment = parse_stream(text, "x.yaml")
    assert secret.is_kubernetes_object
    assert deployment.obj is not None
    assert deployment.obj["spec"]["replicas"] == "${REPLICAS}"


def test_lists_from_kubectl_get_are_unpacked() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
    assert [d.obj["metadata"]["name"] for d in parse_stream(text, "-") if d.obj] == ["a"]


def test_directories_are_read_recursively_and_missing_paths_reported(tmp_path: Path) -> None:
    (tmp_path / "apps" / "x").mkdir(parents=True)
    (tmp_path / "apps" / "x" / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
    )
    (tmp_path / "apps" / "b.yml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"
    )
    (tmp_path / "apps" / "notes.txt").write_text("not yaml: [")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    )
    docs = list(load([str(tmp_path), str(tmp_path / "missing.yaml")]))
    names = sorted(d.obj["metadata"]["name"] for d in docs if d.obj)
    assert names == ["a", "b"]
    assert docs[-1].error == "no such file or directory"


TRICKY = [
    "a: 1\nb: 1.5\nc: true\nd: ~\ne: 2001-12-14\nf: '1'\ng: 0o17\nh: 0x1f\ni: .inf\nj: =\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged:\n  <<: *b\n  y: 3\n",
    "? [a, b]\n: unhashable key\n",
    "tagged: !vault secret\nlist: !custom [1, 2]\nmap: !!map {a: 1}\nstr: !!str 12\n",
    "dup: 1\ndup: 2\nnull_key:\n  ~: x\n",
    "text: |\n  line\n  two\nfolded: >\n  a\n  b\nempty:\nbool: [yes, no, on, off, y, n]\n",
    "bin: !!binary aGVsbG8=\nset: !!set {a, b}\nomap: !!omap [a: 1, b: 2]\n",
]


# Fetched public repos (never committed), e.g. FLUXWARDEN_RENDER_REPOS=/tmp/render/home-ops:...
PUBLIC = [Path(p) for p in os.environ.get("FLUXWARDEN_RENDER_REPOS", "").split(":") if p]
CLONE = Path(__file__).resolve().parents[2]


def _yaml_texts(base: Path) -> list[str]:
    """Every YAML document below `base` (outside .git and .venv), as text."""
    from webhook.audit.documents import split_documents

    texts: list[str] = []
    for file in sorted(base.rglob("*.y*ml")):
        if {".git", ".venv", ".tools"} & set(file.relative_to(base).parts):
            continue
        try:
            texts += [chunk for _, chunk in split_documents(file.read_text(encoding="utf-8"))]
        except (OSError, UnicodeDecodeError):
            continue
    return texts


def _generated_texts() -> list[str]:
    """The benchmark's synthetic fleet, written in block, flow and canonical-ish styles."""
    from bench.offline_audit import manifests

    objects = list(manifests(120))
    return [
        yaml.safe_dump(obj, default_flow_style=flow, sort_keys=sort)
        for obj in objects
        for flow, sort in ((False, False), (True, True), (None, False))
    ]


def _compare_loaders(texts: list[str]) -> int:
    """How many texts both loaders read; fails on the first whose data differ."""
    from webhook.audit.documents import ManifestLoader, _load_fast
    from webhook.audit.fix import same_data

    compared = 0
    for text in texts:
        try:
            expected = yaml.load(text, Loader=ManifestLoader)
        except (yaml.YAMLError, ValueError, RecursionError):
            continue
        try:
            got = _load_fast(text)
        except yaml.YAMLError:
            continue  # e.g. a redefined anchor: load_yaml then uses ManifestLoader itself
        assert same_data(got, expected), text[:200]
        compared += 1
    return compared


def test_the_fast_loader_builds_exactly_what_pyyaml_builds() -> None:
    """Every YAML document of this clone, a generated fleet and tricky cases: the C parser with
    the plain-node walk gives the very data of the pure-Python loader. Nothing outside the clone
    is read, so the count is the same on every machine."""
    clone = _yaml_texts(CLONE)
    generated = _generated_texts()
    assert _compare_loaders(TRICKY) == len(TRICKY) - 1  # the unhashable key: neither loads it
    assert _compare_loaders(clone) > 300
    assert _compare_loaders(generated) == len(generated)


@pytest.mark.skipif(not PUBLIC, reason="set FLUXWARDEN_RENDER_REPOS to fetched Flux repos")
@pytest.mark.parametrize("repo", PUBLIC, ids=str)
def test_the_fast_loader_reads_fetched_repos_as_pyyaml_does(repo: Path) -> None:
    assert _compare_loaders(_yaml_texts(repo)) > 0
