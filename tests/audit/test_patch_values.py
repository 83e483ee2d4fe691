"""A fix of a container flag is written by value: where a patch set the flag, else appended."""

from __future__ import annotations

from typing import Any

import yaml

from webhook.audit.patch_values import plan_by_value, target_matches

ARGS = "/spec/template/spec/containers/0/args"


def _deployment(name: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"template": {"spec": {"containers": [{"name": "manager", "args": args}]}}},
    }


def _patch(target: dict[str, str], ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": target, "patch": yaml.safe_dump(ops, sort_keys=False)}


# As the Flux Operator renders a multitenant kustomize-controller: its profile appended the
# lockdown flags after the user's requeue flag.
RENDERED = _deployment(
    "kustomize-controller",
    [
        "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
        "--watch-all-namespaces",
        "--log-level=info",
        "--log-encoding=json",
        "--enable-leader-election",
        "--no-cross-namespace-refs=true",
        "--no-remote-bases=true",
        "--default-service-account=default",
        "--requeue-dependency=30s",
    ],
)


def test_the_op_that_set_the_flag_is_edited() -> None:
    patches = [
        _patch({"kind": "Deployment", "name": "helm-controller"}, [{"op": "add"}]),
        _patch(
            {"kind": "Deployment", "name": "(kustomize-controller|helm-controller)"},
            [
                {"op": "add", "path": f"{ARGS}/-", "value": "--concurrent=20"},
                {"op": "add", "path": f"{ARGS}/-", "value": "--requeue-dependency=30s"},
            ],
        ),
    ]
    fix = [{"op": "replace", "path": f"{ARGS}/8", "value": "--requeue-dependency=5s"}]
    plan = plan_by_value(patches, RENDERED, fix)
    assert plan.ops == []
    assert list(plan.texts) == [1]
    assert yaml.safe_load(plan.texts[1])[1] == {
        "op": "add",
        "path": f"{ARGS}/-",
        "value": "--requeue-dependency=5s",
    }


def test_a_flag_no_patch_sets_is_appended_never_written_at_an_index() -> None:
    fix = [{"op": "replace", "path": f"{ARGS}/8", "value": "--requeue-dependency=5s"}]
    other = _patch({"kind": "Deployment", "name": "helm-controller"}, [])
    plan = plan_by_value([other], RENDERED, fix)
    assert plan.texts == {}
    assert plan.ops == [{"op": "add", "path": f"{ARGS}/-", "value": "--requeue-dependency=5s"}]


def test_the_two_item_form_is_appended_without_removing_by_index() -> None:
    rendered = _deployment("helm-controller", ["--log-level=info", "--requeue-dependency", "30s"])
    fix = [
        {"op": "replace", "path": f"{ARGS}/1", "value": "--requeue-dependency=5s"},
        {"op": "remove", "path": f"{ARGS}/2"},
    ]
    plan = plan_by_value([], rendered, fix)
    assert plan.ops == [{"op": "add", "path": f"{ARGS}/-", "value": "--requeue-dependency=5s"}]


def test_a_whole_args_list_in_a_patch_is_edited_in_place() -> None:
    patches = [
        _patch(
            {"kind": "Deployment", "name": "kustomize-controller"},
            [
                {
                    "op": "add",
                    "path": ARGS,
                    "value": ["--log-level=debug", "--requeue-dependency=1m"],
                }
            ],
        )
    ]
    fix = [{"op": "replace", "path": f"{ARGS}/8", "value": "--requeue-dependency=5s"}]
    plan = plan_by_value(patches, RENDERED, fix)
    assert yaml.safe_load(plan.texts[0])[0]["value"] == [
        "--log-level=debug",
        "--requeue-dependency=5s",
    ]


def test_ops_other_than_flags_are_kept() -> None:
    op = {"op": "add", "path": "/spec/replicas", "value": 1}
    assert plan_by_value([], RENDERED, [op]).ops == [op]


def test_targets_are_anchored_regular_expressions() -> None:
    assert target_matches({"kind": "Deployment", "name": "(kustomize-controller|x)"}, RENDERED)
    assert not target_matches({"kind": "Deployment", "name": "kustomize"}, RENDERED)
    assert not target_matches({"kind": "Deployment", "name": "kustomize-controller-.*"}, RENDERED)
    assert target_matches({"kind": "Deployment"}, RENDERED)
    assert not target_matches({"kind": "StatefulSet"}, RENDERED)


def test_volume_changes_are_made_by_name() -> None:
    rendered = _deployment("source-controller", [])
    rendered["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    fix = [
        {"op": "add", "path": "/spec/template/spec/volumes/1/emptyDir/sizeLimit", "value": "2Gi"},
        {"op": "add", "path": "/spec/template/spec/volumes/0/emptyDir/sizeLimit", "value": "1Gi"},
    ]
    plan = plan_by_value([], rendered, fix)
    assert plan.ops == []
    merge = plan.merge_patch(rendered)
    assert merge is not None
    assert merge["metadata"] == {"name": "source-controller"}
    assert merge["spec"]["template"]["spec"]["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
