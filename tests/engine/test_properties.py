"""Property tests: patches apply cleanly and are idempotent; no JSON body yields a 5xx."""

from __future__ import annotations

import json
from typing import Any, TypeVar, cast

import jsonpatch
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import admission_review
from webhook.cli import SHIPPED_POLICIES
from webhook.engine import NoLookups, PolicySet, evaluate, request_for
from webhook.lookups.offline import OfflineLookups
from webhook.server.app import ServerConfig, create_app
from webhook.server.policystore import PolicyStore, load_policy_file

POLICIES = load_policy_file(SHIPPED_POLICIES)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
quantities = st.sampled_from(
    ["1Gi", "2Gi", "3Gi", "2048Mi", "1.5Gi", "500M", "2147483648", "64Mi", 1024]
)
T = TypeVar("T")


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


names = st.sampled_from(
    [
        "image-reflector-controller",
        "source-controller",
        "kustomize-controller",
        "helm-controller",
        "fleet-cleanup-clusterregistrations",
        "helm-operation-x",
        "other",
    ]
)
namespaces = st.sampled_from(["flux-system", "cattle-fleet-system", "cattle-system", "default"])
tolerations = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["a", "b", "node-role"])},
        optional={
            "operator": st.sampled_from(["Equal", "Exists"]),
            "value": st.sampled_from(["x", "y"]),
            "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
        },
    ),
    max_size=3,
)


def _drop_none(value: T) -> T:
    """The same shape without None values (hypothesis draws them for absent fields)."""
    if isinstance(value, dict):
        return cast(T, {k: _drop_none(v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return cast(T, [_drop_none(v) for v in value])
    return value


@st.composite
def deployments(draw: st.DrawFn) -> dict[str, Any]:
    container = {
        "name": draw(st.sampled_from(["manager", "sidecar"])),
        "args": draw(
            maybe(
                st.lists(
                    st.sampled_from(
                        [
                            "--requeue-dependency=30s",
                            "--requeue-dependency=2s",
                            "--requeue-dependency",
                            "10s",
                            "--log-level=info",
                            "--requeue-dependency=bogus",
                        ]
                    ),
                    max_size=4,
                )
            )
        ),
        "resources": draw(
            maybe(
                st.fixed_dictionaries(
                    {
                        "limits": maybe(st.fixed_dictionaries({"memory": maybe(quantities)})),
                        "requests": maybe(st.fixed_dictionaries({"memory": maybe(quantities)})),
                    }
                )
            )
        ),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "data", "emptyDir": {}},
        {
            "name": "tmp",
            "emptyDir": draw(maybe(st.fixed_dictionaries({}, optional={"sizeLimit": quantities}))),
        },
    ]
    return _drop_none(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": draw(names), "namespace": draw(namespaces)},
            "spec": {
                "replicas": draw(maybe(st.integers(min_value=0, max_value=5))),
                "template": {
                    "spec": {
                        "containers": [container],
                        "volumes": volumes,
                        "tolerations": draw(maybe(tolerations)),
                    }
                },
                "extra": draw(json_values),
            },
        }
    )


@st.composite
def helmreleases(draw: st.DrawFn) -> dict[str, Any]:
    return _drop_none(
        {
            "apiVersion": draw(
                st.sampled_from(
                    [
                        "helm.toolkit.fluxcd.io/v2",
                        "helm.toolkit.fluxcd.io/v2beta2",
                        "helm.toolkit.fluxcd.io/v2beta1",
                    ]
                )
            ),
            "kind": "HelmRelease",
            "metadata": {"name": draw(st.sampled_from(["a", "b"])), "namespace": "flux-system"},
            "spec": {
                "interval": draw(st.sampled_from(["10s", "5m", "2h", "${I}", "soon"])),
                "driftDetection": draw(
                    maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "mode": st.sampled_from(["enabled", "warn", "disabled"]),
                                "ignore": st.just([{"paths": ["/spec/replicas"]}]),
                            },
                        )
                    )
                ),
                "dependsOn": draw(
                    maybe(
                        st.lists(
                            st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c"])}),
                            max_size=3,
                        )
                    )
                ),
            },
        }
    )


@st.composite
def fleet_jobs(draw: st.DrawFn) -> dict[str, Any]:
    pod = {
        "metadata": {"labels": {"app": draw(st.sampled_from(["fleet-job", "x"]))}},
        "spec": {"tolerations": draw(maybe(tolerations)), "containers": [{"name": "c"}]},
    }
    kind = draw(st.sampled_from(["Job", "CronJob"]))
    spec = (
        {"template": pod}
        if kind == "Job"
        else {"schedule": "@hourly", "jobTemplate": {"spec": {"template": pod}}}
    )
    return _drop_none(
        {
            "apiVersion": "batch/v1",
            "kind": kind,
            "metadata": {"name": draw(names), "namespace": draw(namespaces)},
            "spec": spec,
        }
    )


fleet_controller = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "fleet-controller", "namespace": "cattle-fleet-system"},
    "spec": {
        "template": {
            "spec": {
                "tolerations": [
                    {"key": "node-role", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "a", "value": "x", "effect": "NoExecute"},
                ]
            }
        }
    },
}

objects = deployments() | helmreleases() | fleet_jobs()


def _decide(obj: dict[str, Any], policy_set: PolicySet = POLICIES) -> Any:
    lookups = OfflineLookups([obj, fleet_controller])
    return evaluate(obj, request=request_for(obj), policy_set=policy_set, lookups=lookups)


@settings(max_examples=300, deadline=None)
@given(objects)
def test_patch_applies_cleanly_and_second_pass_is_a_no_op(obj: dict[str, Any]) -> None:
    decision = _decide(obj)
    patched = jsonpatch.apply_patch(obj, decision.patch)  # raises if the patch does not apply
    if decision.patch:
        assert decision.patched == patched
    assert _decide(patched).patch == []


@settings(max_examples=200, deadline=None)
@given(objects, st.sampled_from(["warn", "audit", "off"]))
def test_below_enforce_nothing_is_patched_or_denied(obj: dict[str, Any], mode: str) -> None:
    decision = evaluate(
        obj,
        request=request_for(obj),
        policy_set=POLICIES.with_ceiling(mode),  # type: ignore[arg-type]
        lookups=NoLookups(),
    )
    assert decision.patch == []
    assert decision.allowed
    if mode != "warn":
        assert decision.warnings == [] or all("policy error" in w for w in decision.warnings)


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    app = create_app(ServerConfig(policies=PolicyStore(SHIPPED_POLICIES), lookups=NoLookups()))
    return app.test_client()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(json_values)
def test_arbitrary_json_never_gets_a_5xx(client: FlaskClient, body: Any) -> None:
    for path in ("/mutate", "/validate"):
        reply = client.post(path, data=json.dumps(body), content_type="application/json")
        assert reply.status_code < 500, reply.data


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    objects | json_values,
    st.dictionaries(
        st.sampled_from(
            [
                "uid",
                "operation",
                "kind",
                "object",
                "dryRun",
                "namespace",
                "name",
                "subResource",
                "userInfo",
            ]
        ),
        json_values,
        max_size=4,
    ),
)
def test_mangled_admission_reviews_never_get_a_5xx(
    client: FlaskClient, obj: Any, mangle: dict[str, Any]
) -> None:
    review = admission_review(obj if isinstance(obj, dict) and "apiVersion" in obj else None)
    review["request"]["object"] = obj
    review["request"].update(mangle)
    reply = client.post("/mutate", data=json.dumps(review), content_type="application/json")
    assert reply.status_code in (200, 400), reply.data


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def corrupted_objects(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A targeted object with one node anywhere (metadata, spec, a container...) replaced by
    arbitrary JSON: the shapes a buggy client or a hostile one can send."""
    obj = draw(objects)
    review = admission_review(obj)  # the request names the object as it was
    path = draw(st.sampled_from(_paths(obj)[1:]))
    parent: Any = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = draw(json_values)
    review["request"]["object"] = obj
    return review, obj


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(corrupted_objects())
def test_corrupted_objects_are_answered_never_a_5xx(
    client: FlaskClient, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    review, _ = case
    for path in ("/mutate", "/validate"):
        reply = client.post(path, data=json.dumps(review), content_type="application/json")
        assert reply.status_code == 200, reply.data
        assert reply.get_json()["response"]["uid"] == review["request"]["uid"]
