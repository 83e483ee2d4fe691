"""Issue 18's acceptance on fetched public Flux repos (never committed): for each repo, the audit's
exit code and the findings checked by hand are pinned, and after `fix --write` on a copy, audit
and `fix --check` exit as pinned. Set FLUXWARDEN_RENDER_REPOS=/path/a:/path/b to checkouts of the
commits below (any directory names: a repo is recognised by a file only it has); repos without
pins are skipped. The hand check of every finding is in the fieldcheck report (issue 18)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.audit.test_render import kubectl_or_skip
from webhook.cli import main

PUBLIC = [Path(p) for p in os.environ.get("FLUXWARDEN_RENDER_REPOS", "").split(":") if p]
DRIFT = ("fail", "helmrelease-drift-detection")
STORAGE = ("fail", "source-controller-storage")
REQUEUE = ("fail", "controller-requeue-dependency")
REMEDIATION = ("fail", "helmrelease-remediation")
KS_WARN = ("warn", "kustomization-safety")


@dataclass(frozen=True)
class Pinned:
    repo: str  # owner/name@commit
    marker: str  # a file only this repo has
    audit: int  # audit's exit code
    clusters: int
    objects: int
    findings: dict[tuple[str, str], int]  # (result, policy) -> count, each checked by hand
    notices: int  # not-audited notices (checked: each names a real reason)
    unreached: int  # files listed as applied by no cluster
    not_audited: int = 0  # files listed under a Kustomization not audited by design (by hand)
    fixed: tuple[int, int] = (0, 0)  # audit and fix --check after fix --write
    known_fix_bug: str = ""  # why `fixed` is not (0, 0)


PINNED = [
    Pinned(
        "joryirving/home-ops@0560f711e5993b5d905fc835f985d6e16c75c6bf",
        "kubernetes/clusters/utility/flux-instance/helmrelease.yaml",
        audit=1,
        clusters=3,
        objects=1792,
        # kustomization-safety: 30 dependencies with `wait: false`, fenrir-crds' `force: true`
        findings={DRIFT: 154, STORAGE: 3, KS_WARN: 30, ("fail", "kustomization-safety"): 1},
        notices=1,  # games/fenrir-crds: GitRepository of another repo
        unreached=48,  # commented out of their kustomization.yaml (checked)
        fixed=(1, 0),
        known_fix_bug="not a bug: force: true is a validation finding, no fix writes it",
    ),
    Pinned(
        "fluxcd/flux2-kustomize-helm-example@4f1a5b1051b469108d1bdf0ebec6c814427e3834",
        "clusters/staging/artifacts.yaml",  # ArtifactGenerator: apps and infrastructure
        audit=1,
        clusters=2,
        objects=32,
        findings={DRIFT: 3, ("warn", "helmrelease-interval"): 2, KS_WARN: 2},  # infra-configs
        notices=0,
        unreached=1,  # .fluxschema.yml, the Flux CLI's schema config
    ),
    Pinned(
        "controlplaneio-fluxcd/d2-fleet@64e49530a4c321cf780fe9e2ac0ed2b884fbadc2",
        "clusters/prod-eu/flux-system/flux-operator-values.yaml",
        audit=1,
        clusters=4,
        objects=61,  # with the static entries of its ResourceSets
        # the static HelmRelease in each cluster's flux-operator ResourceSet
        findings={STORAGE: 4, ("fail", "irc-single-replica"): 1, DRIFT: 4},
        notices=6,  # source-watcher's defaults are not recorded; 3 templated ResourceSets
        unreached=0,
    ),
    Pinned(
        "auricom/home-ops@6e33affc6b1028b04a91ca844fd66ecd9fa2edc2",
        ".archive/kubernetes/attic/ks.yaml",
        audit=1,
        clusters=1,
        objects=813,
        # kustomization-safety: 19 dependencies with `wait: false`, 4 `prune: false`
        findings={DRIFT: 107, REMEDIATION: 14, STORAGE: 1, KS_WARN: 21},
        notices=1,  # dragonfly: remote base
        unreached=240,  # 229 of them in .archive/ (2 of those invalid YAML: notices)
        # dragonfly/app/{helmrelease,ocirepository,rbac}.yaml: its kustomization.yaml lists
        # them with the operator's remote crd.yaml (were 3 of 243 "applied by no cluster")
        not_audited=3,
        fixed=(0, 0),  # the storage fix written into the flux-instance values file
    ),
    Pinned(
        "Diaoul/home-ops@557e52546543003bfe4137d9be19ba8b8af8b4d7",
        "kubernetes/apps/observability/nut-server-basement/app/helmrelease.yaml",
        audit=1,
        clusters=1,
        objects=390,
        findings={
            DRIFT: 66,
            STORAGE: 1,
            ("fail", "irc-single-replica"): 1,  # flux-manifests v2.6.4: IRC limit 1Gi
            ("warn", "flux-api-versions"): 4,  # HelmRepository type oci
            KS_WARN: 15,  # 10 dependencies with `wait: false`, 5 `prune: false`
        },
        notices=1,  # dragonfly: remote base
        # .taskfiles' 2 Job templates, cilium's commented-out l2-announcement-policy.yaml, the
        # bootstrap's deploy-key Secret
        unreached=4,
        not_audited=2,  # dragonfly/app/{helmrelease,rbac}.yaml: remote base (were unreached)
    ),
    Pinned(
        "onedr0p/home-ops@d9078e4dd52174ad68a4408ca3398f731b2f889e",
        "kubernetes/apps/actions-runner-system/actions-runner-controller/runners/home-operations/"
        "helmrelease.yaml",
        audit=1,
        clusters=1,
        objects=523,
        findings={DRIFT: 68, STORAGE: 1, KS_WARN: 1},  # victoria-logs
        notices=0,
        unreached=7,
    ),
    Pinned(
        "bjw-s-labs/home-ops@e183e642922b15733ab8d2c7900027aab596622b",
        ".forgejo/workflows/pr-reviewer.yaml",
        audit=1,
        clusters=1,
        objects=636,
        findings={DRIFT: 79, STORAGE: 1, KS_WARN: 3},  # 3 `prune: false`
        notices=0,
        unreached=1,  # the bootstrap's external-secrets Secret (applied by hand)
    ),
    Pinned(
        "mischavandenburg/homelab@59a7b52a215c35f8fcfbccaef1ed3d20a097086c",
        "clusters/jotunheim/flux-system/gotk-sync.yaml",
        audit=1,
        clusters=2,
        objects=194,
        # helm-controller v1.1.0 (Flux 2.4.0) has no install/upgrade strategy: retries are set
        findings={REQUEUE: 4, STORAGE: 2, REMEDIATION: 2, KS_WARN: 5},
        notices=2,  # infra-controllers: remote base
        # 8 of the 53 of before are in no cluster's infrastructure/controllers/{data,jotunheim}
        # (cert-manager, synology-csi), the rest: monitoring/utils/apps files no cluster lists
        unreached=34,
        # infra-controllers (base/local-path is remote) reads, in clusters/data: data/cilium,
        # base/{cloudnativepg,external-dns,external-secrets}; in clusters/jotunheim:
        # jotunheim/cilium, base/{external-dns,external-secrets,renovate}: 19 files, by hand
        not_audited=19,
    ),
    Pinned(
        "fluxcd/flux2-multi-tenancy@192da0594c0c06a38a232050b05fdb6e000d6eb8",
        "tenants/base/dev-team/sync.yaml",
        audit=0,
        clusters=2,
        objects=24,
        findings={("warn", "flux-api-versions"): 1, KS_WARN: 2},  # kyverno-policies
        notices=4,  # kyverno's OCIRepository, the tenant's GitRepository, per cluster
        unreached=0,
    ),
]


def _pinned(checkout: Path) -> Pinned:
    found = [p for p in PINNED if (checkout / p.marker).is_file()]
    if not found:
        pytest.skip(f"no pinned counts for {checkout}")
    return found[0]


@pytest.fixture(autouse=True)
def _kustomize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXWARDEN_KUSTOMIZE", str(kubectl_or_skip()))


def _audit(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["audit", "-o", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def _counts(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return dict(
        Counter(
            (f["result"], f["policy"])
            for f in report["findings"]
            if f["result"] in ("fail", "warn", "error")
        )
    )


@pytest.mark.skipif(not PUBLIC, reason="set FLUXWARDEN_RENDER_REPOS to fetched Flux repos")
@pytest.mark.parametrize("checkout", PUBLIC, ids=str)
def test_a_public_repo_audits_as_checked_by_hand(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = _pinned(checkout)
    code, report = _audit(capsys, checkout)
    notices = [p for p in report["problems"] if "not audited" in p["message"]]
    clusters = {c for f in report["findings"] for c in f.get("clusters") or []}
    assert (code, report["summary"]["objects"], max(len(clusters), 1)) == (
        pinned.audit,
        pinned.objects,
        pinned.clusters,
    ), pinned.repo
    assert _counts(report) == pinned.findings, pinned.repo
    not_audited = {f for n in report.get("notAudited", []) for f in n["files"]}
    assert (len(notices), len(report.get("unreached", [])), len(not_audited)) == (
        pinned.notices,
        pinned.unreached,
        pinned.not_audited,
    ), pinned.repo


@pytest.mark.skipif(not PUBLIC, reason="set FLUXWARDEN_RENDER_REPOS to fetched Flux repos")
@pytest.mark.parametrize("checkout", PUBLIC, ids=str)
def test_a_public_repo_is_clean_after_fix(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = _pinned(checkout)
    copy = tmp_path / "repo"
    shutil.copytree(checkout, copy, symlinks=True)
    main(["fix", "--write", str(copy)])
    capsys.readouterr()
    code, _ = _audit(capsys, copy)
    check = main(["fix", "--check", str(copy)])
    capsys.readouterr()
    assert (code, check) == pinned.fixed, f"{pinned.repo} {pinned.known_fix_bug}"
