"""Mutating policies get a private copy of the object, validating ones read it as it is.

The copy is what keeps a mutating policy that raises midway from leaving part of its change
behind; validating policies skip it (it was most of their cost), so they must only read.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from typing import Any, ClassVar, Literal

import pytest

from tests.conftest import IRC_DEPLOYMENT
from tests.golden import load_cases
from webhook.engine import NoLookups, PolicySet, evaluate, request_for
from webhook.engine.match import Match, ResourceMatch
from webhook.engine.patch import json_equal
from webhook.engine.policies import Params, Policy, Report
from webhook.engine.policyset import ConfiguredPolicy
from webhook.engine.resources import DEPLOYMENTS

EVALUATE = importlib.import_module("webhook.engine.evaluate")  # the module, not the function


class _MutatesThenRaises(Policy[Params]):
    name: ClassVar[str] = "mutates-then-raises"
    webhook: ClassVar[Literal["mutate", "validate"]] = "mutate"
    summary: ClassVar[str] = "changes its object, then fails"
    params_model = Params

    def scope(self, params: Params) -> tuple[Match, ...]:
        return (Match(resources=(ResourceMatch(DEPLOYMENTS),)),)

    def check(self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report) -> None:
        obj["spec"]["replicas"] = 99
        obj["metadata"].setdefault("labels", {})["leaked"] = "yes"
        raise KeyError("boom")


class _Recorder(Policy[Params]):
    """A validating policy that remembers what it was shown."""

    name: ClassVar[str] = "recorder"
    webhook: ClassVar[Literal["mutate", "validate"]] = "validate"
    summary: ClassVar[str] = "records"
    params_model = Params

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def scope(self, params: Params) -> tuple[Match, ...]:
        return (Match(resources=(ResourceMatch(DEPLOYMENTS),)),)

    def check(self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report) -> None:
        self.seen.append(copy.deepcopy(obj))


def _seen_after_failing_mutation() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """What a validating policy saw after a mutating one failed midway, the input afterwards,
    and the input before (only the failing policy and the recorder run)."""
    recorder = _Recorder()
    policies = (
        ConfiguredPolicy.of(_MutatesThenRaises(), mode="enforce", params=Params()),
        ConfiguredPolicy.of(recorder, mode="enforce", params=Params()),
    )
    policy_set = PolicySet("test", "test", "enforce", frozenset(), policies)
    obj = copy.deepcopy(IRC_DEPLOYMENT)
    decision = evaluate(obj, request=request_for(obj), policy_set=policy_set, lookups=NoLookups())
    assert [r.result for r in decision.results] == ["error", "pass"]
    assert decision.patch == []
    return recorder.seen, obj, IRC_DEPLOYMENT


def test_a_failing_mutation_never_leaks() -> None:
    seen, after, before = _seen_after_failing_mutation()
    assert seen == [before]
    assert after == before


def test_negative_control_the_leak_test_catches_a_shared_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(EVALUATE, "_copy_tree", lambda value: value)  # no private copy
    seen, after, before = _seen_after_failing_mutation()
    assert seen != [before]  # the assertions above would fail
    assert after["spec"]["replicas"] == 99


def _modifies(policy: ConfiguredPolicy, obj: dict[str, Any], lookups: Any) -> bool:
    """Whether `policy.check` changes the object it is given (compared as JSON: types too)."""
    before = copy.deepcopy(obj)
    with contextlib.suppress(Exception):  # failing is allowed, changing the object is not
        policy.policy.check(
            obj, request=request_for(obj), params=policy.params, lookups=lookups, report=Report()
        )
    return not json_equal(before, obj)


def test_shipped_validating_policies_only_read(shipped_policies: PolicySet) -> None:
    cases = load_cases()
    validating = [p for p in shipped_policies.policies if p.policy.webhook == "validate"]
    assert validating
    checked = 0
    for case in cases:
        for configured in case.full_policy_set().policies:
            if configured.policy.webhook != "validate":
                continue
            obj = case.obj
            if configured.matches(request_for(obj).target, obj):
                assert not _modifies(configured, obj, case.lookups()), (case.id, configured)
                checked += 1
    assert checked >= 10  # the golden cases of both validating policies


def test_negative_control_a_validating_policy_that_writes_is_caught() -> None:
    class _Writes(_Recorder):
        def check(
            self, obj: Any, *, request: Any, params: Any, lookups: Any, report: Report
        ) -> None:
            obj["metadata"]["name"] = "renamed"

    configured = ConfiguredPolicy.of(_Writes(), mode="enforce", params=Params())
    assert _modifies(configured, copy.deepcopy(IRC_DEPLOYMENT), NoLookups())
