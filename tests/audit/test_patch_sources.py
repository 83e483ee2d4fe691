"""Which patch set a field: targets (names, label selectors), JSON6902 and strategic merge."""

from __future__ import annotations

from typing import Any

from webhook.audit.documents import parse_stream
from webhook.audit.patch_sources import entries_of, setting_patch

KUSTOMIZATION = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  patches:
    - patch: |
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: all
        spec:
          interval: 10s
      target:
        kind: HelmRelease
        labelSelector: defaults!=disabled
    - patch: |
        - op: add
          path: /spec/template/spec/containers/0/args/-
          value: --requeue-dependency=30s
      target:
        kind: Deployment
        name: "(kustomize|helm)-controller"
"""


def _entries() -> Any:
    document = next(parse_stream(KUSTOMIZATION, "ks.yaml"))
    assert document.obj is not None
    return entries_of(document, "/spec/patches", document.obj["spec"]["patches"])


def _release(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "x", "labels": labels},
        "spec": {"interval": "10s"},
    }


def test_a_strategic_merge_patch_points_at_its_field() -> None:
    assert setting_patch(_entries(), _release({}), ["/spec/interval"]) == ("ks.yaml", 12)


def test_a_release_the_label_selector_leaves_out_is_not_attributed() -> None:
    assert setting_patch(_entries(), _release({"defaults": "disabled"}), ["/spec/interval"]) is None


def test_a_json6902_op_is_attributed_only_for_the_element_it_wrote() -> None:
    controller = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "helm-controller"},
        "spec": {
            "template": {"spec": {"containers": [{"args": ["--a", "--requeue-dependency=30s"]}]}}
        },
    }
    args = "/spec/template/spec/containers/0/args"
    assert setting_patch(_entries(), controller, [f"{args}/1"]) == ("ks.yaml", 18)
    assert setting_patch(_entries(), controller, [f"{args}/0"]) is None  # not what it added
    assert setting_patch(_entries(), controller, [f"{args}/-"]) is None  # an append: nothing set
    other = {**controller, "metadata": {"name": "source-controller"}}
    assert setting_patch(_entries(), other, [f"{args}/1"]) is None  # the name does not match


def test_patches_not_written_in_the_document_are_attributed_to_nothing() -> None:
    """A chart release whose instance patches come from a valuesFrom ConfigMap: the patches are
    not in the release's file, so no line of it is said to have set a field."""
    document = next(parse_stream(KUSTOMIZATION, "ks.yaml"))
    assert document.obj is not None
    assert entries_of(document, "", document.obj["spec"]["patches"]) == []
