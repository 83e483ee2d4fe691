"""Reading manifests as real GitOps repos have them: multi-document files, broken documents,
YAML other tools write (redefined anchors, custom tags, `=`), and line numbers."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from webhook.audit.documents import (
    ALIAS_EXPANSION_LIMIT,
    AliasBomb,
    FastManifestLoader,
    ManifestLoader,
    check_alias_expansion,
    load,
    load_yaml,
    parse_stream,
)

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
    from webhook.audit.yaml_text import same_data

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


# --- YAML aliases: shared while composed, bounded when expanded ---------------------------------


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """A ConfigMap whose last key expands to width**levels strings: 9 levels make 387 million."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: lol}", "data:"]
    lines.append(f"  l0: &l0 [{', '.join(['lol'] * width)}]")
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# In this process: 6 levels, 531441 strings, over the limit yet affordable should a change let
# it through. The command-line tests below take the full bomb, under a memory limit.
SMALL_BOMB = billion_laughs(levels=6)
# a redefined anchor: only the pure-Python ManifestLoader takes it
PYTHON_LOADER_BOMB = "x: &l0 0\n" + SMALL_BOMB.replace("apiVersion", "api: *l0\napiVersion", 1)


@pytest.mark.parametrize("text", [SMALL_BOMB, PYTHON_LOADER_BOMB], ids=["C", "Python"])
def test_an_alias_bomb_is_refused_before_anything_is_built(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(AliasBomb, match=f"beyond {ALIAS_EXPANSION_LIMIT} nodes"):
        load_yaml(text)
    (document,) = parse_stream(text, "repo/lol.yaml")
    assert time.perf_counter() - started < 1
    assert document.obj is None
    assert (
        document.error
        == f"YAML aliases expand beyond {ALIAS_EXPANSION_LIMIT} nodes: document not read"
    )


@pytest.mark.parametrize("loader", [FastManifestLoader, ManifestLoader])
def test_every_document_a_loader_composes_is_checked(loader: type[yaml.SafeLoader]) -> None:
    """Also the streams render and sources compose with these loaders, not only load_yaml."""
    with pytest.raises(AliasBomb):
        list(yaml.load_all("a: 1\n---\n" + SMALL_BOMB, Loader=loader))
    with pytest.raises(AliasBomb):
        yaml.compose(SMALL_BOMB, Loader=loader)


def test_the_limit_counts_the_nodes_aliases_add() -> None:
    # 7 nodes written (the mapping, 2 keys, [1, 2] and its 2 items, the outer list); each *a adds
    # 3: expanded, the document has 13
    node = yaml.compose("a: &a [1, 2]\nb: [*a, *a]\n", Loader=FastManifestLoader)
    check_alias_expansion(node, limit=6)
    with pytest.raises(AliasBomb):
        check_alias_expansion(node, limit=5)


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    for text in ("a: &a [1, *a]\n", "a: &a {b: *a}\n"):
        with pytest.raises(AliasBomb, match="without end"):
            load_yaml(text)


def test_ordinary_anchors_load_as_written_out_and_unshared() -> None:
    """A value reused by an alias is a copy of its own, as Kubernetes reads it: an edit through
    one path (a fix) must never reach the other."""
    anchored = "base: &b {x: 1, y: [1, 2]}\nuse: *b\nlist: &l [a]\nagain: *l\n"
    merged = "m: &m {x: 1, y: [1]}\nk:\n  <<: *m\n  z: 2\nv: *m\n"  # merge keys: PyYAML's way
    redefined = "r: &r {x: 1}\nr2: *r\nr3: &r {x: 2}\n"  # only the Python loader takes it
    for text in (anchored, merged, redefined):
        loaded = load_yaml(text)
        assert loaded == yaml.safe_load(text.replace("r3: &r", "r3:")), text
        containers = [v for v in _walk(loaded) if isinstance(v, (dict, list))]
        assert len({id(v) for v in containers}) == len(containers), text


def _walk(value: object) -> list[object]:
    found = [value]
    if isinstance(value, dict):
        found += [x for item in value.values() for x in _walk(item)]
    elif isinstance(value, list):
        found += [x for item in value for x in _walk(item)]
    return found


FLUXWARDEN = [sys.executable, "-m", "webhook"]
MEMORY_LIMIT = 768 * 1024 * 1024  # address space of the CLI: it needs ~300 MB; the bomb, > 4 GB


def _bounded_cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    started = time.perf_counter()
    result = subprocess.run(
        [*FLUXWARDEN, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
        preexec_fn=limit_memory,
    )
    return result, time.perf_counter() - started


@pytest.mark.parametrize("command", [["audit"], ["fix", "--check"]])
def test_the_cli_refuses_an_alias_bomb_fast_in_bounded_memory(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "lol.yaml").write_text(billion_laughs())
    (tmp_path / "repo" / "ok.yaml").write_text(IRC_ANCHORED)
    result, seconds = _bounded_cli(*command, "--no-render", "repo", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "repo/lol.yaml:1" in said
    assert f"YAML aliases expand beyond {ALIAS_EXPANSION_LIMIT} nodes" in said
    assert "Traceback" not in said
    assert "repo/ok.yaml" in said  # the other file still is read (audited, or its fix refused)
    assert seconds < 10  # start-up included; the bomb took 17-77 s


IRC_ANCHORED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: image-reflector-controller
  namespace: flux-system
  labels: &labels {app: irc}
spec:
  replicas: 2
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      containers:
        - name: manager
          image: ghcr.io/fluxcd/image-reflector-controller:v0.33.0
          resources: &resources
            limits: {memory: 1Gi}
        - name: sidecar
          image: busybox
          resources: *resources
"""


def test_a_file_with_ordinary_anchors_is_audited_as_if_written_out(tmp_path: Path) -> None:
    (tmp_path / "anchored").mkdir()
    (tmp_path / "expanded").mkdir()
    (tmp_path / "anchored" / "irc.yaml").write_text(IRC_ANCHORED)
    written_out = yaml.safe_dump(yaml.safe_load(IRC_ANCHORED), sort_keys=False)
    (tmp_path / "expanded" / "irc.yaml").write_text(written_out)
    outputs = []
    for directory in ("anchored", "expanded"):
        result, _ = _bounded_cli("audit", "-o", "json", "--no-render", directory, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        body = json.loads(result.stdout)
        outputs.append(
            [{k: v for k, v in f.items() if k not in ("source", "line")} for f in body["findings"]]
        )
    assert outputs[0] == outputs[1]
    assert any("2Gi" in message for f in outputs[0] for message in f["messages"])


def test_fix_never_edits_through_an_anchor_another_field_shares(tmp_path: Path) -> None:
    """A merge key sends the document to PyYAML's constructor, which shares aliased values: the
    fix then saw the sidecar's limits change with the manager's and wrote the anchor's edit."""
    text = IRC_ANCHORED.replace("matchLabels: *labels", "matchLabels: {<<: *labels}")
    (tmp_path / "irc.yaml").write_text(text)
    result, _ = _bounded_cli("fix", "--check", "--no-render", "irc.yaml", cwd=tmp_path)
    assert "limits: {memory: 2Gi}" not in result.stdout  # would change the sidecar's too
    assert "irc.yaml:1: not fixed" in result.stderr
    assert (tmp_path / "irc.yaml").read_text() == text


FLUX_KUSTOMIZATION = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  path: ./apps
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
"""


@pytest.mark.parametrize("command", [["audit"], ["fix", "--check"]])
def test_kustomize_never_runs_on_a_repo_with_an_alias_bomb(
    tmp_path: Path, command: list[str]
) -> None:
    """kustomize expands every alias (it grew past 20 GB on this bomb): the repo's files are
    audited as they are instead."""
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    (repo / "apps.yaml").write_text(FLUX_KUSTOMIZATION)
    (repo / "apps" / "lol.yaml").write_text(billion_laughs())
    (repo / "apps" / "kustomization.yaml").write_text("resources: [lol.yaml]\n")
    ran = tmp_path / "kustomize-ran"
    kustomize = tmp_path / "kustomize"  # stands in for the real one: says whether it was run
    kustomize.write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
    kustomize.chmod(0o755)
    result, _ = _bounded_cli(*command, "--kustomize", str(kustomize), "repo", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "repo/apps/lol.yaml:1" in result.stdout + result.stderr
    assert not ran.exists()
